"""Opaque, time-sortable identifiers: ``<prefix>_<26 Crockford base32 chars>``.

The first 48 bits are milliseconds since the epoch, the rest random, so ordering
by id is creation order: cursor pagination and "oldest first" need no extra column.
"""

import os
import time

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [high + low for high in ALPHABET for low in ALPHABET]  # two digits for each 10-bit number
_SHIFTS = tuple(range(120, -1, -10))


def new_id(prefix: str) -> str:
    return f"{prefix}_{encode((int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), 'big'))}"


def encode(value: int) -> str:
    """The 128-bit `value` as 26 base32 digits, most significant first (130 bits, the first two zero),
    written two digits at a time."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def id_field(prefix: str):
    from django.db import models

    return models.CharField(
        primary_key=True, max_length=40, editable=False, default=IdDefault(prefix)
    )


class IdDefault:
    """A picklable callable default so migrations can serialise it."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __call__(self) -> str:
        return new_id(self.prefix)

    def deconstruct(self):
        return ("controlplane.ids.IdDefault", (self.prefix,), {})

    def __eq__(self, other):
        return isinstance(other, IdDefault) and other.prefix == self.prefix
