"""Which mailbox sends: candidates of a pool, ordered by the pool's strategy (contract §4.4).

Candidates are ordered in SQL; a `Planner` locks them a chunk at a time (SKIP LOCKED) as sends
need them and places each send on the best locked mailbox with room, so a batch of a thousand
sends costs a handful of statements and a pool of thousands of mailboxes costs about as much
per send as a pool of ten.
"""

import heapq
import random
from collections import deque

from django.db import OperationalError, transaction
from django.db.models import F

from controlplane.api.errors import PolicyRejection
from mailboxes.models import Mailbox, Pool
from mailboxes.services import caps

CHUNK = 16
DEADLOCK_DETECTED = "40P01"  # PostgreSQL's SQLSTATE for the side of a deadlock it fails

# Columns placement never reads (health state, diagnostics, DNS check results, timestamps): left out
# of the candidate reads, which a batch makes for up to a thousand mailboxes. Tested: nothing reads one
# of them afterwards (it would cost a statement per mailbox).
_HEALTH_AND_TIMESTAMPS = ("health_warning", "health_warning_rules", "breaker_rule", "resume_at", "health_since",
                          "created_at", "updated_at")  # on mailboxes and domains alike
UNUSED_IN_PLANNING = (*_HEALTH_AND_TIMESTAMPS, "last_error", *(f"domain__{f}" for f in (
    *_HEALTH_AND_TIMESTAMPS, "checked_at", "checks", "check_pause_reason")))


def candidates():
    """Mailboxes as placement reads them: with their ramp and domain, without the columns it never reads."""
    return Mailbox.objects.select_related("warmup_profile", "domain").defer(*UNUSED_IN_PLANNING)


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


def _lock(ids, *, skip_locked=True):
    rows = candidates().select_for_update(of=("self",), skip_locked=skip_locked).filter(pk__in=list(ids))
    return {m.pk: m for m in rows}


class Planner:
    """Places sends of one pool, all asking for the same `earliest` moment, on its mailboxes in the
    order the pool's strategy gives.

    round_robin: least recently used first; priority: highest priority first, then least recently
    used; weighted: a random pick in proportion to weight for each send. Candidates are read without
    locks to skip those with no room, then locked as sends need them (SKIP LOCKED: one held by another
    transaction is passed over); the locks are held until the caller commits."""

    def __init__(self, pool: Pool, *, ledger: caps.Ledger, earliest, expected=1, exclude=(), wait=False):
        self.pool = pool
        self.ledger = ledger
        self.earliest = earliest
        self.expected = max(expected, 1)
        self.wait = wait
        self.ids = _ordered_ids(pool, exclude)
        self.queue = deque(self.ids)
        self.used = len(self.ids)
        self.rank = {pk: n for n, pk in enumerate(self.ids)}
        self.locked = {}
        self.heap = []  # (sort key, pk) of locked mailboxes that may still have room
        self.full = set()
        self.passed_over = False  # a candidate with room was locked by another transaction
        self.held = deque()  # those candidates, in order: with `wait`, waited for once nothing else has room

    def _key(self, mailbox):
        rank = self.rank[mailbox.pk]
        return (-mailbox.priority, rank) if self.pool.strategy == "priority" else (rank,)

    def _with_room(self, ids):
        """Those of `ids` (in order) that look like they can send on `earliest`'s day (read without locks)."""
        by_id = {m.pk: m for m in candidates().filter(pk__in=ids)}
        chunk = [by_id[pk] for pk in ids if pk in by_id]
        usage = caps.usage_for(chunk, self.earliest)
        return [m.pk for m in chunk if usage[m.pk]["remaining_today"] > 0 and caps.slot_on_day(m, self.earliest)]

    def _take(self, mailboxes):
        fresh = [m for m in mailboxes if m.status == "active" and not m.domain.paused]
        for mailbox in self.ledger.add(fresh, earliest=self.earliest):
            self.locked[mailbox.pk] = mailbox
            heapq.heappush(self.heap, (self._key(mailbox), mailbox.pk))

    def _lock_more(self, need):
        """Locks up to `need` more candidates with room; False when none is left to lock."""
        if not self.locked and not self.full and need == 1 and self.queue:
            # A single send usually takes the first candidate: lock it straight away (the ledger then
            # says whether it has room) rather than reading a chunk of candidates' usage first.
            first = self.queue.popleft()
            got = _lock([first])
            if got:
                self._take(got.values())
                return True
            self.passed_over = True
            self.held.append(first)
        while self.queue:
            taken = [self.queue.popleft() for _ in range(min(len(self.queue), max(need, CHUNK)))]
            # Sends enough for every one taken (a batch): lock them outright, the ledger tells which have
            # room; otherwise read first, so that mailboxes without room are not locked for nothing.
            roomy = taken if need >= len(taken) else self._with_room(taken)
            want, rest = roomy[:need], roomy[need:]
            self.queue.extendleft(reversed(rest))
            if not want:
                continue
            got = _lock(want)
            if len(got) < len(want):
                self.passed_over = True
                self.held.extend(pk for pk in want if pk not in got)
            self._take([got[pk] for pk in want if pk in got])
            if got:
                return True
        return False

    def _wait_for_held(self) -> bool:
        """With `wait`, once no locked candidate has room and none is left to try: waits for the first
        candidate another transaction held, then takes whichever others are free by then, so the sends
        still spread over the pool. False when there is none.

        This transaction may already hold mailboxes (full ones), and a transaction waiting for one of
        those may hold the one waited for here: the wait runs in a savepoint, and when PostgreSQL
        breaks such a deadlock by failing this side, the round gives up these sends (the caller
        places them again in its next round) instead of failing the whole request."""
        held = [pk for pk in dict.fromkeys(self.held) if pk not in self.locked]
        # Holding nothing yet (every candidate was held): the first in order, as it is; else only those
        # that look like they have room (read without locks), as a full one is what stopped this one.
        roomy = held if not self.locked else self._with_room(held)
        self.held.clear()
        if not roomy:
            return False
        try:
            with transaction.atomic():
                got = _lock(roomy[:1], skip_locked=False)
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != DEADLOCK_DETECTED:
                raise
            return False
        if len(roomy) > 1:
            got.update(_lock(roomy[1:]))
        self.held.extend(pk for pk in roomy[1:] if pk not in got)
        self._take([got[pk] for pk in roomy if pk in got])
        return bool(got) or bool(self.held)

    def _reserve(self, mailbox):
        try:
            reservation = self.ledger.reserve(mailbox, self.earliest)
        except caps.NoCapacity:
            self.full.add(mailbox.pk)
            return None
        self.used += 1
        self.rank[mailbox.pk] = self.used
        return reservation

    def _sticky(self, pk):
        if pk not in self.rank or pk in self.full:
            return None
        if pk not in self.locked:
            self._take(_lock([pk]).values())
            if pk not in self.locked:
                return None
        self.heap = [(key, other) for key, other in self.heap if other != pk]
        heapq.heapify(self.heap)
        reservation = self._reserve(self.locked[pk])
        if reservation is None:
            return None
        heapq.heappush(self.heap, (self._key(self.locked[pk]), pk))
        return self.locked[pk], reservation, True

    def _pop(self):
        if self.pool.strategy == "weighted":
            choices = [pk for _, pk in self.heap]
            pk = random.choices(choices, weights=[max(self.locked[c].weight, 1) for c in choices])[0]
            self.heap.remove(next(entry for entry in self.heap if entry[1] == pk))
            heapq.heapify(self.heap)
            return pk
        return heapq.heappop(self.heap)[1]

    def place(self, *, sticky_id=None):
        """(mailbox, reservation, sticky?) for one send, else a PolicyRejection, else None (retry later)."""
        if not self.ids:
            return PolicyRejection("no_eligible_mailbox",
                                   f"Pool “{self.pool.name}” has no active mailbox on an unpaused domain.")
        if sticky_id is not None:
            placed = self._sticky(sticky_id)
            if placed:
                return placed
        if not self.locked:
            self._lock_more(min(self.expected, len(self.ids)))
        while True:
            while self.heap:
                pk = self._pop()
                mailbox = self.locked[pk]
                reservation = self._reserve(mailbox)
                if reservation is not None:
                    heapq.heappush(self.heap, (self._key(mailbox), pk))
                    return mailbox, reservation, False
            if not self._lock_more(1 if self.expected == 1 else CHUNK) and not (self.wait and self._wait_for_held()):
                break
        if self.passed_over:
            return None
        return self._exhausted()

    def _exhausted(self):
        soonest = [t for t in (caps.next_available_at(m, self.earliest)
                               for m in Mailbox.objects.filter(pk__in=self.ids[:50]).select_related("warmup_profile"))
                   if t]
        return PolicyRejection("cap_exhausted", f"Every mailbox of pool “{self.pool.name}” is at its cap or outside "
                               "its send window today.",
                               next_available_at=_iso(min(soonest)) if soonest else None)


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None
