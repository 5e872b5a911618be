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


class Suppression(models.Model):
    """One do-not-contact entry: an address (`jane@acme.com`) or a whole domain (`@acme.com`).

    Looked up by `value_hash` (SHA-256 of the normalised value) through the unique
    (workspace, value_hash) index: one index probe however long the list is. After an
    erasure `value` is blank and only the hash remains.
    """

    workspace_lookup = "workspace"

    id = id_field("sup")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="suppressions")
    value = models.CharField(max_length=320, blank=True)
    value_hash = models.CharField(max_length=64)
    is_domain = models.BooleanField(default=False)
    reason = models.CharField(max_length=20, choices=REASON_CHOICES, default="manual")
    source = models.CharField(max_length=300, blank=True, help_text="Where it came from: API, admin, import file, unsubscribe, bounce.")
    note = models.TextField(blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "value_hash"], name="suppression_value_unique")
        ]

    def __str__(self):
        return self.value or f"(erased {self.value_hash[:12]}…)"
