"""The web tier's capacity emulation lives in ``components.common.admission``.

It moved there so that the store models its query capacity with the same gate; this
name stays so that ``from .admission import Gate, serve_time`` keeps working.
"""

from components.common.admission import Gate, serve_time, spin

__all__ = ["Gate", "serve_time", "spin"]
