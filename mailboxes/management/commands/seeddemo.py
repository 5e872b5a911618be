"""A demo workspace to click through: idempotent, so `make up` runs it on every start.

Everything is created through the same validation and services as the API, so the demo
data is audited like anything an operator would create.
"""

from django.core.management.base import CommandError
from django.db import transaction

from audit import services as audit
from mailboxes.api.serializers import DomainSerializer, MailboxSerializer, PoolSerializer, WarmupProfileSerializer
from mailboxes.dns import dkim
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from providers import services as provider_services
from providers.api.serializers import ProviderSerializer
from providers.models import ProviderConnection
from suppression import services as suppression_services
from workspaces import services as workspace_services
from workspaces.management.commands._common import AuditedCommand
from workspaces.models import Workspace

SLUG = "demo"
WORKSPACE = {
    "slug": SLUG,
    "name": "Demo Outbound",
    "timezone": "Europe/London",
    "sender_identification": "Demo Outbound Ltd",
    "postal_address": "1 Example Street, London EC1A 1AA, United Kingdom",
}
DOMAINS = ["mail.example.com", "outreach.example.net"]
SMTP = "Local SMTP (127.0.0.1:1025)"
MAILGUN = "Mailgun (demo credentials)"
PROVIDERS = [
    {"kind": "smtp", "name": SMTP, "settings": {"host": "127.0.0.1", "port": 1025, "security": "none"},
     "credentials": {}},
    {"kind": "mailgun", "name": MAILGUN, "settings": {"domain": "outreach.example.net", "region": "eu"},
     "credentials": {"api_key": "demo-not-a-real-api-key", "webhook_signing_key": "demo-not-a-real-signing-key"}},
]
WARMUP = {"name": "Gentle ramp", "start": 5, "step": 5, "max": 40}
WINDOW = {"days": [1, 2, 3, 4, 5], "start": "08:00", "end": "18:00", "timezone": "Europe/London"}
# address, display name, provider, daily cap, weekly cap, warm-up, priority
MAILBOXES = [
    ("alex@mail.example.com", "Alex Morgan", SMTP, 30, 150, True, 0),
    ("blair@mail.example.com", "Blair Chen", SMTP, 30, 150, True, 0),
    ("casey@mail.example.com", "Casey Patel", SMTP, 50, 250, False, 10),
    ("dana@outreach.example.net", "Dana Rossi", MAILGUN, 40, 200, False, 0),
    ("emery@outreach.example.net", "Emery Novak", MAILGUN, 40, 200, True, 0),
    ("finley@outreach.example.net", "Finley Okafor", MAILGUN, 60, 300, False, 5),
]
POOLS = [
    {"name": "Cold outreach", "strategy": "round_robin", "workloads": ["cold"],
     "mailboxes": ["alex@mail.example.com", "blair@mail.example.com", "dana@outreach.example.net",
                   "emery@outreach.example.net"]},
    {"name": "Warm follow-ups", "strategy": "priority", "workloads": ["warm"],
     "mailboxes": ["casey@mail.example.com", "finley@outreach.example.net"]},
]
SUPPRESSIONS = [
    ("unsubscribed@example.org", "unsubscribe", "Clicked the one-click unsubscribe link."),
    ("bounced@example.org", "hard_bounce", "550 5.1.1 user unknown."),
    ("complained@example.org", "complaint", "Marked a message as spam."),
    ("legal@example.com", "manual", "Asked by phone not to be contacted."),
    ("@competitor.example", "dnc", "Never contact anyone at this company."),
]


class Command(AuditedCommand):
    help = ("Creates (or completes) the demo workspace `demo`: sending domains with DKIM keys, an SMTP and a "
            "Mailgun provider, a warm-up profile, mailboxes, pools and suppressions. Safe to run again.")

    def handle(self, *args, **options):
        self.counts = {"created": 0, "present": 0}
        with transaction.atomic():
            workspace = self.workspace()
            for name in DOMAINS:
                domain = self.create(DomainSerializer, "domain", workspace,
                                     SendingDomain.objects.for_workspace(workspace).filter(name=name), {"name": name})
                if not domain.dkim_keys.exists():
                    dkim.generate_key(domain=domain)  # so records_to_publish shows a DKIM record to copy
                    self.counts["created"] += 1
            providers = {spec["name"]: self.provider(workspace, spec) for spec in PROVIDERS}
            warmup = self.create(WarmupProfileSerializer, "warmup_profile", workspace,
                                 WarmupProfile.objects.for_workspace(workspace).filter(name=WARMUP["name"]), WARMUP)
            mailboxes = {}
            for address, display_name, provider, daily, weekly, warm, priority in MAILBOXES:
                data = {"address": address, "display_name": display_name, "provider": providers[provider].pk,
                        "daily_cap": daily, "weekly_cap": weekly, "min_interval_seconds": 120, "jitter_seconds": 60,
                        "send_window": WINDOW, "priority": priority, "weight": 1,
                        "warmup_profile": warmup.pk if warm else None}
                mailboxes[address] = self.create(
                    MailboxSerializer, "mailbox", workspace,
                    Mailbox.objects.for_workspace(workspace).filter(address=address), data)
            for spec in POOLS:
                data = {**spec, "mailboxes": [mailboxes[a].pk for a in spec["mailboxes"]]}
                self.create(PoolSerializer, "pool", workspace,
                            Pool.objects.for_workspace(workspace).filter(name=spec["name"]), data)
            for value, reason, note in SUPPRESSIONS:
                _, created = suppression_services.suppress(workspace=workspace, value=value, reason=reason,
                                                           source="seeddemo", note=note)
                self.counts["created" if created else "present"] += 1
        self.messages(workspace)
        self.stdout.write(
            f"Demo workspace “{workspace.slug}” ({workspace.pk}) is ready: {self.counts['created']} object(s) "
            f"created, {self.counts['present']} already present."
        )

    def messages(self, workspace):
        """A few sends through the real intake (once): accepted, scheduled or refused by the policy,
        whatever today's caps and send windows say, so the demo shows the evidence of each."""
        from controlplane import intake
        from audit.models import AuditEvent
        from controlplane.api.messages import message_body

        # Once: whether the policy accepted them or (after hours, say) refused them, the audit log has them.
        if AuditEvent.objects.filter(workspace=workspace, action__in=["message.accepted", "message.rejected"]).exists():
            return
        for n, to in enumerate(["ada@prospect.example", "grace@prospect.example", "alan@prospect.example",
                                "legal@example.com", "ceo@competitor.example"]):
            status, _ = intake.submit(workspace=workspace, serialize=message_body, data={
                "to": to, "subject": f"Quick question about your outbound, {to.split('@')[0].title()}",
                "text": "Hi,\n\nare you the right person to talk to about outbound email?\n\nThanks", "workload": "cold",
                "thread_key": f"demo-{n}"})
            if status < 300:  # a refusal stores no message, only its audit entry
                self.counts["created"] += 1

    def workspace(self):
        existing = Workspace.objects.filter(slug=SLUG).first()
        if existing is not None:
            self.counts["present"] += 1
            return existing
        self.counts["created"] += 1
        return workspace_services.create_workspace(**WORKSPACE)

    def provider(self, workspace, spec):
        existing = ProviderConnection.objects.for_workspace(workspace).filter(name=spec["name"]).first()
        if existing is not None:
            self.counts["present"] += 1
            return existing
        self.validate(ProviderSerializer, workspace, spec)
        self.counts["created"] += 1
        return provider_services.create_connection(workspace=workspace, kind=spec["kind"], name=spec["name"],
                                                   settings=spec["settings"], credentials=spec["credentials"])

    def create(self, serializer_class, audit_name, workspace, existing, data):
        """Like the API's create: the serializer validates and saves, then `<name>.created` is audited."""
        found = existing.first()
        if found is not None:
            self.counts["present"] += 1
            return found
        serializer = self.validate(serializer_class, workspace, data)
        obj = serializer.save(workspace=workspace)
        audit.record(workspace=workspace, action=f"{audit_name}.created", obj=obj, after=audit.snapshot(obj))
        self.counts["created"] += 1
        return obj

    @staticmethod
    def validate(serializer_class, workspace, data):
        serializer = serializer_class(data=data, context={"workspace": workspace})
        if not serializer.is_valid():
            raise CommandError(f"Demo data was refused by {serializer_class.__name__}: {dict(serializer.errors)}")
        return serializer
