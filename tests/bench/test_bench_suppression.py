"""Suppression at scale: a check's p99 at 10,000,000 entries beside a bare indexed SQL probe, and a
1,000,000-entry bulk import (targets: p99 < 2 ms; import < 60 s and < 500 MB). Run with `make bench`."""

import os
import resource
import statistics
import time

import pytest
from django.db import connection

from suppression import services

pytestmark = [pytest.mark.bench, pytest.mark.django_db]

ENTRIES = int(os.environ.get("BENCH_SUPPRESSIONS", "10000000"))
IMPORT = int(os.environ.get("BENCH_IMPORT", "1000000"))
PROBES = 2000
BATCH, BATCHES = 1000, 50


def _fill(workspace, count):
    """Entries written straight in SQL (the fixture, not what is measured)."""
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO suppression_suppression (id, workspace_id, value, value_hash, is_domain, kind, reason, source,
                                                 source_event, evidence, note, created_by, created_at)
            SELECT 'sup_bench' || n, %s, 'user' || n || '@bench.example',
                   encode(sha256(convert_to('user' || n || '@bench.example', 'UTF8')), 'hex'),
                   false, 'address', 'import', 'bench', '', '{}', '', 'bench', now()
            FROM generate_series(1, %s) AS n""", [workspace.pk, count])
        cursor.execute("ANALYZE suppression_suppression")


def _p(samples, q):
    return statistics.quantiles(samples, n=100)[q - 1] * 1000


def test_check_p99_and_bulk_import(workspace, report):
    _fill(workspace, ENTRIES)
    probes = [f"user{n * 4999 % ENTRIES + 1}@bench.example" for n in range(PROBES // 2)] + \
             [f"nobody{n}@elsewhere.example" for n in range(PROBES // 2)]
    ours = []
    for address in probes:
        started = time.perf_counter()
        services.is_suppressed(workspace, address)
        ours.append(time.perf_counter() - started)
    bare = []
    with connection.cursor() as cursor:
        for address in probes:
            digest = services.value_hash(address)
            started = time.perf_counter()
            cursor.execute("SELECT 1 FROM suppression_suppression WHERE workspace_id = %s AND value_hash = %s LIMIT 1",
                           [workspace.pk, digest])
            cursor.fetchone()
            bare.append(time.perf_counter() - started)
    name = f"suppression check at {ENTRIES:,} entries"
    report(name, "p50 / p99", f"{_p(ours, 50):.2f} / {_p(ours, 99):.2f} ms", "p99 < 2 ms", _p(ours, 99) < 2)
    report(name, "bare indexed SQL probe p50 / p99 (ceiling)", f"{_p(bare, 50):.2f} / {_p(bare, 99):.2f} ms")
    print(f"\n{name}: ours p99 {_p(ours, 99):.2f} ms, bare SQL p99 {_p(bare, 99):.2f} ms")

    batches = []
    for b in range(BATCHES):
        batch = (probes[(b * 40) % PROBES:][:BATCH // 2]
                 + [f"else{b}.{n}@mail.elsewhere.example" for n in range(BATCH // 2)])
        started = time.perf_counter()
        services.suppressed_many(workspace, batch)
        batches.append(time.perf_counter() - started)
    report(name, f"batch of {BATCH:,} addresses (suppressed_many) p50 / p99",
           f"{_p(batches, 50):.1f} / {_p(batches, 99):.1f} ms")

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    values = (f"import{n}@bench.example" for n in range(IMPORT))
    started = time.perf_counter()
    result = services.bulk_import(workspace=workspace, values=values)
    seconds = time.perf_counter() - started
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert result.created == IMPORT
    name = f"suppression bulk import of {IMPORT:,} entries"
    report(name, "time", f"{seconds:.1f} s", "< 60 s", seconds < 60)
    report(name, "peak memory growth", f"{growth:.0f} MB", "< 500 MB", growth < 500)
    print(f"{name}: {seconds:.1f} s, +{growth:.0f} MB")
