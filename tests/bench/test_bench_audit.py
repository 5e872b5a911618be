"""Audit export at 1,000,000 events: rows per second and peak memory (targets: > 50,000 rows/s, < 200 MB).

Run with `make bench`. Each export runs as its own `manage.py exportaudit` process, so its peak RSS is the
export's whole footprint (Python and Django included); both formats export the same million events.
Rows per second include that process's start (about a second of Django's).
"""

import contextlib
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.evidence.test_audit_export import bulk_chain

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]  # the export process must see the rows

ROWS = int(os.environ.get("BENCH_AUDIT_ROWS", "1000000"))


def peak_rss_mb(process) -> float:
    """The process's own peak resident memory (VmHWM), read until it exits. Not getrusage: a child started
    from this (large) test process inherits its high-water mark across exec."""
    peak = 0
    while process.poll() is None:
        with contextlib.suppress(OSError), open(f"/proc/{process.pid}/status") as status:
            line = next((line for line in status if line.startswith("VmHWM:")), None)  # none once it has exited
            peak = max(peak, int(line.split()[1])) if line else peak
        time.sleep(0.02)
    return peak / 1024


def test_export_million_events(workspace, tmp_path, report, process_env):
    for start in range(0, ROWS, 100_000):
        bulk_chain(workspace, min(100_000, ROWS - start))
    with connection.cursor() as cursor:  # the table at rest, as autovacuum leaves it after a bulk insert
        cursor.execute("VACUUM ANALYZE audit_auditevent")
    for fmt in ("jsonl", "csv"):
        output = tmp_path / f"audit.{fmt}"
        errors = tmp_path / f"{fmt}.stderr"
        started = time.perf_counter()
        with open(errors, "wb") as stderr:
            export = subprocess.Popen([sys.executable, "manage.py", "exportaudit", "--workspace", workspace.slug,
                                       "--format", fmt, "--output", str(output)], env=process_env,
                                      cwd=django_settings.BASE_DIR, stderr=stderr)
            peak = peak_rss_mb(export)
        seconds = time.perf_counter() - started
        assert export.returncode == 0, errors.read_text()[-3000:]
        print(f"\naudit export ({fmt}): {ROWS} rows in {seconds:.1f} s = {ROWS / seconds:,.0f} rows/s; "
              f"file {output.stat().st_size / 1e6:.0f} MB; peak RSS of the export process {peak:.0f} MB "
              f"(targets: > 50,000 rows/s, < 200 MB)")
        name = f"audit export, {ROWS:,} events ({fmt})"
        report(name, "rows per second", f"{ROWS / seconds:,.0f}", "> 50,000", ROWS / seconds > 50_000)
        report(name, "peak memory (export process)", f"{peak:.0f} MB", "< 200 MB", peak < 200)
        output.unlink()
