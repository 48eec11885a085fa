"""The flags every component shares, and the small parsers for addresses and sizes.

DESIGN.md's contract: ``python -m components.<name> --host H --port N --admin-port N
--name NAME [--data-dir DIR] [component flags]``. Port 0 means "pick a free one"; the
admin port defaults to the public port + 10000 (and to 0 when the public port is 0, so
"pick any" stays "pick any"). argparse already exits 2 with a usage message on a bad
flag, which is what the contract asks for.
"""

from __future__ import annotations

import argparse

ADMIN_PORT_OFFSET = 10_000
DRAIN_TIMEOUT_S = 10.0


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0..65535: {value}")
    return value


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) into a pair, for flags such as ``--backend``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port(port_text)


def non_negative_int(text: str) -> int:
    """An argparse type for counts and limits where 0 is meaningful ("none", "unlimited")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type for durations and sizes: a finite number >= 0 (nan and inf refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):  # also false for nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text}")
    return value


def component_parser(
    component: str, default_port: int, description: str | None = None
) -> argparse.ArgumentParser:
    """An ArgumentParser holding the shared flags; the component adds its own."""
    parser = argparse.ArgumentParser(
        prog=f"python -m components.{component}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    shared = parser.add_argument_group("shared component flags")
    shared.add_argument("--host", default="127.0.0.1", help="address to listen on")
    shared.add_argument("--port", type=port, default=default_port, help="public port (0: any)")
    shared.add_argument(
        "--admin-port",
        type=port,
        default=None,
        help=f"admin HTTP port (default: public port + {ADMIN_PORT_OFFSET}; 0: any)",
    )
    shared.add_argument("--name", default=None, help=f"instance name (default: {component})")
    shared.add_argument("--data-dir", default=None, help="directory for durable state")
    shared.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    shared.add_argument(
        "--admin-token", default=None, help="required as 'Authorization: Bearer T' on POST /admin/*"
    )
    shared.add_argument(
        "--drain-timeout",
        type=non_negative_float,
        default=DRAIN_TIMEOUT_S,
        help="seconds to finish in-flight work on SIGTERM",
    )
    shared.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    return parser


def resolve_shared(args: argparse.Namespace, component: str) -> argparse.Namespace:
    """Fill the defaults that depend on other flags."""
    if args.admin_port is None:
        args.admin_port = 0 if args.port == 0 else args.port + ADMIN_PORT_OFFSET
        if args.admin_port > 65535:
            args.admin_port = 0
    if args.name is None:
        args.name = component
    return args


def format_address(sockname) -> str:
    """``host:port`` for a bound socket's name (IPv6 hosts in brackets)."""
    host, port_number = sockname[0], sockname[1]
    return f"[{host}]:{port_number}" if ":" in host else f"{host}:{port_number}"
