"""The journey, one stage per script, and the launcher that runs them as OS processes.

- ``topology.py``: how a stage is declared (components, flags, ``{name}`` references);
- ``launcher.py``: the process supervisor (start in order, wire addresses, endpoint
  table, run directory, service registry, faults by name, clean stop, no orphans);
- ``process.py``: one component as one OS process, up to its ready line;
- ``stages.py``: the catalogue of stages, in the journey's order;
- ``single_server.py``: stage 1, and one module per later stage;
- ``cli.py``: the ``scalelab`` command.
"""
