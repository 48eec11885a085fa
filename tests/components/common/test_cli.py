import argparse

import pytest

from components.common.cli import component_parser, host_port, resolve_shared


def parse(argv):
    return resolve_shared(component_parser("cache", 11211).parse_args(argv), "cache")


def test_admin_port_defaults_to_public_port_plus_ten_thousand():
    assert parse([]).admin_port == 21211
    assert parse(["--port", "0"]).admin_port == 0
    assert parse(["--port", "8000", "--admin-port", "9"]).admin_port == 9


def test_name_defaults_to_the_component():
    assert parse([]).name == "cache"


def test_bad_port_exits_two(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(["--port", "70000"])
    assert exit_info.value.code == 2
    assert "port out of range" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:5353", ("::1", 5353)), ("h:0", ("h", 0))],
)
def test_host_port_parses(text, expected):
    assert host_port(text) == expected


@pytest.mark.parametrize("text", ["nohost", ":80", "h:x", "h:99999"])
def test_host_port_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        host_port(text)
