"""The sending policy: one service that intake and dispatch both call (contract §4).

Order: workspace/domain/mailbox pause → suppression → mailbox choice → capacity reservation → pacing.
Rejections are values (`PolicyRejection`) rendered as 422 by the API's exception handler.
"""

import datetime as dt
from dataclasses import dataclass, field

from django.utils import timezone

from controlplane.api.errors import PolicyRejection
from controlplane.models import Message
from mailboxes.models import Mailbox
from mailboxes.services import caps, rotation
from suppression import services as suppression


class LostRace(Exception):
    """The chosen mailbox filled up between choosing and locking it: roll back and choose again."""


@dataclass
class SendRequest:
    to: str
    from_address: str = ""
    pool: object = None
    workload: str = "cold"
    send_at: dt.datetime | None = None
    thread_key: str = ""


@dataclass
class Decision:
    mailbox: Mailbox
    pool: object
    day: dt.date
    scheduled_at: dt.datetime
    reason: str
    details: dict = field(default_factory=dict)
    hour: dt.datetime | None = None  # the clock hour its reservation holds against `hourly_cap`
    wait_reason: str = ""  # why `scheduled_at` is later than asked ("" when it is not)

    def as_dict(self):
        return {
            "mailbox": self.mailbox.pk,
            "from": self.mailbox.address,
            "pool": getattr(self.pool, "pk", None),
            "reason": self.reason,
            "local_day": self.day.isoformat(),
            "scheduled_at": self.scheduled_at.isoformat(),
            **({"wait_reason": self.wait_reason} if self.wait_reason else {}),
            **self.details,
        }


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def check_pauses(*, workspace, mailbox=None):
    if workspace.paused:
        raise PolicyRejection("workspace_paused", f"The workspace is paused: {workspace.paused_reason or 'no reason given'}.")
    if mailbox is not None:
        if mailbox.domain.paused:
            raise PolicyRejection("domain_paused",
                                  f"{mailbox.domain.name} is paused: {mailbox.domain.paused_reason or 'no reason given'}.")
        if mailbox.status != "active":
            raise PolicyRejection("mailbox_paused", f"{mailbox.address} is {mailbox.status}"
                                  + (f": {mailbox.paused_reason}." if mailbox.paused_reason else "."))


def _no_capacity(mailbox, exc: caps.NoCapacity):
    messages = {
        "daily_cap": f"{mailbox.address} has reached today's cap",
        "weekly_cap": f"{mailbox.address} has reached this week's cap",
        "outside_send_window": f"{mailbox.address} cannot send again today (outside its send window)",
        "pacing": f"{mailbox.address} has no paced slot left in today's window",
        "per_minute_cap": f"{mailbox.address} has no slot left in today's window at its per-minute cap",
        "hourly_cap": f"{mailbox.address} has no hour left in today's window under its hourly cap",
    }
    return PolicyRejection("cap_exhausted", messages[exc.reason] + ".", next_available_at=_iso(exc.next_available_at),
                           limit=exc.reason)


def sticky_mailbox_ids(workspace, thread_keys) -> dict:
    """{thread_key: the mailbox of the thread's latest live message} in one query."""
    keys = sorted({k for k in thread_keys if k})
    if not keys:
        return {}
    rows = (Message.objects.filter(workspace=workspace, thread_key__in=keys, mailbox__isnull=False)
            .exclude(status__in=["cancelled", "suppressed"]).order_by("thread_key", "-id")
            .values_list("thread_key", "mailbox_id"))
    found = {}
    for key, mailbox_id in rows:
        found.setdefault(key, mailbox_id)
    return found


def decide(*, workspace, request: SendRequest, now=None, exclude=()) -> Decision:
    """Chooses a mailbox and reserves its capacity for one send (see `decide_many`).
    Raises PolicyRejection, or LostRace to be retried."""
    result = decide_many(workspace=workspace, requests=[request], now=now, exclude=exclude, wait=True)[0]
    if isinstance(result, PolicyRejection):
        raise result
    if result is None:
        raise LostRace()
    return result


def decide_many(*, workspace, requests, now=None, exclude=(), wait=False) -> list:
    """The policy for many sends at once, in order; one result per request: a Decision, a
    PolicyRejection, or None when every mailbox that could take it was locked by another
    transaction (retry it in a new transaction).

    Call inside a transaction: the chosen mailboxes stay locked until it commits and their
    reservations are written before this returns. Pinned mailboxes are locked first, in id order
    (waiting); rotation locks SKIP LOCKED, so concurrent intakes spread over a pool and never deadlock.
    With `wait`, a pool whose every free-looking mailbox is locked waits for the first one."""
    now = now or timezone.now()
    results = [None] * len(requests)
    if not requests:
        return results
    try:
        check_pauses(workspace=workspace)
    except PolicyRejection as rejection:
        return [rejection] * len(requests)
    earliest = [max(now, r.send_at) if r.send_at else now for r in requests]
    ledger = caps.Ledger(now=now)
    pinned = _lock_pinned(workspace, {r.from_address.lower() for r in requests if r.from_address})
    pinned = {m.address: m for m in ledger.add(pinned.values(), earliest=min(earliest), latest=max(earliest))}
    blocked = suppression.suppressed_many(workspace, [r.to for r in requests])
    groups = {}
    for i, request in enumerate(requests):
        if request.from_address:
            mailbox = pinned.get(request.from_address.lower())
            results[i] = _decide_pinned(workspace, request, mailbox, earliest[i], ledger, blocked)
        elif request.to in blocked:
            results[i] = suppressed_rejection(workspace, request.to)
        else:
            pool_key = (request.pool, None) if request.pool is not None else (None, request.workload)
            groups.setdefault((pool_key, earliest[i]), []).append(i)
    if groups:
        sticky = sticky_mailbox_ids(workspace, [requests[i].thread_key for group in groups.values() for i in group])
        named = {}
        for ((pool, workload), moment), indexes in groups.items():
            pool = pool or named.setdefault(workload, rotation.pool_for(workspace, workload=workload))
            if pool is None:
                rejection = PolicyRejection("no_eligible_mailbox", f"No pool serves the “{workload}” workload; "
                                            "add the workload to a pool or pass `pool` or `from`.")
                for i in indexes:
                    results[i] = rejection
                continue
            planner = rotation.Planner(pool, ledger=ledger, earliest=moment, expected=len(indexes),
                                       exclude=exclude, wait=wait)
            for i in indexes:
                results[i] = _decide_pooled(planner, requests[i], moment, sticky)
    ledger.save()
    return results


def _lock_pinned(workspace, addresses) -> dict:
    if not addresses:
        return {}
    rows = (rotation.candidates().for_workspace(workspace).filter(address__in=addresses)
            .select_for_update(of=("self",)).order_by("pk"))
    return {m.address: m for m in rows}


def suppressed_rejection(workspace, address):
    """The 422 `suppressed` for an address found on the list, naming the entry's reason."""
    entry = suppression.find(workspace, address)
    if entry is None:  # removed since the probe
        return PolicyRejection("suppressed", f"{address} is on the suppression list.", reason="")
    where = "agency-wide suppression list" if entry.scope == "global" else "suppression list"
    return PolicyRejection("suppressed", f"{address} is on the {where} ({entry.reason}).", reason=entry.reason,
                           scope=entry.scope, suppression=entry.pk)


def _decide_pinned(workspace, request, mailbox, earliest, ledger, blocked):
    if mailbox is None:
        return PolicyRejection("no_eligible_mailbox", f"{request.from_address} is not a mailbox of this workspace.")
    try:
        check_pauses(workspace=workspace, mailbox=mailbox)
    except PolicyRejection as rejection:
        return rejection
    if request.to in blocked:
        return suppressed_rejection(workspace, request.to)
    try:
        reservation = ledger.reserve(mailbox, earliest)
    except caps.NoCapacity as exc:
        return _no_capacity(mailbox, exc)
    return _decision(mailbox, None, reservation, "pinned", request, earliest)


def _decide_pooled(planner, request, earliest, sticky):
    placed = planner.place(sticky_id=sticky.get(request.thread_key))
    if not isinstance(placed, tuple):
        return placed
    mailbox, reservation, was_sticky = placed
    if request.thread_key:
        sticky[request.thread_key] = mailbox.pk
    reason = "thread_key" if was_sticky else f"rotation:{planner.pool.strategy}"
    decision = _decision(mailbox, planner.pool, reservation, reason, request, earliest)
    decision.details["eligible_mailboxes"] = len(planner.ids)
    return decision


def _decision(mailbox, pool, reservation, reason, request, earliest):
    decision = Decision(mailbox, pool, reservation.day, reservation.moment, reason, _seen(reservation.usage_seen))
    decision.hour = reservation.hour
    decision.wait_reason = _wait_reason(request, reservation, earliest)
    return decision


def _seen(usage):
    return {"usage_seen": {k: usage[k] for k in ("today", "this_week", "effective_cap_today", "remaining_today")}}


def _wait_reason(request, reservation, earliest):
    """Why a send waits: its own `send_at`, the send window, pacing, `per_minute_cap` or `hourly_cap`."""
    if reservation.reason:
        return reservation.reason
    if request.send_at and reservation.moment == earliest:
        return "send_at"
    return ""
