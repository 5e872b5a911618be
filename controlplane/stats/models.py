from django.db import models

# Counted besides the message statuses: messages with at least one hard bounce, or one complaint.
HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"


class PendingCount(models.Model):
    """One change (+1 or -1) to a daily count, written by a database trigger, not yet folded in.

    No foreign keys: rows are written inside the writers' statements and folded away within a minute.
    """

    id = models.BigAutoField(primary_key=True)
    workspace_id = models.CharField(max_length=40)
    mailbox_id = models.CharField(max_length=40, null=True)
    at = models.DateTimeField(help_text="The message's scheduled_at: its day is the count's day.")
    metric = models.CharField(max_length=20, help_text="A message status, hard_bounce or complaint.")
    change = models.IntegerField()

    class Meta:
        indexes = [models.Index(fields=["workspace_id", "at"], name="stats_pending_ws_at")]


class DailyCount(models.Model):
    day = models.DateField()
    metric = models.CharField(max_length=20)
    count = models.IntegerField(default=0)

    class Meta:
        abstract = True


class WorkspaceDay(DailyCount):
    """Messages of one workspace scheduled on one of its local days, by status (and hard bounces, complaints)."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "day", "metric"], name="stats_workspace_day")]


class MailboxDay(DailyCount):
    """The same counts for one mailbox (days are its workspace's local days)."""

    mailbox = models.ForeignKey("mailboxes.Mailbox", on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mailbox", "day", "metric"], name="stats_mailbox_day")]
