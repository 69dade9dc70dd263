"""Throughput, round trip, start-up and memory of batchcrew beside ProcessPoolExecutor.

Both run in this process on the same machine in the same run, so the ratios are comparable
even when the absolute numbers are not. Run with `make bench` or
`python benchmarks/throughput.py [--tasks 10000] [--queued 100000]`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import operator
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import batchcrew as bc

WORKERS = 2


class IdleLauncher(bc.Launcher):
    """Launches nothing, so every pushed task stays queued (for the memory measurement)."""

    def launch(self, request: bc.LaunchRequest) -> None:
        return None

    def terminate(self, handle: Any, indices: Sequence[int] | None = None) -> None:
        return None

    def poll(self, handle: Any) -> dict[int, str]:
        return {}


def rss_megabytes() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def tasks_per_second(run: Callable[[range], object], tasks: int) -> float:
    run(range(200))  # warm up: workers started, functions cached
    started = time.perf_counter()
    run(range(tasks))
    return tasks / (time.perf_counter() - started)


def median_round_trip_ms(call: Callable[[int], object], count: int = 500) -> float:
    for index in range(20):
        call(index)
    samples = []
    for index in range(count):
        started = time.perf_counter()
        call(index)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def measure_batchcrew(tasks: int) -> dict[str, float]:
    import pandas  # noqa: F401 (loaded before the clock starts: summary() below uses it)

    started = time.perf_counter()
    with bc.Controller(workers=WORKERS, seconds_idle=600) as crew:
        crew.walk(operator.neg, range(WORKERS))
        while (crew.summary()["status"] == "connected").sum() < WORKERS:
            time.sleep(0.001)
        ready = time.perf_counter() - started
        crew.wait()
        crew.collect()
        rate = tasks_per_second(lambda items: crew.map(operator.neg, items), tasks)

        def one(index: int) -> object:
            value = crew.push(operator.neg, index).result().value
            crew.pop()
            return value

        round_trip = median_round_trip_ms(one)
    return {"tasks_per_second": rate, "round_trip_ms": round_trip, "ready_seconds": ready}


def measure_process_pool(tasks: int) -> dict[str, float]:
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(operator.neg, range(WORKERS)))
        ready = time.perf_counter() - started
        rate = tasks_per_second(lambda items: list(pool.map(operator.neg, items)), tasks)
        round_trip = median_round_trip_ms(lambda index: pool.submit(operator.neg, index).result())
    return {"tasks_per_second": rate, "round_trip_ms": round_trip, "ready_seconds": ready}


def memory_batchcrew(queued: int) -> float:
    crew = bc.Controller(IdleLauncher(), workers=WORKERS)
    crew.start()
    gc.collect()
    before = rss_megabytes()
    crew.walk(operator.neg, range(queued))
    gc.collect()
    used = rss_megabytes() - before
    crew.terminate()
    return used


def memory_process_pool(queued: int) -> float:
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        pool.submit(time.sleep, 0).result()
        gc.collect()
        before = rss_megabytes()
        blockers = [pool.submit(time.sleep, 2) for _ in range(WORKERS)]
        futures = [pool.submit(operator.neg, index) for index in range(queued)]
        gc.collect()
        used = rss_megabytes() - before
        for future in futures:
            future.cancel()
        concurrent.futures.wait(blockers)
    return used


def in_subprocess(function: str, argument: int) -> Any:
    """Run one measurement in a fresh interpreter so memory and caches start clean."""
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import throughput as t; "
        f"print(json.dumps(t.{function}({argument})))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--queued", type=int, default=100_000)
    arguments = parser.parse_args(argv)
    ours = in_subprocess("measure_batchcrew", arguments.tasks)
    peer = in_subprocess("measure_process_pool", arguments.tasks)
    ours_memory = in_subprocess("memory_batchcrew", arguments.queued)
    peer_memory = in_subprocess("memory_process_pool", arguments.queued)
    rows = [
        (
            f"tasks/s ({arguments.tasks:,} trivial tasks, {WORKERS} workers)",
            ours["tasks_per_second"],
            peer["tasks_per_second"],
            "{:,.0f}",
        ),
        (
            "median round trip of one task (ms)",
            ours["round_trip_ms"],
            peer["round_trip_ms"],
            "{:.3f}",
        ),
        (f"{WORKERS} workers ready (s)", ours["ready_seconds"], peer["ready_seconds"], "{:.3f}"),
        (f"memory, {arguments.queued:,} tasks queued (MB)", ours_memory, peer_memory, "{:.0f}"),
    ]
    print(f"{'measure':<44} {'batchcrew (TLS)':>16} {'ProcessPool':>12} {'ratio':>7}")
    for label, mine, theirs, form in rows:
        ratio = mine / theirs if theirs else float("nan")
        print(f"{label:<44} {form.format(mine):>16} {form.format(theirs):>12} {ratio:>6.2f}x")


if __name__ == "__main__":
    main()
