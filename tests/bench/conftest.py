import datetime as dt
import os
import platform
from pathlib import Path

import pytest

_FIGURES = []


@pytest.fixture
def report():
    """`report(benchmark, figure, value, target, ok)`: a row of docs/benchmarks.md."""
    def add(benchmark, figure, value, target="", ok=None):
        _FIGURES.append((benchmark, figure, value, target, "" if ok is None else ("yes" if ok else "**no**")))

    return add


def pytest_sessionfinish(session, exitstatus):
    """`make bench` writes what it measured to docs/benchmarks.md."""
    if not _FIGURES:
        return
    path = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
    path.parent.mkdir(exist_ok=True)
    previous = {}
    trailer = []  # the prose after the table (analysis written by hand) is kept
    if path.exists():
        seen_table = False
        for line in path.read_text().splitlines():
            if line.startswith("|"):
                seen_table = True
                cells = [c.strip() for c in line.strip("|").split("|")]
                if len(cells) == 5 and cells[0] not in ("benchmark", "---"):
                    previous[(cells[0], cells[1])] = cells
            elif seen_table:
                trailer.append(line)
    for row in _FIGURES:
        previous[(row[0], row[1])] = list(row)
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (each benchmark keeps its latest figures). Every figure is measured on",
        "this machine in one run, beside its ceiling where it has one; see `tests/bench/` for how.",
        "",
        f"Last run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| benchmark | figure | value | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(str(c) for c in cells)} |" for cells in previous.values()]
    path.write_text("\n".join(lines + trailer).rstrip("\n") + "\n")


@pytest.fixture
def deployed_env(process_env):
    """`process_env` as a deployment runs it: DEBUG off (no query log, no debug cursors), with this test's
    secret key and credentials keys so that the subprocesses read what the test wrote."""
    from django.conf import settings

    return {**process_env, "DEBUG": "0", "SECRET_KEY": settings.SECRET_KEY,
            "CREDENTIALS_KEYS": ",".join(settings.CREDENTIALS_KEYS)}
