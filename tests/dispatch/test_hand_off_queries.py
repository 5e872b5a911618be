"""Hand-off's statements: the claim returns its messages, each mailbox (with its domain, workspace and
provider) is read once per job, one prepared statement journals each round of the job's connections,
nothing is loaded again field by field; and how pauses stop a job."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane import dispatch
from controlplane.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def _hand_off(api, count):
    for n in range(count):
        assert api.post("/api/v1/messages", {"to": f"lead{n}@example.com", "subject": "s", "text": "t"},
                        format="json").status_code == 202
    ids = list(Message.objects.filter(status="queued").values_list("mailbox_id", flat=True).distinct())
    with CaptureQueriesContext(connection) as queries:
        dispatch.dispatch_mailboxes(ids)
    assert Message.objects.filter(status="sent").count() == count
    Message.objects.all().delete()
    return [q["sql"] for q in queries.captured_queries]


def test_hand_off_reads_in_a_fixed_number_of_statements(api, sending_setup, smtp_sink):
    few, many = _hand_off(api, 3), _hand_off(api, 9)
    # Over three mailboxes, 3 messages are one round (a message each), 9 are three: one statement per round journals
    # its hand-offs; everything else (applying the journal too) is per batch.
    assert len(many) - len(few) == 2, "\n".join(many)
    # and no field left out of a batch read is fetched on its own afterwards (Django's refresh_from_db)
    assert not [sql for sql in few + many if "LIMIT 21" in sql], "\n".join(few)
    assert len(smtp_sink.messages) == 12


def _queue(api, count, sender, start=0):
    items = [{"to": f"lead{n}@example.com", "from": sender, "subject": f"s{n}", "text": "t"}
             for n in range(start, start + count)]
    r = api.post("/api/v1/messages/batch", {"messages": items}, format="json")
    assert r.status_code == 200 and all("id" in item for item in r.json()["results"])


def test_a_pause_during_a_job_holds_its_next_batch(api, sending_setup, smtp_sink, settings, monkeypatch):
    """A job reads its mailboxes once, yet a pause holds its very next batch: the claim takes nothing of a
    paused mailbox."""
    from mailboxes.models import Mailbox

    settings.DISPATCH_BATCH_SIZE = 2
    mailbox = sending_setup["mailboxes"][0]
    _queue(api, 5, mailbox.address)
    claim, batches = dispatch._claim, []

    def pause_before_second_batch(*args, **kwargs):
        if len(batches) == 1:  # the first batch went out: the operator pauses the mailbox meanwhile
            Mailbox.objects.filter(pk=mailbox.pk).update(status="paused", paused_reason="operator")
        batches.append(claim(*args, **kwargs))
        return batches[-1]

    monkeypatch.setattr(dispatch, "_claim", pause_before_second_batch)
    dispatch.dispatch_mailboxes([mailbox.pk])
    # The first batch went before the pause; the second claim found nothing to take, and the job ended
    # (resuming the mailbox enqueues the rest).
    assert Message.objects.filter(status="sent").count() == 2
    assert Message.objects.filter(status="queued").count() == 3
    assert len(smtp_sink.messages) == 2
    assert len(batches) == 2


@pytest.mark.parametrize("prepared", [True, False])
def test_the_per_message_statements_are_prepared(api, sending_setup, smtp_sink, settings, prepared):
    settings.PREPARED_STATEMENTS = prepared
    _queue(api, 3, sending_setup["mailboxes"][0].address)
    dispatch.dispatch_mailboxes([sending_setup["mailboxes"][0].pk])
    assert Message.objects.filter(status="sent").count() == 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    journal = [s for s in statements if s.startswith("INSERT INTO controlplane_handoff")]
    applied = [s for s in statements if "SET status = 'sent'" in s]
    claim = [s for s in statements if "SET status = 'sending'" in s]
    assert (len(journal), len(applied), len(claim)) == ((1, 1, 1) if prepared else (0, 0, 0)), statements


def test_prepared_statements_are_logged_with_their_parameters(api, sending_setup, smtp_sink, settings):
    settings.PREPARED_STATEMENTS = True
    mailbox = sending_setup["mailboxes"][0]
    _queue(api, 1, mailbox.address)
    with CaptureQueriesContext(connection) as queries:
        dispatch.dispatch_mailboxes([mailbox.pk])
    claim = [q["sql"] for q in queries.captured_queries if "SET status = 'sending'" in q["sql"]]
    assert len(claim) == 1 and mailbox.pk in claim[0], claim[0]


@pytest.mark.parametrize("paused", ["mailbox", "domain", "workspace"])
def test_a_paused_sender_has_nothing_claimed(api, sending_setup, smtp_sink, paused):
    from mailboxes.models import Mailbox, SendingDomain
    from workspaces.models import Workspace

    mailbox = sending_setup["mailboxes"][0]
    _queue(api, 3, mailbox.address)
    if paused == "mailbox":
        Mailbox.objects.filter(pk=mailbox.pk).update(status="paused", paused_reason="operator")
    elif paused == "domain":
        SendingDomain.objects.filter(pk=mailbox.domain_id).update(paused=True, paused_reason="operator")
    else:
        Workspace.objects.filter(pk=mailbox.workspace_id).update(paused=True, paused_reason="operator")
    assert dispatch.dispatch_mailboxes([mailbox.pk]) == "nothing due"
    # untouched: still waiting, no attempt counted, nothing at the server
    assert set(Message.objects.values_list("status", "attempts")) == {("queued", 0)}
    assert smtp_sink.messages == []


def test_a_pause_between_claim_and_hand_off_gives_the_batch_back_and_ends_the_job(api, sending_setup, smtp_sink,
                                                                                   settings, monkeypatch):
    from mailboxes.models import Mailbox

    settings.DISPATCH_BATCH_SIZE = 2
    mailbox = sending_setup["mailboxes"][0]
    _queue(api, 5, mailbox.address)
    claim, batches = dispatch._claim, []

    def claim_then_pause(*args, **kwargs):
        batches.append(claim(*args, **kwargs))
        Mailbox.objects.filter(pk=mailbox.pk).update(status="paused", paused_reason="operator")
        return batches[-1]

    monkeypatch.setattr(dispatch, "_claim", claim_then_pause)
    assert dispatch.dispatch_mailboxes([mailbox.pk]) == "2 waiting: mailbox_paused"
    assert len(batches) == 1  # not claimed again and again
    assert set(Message.objects.values_list("status", "attempts")) == {("queued", 0)}
    assert smtp_sink.messages == []


def test_claimed_messages_are_what_the_orm_would_load(api, sending_setup):
    """The claim builds its messages directly: each is what `Message.objects.only(...)` would load (same
    values, converted; the other fields deferred and loaded on first use), and saving one writes it back."""
    from django.db.models.signals import post_init

    _queue(api, 3, sending_setup["mailboxes"][0].address)
    Message.objects.filter(to_address="lead1@example.com").update(headers={"X-Campaign": "q4"},
                                                                  metadata={"lead": 7})
    fields = [f.name for f in dispatch._HAND_OFF]
    loaded = {m.pk: m for m in Message.objects.only(*fields)}
    claimed = dispatch._claim([sending_setup["mailboxes"][0].pk], 10)
    assert len(claimed) == 3
    for message in claimed:
        orm = loaded[message.pk]
        for field in dispatch._HAND_OFF:
            expected = getattr(orm, field.attname)
            if field.name == "status":
                expected = "sending"  # as the claim left it
            elif field.name == "attempts":
                expected += 1
            assert getattr(message, field.attname) == expected, field.name
        assert message.get_deferred_fields() == orm.get_deferred_fields() != set()
        assert not message._state.adding and message._state.db == "default"
        assert message.created_at == orm.created_at  # a deferred field, read from the database
    by_to = {m.to_address: m for m in claimed}
    assert by_to["lead1@example.com"].headers == {"X-Campaign": "q4"} and by_to["lead1@example.com"].metadata == {"lead": 7}
    by_to["lead2@example.com"].subject = "changed"
    by_to["lead2@example.com"].save(update_fields=["subject"])
    assert Message.objects.get(to_address="lead2@example.com").subject == "changed"

    # With something listening to a message's construction, the claim builds them as the ORM does.
    built = []
    post_init.connect(receiver := lambda sender, instance, **kw: built.append(instance.pk), sender=Message)
    try:
        Message.objects.update(status="queued")
        assert {m.pk for m in dispatch._claim([sending_setup["mailboxes"][0].pk], 10)} == set(built) == set(loaded)
    finally:
        post_init.disconnect(receiver, sender=Message)


def test_a_job_reads_its_mailboxes_once_whatever_its_batches(api, sending_setup, smtp_sink, settings):
    """Batches of one message, each from another mailbox of the job: the mailboxes (with their domains,
    workspaces and providers) are still read in one statement each, with the first batch."""
    settings.DISPATCH_BATCH_SIZE = 1
    for n in range(3):
        assert api.post("/api/v1/messages", {"to": f"lead{n}@example.com", "subject": "s", "text": "t"},
                        format="json").status_code == 202
    ids = sorted(Message.objects.values_list("mailbox_id", flat=True).distinct())
    assert len(ids) == 3  # round robin spread them
    with CaptureQueriesContext(connection) as queries:
        dispatch.dispatch_mailboxes(ids)
    assert Message.objects.filter(status="sent").count() == 3 and len(smtp_sink.messages) == 3
    reads = [q["sql"] for q in queries.captured_queries if 'FROM "mailboxes_mailbox" INNER JOIN' in q["sql"]]
    assert len(reads) == 1, reads
    assert sum('FROM "providers_providerconnection"' in q["sql"] for q in queries.captured_queries) == 1


def _plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def test_a_claim_reads_only_what_it_takes_however_long_the_backlog(api, sending_setup):
    """Each mailbox gives the claim its oldest due messages up to its share of the batch, read in the
    order of its waiting messages' index: a mailbox with a long backlog costs the claim no more."""
    from django.db import transaction

    ann, bob = sending_setup["mailboxes"][:2]
    _queue(api, 40, ann.address)
    _queue(api, 3, bob.address, start=100)
    oldest = {m: list(Message.objects.filter(mailbox=m).order_by("scheduled_at", "id").values_list("pk", flat=True))
              for m in (ann, bob)}
    with CaptureQueriesContext(connection) as queries:
        claimed = dispatch._claim([ann.pk, bob.pk], 6)
    assert {m.pk for m in claimed} == {*oldest[ann][:3], *oldest[bob][:3]}  # a share of 3 each, oldest first
    [claim] = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    with transaction.atomic():  # the same claim again, measured, and undone
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + claim)
            [plan] = cursor.fetchone()[0]
        transaction.set_rollback(True)
    scans = [n for n in _plan_nodes(plan["Plan"]) if n.get("Index Name") == "message_mailbox_waiting"]
    assert scans, plan
    # It took ann's next 3 (bob has none left) and read no more of the 37 waiting: no sort of the backlog
    # (EXPLAIN gives a scan's rows as an average over its loops, one per mailbox: about 3 in all).
    assert plan["Plan"]["Actual Rows"] == 3
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in scans) <= 4
    assert not [n for n in _plan_nodes(plan["Plan"]) if n["Node Type"] == "Sort"]


def test_a_job_sends_every_mailbox_s_backlog_however_uneven(api, sending_setup, smtp_sink, settings, monkeypatch):
    """A batch takes an equal share of each mailbox; the next batch goes on with the mailboxes that gave
    their whole share, until none has more due. Each mailbox's messages go out oldest first."""
    import email

    settings.DISPATCH_BATCH_SIZE = 4
    ann, bob, cat = sending_setup["mailboxes"]
    _queue(api, 9, ann.address)
    _queue(api, 2, bob.address, start=100)
    claim, batches = dispatch._claim, []

    def recorded(*args, **kwargs):
        batches.append(claim(*args, **kwargs))
        return batches[-1]

    monkeypatch.setattr(dispatch, "_claim", recorded)
    assert dispatch.dispatch_mailboxes([ann.pk, bob.pk, cat.pk]) == "11 sent"
    # Shares of 2 of three mailboxes: ann 2, bob 2, cat none; of ann and bob: ann 2, bob none left; then
    # ann's 4, and her last one (fewer than her share: done).
    assert [sorted(m.from_address.split("@")[0] for m in batch) for batch in batches] == [
        ["ann", "ann", "bob", "bob"], ["ann", "ann"], ["ann"] * 4, ["ann"]]
    subjects = [email.message_from_bytes(data)["Subject"] for _, _, data in smtp_sink.messages]
    oldest_first = list(Message.objects.filter(mailbox=ann).order_by("scheduled_at", "id")
                        .values_list("subject", flat=True))
    assert [s for s in subjects if int(s[1:]) < 100] == oldest_first
