"""Plain addresses skip email-validator (`plain_address`): only those it accepts, normalised as it does."""

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings, strategies as st

from controlplane.api.messages import normalise_address, plain_address

# Pieces near the edges of what is plain: dots and hyphens at either end or doubled, digits, punycode,
# special-use and numeric top-level domains, labels and local parts over their length limits.
LOCAL = st.one_of(st.text(alphabet="aZ09._+-", min_size=1, max_size=70),
                  st.from_regex(r"[a-zA-Z0-9_+-]{1,30}(\.[a-zA-Z0-9_+-]{1,30}){0,3}", fullmatch=True),
                  st.sampled_from(["a", "first.last", "x+tag", "_", "-", "a..b", ".a", "a.", "o'neil", "é"]))
LABEL = st.one_of(st.text(alphabet="aZ09-", min_size=1, max_size=66),
                  st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,64}[a-zA-Z0-9])?", fullmatch=True),
                  st.sampled_from(["example", "xn--bcher-kva", "a--b", "-a", "a-", "1", "mail"]))
TLD = st.one_of(st.text(alphabet="aZ9-", min_size=1, max_size=4),
                st.sampled_from(["com", "io", "c", "test", "LOCAL", "arpa", "onion", "invalid", "localhost", "123",
                                 "example", "xn--p1ai", "a" * 64]))
ADDRESS = st.one_of(
    st.builds(lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}", LOCAL,
              st.lists(LABEL, min_size=0, max_size=4), TLD),
    st.builds(lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",  # mostly plain ones
              st.from_regex(r"[a-zA-Z0-9_+-]{1,20}(\.[a-zA-Z0-9_+-]{1,20}){0,2}", fullmatch=True),
              st.lists(st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", fullmatch=True),
                       min_size=1, max_size=3),
              st.from_regex(r"[a-zA-Z]{1,8}", fullmatch=True)))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ADDRESS)
def test_a_plain_address_is_one_email_validator_accepts_and_normalises_alike(address):
    plain = plain_address(address)
    if plain is None:
        return
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        pytest.fail(f"{address!r} passed as plain, but email-validator refuses it: {exc}")
    assert plain == f"{result.local_part}@{result.domain}".lower() == normalise_address(address)


@pytest.mark.parametrize("address", ["lead@example.com", "Jane.Doe+q4@Mail.Acme-Corp.co.uk", "x_y-z@a1.io"])
def test_everyday_addresses_are_plain(address):
    assert plain_address(address) == address.lower()


@pytest.mark.parametrize("address, error", [
    ("a..b@example.com", "two periods in a row"), ("a@localhost", "should have a period"),
    ("a@x.test", "special-use or reserved"), ("a@-x.com", "hyphen immediately after"),
])
def test_the_others_are_checked_and_worded_by_email_validator(address, error):
    from rest_framework.serializers import ValidationError

    assert plain_address(address) is None
    with pytest.raises(ValidationError, match=error):
        normalise_address(address)


def test_an_international_address_is_email_validators_normal_form():
    assert plain_address("Jörg@Bücher.example") is None
    assert normalise_address("Jörg@Bücher.example") == "Jörg@bücher.example"
