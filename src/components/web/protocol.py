"""The web API's documents: the chapter's user JSON, its validation and the error body.

The HTTP framing is aiohttp's job; what is ours is the *content* on the wire, and that is
what this module pins down without any I/O, so it is tested byte-exactly and fuzzed.

The user document is the one the chapter shows for its web tier::

    {"id": 12, "firstName": "John", "lastName": "Smith",
     "address": {"streetAddress": "21 2nd Street", "city": "New York",
                 "state": "NY", "postalCode": "10021"},
     "phoneNumbers": [{"type": "home", "number": "212 555-1234"}]}

Rules, checked in ``parse_user`` (``POST /users`` and ``PUT /users/{id}``, which is a
full replacement, RFC 9110 §9.3.4):

- the body is a JSON object; unknown fields are refused, so a typo (``fristName``) is a
  422 naming it instead of a silently dropped value;
- ``firstName``, ``lastName`` and the four ``address`` fields are required, non-empty
  strings with a length bound; ``phoneNumbers`` is optional (default ``[]``), at most
  ``MAX_PHONE_NUMBERS`` objects of ``{type, number}``;
- ``postalCode`` is kept as a string (postal codes have leading zeros: Boston is
  02134); the chapter prints it as a number, so an integer is accepted and converted;
- ``id`` is the server's: refused in a ``POST``, and in a ``PUT`` it must equal the id
  in the path.

Every failure raises ``ValidationError(field, message)`` whose ``field`` is a path such
as ``address.city`` or ``phoneNumbers[1].number``; the server answers 422 with
``error_body``. Field order in encoded documents is fixed (``USER_FIELDS``) so the same
user always encodes to the same bytes, which is what lets caches and ETags agree.
"""

from __future__ import annotations

from typing import Any

import orjson

USER_FIELDS = ("id", "firstName", "lastName", "address", "phoneNumbers")
ADDRESS_FIELDS = ("streetAddress", "city", "state", "postalCode")
PHONE_FIELDS = ("type", "number")

NAME_MAX_CHARS = 100
ADDRESS_FIELD_MAX_CHARS = 200
PHONE_TYPE_MAX_CHARS = 20
PHONE_NUMBER_MAX_CHARS = 40
MAX_PHONE_NUMBERS = 10
MAX_ECHOED_KEY_CHARS = 64
#: Largest user id accepted in a path or body: SQLite's INTEGER is a signed 64-bit value.
MAX_USER_ID = (1 << 63) - 1


class ApiError(Exception):
    """An answer other than success: HTTP status plus the JSON error body's fields."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class ValidationError(ValueError):
    """A document broke a rule; ``field`` says where (``"body"`` for the whole document)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _string(value: Any, field: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > max_chars:
        raise ValidationError(field, f"must be at most {max_chars} characters")
    return value


def _object(value: Any, field: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise ValidationError(field, "must be an object")
    for key in value:
        if key not in allowed:
            # Echo the client's key back bounded, and visibly even when it is empty.
            name = key[:MAX_ECHOED_KEY_CHARS] if key else '""'
            prefix = "" if field == "body" else field + "."
            raise ValidationError(prefix + name, "unknown field")
    return value


def _required(doc: dict, key: str, field: str) -> Any:
    if key not in doc or doc[key] is None:
        raise ValidationError(field, "is required")
    return doc[key]


def _postal_code(value: Any, field: str) -> str:
    # bool is an int subclass; true is not a postal code.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    return _string(value, field, ADDRESS_FIELD_MAX_CHARS)


def user_id_from_text(text: str) -> int | None:
    """A path segment as a user id (1..MAX_USER_ID, plain digits), else None (a 404)."""
    if not text.isdigit() or not text.isascii() or len(text) > 19:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_USER_ID else None


def parse_user(doc: Any, *, path_id: int | None = None) -> dict:
    """Validate a request body; return the user without ``id``, fields in canonical order.

    ``path_id`` is the id from ``PUT /users/{id}``; None for ``POST /users``.
    """
    doc = _object(doc, "body", USER_FIELDS)
    if "id" in doc:
        if path_id is None:
            raise ValidationError("id", "is assigned by the server")
        if doc["id"] != path_id or isinstance(doc["id"], bool):
            raise ValidationError("id", "must match the id in the path")
    first = _string(_required(doc, "firstName", "firstName"), "firstName", NAME_MAX_CHARS)
    last = _string(_required(doc, "lastName", "lastName"), "lastName", NAME_MAX_CHARS)
    raw_address = _object(_required(doc, "address", "address"), "address", ADDRESS_FIELDS)
    address = {}
    for key in ADDRESS_FIELDS:
        field = f"address.{key}"
        value = _required(raw_address, key, field)
        if key == "postalCode":
            address[key] = _postal_code(value, field)
        else:
            address[key] = _string(value, field, ADDRESS_FIELD_MAX_CHARS)
    raw_phones = doc.get("phoneNumbers")
    phones = []
    if raw_phones is not None:
        if not isinstance(raw_phones, list):
            raise ValidationError("phoneNumbers", "must be an array")
        if len(raw_phones) > MAX_PHONE_NUMBERS:
            raise ValidationError("phoneNumbers", f"must have at most {MAX_PHONE_NUMBERS} items")
        for index, raw_phone in enumerate(raw_phones):
            field = f"phoneNumbers[{index}]"
            raw_phone = _object(raw_phone, field, PHONE_FIELDS)
            kind = _required(raw_phone, "type", field + ".type")
            number = _required(raw_phone, "number", field + ".number")
            phones.append(
                {
                    "type": _string(kind, field + ".type", PHONE_TYPE_MAX_CHARS),
                    "number": _string(number, field + ".number", PHONE_NUMBER_MAX_CHARS),
                }
            )
    return {"firstName": first, "lastName": last, "address": address, "phoneNumbers": phones}


def parse_login(doc: Any) -> int:
    """``POST /login`` body ``{"id": N}``: the user id to open a session for."""
    doc = _object(doc, "body", ("id",))
    value = _required(doc, "id", "id")
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_USER_ID:
        raise ValidationError("id", f"must be an integer 1..{MAX_USER_ID}")
    return value


def user_document(user_id: int, user: dict) -> dict:
    """The full document: ``id`` first, then the fields in ``USER_FIELDS`` order."""
    return {
        "id": user_id,
        "firstName": user["firstName"],
        "lastName": user["lastName"],
        "address": user["address"],
        "phoneNumbers": user["phoneNumbers"],
    }


def encode_user(user_id: int, user: dict) -> bytes:
    return orjson.dumps(user_document(user_id, user))


def error_body(message: str, field: str | None = None) -> bytes:
    """``{"error": message}`` or, for a validation failure, ``{"error", "field"}``."""
    body: dict[str, str] = {"error": message}
    if field is not None:
        body["field"] = field
    return orjson.dumps(body)
