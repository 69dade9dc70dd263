"""What the benchmark's workers run: tiny functions every system imports by name.

Workers find this module through PYTHONPATH (the suite sets it), so no system has to pickle a
function by value; keep it free of imports beyond the standard library.
"""

from __future__ import annotations

import os
import time


def negate(number: int) -> int:
    """The trivial task: one arithmetic operation."""
    return -number


def echo(payload: bytes) -> bytes:
    """Send the argument back: the payload measure moves it both ways."""
    return payload


def nap(seconds: float) -> None:
    """A task that takes `seconds` of wall time and no CPU."""
    time.sleep(seconds)


def process_id(seconds: float) -> int:
    """Sleep `seconds`, then say which worker process ran the task."""
    if seconds:
        time.sleep(seconds)
    return os.getpid()
