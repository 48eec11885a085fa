"""A topology: which components a stage runs, with which flags, wired to which others.

A stage of the journey is declared in a few lines that read like the chapter's figure::

    Topology(
        "load_balanced",
        [
            Component("web-1", "web", "--db sqlite:{data}/app.db --cache local:64"),
            Component("web-2", "web", "--db sqlite:{data}/app.db --cache local:64"),
            Component("lb", "lb", "--backend {web-1} --backend {web-2}"),
        ],
        entry="lb",
    )

Every component listens on port 0, so nobody knows an address before the process is up.
Flags therefore carry *references* in braces, resolved by the launcher once the component
they name has printed its ready line:

- ``{web-1}`` is web-1's main address (``127.0.0.1:40123``), ``{web-1.admin}`` its admin
  address (any role of its ready line's ``listen`` works);
- ``{data}`` is this component's own data directory, ``{run}`` the run directory.

A reference may only name a component declared *earlier*: the launcher starts components
in declaration order, so the order of the lines is also the dependency order, and a
cycle cannot be written down. Mistakes (an unknown or later name, a duplicate name) are
caught here, when the topology is built, before any process starts.

This module is pure: no processes, no files. ``launcher.py`` runs what it declares.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: A component name: lower case, digits, ``-`` and ``_`` (no dot: the dot selects a role).
NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")
#: Anything in braces made of name characters and dots is a reference and must resolve.
#: Braces around anything else (JSON, say) are left alone.
REFERENCE = re.compile(r"\{([A-Za-z0-9_.-]+)\}")
#: References that name a place, not a component; no component may take these names.
SPECIAL_REFERENCES = frozenset({"data", "run"})
MAIN_ROLE = "main"


class TopologyError(ValueError):
    """A topology that cannot be run as written (bad name, unresolvable reference)."""


@dataclass(frozen=True)
class Component:
    """One process of a topology: its instance name, its package and its flags.

    ``flags`` is either one string, split like a shell would (``shlex``), or a sequence
    of arguments. ``module`` replaces ``components.<component>`` (tests use it to run a
    test service); ``env`` adds environment variables for this process only.
    """

    name: str
    component: str
    flags: str | Sequence[str] = ()
    module: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> tuple[str, ...]:
        """The flags as a list of arguments, references not yet resolved."""
        if isinstance(self.flags, str):
            return tuple(shlex.split(self.flags))
        return tuple(self.flags)

    def references(self) -> list[tuple[str, str]]:
        """Every ``(name, role)`` this component's flags refer to, in order."""
        return [ref for arg in self.argv for ref in references(arg)]


@dataclass(frozen=True)
class Topology:
    """A stage: its name, its components in start order, and where load goes in.

    ``entry`` names the component (optionally ``name.role``) whose address the load
    generator targets; ``scrape`` the components whose ``/metrics`` the report reads
    (default: all of them).
    """

    stage: str
    components: Sequence[Component]
    entry: str
    scrape: Sequence[str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", tuple(self.components))
        known: list[str] = []
        for spec in self.components:
            check_component(spec, known)
            known.append(spec.name)
        entry_name, _ = split_reference(self.entry)
        if entry_name not in known:
            raise TopologyError(f"{self.stage}: entry {self.entry!r} is not a component")
        for name in self.scrape or ():
            if name not in known:
                raise TopologyError(f"{self.stage}: scrape names unknown component {name!r}")

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.components]

    @property
    def scraped(self) -> list[str]:
        return list(self.scrape) if self.scrape is not None else self.names


def split_reference(text: str) -> tuple[str, str]:
    """``"web-1.admin"`` -> ``("web-1", "admin")``; a bare name means the main address."""
    name, _, role = text.partition(".")
    return name, role or MAIN_ROLE


def references(arg: str) -> list[tuple[str, str]]:
    return [split_reference(match.group(1)) for match in REFERENCE.finditer(arg)]


def check_component(spec: Component, earlier: Iterable[str]) -> None:
    """Raise ``TopologyError`` unless ``spec`` can start after the ``earlier`` components."""
    earlier = list(earlier)
    if not NAME.match(spec.name):
        raise TopologyError(
            f"component name {spec.name!r}: use lower case letters, digits, '-' and '_'"
        )
    if spec.name in SPECIAL_REFERENCES:
        raise TopologyError(f"component name {spec.name!r} is reserved for {{{spec.name}}}")
    if spec.name in earlier:
        raise TopologyError(f"component name {spec.name!r} is declared twice")
    for name, role in spec.references():
        if name in SPECIAL_REFERENCES:
            if role != MAIN_ROLE:
                raise TopologyError(f"{spec.name}: {{{name}}} takes no role, got {role!r}")
            continue
        if name == spec.name:
            raise TopologyError(f"{spec.name}: refers to its own address, unknown until it runs")
        if name not in earlier:
            raise TopologyError(
                f"{spec.name}: refers to {{{name}}}, which is not declared before it "
                f"(declared before: {', '.join(earlier) or 'none'})"
            )


def resolve(arg: str, listen: Mapping[str, Mapping[str, str]], places: Mapping[str, str]) -> str:
    """Replace every reference in ``arg``.

    ``listen`` maps component name -> its ready line's ``listen`` (role -> address);
    ``places`` maps the special references (``data``, ``run``) to paths.
    """

    def substitute(match: re.Match) -> str:
        name, role = split_reference(match.group(1))
        if name in places:
            return places[name]
        if name not in listen:
            raise TopologyError(f"{arg!r}: no component {name!r} is running to refer to")
        roles = listen[name]
        if role not in roles:
            raise TopologyError(
                f"{arg!r}: {name} has no {role!r} address (it has: {', '.join(sorted(roles))})"
            )
        return roles[role]

    return REFERENCE.sub(substitute, arg)
