"""Soak runs against one controller with real local workers over real TLS on 127.0.0.1:
workers killed at random under load, 100,000 tasks, and every kind of hostile connection while
tasks run. Every task resolves exactly once, nothing outlives the controller, and its memory,
descriptors and threads come back to where they were. Run with `make soak`."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import select
import signal
import threading
from collections.abc import Callable, Iterator

import pytest

import batchcrew as bc
from batchcrew import protocol, server
from batchcrew.protocol import Kind
from tests.integration import tasks
from tests.support.peers import (
    all_refused,
    closed_by_the_server,
    dial,
    open_idle,
    read_until_the_end,
)
from tests.support.polling import wait_until
from tests.support.processes import (
    Footprint,
    PeakMemory,
    kill_leftovers,
    trimmed_footprint,
    wait_until_gone,
)

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1200)]

Record = Callable[[str, object], None]

MEGABYTES_KEPT_MAX = 20
"""How much more memory the controller may hold once a run is over than before it began."""


@pytest.fixture
def baseline() -> Footprint:
    """This process's footprint before the test's controller starts, once a first controller
    has come and gone: what stays for good (pandas, numpy and their threads) is counted in."""
    with bc.Controller(workers=1, seconds_idle=60) as crew:
        crew.map(tasks.square, range(10))
        crew.summary()
    return trimmed_footprint()


def _connected_pids(crew: bc.Controller) -> list[int]:
    summary = crew.summary()
    return [int(pid) for pid in summary[summary["status"] == "connected"]["pid"]]


def _came_back(before: Footprint, record_property: Record, name: str) -> None:
    after = trimmed_footprint()
    record_property(f"{name}_footprint", after.grown_since(before))
    assert after.fds <= before.fds and after.threads <= before.threads, after.grown_since(before)
    assert after.megabytes < before.megabytes + MEGABYTES_KEPT_MAX, after.grown_since(before)


def test_chaos_every_task_resolves_once_with_its_value_while_workers_are_killed(
    baseline: Footprint, record_property: Record
) -> None:
    kills: list[int] = []
    seen: set[int] = set()
    done = threading.Event()
    draws = random.Random(5)
    with bc.Controller(workers=4, crashes_max=1_000, seconds_idle=60) as crew:

        def killer() -> None:  # a random connected worker every 0.5 s, until the work is done
            while not done.wait(0.5):
                pids = _connected_pids(crew)
                seen.update(pids)
                if pids:
                    victim = draws.choice(pids)
                    os.kill(victim, signal.SIGKILL)
                    kills.append(victim)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            results = crew.map(tasks.square_after, range(5_000), [0.003] * 5_000)
        finally:
            done.set()
            thread.join()
        assert results.values() == [x * x for x in range(5_000)]
        assert len({result.name for result in results}) == 5_000
        assert {result.status for result in results} == {"success"}
        assert crew.collect() == [] and len(crew) == 0
        crashed = sum(result.attempts - 1 for result in results)
        seen.update(_connected_pids(crew))
        record_property("kills", len(kills))
        record_property("tasks_retried", crashed)
        assert len(kills) >= 10 and crashed >= 1
    wait_until_gone(seen, seconds=10)
    _came_back(baseline, record_property, "after")


def test_100000_tasks_through_8_workers_stay_within_the_memory_budget(
    baseline: Footprint, record_property: Record
) -> None:
    pids: set[int] = set()
    with PeakMemory() as peak, bc.Controller(workers=8, seconds_idle=60) as crew:
        rounds = []
        for _ in range(2):  # the second round must cost nothing more than the first
            results = crew.map(tasks.square, range(100_000))
            assert results.values() == [x * x for x in range(100_000)]
            del results
            pids.update(int(pid) for pid in crew.summary()["pid"])
            rounds.append(trimmed_footprint())
        first, second = rounds
    record_property("rss_before_mb", round(baseline.megabytes))
    record_property("rss_peak_mb", round(peak.megabytes))
    record_property("after_each_round", f"{first.megabytes:.0f} MB, {second.megabytes:.0f} MB")
    # The budget is the controller's own: what it holds above the process it runs in.
    assert peak.megabytes - baseline.megabytes <= 150, f"{peak.megabytes:.0f} MB at the peak"
    assert second.megabytes < first.megabytes + 10, second.grown_since(first)
    assert (second.fds, second.threads) == (first.fds, first.threads)
    wait_until_gone(pids, seconds=10)
    after = trimmed_footprint()
    record_property("after_footprint", after.grown_since(baseline))
    assert after.fds <= baseline.fds and after.threads <= baseline.threads


@pytest.fixture
def working_controller(monkeypatch: pytest.MonkeyPatch) -> Iterator[bc.Controller]:
    """Two real workers busy with 3,000 tasks for the whole test; their results are checked
    at the end."""
    monkeypatch.setattr(server, "SECONDS_HELLO", 1.0)
    crew = bc.Controller(workers=2, seconds_idle=300)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(crew.map, tasks.square_after, range(3_000), [0.02] * 3_000)
        try:
            wait_until(lambda: len(_connected_pids(crew)) == 2, seconds=30)
            yield crew
            assert running.result(timeout=300).values() == [x * x for x in range(3_000)]
        finally:
            pids = [int(pid) for pid in crew.summary()["pid"]]
            crew.terminate()
            kill_leftovers(pids)


def _slow_loris(crew: bc.Controller, count: int) -> int:
    connections = {dial(crew): 0 for _ in range(count)}
    while connections:  # a byte to each every 0.1 s until the server cuts it
        for connection in connections:
            with contextlib.suppress(OSError):  # cut already: `select` tells it below
                connection.sendall(b"\x01")
        cut, _, _ = select.select(list(connections), [], [], 0.1)
        for connection in cut:
            assert closed_by_the_server(connection)
            del connections[connection]
            connection.close()
    return count


def _idle(crew: bc.Controller, count: int) -> int:
    idle = open_idle(crew, count)
    assert all(closed_by_the_server(connection) for connection in idle)
    for connection in idle:
        connection.close()
    return count


def _each(crew: bc.Controller, data: list[bytes], tls: bool = True, hang_up: bool = False) -> int:
    """One connection per item of `data`, which it sends; then it hangs up at once, or reads
    what the server says until the server ends the connection."""
    for item in data:
        with dial(crew, tls=tls) as connection:
            connection.sendall(item)
            connection.settimeout(10)
            if not hang_up:
                assert {frame.kind for frame in read_until_the_end(connection)} <= {Kind.REFUSE}
    return len(data)


def _floods() -> dict[str, Callable[[bc.Controller], int]]:
    """Each flood by name: it attacks and returns how many connections it made."""
    draws = random.Random(3)
    wrong = protocol.encode(Kind.HELLO, {"token": "x", "launch": "x", "index": 0})
    maximal = protocol.PREFIX.pack(Kind.HELLO, 2**32 - 1, 2**32 - 1)
    streams = [draws.randbytes(draws.randint(1, 5_000)) for _ in range(200)]
    return {
        "500 idle TCP connections": lambda crew: _idle(crew, 500),
        "50 slow-loris connections": lambda crew: _slow_loris(crew, 50),
        "200 random byte streams": lambda crew: _each(crew, streams),
        "100 plaintext streams to the TLS port": lambda crew: _each(crew, streams[:100], False),
        "100 wrong tokens": lambda crew: _each(crew, [wrong] * 100),
        "100 maximal lengths": lambda crew: _each(crew, [maximal] * 100),
        "100 truncated HELLOs": lambda crew: _each(
            crew, [wrong[: i % 60] for i in range(100)], hang_up=True
        ),
    }


def test_every_flood_is_refused_once_per_connection_while_tasks_run(
    working_controller: bc.Controller, record_property: Record
) -> None:
    crew = working_controller
    refused = 0
    for round_ in range(3):
        for name, flood in _floods().items():
            before = trimmed_footprint()
            refused += flood(crew)
            all_refused(crew, refused, workers=2)
            after = trimmed_footprint()
            record_property(f"round {round_ + 1}: {name}", after.grown_since(before))
            assert after.fds <= before.fds, name
            assert after.megabytes < before.megabytes + MEGABYTES_KEPT_MAX, name
    record_property("connections refused", refused)
