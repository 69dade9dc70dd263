"""Waiting for a condition with a deadline, instead of sleeping."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], seconds: float = 20.0, every: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s: {condition}")
        time.sleep(every)


def process_alive(pid: int) -> bool:
    """True while a process with this id exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def zombie_children() -> list[int]:
    """Child processes of this one that exited and were never reaped."""
    me = str(os.getpid())
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().split(")")[-1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] == "Z" and fields[1] == me:
            zombies.append(int(entry))
    return zombies
