import datetime as dt
import hashlib
import json
import os
import tempfile

from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Max, Min
from django.utils import dateparse, timezone

from audit import export
from audit import services as audit
from workspaces.management.commands._common import AuditedCommand, get_workspace


def parse_time(value, name):
    """An ISO 8601 date or date-time; naive values are UTC."""
    if not value:
        return None
    parsed = dateparse.parse_datetime(value)
    if parsed is None:
        day = dateparse.parse_date(value)
        if day is not None:
            parsed = dt.datetime.combine(day, dt.time.min)
    if parsed is None:
        raise CommandError(f"--{name} “{value}” is not an ISO 8601 date or date-time (e.g. 2025-01-31T12:00:00Z).")
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=dt.timezone.utc)


class Command(AuditedCommand):
    help = ("Exports the audit log (one workspace or all) as JSON lines or CSV, with a manifest "
            "(`<output>.manifest.json`: rows, range, filters, sha256 of the file, chain heads). "
            "The export itself is recorded as an `audit.exported` event.")

    def add_arguments(self, parser):
        parser.add_argument("--workspace", metavar="SLUG", help="Only this workspace's chain (default: every chain).")
        parser.add_argument("--since", help="Events at or after this ISO 8601 date or date-time (UTC if naive).")
        parser.add_argument("--until", help="Events before this ISO 8601 date or date-time (UTC if naive).")
        parser.add_argument("--format", default="jsonl", choices=["jsonl", "csv"])
        parser.add_argument("--output", metavar="FILE",
                            help="Write here (and the manifest next to it); default: standard output, "
                                 "with the manifest on standard error.")

    def handle(self, *args, **options):
        workspace = get_workspace(options["workspace"]) if options["workspace"] else None
        since = parse_time(options["since"], "since")
        until = parse_time(options["until"], "until")
        if since and until and since >= until:
            raise CommandError("--since must be before --until.")
        fmt = options["format"]
        queryset, bound = export.bounded_queryset(workspace=workspace, since=since, until=until)
        rows = queryset.count()
        output = options["output"]

        if output:
            sha256, size = self.write_file(queryset, fmt, output, rows, options)
        else:
            sha256, size = self.write_stdout(queryset, fmt)

        filters = {"workspace": workspace.slug if workspace else None, "since": since, "until": until}
        manifest = export.manifest(queryset=queryset, fmt=fmt, sha256=sha256, rows=rows, filters=filters,
                                   generated_by=f"command:{self.command_name}")
        span = queryset.order_by().aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
        manifest["bytes"] = size
        manifest["file"] = os.path.basename(output) if output else None
        manifest["range"] = {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "first_event_at": span["first"].isoformat() if span["first"] else None,
            "last_event_at": span["last"].isoformat() if span["last"] else None,
        }
        # The chain heads the export was bounded by: events appended while it ran are left out.
        manifest["bounded_by"] = {key: {"seq": seq} for key, seq in sorted(bound.items())}

        with transaction.atomic():
            audit.record(workspace=workspace, action="audit.exported", object_type="audit",
                         object_repr=manifest["file"] or "stdout",
                         after={"format": fmt, "rows": rows, "sha256": sha256, "output": output or "stdout",
                                **{k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                   for k, v in filters.items() if v}})

        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        if output:
            manifest_path = f"{output}.manifest.json"
            with open(manifest_path, "w", encoding="utf-8") as handle:
                handle.write(text)
            self.stderr.write(f"Exported {rows} event(s) to {output} (sha256 {sha256}); manifest: {manifest_path}")
        else:
            self.stderr.write(text, ending="")

    def write_file(self, queryset, fmt, output, rows, options):
        """Writes next to the target and renames at the end, so a failed export leaves no half file."""
        directory = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(directory):
            raise CommandError(f"No such directory: {directory}")
        sha = hashlib.sha256()
        size = 0
        fd, partial = tempfile.mkstemp(prefix=".audit-export-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle, \
                    self.progress(total=rows, desc="Exporting", unit="event", options=options) as bar:
                for chunk in export.iter_chunks(queryset, fmt):
                    handle.write(chunk)
                    sha.update(chunk)
                    size += len(chunk)
                    bar.update(min(chunk.count(b"\n"), bar.total - bar.n))
                bar.n = rows
                bar.refresh()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(partial, 0o666 & ~umask)  # mkstemp's 0600 would surprise; honour the umask
            os.replace(partial, output)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        return sha.hexdigest(), size

    def write_stdout(self, queryset, fmt):
        sha = hashlib.sha256()
        size = 0
        out = getattr(self.stdout, "_out", self.stdout)
        binary = getattr(out, "buffer", None)
        for chunk in export.iter_chunks(queryset, fmt):
            if binary is not None:
                binary.write(chunk)
            else:
                out.write(chunk.decode())
            sha.update(chunk)
            size += len(chunk)
        if binary is not None:
            binary.flush()
        return sha.hexdigest(), size
