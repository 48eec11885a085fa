"""Stage 7 (figures 15-16): two data centres, users routed to the nearest by geoDNS.

Each data centre is its own copy of the site: a balancer and a web tier on addresses of
their own (dc1 on 127.0.1.1, dc2 on 127.0.2.1: all of 127.0.0.0/8 is this machine), both
balancers on the same port, as a site answers on 443 everywhere. The DNS server
(``components.dns``) answers ``www.scalelab.test`` by the user's region, read from the
resolver's Client Subnet option (RFC 7871) or the source address: east users
(10.1.0.0/16) get dc1, west users (10.2.0.0/16) dc2. It GETs ``/health`` through each
balancer, from a web server behind it; after ``fall`` failed checks (a dead balancer or
a dead web tier) a data centre leaves every answer, and its users get the other one.
Not at once: a resolver keeps the old answer for its TTL, so users keep trying the dead
data centre until it expires. The TTL is the trade-off: short means fast failover and
more DNS queries, long the opposite (``--dns-ttl``).

Data is the hard part. The store primary lives in dc1 and a replica in dc2 that follows
it through an emulated WAN link (``link.py``, ``--wan-ms`` each way): the replica's log
crosses the link, so dc2's reads may be stale by the replication lag, and a user's own
writes stay visible to them (their reads carry their last write's LSN, and a replica
answers only once it has applied it, a wait of up to the lag). dc2's web tier is given
the primary only through the link (``store:{wan},{dc2-store}``), so the reads it sends
there pay the WAN round trip. Its writes should too, and today they do not: the store
client writes to the address the primary advertises in ``/status`` (its own), not the
one it was given, so dc2's writes reach the primary directly (a gap of
``components/store/client.py``, reported; this stage does not hide it). dc1 is the
data's home: if it fails, dc2 serves reads but no write until someone promotes its
replica, which this stage does not do (a promotion across a WAN partition is how a
split brain is made).

The geo rules are generated when the DNS server starts, from the addresses the launcher
resolved (``python -m topologies.multi_dc`` writes them into its data directory, then
becomes ``components.dns``), so nothing depends on fixed ports.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

from components.common.cli import port

from .cached import add_arguments as _cached_arguments
from .link import delay_ms
from .tiers import balancer, link, local_cache, positive, store_capacity_flags, web_tier
from .topology import Component, Topology, TopologyError

#: Data centre -> (its loopback address, the region it is nearest to, that region's users).
DATA_CENTRES = {
    "dc1": ("127.0.1.1", "east", "10.1.0.0/16"),
    "dc2": ("127.0.2.1", "west", "10.2.0.0/16"),
}
NAME = "www.scalelab.test."
ZONE = Path(__file__).resolve().parent.parent / "components" / "dns" / "examples" / "scalelab.zone"
#: The DNS server's checks of each balancer: a dead data centre leaves the answers after
#: ``fall`` failed checks, about a second here.
HEALTH = {"interval_s": 0.5, "timeout_s": 0.4, "rise": 2, "fall": 2}
#: Tries at finding one port free on every data centre's address.
PORT_TRIES = 20


def add_arguments(parser) -> None:
    _cached_arguments(parser)
    parser.set_defaults(web=1, replicas=1, sync_replicas=0, caches=0)
    parser.add_argument("--wan-ms", type=delay_ms, default=20.0,
                        help="one-way delay of the WAN link between the data centres")  # fmt: skip
    parser.add_argument("--dns-ttl", type=positive, default=5,
                        help="TTL of the geoDNS answers: how long a resolver keeps a dead "
                             "data centre's address")  # fmt: skip
    parser.add_argument("--site-port", type=port, default=0,
                        help="port of both data centres' balancers (0: a free one)")  # fmt: skip


def topology(options) -> Topology:
    hosts = [host for host, _, _ in DATA_CENTRES.values()]
    site_port = options.site_port or free_port(hosts)
    db_flags = store_capacity_flags(options)
    primary = Component("dc1-store", "store", f"--host {hosts[0]} {db_flags}".strip())
    # One link carries both what crosses the ocean: dc2's writes and the replica's log.
    wan = link("wan", primary.name, options.wan_ms)
    replica = Component("dc2-store", "store",
                        f"--host {hosts[1]} --join {{wan}} {db_flags}".strip())  # fmt: skip
    components = [primary, wan, replica]
    specs = {"dc1": f"store:{{{primary.name}}}", "dc2": f"store:{{wan}},{{{replica.name}}}"}
    dns_flags = []
    for (dc, (host, _, _)), spec in zip(DATA_CENTRES.items(), specs.values(), strict=True):
        webs = web_tier(options, options.web, spec, local_cache(options),
                        extra=f"--host {host}", prefix=f"{dc}-web")  # fmt: skip
        components += [*webs, balancer(webs, f"{dc}-lb", f"--host {host} --port {site_port}")]
        dns_flags += ["--dc", f"{dc}={{{dc}-lb}}"]
    dns_flags += ["--ttl", str(options.dns_ttl), "--rules", "{data}/geo.toml"]
    components.append(Component("dns", "dns", dns_flags, module="topologies.multi_dc"))
    return Topology("multi_dc", components, entry="dc1-lb")


def free_port(hosts: list[str]) -> int:
    """A port free on every address in ``hosts`` (the first one's choice, checked on the
    others). Another process may still take it before the balancers bind: the launcher
    then reports the balancer's failed start; ``--site-port`` picks one by hand."""
    for _ in range(PORT_TRIES):
        with socket.socket() as first:
            first.bind((hosts[0], 0))
            chosen = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    with socket.socket() as other:
                        other.bind((host, chosen))
            except OSError:
                continue
            return chosen
    raise TopologyError(f"no port free on all of {', '.join(hosts)}")


# -- the DNS server's geo rules, written at its start ------------------------------------


def geo_rules(lbs: dict[str, str], ttl: int) -> str:
    """The geo rules (``components.dns.geo``'s TOML) for ``lbs``: data centre -> its
    balancer's public address. The checks GET ``/health`` there, through the balancer,
    from a web server: a data centre whose balancer is up but whose web tier is dead
    (the balancer answers 502/503) leaves the answers too, as it should; the balancer's
    own admin ``/health`` would stay 200."""
    regions = {dc: region for dc, (_, region, _) in DATA_CENTRES.items()}
    lines = [f"ttl = {ttl}", "", "[health]"]
    lines += [f"{key} = {value}" for key, value in HEALTH.items()]
    for dc, (_, region, subnet) in DATA_CENTRES.items():
        others = [regions[o] for o in lbs if o != dc]
        lines += ["", f"[regions.{region}]", f'subnets = ["{subnet}"]',
                  "fallback = [" + ", ".join(f'"{o}"' for o in others) + "]"]  # fmt: skip
    lines += ["", "[targets]"]
    for dc, address in lbs.items():
        host = address.rpartition(":")[0]
        ipaddress.ip_address(host)  # an A record needs an address, not a name
        lines.append(f'{dc} = {{ address = "{host}", health = "http://{address}/health" }}')
    lines += ["", f'[names."{NAME}"]', f'default_region = "{regions["dc1"]}"']
    lines += [f'{regions[dc]} = [{{ target = "{dc}" }}]' for dc in lbs]
    return "\n".join(lines) + "\n"


def serve_dns(argv: list[str]) -> None:
    """Write the geo rules for the resolved balancers, then become ``components.dns``
    (``exec``: the same process, so the launcher's pid and ready line are the server's)."""
    parser = argparse.ArgumentParser(prog="python -m topologies.multi_dc")
    parser.add_argument("--dc", action="append", required=True, metavar="NAME=HOST:PORT")
    parser.add_argument("--ttl", type=int, required=True)
    parser.add_argument("--rules", required=True, metavar="PATH")
    args, rest = parser.parse_known_args(argv)
    lbs = {}
    for item in args.dc:
        name, _, address = item.partition("=")
        if name not in DATA_CENTRES or ":" not in address:
            parser.error(f"--dc {item!r}: want dc1|dc2=HOST:PORT")
        lbs[name] = address
    Path(args.rules).write_text(geo_rules(lbs, args.ttl))
    command = [sys.executable, "-m", "components.dns", "--zone", str(ZONE),
               "--geo", args.rules, *rest]  # fmt: skip
    sys.stdout.flush()
    os.execv(sys.executable, command)


if __name__ == "__main__":
    serve_dns(sys.argv[1:])
