"""Intake under gunicorn against PostgreSQL at 50 concurrent clients: `POST /messages` beside a trivial
DRF endpoint on the same server (`GET /workspace`: key auth and one row), requests/s and p50/p99.

Targets: ≥ 0.5 of the ceiling, p99 < 50 ms. Run with `make bench`.
"""

import datetime as dt
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings as django_settings

from mailboxes.models import Mailbox, Pool, SendingDomain
from providers.services import create_connection
from scripts.servers import free_port, wait_for_port
from workspaces import services as workspace_services

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]

CLIENTS = 50
REQUESTS = int(os.environ.get("BENCH_INTAKE_REQUESTS", "3000"))


def _load(url, key, method, body_for):
    local = threading.local()
    latencies = []

    def one(n):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        if method == "post":
            r = session.post(url, json=body_for(n), headers={"Authorization": f"Api-Key {key}"}, timeout=60)
        else:
            r = session.get(url, headers={"Authorization": f"Api-Key {key}"}, timeout=60)
        latencies.append(time.perf_counter() - started)
        return r.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        codes = list(pool.map(one, range(REQUESTS)))
    seconds = time.perf_counter() - started
    return REQUESTS / seconds, latencies, codes


def _ms(latencies, q):
    return statistics.quantiles(latencies, n=100)[q - 1] * 1000


def test_intake_against_a_trivial_endpoint(workspace, process_env, redis_conn, report):
    domain = SendingDomain.objects.create(workspace=workspace, name="bench.example")
    provider = create_connection(workspace=workspace, kind="smtp", name="sink",
                                 settings={"host": "127.0.0.1", "port": 2525, "security": "none"})
    Mailbox.objects.bulk_create([
        Mailbox(workspace=workspace, domain=domain, provider=provider, address=f"m{n}@bench.example", daily_cap=10000,
                weekly_cap=50000, min_interval_seconds=0, send_window_days=[1, 2, 3, 4, 5, 6, 7],
                send_window_start=dt.time(0, 0), send_window_end=dt.time.max) for n in range(100)])
    pool = Pool.objects.create(workspace=workspace, name="cold", workloads=["cold"])
    pool.mailboxes.set(Mailbox.objects.filter(workspace=workspace))
    key = workspace_services.create_api_key(workspace=workspace, name="bench", role="sequencer")[1]
    port = free_port()
    workers = str(2 * (os.cpu_count() or 2) + 1)
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--bind", f"127.0.0.1:{port}",
                            "--workers", workers, "--timeout", "120", "--log-level", "warning"],
                           env=process_env, cwd=django_settings.BASE_DIR)
    try:
        wait_for_port(port, proc=web, name="gunicorn")
        base = f"http://127.0.0.1:{port}/api/v1"
        _load(f"{base}/workspace", key, "get", None)  # warm up every worker
        ceiling, ceiling_latencies, codes = _load(f"{base}/workspace", key, "get", None)
        assert set(codes) == {200}
        ours, latencies, codes = _load(f"{base}/messages", key, "post",
                                       lambda n: {"to": f"lead{n}@example.com", "subject": "Hi", "text": "Hello"})
        assert set(codes) == {202}, set(codes)
    finally:
        web.terminate()
        web.wait(timeout=30)
    name = f"intake, {CLIENTS} concurrent clients, gunicorn ×{workers}, PostgreSQL"
    report(name, "trivial DRF endpoint (ceiling)", f"{ceiling:,.0f} req/s, p50 {_ms(ceiling_latencies, 50):.0f} ms, "
                                                   f"p99 {_ms(ceiling_latencies, 99):.0f} ms")
    report(name, "POST /messages", f"{ours:,.0f} req/s, p50 {_ms(latencies, 50):.0f} ms, p99 {_ms(latencies, 99):.0f} ms",
           "p99 < 50 ms", _ms(latencies, 99) < 50)
    report(name, "ratio to ceiling", f"{ours / ceiling:.2f}", "≥ 0.5", ours / ceiling >= 0.5)
    print(f"\n{name}: ceiling {ceiling:.0f} req/s; POST /messages {ours:.0f} req/s "
          f"(p50 {_ms(latencies, 50):.1f} ms, p99 {_ms(latencies, 99):.1f} ms); ratio {ours / ceiling:.2f}")
