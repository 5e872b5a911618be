"""The scale-out test runs with `make scaleout` (and in CI), not in `make test`: it starts eight processes
and takes one to two minutes."""

import pytest

from tests.bench.conftest import process_env  # noqa: F401  (the subprocesses see this test's database and Redis)


def pytest_collection_modifyitems(config, items):
    if "scaleout" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="scale-out test: run with `make scaleout`")
    for item in items:
        if "scaleout" in item.keywords:
            item.add_marker(skip)
