import contextlib
import io
import os
import sys

from django.core.management.base import CommandError

from suppression import services
from workspaces.management.commands._common import AuditedCommand, get_workspace

SHOW_INVALID = 20


class Command(AuditedCommand):
    help = ("Imports a do-not-contact list into a workspace: a CSV (column email/address/value, else the first) "
            "or one address or @domain per line. The whole file applies or nothing does.")

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The workspace's slug (with --global: the file).")
        parser.add_argument("file", nargs="?", help="Path to the file, or - for standard input.")
        parser.add_argument("--global", dest="agency_wide", action="store_true",
                            help="Import into the agency-wide list, which applies in every workspace: "
                                 "importsuppressions --global FILE.")
        parser.add_argument("--reason", default="import", choices=sorted(services.REASONS),
                            help="Reason recorded on every new entry (default: import).")
        parser.add_argument("--note", default="", help="A note recorded on every new entry.")

    def handle(self, *args, **options):
        if options["agency_wide"]:
            if options["file"] is not None:
                raise CommandError("With --global give only the file: importsuppressions --global FILE.")
            workspace, path = None, options["slug"]
        else:
            if options["file"] is None:
                raise CommandError("Give the workspace's slug and the file (or --global FILE).")
            workspace, path = get_workspace(options["slug"]), options["file"]
        source = "import:" + ("stdin" if path == "-" else os.path.basename(path))
        with self.open(path) as (lines, total), \
                self.progress(total=total, desc="Importing", unit="line", options=options) as bar:
            try:
                result = services.bulk_import(
                    workspace=workspace, values=services.read_values(lines), reason=options["reason"],
                    source=source, note=options["note"], progress=bar.update,
                )
            except services.InvalidValue as exc:
                raise CommandError(str(exc))
            except UnicodeDecodeError as exc:
                raise CommandError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}).")
            bar.total = bar.n  # a CSV header is not a value
            bar.refresh()
        self.stdout.write(f"created: {result.created}")
        self.stdout.write(f"already present: {result.existing}")
        self.stdout.write(f"invalid: {len(result.invalid)}")
        if result.invalid:
            shown = result.invalid[:SHOW_INVALID]
            more = len(result.invalid) - len(shown)
            self.stdout.write("invalid values (not imported): " + ", ".join(repr(v) for v in shown)
                              + (f" … and {more} more" if more else ""))

    @contextlib.contextmanager
    def open(self, path):
        """(lines, line count): the file is counted first so the progress bar knows its end, then streamed."""
        if path == "-":
            lines = io.StringIO(sys.stdin.read()).readlines()
            yield lines, len(lines)
            return
        try:
            with open(path, "rb") as raw:
                total = sum(1 for _ in raw)
            handle = open(path, encoding="utf-8-sig", newline="")
        except FileNotFoundError:
            raise CommandError(f"No such file: {path}")
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}")
        with handle:
            yield handle, total
