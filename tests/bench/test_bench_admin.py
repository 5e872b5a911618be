"""The admin at scale: the dashboard, a mailbox page and the setup checklist of a workspace with 2,000 mailboxes and
1,000,000 messages (targets: each < 500 ms, a fixed number of queries), the cost of the daily-count triggers on
message inserts, and how fast pending counts fold. Run with `make bench`."""

import os
import statistics
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane.models import Message
from controlplane.stats import services as stats
from controlplane.stats.models import PendingCount
from mailboxes.models import Mailbox, MailboxDailyUsage, Pool, SendingDomain, WarmupProfile
from providers import services as provider_services

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]

MAILBOXES = int(os.environ.get("BENCH_ADMIN_MAILBOXES", "2000"))
MESSAGES = int(os.environ.get("BENCH_ADMIN_MESSAGES", "1000000"))
DAYS = 60
RUNS = 7
TARGET_MS = 500
# Outcomes of the generated messages, per 1,000: 25 hard-bounced, 3 complained, 10 failed, 60 still sent.
OUTCOMES = ("CASE WHEN n %% 1000 < 25 THEN 'bounced' WHEN n %% 1000 < 28 THEN 'complained' "
            "WHEN n %% 1000 < 38 THEN 'failed' WHEN n %% 1000 < 98 THEN 'sent' ELSE 'delivered' END")


def _fill(workspace):
    """2,000 mailboxes on 20 domains in 5 pools, 1,000,000 messages over 60 days with their bounce and complaint
    events, and today's usage: written in bulk (the fixture, not what is measured)."""
    provider = provider_services.create_connection(workspace=workspace, kind="smtp", name="relay",
                                                   settings={"host": "127.0.0.1", "port": 25, "security": "none"})
    ramp = WarmupProfile.objects.create(workspace=workspace, name="ramp", start=5, step=5, max=50)
    domains = SendingDomain.objects.bulk_create(
        [SendingDomain(workspace=workspace, name=f"d{n}.bench.example", status="fail" if n % 7 == 0 else "pass")
         for n in range(20)])
    mailboxes = Mailbox.objects.bulk_create(
        [Mailbox(workspace=workspace, domain=domains[n % 20], provider=provider,
                 address=f"rep{n}@d{n % 20}.bench.example",
                 daily_cap=50, weekly_cap=250, warmup_profile=ramp if n % 3 == 0 else None,
                 warmup_started_on=timezone.now().date() if n % 3 == 0 else None,
                 status="paused" if n % 97 == 0 else "active", paused_reason="bench" if n % 97 == 0 else "")
         for n in range(MAILBOXES)])
    for index in range(5):
        Pool.objects.create(workspace=workspace, name=f"pool{index}", workloads=[f"w{index}"]).mailboxes.set(
            mailboxes[index::5])
    today = timezone.now().date()
    MailboxDailyUsage.objects.bulk_create([MailboxDailyUsage(mailbox=m, day=today, count=n % 51)
                                           for n, m in enumerate(mailboxes)])
    with connection.cursor() as cursor:
        cursor.execute(f"""
            INSERT INTO controlplane_message (id, workspace_id, mailbox_id, pinned, to_address, from_address, workload,
                subject, text, html, headers, metadata, thread_key, status, scheduled_at, reserved_day, decision,
                message_id_header, provider_message_id, provider_response, attempts, sent_at, created_at, updated_at)
            SELECT 'msg_bench' || n, %(ws)s, ids[1 + n %% %(mailboxes)s], false, 'lead' || n || '@prospect.example', '',
                   'cold', 'Hello', 'Hi', '', '{{}}', '{{}}', '', {OUTCOMES},
                   now() - (n %% %(days)s) * interval '1 day' - (n %% 600) * interval '1 minute', NULL, '{{}}',
                   '', '', '250 ok', 1, now() - (n %% %(days)s) * interval '1 day', now(), now()
            FROM generate_series(1, %(messages)s) AS n,
                 (SELECT array_agg(id ORDER BY id) AS ids FROM mailboxes_mailbox WHERE workspace_id = %(ws)s) AS m
        """, {"ws": workspace.pk, "mailboxes": MAILBOXES, "days": DAYS, "messages": MESSAGES})
        cursor.execute("""
            INSERT INTO controlplane_event (id, workspace_id, message_id, type, occurred_at, data)
            SELECT 'evt_bench' || m.id, m.workspace_id, m.id,
                   CASE m.status WHEN 'complained' THEN 'message.complained' ELSE 'message.bounced' END,
                   m.scheduled_at + interval '1 hour',
                   CASE m.status WHEN 'complained' THEN '{}'::jsonb ELSE '{"bounce_type": "hard"}'::jsonb END
            FROM controlplane_message m WHERE m.workspace_id = %s AND m.status IN ('bounced', 'complained')
        """, [workspace.pk])
        cursor.execute("ANALYZE")


def _timed(client, path):
    client.get(path)
    client.get(path)
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, path
    with CaptureQueriesContext(connection) as queries:
        client.get(path)
    return statistics.median(samples), max(samples), len(queries)


def _trigger_overhead(workspace, count=100_000):
    """Milliseconds to insert `count` messages with the daily-count triggers, and without them."""
    mailbox = Mailbox.objects.filter(workspace=workspace).first()
    insert = """
        INSERT INTO controlplane_message (id, workspace_id, mailbox_id, pinned, to_address, from_address, workload,
            subject, text, html, headers, metadata, thread_key, status, scheduled_at, decision, message_id_header,
            provider_message_id, provider_response, attempts, created_at, updated_at)
        SELECT %s || n, %s, %s, false, 'x@prospect.example', '', 'cold', 'Hi', 'Hi', '', '{}', '{}', '', 'queued',
               now(), '{}', '', '', '', 0, now(), now()
        FROM generate_series(1, %s) AS n"""
    figures = {}
    with connection.cursor() as cursor:
        for label, prefix in (("with", "msg_trg"), ("without", "msg_raw")):
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred checks pending before ALTER TABLE
            if label == "without":
                cursor.execute("ALTER TABLE controlplane_message DISABLE TRIGGER stats_messages_inserted")
            started = time.perf_counter()
            cursor.execute(insert, [prefix, workspace.pk, mailbox.pk, count])
            figures[label] = (time.perf_counter() - started) * 1000
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            if label == "without":
                cursor.execute("ALTER TABLE controlplane_message ENABLE TRIGGER stats_messages_inserted")
        cursor.execute("DELETE FROM controlplane_message WHERE id LIKE 'msg_trg%%' OR id LIKE 'msg_raw%%'")
    stats.fold(batch=50_000)
    return figures


def test_admin_pages_at_2000_mailboxes_and_a_million_messages(workspace, client, make_user, report):
    _fill(workspace)
    pending = PendingCount.objects.count()  # the daily-count triggers' rows: one per statement, mailbox, minute, status
    started = time.perf_counter()
    folded = stats.fold(batch=50_000, max_batches=1000)
    fold_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE stats_pendingcount")  # as autovacuum keeps the emptied queue in use
    assert folded == pending and not PendingCount.objects.exists()
    client.force_login(make_user("owner", workspace=workspace, role="owner"))
    busiest = Mailbox.objects.filter(workspace=workspace).order_by("address").first()
    pages = {
        "dashboard": reverse("admin:index"),
        "mailbox page": reverse("admin:mailboxes_mailbox_change", args=[busiest.pk]),
        "setup checklist": reverse("admin:workspaces_workspace_onboarding", args=[workspace.pk]),
    }
    name = f"admin at {MAILBOXES:,} mailboxes and {Message.objects.count():,} messages"
    print(f"\n{name}")
    for page, path in pages.items():
        median, worst, queries = _timed(client, path)
        report(name, f"{page}: median / slowest of {RUNS}", f"{median:.0f} / {worst:.0f} ms ({queries} queries)",
               f"< {TARGET_MS} ms", median < TARGET_MS)
        print(f"  {page}: median {median:.0f} ms, slowest {worst:.0f} ms, {queries} queries")
    report(name, "daily counts folded (setup)",
           f"{folded:,} pending rows for {MESSAGES:,} messages in {fold_seconds:.1f} s")
    print(f"  folded {folded:,} pending rows for {MESSAGES:,} messages in {fold_seconds:.1f} s")

    overhead = _trigger_overhead(workspace)
    extra = (overhead["with"] - overhead["without"]) / 100_000 * 1000
    report(name, "100,000 message inserts with / without the daily-count trigger",
           f"{overhead['with']:.0f} / {overhead['without']:.0f} ms ({extra:.1f} µs a message)")
    print(f"  100,000 inserts: {overhead['with']:.0f} ms with the trigger, {overhead['without']:.0f} ms without")
