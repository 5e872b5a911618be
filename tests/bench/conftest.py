import os

import pytest
from django.conf import settings as django_settings
from django.db import connection


def pytest_collection_modifyitems(config, items):
    """Benchmarks run only when asked for (`make bench`, i.e. `-m bench`)."""
    if "bench" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `make bench`")
    for item in items:
        if "bench" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def process_env():
    """Environment for subprocesses (gunicorn, RQ workers) that must see this test's database and Redis."""
    db = connection.settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env["REDIS_URL"] = django_settings.REDIS_URL
    return env
