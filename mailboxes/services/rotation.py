"""Which mailbox sends: candidates of a pool, ordered by the pool's strategy (contract §4.4)."""

import random

from mailboxes.models import Mailbox, Pool
from mailboxes.services import caps


def eligible(queryset):
    """Active mailboxes of unpaused domains."""
    return queryset.filter(status="active", domain__paused=False)


def pool_for(workspace, *, pool=None, workload="cold"):
    if pool is not None:
        return pool
    for candidate in Pool.objects.for_workspace(workspace).order_by("name"):
        if workload in (candidate.workloads or []):
            return candidate
    return None


def candidates(pool: Pool, *, earliest, exclude=(), sticky_mailbox_id=None):
    """Mailboxes of the pool with room on `earliest`'s local day, best first (no locks taken)."""
    mailboxes = list(
        eligible(pool.mailboxes.all()).exclude(pk__in=list(exclude)).select_related("warmup_profile", "domain")
    )
    usage = caps.usage_for(mailboxes, earliest)
    with_room = [m for m in mailboxes if usage[m.pk]["remaining_today"] > 0 and caps.slot_on_day(m, earliest)]
    if pool.strategy == "priority":
        ordered = sorted(with_room, key=lambda m: (-m.priority, m.last_used_at is not None, m.last_used_at or 0))
    elif pool.strategy == "weighted":
        ordered = _weighted_order(with_room)
    else:
        ordered = sorted(with_room, key=lambda m: (m.last_used_at is not None, m.last_used_at or 0))
    if sticky_mailbox_id:
        sticky = [m for m in ordered if m.pk == sticky_mailbox_id]
        ordered = sticky + [m for m in ordered if m.pk != sticky_mailbox_id]
    return ordered, mailboxes, usage


def _weighted_order(mailboxes):
    """A weighted random permutation (Efraimidis–Spirakis): heavier mailboxes tend to come first."""
    keyed = [(random.random() ** (1.0 / max(m.weight, 1)), m) for m in mailboxes if m.weight > 0]
    return [m for _, m in sorted(keyed, key=lambda pair: pair[0], reverse=True)]


def lock(mailbox_id):
    return Mailbox.objects.select_for_update(of=("self",)).select_related("warmup_profile", "domain").get(pk=mailbox_id)
