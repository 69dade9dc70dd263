"""What users do that a careless engine gets wrong: big errors, early cancels, callbacks."""

from __future__ import annotations

import concurrent.futures
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

import batchcrew as bc
from tests.integration import tasks
from tests.support.polling import wait_until
from tests.support.processes import zombie_children

Make = Callable[..., bc.Controller]


def test_huge_error_texts_are_clipped_and_the_worker_survives(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    big = crew.push(tasks.huge_error).result(timeout=30)
    assert big.status == "error" and big.attempts == 1
    assert big.error is not None and "characters cut" in big.error and len(big.error) < 5_000
    noisy = crew.push(tasks.many_warnings).result(timeout=30)
    assert noisy.value == "done"
    assert len(noisy.warnings) == 51 and noisy.warnings[-1] == "... and 4950 more warnings"
    odd = crew.push(tasks.unprintable_error).result(timeout=30)
    assert odd.status == "error" and odd.error == "_Unprintable (its message could not be shown)"
    assert {big.worker, noisy.worker, odd.worker} == {big.worker}


def test_long_names_are_refused_at_push(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    with pytest.raises(ValueError, match="at most 1024 characters"):
        crew.push(tasks.square, 2, name="n" * 5_000)
    assert len(crew) == 0


def test_cancel_reaches_a_prefetched_task_before_it_runs(
    make_controller: Make, tmp_path: Path
) -> None:
    crew = make_controller(workers=1)
    first = crew.push(tasks.busy_until_marker, str(tmp_path / "first"), name="first")
    second = crew.push(tasks.sleep_then_mark, 0, str(tmp_path / "second"), name="second")
    wait_until((tmp_path / "first").exists)
    second.cancel()
    assert second.result(timeout=10).status == "cancel"
    first.cancel()
    assert first.result(timeout=10).status == "cancel"
    assert crew.push(tasks.square, 3).result(timeout=30).value == 9
    assert not (tmp_path / "second").exists()


def test_cancel_right_after_push_stops_the_task(make_controller: Make, tmp_path: Path) -> None:
    crew = make_controller(workers=1)
    crew.push(tasks.square, 1).result(timeout=30)  # a worker is connected and idle
    for attempt in range(5):
        marker = tmp_path / f"ran-{attempt}"
        task = crew.push(tasks.sleep_then_mark, 60, str(marker))
        task.cancel()
        assert task.result(timeout=10).status == "cancel"
        # The worker is free again long before the 60 s task could have ended.
        assert crew.push(tasks.square, attempt).result(timeout=20).value == attempt**2
        assert not marker.exists()


def test_empty_map(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    assert crew.map(tasks.square, []) == []
    assert crew.map(tasks.square, [], progress=True) == []


def test_map_refused_half_way_leaves_nothing_behind(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    arguments: list[object] = list(range(1_500))
    arguments[1_200] = _Unpicklable()
    with pytest.raises(TypeError, match="cannot be pickled"):
        crew.map(tasks.square, arguments)
    assert len(crew) == 0
    assert crew.map(tasks.square, [4]).values() == [16]


class _Unpicklable:
    def __reduce__(self) -> object:
        raise RuntimeError("no pickling")


def test_done_callback_may_use_the_controller(make_controller: Make) -> None:
    crew = make_controller(workers=2)
    with crew.executor() as pool:
        slow = pool.submit(tasks.sleep_then, 60)
        fast = pool.submit(tasks.square, 5)
        fast.add_done_callback(lambda _: crew.cancel())  # runs on the controller's own thread
        assert fast.result(timeout=30) == 25
        with pytest.raises(concurrent.futures.CancelledError):
            slow.result(timeout=10)
    assert crew.summary()["tasks"].sum() >= 1  # the controller still answers


def test_executor_futures_follow_concurrent_futures(make_controller: Make, tmp_path: Path) -> None:
    crew = make_controller(workers=1)
    pool = crew.executor()
    running = pool.submit(tasks.busy_until_marker, str(tmp_path / "running"))
    wait_until((tmp_path / "running").exists)
    assert running.running()
    assert not running.cancel()  # like any executor: a running future cannot be cancelled
    queued = [pool.submit(tasks.square, x) for x in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    # As with ProcessPoolExecutor, one task may already sit on the worker, ready to run next.
    assert sum(future.cancelled() for future in queued) >= len(queued) - 1
    assert not running.cancelled()
    crew.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        running.result(timeout=10)
    crew.terminate()
    with pytest.raises(RuntimeError, match="terminated"):
        crew.push(tasks.square, 1)


def test_exited_workers_are_reaped(make_controller: Make) -> None:
    crew = make_controller(workers=2, tasks_max=1)
    crew.map(tasks.pid, range(6))
    wait_until(lambda: (crew.summary()["status"] == "exited").sum() == 6)
    wait_until(lambda: not zombie_children(), seconds=10)


def test_numpy_is_seeded_apart_from_random(make_controller: Make) -> None:
    pytest.importorskip("numpy")
    first = make_controller(workers=1, seed=99).push(tasks.draws).result(timeout=60)
    second = make_controller(workers=2, seed=99).push(tasks.draws).result(timeout=60)
    assert first.value == second.value  # reproducible, numpy included, on a fresh worker
    random_draw, numpy_draw = first.value
    assert random_draw != numpy_draw


def test_failed_start_leaks_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            crew = bc.Controller(port=port)
            with pytest.raises(bc.BatchcrewError, match="could not listen"):
                crew.start()
        assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_seed_range_is_checked() -> None:
    with pytest.raises(ValueError, match="seed must be an integer from"):
        bc.Controller(seed=2**130)
