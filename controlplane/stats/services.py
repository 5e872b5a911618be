"""Reading and folding the daily counts.

`daily` answers in two queries whatever the number of messages: the folded rows of the days asked for, and
the changes not folded yet (at most about a minute's worth while the `fold` job runs).
"""

import datetime as dt
from collections import defaultdict

from django.db import connection, transaction

from controlplane.stats.models import MailboxDay, PendingCount, WorkspaceDay

FOLD_BATCH = 5000


def _local_day(at, tz):
    return at.astimezone(tz).date()


def daily(workspace, days, *, mailbox=None) -> dict:
    """{day: {metric: count}} for `days` (consecutive local days of `workspace`), of the workspace or one mailbox.

    A metric is a message status (messages scheduled that day now in that status), ``hard_bounce`` or
    ``complaint`` (messages scheduled that day that hard-bounced, or drew a complaint).
    """
    tz = workspace.tz
    start = dt.datetime.combine(days[0], dt.time.min, tzinfo=tz)
    end = dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    counts = {day: defaultdict(int) for day in days}
    if mailbox is None:
        folded = WorkspaceDay.objects.filter(workspace=workspace, day__gte=days[0], day__lte=days[-1])
        pending = PendingCount.objects.filter(workspace_id=workspace.pk)
    else:
        folded = MailboxDay.objects.filter(mailbox=mailbox, day__gte=days[0], day__lte=days[-1])
        pending = PendingCount.objects.filter(workspace_id=workspace.pk, mailbox_id=mailbox.pk)
    for day, metric, count in folded.values_list("day", "metric", "count"):
        counts[day][metric] += count
    for at, metric, change in pending.filter(at__gte=start, at__lt=end).values_list("at", "metric", "change"):
        day = _local_day(at, tz)
        if day in counts:
            counts[day][metric] += change
    return {day: {metric: max(n, 0) for metric, n in figures.items() if n} for day, figures in counts.items()}


def fold(*, batch=FOLD_BATCH, max_batches=200) -> int:
    """Adds pending changes to the daily rows, `batch` at a time; returns how many were folded.

    Each batch is deleted and added in one transaction, so a change is counted exactly once even when
    several workers fold at the same time (each skips the rows another has locked).
    """
    from mailboxes.models import Mailbox
    from workspaces.models import Workspace

    folded = 0
    for _ in range(max_batches):
        with transaction.atomic():
            rows = list(PendingCount.objects.select_for_update(skip_locked=True).order_by("id")
                        .values_list("id", "workspace_id", "mailbox_id", "at", "metric", "change")[:batch])
            if not rows:
                break
            PendingCount.objects.filter(id__in=[row[0] for row in rows]).delete()
            zones = {pk: workspace.tz for pk, workspace in
                     Workspace.objects.in_bulk({row[1] for row in rows}).items()}
            mailboxes = set(Mailbox.objects.filter(pk__in={row[2] for row in rows if row[2]})
                            .values_list("pk", flat=True))
            per_workspace, per_mailbox = defaultdict(int), defaultdict(int)
            for _, workspace_id, mailbox_id, at, metric, change in rows:
                if workspace_id not in zones:
                    continue  # the workspace is gone, and its counts with it
                day = _local_day(at, zones[workspace_id])
                per_workspace[(workspace_id, day, metric)] += change
                if mailbox_id in mailboxes:
                    per_mailbox[(mailbox_id, day, metric)] += change
            _add(WorkspaceDay, "workspace_id", per_workspace)
            _add(MailboxDay, "mailbox_id", per_mailbox)
        folded += len(rows)
        if len(rows) < batch:
            break
    return folded


def _add(model, owner_column, changes):
    """Adds each change to its row (made if missing), in key order so that two folds never deadlock."""
    rows = [(owner, day, metric, change) for (owner, day, metric), change in sorted(changes.items()) if change]
    if not rows:
        return
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({owner_column}, day, metric, count) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT ({owner_column}, day, metric) DO UPDATE SET count = {table}.count + excluded.count",
            rows)


def fold_all():
    """The periodic job: folds everything pending."""
    return fold()
