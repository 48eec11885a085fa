"""What every scalelab server shares, and nothing else.

The runtime contract of DESIGN.md lives here once: the shared flags (``cli``), the
process lifecycle with its ready line and graceful drain (``runner``), the admin listener
with health, metrics and operator actions (``admin``), hot-path-cheap metrics
(``metrics``) and JSON-lines logs (``log``). A component subclasses ``Service`` and
calls ``main(MyService)`` from its ``__main__``; it never re-implements any of this.
"""

from .runner import Runtime, Service, main

__all__ = ["Runtime", "Service", "main"]
