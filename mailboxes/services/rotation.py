"""Which mailbox sends: candidates of a pool, ordered by the pool's strategy (contract §4.4).

Candidates are ordered in SQL and checked for room a few at a time, so a pool of
thousands of mailboxes costs about as much per send as a pool of ten.
"""

import random

from django.db.models import F

from mailboxes.models import Mailbox, Pool
from mailboxes.services import caps

CHUNK = 16


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


def _ordered_ids(pool: Pool, exclude):
    base = eligible(Mailbox.objects.filter(pools=pool)).exclude(pk__in=list(exclude))
    if pool.strategy == "weighted":
        rows = list(base.filter(weight__gt=0).values_list("pk", "weight"))
        # Weighted random permutation (Efraimidis–Spirakis): heavier mailboxes tend to come first.
        keyed = sorted(((random.random() ** (1.0 / weight), pk) for pk, weight in rows), reverse=True)
        return [pk for _, pk in keyed]
    order = [F("last_used_at").asc(nulls_first=True), "pk"]
    if pool.strategy == "priority":
        order = ["-priority"] + order
    return list(base.order_by(*order).values_list("pk", flat=True))


def candidates(pool: Pool, *, earliest, exclude=(), sticky_mailbox_id=None):
    """(ids of every eligible mailbox, a generator of those with room on `earliest`'s local day, best first).

    No locks are taken here; the caller locks the one it picks.
    """
    ids = _ordered_ids(pool, exclude)
    if sticky_mailbox_id in ids:
        ids.remove(sticky_mailbox_id)
        ids.insert(0, sticky_mailbox_id)

    def generate():
        for start in range(0, len(ids), CHUNK):
            chunk_ids = ids[start:start + CHUNK]
            by_id = {m.pk: m for m in Mailbox.objects.filter(pk__in=chunk_ids).select_related("warmup_profile", "domain")}
            chunk = [by_id[pk] for pk in chunk_ids if pk in by_id]
            usage = caps.usage_for(chunk, earliest)
            for mailbox in chunk:
                if usage[mailbox.pk]["remaining_today"] > 0 and caps.slot_on_day(mailbox, earliest):
                    mailbox.usage_seen = usage[mailbox.pk]
                    yield mailbox

    return ids, generate()


def lock_first_free(mailboxes):
    """Locks the first mailbox no other transaction holds (SKIP LOCKED), else waits for the first one.

    A transaction holds at most one mailbox lock, so intakes never deadlock on each other.
    """
    seen = []
    for mailbox in mailboxes:
        seen.append(mailbox)
        locked = (Mailbox.objects.select_for_update(of=("self",), skip_locked=True)
                  .select_related("warmup_profile", "domain").filter(pk=mailbox.pk).first())
        if locked is not None:
            return locked
    return lock(seen[0].pk) if seen else None


def lock(mailbox_id):
    return Mailbox.objects.select_for_update(of=("self",)).select_related("warmup_profile", "domain").get(pk=mailbox_id)
