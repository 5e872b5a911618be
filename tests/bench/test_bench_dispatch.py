"""End to end: 10,000 messages through the API → RQ → SMTP for 100 mailboxes, beside plain smtplib.

Run with `make bench`. Prints both throughputs and their ratio (target ≥ 0.5).
"""

import datetime as dt
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
from django.conf import settings as django_settings

from controlplane.models import Message
from mailboxes.models import Mailbox, Pool, SendingDomain
from providers.services import create_connection
from scripts.servers import free_port, wait_for_port
from tests.bench import clients
from tests.smtpserver import SmtpSink
from workspaces import services as workspace_services

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]

TOTAL = int(os.environ.get("BENCH_MESSAGES", "10000"))
MAILBOXES = 100
# Messages per POST /messages/batch: a sequencer's small batches and the API's largest (BENCH_BATCH: one size).
BATCHES = [int(os.environ["BENCH_BATCH"])] if os.environ.get("BENCH_BATCH") else [100, 1000]
# Worker processes (`runworker --processes N`): one per core. Hand-off to a server on loopback waits little, and
# more processes than cores take CPU from each other: on 2 cores, 8 workers spent ~1.4 ms of CPU per message in
# all (workers, PostgreSQL, gunicorn, the SMTP server) and sent 1,280–1,610 msg/s; 2 workers ~1.0 ms, 1,490–1,780.
WORKERS = int(os.environ.get("BENCH_WORKERS", str(os.cpu_count() or 2)))
# Plain smtplib's best: enough client processes to keep the SMTP server's one core busy (fewer leave it
# waiting on their round trips: 2 processes sent 3,100–4,000 msg/s, 8 sent 4,000–4,700).
SMTPLIB_PROCESSES = max(8, WORKERS)
# Sequencer clients, each a process of its own (tests/bench/clients.py).
CLIENTS = 4


def _start(pool, processes):
    """Starts every process of `pool` before the clock does (each seen taking a task)."""
    seen = set()
    for _ in range(10):
        seen |= set(pool.map(clients.ready, [0.5] * processes))
        if len(seen) == processes:
            return
    raise AssertionError(f"only {len(seen)} of {processes} client processes started")


def _plain_smtplib(port, messages, processes):
    """The ceiling: the very messages the control plane sent (bytes, envelope), sent again with plain smtplib
    from `processes` client processes, one connection each (processes, like our workers, so that the
    clients do not share the sink's interpreter lock)."""
    chunks = [messages[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        _start(pool, processes)
        started = time.perf_counter()
        sent = sum(pool.map(clients.send_all, [port] * processes, chunks))
        seconds = time.perf_counter() - started
    assert sent == len(messages)
    return seconds


@pytest.mark.parametrize("batch", BATCHES)
def test_end_to_end_throughput(workspace, deployed_env, redis_conn, report, batch):
    sink = SmtpSink().start()
    try:
        domain = SendingDomain.objects.create(workspace=workspace, name="bench.example")
        provider = create_connection(workspace=workspace, kind="smtp", name="sink",
                                     settings={"host": "127.0.0.1", "port": sink.port, "security": "none"})
        mailboxes = [Mailbox(workspace=workspace, domain=domain, provider=provider, address=f"m{n}@bench.example",
                             daily_cap=1000, weekly_cap=5000, min_interval_seconds=0,
                             send_window_days=[1, 2, 3, 4, 5, 6, 7], send_window_start=dt.time(0, 0),
                             send_window_end=dt.time.max, send_window_timezone="UTC") for n in range(MAILBOXES)]
        Mailbox.objects.bulk_create(mailboxes)
        pool = Pool.objects.create(workspace=workspace, name="cold", workloads=["cold"])
        pool.mailboxes.set(Mailbox.objects.filter(workspace=workspace))
        key = workspace_services.create_api_key(workspace=workspace, name="bench", role="sequencer")[1]

        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--bind", f"127.0.0.1:{port}",
                                "--workers", "3", "--timeout", "600", "--log-level", "warning"], env=deployed_env,
                               cwd=django_settings.BASE_DIR)
        # Long-running workers, as the Procfile's `worker` runs them (started before the clock).
        workers = [subprocess.Popen([sys.executable, "manage.py", "rqworker", "dispatch"],
                                    env=deployed_env, cwd=django_settings.BASE_DIR,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(WORKERS)]
        try:
            wait_for_port(port, proc=web, name="gunicorn")
            from rq import Worker

            deadline = time.monotonic() + 60
            while len(Worker.all(connection=redis_conn)) < WORKERS and time.monotonic() < deadline:
                time.sleep(0.1)
            url = f"http://127.0.0.1:{port}/api/v1/messages/batch"
            starts = range(0, TOTAL, batch)
            with ProcessPoolExecutor(CLIENTS, mp_context=multiprocessing.get_context("spawn")) as sequencer:
                _start(sequencer, CLIENTS)
                started = time.perf_counter()
                refused = [error for errors in sequencer.map(clients.submit, [url] * len(starts), [key] * len(starts),
                                                             starts, [min(batch, TOTAL - n) for n in starts])
                           for error in errors]
                intake_seconds = time.perf_counter() - started
            assert not refused, f"{len(refused)} sends refused, e.g. {refused[:3]}"
            while len(sink.messages) < TOTAL:
                assert all(w.poll() is None for w in workers), "a worker died"
                time.sleep(0.05)
            total_seconds = time.perf_counter() - started
        finally:
            web.terminate()
            for w in workers:
                w.terminate()
            # Gone before the test's tables are emptied: a worker finishing its job would hold locks the
            # teardown's TRUNCATE waits on (and deadlock with).
            for process in (web, *workers):
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        assert len(sink.messages) == TOTAL
        sent = list(sink.messages)
        ceilings = {}  # client processes -> msg/s
        for processes in sorted({WORKERS, SMTPLIB_PROCESSES}):
            sink.handler.messages.clear()
            ceilings[processes] = TOTAL / _plain_smtplib(sink.port, sent, processes)
            assert len(sink.messages) == TOTAL
    finally:
        sink.stop()

    ours = TOTAL / total_seconds
    ceiling, alike = max(ceilings.values()), ceilings[WORKERS]
    print(f"\nend-to-end: {TOTAL} messages in batches of {batch}, {MAILBOXES} mailboxes, {WORKERS} RQ workers, "
          "gunicorn ×3")
    for processes, rate in ceilings.items():
        print(f"  plain smtplib ×{processes:<3}: {rate:8.0f} msg/s")
    print(f"  API intake (batch): {TOTAL / intake_seconds:8.0f} msg/s ({intake_seconds:.1f} s)")
    print(f"  API → RQ → SMTP   : {ours:8.0f} msg/s ({total_seconds:.1f} s)")
    print(f"  ratio             : {ours / ceiling:8.2f} of smtplib's best (target ≥ 0.5); "
          f"{ours / alike:.2f} of smtplib from as many processes as workers")
    name = f"end to end, {TOTAL:,} messages over {MAILBOXES} mailboxes, batches of {batch:,}"
    report(name, "plain smtplib (ceiling)", f"{ceiling:,.0f} msg/s ({max(ceilings, key=ceilings.get)} processes)")
    report(name, "batch intake", f"{TOTAL / intake_seconds:,.0f} msg/s", "≥ 2,000 msg/s", TOTAL / intake_seconds >= 2000)
    report(name, "API → RQ → SMTP", f"{ours:,.0f} msg/s ({WORKERS} workers)")
    report(name, "ratio to smtplib", f"{ours / ceiling:.2f}", "≥ 0.5", ours / ceiling >= 0.5)
    if len(ceilings) > 1:
        report(name, "ratio to smtplib from as many processes as workers",
               f"{ours / alike:.2f} ({WORKERS} processes: {alike:,.0f} msg/s)")
