"""The journey, one stage per script, and the launcher that runs them as OS processes."""
