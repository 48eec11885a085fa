"""The API's documents: validation rules, error bodies, byte-exact encoding. No sockets."""

import copy

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.web.protocol import (
    MAX_PHONE_NUMBERS,
    NAME_MAX_CHARS,
    ValidationError,
    encode_user,
    error_body,
    parse_login,
    parse_user,
    user_id_from_text,
)

CHAPTER_USER = {
    "firstName": "John",
    "lastName": "Smith",
    "address": {
        "streetAddress": "21 2nd Street",
        "city": "New York",
        "state": "NY",
        "postalCode": 10021,
    },
    "phoneNumbers": [
        {"type": "home", "number": "212 555-1234"},
        {"type": "office", "number": "646 555-4567"},
    ],
}


def with_change(path, value):
    doc = copy.deepcopy(CHAPTER_USER)
    target = doc
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def field_of(doc, **kwargs):
    with pytest.raises(ValidationError) as error:
        parse_user(doc, **kwargs)
    return error.value.field


def test_the_chapters_document_is_accepted_and_encodes_byte_exactly():
    user = parse_user(CHAPTER_USER)
    assert encode_user(12, user) == (
        b'{"id":12,"firstName":"John","lastName":"Smith","address":{"streetAddress":'
        b'"21 2nd Street","city":"New York","state":"NY","postalCode":"10021"},'
        b'"phoneNumbers":[{"type":"home","number":"212 555-1234"},'
        b'{"type":"office","number":"646 555-4567"}]}'
    )


def test_field_order_of_the_encoding_does_not_depend_on_the_input_order():
    shuffled = dict(reversed(list(CHAPTER_USER.items())))
    assert encode_user(1, parse_user(shuffled)) == encode_user(1, parse_user(CHAPTER_USER))


def test_phone_numbers_are_optional():
    assert parse_user(with_change(["phoneNumbers"], KeyError))["phoneNumbers"] == []


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["firstName"], KeyError, "firstName"),
        (["lastName"], None, "lastName"),
        (["firstName"], "", "firstName"),
        (["firstName"], "   ", "firstName"),
        (["firstName"], 7, "firstName"),
        (["firstName"], "x" * (NAME_MAX_CHARS + 1), "firstName"),
        (["address"], KeyError, "address"),
        (["address"], "21 2nd Street", "address"),
        (["address", "city"], KeyError, "address.city"),
        (["address", "postalCode"], True, "address.postalCode"),
        (["address", "postalCode"], -5, "address.postalCode"),
        (["address", "zip"], "10021", "address.zip"),
        (["phoneNumbers"], {"type": "home"}, "phoneNumbers"),
        (["phoneNumbers", 1, "number"], KeyError, "phoneNumbers[1].number"),
        (["phoneNumbers", 0, "type"], 3, "phoneNumbers[0].type"),
        (["phoneNumbers", 0], "212 555-1234", "phoneNumbers[0]"),
        (["fristName"], "typo", "fristName"),
    ],
)
def test_each_broken_rule_names_its_field(path, value, field):
    assert field_of(with_change(path, value)) == field


def test_too_many_phone_numbers_are_refused():
    phones = [{"type": "home", "number": "1"}] * (MAX_PHONE_NUMBERS + 1)
    assert field_of(with_change(["phoneNumbers"], phones)) == "phoneNumbers"


@pytest.mark.parametrize("body", [[], "user", 5, None, True])
def test_body_must_be_an_object(body):
    assert field_of(body) == "body"


def test_id_is_refused_on_create_and_must_match_on_replace():
    assert field_of(with_change(["id"], 3)) == "id"
    assert field_of(with_change(["id"], 4), path_id=3) == "id"
    assert field_of(with_change(["id"], True), path_id=1) == "id"
    assert parse_user(with_change(["id"], 3), path_id=3)["firstName"] == "John"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), ("42", 42), ("9223372036854775807", (1 << 63) - 1), ("0", None),
     ("-1", None), ("abc", None), ("1e3", None), ("", None), ("9223372036854775808", None),
     ("٣", None), ("99999999999999999999999", None)],
)  # fmt: skip
def test_user_id_from_path_text(text, expected):
    assert user_id_from_text(text) == expected


def test_login_body():
    assert parse_login({"id": 5}) == 5
    for bad in ({}, {"id": "5"}, {"id": 0}, {"id": True}, {"id": 5, "password": "x"}, [5]):
        with pytest.raises(ValidationError):
            parse_login(bad)


def test_error_bodies_are_byte_exact():
    assert error_body("no such user") == b'{"error":"no such user"}'
    assert error_body("is required", "address.city") == (
        b'{"error":"is required","field":"address.city"}'
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_arbitrary_json_is_accepted_or_refused_with_a_field_never_a_crash(doc):
    try:
        user = parse_user(doc)
    except ValidationError as error:
        assert error.field and error.message
    else:
        orjson.loads(encode_user(1, user))


@given(st.dictionaries(st.sampled_from(["firstName", "lastName", "address", "phoneNumbers"]),
                       json_values))  # fmt: skip
def test_partial_documents_with_known_fields_never_crash(doc):
    try:
        parse_user(doc)
    except ValidationError as error:
        assert error.field.split(".")[0].split("[")[0] in CHAPTER_USER
