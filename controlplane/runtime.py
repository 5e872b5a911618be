"""How long-running processes (gunicorn workers, RQ workers) hold their memory.

A process that has loaded Django, the URLconf and the services holds several hundred thousand objects
that live as long as it does. Python's collector scans every one of them in each full collection, and a
request or job that makes many objects (a batch of a thousand sends) brings one about every request or
two: measured in one process, collection took ~25 % of a batch intake's CPU. `settle()`, called once
loading is done, moves what loading made out of the collector's reach (`gc.freeze`, made for this);
objects made afterwards are collected as before.
"""

import gc


def settle():
    """Collects what loading left behind, then freezes everything still alive."""
    gc.collect()
    gc.freeze()
