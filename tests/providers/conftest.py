"""Mailboxes on each provider kind, and a loopback HTTP fake."""

import datetime as dt

import pytest

EVERYDAY = {"send_window_days": [1, 2, 3, 4, 5, 6, 7], "send_window_start": dt.time(0, 0),
            "send_window_end": dt.time.max, "send_window_timezone": "UTC", "min_interval_seconds": 0,
            "daily_cap": 500, "weekly_cap": 2000}


def make_mailbox(workspace, kind, *, settings=None, credentials=None, domain="mail.acme.com", local="ann",
                 name=None):
    from mailboxes.models import Mailbox, SendingDomain
    from providers.services import create_connection

    sending_domain, _ = SendingDomain.objects.get_or_create(workspace=workspace, name=domain)
    provider = create_connection(workspace=workspace, kind=kind, name=name or f"{kind}-{local}",
                                 settings=settings or {}, credentials=credentials or {})
    return Mailbox.objects.create(workspace=workspace, domain=sending_domain, provider=provider,
                                  address=f"{local}@{domain}", display_name=local.title(), **EVERYDAY)


def send(api, run_workers, mailbox, *, to="prospect@example.com", **extra):
    """POST /messages pinned to `mailbox`, run the workers; returns the message as GET /messages/{id} shows it."""
    body = {"to": to, "from": mailbox.address, "subject": "Quick question", "text": "Hi there,\nare you the one?",
            **extra}
    created = api.post("/api/v1/messages", body, format="json")
    assert created.status_code == 202, created.json()
    run_workers()
    return api.get(f"/api/v1/messages/{created.json()['id']}").json()


@pytest.fixture(autouse=True)
def _fresh_token_cache(settings):
    from providers import oauth

    settings.DISPATCH_RETRY_DELAYS = [0, 0]
    oauth.clear()
    yield
    oauth.clear()


@pytest.fixture
def http_fake():
    from tests.providers.httpfake import HttpFake

    fake = HttpFake().start()
    yield fake
    fake.stop()
