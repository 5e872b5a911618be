"""A real receiver on loopback, burst workers of the "webhooks" queue, and helpers to read what it got."""

import django_rq
import pytest
from rq import SimpleWorker
from standardwebhooks.webhooks import Webhook

from tests.providers.httpfake import HttpFake

BODY = {"to": "prospect@example.com", "subject": "Quick question", "text": "Hi there"}


@pytest.fixture
def receiver():
    fake = HttpFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def loopback_allowed(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    settings.DEBUG = True  # the loopback receiver speaks plain http
    settings.WEBHOOK_RETRY_DELAYS = [0, 0, 0, 0, 0, 0]


@pytest.fixture
def run_webhook_workers(redis_conn):
    def run():
        SimpleWorker([django_rq.get_queue("webhooks")], connection=redis_conn).work(burst=True)

    return run


def create(api, url, **extra):
    return api.post("/api/v1/webhooks", {"url": url, **extra}, format="json")


def verified(secret, request):
    """What the receiver gets, checked the way a receiver would: the standardwebhooks library."""
    return Webhook(secret).verify(request.body, request.headers)

