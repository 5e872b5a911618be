"""PostgreSQL restarts while sequencers keep sending: the API answers 503 with the error shape (never a 500),
retries with the same Idempotency-Key succeed once it is back, and nothing is half-written.

The control plane runs here as it does in production: gunicorn processes on their own PostgreSQL (which
the test stops and starts) and their own Redis."""

import collections
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest
import requests
from django.conf import settings as django_settings

from scripts import servers
from tests.resilience.helpers import RestartablePostgres

SEED = """
import datetime as dt
from audit.context import Actor, acting_as
from mailboxes.models import Mailbox, Pool, SendingDomain
from providers.services import create_connection
from workspaces import services

with acting_as(Actor("system", "", "resilience test")):
    workspace = services.create_workspace(slug="acme", name="Acme")
    _, raw = services.create_api_key(workspace=workspace, name="intake", role="sequencer")
    domain = SendingDomain.objects.create(workspace=workspace, name="mail.acme.com")
    provider = create_connection(workspace=workspace, kind="smtp", name="relay",
                                 settings={"host": "127.0.0.1", "port": 9, "security": "none"})
    mailboxes = [Mailbox.objects.create(
        workspace=workspace, domain=domain, provider=provider, address=f"{name}@mail.acme.com", daily_cap=1000,
        weekly_cap=5000, min_interval_seconds=0, send_window_days=[1, 2, 3, 4, 5, 6, 7],
        send_window_start=dt.time(0, 0), send_window_end=dt.time.max, send_window_timezone="UTC")
        for name in ("ann", "bob")]
    pool = Pool.objects.create(workspace=workspace, name="cold", strategy="round_robin", workloads=["cold"])
    pool.mailboxes.set(mailboxes)
print(raw)
"""


def manage(env, *args, **kwargs):
    return subprocess.run([sys.executable, "manage.py", *args], env=env, cwd=django_settings.BASE_DIR,
                          capture_output=True, text=True, check=True, **kwargs)


@pytest.fixture(scope="module")
def deployment():
    """gunicorn (2 workers) on a PostgreSQL and a Redis of its own, with a workspace, a pool and an API key."""
    database = RestartablePostgres().start()
    with contextlib.ExitStack() as stack:
        stack.callback(database.close)
        with psycopg.connect(database.url("postgres"), autocommit=True) as connection:
            connection.execute("CREATE DATABASE controlplane")
        redis_url = stack.enter_context(servers.redis())
        env = {**os.environ, "DATABASE_URL": database.url(), "REDIS_URL": redis_url, "DEBUG": "false",
               "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING"}
        env.pop("PYTEST_XDIST_WORKER", None)
        manage(env, "migrate", "-v0")
        key = manage(env, "shell", "-c", SEED).stdout.strip().splitlines()[-1]
        port = servers.free_port()
        log = stack.enter_context(open(os.path.join(database.root, "gunicorn.log"), "wb"))
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "controlplane.wsgi:application", "-b",
                                f"127.0.0.1:{port}", "-w", "2", "--timeout", "30", "--graceful-timeout", "2"],
                               env=env, cwd=django_settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT)

        def stop_web():
            web.terminate()
            try:
                web.wait(timeout=10)
            except subprocess.TimeoutExpired:
                web.kill()

        stack.callback(stop_web)
        servers.wait_for_port(port, proc=web, name="gunicorn")
        yield {"url": f"http://127.0.0.1:{port}", "key": key, "database": database, "web": web}


def count(database, sql):
    with psycopg.connect(database.url()) as connection:
        return connection.execute(sql).fetchone()[0]


def test_intake_through_a_postgres_restart(deployment):
    database, base = deployment["database"], deployment["url"]
    session_lock = threading.Lock()
    answers = collections.defaultdict(list)  # idempotency key -> [(status, body, headers)]
    total = 90
    bodies = {f"restart-{n}": {"to": f"lead{n}@example.com", "subject": "Hello", "text": "Hi"} for n in range(total)}

    def post(key):
        response = requests.post(f"{base}/api/v1/messages", json=bodies[key], timeout=30,
                                 headers={"Authorization": f"Api-Key {deployment['key']}", "Idempotency-Key": key})
        with session_lock:
            answers[key].append((response.status_code, response.json(), response.headers))
        return response.status_code

    keys = list(bodies)
    outage = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(post, key) for key in keys[:30]]
        concurrent.futures.wait(futures)
        futures = [pool.submit(post, key) for key in keys[30:]]
        time.sleep(0.05)  # the restart lands in the middle of these
        database.stop()
        outage["readyz"] = requests.get(f"{base}/readyz", timeout=10)
        time.sleep(0.5)
        database.start()
        concurrent.futures.wait(futures)

    first = {key: answers[key][0] for key in keys}
    statuses = collections.Counter(status for status, _, _ in first.values())
    assert set(statuses) <= {202, 503}, statuses
    assert statuses[503] >= 1, "the restart was felt by some requests"
    for status, body, headers in first.values():
        if status == 503:
            assert set(body) == {"error"} and body["error"]["code"] == "service_unavailable", body
            assert body["error"]["message"] and headers.get("Retry-After")
    ready = outage["readyz"]
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"

    def until_accepted(key):  # what a sequencer does with a 503: the same request again, same key
        for _ in range(20):
            if answers[key][-1][0] == 202:
                return
            time.sleep(0.1)
            post(key)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(until_accepted, keys))
    for key in keys:
        assert answers[key][-1][0] == 202, answers[key][-1]
    accepted = {key: answers[key][-1][1] for key in keys}
    for key in keys:  # a key answered 202 twice answers with the same message both times
        bodies_202 = [body for status, body, _ in answers[key] if status == 202]
        assert all(body == bodies_202[0] for body in bodies_202)

    ids = {body["id"] for body in accepted.values()}
    assert len(ids) == total, "one message per request"
    assert count(database, "SELECT count(*) FROM controlplane_message") == total
    assert count(database, "SELECT count(*) FROM controlplane_event WHERE type = 'message.accepted'") == total
    assert count(database, "SELECT count(DISTINCT message_id) FROM controlplane_event "
                           "WHERE type = 'message.accepted'") == total
    assert count(database, "SELECT count(*) FROM audit_auditevent WHERE action = 'message.accepted'") == total
    assert count(database, "SELECT coalesce(sum(count), 0) FROM mailboxes_mailboxdailyusage") == total, \
        "no capacity held by a request that rolled back"
    assert count(database, "SELECT count(*) FROM controlplane_idempotencyrecord") == total
    assert count(database, "SELECT count(*) FROM controlplane_idempotencyrecord WHERE response_status = 202") == total
    assert deployment["web"].poll() is None, "gunicorn kept running"
