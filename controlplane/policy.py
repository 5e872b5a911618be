"""The sending policy: one service that intake and dispatch both call (contract §4).

Order: workspace/domain/mailbox pause → suppression → mailbox choice → capacity reservation → pacing.
Rejections are values (`PolicyRejection`) rendered as 422 by the API's exception handler.
"""

import datetime as dt
import itertools
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

    def as_dict(self):
        return {
            "mailbox": self.mailbox.pk,
            "from": self.mailbox.address,
            "pool": getattr(self.pool, "pk", None),
            "reason": self.reason,
            "local_day": self.day.isoformat(),
            "scheduled_at": self.scheduled_at.isoformat(),
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


def check_suppression(*, workspace, address):
    if not suppression.is_suppressed(workspace, address):  # the one index probe on the hot path
        return
    entry = suppression.find(workspace, address)
    if entry is not None:
        raise PolicyRejection("suppressed", f"{address} is on the suppression list ({entry.reason}).",
                              reason=entry.reason)


def _no_capacity(mailbox, exc: caps.NoCapacity):
    messages = {
        "daily_cap": f"{mailbox.address} has reached today's cap",
        "weekly_cap": f"{mailbox.address} has reached this week's cap",
        "outside_send_window": f"{mailbox.address} cannot send again today (outside its send window)",
        "pacing": f"{mailbox.address} has no paced slot left in today's window",
    }
    return PolicyRejection("cap_exhausted", messages[exc.reason] + ".", next_available_at=_iso(exc.next_available_at),
                           limit=exc.reason)


def sticky_mailbox_id(workspace, thread_key):
    if not thread_key:
        return None
    return (Message.objects.filter(workspace=workspace, thread_key=thread_key, mailbox__isnull=False)
            .exclude(status__in=["cancelled", "suppressed"]).order_by("-id").values_list("mailbox_id", flat=True).first())


def decide(*, workspace, request: SendRequest, now=None, exclude=()) -> Decision:
    """Chooses a mailbox and reserves its capacity. Call inside a transaction: the chosen mailbox's
    row stays locked until it commits. Raises PolicyRejection, or LostRace to be retried."""
    now = now or timezone.now()
    earliest = max(now, request.send_at) if request.send_at else now
    check_pauses(workspace=workspace)

    if request.from_address:
        mailbox = Mailbox.objects.for_workspace(workspace).filter(address=request.from_address.lower()).first()
        if mailbox is None:
            raise PolicyRejection("no_eligible_mailbox", f"{request.from_address} is not a mailbox of this workspace.")
        mailbox = rotation.lock(mailbox.pk)
        check_pauses(workspace=workspace, mailbox=mailbox)
        check_suppression(workspace=workspace, address=request.to)
        try:
            day, moment, seen = caps.reserve_capacity(mailbox=mailbox, earliest=earliest, now=now)
        except caps.NoCapacity as exc:
            raise _no_capacity(mailbox, exc)
        return Decision(mailbox, None, day, moment, "pinned", _seen(seen))

    check_suppression(workspace=workspace, address=request.to)
    pool = rotation.pool_for(workspace, pool=request.pool, workload=request.workload)
    if pool is None:
        raise PolicyRejection("no_eligible_mailbox", f"No pool serves the “{request.workload}” workload; "
                              "add the workload to a pool or pass `pool` or `from`.")
    sticky = sticky_mailbox_id(workspace, request.thread_key)
    considered, ordered = rotation.candidates(pool, earliest=earliest, exclude=exclude, sticky_mailbox_id=sticky)
    first = next(ordered, None)
    if first is None:
        if not considered:
            raise PolicyRejection("no_eligible_mailbox",
                                  f"Pool “{pool.name}” has no active mailbox on an unpaused domain.")
        soonest = [t for t in (caps.next_available_at(m, earliest)
                               for m in Mailbox.objects.filter(pk__in=considered[:50]).select_related("warmup_profile"))
                   if t]
        raise PolicyRejection("cap_exhausted", f"Every mailbox of pool “{pool.name}” is at its cap or outside its "
                              "send window today.", next_available_at=_iso(min(soonest) if soonest else None))
    mailbox = rotation.lock_first_free(itertools.chain([first], itertools.islice(ordered, 7)))
    if mailbox.status != "active" or mailbox.domain.paused:
        raise LostRace()
    try:
        day, moment, seen = caps.reserve_capacity(mailbox=mailbox, earliest=earliest, now=now)
    except caps.NoCapacity:
        raise LostRace()
    reason = "thread_key" if sticky == mailbox.pk else f"rotation:{pool.strategy}"
    return Decision(mailbox, pool, day, moment, reason, {**_seen(seen), "eligible_mailboxes": len(considered)})


def _seen(usage):
    return {"usage_seen": {k: usage[k] for k in ("today", "this_week", "effective_cap_today", "remaining_today")}}


def recheck_before_handoff(message: Message):
    """What stops a waiting message right before hand-off: (code, message) or None."""
    try:
        check_pauses(workspace=message.workspace, mailbox=message.mailbox)
        check_suppression(workspace=message.workspace, address=message.to_address)
    except PolicyRejection as rejection:
        return rejection
    return None
