"""Past one machine: two web processes and four RQ workers on one PostgreSQL and one Redis, flooded with sends.

Every sequencer request goes to both web processes at once with the same Idempotency-Key (as a client that
fails over between two load-balanced hosts does); the mailboxes' caps are small, and some recipients are
suppressed while their sends wait. The control plane is watched only from outside: the API's answers, the
database's rows and what a real SMTP server receives.
"""

import collections
import datetime as dt
import email
import email.utils
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings as django_settings
from django.utils import timezone

from controlplane.models import TERMINAL_STATUSES, Message
from mailboxes.models import Mailbox, Pool, SendingDomain
from providers.services import create_connection
from scripts.servers import free_port, wait_for_port
from tests.smtpserver import SmtpSink
from workspaces import services as workspace_services

pytestmark = [pytest.mark.scaleout, pytest.mark.django_db(transaction=True)]

CAPS = {"ann": 4, "bob": 5, "cat": 6, "dan": 7}  # 22 sends today in all
FLOOD = 60  # distinct sends, each posted to both web processes
DOOMED = 6  # recipients whose sends wait (send_at) and are suppressed while they wait
DOOMED_DELAY = dt.timedelta(seconds=15)


class Deployment:
    """The processes of a production deployment (Procfile's web ×2, worker ×4), with their logs."""

    def __init__(self, env, logs):
        self.env, self.logs, self.processes, self.urls = env, logs, [], []

    def start(self, name, args):
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen(args, env=self.env, cwd=django_settings.BASE_DIR, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.processes.append((name, process, log))
        return process

    def web(self, name):
        port = free_port()
        process = self.start(name, [sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--workers", "2",
                                    "--bind", f"127.0.0.1:{port}", "--timeout", "60", "--graceful-timeout", "2"])
        self.urls.append((f"http://127.0.0.1:{port}", port, process))

    def worker(self, name):
        self.start(name, [sys.executable, "manage.py", "rqworker", "dispatch", "webhooks", "default",
                          "--with-scheduler"])

    def wait_until_serving(self):
        """Until every web process answers (gunicorn binds before its workers have loaded Django)."""
        for url, port, process in self.urls:
            wait_for_port(port, timeout=60, proc=process, name="gunicorn")
            deadline = time.monotonic() + 60
            while requests.get(f"{url}/readyz", timeout=60).status_code != 200:
                assert time.monotonic() < deadline and process.poll() is None, self.tails()
                time.sleep(0.2)

    def alive(self):
        return {name: process.poll() for name, process, _ in self.processes if process.poll() is not None}

    def stop(self):
        for _, process, _ in self.processes:
            process.terminate()
        for _, process, log in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()

    def tails(self):
        return "\n".join(f"--- {name}\n" + (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                         for name, _, _ in self.processes)


@pytest.fixture
def deployment(process_env, redis_conn, tmp_path):
    running = Deployment({**process_env, "LOG_LEVEL": "WARNING"}, tmp_path)
    try:
        running.web("web-1")
        running.web("web-2")
        for n in range(1, 5):
            running.worker(f"worker-{n}")
        running.wait_until_serving()
        yield running
    finally:
        running.stop()


@pytest.fixture
def sink():
    server = SmtpSink().start()
    yield server
    server.stop()


def test_two_web_processes_and_four_workers_keep_every_invariant(workspace, sink, deployment):
    domain = SendingDomain.objects.create(workspace=workspace, name="mail.acme.com")
    provider = create_connection(workspace=workspace, kind="smtp", name="sink",
                                 settings={"host": "127.0.0.1", "port": sink.port, "security": "none"})
    mailboxes = {name: Mailbox.objects.create(
        workspace=workspace, domain=domain, provider=provider, address=f"{name}@mail.acme.com", daily_cap=cap,
        weekly_cap=100, min_interval_seconds=0, send_window_days=[1, 2, 3, 4, 5, 6, 7],
        send_window_start=dt.time(0, 0), send_window_end=dt.time.max, send_window_timezone="UTC")
        for name, cap in CAPS.items()}
    Pool.objects.create(workspace=workspace, name="cold", strategy="round_robin",
                        workloads=["cold"]).mailboxes.set(mailboxes.values())
    _, key = workspace_services.create_api_key(workspace=workspace, name="sequencer", role="sequencer")
    urls = [url for url, _, _ in deployment.urls]
    session_lock = threading.Lock()
    answers = collections.defaultdict(list)  # idempotency key -> final (status, body) from each web process

    def send(url, idempotency_key, body):
        """What a sequencer does: the same request again while the key is busy or the service is briefly away."""
        for _ in range(100):
            response = requests.post(f"{url}/api/v1/messages", json=body, timeout=60, headers={
                "Authorization": f"Api-Key {key}", "Idempotency-Key": idempotency_key})
            busy = response.status_code == 409 and "processed" in response.json()["error"]["message"]
            if not busy and response.status_code != 503:
                with session_lock:
                    answers[idempotency_key].append((response.status_code, response.json()))
                return response
            time.sleep(0.05)
        raise AssertionError(f"{idempotency_key} never got a final answer")

    # Sends that wait until after their recipients are suppressed.
    send_at = timezone.now() + DOOMED_DELAY
    doomed = [f"doomed{n}@prospect.example" for n in range(DOOMED)]
    for n, address in enumerate(doomed):
        response = send(urls[n % 2], f"doomed-{n}", {"to": address, "subject": "Later", "text": "Hi",
                                                     "send_at": send_at.isoformat()})
        assert response.status_code == 202 and response.json()["status"] == "scheduled", response.text

    bodies = {f"flood-{n}": {"to": f"lead{n}@prospect.example", "subject": f"Hello {n}", "text": "Hi there"}
              for n in range(FLOOD)}

    def suppress_mid_flight():
        time.sleep(0.3)
        for n, address in enumerate(doomed):
            response = requests.post(f"{urls[n % 2]}/api/v1/suppressions", json={"value": address}, timeout=60,
                                     headers={"Authorization": f"Api-Key {key}"})
            assert response.status_code in (200, 201), response.text
        return timezone.now()

    with ThreadPoolExecutor(16) as clients:
        suppression = clients.submit(suppress_mid_flight)
        futures = [clients.submit(send, url, k, body) for k, body in bodies.items() for url in urls]
        for future in futures:
            future.result()
    assert suppression.result() < send_at, "the suppressions came after the sends were due: raise DOOMED_DELAY"

    # Each key is one decision, answered alike by both web processes.
    accepted = {}
    for k in bodies:
        (first_status, first), (second_status, second) = answers[k]
        assert first_status == second_status and first == second, (k, answers[k])
        assert first_status in (202, 422), (k, first)
        if first_status == 202:
            accepted[k] = first["id"]
        else:
            assert first["error"]["code"] == "cap_exhausted", first
    for n, address in enumerate(doomed):  # what is suppressed now is refused by either process
        refused = requests.post(f"{urls[n % 2]}/api/v1/messages", json={"to": address, "subject": "x", "text": "x"},
                                headers={"Authorization": f"Api-Key {key}"}, timeout=60)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "suppressed", refused.text
    flood_messages = Message.objects.filter(workspace=workspace).exclude(to_address__in=doomed)
    assert sorted(flood_messages.values_list("pk", flat=True)) == sorted(accepted.values()), "one message per key"
    total_cap = sum(CAPS.values())
    assert total_cap - DOOMED <= len(accepted) <= total_cap, "the caps filled up, and no further"

    # Nothing lost: every accepted message reaches an end, within the doomed sends' wait and then some.
    deadline = time.monotonic() + DOOMED_DELAY.total_seconds() + 45
    while Message.objects.filter(workspace=workspace).exclude(status__in=TERMINAL_STATUSES).exists():
        assert not deployment.alive(), f"a process died: {deployment.alive()}\n{deployment.tails()}"
        assert time.monotonic() < deadline, (
            collections.Counter(Message.objects.filter(workspace=workspace).values_list("status", flat=True)),
            deployment.tails())
        time.sleep(0.25)
    statuses = dict(Message.objects.filter(workspace=workspace).values_list("to_address", "status"))
    assert {statuses[address] for address in doomed} == {"suppressed"}
    assert {statuses[bodies[k]["to"]] for k in accepted} == {"sent"}, collections.Counter(statuses.values())

    # At the SMTP server: every accepted message exactly once, nothing for a suppressed address, no cap passed.
    time.sleep(0.5)
    received = [email.message_from_bytes(content) for _, _, content in sink.messages]
    message_ids = collections.Counter(message["Message-ID"] for message in received)
    stored_ids = Message.objects.filter(pk__in=accepted.values()).values_list("message_id_header", flat=True)
    assert len(set(stored_ids)) == len(accepted)
    assert message_ids == collections.Counter(stored_ids), "each accepted message handed off exactly once"
    assert not {rcpt.lower() for rcpt in sink.recipients()} & set(doomed), "nothing sent to a suppressed address"
    per_mailbox = collections.Counter(email.utils.parseaddr(message["From"])[1].split("@")[0] for message in received)
    usage = requests.get(f"{urls[0]}/api/v1/mailboxes", headers={"Authorization": f"Api-Key {key}"}, timeout=60)
    today = {mailbox["address"].split("@")[0]: mailbox["usage"]["today"] for mailbox in usage.json()["results"]}
    for name, cap in CAPS.items():
        assert per_mailbox[name] <= cap, (name, per_mailbox)
    assert today == {name: per_mailbox[name] for name in CAPS}, "suppressed sends gave their slots back"
    assert not deployment.alive(), deployment.tails()
