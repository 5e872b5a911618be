"""Real-server fixtures: PostgreSQL (pytest-django), Redis, burst RQ workers, API clients, users of every role."""

import datetime as dt
import os
import re

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from audit.context import acting_as, Actor
from workspaces import roles, services as workspace_services


def _own_redis_database_per_test_worker():
    """Parallel test workers share one Redis server; each gets its own database so that one
    worker's flush never drops another's queued jobs."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    url = re.sub(r"/\d*$", "", django_settings.REDIS_URL) + f"/{int(worker[2:]) + 1}"
    django_settings.REDIS_URL = url
    for queue in django_settings.RQ_QUEUES.values():
        queue["URL"] = url


_own_redis_database_per_test_worker()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Users are made in many tests; the production hasher's cost is not what they check."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _system_actor():
    with acting_as(Actor("system", "", "tests")):
        yield


@pytest.fixture
def workspace(db):
    return workspace_services.create_workspace(slug="acme", name="Acme", timezone="Europe/Paris",
                                               postal_address="1 Rue de la Paix, Paris")


@pytest.fixture
def other_workspace(db):
    return workspace_services.create_workspace(slug="globex", name="Globex", timezone="America/New_York")


def api_client_for(workspace, role="admin"):
    _, raw = workspace_services.create_api_key(workspace=workspace, name=f"{role} key", role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def api(workspace):
    return api_client_for(workspace, "admin")


@pytest.fixture
def other_api(other_workspace):
    return api_client_for(other_workspace, "admin")


@pytest.fixture
def make_api():
    return api_client_for


@pytest.fixture
def make_user(db):
    def make(username, *, workspace=None, role=None, superuser=False):
        user = get_user_model().objects.create_user(username=username, password="pw-123456789",
                                                    is_staff=True, is_superuser=superuser)
        if workspace is not None and role is not None:
            roles.grant_role(user=user, workspace=workspace, role=role)
        return user

    return make


@pytest.fixture
def redis_conn():
    import django_rq

    conn = django_rq.get_connection("default")
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture
def smtp_sink():
    from tests.smtpserver import SmtpSink

    sink = SmtpSink().start()
    yield sink
    sink.stop()
    from providers import smtp

    smtp.close_idle(0)


@pytest.fixture
def run_workers(redis_conn):
    """Runs a burst RQ worker over every queue until nothing is left (jobs run in this process)."""
    import django_rq
    from rq import SimpleWorker

    def run():
        queues = [django_rq.get_queue(name) for name in ("dispatch", "default")]
        SimpleWorker(queues, connection=redis_conn).work(burst=True)

    return run


@pytest.fixture
def sending_setup(workspace, smtp_sink, settings):
    """A domain, an SMTP provider pointed at the sink, three mailboxes in a round-robin cold pool."""
    from mailboxes.models import Mailbox, Pool, SendingDomain
    from providers.services import create_connection

    settings.DISPATCH_RETRY_DELAYS = [0, 0]
    domain = SendingDomain.objects.create(workspace=workspace, name="mail.acme.com")
    provider = create_connection(workspace=workspace, kind="smtp", name="sink",
                                 settings={"host": "127.0.0.1", "port": smtp_sink.port, "security": "none"})
    everyday = {"send_window_days": [1, 2, 3, 4, 5, 6, 7], "send_window_start": dt.time(0, 0), "send_window_end": dt.time.max,
                "send_window_timezone": "UTC", "min_interval_seconds": 0}
    mailboxes = [
        Mailbox.objects.create(workspace=workspace, domain=domain, provider=provider, address=f"{name}@mail.acme.com",
                               display_name=name.title(), daily_cap=50, weekly_cap=200, **everyday)
        for name in ("ann", "bob", "cat")
    ]
    pool = Pool.objects.create(workspace=workspace, name="cold", strategy="round_robin", workloads=["cold"])
    pool.mailboxes.set(mailboxes)
    return {"domain": domain, "provider": provider, "mailboxes": mailboxes, "pool": pool}


# Benchmarks and the scale-out test run only when their marker is asked for (`make bench`, `make scaleout`).
ON_DEMAND = {"bench": "benchmark: run with `make bench`", "scaleout": "scale-out test: run with `make scaleout`"}


def pytest_collection_modifyitems(config, items):
    asked = config.getoption("-m") or ""
    for marker, reason in ON_DEMAND.items():
        if marker in asked:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def process_env():
    """Environment for subprocesses (gunicorn, RQ workers) that must see this test's database and Redis."""
    db = connection.settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env["REDIS_URL"] = django_settings.REDIS_URL
    return env
