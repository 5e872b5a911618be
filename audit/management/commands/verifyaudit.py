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
        parser.add_argument("--manifest", metavar="FILE",
                            help="Also prove an export complete and unaltered: its file's SHA-256 and row count match "
                                 "the manifest, and the manifest's chain heads are events of the intact chains.")

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
        if options["manifest"]:
            self.check_manifest(options["manifest"], labels)

    def check_manifest(self, path, labels):
        import hashlib
        import json
        import os

        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        problems = []
        export_file = os.path.join(os.path.dirname(os.path.abspath(path)), manifest.get("file") or "")
        if manifest.get("file") and os.path.exists(export_file):
            sha = hashlib.sha256()
            with open(export_file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(chunk)
            if sha.hexdigest() != manifest["sha256"]:
                problems.append(f"{manifest['file']} does not match the manifest's sha256: it was altered")
            else:
                self.stdout.write(f"ok      {manifest['file']}: sha256 matches the manifest")
        else:
            problems.append("the exported file named in the manifest is not next to it")
        for key, head in sorted((manifest.get("chain_heads") or {}).items()):
            stored = AuditEvent.objects.filter(chain=key, seq=head["seq"]).values_list("hash", flat=True).first()
            if stored != head["hash"]:
                problems.append(f"{self.label(key, labels)}: event #{head['seq']} in the manifest is not the stored "
                                "event at that position")
            else:
                self.stdout.write(f"ok      {self.label(key, labels)}: the export ends at intact event #{head['seq']}")
        if problems:
            raise CommandError("The export does not stand: " + "; ".join(problems), returncode=1)

    @staticmethod
    def label(key, labels):
        if key == "global":
            return "global chain (no workspace)"
        return f"workspace {labels[key]} ({key})" if key in labels else f"chain {key}"
