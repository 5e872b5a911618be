"""Identifiers: 26 Crockford base32 digits of (milliseconds << 80 | 80 random bits), so they sort by creation."""

import random
import time

from controlplane import ids


def _digits_one_by_one(value):
    """The definition: five bits at a time from the least significant end, written most significant first."""
    chars = []
    for _ in range(26):
        chars.append(ids.ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def test_encoding_is_crockford_base32_of_the_whole_value():
    rng = random.Random(7)
    values = [0, 1, 31, 32, 2**80 - 1, 2**128 - 1, *(rng.getrandbits(128) for _ in range(2000))]
    for value in values:
        assert ids.encode(value) == _digits_one_by_one(value)


def test_ids_carry_their_prefix_and_sort_by_creation_time():
    earlier = ids.new_id("msg")
    time.sleep(0.002)
    later = ids.new_id("msg")
    assert earlier.startswith("msg_") and len(earlier) == 30 and set(earlier[4:]) <= set(ids.ALPHABET)
    assert earlier < later
    assert 0 <= int(time.time() * 1000) - (_digits_to_int(later[4:]) >> 80) < 1000  # its milliseconds lead
    assert len({ids.new_id("evt") for _ in range(10000)}) == 10000


def _digits_to_int(digits):
    value = 0
    for char in digits:
        value = value * 32 + ids.ALPHABET.index(char)
    return value
