"""Deterministic seed users: user N has the same name, address and phones on every run.

A benchmark that fetches ``/users/731`` must get the same document on every machine and
every run, or caches, ETags and comparisons between runs mean nothing. So seed data is a
pure function of the id, not of a random generator whose algorithm may change between
Python versions: ``splitmix64`` (Steele, Lea and Flood, 2014) mixes the id and a field
number into 64 well-distributed bits, and those pick from fixed word lists. The lists are
small and obviously fake; the documents are about the size of the chapter's example
(about 250 bytes of JSON), which is what matters for cache and network figures.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1

FIRST_NAMES = (
    "John", "Mary", "Ahmed", "Li", "Sofia", "Kenji", "Amara", "Lucas", "Priya", "Olga",
    "Mateo", "Chen", "Fatima", "Noah", "Yuki", "Elena", "Kwame", "Ana", "Ravi", "Ingrid",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Garcia", "Chen", "Okafor", "Muller", "Tanaka", "Silva", "Kowalski", "Haddad",
    "Nguyen", "Johnson", "Rossi", "Petrov", "Kim", "Dubois", "Mensah", "Larsen", "Patel",
)  # fmt: skip
STREETS = (
    "2nd Street", "Main Street", "Oak Avenue", "Maple Drive", "Cedar Lane", "Park Road",
    "Elm Street", "Lake View", "Hill Road", "River Walk", "Sunset Boulevard", "Pine Court",
)  # fmt: skip
#: (city, state, first three digits of its postal codes)
CITIES = (
    ("New York", "NY", "100"), ("Boston", "MA", "021"), ("Chicago", "IL", "606"),
    ("Seattle", "WA", "981"), ("Austin", "TX", "787"), ("Denver", "CO", "802"),
    ("Atlanta", "GA", "303"), ("Portland", "OR", "972"), ("Miami", "FL", "331"),
    ("San Francisco", "CA", "941"),
)  # fmt: skip
AREA_CODES = ("212", "617", "312", "206", "512", "303", "404", "503", "305", "415")
PHONE_TYPES = ("home", "office", "mobile")


def splitmix64(value: int) -> int:
    """One step of splitmix64: a bijective mix of 64 bits."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _pick(user_id: int, field: int, choices):
    return choices[splitmix64(user_id * 64 + field) % len(choices)]


def seed_user(user_id: int) -> dict:
    """The seed user ``user_id`` (without ``id``), in the shape ``protocol.parse_user`` returns."""
    city, state, zip_prefix = _pick(user_id, 3, CITIES)
    area = AREA_CODES[CITIES.index((city, state, zip_prefix))]
    house = 1 + splitmix64(user_id * 64 + 4) % 999
    first_type = _pick(user_id, 8, PHONE_TYPES)
    types = [first_type, "office" if first_type == "home" else "home"]
    phones = []
    for slot in range(1 + splitmix64(user_id * 64 + 5) % 2):
        digits = splitmix64(user_id * 64 + 6 + slot) % 10_000_000
        number = f"{area} {digits // 10_000:03d}-{digits % 10_000:04d}"
        phones.append({"type": types[slot], "number": number})
    return {
        "firstName": _pick(user_id, 1, FIRST_NAMES),
        "lastName": _pick(user_id, 2, LAST_NAMES),
        "address": {
            "streetAddress": f"{house} {_pick(user_id, 7, STREETS)}",
            "city": city,
            "state": state,
            "postalCode": f"{zip_prefix}{splitmix64(user_id * 64 + 9) % 100:02d}",
        },
        "phoneNumbers": phones,
    }
