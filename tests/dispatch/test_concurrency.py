"""Caps and idempotency hold under concurrency: many clients, one mailbox, real HTTP, real workers."""

import datetime as dt
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from controlplane.models import Message
from mailboxes.models import MailboxDailyUsage, WarmupProfile
from workspaces import services as workspace_services

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 16
# The full 16 × 500 flood runs with `make stress` (FLOOD_PER_THREAD=500); the suite uses a shorter one.
PER_THREAD = int(os.environ.get("FLOOD_PER_THREAD", "40"))


def _key(workspace):
    return workspace_services.create_api_key(workspace=workspace, name="seq", role="sequencer")[1]


def _flood(url, key, payload, *, threads=THREADS, per_thread=PER_THREAD):
    session_local = threading.local()

    def post(n):
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        r = session.post(url, json={**payload, "to": f"lead{n}@example.com"},
                         headers={"Authorization": f"Api-Key {key}"}, timeout=60)
        return r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(post, range(threads * per_thread)))


def _codes(results):
    counts = {}
    for status, body in results:
        code = status if status == 202 else body["error"]["code"]
        counts[code] = counts.get(code, 0) + 1
    return counts


def test_daily_cap_holds_under_a_flood(live_server, workspace, sending_setup, smtp_sink, run_workers):
    mailbox = sending_setup["mailboxes"][0]
    results = _flood(f"{live_server.url}/api/v1/messages", _key(workspace),
                     {"from": mailbox.address, "subject": "s", "text": "t"})
    assert _codes(results) == {202: 50, "cap_exhausted": THREADS * PER_THREAD - 50}
    assert all(body["error"]["next_available_at"] for status, body in results if status == 422)
    run_workers()
    assert len(smtp_sink.messages) == 50
    assert MailboxDailyUsage.objects.get(mailbox=mailbox).count == 50


def test_weekly_cap_and_warmup_ramp_hold(live_server, workspace, sending_setup, smtp_sink, run_workers):
    weekly, ramped = sending_setup["mailboxes"][1], sending_setup["mailboxes"][2]
    today = dt.datetime.now(dt.timezone.utc).date()
    monday = today - dt.timedelta(days=today.isoweekday() - 1)
    weekly.weekly_cap = 60
    weekly.save()
    if monday != today:
        MailboxDailyUsage.objects.create(mailbox=weekly, day=monday, count=45)
        expected_weekly = 15
    else:
        weekly.weekly_cap = 15
        weekly.save()
        expected_weekly = 15
    ramped.warmup_profile = WarmupProfile.objects.create(workspace=workspace, name="ramp", start=5, step=5, max=40)
    ramped.warmup_started_on = today - dt.timedelta(days=2)  # day 3: 15 allowed
    ramped.save()
    key = _key(workspace)
    url = f"{live_server.url}/api/v1/messages"
    first = _flood(url, key, {"from": weekly.address, "subject": "s", "text": "t"}, threads=8, per_thread=25)
    second = _flood(url, key, {"from": ramped.address, "subject": "s", "text": "t"}, threads=8, per_thread=25)
    assert _codes(first)[202] == expected_weekly
    assert _codes(second)[202] == 15
    run_workers()
    assert len(smtp_sink.messages) == expected_weekly + 15


def test_rotation_spreads_and_never_exceeds_pool_capacity(live_server, workspace, sending_setup, smtp_sink, run_workers):
    for mailbox, cap in zip(sending_setup["mailboxes"], (5, 7, 9)):
        mailbox.daily_cap = cap
        mailbox.save()
    results = _flood(f"{live_server.url}/api/v1/messages", _key(workspace), {"subject": "s", "text": "t"},
                     threads=8, per_thread=10)
    assert _codes(results) == {202: 21, "cap_exhausted": 59}
    per_mailbox = {m.address: Message.objects.filter(mailbox=m).count() for m in sending_setup["mailboxes"]}
    assert sorted(per_mailbox.values()) == [5, 7, 9]
    run_workers()
    assert len(smtp_sink.messages) == 21


def test_concurrent_requests_with_one_idempotency_key_create_one_message(live_server, workspace, sending_setup):
    key = _key(workspace)
    barrier = threading.Barrier(8)

    def post(_):
        barrier.wait()
        r = requests.post(f"{live_server.url}/api/v1/messages",
                          json={"to": "same@example.com", "subject": "s", "text": "t"},
                          headers={"Authorization": f"Api-Key {key}", "Idempotency-Key": "abc-1"}, timeout=30)
        return r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(post, range(8)))
    assert {status for status, _ in results} == {202}
    assert len({body["id"] for _, body in results}) == 1
    assert Message.objects.count() == 1


def _batch_while_held(api, held, count):
    """POSTs a batch of `count` sends while another transaction holds the mailboxes `held` (for half a
    second after the batch starts); returns the response."""
    from django.db import connection, transaction

    from mailboxes.models import Mailbox

    locked, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                list(Mailbox.objects.select_for_update().filter(pk__in=held))
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    threading.Timer(0.5, release.set).start()
    response = api.post("/api/v1/messages/batch", {"messages": [
        {"to": f"lead{n}@example.com", "subject": "s", "text": "t"} for n in range(count)]}, format="json")
    holder.join()
    return response


def test_a_batch_that_waited_for_a_busy_pool_still_rotates(api, sending_setup):
    """Another transaction holds every mailbox of the pool: a batch arriving meanwhile waits for it, then
    spreads over the pool as usual instead of piling onto the first mailbox it waited for."""
    ids = [m.pk for m in sending_setup["mailboxes"]]
    response = _batch_while_held(api, ids, 6)
    assert response.status_code == 200 and all("id" in item for item in response.json()["results"]), response.json()
    used = Message.objects.values_list("mailbox_id", flat=True)
    assert sorted(list(used).count(pk) for pk in ids) == [2, 2, 2]


def test_a_batch_whose_only_free_mailbox_is_full_waits_for_a_busy_one(api, sending_setup):
    """The pool's only mailbox not held by another transaction has no room left today: the batch waits for
    a held one rather than giving up (it used to lose every round and be refused), and its sends spread
    over the others."""
    from mailboxes.models import Mailbox

    full, *busy = [m.pk for m in sending_setup["mailboxes"]]
    Mailbox.objects.filter(pk=full).update(daily_cap=1)
    first = api.post("/api/v1/messages", {"to": "first@example.com", "from": sending_setup["mailboxes"][0].address,
                                          "subject": "s", "text": "t"}, format="json")
    assert first.status_code == 202, first.json()
    response = _batch_while_held(api, busy, 4)
    assert response.status_code == 200 and all("id" in item for item in response.json()["results"]), response.json()
    used = list(Message.objects.exclude(to_address="first@example.com").values_list("mailbox_id", flat=True))
    assert sorted(used.count(pk) for pk in busy) == [2, 2] and full not in used


def test_a_deadlock_while_waiting_for_a_held_mailbox_costs_a_round_not_the_request(api, sending_setup):
    """The batch holds the pool's full mailbox and waits for a held one, whose holder then waits for the
    full one: PostgreSQL breaks the deadlock by failing one side. Whichever it is, the batch is
    placed (in a later round if it was this side) and the request succeeds."""
    import time

    from django.db import DatabaseError, connection, transaction

    from mailboxes.models import Mailbox

    full, *busy = [m.pk for m in sending_setup["mailboxes"]]
    Mailbox.objects.filter(pk=full).update(daily_cap=1)
    assert api.post("/api/v1/messages", {"to": "first@example.com", "from": sending_setup["mailboxes"][0].address,
                                         "subject": "s", "text": "t"}, format="json").status_code == 202

    def deadlocks():
        with connection.cursor() as cursor:
            cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            return cursor.fetchone()[0]

    before = deadlocks()
    locked, outcome = threading.Event(), {}

    def hold_the_others_then_want_the_full_one():
        try:
            with transaction.atomic():
                list(Mailbox.objects.select_for_update().filter(pk__in=busy))
                locked.set()
                time.sleep(0.5)  # the batch has locked the full one by now, and waits for one of these
                list(Mailbox.objects.select_for_update().filter(pk=full))
            outcome["holder"] = "done"
        except DatabaseError as exc:
            outcome["holder"] = f"failed: {exc}"
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_others_then_want_the_full_one)
    holder.start()
    assert locked.wait(10)
    response = api.post("/api/v1/messages/batch", {"messages": [
        {"to": f"lead{n}@example.com", "subject": "s", "text": "t"} for n in range(4)]}, format="json")
    holder.join()
    assert response.status_code == 200 and all("id" in item for item in response.json()["results"]), response.json()
    assert full not in Message.objects.exclude(to_address="first@example.com").values_list("mailbox_id", flat=True)
    deadline = time.monotonic() + 5  # the statistics arrive a moment later
    while deadlocks() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert deadlocks() == before + 1, outcome
