"""rqlite's request and answer shapes, byte for byte, without a socket."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.store import protocol
from components.store.database import Changes, Failure, Rows
from components.store.protocol import BadRequest, Options


def test_plain_positional_and_named_statements_parse():
    body = b'["CREATE TABLE t (a)", ["INSERT INTO t VALUES(?, ?)", 1, "x"], ["SELECT :a", {"a": true}]]'
    assert protocol.parse_statements(body) == [
        ("CREATE TABLE t (a)", None),
        ("INSERT INTO t VALUES(?, ?)", [1, "x"]),
        ("SELECT :a", {"a": 1}),
    ]


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{}", b"[]", b"[1]", b"[[1, 2]]", b'[""]', b'[["x", [1]]]', b'[["x", {"a": {}}]]',
     b'"SELECT 1"', b"\xff\xfe"],
)  # fmt: skip
def test_malformed_bodies_are_bad_requests(body):
    with pytest.raises(BadRequest):
        protocol.parse_statements(body)


def test_statement_count_is_bounded():
    body = b"[" + b",".join([b'"SELECT 1"'] * (protocol.MAX_STATEMENTS + 1)) + b"]"
    with pytest.raises(BadRequest, match="too many statements"):
        protocol.parse_statements(body)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_parse_or_raise_bad_request(body):
    try:
        statements = protocol.parse_statements(body)
    except BadRequest:
        return
    assert statements and all(isinstance(sql, str) for sql, _ in statements)


@given(st.text(max_size=100))
@settings(max_examples=300, deadline=None)
def test_arbitrary_query_strings_parse_or_raise_bad_request(qs):
    try:
        options = protocol.parse_options(qs)
    except BadRequest:
        return
    assert options.level in protocol.LEVELS


def test_bare_flags_are_true_and_level_defaults_to_weak():
    o = protocol.parse_options(
        "transaction&timings&level=NONE&freshness=1m30s&min_lsn=7&q=SELECT+1"
    )
    assert (o.transaction, o.timings, o.pretty, o.level) == (True, True, False, "none")
    assert o.freshness_s == 90.0 and o.min_lsn == 7 and o.q == "SELECT 1"
    assert protocol.parse_options("level=bogus&transaction=false").level == "weak"
    assert protocol.parse_options("transaction=false").transaction is False


@pytest.mark.parametrize("text,seconds", [("1s", 1.0), ("100ms", 0.1), ("2", 2.0), ("2m3s", 123.0)])
def test_go_durations(text, seconds):
    assert protocol.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "1.2.3s", "9" * 100])
def test_bad_durations(text):
    with pytest.raises(BadRequest):
        protocol.parse_duration(text)


def test_rows_changes_and_errors_render_as_rqlite():
    results = [
        Rows(["id", "name"], ["integer", "text"], [[1, "fiona"]]),
        Rows(["id"], ["integer"], []),
        Changes(5, 1),
        Changes(0, 0),
        Failure("no such table: foo"),
    ]
    body = protocol.results_body(results, Options(), 0.5)
    assert body == (
        b'{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"fiona"]]},'
        b'{"columns":["id"],"types":["integer"]},{"last_insert_id":5,"rows_affected":1},{},'
        b'{"error":"no such table: foo"}]}'
    )


def test_associative_timings_and_raft_index():
    results = [Rows(["id", "name"], ["integer", "text"], [[1, "fiona"]], time=0.25)]
    body = protocol.results_body(results, Options(associative=True, timings=True,
                                                  raft_index=True), 0.5, lsn=9)  # fmt: skip
    assert body == (
        b'{"results":[{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"}],'
        b'"time":0.25}],"lsn":9,"time":0.5,"raft_index":9}'
    )


def test_pretty_indents_four_spaces():
    body = protocol.results_body([Changes(1, 1)], Options(pretty=True), 0)
    assert body.startswith(b'{\n    "results": [\n        {\n            "last_insert_id": 1,')


def test_split_sql_keeps_semicolons_in_strings_and_triggers_and_drops_dump_wrappers():
    dump = (
        "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"
        "CREATE TABLE t (a);\nINSERT INTO t VALUES('x;y');INSERT INTO t VALUES(2);\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = a; END;\n"
        'INSERT INTO "_meta" VALUES(1);\nCOMMIT;\n'
    )
    assert [sql for sql, _ in protocol.split_sql(dump, "_meta")] == [
        "CREATE TABLE t (a);",
        "INSERT INTO t VALUES('x;y');",
        "INSERT INTO t VALUES(2);",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = a; END;",
    ]


def test_split_sql_refuses_an_unterminated_statement():
    with pytest.raises(BadRequest):
        protocol.split_sql("INSERT INTO t VALUES('open", "_meta")


def test_options_from_a_parsed_mapping_match_the_raw_string():
    from multidict import MultiDict

    raw = "transaction&level=none&min_lsn=3"
    assert protocol.parse_options(MultiDict([("transaction", ""), ("level", "none"),
                                             ("min_lsn", "3")])) == protocol.parse_options(raw)  # fmt: skip


def test_a_repeated_flag_counts_once_with_its_first_value_in_both_forms():
    from multidict import MultiDict

    raw = "level=none&level=strong&min_lsn=3&min_lsn=9"
    parsed = MultiDict([("level", "none"), ("level", "strong"), ("min_lsn", "3"),
                        ("min_lsn", "9")])  # fmt: skip
    assert protocol.parse_options(raw) == protocol.parse_options(parsed)
    assert (protocol.parse_options(raw).level, protocol.parse_options(raw).min_lsn) == ("none", 3)
