"""Benchmark: the daily check of 1,000 domains against a loopback name server that answers every
query 50 ms late. Goal: under a minute.

    make bench PYTEST_ARGS="-k thousand_domains"

Not part of `make test`: benchmarks are skipped unless run with `-m bench` (tests/conftest.py).
"""

import contextlib
import multiprocessing
import time

import pytest

from mailboxes import jobs
from mailboxes.dns import dkim
from mailboxes.models import DkimKey, DomainCheckRun, Mailbox, SendingDomain
from providers.models import ProviderConnection
from tests.dnsserver import DnsServer

pytestmark = [pytest.mark.bench, pytest.mark.django_db]

DOMAINS = 1000
LATENCY = 0.05
GOAL_SECONDS = 60


def serve(server, pipe):
    server.start()
    pipe.send(server.port)
    pipe.recv()  # until the benchmark is done
    pipe.send(server.queries)
    server.stop()


@contextlib.contextmanager
def name_server_process(server):
    """Runs `server` in its own process, as a real resolver would be: its work does not compete with
    the checks for this interpreter."""
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=serve, args=(server, theirs), daemon=True)
    process.start()
    try:
        server.port = ours.recv()
        yield server
    finally:
        ours.send("stop")
        server.queries = ours.recv() if ours.poll(10) else None
        process.join(timeout=10)


def test_checking_a_thousand_domains_at_50ms_per_answer(workspace, settings, report):
    pem, public = dkim.generate_keypair(2048)
    google = ProviderConnection.objects.create(workspace=workspace, kind="google_workspace", name="Google")
    names = [f"d{i:04}.bench.test" for i in range(DOMAINS)]
    domains = SendingDomain.objects.bulk_create([SendingDomain(workspace=workspace, name=n) for n in names])
    DkimKey.objects.bulk_create([DkimKey(domain=d, selector="cp1", private_key={"pem": pem}, public_key=public)
                                 for d in domains])
    Mailbox.objects.bulk_create([Mailbox(workspace=workspace, domain=d, provider=google, address=f"jane@{d.name}")
                                 for d in domains])
    server = DnsServer()
    server.add("_spf.google.com", "TXT", "v=spf1 ip4:35.190.247.0/24 ~all")
    record = DkimKey.objects.filter(domain=domains[0]).get().txt_chunks()
    for name in names:
        server.add(name, "TXT", "v=spf1 include:_spf.google.com ~all")
        server.add(f"cp1._domainkey.{name}", "TXT", record)
        server.add(f"google._domainkey.{name}", "TXT", record)
        server.add(f"_dmarc.{name}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{name}")
        server.add(name, "MX", f"10 mx.{name}.")
    server.latency = LATENCY
    settings.DNSBL_ZONES = ["dbl.test"]

    timings = []
    with name_server_process(server):
        settings.DNS_NAMESERVERS = [server.nameserver]
        for label in ("first run (every status changes)", "second run (nothing changes)"):
            started = time.monotonic()
            summary = jobs.check_all_domains(trigger="schedule")
            elapsed = time.monotonic() - started
            timings.append(elapsed)
            print(f"\n{label}: {DOMAINS} domains, answers {LATENCY * 1000:.0f} ms late, in {elapsed:.1f} s")
            report(f"DNS checks, {DOMAINS:,} domains at {LATENCY * 1000:.0f} ms per answer", label, f"{elapsed:.1f} s",
                   f"< {GOAL_SECONDS} s", elapsed < GOAL_SECONDS)
            assert summary == {"checked": DOMAINS, "statuses": {"pass": DOMAINS}}
    print(f"{server.queries} DNS queries answered in all")

    assert DomainCheckRun.objects.count() == 2 * DOMAINS
    assert max(timings) < GOAL_SECONDS
