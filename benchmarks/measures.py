"""The measures of the peer suite: what each one runs, at which size, and how it is scored.

Every Python system is driven through the same small `Pool` face, so a system's driver only
says how to start its workers and how to queue work without running it. Standard library only:
this module runs in every peer's own environment.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tasks import echo, nap, negate, process_id

SECONDS_WORKERS_READY = 600.0
"""How long a pool may take until each of its workers has answered (48 processes on 2 cores)."""

MEGABYTE = 1_000_000


class Pool(Protocol):
    """Running workers of one system, as the measures use them."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """Run `fn` on every item; the results in input order."""
        ...

    def call(self, fn: Callable[[Any], Any], item: Any) -> Any:
        """Run one task and wait for its result."""
        ...


OpenPool = Callable[[int], AbstractContextManager[Pool]]
"""Start a system with this many workers; the pool it yields is stopped on exit."""

QueuedMemory = Callable[[int], float]
"""Queue this many trivial tasks that no worker runs; the controller's peak memory in MB."""


@dataclass(frozen=True)
class Measure:
    """One row of the suite's table.

    `full` and `quick` are the sizes handed to the measure (`--quick` takes the second);
    `better` says which way the ratio batchcrew/peer is good.

    Example:
        >>> MEASURES["tasks"].label(MEASURES["tasks"].full)
        '10,000 trivial tasks, tasks/s'
    """

    key: str
    template: str
    unit: str
    better: Literal["higher", "lower"]
    full: Mapping[str, float]
    quick: Mapping[str, float]
    digits: int

    def label(self, size: Mapping[str, float]) -> str:
        """The row's title for a size, e.g. '200 × 50 ms tasks on 2 workers, efficiency'."""
        milliseconds = size.get("seconds", 0) * 1000
        return self.template.format(milliseconds=milliseconds, **size)


MEASURES: dict[str, Measure] = {
    measure.key: measure
    for measure in (
        Measure(
            "tasks",
            "{tasks:,.0f} trivial tasks, tasks/s",
            "tasks/s",
            "higher",
            {"tasks": 10_000},
            {"tasks": 300},
            0,
        ),
        Measure(
            "round_trip",
            "one-task round trip, median ms",
            "ms",
            "lower",
            {"calls": 500},
            {"calls": 30},
            2,
        ),
        Measure(
            "startup",
            "nothing → {workers:.0f} workers answered, s",
            "s",
            "lower",
            {"workers": 2},
            {"workers": 2},
            2,
        ),
        Measure(
            "memory",
            "peak controller memory, {tasks:,.0f} tasks queued, MB",
            "MB",
            "lower",
            {"tasks": 100_000},
            {"tasks": 2_000},
            0,
        ),
        Measure(
            "sleep",
            "{tasks:.0f} × {milliseconds:.0f} ms tasks on {workers:.0f} workers, efficiency",
            "",
            "higher",
            {"tasks": 200, "seconds": 0.05, "workers": 2},
            {"tasks": 10, "seconds": 0.05, "workers": 2},
            2,
        ),
        Measure(
            "payload",
            "{megabytes:.0f} MB argument + {megabytes:.0f} MB result, MB/s",
            "MB/s",
            "higher",
            {"megabytes": 1, "tasks": 100},
            {"megabytes": 1, "tasks": 5},
            0,
        ),
        Measure(
            "wide",
            "{workers:.0f} workers, {tasks:,.0f} × {milliseconds:.0f} ms tasks, efficiency",
            "",
            "higher",
            {"workers": 48, "tasks": 3_000, "seconds": 0.02},
            {"workers": 3, "tasks": 15, "seconds": 0.02},
            2,
        ),
    )
}


def run(
    key: str, size: Mapping[str, float], open_pool: OpenPool, queued_memory: QueuedMemory
) -> float:
    """Take measure `key` of one system, at `size`; the number its row reports."""
    if key == "memory":
        return queued_memory(int(size["tasks"]))
    if key == "startup":
        started = time.perf_counter()
        with open_pool(int(size["workers"])) as pool:
            _until_all_answered(pool, int(size["workers"]), 0.0)
            return time.perf_counter() - started
    workers = int(size.get("workers", 2))
    with open_pool(workers) as pool:
        _until_all_answered(pool, workers, size.get("seconds", 0.0))
        return _MEASURED[key](pool, size, workers)


def _until_all_answered(pool: Pool, workers: int, seconds: float) -> None:
    """Run rounds of `workers` tasks until each worker process has answered one."""
    deadline = time.monotonic() + SECONDS_WORKERS_READY
    seen: set[int] = set()
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(seen)} of {workers} workers answered in time")
        seen.update(pool.map(process_id, [seconds] * workers))


def _tasks_per_second(pool: Pool, size: Mapping[str, float], workers: int) -> float:
    pool.map(negate, range(200))  # functions cached, connections warm
    count = int(size["tasks"])
    started = time.perf_counter()
    values = pool.map(negate, range(count))
    seconds = time.perf_counter() - started
    _check(values[-1] == -(count - 1), "wrong result")
    return count / seconds


def _round_trip_ms(pool: Pool, size: Mapping[str, float], workers: int) -> float:
    for number in range(20):
        pool.call(negate, number)
    samples = []
    for number in range(int(size["calls"])):
        started = time.perf_counter()
        pool.call(negate, number)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def _efficiency(pool: Pool, size: Mapping[str, float], workers: int) -> float:
    count, seconds = int(size["tasks"]), size["seconds"]
    started = time.perf_counter()
    pool.map(nap, [seconds] * count)
    wall = time.perf_counter() - started
    return count * seconds / workers / wall


def _payload_megabytes_per_second(pool: Pool, size: Mapping[str, float], workers: int) -> float:
    payload = os.urandom(int(size["megabytes"] * MEGABYTE))
    pool.map(echo, [payload] * workers)
    count = int(size["tasks"])
    started = time.perf_counter()
    values = pool.map(echo, [payload] * count)
    seconds = time.perf_counter() - started
    _check(values[-1] == payload, "the payload came back changed")
    return 2 * count * len(payload) / MEGABYTE / seconds


_MEASURED: dict[str, Callable[[Pool, Mapping[str, float], int], float]] = {
    "tasks": _tasks_per_second,
    "round_trip": _round_trip_ms,
    "sleep": _efficiency,
    "payload": _payload_megabytes_per_second,
    "wide": _efficiency,
}


def not_installed(module: str, environment: str) -> str | None:
    """Why a peer's package cannot be imported in this interpreter, or None.

    Example:
        >>> not_installed("json", "std") is None
        True
    """
    if importlib.util.find_spec(module) is None:
        folder = f".bench/venvs/{environment}"
        return f"{module} is not installed here (make bench installs it in {folder})"
    return None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
