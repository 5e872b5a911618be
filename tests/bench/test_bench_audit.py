"""Audit export at 1,000,000 events: rows per second and peak memory (targets: > 50,000 rows/s, < 200 MB).

Run with `make bench`. Memory is the growth of this process's peak RSS during the export.
"""

import os
import resource
import time

import pytest
from django.core.management import call_command

from tests.evidence.test_audit_export import bulk_chain

pytestmark = [pytest.mark.bench, pytest.mark.django_db]

ROWS = int(os.environ.get("BENCH_AUDIT_ROWS", "1000000"))


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_million_events(workspace, tmp_path, fmt, report):
    for start in range(0, ROWS, 100_000):
        bulk_chain(workspace, min(100_000, ROWS - start))
    baseline = _peak_mb()
    output = tmp_path / f"audit.{fmt}"
    started = time.perf_counter()
    call_command("exportaudit", "--workspace", workspace.slug, "--format", fmt, "--output", str(output),
                 stderr=open(os.devnull, "w"))
    seconds = time.perf_counter() - started
    growth = _peak_mb() - baseline
    print(f"\naudit export ({fmt}): {ROWS} rows in {seconds:.1f} s = {ROWS / seconds:,.0f} rows/s; "
          f"file {output.stat().st_size / 1e6:.0f} MB; peak RSS growth {growth:.0f} MB "
          f"(targets: > 50,000 rows/s, < 200 MB)")
    name = f"audit export, {ROWS:,} events ({fmt})"
    report(name, "rows per second", f"{ROWS / seconds:,.0f}", "> 50,000", ROWS / seconds > 50_000)
    report(name, "peak memory growth", f"{growth:.0f} MB", "< 200 MB", growth < 200)
