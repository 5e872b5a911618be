"""Jobs the command tests queue (importable by worker processes)."""

import os
import time


def note_worker(seconds):
    """Takes a while, then answers which process ran it."""
    time.sleep(seconds)
    return os.getpid()
