"""`checkdomains [--workspace SLUG] [--domain NAME]`: runs the DNS checks now; exit 1 if any domain fails."""

from django.core.management.base import CommandError
from tqdm import tqdm

from mailboxes.dns import service
from mailboxes.dns.checks import CHECK_LABELS, CHECK_NAMES
from mailboxes.models import SendingDomain
from workspaces.management.commands._common import AuditedCommand, _raw, get_workspace


def describe(domain: SendingDomain) -> str:
    """One line: status, name, workspace, and each check that is not a pass with its sentence."""
    problems = [f"{CHECK_LABELS[name]} {check['status']}: {check['message']}"
                for name in CHECK_NAMES
                if (check := domain.checks.get(name)) and check["status"] != "pass"]
    detail = " | ".join(problems) if problems else "all checks pass"
    paused = ""
    if domain.paused:
        by_checks = domain.check_pause_reason and domain.paused_reason == domain.check_pause_reason
        paused = " [paused by the checks]" if by_checks else f" [paused: {domain.paused_reason}]"
    return f"{domain.status.upper():<7} {domain.name} ({domain.workspace.slug}): {detail}{paused}"


class Command(AuditedCommand):
    help = "Runs the SPF, DKIM, DMARC, MX and blocklist checks of sending domains now. Exit 1 if any domain fails."

    def add_arguments(self, parser):
        parser.add_argument("--workspace", metavar="SLUG", help="Only this workspace's domains.")
        parser.add_argument("--domain", metavar="NAME", help="Only the domain with this name.")
        parser.add_argument("--concurrency", type=int, default=None,
                            help="Domains checked at once (default: DNS_CHECK_CONCURRENCY, 48).")

    def handle(self, *args, **options):
        domains = SendingDomain.objects.select_related("workspace").order_by("workspace__slug", "name")
        if options["workspace"]:
            domains = domains.for_workspace(get_workspace(options["workspace"]))
        if options["domain"]:
            name = options["domain"].strip().lower().rstrip(".")
            domains = domains.filter(name=name)
            if not domains.exists():
                where = f" in workspace “{options['workspace']}”" if options["workspace"] else ""
                raise CommandError(f"No sending domain named “{name}”{where}.")
        domains = list(domains)
        if not domains:
            self.stdout.write("No sending domains to check.")
            return

        out = _raw(self.stdout)
        workspaces = {d.pk: d.workspace for d in domains}
        with self.progress(total=len(domains), desc="Checking domains", unit="domain", options=options) as bar:
            def done(outcome):
                outcome.domain.workspace = workspaces[outcome.domain.pk]
                tqdm.write(describe(outcome.domain), file=out)
                bar.update(1)

            outcomes = service.check_domains(domains=domains, trigger="command", max_workers=options["concurrency"],
                                             on_done=done)
        counts = {}
        for outcome in outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        summary = ", ".join(f"{counts[s]} {s}" for s in ("pass", "warn", "unknown", "fail") if s in counts)
        self.stdout.write(f"Checked {len(outcomes)} domain{'s' if len(outcomes) != 1 else ''}: {summary}.")
        failing = counts.get("fail", 0)
        if failing:
            raise CommandError(f"{failing} domain{'s' if failing != 1 else ''} failed the checks.", returncode=1)
