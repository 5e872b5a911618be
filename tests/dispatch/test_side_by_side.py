"""A batch's mailboxes take turns: each connection gets its next message before the worker waits on any
server's reply, and each round's accepted messages are journaled before their connections go on."""

import asyncio

import pytest
from django.db import connections

from controlplane import dispatch
from controlplane.models import HandOff, Message

pytestmark = pytest.mark.django_db(transaction=True)


def _recorded():
    """Ids of the messages journaled or already applied, read on a connection of this thread's own."""
    try:
        return {*HandOff.objects.values_list("message_id", flat=True),
                *Message.objects.filter(status="sent").values_list("pk", flat=True)}
    finally:
        connections.close_all()


def _queue(api, mailboxes, per_mailbox):
    items = [{"to": f"lead{n}-{m}@example.com", "from": mailbox.address, "subject": f"s{n}", "text": "t"}
             for m, mailbox in enumerate(mailboxes) for n in range(per_mailbox)]
    r = api.post("/api/v1/messages/batch", {"messages": items}, format="json")
    assert r.status_code == 200 and all("id" in item for item in r.json()["results"])


def _record(smtp_sink, name, log):
    """Wraps the sink's handler for `name` (MAIL, DATA) to log (command, connection, recipient or sender)."""
    original = getattr(smtp_sink.handler, f"handle_{name}")

    async def handle(server, session, envelope, *args):
        log.append((name, id(session), args[0] if args else envelope.rcpt_tos[0]))
        return await original(server, session, envelope, *args)

    setattr(smtp_sink.handler, f"handle_{name}", handle)


def test_every_connection_gets_its_next_message_before_the_worker_waits_on_one(api, sending_setup, smtp_sink):
    mailboxes = sending_setup["mailboxes"]
    _queue(api, mailboxes, 3)
    log = []
    _record(smtp_sink, "MAIL", log)
    dispatch.dispatch_mailboxes([m.pk for m in mailboxes])
    assert Message.objects.filter(status="sent").count() == 9 and len(smtp_sink.messages) == 9
    senders = [who for command, _, who in log if command == "MAIL"]
    # Round by round: a message of each mailbox, then the next of each (one after another, ann's three, then
    # bob's, would be a round trip to the server for every message).
    assert [set(senders[n:n + 3]) for n in (0, 3, 6)] == [{m.address for m in mailboxes}] * 3, senders
    assert len({connection for _, connection, _ in log}) == 3
    # Each mailbox's messages still go out in the order they were due (then by id), and all are recorded.
    for mailbox in mailboxes:
        sent = Message.objects.filter(mailbox=mailbox)
        assert list(sent.order_by("sent_at")) == list(sent.order_by("scheduled_at", "pk"))
    assert not HandOff.objects.exists()


def test_what_a_turn_accepted_is_journaled_before_its_connections_write_again(api, sending_setup, smtp_sink):
    """When a server reads a message's end, the previous message of every connection is in the journal
    (committed): a worker that dies then repeats at most the message in flight on each connection."""
    mailboxes = sending_setup["mailboxes"]
    _queue(api, mailboxes, 3)
    journaled_at_data = []
    original = smtp_sink.handler.handle_DATA

    async def handle_DATA(server, session, envelope):
        rows = await asyncio.get_running_loop().run_in_executor(None, _recorded)
        journaled_at_data.append((id(session), envelope.rcpt_tos[0], rows))
        return await original(server, session, envelope)

    smtp_sink.handler.handle_DATA = handle_DATA
    dispatch.dispatch_mailboxes([m.pk for m in mailboxes])
    assert len(smtp_sink.messages) == 9
    ids = dict(Message.objects.values_list("to_address", "pk"))
    for connection in {session for session, _, _ in journaled_at_data}:
        received = [(to, rows) for session, to, rows in journaled_at_data if session == connection]
        assert len(received) == 3
        for n, (to, rows) in enumerate(received):
            earlier = {ids[before] for before, _ in received[:n]}
            assert earlier <= rows, f"{to}: an earlier message of its connection was not journaled yet"
