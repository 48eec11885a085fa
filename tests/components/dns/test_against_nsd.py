"""Differential test: our server and NSD, the issue's reference, serve the same zone file
and must give the same answers.

NSD (NLnet Labs, C, authoritative-only) runs from a throw-away config on a loopback
port, started by bench/benchlib.py as the side-by-side benchmark starts it, and is
stopped by its PID. For every name of the test zone (and names around it: missing,
wildcard-matched, below a delegation, in another zone, in mixed case) and every type we
serve, both must agree on the rcode, the
AA and TC flags, the answer section, and the authority section of negative answers and
referrals. The additional section is where the two differ on purpose: NSD adds the
zone's NS glue to every positive answer (it is not minimal by default), we add only the
addresses of MX/NS/SRV targets and glue of referrals; so ours must be a subset of NSD's.
Skipped when NSD is not installed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from .conftest import ZONE_PATH

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import benchlib  # noqa: E402  (NSD started as the side-by-side benchmark starts it)

pytestmark = pytest.mark.skipif(shutil.which("nsd") is None, reason="nsd not installed")

NAMES = ["example.com", "www.example.com", "mail.example.com", "alias.example.com",
         "chain.example.com", "away.example.com", "loop1.example.com", "txt.example.com",
         "_sip._tcp.example.com", "1.2.0.192.in-addr.example.com", "a.b.c.example.com",
         "b.c.example.com", "sub.example.com", "host.sub.example.com", "nope.example.com",
         "x.y.wild.example.com", "explicit.wild.example.com", "foo.cn.example.com",
         "generic.example.com", "big.example.com", "WwW.ExAmPlE.cOm", "example.org"]  # fmt: skip
TYPES = ["A", "AAAA", "NS", "MX", "SOA", "CNAME", "TXT", "SRV", "PTR", "CAA", "TYPE65280"]


def answers(port: int) -> bool:
    try:
        query = dns.message.make_query("www.example.com", "A")
        return bool(dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2).answer)
    except (dns.exception.Timeout, OSError):
        return False


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    port = benchlib.free_port(udp_too=True)
    server = benchlib.start_nsd(tmp_path_factory.mktemp("nsd"), ZONE_PATH, port=port,
                                ready=lambda: answers(port), cpus=None)  # fmt: skip
    try:
        yield port
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ours(server):
    return server.address()[1]  # the shared server: the geo rules touch no name here


def texts(section) -> list[str]:
    return sorted(rr.to_text() for rr in section)


@pytest.mark.parametrize("name", NAMES)
def test_same_answers_as_nsd(nsd, ours, name):
    for rdtype in TYPES:
        query = dns.message.make_query(name, rdtype)  # EDNS 1232: big TXT fits both
        mine = dns.query.udp(query, "127.0.0.1", port=ours, timeout=3)
        theirs = dns.query.udp(query, "127.0.0.1", port=nsd, timeout=3)
        where = f"{name} {rdtype}"
        assert mine.rcode() == theirs.rcode(), where
        for flag in (dns.flags.AA, dns.flags.TC):
            assert mine.flags & flag == theirs.flags & flag, where
        assert texts(mine.answer) == texts(theirs.answer), where
        if not mine.answer:  # negative answers and referrals
            assert texts(mine.authority) == texts(theirs.authority), where
        assert set(texts(mine.additional)) <= set(texts(theirs.additional)), where


def test_same_truncation_as_nsd_without_edns(nsd, ours):
    query = dns.message.make_query("big.example.com", "TXT", use_edns=False)
    mine = dns.query.udp(query, "127.0.0.1", port=ours, timeout=3, ignore_trailing=True)
    theirs = dns.query.udp(query, "127.0.0.1", port=nsd, timeout=3, ignore_trailing=True)
    assert mine.flags & dns.flags.TC and theirs.flags & dns.flags.TC
    full = [dns.query.tcp(query, "127.0.0.1", port=port, timeout=3) for port in (ours, nsd)]
    assert texts(full[0].answer) == texts(full[1].answer)
