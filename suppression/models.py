from django.db import models

from controlplane.ids import id_field
from workspaces.models import ScopedQuerySet

REASON_CHOICES = [
    ("unsubscribe", "unsubscribe"),
    ("hard_bounce", "hard bounce"),
    ("complaint", "complaint"),
    ("manual", "manual"),
    ("import", "import"),
    ("dnc", "do not contact"),
]
KIND_CHOICES = [
    ("address", "address"),
    ("domain", "domain"),
    ("subdomain", "subdomains"),
]


class Suppression(models.Model):
    """One do-not-contact entry: an address (`jane@acme.com`), a whole domain (`@acme.com`) or every
    subdomain of a domain (`@*.acme.com`), in one workspace or, without a workspace, in every one.

    Looked up by `value_hash` (SHA-256 of the normalised value) through the unique
    (workspace, value_hash) index and, for agency-wide entries, the partial unique index on
    value_hash: one index probe however long the list is. After an erasure `value` is blank and
    only the hash remains.
    """

    workspace_lookup = "workspace"

    id = id_field("sup")
    # No database constraint nor index of its own: the unique (workspace, value_hash) index serves lookups by
    # workspace, Django cascades a workspace's deletion, and a per-row foreign-key check would be a third of
    # the cost of a million-entry import.
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="suppressions",
                                  null=True, blank=True, db_index=False, db_constraint=False,
                                  help_text="Empty: agency-wide, in every workspace.")
    value = models.CharField(max_length=320, blank=True)
    value_hash = models.CharField(max_length=64)
    is_domain = models.BooleanField(default=False)
    kind = models.CharField(max_length=10, choices=KIND_CHOICES, default="address")
    reason = models.CharField(max_length=20, choices=REASON_CHOICES, default="manual")
    source = models.CharField(max_length=300, blank=True, help_text="Where it came from: API, admin, import file, unsubscribe, bounce.")
    source_event = models.CharField(max_length=40, blank=True, help_text="The canonical event that caused it.")
    evidence = models.JSONField(default=dict, blank=True,
                                help_text="For an unsubscribe: when, from which IP and user agent, for which message.")
    note = models.TextField(blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "value_hash"], name="suppression_value_unique"),
            models.UniqueConstraint(fields=["value_hash"], condition=models.Q(workspace__isnull=True),
                                    name="suppression_global_value_unique"),
        ]

    def __str__(self):
        return self.value or f"(erased {self.value_hash[:12]}…)"

    @property
    def scope(self):
        return "workspace" if self.workspace_id else "global"


class SuppressionRemoval(models.Model):
    """That a workspace's entry was removed, and when: what provider sync pushes back to an ESP
    (a provider entry older than the removal is deleted there, a newer one is imported again).
    Only the hash is kept."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="+")
    value_hash = models.CharField(max_length=64)
    reason = models.CharField(max_length=20, choices=REASON_CHOICES)
    removed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "value_hash"], name="suppression_removal_lookup")]


class ProviderSuppressionSync(models.Model):
    """The last suppression sync of one ESP connection: what it imported and pushed, and what it could not push."""

    workspace_lookup = "workspace"

    connection = models.OneToOneField("providers.ProviderConnection", on_delete=models.CASCADE,
                                      related_name="suppression_sync")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="+")
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    listed = models.PositiveIntegerField(default=0, help_text="Addresses on the provider's list at the last run.")
    imported = models.PositiveIntegerField(default=0, help_text="Added to the workspace's list at the last run.")
    pushed = models.PositiveIntegerField(default=0, help_text="Removals deleted at the provider at the last run.")
    not_pushed = models.JSONField(default=list, blank=True,
                                  help_text="Removals the provider kept: [{address, problem}].")
    last_error = models.TextField(blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        verbose_name = "provider suppression sync"

    def __str__(self):
        return f"Suppression sync of {self.connection}"
