"""The real server process, driven by dnspython (and dig when installed)."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import harness
from topologies.process import child_env

from .conftest import RULES_PATH, ZONE_PATH

TIMEOUT_S = 3.0


def udp(proc, name, rdtype="A", **kwargs):
    query = dns.message.make_query(name, rdtype, **kwargs)
    host, port = proc.address()
    return dns.query.udp(query, host, port=port, timeout=TIMEOUT_S)


def tcp(proc, name, rdtype="A", **kwargs):
    query = dns.message.make_query(name, rdtype, **kwargs)
    host, port = proc.address()
    return dns.query.tcp(query, host, port=port, timeout=TIMEOUT_S)


def metrics(proc):
    body = harness.http("GET", proc.url("admin") + "/metrics")[2].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}  # fmt: skip


EXPECTED = [
    ("www.example.com", "A", "192.0.2.1"),
    ("www.example.com", "AAAA", "2001:db8::1"),
    ("example.com", "NS", "ns1.example.com."),
    ("example.com", "MX", "10 mail.example.com."),
    ("example.com", "SOA", "ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300"),
    ("alias.example.com", "CNAME", "www.example.com."),
    ("txt.example.com", "TXT", '"hello world" "second \\"q\\""'),
    ("_sip._tcp.example.com", "SRV", "10 60 5060 sip.example.com."),
    ("1.2.0.192.in-addr.example.com", "PTR", "www.example.com."),
    ("example.com", "CAA", '0 issue "letsencrypt.org"'),
]  # fmt: skip


@pytest.mark.parametrize("transport", [udp, tcp])
def test_every_record_type_is_served(server, transport):
    for name, rdtype, text in EXPECTED:
        reply = transport(server, name, rdtype)
        assert reply.rcode() == dns.rcode.NOERROR, (name, rdtype)
        assert reply.flags & dns.flags.AA
        texts = {rr.to_text() for rr in reply.answer[0]}
        assert text in texts, (name, rdtype, texts)


def test_cname_chain_is_followed(server):
    reply = udp(server, "chain.example.com", "A")
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME] * 2 + [dns.rdatatype.A]


def test_query_case_is_preserved(server):
    reply = udp(server, "WwW.ExAmPlE.CoM", "A")
    assert reply.question[0].name.to_text() == "WwW.ExAmPlE.CoM."
    assert reply.answer[0][0].address == "192.0.2.1"


@pytest.mark.parametrize(
    ("name", "rdclass", "rcode"),
    [("nope.example.com", "IN", dns.rcode.NXDOMAIN), ("example.org", "IN", dns.rcode.REFUSED),
     ("version.bind", "CH", dns.rcode.REFUSED), ("mail.example.com", "IN", dns.rcode.NOERROR)],
)  # fmt: skip
def test_rcodes(server, name, rdclass, rcode):
    reply = udp(server, name, "AAAA", rdclass=rdclass)
    assert reply.rcode() == rcode
    if rcode in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR):
        assert reply.authority[0].rdtype == dns.rdatatype.SOA and reply.authority[0].ttl == 300


def test_notimp_for_unknown_opcode(server):
    query = dns.message.make_query("www.example.com", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    host, port = server.address()
    assert dns.query.udp(query, host, port=port, timeout=TIMEOUT_S).rcode() == dns.rcode.NOTIMP


def test_badvers_for_edns_version_one(server):
    assert udp(server, "www.example.com", use_edns=1).rcode() == dns.rcode.BADVERS


def raw_udp(proc, data: bytes, expect_reply: bool = True) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT_S if expect_reply else 0.2)
        sock.sendto(data, proc.address())
        try:
            return sock.recv(65535)
        except TimeoutError:
            if expect_reply:
                raise
            return None


def test_formerr_for_a_malformed_query(server):
    data = struct.pack("!HHHHHH", 0xABCD, 0x0100, 1, 0, 0, 0) + b"\x3fshort"
    reply = dns.message.from_wire(raw_udp(server, data))
    assert reply.id == 0xABCD and reply.rcode() == dns.rcode.FORMERR


def test_any_is_answered_minimally(server):
    reply = udp(server, "www.example.com", "ANY")
    assert len(reply.answer) == 1


def test_truncated_over_udp_then_complete_over_tcp(server):
    query = dns.message.make_query("big.example.com", "TXT", use_edns=False)
    host, port = server.address()
    truncated = dns.query.udp(query, host, port=port, timeout=TIMEOUT_S, ignore_trailing=True)
    assert truncated.flags & dns.flags.TC
    reply, used_tcp = dns.query.udp_with_fallback(query, host, port=port, timeout=TIMEOUT_S)
    assert used_tcp and len(reply.answer[0]) == 21


def test_edns_payload_decides_truncation(server):
    assert udp(server, "big.example.com", "TXT", use_edns=0, payload=512).flags & dns.flags.TC
    big = udp(server, "big.example.com", "TXT", use_edns=0, payload=4096)
    assert not big.flags & dns.flags.TC and big.payload == 1232


def frame(query) -> bytes:
    wire = query.to_wire()
    return len(wire).to_bytes(2, "big") + wire


def read_frame(sock) -> bytes:
    size = int.from_bytes(_read_exactly(sock, 2), "big")
    return _read_exactly(sock, size)


def _read_exactly(sock, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_several_queries_on_one_tcp_connection_in_one_write(server):
    queries = [dns.message.make_query(n, "A") for n in ("www.example.com", "mail.example.com",
                                                       "nope.example.com")]  # fmt: skip
    with socket.create_connection(server.address(), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"".join(frame(q) for q in queries))
        replies = [dns.message.from_wire(read_frame(sock)) for _ in queries]
        # A query trickled a few bytes per write is reassembled.
        data = frame(dns.message.make_query("sip.example.com", "A"))
        for start in range(0, len(data), 5):
            sock.sendall(data[start : start + 5])
        last = dns.message.from_wire(read_frame(sock))
    assert [r.id for r in replies] == [q.id for q in queries]
    assert [r.rcode() for r in replies] == [0, 0, dns.rcode.NXDOMAIN]
    assert last.answer[0][0].address == "192.0.2.9"


def test_client_subnet_selects_the_region_with_a_scope(server):
    for subnet, source, address, scope in [("10.1.2.0", 24, "192.0.2.1", 17),
                                           ("10.1.200.0", 24, "192.0.2.77", 24),
                                           ("10.2.0.0", 16, "198.51.100.10", 16)]:  # fmt: skip
        ecs = dns.edns.ECSOption(subnet, source)
        reply = udp(server, "www.geo.example.com", "A", use_edns=0, options=[ecs])
        got = reply.answer[0][0].address
        if address == "192.0.2.1":
            assert got in {"192.0.2.10", "192.0.2.11"}
        else:
            assert got == address
        assert reply.options[0].scopelen == scope
        assert reply.answer[0].ttl == 20


def test_source_address_is_used_without_client_subnet(server):
    # 127.0.0.1 matches no region: the name's default region (us).
    assert udp(server, "www.geo.example.com").answer[0][0].address == "198.51.100.10"


def burst(proc, query_wire: bytes, count: int, batch: int = 200) -> list[bytes]:
    """``count`` queries over UDP, ``batch`` in flight at a time; the raw replies."""
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.connect(proc.address())
        for start in range(0, count, batch):
            ids = range(start, min(start + batch, count))
            for msg_id in ids:
                sock.send(msg_id.to_bytes(2, "big") + query_wire[2:])
            for _ in ids:
                replies.append(sock.recv(4096))
    return replies


def test_weighted_split_over_ten_thousand_queries_is_within_two_points(server):
    ecs = dns.edns.ECSOption("10.1.7.0", 24)
    wire = dns.message.make_query("www.geo.example.com", "A", use_edns=0, options=[ecs]).to_wire()
    replies = burst(server, wire, 10_000)
    assert len({r[:2] for r in replies}) == 10_000  # every query answered once
    # dnspython reads a sample in full; the split is counted from the answer's address
    # bytes (parsing 10,000 replies with dnspython alone would take seconds).
    sample = Counter(dns.message.from_wire(r).answer[0][0].address for r in replies[:200])
    assert set(sample) == {"192.0.2.10", "192.0.2.11"}
    eu1 = sum(1 for r in replies if bytes([192, 0, 2, 10]) in r)
    eu2 = sum(1 for r in replies if bytes([192, 0, 2, 11]) in r)
    assert eu1 + eu2 == 10_000
    assert abs(eu1 / 10_000 - 0.70) <= 0.02, (eu1, eu2)


HOSTILE = [
    b"",  # nothing
    b"\x12\x34\x01",  # short header
    struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x3fabc",  # label past the end
    struct.pack("!HHHHHH", 2, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # self pointer
    struct.pack("!HHHHHH", 3, 0x0100, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF) + b"\x00" * 20,  # counts
    struct.pack("!HHHHHH", 4, 0x8100, 1, 0, 0, 0),  # a response
    b"\xff" * 65000,  # oversized garbage
]


def assert_still_answers(proc):
    assert udp(proc, "www.example.com").answer[0][0].address == "192.0.2.1"


def test_hostile_packets_never_stop_the_server(server):
    for data in HOSTILE:
        raw_udp(server, data, expect_reply=False)
        assert_still_answers(server)
    # Same over TCP: a frame that is not DNS closes that connection, not the server.
    with socket.create_connection(server.address(), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"\x00\x03abc")
        assert sock.recv(100) == b""
    assert_still_answers(server)


@given(data=st.binary(max_size=512))
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_generated_garbage_never_stops_the_server(server, data):
    # Garbage, then a valid query on the same socket: the server handles datagrams in
    # order, so the valid reply comes after the garbage's reply, if the garbage got one.
    probe = dns.message.make_query("www.example.com", "A")
    probe.id = (int.from_bytes(data[:2].ljust(2, b"\0"), "big") + 1) & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.connect(server.address())
        sock.send(data)
        sock.send(probe.to_wire())
        reply = sock.recv(65535)
        if reply[:2] != probe.to_wire()[:2]:
            assert reply[:2] == data[:2] and reply[2] & 0x80  # a FORMERR-like reply
            reply = sock.recv(65535)
    assert dns.message.from_wire(reply).answer[0][0].address == "192.0.2.1"


def test_metrics_count_queries_by_type_rcode_and_region(server):
    udp(server, "nope.example.com")
    udp(server, "www.geo.example.com", use_edns=0, options=[dns.edns.ECSOption("10.2.0.0", 16)])
    samples = metrics(server)
    key = ("scalelab_dns_queries_total",
           (("qtype", "A"), ("rcode", "NXDOMAIN"), ("region", "none"), ("transport", "udp")))  # fmt: skip
    assert samples[key] >= 1
    geo_key = ("scalelab_dns_queries_total",
               (("qtype", "A"), ("rcode", "NOERROR"), ("region", "us"), ("transport", "udp")))  # fmt: skip
    assert samples[geo_key] >= 1
    assert samples[("scalelab_dns_geo_answers_total", (("target", "us-1"),))] >= 1


def test_unknown_query_types_share_one_metric_label(server):
    for rdtype in (65000, 65001, 65002):
        assert udp(server, "www.example.com", rdtype).rcode() == dns.rcode.NOERROR
    samples = metrics(server)
    other = [v for (name, labels), v in samples.items()
             if name == "scalelab_dns_queries_total" and ("qtype", "other") in labels]  # fmt: skip
    assert sum(other) >= 3
    assert not any("TYPE6500" in str(labels) for _, labels in samples)


def test_admin_rules_shows_zones_rules_and_health(server):
    status, _, body = harness.http("GET", server.url("admin") + "/admin/rules")
    assert status == 200
    doc = json.loads(body)
    assert doc["zones"]["example.com."]["serial"] == 2024010101
    assert "eu" in doc["rules"]["regions"]
    assert doc["health"]["eu-1"]["healthy"] is True


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) not installed")
def test_dig_gets_answers_over_udp_and_tcp(server):
    host, port = server.address()
    for extra in ([], ["+tcp"]):
        out = subprocess.run(["dig", f"@{host}", "-p", str(port), "+short", "+time=2", "+tries=1",
                              *extra, "www.example.com", "A"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        assert out.stdout.strip() == "192.0.2.1", out
    out = subprocess.run(["dig", f"@{host}", "-p", str(port), "+time=2", "+tries=1",
                          "+subnet=10.2.0.0/16", "www.geo.example.com", "A"],
                         capture_output=True, text=True, timeout=10)  # fmt: skip
    assert "198.51.100.10" in out.stdout and "CLIENT-SUBNET: 10.2.0.0/16/16" in out.stdout


# -- tests that need their own server ------------------------------------------------


def test_idle_tcp_connections_are_closed(spawn):
    proc = spawn("dns", "--zone", str(ZONE_PATH), "--tcp-idle-timeout", "0.3")
    with socket.create_connection(proc.address(), timeout=TIMEOUT_S) as sock:
        sock.sendall(frame(dns.message.make_query("www.example.com", "A")))
        read_frame(sock)
        assert sock.recv(10) == b""  # closed by the server after 0.3 s idle


def test_tcp_connections_are_bounded(spawn):
    proc = spawn("dns", "--zone", str(ZONE_PATH), "--max-tcp-connections", "2")
    held = [socket.create_connection(proc.address(), timeout=TIMEOUT_S) for _ in range(2)]
    try:
        for sock in held:  # both are served
            sock.sendall(frame(dns.message.make_query("www.example.com", "A")))
            read_frame(sock)
        with socket.create_connection(proc.address(), timeout=TIMEOUT_S) as extra:
            try:
                extra.sendall(frame(dns.message.make_query("www.example.com", "A")))
                assert extra.recv(10) == b""
            except ConnectionResetError:
                pass
        samples = metrics(proc)
        assert samples[("scalelab_dns_tcp_rejected_total", ())] >= 1
        assert samples[("scalelab_dns_tcp_connections", ())] == 2
    finally:
        for sock in held:
            sock.close()


def test_a_bad_zone_stops_the_start_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.zone"
    bad.write_text("$ORIGIN x.\n$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 999.0.0.1\n")
    result = subprocess.run([sys.executable, "-m", "components.dns", "--zone", str(bad),
                             "--port", "0"], capture_output=True, text=True, timeout=30,
                            env=child_env())  # fmt: skip
    assert result.returncode == 2
    assert f"{bad}:5:" in result.stderr


def test_reload_swaps_zones_and_a_bad_file_keeps_the_old(spawn, zone_file, rules_file):
    proc = spawn("dns", "--zone", str(zone_file), "--geo", str(rules_file))
    url = proc.url("admin") + "/admin/reload"
    assert udp(proc, "new.example.com").rcode() == dns.rcode.NXDOMAIN
    zone_file.write_text(zone_file.read_text() + "new IN A 192.0.2.200\n")
    status, _, body = harness.http("POST", url)
    assert status == 200, body
    assert udp(proc, "new.example.com").answer[0][0].address == "192.0.2.200"
    good = zone_file.read_text()
    zone_file.write_text(good + "broken IN A nope\n")
    status, _, body = harness.http("POST", url)
    assert status == 400 and b"example.com.zone:" in body
    assert udp(proc, "new.example.com").answer[0][0].address == "192.0.2.200"
    zone_file.write_text(good)
    rules_file.write_text(rules_file.read_text().replace("198.51.100.10", "198.51.100.99"))
    assert harness.http("POST", url)[0] == 200
    assert udp(proc, "www.geo.example.com").answer[0][0].address == "198.51.100.99"


def test_admin_can_force_a_target_down_and_the_region_falls_back(spawn):
    proc = spawn("dns", "--zone", str(ZONE_PATH), "--geo", str(RULES_PATH))
    url = proc.url("admin") + "/admin/health"
    ecs = [dns.edns.ECSOption("10.1.200.0", 24)]
    assert (
        udp(proc, "www.geo.example.com", use_edns=0, options=ecs).answer[0][0].address
        == "192.0.2.77"
    )
    status, _, body = harness.http("POST", url, b'{"target": "lab-1", "state": "down"}')
    assert status == 200 and json.loads(body)["healthy"] is False
    fallback = {udp(proc, "www.geo.example.com", use_edns=0, options=ecs).answer[0][0].address
                for _ in range(10)}  # fmt: skip
    assert fallback == {"192.0.2.10", "192.0.2.11"}  # eu-lab falls back to eu
    assert harness.http("POST", url, b'{"target": "lab-1", "state": "auto"}')[0] == 200
    assert (
        udp(proc, "www.geo.example.com", use_edns=0, options=ecs).answer[0][0].address
        == "192.0.2.77"
    )
    assert harness.http("POST", url, b'{"target": "nope", "state": "down"}')[0] == 404
    assert harness.http("POST", url, b'{"target": "lab-1", "state": "sideways"}')[0] == 400


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _serve_health(port: int = 0) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_failover_when_health_goes_away_and_recovery_when_it_returns(spawn, rules_file):
    httpd = _serve_health()
    port = httpd.server_address[1]
    rules_file.write_text(rules_file.read_text().replace(
        'lab-1 = { address = "192.0.2.77" }',
        f'lab-1 = {{ address = "192.0.2.77", health = "http://127.0.0.1:{port}/health" }}'))  # fmt: skip
    proc = spawn("dns", "--zone", str(ZONE_PATH), "--geo", str(rules_file))
    ecs = [dns.edns.ECSOption("10.1.200.0", 24)]

    def answer():
        return udp(proc, "www.geo.example.com", use_edns=0, options=ecs).answer[0][0].address

    try:
        harness.wait_until_sync(
            lambda: metrics(proc).get(
                ("scalelab_dns_health_checks_total", (("result", "ok"), ("target", "lab-1")))
            ),  # fmt: skip
            what="a successful check",
        )
        assert answer() == "192.0.2.77"
        httpd.shutdown()
        httpd.server_close()  # the health endpoint goes away: connection refused
        harness.wait_until_sync(lambda: answer() != "192.0.2.77", what="failover to eu")
        assert answer() in {"192.0.2.10", "192.0.2.11"}
        status, _, body = harness.http("GET", proc.url("admin") + "/admin/rules")
        assert json.loads(body)["health"]["lab-1"]["healthy"] is False
        httpd = _serve_health(port)  # it comes back on the same port
        harness.wait_until_sync(lambda: answer() == "192.0.2.77", what="recovery")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "target_down" in proc.log_tail(50) and "target_up" in proc.log_tail(50)


def test_wildcard_answer_keeps_the_query_name_and_case(server):
    reply = udp(server, "Some.Host.WILD.example.com", "A")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert reply.answer[0].name.to_text() == "Some.Host.WILD.example.com."
    assert reply.answer[0][0].address == "192.0.2.50"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [(("[targets]", "[targets"), "geo.toml"),
     (('[names."www.geo.example.com."]', '[names."www.example.org."]'), "not inside any zone")],
)  # fmt: skip
def test_bad_rules_stop_the_start_with_the_reason(tmp_path, rules_file, edit, reason):
    rules_file.write_text(rules_file.read_text().replace(*edit))
    result = subprocess.run([sys.executable, "-m", "components.dns", "--zone", str(ZONE_PATH),
                             "--geo", str(rules_file), "--port", "0"], capture_output=True,
                            text=True, timeout=30, env=child_env())  # fmt: skip
    assert result.returncode == 2
    assert reason in result.stderr


def test_sigterm_with_an_idle_tcp_client_exits_promptly(spawn):
    proc = spawn("dns", "--zone", str(ZONE_PATH), "--drain-timeout", "5")
    with socket.create_connection(proc.address(), timeout=TIMEOUT_S) as sock:
        sock.sendall(frame(dns.message.make_query("www.example.com", "A")))
        read_frame(sock)
        proc.signal(15)
        assert proc.popen.wait(timeout=4) == 0  # well inside the drain timeout
        assert sock.recv(10) == b""


# -- the list, over the wire: rcodes, compression, EDNS sizes, ECS scopes ------


def raw_tcp(proc, data: bytes) -> bytes:
    with socket.create_connection(proc.address(), timeout=TIMEOUT_S) as sock:
        sock.sendall(len(data).to_bytes(2, "big") + data)
        return read_frame(sock)


def rcode_of(wire: bytes) -> int:
    return wire[3] & 0x0F


@pytest.mark.parametrize("data", [b"", b"\x12\x34\x01", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00",
                                  struct.pack("!HHHHHH", 7, 0x8100, 1, 0, 0, 0)])  # fmt: skip
def test_no_reply_when_the_header_is_unreadable_or_a_response(server, data):
    assert raw_udp(server, data, expect_reply=False) is None
    assert_still_answers(server)


def test_formerr_over_tcp_keeps_the_connection(server):
    bad = struct.pack("!HHHHHH", 0x4321, 0x0100, 1, 0, 0, 0) + b"\x3fshort"
    good = dns.message.make_query("www.example.com", "A")
    with socket.create_connection(server.address(), timeout=TIMEOUT_S) as sock:
        sock.sendall(len(bad).to_bytes(2, "big") + bad + frame(good))
        first = read_frame(sock)
        assert first[:2] == b"\x43\x21" and rcode_of(first) == dns.rcode.FORMERR
        assert dns.message.from_wire(read_frame(sock)).answer[0][0].address == "192.0.2.1"


@pytest.mark.parametrize(("opcode", "name"), [(2, "STATUS"), (4, "NOTIFY"), (5, "UPDATE"),
                                              (6, "DSO"), (15, "unassigned")])  # fmt: skip
def test_every_opcode_but_query_is_notimp(server, opcode, name):
    wire = bytearray(dns.message.make_query("www.example.com", "A").to_wire())
    wire[2] = (wire[2] & 0x87) | (opcode << 3)
    reply = raw_udp(server, bytes(wire))
    assert reply[:2] == wire[:2] and rcode_of(reply) == dns.rcode.NOTIMP, name
    assert (reply[2] >> 3) & 0x0F == opcode  # the opcode is echoed


def test_zone_transfers_are_refused_over_tcp(server):
    for rdtype in ("AXFR", "IXFR"):
        query = dns.message.make_query("example.com", rdtype)
        assert rcode_of(raw_tcp(server, query.to_wire())) == dns.rcode.REFUSED, rdtype


def test_nodata_is_noerror_with_an_empty_answer_and_the_soa(server):
    for name, rdtype in [("mail.example.com", "MX"), ("www.geo.example.com", "MX"),
                         ("b.c.example.com", "A"), ("x.wild.example.com", "MX")]:  # fmt: skip
        reply = udp(server, name, rdtype)
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer == [], name
        assert reply.flags & dns.flags.AA
        assert [rr.rdtype for rr in reply.authority] == [dns.rdatatype.SOA], name
        assert reply.authority[0].ttl == 300  # min(SOA TTL 3600, MINIMUM 300)


def test_delegation_is_a_referral_with_glue_and_aa_clear(server):
    reply = udp(server, "host.sub.example.com", "A")
    assert reply.rcode() == dns.rcode.NOERROR and not reply.flags & dns.flags.AA
    assert reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.NS
    assert reply.additional[0][0].address == "192.0.2.99"


def test_names_are_compressed_on_the_wire(server):
    query = dns.message.make_query("example.com", "MX")
    wire = raw_udp(server, query.to_wire())
    reply = dns.message.from_wire(wire)
    assert reply.answer[0][0].exchange.to_text() == "mail.example.com."
    assert wire.count(b"\x07example\x03com\x00") == 1  # the question, then only pointers
    assert b"\xc0\x0c" in wire  # the answer's owner points at the question name
    assert b"\x04mail\xc0\x0c" in wire  # the exchange is 'mail' + a pointer


BIG_REPLY_BYTES = 1216  # big.example.com TXT in full without EDNS; an OPT adds 11


@pytest.mark.parametrize("payload", [None, 0, 511, 512, 1000, 1215, 1232, 1500, 4096, 65535])
def test_edns_sizes(server, payload):
    """RFC 6891 §6.2.3/§6.2.5: a payload below 512 counts as 512; we never send more
    than our own 1232; the reply fits the smaller of the two or is truncated with TC=1."""
    kwargs = {"use_edns": False} if payload is None else {"use_edns": 0, "payload": payload}
    query = dns.message.make_query("big.example.com", "TXT", **kwargs)
    size = BIG_REPLY_BYTES + (0 if payload is None else 11)
    full = raw_tcp(server, query.to_wire())
    assert len(full) == size and not full[2] & 0x02  # TCP: complete, TC clear
    wire = raw_udp(server, query.to_wire())
    limit = 512 if payload is None else min(max(payload, 512), 1232)
    assert len(wire) <= limit
    truncated = bool(wire[2] & 0x02)
    assert truncated == (size > limit), (payload, len(wire))
    reply = dns.message.from_wire(wire)
    if payload is None:
        assert reply.edns < 0  # no OPT asked for, none sent
    else:
        assert reply.edns == 0 and reply.payload == 1232
    if not truncated:
        assert len(reply.answer[0]) == 21


@pytest.mark.parametrize(
    ("subnet", "source", "name", "addresses", "scope"),
    [("10.1.2.0", 24, "www.geo", {"192.0.2.10", "192.0.2.11"}, 17),  # eu, lab nested at /24
     ("10.1.0.0", 16, "www.geo", {"192.0.2.10", "192.0.2.11"}, 17),  # scope past the source
     ("10.1.200.128", 25, "www.geo", {"192.0.2.77"}, 24),  # lab, nothing nested
     ("10.2.9.0", 24, "www.geo", {"198.51.100.10"}, 16),  # us
     ("2001:db8:1:2::", 64, "www.geo", {"192.0.2.10", "192.0.2.11"}, 48),  # eu over IPv6
     ("0.0.0.0", 0, "www.geo", {"198.51.100.10"}, 0),  # RFC 7871 §7.1.2: no info, default
     ("10.1.2.0", 24, "www", {"192.0.2.1"}, 0),  # a static name: valid for everyone
     ("10.1.2.0", 24, "nope", set(), 0)],  # NXDOMAIN: valid for everyone
)  # fmt: skip
def test_ecs_scopes(server, subnet, source, name, addresses, scope):
    ecs = dns.edns.ECSOption(subnet, source)
    reply = udp(server, f"{name}.example.com", "A", use_edns=0, options=[ecs])
    got = {rr.address for rrset in reply.answer for rr in rrset}
    assert got <= addresses and bool(got) == bool(addresses)  # one target of the region's
    (option,) = reply.options
    # RFC 7871 §7.2.1: family, source prefix and address echoed, our scope added.
    assert (option.address, option.srclen, option.scopelen) == (subnet, source, scope)


def test_generic_rfc_3597_records_are_served(server):
    reply = udp(server, "generic.example.com", "TYPE65280")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    (rdata,) = reply.answer[0]
    assert rdata.rdtype == 65280 and rdata.data == b"\x0a\x00\x00\x01"
    assert udp(server, "generic.example.com", "A").answer[0][0].address == "192.0.2.2"
    nodata = udp(server, "generic.example.com", "TYPE65281")
    assert nodata.answer == [] and nodata.authority[0].rdtype == dns.rdatatype.SOA


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) not installed")
def test_dig_reads_every_record_type_and_retries_truncated_answers_over_tcp(server):
    host, port = server.address()
    questions = [part for name, rdtype, _ in EXPECTED for part in (name, rdtype)]
    out = subprocess.run(["dig", f"@{host}", "-p", str(port), "+short", "+time=2", "+tries=1",
                          *questions, "generic.example.com", "TYPE65280"],
                         capture_output=True, text=True, timeout=20)  # fmt: skip
    lines = out.stdout.splitlines()
    for _, _, text in EXPECTED:
        assert text in lines, (text, out)
    assert "\\# 4 0A000001" in lines
    # Without EDNS the big TXT set does not fit 512 bytes: dig sees TC and asks over TCP.
    out = subprocess.run(["dig", f"@{host}", "-p", str(port), "+noedns", "+time=2",
                          "+tries=1", "big.example.com", "TXT"],
                         capture_output=True, text=True, timeout=20)  # fmt: skip
    assert "Truncated, retrying in TCP mode" in out.stdout + out.stderr, out
    assert out.stdout.count("IN\tTXT\t") == 21


def test_a_burst_of_queries_fits_the_receive_buffer(server):
    """1,500 queries sent before reading any reply (a load tool's opening burst): with
    Linux's default 208 KiB receive buffer the kernel drops most of them unseen."""
    wire = dns.message.make_query("www.example.com", "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # ours must hold it all
        sock.settimeout(TIMEOUT_S)
        sock.connect(server.address())
        for msg_id in range(1500):
            sock.send(msg_id.to_bytes(2, "big") + wire[2:])
        ids = set()
        try:
            while len(ids) < 1500:
                ids.add(int.from_bytes(sock.recv(4096)[:2], "big"))
        except TimeoutError:
            pass
    assert len(ids) == 1500, f"{1500 - len(ids)} queries lost"
