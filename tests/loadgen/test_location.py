"""``{location}``: a user goes back to what it was last answered with (``Location``).

The photos profile is the reason: an uploader polls the photo it just created. Parsing
and ``location_path`` are checked alone; the profile itself runs against a real web
tier publishing to a real queue, where a wrong location would be a 404.
"""

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.worker.photo import job_from_doc
from loadgen import run_load
from loadgen.engine import MAX_LOCATION_BYTES, location_path
from loadgen.profile import ProfileError, load_profile, parse_profile

UPLOAD = """
[[requests]]
name = "upload"
method = "POST"
path = "/photos"
"""


def profile_with(path: str, extra: str = UPLOAD):
    return parse_profile(f'users = 2\n{extra}\n[[requests]]\nname = "back"\npath = "{path}"\n')


def test_location_may_start_a_path():
    spec = profile_with("{location}").requests[1]
    assert spec.uses_location and spec.path.render({"location": "/photos/7"}) == "/photos/7"
    spec = profile_with("{location}/thumbnail").requests[1]
    assert spec.path.render({"location": "/photos/7"}) == "/photos/7/thumbnail"


@pytest.mark.parametrize("path", ["/x{location}", "{location}{location}", "{location}/a b"])
def test_location_anywhere_else_in_a_path_is_refused(path):
    with pytest.raises(ProfileError, match="path"):
        profile_with(path)


def test_location_in_a_body_is_refused():
    with pytest.raises(ProfileError, match="body: {location} may only start a path"):
        parse_profile('users = 1\n[[requests]]\npath = "/"\nbody = "{location}"\n')


def test_a_mix_of_only_location_requests_is_refused():
    # Nothing would ever give the first user a location to go back to.
    with pytest.raises(ProfileError, match="needs a request without it"):
        profile_with("{location}", extra="")
    first_only = UPLOAD.replace('path = "/photos"', 'path = "/photos"\nfirst = true')
    with pytest.raises(ProfileError, match="needs a request without it"):
        profile_with("{location}", extra=first_only)


def test_the_request_without_location_is_the_fallback():
    assert profile_with("{location}").without_location.name == "upload"
    assert load_profile("default").without_location.name == "get_user"


@pytest.mark.parametrize(("header", "path"), [
    ("/photos/17", "/photos/17"),
    ("/photos/17?x=1#top", "/photos/17?x=1"),
    ("http://127.0.0.1:8080/photos/17?x=1", "/photos/17?x=1"),
    ("https://elsewhere.example/a", "/a"),  # the target is fixed: only the path counts
    ("photos/17", None),  # relative to the request's path: not followed
    ("//evil.example/x", None),  # a network-path reference
    ("ftp://host/x", None),
    ("/caf\u00e9", None),
    ("/a b", None),
    ("/" + "a" * MAX_LOCATION_BYTES, None),
    ("", None),
])  # fmt: skip
def test_location_path_keeps_only_a_path_on_the_same_target(header, path):
    assert location_path(header) == path


@given(st.text(max_size=3000))
def test_location_path_is_a_bounded_printable_path_or_none(text):
    path = location_path(text)
    assert path is None or (
        path.startswith("/") and path.isascii() and path.isprintable() and " " not in path
        and len(path) <= MAX_LOCATION_BYTES
    )  # fmt: skip


def test_photos_profile_uploads_valid_jobs_and_polls_them():
    p = load_profile("photos")
    assert p.mode == "open"
    upload, state = p.requests
    doc = json.loads(upload.body.render({"key": 3, "seq": 41, "rand": 0, "location": ""}))
    assert job_from_doc(doc).image == "user-3/photo-41.jpg"  # what the web tier validates
    assert (upload.method, upload.path.text) == ("POST", "/photos")
    assert state.method == "GET" and state.uses_location and not upload.uses_location


@pytest.fixture
def photo_web(spawn):
    # Photos on the store tier, as in the queued stage. (With the web tier's embedded
    # SQLite, a GET right after its own 202 can, rarely, 404 under concurrent requests:
    # a read-after-write gap of that backend, not of the location a user is given.)
    store, queue = spawn("store"), spawn("queue")
    return spawn("web", "--queue", "{}:{}".format(*queue.address()),
                 "--db", "store:{}:{}".format(*store.address()), "--seed-users", "1")  # fmt: skip


@pytest.mark.parametrize("mode", [{"rate": 60.0}, {"users": 4}])
def test_every_poll_finds_the_photo_its_user_uploaded(photo_web, mode):
    report = run_load(photo_web.url(), "photos", duration_s=1.5, warmup_s=0, progress=False,
                      out=io.StringIO(), **mode)  # fmt: skip
    assert report["errors"]["total"] == 0, {k: v["status"] for k, v in report["by_kind"].items()}
    by_kind = {kind: figures["status"] for kind, figures in report["by_kind"].items()}
    assert set(by_kind["upload_photo"]) == {"202"}
    # A wrong or missing location would be a 404 (or a GET of "/"): every poll found its photo.
    assert set(by_kind["photo_state"]) == {"200"} and by_kind["photo_state"]["200"] > 0
