"""Sign-in throttling: repeated failed admin sign-ins for one username from one address lock that pair out for
a cool-off, with a page that says so; other addresses, other usernames and the API are untouched."""

import datetime as dt

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import F
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "pw-123456789"


def sign_in(client, username, password, ip="198.51.100.7"):
    """Through the admin's login form, as a browser posts it."""
    return client.post(reverse("admin:login"), {"username": username, "password": password, "next": "/"},
                       REMOTE_ADDR=ip)


def signed_in(client):
    return "_auth_user_id" in client.session


def fail(client, username, times, ip="198.51.100.7"):
    for _ in range(times):
        response = sign_in(client, username, "wrong password", ip)
        assert response.status_code == 200 and "correct username and password" in response.content.decode()


def test_failed_sign_ins_lock_the_username_from_that_address(client, make_user):
    make_user("operator")
    fail(client, "operator", settings.AXES_FAILURE_LIMIT - 1)
    locked = sign_in(client, "operator", "wrong password")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many failed sign-ins for this username from your address" in page
    assert "Try again in 15 minutes" in page and 'name="password"' in page  # the sign-in form, explained
    assert locked["Retry-After"] == str(15 * 60)

    # Now even the right password is refused, and no session is opened.
    right = sign_in(client, "operator", PASSWORD)
    assert right.status_code == 429 and not signed_in(client)
    assert client.get("/").status_code == 302  # still sent to the sign-in page


def test_the_lock_holds_only_that_username_and_address(client, make_user):
    make_user("operator")
    make_user("viewer")
    fail(client, "operator", settings.AXES_FAILURE_LIMIT - 1)
    assert sign_in(client, "operator", "wrong password").status_code == 429
    assert sign_in(client, "operator", PASSWORD).status_code == 429

    assert sign_in(client, "viewer", PASSWORD).status_code == 302 and signed_in(client)  # same address, other user
    client.logout()
    assert sign_in(client, "operator", PASSWORD, ip="203.0.113.50").status_code == 302  # same user, other address
    assert signed_in(client)


def test_the_lock_lifts_after_the_cool_off(client, make_user):
    make_user("operator")
    fail(client, "operator", settings.AXES_FAILURE_LIMIT - 1)
    assert sign_in(client, "operator", "wrong password").status_code == 429
    assert sign_in(client, "operator", PASSWORD).status_code == 429
    # A quarter of an hour later (the attempts are dated back rather than waited for).
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - dt.timedelta(minutes=15, seconds=1))
    response = sign_in(client, "operator", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/" and signed_in(client)


def test_a_successful_sign_in_starts_the_count_again(client, make_user):
    make_user("operator")
    fail(client, "operator", settings.AXES_FAILURE_LIMIT - 1)
    assert sign_in(client, "operator", PASSWORD).status_code == 302
    client.logout()
    fail(client, "operator", settings.AXES_FAILURE_LIMIT - 1)
    assert sign_in(client, "operator", PASSWORD).status_code == 302


def test_unknown_usernames_are_throttled_alike(client):
    """Locking out does not reveal whether the username exists."""
    fail(client, "nobody-here", settings.AXES_FAILURE_LIMIT - 1)
    assert sign_in(client, "nobody-here", "guess").status_code == 429
