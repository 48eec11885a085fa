"""The worker's pure parts: the photo job and the retry policy."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.worker import photo, retry


def test_valid_job_parses_with_defaults():
    job = photo.parse_job(b'{"image": "u1/beach.jpg"}')
    assert job == photo.PhotoJob("u1/beach.jpg", 640, 480, 64)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"width": 10}',
        b'{"image": "../etc/passwd"}',
        b'{"image": "/abs"}',
        b'{"image": "a", "width": 0}',
        b'{"image": "a", "height": 5000}',
        b'{"image": "a", "thumb": true}',
        b'{"image": "a", "fail": true}',
    ],
)
def test_bad_jobs_are_refused(body):
    with pytest.raises(photo.BadJob):
        photo.parse_job(body)


def test_thumbnail_samples_the_nearest_pixels():
    # 4x4 image, pixel (x, y) = bytes (x, y, 0); downscale to 2x2 takes x, y in {0, 2}.
    pixels = b"".join(bytes((x, y, 0)) for y in range(4) for x in range(4))
    assert photo.thumbnail(pixels, 4, 4, 2) == bytes((0, 0, 0, 2, 0, 0, 0, 2, 0, 2, 2, 0))


def test_thumbnail_never_upscales():
    pixels = bytes(range(12))
    assert photo.thumbnail(pixels, 2, 2, 64) == pixels


def test_processing_is_deterministic_in_the_image_name():
    a = photo.process(b'{"image": "a.jpg", "width": 100, "height": 50, "thumb": 10}')
    b = photo.process(b'{"image": "a.jpg", "width": 100, "height": 50, "thumb": 10}')
    c = photo.process(b'{"image": "b.jpg", "width": 100, "height": 50, "thumb": 10}')
    assert a == b and a.digest != c.digest
    assert len(a.thumbnail) == 10 * 10 * 3
    assert a.digest == hashlib.sha256(a.thumbnail).hexdigest()


def test_retry_backs_off_exponentially_then_buries():
    decisions = [retry.decide(n, 4, 2, 5) for n in (1, 2, 3, 4)]
    assert decisions == [
        retry.Decision("release", 2),
        retry.Decision("release", 4),
        retry.Decision("release", 5),  # capped
        retry.Decision("bury"),
    ]


def test_transient_failures_back_off_but_never_bury():
    decisions = [retry.decide(n, 2, 2, 5, transient=True) for n in (1, 2, 3, 50)]
    assert [d.action for d in decisions] == ["release"] * 4
    assert [d.delay_s for d in decisions] == [2, 4, 5, 5]


@given(st.integers(1, 10_000), st.integers(1, 50), st.integers(0, 100), st.integers(0, 3600),
       st.booleans())  # fmt: skip
def test_retry_delay_is_always_within_bounds(failures, max_failures, base, cap, transient):
    decision = retry.decide(failures, max_failures, base, cap, transient)
    assert (decision.action == "bury") == (failures >= max_failures and not transient)
    assert 0 <= decision.delay_s <= cap
