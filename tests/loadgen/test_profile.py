"""Profiles: the built-in ones parse, templates render, every mistake is named."""

import json
from pathlib import Path

import pytest

from loadgen.profile import ProfileError, Template, builtin_profiles, load_profile, parse_profile

MINIMAL = """
users = 4
[[requests]]
path = "/"
"""
KEYS_FIRST = MINIMAL + "[keys]\n"


def test_default_profile_targets_the_web_tier():
    p = load_profile("default")
    assert "default" in builtin_profiles()
    assert p.mode == "closed" and p.users and p.rate is None
    assert (p.duration_s, p.warmup_s) == (20, 2)
    assert (p.keys.distribution, p.keys.n) == ("zipf", 1000)
    kinds = {r.name: r for r in p.requests}
    assert kinds["get_user"].method == "GET" and kinds["get_user"].path.text == "/users/{key}"
    assert kinds["get_user"].weight == max(r.weight for r in p.requests)
    assert kinds["put_user"].method == "PUT" and kinds["create_user"].method == "POST"
    assert kinds["static_css"].path.text == "/static/app.css"
    assert 0 < p.write_fraction < 0.2


@pytest.mark.parametrize("name", builtin_profiles())
def test_every_builtin_profile_parses(name):
    p = load_profile(name)
    assert p.name == name and p.requests and p.description


def test_builtin_profiles_include_reads_only_and_open_loop():
    assert load_profile("reads").write_fraction == 0
    assert load_profile("open").mode == "open"


def test_default_write_bodies_are_valid_user_json():
    p = load_profile("default")
    for request in p.requests:
        if request.body is None:
            continue
        user = json.loads(request.body.render({"key": 17, "seq": 3, "rand": 99}))
        assert set(user) == {"firstName", "lastName", "address", "phoneNumbers"}
        assert set(user["address"]) == {"streetAddress", "city", "state", "postalCode"}
        assert all(set(phone) == {"type", "number"} for phone in user["phoneNumbers"])
        assert ("Content-Type", "application/json") in request.headers


def test_template_renders_placeholders():
    t = Template.compile("/users/{key}/x{seq}", "path")
    assert t.render({"key": 5, "seq": 9, "rand": 0}) == "/users/5/x9"
    assert t.text == "/users/{key}/x{seq}"


def test_minimal_profile_gets_defaults():
    p = parse_profile(MINIMAL)
    assert p.requests[0].name == "GET /" and p.requests[0].method == "GET"
    assert p.keys.distribution == "uniform" and p.write_fraction == 0


def test_open_loop_profile():
    p = parse_profile('rate = 250.5\n[[requests]]\npath = "/"\n')
    assert p.mode == "open" and p.rate == 250.5 and p.users is None


def test_overrides_switch_mode_and_are_validated():
    p = parse_profile(MINIMAL)
    assert p.with_overrides(rate=100).mode == "open"
    assert p.with_overrides(users=3, duration_s=5, warmup_s=1).users == 3
    with pytest.raises(ProfileError, match="warm-up"):
        p.with_overrides(duration_s=1, warmup_s=2)
    with pytest.raises(ProfileError, match="not both"):
        p.with_overrides(users=2, rate=5)


def test_profile_loads_from_a_file(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL)
    assert load_profile(path).name == "mine"
    assert load_profile(str(path)).users == 4


def test_unknown_builtin_names_the_builtins():
    with pytest.raises(ProfileError, match="default"):
        load_profile("nonesuch")


def test_missing_file_is_a_profile_error(tmp_path: Path):
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("users = [", "invalid TOML"),
        ("users = 4\n", "at least one"),
        ("usres = 4\n" + MINIMAL, "usres: unknown setting"),
        ("rate = 10\n" + MINIMAL, "not both"),
        ("users = 0\n[[requests]]\npath='/'", "users"),
        ("users = 2.5\n[[requests]]\npath='/'", "users: must be an integer"),
        ("rate = -1\n[[requests]]\npath='/'", "rate"),
        ("duration_s = 0\n" + MINIMAL, "duration_s"),
        ("warmup_s = 30\n" + MINIMAL, "warm-up"),
        ("timeout_s = 'soon'\n" + MINIMAL, "timeout_s: must be a number"),
        (KEYS_FIRST + "distribution = 'pareto'\n", "keys.distribution"),
        (KEYS_FIRST + "s = -1\n", "keys.s"),
        (KEYS_FIRST + "n = 0\n", "keys.n"),
        (KEYS_FIRST + "skew = 1\n", "keys.skew: unknown"),
        ("[[requests]]\nmethod = 'GET'\n", r"requests\[0\].path: missing"),
        ("[[requests]]\npath = 'users'\n", "must start with '/'"),
        ("[[requests]]\npath = '/a b'\n", "no spaces"),
        ("[[requests]]\npath = '/users/{id}'\n", r"unknown placeholder \{id\}"),
        ("[[requests]]\npath = '/'\nmethod = 'FETCH'\n", "unknown method"),
        ("[[requests]]\npath = '/'\nweight = 0\n", "weight"),
        ("[[requests]]\npath = '/'\nweight = true\n", "weight: must be a number"),
        ("[[requests]]\npath = '/'\nbody = 3\n", "body"),
        ("[[requests]]\npath = '/'\n[requests.body]\nname = '{user}'\n", r"\{user\}"),
        ('[[requests]]\npath = "/"\nheaders = { X = "a\\nb" }\n', "one-line"),
        ("[[requests]]\npath = '/'\ncolour = 1\n", r"requests\[0\].colour: unknown"),
        ("[[requests]]\npath = '/'\nname = 'a'\n[[requests]]\npath = '/b'\nname = 'a'\n", "two"),
    ],
)
def test_invalid_profiles_are_rejected_with_the_setting_named(text, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile(text)


def test_string_body_is_sent_as_is():
    p = parse_profile('[[requests]]\nmethod="POST"\npath="/"\nbody = "k={key}"\n')
    assert p.requests[0].body.render({"key": 1, "seq": 0, "rand": 0}) == "k=1"
    assert p.requests[0].headers == ()
    assert p.write_fraction == 1.0


def test_sessions_profile_logs_in_first_with_the_web_tiers_body():
    from components.web.protocol import parse_login

    p = load_profile("sessions")
    assert p.cookies is True
    (login,) = p.first_requests
    assert (login.method, login.path.text) == ("POST", "/login")
    assert ("Content-Type", "application/json") in login.headers
    assert parse_login(json.loads(login.body.render({"key": 17, "seq": 0, "rand": 0}))) == 17
    assert [r.path.text for r in p.mix] == ["/me"] and p.write_fraction == 0
    assert p.to_dict()["requests"][0]["first"] is True and p.to_dict()["cookies"] is True


def test_cookies_and_first_are_checked():
    assert parse_profile("cookies = false\n" + MINIMAL).cookies is False
    with pytest.raises(ProfileError, match="cookies"):
        parse_profile('cookies = "no"\n' + MINIMAL)
    with pytest.raises(ProfileError, match="first"):
        parse_profile(MINIMAL + 'first = "yes"\n')
    with pytest.raises(ProfileError, match="the mix needs"):
        parse_profile(MINIMAL + "first = true\n")
