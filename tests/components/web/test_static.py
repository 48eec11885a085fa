"""Static assets: validators and conditional requests (RFC 9110 §13), path confinement."""

import os

import pytest

from components.web.static import (
    StaticFiles,
    entity_tag,
    etag_matches,
    http_date,
    is_not_modified,
    parse_http_date,
    safe_relative,
)

TAG = '"abc"'


def test_http_date_is_imf_fixdate_and_parses_back():
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    # The obsolete formats a recipient must still accept (RFC 9110 §5.6.7).
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    for bad in ("", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT"):
        assert parse_http_date(bad) is None


@pytest.mark.parametrize(
    ("header", "matches"),
    [('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True),
     ('"abcd"', False), ("abc", False), ('"x","y"', False)],
)  # fmt: skip
def test_if_none_match_uses_weak_comparison(header, matches):
    assert etag_matches(header, TAG) is matches


def test_if_none_match_takes_precedence_over_if_modified_since():
    later = http_date(2_000_000_000)
    assert is_not_modified('"other"', later, TAG, 1000) is False
    assert is_not_modified(TAG, http_date(0), TAG, 1000) is True


def test_if_modified_since_compares_whole_seconds():
    assert is_not_modified(None, http_date(1000), TAG, 1000) is True
    assert is_not_modified(None, http_date(999), TAG, 1000) is False
    assert is_not_modified(None, "garbage", TAG, 1000) is False
    assert is_not_modified(None, None, TAG, 1000) is False


@pytest.mark.parametrize(
    "path",
    ["../secret", "a/../../b", "/etc/passwd", "a//b", "./a", "a\\..\\b", "a\x00b", "", "a/",
     "x" * 2000],
)  # fmt: skip
def test_unsafe_paths_are_refused(path):
    assert safe_relative(path) is None


def test_files_are_served_with_content_derived_etags(tmp_path):
    (tmp_path / "css").mkdir()
    (tmp_path / "css" / "site.css").write_bytes(b"body{}")
    files = StaticFiles(tmp_path)
    asset = files.lookup("css/site.css")
    assert asset.content == b"body{}"
    assert asset.etag == entity_tag(b"body{}")
    assert asset.content_type == "text/css"
    assert files.lookup("css") is None  # a directory
    assert files.lookup("missing.css") is None


def test_a_changed_file_is_served_fresh(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"one")
    files = StaticFiles(tmp_path)
    first = files.lookup("a.txt")
    path.write_bytes(b"two!")
    os.utime(path, ns=(first.identity[1] + 2_000_000_000,) * 2)
    second = files.lookup("a.txt")
    assert second.content == b"two!" and second.etag != first.etag


def test_symlinks_leading_outside_the_root_are_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "inside.txt").write_bytes(b"ok")
    (root / "alias.txt").symlink_to(root / "inside.txt")
    files = StaticFiles(root)
    assert files.lookup("link.txt") is None
    assert files.lookup("alias.txt").content == b"ok"


def test_the_packaged_default_assets_exist():
    files = StaticFiles()
    for name in ("index.html", "app.css", "app.js", "logo.svg"):
        assert files.lookup(name) is not None, name
