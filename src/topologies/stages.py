"""The catalogue of stages: the journey's order, and how a stage is found by name.

A stage is a module in this package holding:

- a docstring whose first line says what the stage adds (``scalelab stages`` shows it);
- ``topology(options) -> Topology``: the components, in start order;
- optionally ``add_arguments(parser)``: the stage's own flags (``--web N`` to scale a
  tier, capacity emulation), which ``scalelab run STAGE --help`` lists.

``scalelab run`` also accepts the path of a ``.py`` file written the same way, so a
reader can draw a topology of their own without touching the package.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

#: Stage name -> module, in the order of the journey.
STAGES: dict[str, str] = {
    "single_server": "topologies.single_server",
    "separate_db": "topologies.separate_db",
    "load_balanced": "topologies.load_balanced",
    "replicated": "topologies.replicated",
    "cached": "topologies.cached",
    "stateless": "topologies.stateless",
    "multi_dc": "topologies.multi_dc",
    "queued": "topologies.queued",
    "sharded": "topologies.sharded",
}


class UnknownStage(LookupError):
    pass


def load(stage: str) -> ModuleType:
    """The module of a catalogued stage, or of a topology file (``path/to/file.py``)."""
    if stage in STAGES:
        module = importlib.import_module(STAGES[stage])
    elif stage.endswith(".py"):
        path = Path(stage)
        if not path.is_file():
            raise UnknownStage(f"no topology file {stage!r}")
        spec = importlib.util.spec_from_file_location(f"scalelab_topology_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        raise UnknownStage(
            f"unknown stage {stage!r} (stages: {', '.join(STAGES)}; or a topology file .py)"
        )
    if not callable(getattr(module, "topology", None)):
        raise UnknownStage(f"{stage}: defines no topology(options) function")
    return module


def summary(module: ModuleType) -> str:
    """The first line of the stage's docstring."""
    return (module.__doc__ or "").strip().partition("\n")[0]


def add_arguments(module: ModuleType, parser: argparse.ArgumentParser) -> None:
    hook = getattr(module, "add_arguments", None)
    if hook is not None:
        hook(parser.add_argument_group(f"{module.__name__.rpartition('.')[2]} flags"))


def default_options(module: ModuleType) -> argparse.Namespace:
    """The stage's flags at their defaults, for running a stage from code."""
    parser = argparse.ArgumentParser()
    add_arguments(module, parser)
    return parser.parse_args([])
