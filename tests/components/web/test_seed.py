"""Seed users are a pure function of the id: same data on every run and machine."""

from components.web.protocol import encode_user, parse_user
from components.web.seed import seed_user, splitmix64


def test_splitmix64_matches_the_reference_sequence():
    # First outputs of the reference C implementation seeded with 0 (state += golden gamma).
    assert splitmix64(0) == 0xE220A8397B1DCDAF
    assert splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4


def test_user_one_is_pinned():
    # If this changes, every recorded benchmark and cached ETag changes with it.
    assert encode_user(1, seed_user(1)) == (
        b'{"id":1,"firstName":"Olga","lastName":"Okafor","address":{"streetAddress":'
        b'"872 Maple Drive","city":"Miami","state":"FL","postalCode":"33163"},"phoneNumbers":'
        b'[{"type":"home","number":"305 460-9039"},{"type":"office","number":"305 071-4543"}]}'
    )


def test_seed_users_pass_the_apis_own_validation():
    for user_id in range(1, 500):
        user = seed_user(user_id)
        assert parse_user(user) == user


def test_seed_users_differ_and_phone_types_do_not_repeat():
    documents = {encode_user(0, seed_user(i)) for i in range(1, 200)}
    assert len(documents) == 199
    for user_id in range(1, 200):
        types = [phone["type"] for phone in seed_user(user_id)["phoneNumbers"]]
        assert len(types) == len(set(types))
