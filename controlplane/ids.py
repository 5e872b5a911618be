"""Opaque, time-sortable identifiers: ``<prefix>_<26 Crockford base32 chars>``.

The first 48 bits are milliseconds since the epoch, the rest random, so ordering
by id is creation order: cursor pagination and "oldest first" need no extra column.
"""

import os
import time

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


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
