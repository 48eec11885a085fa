"""The RFC 9111 core without sockets: every rule with a fixed clock, named for its section."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.edge import httpcache as hc
from components.edge.httpcache import (
    FRESH,
    STALE_OK,
    STALE_REVALIDATE,
    VALIDATE,
    Entry,
    Store,
    conditional_304,
    decide,
    freshness_lifetime,
    parse_directives,
    request_directives,
    select_range,
    stale_if_error,
    storable,
)

T0 = 1_700_000_000.0  # a fixed "now" for every test
DATE = hc.format_http_date(T0)


def entry(headers, body=b"body", *, status=200, now=T0, request_headers=(), target=b"/x",
          request_time=None, host=b"h"):  # fmt: skip
    headers = [(k.encode(), v.encode() if isinstance(v, str) else v) for k, v in headers]
    return Entry.from_response(
        host, target, status, b"OK", headers, body,
        now if request_time is None else request_time, now, list(request_headers), 86400.0,
    )  # fmt: skip


def h(**fields):
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in fields.items()]


# -- §5.2 directive parsing ------------------------------------------------------------------


def test_directives_names_lowercased_values_kept():
    assert parse_directives(b"Max-Age=60, public, S-MAXAGE=5") == {
        b"max-age": b"60",
        b"public": None,
        b"s-maxage": b"5",
    }


def test_directives_span_field_lines_and_first_occurrence_wins():
    assert parse_directives([b"max-age=10", b"max-age=20, no-cache"]) == {
        b"max-age": b"10",
        b"no-cache": None,
    }


def test_directives_quoted_string_may_hold_commas_and_escapes():
    parsed = parse_directives(b'no-cache="set-cookie, x-a", private="a\\"b", max-age=3')
    assert parsed == {b"no-cache": b"set-cookie, x-a", b"private": b'a"b', b"max-age": b"3"}


def test_directives_tolerate_empty_members_and_whitespace():
    assert parse_directives(b" , ,no-store ,\t max-age = 5 ,") == {
        b"no-store": None,
        b"max-age": b"5",
    }


@given(st.binary(max_size=300))
def test_directive_parser_never_raises(data):
    parsed = parse_directives(data)
    assert all(isinstance(k, bytes) and k == k.lower() for k in parsed)


_token = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)
_value = st.one_of(st.none(), st.integers(0, 10**12).map(lambda n: b"%d" % n))


@given(st.dictionaries(_token, _value, min_size=1, max_size=8))
def test_directive_parser_round_trips_generated_lists(directives):
    text = b", ".join(k if v is None else k + b"=" + v for k, v in directives.items())
    assert parse_directives(text) == directives


@given(st.dictionaries(_token, st.text("abc ,=;", max_size=10).map(str.encode), max_size=5))
def test_quoted_values_round_trip(directives):
    text = b",".join(k + b'="' + v + b'"' for k, v in directives.items())
    assert parse_directives(text) == directives


def test_delta_seconds_rules():
    assert hc.delta_seconds(b"0") == 0
    assert hc.delta_seconds(b"99999999999999999999") == 2**31  # §1.2.2 cap
    for bad in (None, b"", b"-1", b"1.5", b"ten", b" 5"):
        assert hc.delta_seconds(bad) is None


@given(st.binary(max_size=40))
def test_http_date_never_raises(data):
    value = hc.http_date(data)
    assert value is None or isinstance(value, float)


def test_http_date_accepts_the_three_formats():
    for text in (b"Sun, 06 Nov 1994 08:49:37 GMT", b"Sunday, 06-Nov-94 08:49:37 GMT",
                 b"Sun Nov  6 08:49:37 1994"):  # fmt: skip
        assert hc.http_date(text) == 784111777.0


# -- §3 storing ----------------------------------------------------------------------------


def test_3_only_get_is_stored():
    cc = h(cache_control="max-age=60")
    assert storable(b"GET", [], 200, cc) == (True, "")
    for method in (b"POST", b"PUT", b"HEAD", b"DELETE"):
        assert storable(method, [], 200, cc)[0] is False


def test_3_status_codes_heuristically_cacheable_or_explicit():
    assert storable(b"GET", [], 404, [])[0] is True  # heuristic (RFC 9110 §15.1)
    assert storable(b"GET", [], 302, []) == (False, "no-lifetime")
    assert storable(b"GET", [], 302, h(cache_control="max-age=5"))[0] is True
    assert storable(b"GET", [], 206, h(cache_control="max-age=5")) == (False, "status")
    assert storable(b"GET", [], 418, h(cache_control="max-age=5")) == (False, "status")


def test_5_2_2_5_no_store_in_response_or_request():
    assert storable(b"GET", [], 200, h(cache_control="no-store, max-age=9")) == (False, "no-store")
    assert storable(b"GET", h(cache_control="no-store"), 200, h(cache_control="max-age=9")) == (
        False,
        "no-store",
    )


def test_5_2_2_7_private_is_never_stored_by_a_shared_cache():
    assert storable(b"GET", [], 200, h(cache_control="private, max-age=60")) == (False, "private")
    assert storable(b"GET", [], 200, h(cache_control='private="x-a"'))[0] is False


def test_3_5_authorization_needs_public_s_maxage_or_must_revalidate():
    auth = h(authorization="Bearer t")
    assert storable(b"GET", auth, 200, h(cache_control="max-age=60")) == (False, "authorization")
    for cc in ("public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"):
        assert storable(b"GET", auth, 200, h(cache_control=cc))[0] is True, cc


def test_4_1_vary_star_never_matches_so_is_not_stored():
    assert storable(b"GET", [], 200, h(cache_control="max-age=6", vary="Accept, *")) == (
        False,
        "vary-star",
    )


def test_set_cookie_is_stored_only_when_explicitly_public():
    cookie = h(cache_control="max-age=60", set_cookie="s=1")
    assert storable(b"GET", [], 200, cookie) == (False, "set-cookie")
    assert storable(b"GET", [], 200, h(cache_control="public, max-age=60", set_cookie="s=1"))[0]


def test_hop_by_hop_and_connection_listed_fields_are_not_stored():
    e = entry([("Connection", "x-hop"), ("X-Hop", "1"), ("Keep-Alive", "t=5"),
               ("Cache-Control", "max-age=1"), ("Age", "3"), ("Content-Length", "4"),
               ("X-Kept", "yes")])  # fmt: skip
    assert e.headers == [(b"Cache-Control", b"max-age=1"), (b"X-Kept", b"yes")]


# -- §4.2.1 freshness lifetime -----------------------------------------------------------


def lifetime(fields, status=200):
    headers = [(k.encode(), v.encode()) for k, v in fields]
    cc = parse_directives(hc.get_all(headers, b"cache-control"))
    return freshness_lifetime(headers, cc, T0, status, 3600.0)


def test_4_2_1_s_maxage_wins_over_max_age_wins_over_expires():
    expires = hc.format_http_date(T0 + 500).decode()
    assert lifetime([("Cache-Control", "max-age=60, s-maxage=7"), ("Expires", expires)]) == 7
    assert lifetime([("Cache-Control", "max-age=60"), ("Expires", expires)]) == 60
    assert lifetime([("Expires", expires)]) == 500


def test_5_3_invalid_expires_means_already_expired():
    assert lifetime([("Expires", "0")]) == 0
    assert lifetime([("Expires", hc.format_http_date(T0 - 50).decode())]) == 0


def test_invalid_max_age_means_stale():
    assert lifetime([("Cache-Control", "max-age=soon")]) == 0


def test_4_2_2_heuristic_is_a_tenth_of_last_modified_age_capped():
    ten_hours_ago = hc.format_http_date(T0 - 36000).decode()
    assert lifetime([("Last-Modified", ten_hours_ago)]) == 3600  # 10% of 10 h, cap 1 h
    one_hour_ago = hc.format_http_date(T0 - 3600).decode()
    assert lifetime([("Last-Modified", one_hour_ago)]) == 360
    assert lifetime([("Last-Modified", one_hour_ago)], status=302) == 0  # not heuristic
    assert lifetime([]) == 0


# -- §4.2.3 age ------------------------------------------------------------------------------


def test_4_2_3_age_is_corrected_initial_age_plus_resident_time():
    # The origin dated it 10 s before we received it; the request took 2 s; Age said 3.
    e = entry([("Date", hc.format_http_date(T0 - 10).decode()), ("Age", "3"),
               ("Cache-Control", "max-age=60")], request_time=T0 - 2)  # fmt: skip
    # apparent_age = 10; corrected_age_value = 3 + 2 = 5; initial = max(10, 5) = 10.
    assert e.corrected_initial_age == 10
    assert e.current_age(T0 + 20) == 30


def test_4_2_3_date_in_the_future_gives_no_negative_age():
    e = entry([("Date", hc.format_http_date(T0 + 100).decode()), ("Cache-Control", "max-age=9")])
    assert e.current_age(T0) == 0


# -- §4 reuse: decide ------------------------------------------------------------------------


def fresh_for(seconds, extra="", **kw):
    cc = f"max-age={seconds}" + (f", {extra}" if extra else "")
    return entry([("Date", DATE.decode()), ("Cache-Control", cc)], **kw)


def test_fresh_then_stale():
    e = fresh_for(60)
    assert decide(e, {}, T0 + 59) == FRESH
    assert decide(e, {}, T0 + 60) == VALIDATE


def test_5_2_2_4_response_no_cache_always_validates():
    assert decide(fresh_for(60, "no-cache"), {}, T0) == VALIDATE


def test_5_2_1_4_request_no_cache_and_pragma():
    assert decide(fresh_for(60), {b"no-cache": None}, T0) == VALIDATE
    assert request_directives(h(pragma="no-cache")) == {b"no-cache": None}
    # §5.4: Pragma is ignored when Cache-Control is present.
    assert request_directives(h(pragma="no-cache", cache_control="max-stale")) == {
        b"max-stale": None
    }


def test_5_2_1_1_request_max_age():
    e = fresh_for(60)
    assert decide(e, {b"max-age": b"10"}, T0 + 10) == FRESH
    assert decide(e, {b"max-age": b"10"}, T0 + 11) == VALIDATE


def test_5_2_1_3_request_min_fresh():
    e = fresh_for(60)
    assert decide(e, {b"min-fresh": b"20"}, T0 + 40) == FRESH
    assert decide(e, {b"min-fresh": b"20"}, T0 + 41) == VALIDATE


def test_5_2_1_2_request_max_stale():
    e = fresh_for(60)
    assert decide(e, {b"max-stale": None}, T0 + 10_000) == STALE_OK
    assert decide(e, {b"max-stale": b"5"}, T0 + 65) == STALE_OK
    assert decide(e, {b"max-stale": b"5"}, T0 + 66) == VALIDATE


def test_4_2_4_must_revalidate_proxy_revalidate_and_s_maxage_forbid_stale():
    for extra in ("must-revalidate", "proxy-revalidate", "s-maxage=60"):
        e = fresh_for(60, extra + ", stale-while-revalidate=100, stale-if-error=100")
        assert decide(e, {b"max-stale": None}, T0 + 61) == VALIDATE, extra
        assert not stale_if_error(e, {}, T0 + 61), extra


def test_rfc5861_3_stale_while_revalidate_window():
    e = fresh_for(60, "stale-while-revalidate=30")
    assert decide(e, {}, T0 + 90) == STALE_REVALIDATE
    assert decide(e, {}, T0 + 91) == VALIDATE


def test_rfc5861_4_stale_if_error_window_from_response_or_request():
    e = fresh_for(60, "stale-if-error=30")
    assert stale_if_error(e, {}, T0 + 90)
    assert not stale_if_error(e, {}, T0 + 91)
    plain = fresh_for(60)
    assert not stale_if_error(plain, {}, T0 + 61)
    assert stale_if_error(plain, {b"stale-if-error": b"100"}, T0 + 61)


# -- §3.2, §4.3.4 freshening with a 304 ----------------------------------------------------


def test_4_3_4_a_304_updates_fields_but_not_framing_and_restarts_the_clock():
    e = fresh_for(1, body=b"0123456789")
    e.headers.append((b"ETag", b'"v1"'))
    e._derive(None, 86400.0)
    later = T0 + 100
    e.freshen([(b"Cache-Control", b"max-age=50"), (b"Content-Length", b"0"),
               (b"X-New", b"n"), (b"Date", hc.format_http_date(later))],
              later, later, 86400.0)  # fmt: skip
    assert (b"Cache-Control", b"max-age=50") in e.headers
    assert (b"X-New", b"n") in e.headers
    assert not any(k.lower() == b"content-length" for k, _ in e.headers)
    assert e.body == b"0123456789"
    assert e.lifetime == 50
    assert decide(e, {}, later + 49) == FRESH


# -- RFC 9110 §13 clients' conditionals ------------------------------------------------------


def test_if_none_match_weak_comparison_and_star():
    e = entry([("ETag", 'W/"v1"'), ("Cache-Control", "max-age=9")])
    assert conditional_304(e, h(if_none_match='"v1"'))
    assert conditional_304(e, h(if_none_match='"x", W/"v1"'))
    assert conditional_304(e, h(if_none_match="*"))
    assert not conditional_304(e, h(if_none_match='"v2"'))


def test_if_modified_since_is_ignored_when_if_none_match_is_present():
    lm = hc.format_http_date(T0 - 100).decode()
    e = entry([("ETag", '"v1"'), ("Last-Modified", lm), ("Cache-Control", "max-age=9")])
    assert conditional_304(e, h(if_modified_since=lm))
    assert conditional_304(e, h(if_modified_since=hc.format_http_date(T0).decode()))
    assert not conditional_304(e, h(if_modified_since=hc.format_http_date(T0 - 200).decode()))
    assert not conditional_304(e, h(if_none_match='"v2"', if_modified_since=lm))


# -- RFC 9110 §14 ranges ---------------------------------------------------------------------


def test_ranges():
    e = entry([("ETag", '"s"'), ("Cache-Control", "max-age=9")], body=b"0123456789")
    assert select_range(b"bytes=0-3", None, e) == (0, 3)
    assert select_range(b"bytes=7-", None, e) == (7, 9)
    assert select_range(b"bytes=-4", None, e) == (6, 9)
    assert select_range(b"bytes=5-100", None, e) == (5, 9)
    assert select_range(b"bytes=10-", None, e) == "416"
    assert select_range(b"bytes=-0", None, e) == "416"
    for ignored in (b"bytes=3-1", b"items=0-1", b"bytes=0-1,4-5", b"bytes=x-", b"bytes"):
        assert select_range(ignored, None, e) is None, ignored
    assert select_range(b"bytes=0-1", b'"s"', e) == (0, 1)
    assert select_range(b"bytes=0-1", b'"other"', e) is None


@given(st.binary(max_size=60))
def test_range_parser_never_raises(value):
    e = entry([("Cache-Control", "max-age=9")], body=b"0123456789")
    result = select_range(value, None, e)
    assert result is None or result == "416" or (0 <= result[0] <= result[1] <= 9)


# -- storage ---------------------------------------------------------------------------------


def test_store_evicts_least_recently_used_by_bytes():
    a = fresh_for(60, body=b"a" * 1000, target=b"/a")
    size = a.size
    store = Store(max_bytes=size * 2 + 10, max_object_bytes=10**6)
    b = fresh_for(60, body=b"b" * 1000, target=b"/b")
    c = fresh_for(60, body=b"c" * 1000, target=b"/c")
    assert store.put(a) and store.put(b)
    assert store.lookup(b"h", b"/a", []) is a  # /a is now the most recent
    assert store.put(c)
    assert store.lookup(b"h", b"/b", []) is None
    assert store.evictions == 1
    assert store.bytes == a.size + c.size <= store.max_bytes


def test_store_refuses_objects_over_the_limit():
    store = Store(max_bytes=10**6, max_object_bytes=500)
    assert not store.put(fresh_for(60, body=b"x" * 600))
    assert len(store) == 0 and store.bytes == 0


def test_4_1_vary_selects_by_normalised_secondary_key():
    store = Store(10**6, 10**6)
    fields = [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")]
    gz = entry(fields, b"gz", request_headers=h(accept_encoding="gzip,  br"))
    plain = entry(fields, b"plain")
    store.put(gz)
    store.put(plain)
    assert store.lookup(b"h", b"/x", h(accept_encoding="gzip, br")) is gz
    assert store.lookup(b"h", b"/x", []) is plain
    assert store.lookup(b"h", b"/x", h(accept_encoding="deflate")) is None
    assert store.remove_url(b"h", b"/x") == 2 and store.bytes == 0


def test_purges_by_prefix_tag_and_any_host():
    store = Store(10**6, 10**6)
    store.put(entry([("Cache-Control", "max-age=6"), ("Surrogate-Key", "t1 t2")], target=b"/s/1"))
    store.put(entry([("Cache-Control", "max-age=6"), ("Surrogate-Key", "t2")], target=b"/s/2"))
    store.put(entry([("Cache-Control", "max-age=6")], target=b"/s/1", host=b"other"))
    store.put(entry([("Cache-Control", "max-age=6")], target=b"/t"))
    assert store.remove_tag(b"t1") == 1
    assert store.remove_tag(b"t2") == 1
    assert store.remove_url(None, b"/s/1") == 1
    assert store.remove_prefix(None, b"/") == 1
    assert len(store) == 0 and store.bytes == 0 and not store._tags


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3000)), max_size=60))
def test_store_bytes_stay_bounded_and_accounted(ops):
    store = Store(max_bytes=8000, max_object_bytes=4000)
    for name, size in ops:
        store.put(fresh_for(60, body=b"x" * size, target=b"/%d" % name))
        assert store.bytes <= store.max_bytes
        assert store.bytes == sum(e.size for e in store._lru.values())


def test_rfc5861_4_no_cache_or_a_demanding_client_gets_no_stand_in():
    assert not stale_if_error(fresh_for(60, "no-cache, stale-if-error=99"), {}, T0 + 1)
    fresh = fresh_for(60)
    assert stale_if_error(fresh, {}, T0 + 1)  # fresh copy, validation only was wanted
    assert not stale_if_error(fresh, {b"max-age": b"0"}, T0 + 1)


def test_a_url_keeps_at_most_max_variants():
    store = Store(10**7, 10**6)
    fields = [("Cache-Control", "max-age=60"), ("Vary", "X-V")]
    for i in range(hc.MAX_VARIANTS + 5):
        store.put(entry(fields, b"v", request_headers=h(x_v=str(i))))
    assert len(store) == hc.MAX_VARIANTS
    assert store.lookup(b"h", b"/x", h(x_v="0")) is None
    assert store.lookup(b"h", b"/x", h(x_v=str(hc.MAX_VARIANTS + 4))) is not None


def test_a_new_vary_replaces_the_variants_selected_by_the_old_one():
    store = Store(10**6, 10**6)
    store.put(entry([("Cache-Control", "max-age=6"), ("Vary", "A")], request_headers=h(a="1")))
    store.put(entry([("Cache-Control", "max-age=6"), ("Vary", "B")], request_headers=h(b="1")))
    assert len(store) == 1 and store.lookup(b"h", b"/x", h(a="1", b="1")) is not None


def test_freshening_an_entry_purged_meanwhile_leaves_the_accounting_alone():
    store = Store(10**6, 10**6)
    e = fresh_for(0, body=b"b")
    store.put(e)
    store.remove_url(b"h", b"/x")
    old = e.size
    e.freshen([(b"X-Long", b"y" * 500)], T0, T0, 86400.0)
    store.resize(e, old)
    assert store.bytes == 0 and len(store) == 0
