from django.core.management.base import CommandError

from audit import services as audit
from audit.models import AuditChain, AuditEvent
from workspaces.management.commands._common import AuditedCommand, get_workspace
from workspaces.models import Workspace


class Command(AuditedCommand):
    help = ("Re-computes the audit log's hash chains. Exit 0 if every chain is intact; otherwise exit 1 "
            "and name the first broken event of each broken chain.")

    def add_arguments(self, parser):
        parser.add_argument("--workspace", metavar="SLUG", help="Only this workspace's chain (default: every chain).")

    def handle(self, *args, **options):
        if options["workspace"]:
            keys = [audit.chain_key(get_workspace(options["workspace"]))]
        else:
            # Chains with a head, and any whose head row went missing.
            keys = sorted(set(AuditChain.objects.values_list("key", flat=True))
                          | set(AuditEvent.objects.order_by().values_list("chain", flat=True).distinct()))
        labels = {str(pk): slug for pk, slug in Workspace.objects.filter(pk__in=keys).values_list("pk", "slug")}
        total = AuditEvent.objects.filter(chain__in=keys).count()
        results = []
        with self.progress(total=total, desc="Verifying", unit="event", options=options) as bar:
            for key in keys:
                results.append(audit.verify(chain=key, progress=bar.update))
        broken = [r for r in results if not r.ok]
        for result in results:
            name = self.label(result.chain, labels)
            if result.ok:
                self.stdout.write(f"ok      {name}: {result.checked} event(s) intact")
            else:
                self.stdout.write(f"BROKEN  {name}: {result.problem}")
        if not results:
            self.stdout.write("No audit events yet.")
        if broken:
            first = broken[0]
            raise CommandError(
                f"{len(broken)} of {len(results)} audit chain(s) broken; first: {self.label(first.chain, labels)}: "
                f"{first.problem}",
                returncode=1,
            )
        self.stdout.write(f"All {len(results)} audit chain(s) intact ({sum(r.checked for r in results)} events).")

    @staticmethod
    def label(key, labels):
        if key == "global":
            return "global chain (no workspace)"
        return f"workspace {labels[key]} ({key})" if key in labels else f"chain {key}"
