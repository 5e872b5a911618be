"""Hand-off in RQ workers: claim, re-check policy, build MIME, send through the provider, record.

The database is the truth: a job carries a message id, claims the row with a lease, and
re-checks everything. `reconcile` re-enqueues due messages that have no live job and
releases expired leases, so a worker crash or a Redis flush loses nothing.
"""

import collections
import contextlib
import datetime as dt
import json
import logging
import time
import uuid

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DEFERRED, F, Q
from django.db.models.base import ModelState
from django.utils import timezone

from audit import services as audit
from audit.context import Actor, acting_as
from controlplane import bulk, events, mime, policy, prepared
from controlplane.ids import new_id
from controlplane.models import HANDED_OFF_STATUSES, Event, HandOff, Message
from controlplane.queues import queue
from mailboxes.models import Mailbox
from mailboxes.dns import dkim
from mailboxes.services import caps
from providers.base import PAUSE, TURN, OutgoingMessage, SendResult, TransientError, transport_for
from suppression import services as suppression

logger = logging.getLogger(__name__)

WAITING = ["queued", "scheduled", "deferred"]
WORKER_ACTOR = Actor("system", "", "dispatch worker")
# Due mailboxes share a job up to this many (workers take the jobs in parallel).
MAILBOXES_PER_JOB = 20
# How long a mailbox's mark "a hand-off job is waiting to start" holds at most (see `enqueue_many`).
PENDING_SECONDS = 300
# What hand-off reads of a message and of its mailbox, domain, workspace and provider. The policy decision
# is read only when an attempt is deferred (a statement then, on that rarer path).
HAND_OFF_FIELDS = ("id", "workspace", "mailbox", "pool", "pinned", "to_address", "from_address", "workload", "subject",
                   "text", "html", "headers", "metadata", "status", "scheduled_at", "reserved_day", "reserved_hour",
                   "message_id_header", "attempts")
MAILBOX_FIELDS = ("id", "workspace", "domain", "provider", "address", "display_name", "status", "paused_reason",
                  "per_minute_cap", "last_error", "workspace__name", "workspace__slug", "workspace__paused",
                  "workspace__paused_reason", "workspace__sender_identification", "workspace__postal_address",
                  "domain__name", "domain__paused", "domain__paused_reason")
PROVIDER_FIELDS = ("id", "kind", "name", "settings", "credentials", "workspace", "updated_at")
# A provider's Retry-After is honoured up to this long; past it the regular retry schedule applies.
MAX_RETRY_AFTER_SECONDS = 3600


def retry_delays():
    return settings.DISPATCH_RETRY_DELAYS


def batch_size() -> int:
    return settings.DISPATCH_BATCH_SIZE


def job_id(message_id: str, attempts: int) -> str:
    """One job id per message and attempt, so the reconciler can tell whether the next attempt is queued."""
    return f"dispatch-{message_id}-{attempts}"


def mailbox_job_id(mailbox_id: str) -> str:
    """A hand-off job for whatever of one mailbox is due (`dispatch_mailbox`)."""
    return f"dispatch-{mailbox_id}-{uuid.uuid4().hex[:12]}"


def enqueue(message_id: str, when: dt.datetime | None = None, *, attempts: int = 0):
    """Queues the hand-off job (at `when` if later). Repeats are harmless: only one job claims the message."""
    q = queue("dispatch")
    now = timezone.now()
    ident = job_id(message_id, attempts)
    if when is not None and when > now + dt.timedelta(seconds=1):
        q.enqueue_at(when, dispatch_message, message_id, job_id=ident, result_ttl=0)
    else:
        q.enqueue(dispatch_message, message_id, job_id=ident, result_ttl=0)


def _pending_key(mailbox_id: str) -> str:
    return f"dispatch:pending:{mailbox_id}"


def enqueue_many(items, *, force: bool = False):
    """Queues hand-offs in few Redis round trips; `items` are (message id, when, attempts, mailbox id).

    What is due now becomes jobs of up to MAILBOXES_PER_JOB mailboxes (each sends its mailboxes' due
    messages, a mailbox over one connection); what is due later gets its own job at its time.

    A mailbox that already has a hand-off job waiting to start gets no second one: that job claims
    after this caller committed, so it takes these messages too (each job clears its mailboxes' marks
    before its first claim). Without this, every small intake would add a job for the same mailboxes,
    each reading their mailboxes, domains and providers again. A mark lapses after PENDING_SECONDS, in
    case its job was lost; the reconciler queues regardless (`force`)."""
    q = queue("dispatch")
    soon = timezone.now() + dt.timedelta(seconds=1)
    due_mailboxes = sorted({mailbox_id for _, when, _, mailbox_id in items if not (when and when > soon)})
    later = [(pk, when, attempts) for pk, when, attempts, _ in items if when and when > soon]
    if due_mailboxes:
        with q.connection.pipeline(transaction=False) as pipe:
            for mailbox_id in due_mailboxes:
                pipe.set(_pending_key(mailbox_id), 1, ex=PENDING_SECONDS, nx=not force)
            marked = pipe.execute()
        due_mailboxes = [mailbox_id for mailbox_id, ok in zip(due_mailboxes, marked) if ok]
    groups = [due_mailboxes[i:i + MAILBOXES_PER_JOB] for i in range(0, len(due_mailboxes), MAILBOXES_PER_JOB)]
    if not groups and not later:
        return
    with q.connection.pipeline() as pipe:
        if groups:
            q.enqueue_many([q.prepare_data(dispatch_mailboxes, (group,), job_id=mailbox_job_id(group[0]),
                                           result_ttl=0) for group in groups], pipeline=pipe)
        for pk, when, attempts in later:
            job = q.create_job(dispatch_message, args=(pk,), job_id=job_id(pk, attempts), result_ttl=0)
            q.schedule_job(job, when, pipeline=pipe)
        pipe.execute()


def _starting(mailbox_ids):
    """A hand-off job starts: from now on it may claim before a new intake commits, so the next one
    needs a job of its own."""
    try:
        queue("dispatch").connection.delete(*[_pending_key(pk) for pk in mailbox_ids])
    except Exception:  # noqa: BLE001 - Redis down: the marks lapse on their own, and nothing is sent twice
        logger.warning("Could not clear the pending marks of %d mailboxes.", len(mailbox_ids), exc_info=True)


def share(limit: int, mailboxes: int) -> int:
    """How many messages one claim takes at most from each of `mailboxes` mailboxes: an equal share of
    `limit`. A mailbox that gave its whole share may have more due; one that gave less has none left
    (or none this job may take)."""
    return max(1, -(-limit // max(1, mailboxes)))


def _claim(mailbox_ids, limit: int, now=None) -> list:
    """Claims due waiting messages of these mailboxes with a lease (SKIP LOCKED, so workers share a
    backlog without waiting on each other): from each mailbox its oldest, up to its `share` of `limit`;
    a mailbox with a `per_minute_cap` gets no more than its minute allows. A retry is due at its time;
    a first attempt up to a second early, as its job was queued at once. Returns the claimed messages
    (the fields hand-off reads, as the claim left them), oldest first."""
    now = now or timezone.now()
    each = share(limit, len(mailbox_ids))
    claimed = []
    with transaction.atomic():
        capped = list(Mailbox.objects.select_for_update().filter(pk__in=list(mailbox_ids), per_minute_cap__isnull=False)
                      .only("id", "per_minute_cap").order_by("pk"))
        free = sorted(set(mailbox_ids) - {m.pk for m in capped})
        if free:
            claimed += _claim_rows(free, each, now)
        for mailbox in capped:  # no more than per_minute_cap hand-offs in any 60 seconds
            latest = _minute(mailbox, now)
            allowance = min(each, mailbox.per_minute_cap - len(latest))
            if allowance <= 0:
                _hold_for_minute_cap(mailbox, latest, now)
            else:
                claimed += _claim_rows([mailbox.pk], allowance, now)
    return sorted(claimed, key=lambda m: (m.scheduled_at, m.pk))


def _claim_rows(mailbox_ids, each, now) -> list:
    """Up to `each` of every mailbox's due messages, oldest first. Each mailbox's are read in the order of
    its waiting messages' index, which stops at `each`: a claim reads what it takes, however long the
    backlog (not every waiting message of the job's mailboxes, sorted). Only mailboxes that may send now
    (active, domain and workspace not paused) have messages claimed: a pause holds the next batch without
    its messages being taken and given back. The claim returns the claimed rows' hand-off fields itself:
    no second read of the messages."""
    table = Message._meta.db_table
    mailboxes, domains = Mailbox._meta.db_table, Mailbox._meta.get_field("domain").related_model._meta.db_table
    workspaces = Mailbox._meta.get_field("workspace").related_model._meta.db_table
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    due = (f"SELECT id FROM {table} WHERE {{mailbox}} AND status IN ('queued', 'scheduled', 'deferred') "
           f"AND (scheduled_at <= %s OR (status <> 'deferred' AND scheduled_at <= %s)) "
           f"ORDER BY scheduled_at, id LIMIT %s{lock}")
    may_send = (f"SELECT b.id FROM {mailboxes} b JOIN {domains} d ON d.id = b.domain_id "
                f"JOIN {workspaces} w ON w.id = b.workspace_id "
                f"WHERE b.id {{among}} AND b.status = 'active' AND NOT d.paused AND NOT w.paused")
    claim = (f"UPDATE {table} SET status = 'sending', lease_expires_at = %s, attempts = attempts + 1, updated_at = %s "
             f"WHERE id IN ({{ids}}) RETURNING {_HAND_OFF_COLUMNS}")
    lease = now + dt.timedelta(seconds=settings.DISPATCH_LEASE_SECONDS)
    window = [now, now + dt.timedelta(seconds=1), each]
    rows = []
    with prepared.cursor() as cursor:
        if connection.vendor == "postgresql":  # one statement for any number of mailboxes (prepared)
            mine = (f"SELECT m.id FROM ({may_send.format(among='= ANY(%s)')}) b, "
                    f"LATERAL ({due.format(mailbox='mailbox_id = b.id')}) m")
            cursor.execute(claim.format(ids=mine), [lease, now, list(mailbox_ids), *window])
            rows = cursor.fetchall()
        else:  # a statement per mailbox where LATERAL and arrays are not to be had
            mine = due.format(mailbox=f"mailbox_id = %s AND mailbox_id IN ({may_send.format(among='= %s')})")
            one = claim.format(ids=mine)
            for mailbox_id in mailbox_ids:
                cursor.execute(one, [lease, now, mailbox_id, mailbox_id, *window])
                rows += cursor.fetchall()
    return _claimed_messages(rows)


# The claim's RETURNING list: the hand-off fields in the model's order, as Model.from_db takes them.
_HAND_OFF = [f for f in Message._meta.concrete_fields if f.name in HAND_OFF_FIELDS]
_HAND_OFF_COLUMNS = ", ".join(f.column for f in _HAND_OFF)


def _claimed_messages(rows) -> list:
    """Messages from RETURNING rows, as the ORM builds them: the backend's and the fields' converters
    applied, the fields hand-off does not read deferred (absent from the instance, loaded on first use)."""
    columns = [f.get_col(Message._meta.db_table) for f in _HAND_OFF]
    converters = [(n, col, [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)])
                  for n, col in enumerate(columns)]
    converters = [(n, col, found) for n, col, found in converters if found]
    build = _instance_from_db if bulk.init_is_heard(Message) else _instance
    messages = []
    for row in rows:
        values = list(row)
        for n, col, found in converters:
            for convert in found:
                values[n] = convert(values[n], col, connection)
        messages.append(build(values))
    return messages


_HAND_OFF_ATTNAMES = [f.attname for f in _HAND_OFF]
# For Model.from_db: every concrete field's name, and where each hand-off field sits among them.
_CONCRETE_ATTNAMES = [f.attname for f in Message._meta.concrete_fields]
_HAND_OFF_SLOTS = [Message._meta.concrete_fields.index(f) for f in _HAND_OFF]


def _instance(values):
    """What `Model.from_db` makes of these values, the other fields deferred, built directly (~6× faster):
    a loaded instance whose `__dict__` holds exactly the loaded fields. Valid while nothing listens to
    Message's init signals (`Model.__init__` would send them)."""
    message = Message.__new__(Message)
    state = message._state = ModelState()
    state.adding, state.db = False, connection.alias
    message.__dict__.update(zip(_HAND_OFF_ATTNAMES, values))
    return message


def _instance_from_db(values):
    full = [DEFERRED] * len(_CONCRETE_ATTNAMES)
    for slot, value in zip(_HAND_OFF_SLOTS, values):
        full[slot] = value
    return Message.from_db(connection.alias, _CONCRETE_ATTNAMES, full)


def _minute(mailbox, now) -> list:
    """Start times of the mailbox's hand-offs in the last 60 seconds, newest first, at most
    `per_minute_cap` of them; one still in flight counts as handed off now."""
    cap = mailbox.per_minute_cap
    in_flight = Message.objects.filter(mailbox_id=mailbox.pk, status="sending").count()
    recent = (Message.objects.filter(mailbox_id=mailbox.pk, status__in=HANDED_OFF_STATUSES,
                                     sent_at__gt=now - dt.timedelta(seconds=60))
              .order_by("-sent_at").values_list("sent_at", flat=True)[:cap])
    return ([now] * in_flight + list(recent))[:cap]


def _hold_for_minute_cap(mailbox, latest, now):
    """The minute is full: due messages wait, with that reason, until the oldest hand-off in it is 60 s old."""
    when = latest[-1] + dt.timedelta(seconds=60, milliseconds=1) if latest else now + dt.timedelta(seconds=1)
    # SKIP LOCKED: a message a cancel holds is left to it (and a cancel never waits on this in a circle).
    held = list(Message.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(mailbox_id=mailbox.pk, status__in=WAITING, scheduled_at__lte=now).select_related("workspace"))
    if not held:
        return
    Message.objects.filter(pk__in=[m.pk for m in held]).update(status="scheduled", scheduled_at=when, updated_at=now)
    for message in held:
        message.scheduled_at = when
    events.emit_many(workspace=held[0].workspace, items=[
        ("message.scheduled", m, {"scheduled_at": when.isoformat(), "reason": "per_minute_cap"}) for m in held])
    transaction.on_commit(lambda: _enqueue_later(mailbox.pk, when))


def _enqueue_later(mailbox_id, when):
    try:
        queue("dispatch").enqueue_at(when, dispatch_mailbox, mailbox_id, job_id=mailbox_job_id(mailbox_id),
                                     result_ttl=0)
    except Exception:  # noqa: BLE001 - Redis down: the messages wait in the database for `reconcile`
        logger.warning("Could not queue the next hand-off of %s; the reconciler will.", mailbox_id, exc_info=True)


def dispatch_message(message_id: str):
    """The job for one message that was due later: sends it, with whatever else its mailbox has due."""
    mailbox_id = Message.objects.filter(pk=message_id).values_list("mailbox_id", flat=True).first()
    if mailbox_id is None:
        return "no such message"
    return dispatch_mailbox(mailbox_id)


def dispatch_mailbox(mailbox_id: str):
    return dispatch_mailboxes([mailbox_id])


def dispatch_mailboxes(mailbox_ids):
    """Hands off the due messages of these mailboxes, a batch at a time, each mailbox over its
    provider connection (kept open between jobs by the worker process)."""
    _starting(mailbox_ids)
    with acting_as(WORKER_ACTOR):
        outcomes = {}
        senders = Senders(mailbox_ids)
        while mailbox_ids:
            each = share(batch_size(), len(mailbox_ids))
            claimed = _claim(mailbox_ids, batch_size())
            for outcome in _hand_off(claimed, senders):
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            # The next batch is claimed of the mailboxes that gave their whole share (they may have more due).
            # A mailbox stopped by a pause gave its messages back: claiming them again would spin. Resume enqueues them.
            taken = collections.Counter(m.mailbox_id for m in claimed)
            mailbox_ids = [pk for pk in mailbox_ids if taken[pk] >= each and pk not in senders.paused]
        return ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())) or "nothing due"


class Senders:
    """What hand-off needs of one job's mailboxes, read once per job: each mailbox with its workspace
    and domain (only the fields hand-off uses), each provider once (its settings decrypted once, not
    per mailbox) and the domains' active DKIM keys. Pauses need no second read: each batch's claim
    takes nothing of a paused mailbox, domain or workspace (one paused between the claim and this
    read is stopped by `check_pauses`).
    `paused` holds the mailboxes stopped so, which the job claims no more."""

    def __init__(self, job_mailboxes=()):
        self.mailboxes, self.keys, self.paused = {}, {}, set()
        self.expected = set(job_mailboxes)

    def for_batch(self, mailbox_ids) -> dict:
        """The batch's mailboxes; the first batch reads every mailbox of the job, as later batches are
        likely to need the others (four statements once, rather than again for each new few)."""
        unknown = set(mailbox_ids) - self.mailboxes.keys()
        if unknown:
            self._load(unknown | (self.expected - self.mailboxes.keys()))
        return self.mailboxes

    def _load(self, ids):
        from providers.models import ProviderConnection

        mailboxes = Mailbox.objects.select_related("workspace", "domain").only(*MAILBOX_FIELDS).in_bulk(ids)
        providers = ProviderConnection.objects.only(*PROVIDER_FIELDS).in_bulk(
            {m.provider_id for m in mailboxes.values()})
        for mailbox in mailboxes.values():
            mailbox.provider = providers[mailbox.provider_id]
        self.mailboxes.update(mailboxes)
        self.keys.update(dkim.active_keys({m.domain_id for m in mailboxes.values()} - self.keys.keys()))


def _hand_off(messages, senders=None):
    """Hands off claimed messages (as `_claim` returns them): each mailbox's as one burst over its
    connection, the mailboxes side by side (`_side_by_side`)."""
    if not messages:
        return []
    senders = senders or Senders()
    mailboxes = senders.for_batch({m.mailbox_id for m in messages})
    for message in messages:
        message.mailbox = mailboxes[message.mailbox_id]
        message.workspace = message.mailbox.workspace
    deadline = time.monotonic() + settings.DISPATCH_LEASE_SECONDS / 2
    by_mailbox = {}
    for message in messages:
        by_mailbox.setdefault(message.mailbox_id, []).append(message)
    by_workspace = {}
    for message in messages:
        by_workspace.setdefault(message.workspace_id, []).append(message)
    blocked = {ws: suppression.suppressed_many(group[0].workspace, [m.to_address for m in group])
               for ws, group in by_workspace.items()}
    outcomes, sent_from, journal = [], set(), Journal()
    try:
        streams = [_hand_off_group(group, senders, journal, deadline, blocked, outcomes, sent_from)
                   for group in by_mailbox.values()]
        _side_by_side(streams, between=journal.flush)
    finally:  # what went out is recorded, whatever stopped the batch (else the reconciler does it)
        try:
            journal.flush()
        finally:
            apply_hand_offs(journal.recorded)
    # A mailbox that sends again loses its last error (read with it, and kept up to date by this worker).
    recovered = [pk for pk in sent_from if mailboxes[pk].last_error]
    if recovered:
        Mailbox.objects.filter(pk__in=recovered).update(last_error="")
        for pk in recovered:
            mailboxes[pk].last_error = ""
    return outcomes


def _side_by_side(streams, *, between):
    """Runs the mailboxes' bursts side by side, in rounds of one step each: every connection gets its next
    write before the worker waits on any server's reply (a stream yields TURN there), so a batch waits
    about one round trip per message of its busiest mailbox rather than one per message. A stream
    that reaches the point between two messages (PAUSE) waits there until every other one has too;
    then `between()` runs once for all of them (the journal is committed) and they go on."""
    ready, paused = list(streams), []
    try:
        while ready or paused:
            if not ready:
                between()
                ready, paused = paused, []
            turned = []
            for stream in ready:
                for marker in stream:
                    (turned if marker is TURN else paused).append(stream)
                    break
            ready = turned
    finally:  # stopped early: every connection still open is dropped by its transport
        for stream in streams:
            stream.close()


class Journal:
    """The journal rows (see HandOff) of accepted messages, written in one statement per round
    (`flush`): each round's rows are committed before any of their connections writes its next
    message's content, so a worker that dies repeats at most the message in flight on each of its
    connections. `recorded` holds the ids of the messages whose rows were written."""

    def __init__(self):
        self.rows, self.recorded = [], []

    def add(self, message, result):
        self.rows.append([message.pk, new_id("evt"), timezone.now(), message.message_id_header,
                          result.provider_message_id, result.response[:2000],
                          json.dumps(_sent_data(message, result))])

    def flush(self):
        rows, self.rows = self.rows, []
        if not rows:
            return
        with prepared.cursor() as cursor:
            if connection.vendor == "postgresql":  # one statement for any number of rows (prepared)
                cursor.execute(_JOURNAL_MANY, [list(column) for column in zip(*rows)])
            else:
                with transaction.atomic():
                    cursor.executemany(_JOURNAL_ONE, rows)
        self.recorded += [row[0] for row in rows]


def _hand_off_group(group, senders, journal, deadline, blocked, outcomes, sent_from):
    """One mailbox's claimed messages, as one burst over its provider connection: a generator of the
    TURN and PAUSE markers `_side_by_side` runs it by. Each accepted message goes to the `journal`,
    which is committed at the next PAUSE, before the next message's content is written."""
    first = group[0]
    try:
        policy.check_pauses(workspace=first.workspace, mailbox=first.mailbox)
    except policy.PolicyRejection as rejection:
        outcomes += [_stopped(message, rejection) for message in group]
        senders.paused.add(first.mailbox_id)
        return
    key = senders.keys.get(first.mailbox.domain_id)

    def outgoing():
        """The group's messages as they go out (each built when the transport is ready for it)."""
        for n, message in enumerate(group):
            if n:
                yield PAUSE  # the last one is in the journal before this one goes
            if time.monotonic() > deadline:  # the lease runs out: give the rest back rather than race a reconciler
                _give_back(group[n:])
                outcomes.append("given back")
                return
            if message.to_address in blocked[message.workspace_id]:
                outcomes.append(_stopped(message, policy.suppressed_rejection(message.workspace, message.to_address)))
                continue
            yield message, _outgoing(message, key)
        yield PAUSE  # ... and before the transport ends the last message

    with contextlib.closing(transport_for(first.mailbox.provider).send_many(outgoing(), turns=True)) as results:
        for item in results:
            if item is TURN or item is PAUSE:
                yield item
                continue
            message, result = item
            if isinstance(result, SendResult):
                journal.add(message, result)
                sent_from.add(first.mailbox_id)
                outcomes.append("sent")
            else:
                outcomes.append(_not_sent(message, result))


def _outgoing(message, key) -> OutgoingMessage:
    if not message.message_id_header:
        message.message_id_header = mime.message_id_header(message)
    return OutgoingMessage(mail_from=message.mailbox.address, rcpt_to=message.to_address,
                           data=mime.build(message, dkim_key=key), message_id=message.message_id_header,
                           mailbox_id=message.mailbox_id)


def _not_sent(message, error) -> str:
    """Records a provider's refusal of one message (the TransportError its transport gave)."""
    if isinstance(error, TransientError):
        return _transient(message, error)
    return _failed(message, error.reply, release=True)


def _give_back(messages):
    Message.objects.filter(pk__in=[m.pk for m in messages], status="sending").update(
        status="queued", lease_expires_at=None, attempts=F("attempts") - 1, updated_at=timezone.now())
    transaction.on_commit(lambda: enqueue_many([(m.pk, None, m.attempts, m.mailbox_id) for m in messages[:1]]))


def _sent_data(message, result):
    return {"mailbox": message.mailbox_id, "provider": message.mailbox.provider.kind,
            "provider_message_id": result.provider_message_id, "response": result.response[:500]}


_JOURNAL_COLUMNS = ("message_id, event_id, sent_at, message_id_header, provider_message_id, provider_response, "
                    "event_data")
_JOURNAL_ONE = f"INSERT INTO {HandOff._meta.db_table} ({_JOURNAL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
_JOURNAL_MANY = (f"INSERT INTO {HandOff._meta.db_table} ({_JOURNAL_COLUMNS}) SELECT * FROM unnest(%s::text[], "
                 f"%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::jsonb[])")


_HAND_OFF_TABLE, _MESSAGE_TABLE, _EVENT_TABLE = HandOff._meta.db_table, Message._meta.db_table, Event._meta.db_table
# Journal rows out, their messages `sent`, their `message.sent` events in: one statement (PostgreSQL).
_APPLY = (f"WITH journal AS (DELETE FROM {_HAND_OFF_TABLE} WHERE message_id = ANY(%s) RETURNING *), "
          f"sent AS (UPDATE {_MESSAGE_TABLE} m SET status = 'sent', sent_at = j.sent_at, "
          f"provider_message_id = j.provider_message_id, provider_response = j.provider_response, "
          f"message_id_header = j.message_id_header, lease_expires_at = NULL, updated_at = %s "
          f"FROM journal j WHERE m.id = j.message_id AND m.status = 'sending' "
          f"RETURNING j.event_id, m.workspace_id, m.id AS message_id, j.sent_at, j.event_data) "
          f"INSERT INTO {_EVENT_TABLE} (id, workspace_id, message_id, type, occurred_at, data) "
          f"SELECT event_id, workspace_id, message_id, 'message.sent', sent_at, event_data FROM sent "
          f"ORDER BY sent_at, message_id RETURNING seq, id, workspace_id, message_id, occurred_at, data::text")


def apply_hand_offs(message_ids) -> int:
    """Applies the journal rows of these messages (see HandOff): each message still `sending` becomes
    `sent` with the provider's answer, and gets its `message.sent` event (webhook deliveries and hooks
    follow as for any event), all in one transaction; the rows go. Returns how many were applied.
    A worker calls it after each claimed batch, the reconciler for the messages of expired leases."""
    message_ids = list(message_ids)
    if not message_ids:
        return 0
    with transaction.atomic():
        if _in_one_statement():
            with prepared.cursor() as cursor:
                cursor.execute(_APPLY, [message_ids, timezone.now()])
                created = [bulk.new(Event, seq=seq, id=pk, workspace_id=workspace_id, message_id=message_id,
                                    type="message.sent", occurred_at=at, data=json.loads(data))
                           for seq, pk, workspace_id, message_id, at, data in cursor.fetchall()]
        else:
            created = _apply_with_the_orm(message_ids)
        events.written(created)
    return len(created)


def _in_one_statement() -> bool:
    return connection.vendor == "postgresql"


def _apply_with_the_orm(message_ids) -> list:
    journal = list(HandOff.objects.select_for_update().filter(message_id__in=message_ids)
                   .order_by("sent_at", "message_id"))
    HandOff.objects.filter(message_id__in=[row.message_id for row in journal]).delete()
    sending = dict(Message.objects.filter(pk__in=[row.message_id for row in journal], status="sending")
                   .values_list("pk", "workspace_id"))
    now = timezone.now()
    for row in journal:
        if row.message_id in sending:
            Message.objects.filter(pk=row.message_id).update(
                status="sent", sent_at=row.sent_at, provider_message_id=row.provider_message_id,
                provider_response=row.provider_response, message_id_header=row.message_id_header,
                lease_expires_at=None, updated_at=now)
    return bulk.insert(Event, [
        bulk.new(Event, id=row.event_id, workspace_id=sending[row.message_id], message_id=row.message_id,
                 type="message.sent", occurred_at=row.sent_at, data=row.event_data)
        for row in journal if row.message_id in sending])


def _stopped(message, rejection):
    """Paused: back to waiting (resume re-enqueues). Suppressed: final, and the slot is given back."""
    with transaction.atomic():
        if rejection.error_code == "suppressed":
            Message.objects.filter(pk=message.pk).update(status="suppressed", lease_expires_at=None,
                                                         updated_at=timezone.now())
            caps.release_capacity(mailbox_id=message.mailbox_id, day=message.reserved_day, hour=message.reserved_hour)
            events.emit(workspace=message.workspace, type="message.suppressed", message=message,
                        data={"stage": "before_handoff", "reason": rejection.details.get("reason")})
            audit.record(workspace=message.workspace, action="message.suppressed", obj=message,
                         before={"status": "queued"}, after={"status": "suppressed", "stage": "before_handoff"})
            return "suppressed"
        Message.objects.filter(pk=message.pk).update(status="queued", lease_expires_at=None,
                                                     attempts=F("attempts") - 1, updated_at=timezone.now())
    return f"waiting: {rejection.error_code}"


def _failed(message, reply, *, release):
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(status="failed", provider_response=reply[:2000],
                                                     lease_expires_at=None, updated_at=timezone.now())
        if release:
            caps.release_capacity(mailbox_id=message.mailbox_id, day=message.reserved_day, hour=message.reserved_hour)
        Mailbox.objects.filter(pk=message.mailbox_id).update(last_error=reply[:2000])
        message.mailbox.last_error = reply[:2000]
        events.emit(workspace=message.workspace, type="message.failed", message=message,
                    data={"mailbox": message.mailbox_id, "reply": reply[:500]})
        audit.record(workspace=message.workspace, action="message.failed", obj=message,
                     after={"mailbox": message.mailbox_id, "reply": reply[:500]})
    return "failed"


def _transient(message, exc):
    delays = retry_delays()
    attempt = message.attempts
    on_this_mailbox = attempt - message.decision.get("attempts_before", 0)
    if on_this_mailbox <= len(delays):
        wait = max(delays[on_this_mailbox - 1], min(getattr(exc, "retry_after", None) or 0, MAX_RETRY_AFTER_SECONDS))
        when = timezone.now() + dt.timedelta(seconds=wait)
        with transaction.atomic():
            Message.objects.filter(pk=message.pk).update(status="deferred", scheduled_at=when,
                                                         provider_response=exc.reply[:2000], lease_expires_at=None,
                                                         updated_at=timezone.now())
            Mailbox.objects.filter(pk=message.mailbox_id).update(last_error=exc.reply[:2000])
            message.mailbox.last_error = exc.reply[:2000]
            events.emit(workspace=message.workspace, type="message.deferred", message=message,
                        data={"mailbox": message.mailbox_id, "reply": exc.reply[:500], "attempt": attempt,
                              "retry_at": when.isoformat()})
            transaction.on_commit(lambda: enqueue(message.pk, when, attempts=attempt))
        return "deferred"
    if not message.pinned and _fail_over(message, exc):
        return "failed over"
    return _failed(message, exc.reply, release=True)


def _fail_over(message, exc) -> bool:
    """Moves an unpinned message (and its reservation) to another eligible mailbox of its pool."""
    from mailboxes.models import Pool

    pool = Pool.objects.filter(pk=message.pool_id).first()
    if pool is None:
        return False
    tried = set(message.decision.get("failed_mailboxes", [])) | {message.mailbox_id}
    request = policy.SendRequest(to=message.to_address, pool=pool, workload=message.workload)
    for _ in range(5):
        try:
            with transaction.atomic():
                decision = policy.decide(workspace=message.workspace, request=request, exclude=tried)
                caps.release_capacity(mailbox_id=message.mailbox_id, day=message.reserved_day, hour=message.reserved_hour)
                record = {**decision.as_dict(), "failed_mailboxes": sorted(tried),
                          "failover_from": message.mailbox_id, "failover_reply": exc.reply[:300],
                          "attempts_before": message.attempts}
                Message.objects.filter(pk=message.pk).update(
                    mailbox=decision.mailbox, from_address=decision.mailbox.address, reserved_day=decision.day,
                    reserved_hour=decision.hour,
                    scheduled_at=decision.scheduled_at, status="queued", message_id_header="",
                    lease_expires_at=None, decision=record, updated_at=timezone.now())
                events.emit(workspace=message.workspace, type="message.deferred", message=message,
                            data={"mailbox": message.mailbox_id, "reply": exc.reply[:500],
                                  "failover_to": decision.mailbox.pk})
                audit.record(workspace=message.workspace, action="message.failed_over", obj=message,
                             before={"mailbox": message.mailbox_id}, after=record)
                transaction.on_commit(lambda: enqueue(message.pk, decision.scheduled_at, attempts=message.attempts))
            return True
        except policy.LostRace:
            continue
        except policy.PolicyRejection:
            return False
    return False


def reconcile(now=None) -> dict:
    """Re-enqueues due waiting messages that no live job covers; returns expired leases to the queue.

    A message of an expired lease that its provider had accepted (its journal row is there: the worker
    died before applying it) is recorded `sent`, not queued again; `recorded` counts those. A message
    is covered by a live job of its own (a later attempt) or of its mailbox; `enqueued` counts the
    messages that got a job. A job that let a lease expire is dead, though RQ lists it as started until
    its own timeout: a live job applies its journal and gives its claimed messages back before their
    lease ends."""
    now = now or timezone.now()
    with acting_as(Actor("system", "", "reconciler")):
        leases = Message.objects.filter(status="sending", lease_expires_at__lt=now)
        lapsed = list(leases.values_list("pk", "mailbox_id"))
        recorded = apply_hand_offs([pk for pk, _ in lapsed])
        expired = leases.filter(pk__in=[pk for pk, _ in lapsed]).update(status="queued", lease_expires_at=None,
                                                                        updated_at=now)
        due = (Message.objects.filter(status__in=WAITING, scheduled_at__lte=now)
               .filter(workspace__paused=False, mailbox__status="active", mailbox__domain__paused=False)
               .values_list("pk", "attempts", "mailbox_id").order_by("scheduled_at"))
        covered_mailboxes, covered_messages = _live_jobs(dead_mailboxes={m for _, m in lapsed},
                                                         dead_messages={pk for pk, _ in lapsed})
        uncovered = [(pk, mailbox_id) for pk, attempts, mailbox_id in due.iterator(chunk_size=2000)
                     if mailbox_id not in covered_mailboxes and pk not in covered_messages]
        mailboxes = sorted({mailbox_id for _, mailbox_id in uncovered})
        if mailboxes:
            enqueue_many([(None, None, 0, mailbox_id) for mailbox_id in mailboxes], force=True)
    return {"recorded": recorded, "expired_leases": expired, "enqueued": len(uncovered)}


def _live_jobs(dead_mailboxes=(), dead_messages=()):
    """(mailbox ids, message ids) that queued, scheduled, deferred or running dispatch jobs will handle;
    a running job that holds one of `dead_mailboxes` or `dead_messages` (an expired lease) is not live."""
    from rq.job import Job
    from rq.registry import DeferredJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    q = queue("dispatch")
    waiting = set(q.get_job_ids())
    for registry in (ScheduledJobRegistry, DeferredJobRegistry):
        waiting.update(registry(queue=q).get_job_ids())
    running = set(StartedJobRegistry(queue=q).get_job_ids()) - waiting
    mailboxes, messages = set(), set()
    for job in Job.fetch_many(sorted(waiting | running), connection=q.connection):
        if job is None or not job.args:
            continue
        if job.func_name.endswith("dispatch_mailboxes"):
            covers, into, dead = set(job.args[0]), mailboxes, dead_mailboxes
        elif job.func_name.endswith("dispatch_mailbox"):
            covers, into, dead = {job.args[0]}, mailboxes, dead_mailboxes
        elif job.func_name.endswith("dispatch_message"):
            covers, into, dead = {job.args[0]}, messages, dead_messages
        else:
            continue
        if job.id in running and not covers.isdisjoint(dead):
            continue
        into.update(covers)
    return mailboxes, messages


def enqueue_waiting(*, workspace=None, mailbox=None, domain=None):
    """After a resume: queue what was waiting on it (after commit)."""
    q = Q(status__in=WAITING)
    if workspace is not None:
        q &= Q(workspace=workspace)
    if mailbox is not None:
        q &= Q(mailbox=mailbox)
    if domain is not None:
        q &= Q(mailbox__domain=domain)
    rows = list(Message.objects.filter(q).values_list("pk", "scheduled_at", "attempts", "mailbox_id"))
    transaction.on_commit(lambda: enqueue_many(rows))
    return len(rows)
