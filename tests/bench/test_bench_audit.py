"""Audit export at 1,000,000 events: rows per second and peak memory (targets: > 50,000 rows/s, < 200 MB).

Run with `make bench`. The export runs as its own `manage.py exportaudit` process, so its peak RSS
is the export's whole footprint (Python and Django included).
"""

import os
import resource
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings

from tests.evidence.test_audit_export import bulk_chain

pytestmark = [pytest.mark.bench, pytest.mark.django_db]

ROWS = int(os.environ.get("BENCH_AUDIT_ROWS", "1000000"))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_million_events(workspace, tmp_path, fmt, report, process_env):
    for start in range(0, ROWS, 100_000):
        bulk_chain(workspace, min(100_000, ROWS - start))
    output = tmp_path / f"audit.{fmt}"
    started = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "exportaudit", "--workspace", workspace.slug, "--format", fmt,
                    "--output", str(output)], env=process_env, cwd=django_settings.BASE_DIR, check=True,
                   stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    growth = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\naudit export ({fmt}): {ROWS} rows in {seconds:.1f} s = {ROWS / seconds:,.0f} rows/s; "
          f"file {output.stat().st_size / 1e6:.0f} MB; peak RSS of the export process {growth:.0f} MB "
          f"(targets: > 50,000 rows/s, < 200 MB)")
    name = f"audit export, {ROWS:,} events ({fmt})"
    report(name, "rows per second", f"{ROWS / seconds:,.0f}", "> 50,000", ROWS / seconds > 50_000)
    report(name, "peak memory (export process)", f"{growth:.0f} MB", "< 200 MB", growth < 200)
