"""`Controller.executor()` keeps the `concurrent.futures` contract, with real workers: the
task's own exceptions, cancelled futures done at once, pending work finished at exit,
initializers, and workers' output on the controller's terminal."""

from __future__ import annotations

import concurrent.futures
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import batchcrew as bc
from batchcrew.executor import RemoteTraceback
from tests.integration import tasks
from tests.support.polling import wait_until

Make = Callable[..., bc.Controller]


def _run_script(script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_failed_task_raises_its_own_exception(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    with crew.executor() as pool:
        error = pool.submit(divmod, 1, 0).exception(timeout=30)
        assert type(error) is ZeroDivisionError
        assert error.args == ("integer division or modulo by zero",)
        assert isinstance(error.__cause__, RemoteTraceback)
        assert "ZeroDivisionError" in str(error.__cause__)
        with pytest.raises(ValueError, match="bad input"):
            list(pool.map(tasks.fail, ["bad input"]))


def test_an_exception_that_cannot_travel_becomes_a_task_error_that_says_so(
    make_controller: Make,
) -> None:
    crew = make_controller(workers=1)
    with crew.executor() as pool:
        with pytest.raises(bc.TaskError, match="could not be pickled on the worker") as raised:
            pool.submit(tasks.raise_unpicklable).result(timeout=30)
        assert raised.value.results[0].traceback is not None
        with pytest.raises(bc.TaskError, match="could not be unpickled here"):
            pool.submit(tasks.raise_only_the_worker_can_load).result(timeout=30)


def test_push_keeps_results_and_carries_the_exception(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    result = crew.push(divmod, 1, 0).result(timeout=30)
    assert result.status == "error" and isinstance(result.exception, ZeroDivisionError)
    with pytest.raises(bc.TaskError) as raised:
        crew.map(divmod, [1, 2], [1, 0])
    failed = raised.value.results.failed()
    assert [r.status for r in failed] == ["error"]
    assert failed.to_frame().shape[0] == 1


def test_a_cancelled_future_is_done_at_once(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    with crew.executor() as pool:
        blocker = pool.submit(tasks.sleep_then, 30)
        wait_until(blocker.running)
        queued = [pool.submit(tasks.square, x) for x in range(3)]
        assert queued[-1].cancel()
        started = time.monotonic()
        done, _ = concurrent.futures.wait([queued[-1]], timeout=10)
        assert done == {queued[-1]} and time.monotonic() - started < 5
        assert next(concurrent.futures.as_completed([queued[-1]], timeout=10)) is queued[-1]
        with pytest.raises(concurrent.futures.CancelledError):
            queued[-1].result()
        crew.cancel()


def test_a_future_cancelled_again_and_again_stays_cancelled_and_troubles_no_one(
    make_controller: Make, caplog: pytest.LogCaptureFixture
) -> None:
    crew = make_controller(workers=1)
    with crew.executor() as pool:
        blocker = pool.submit(tasks.sleep_then, 30)
        wait_until(blocker.running)
        queued = [pool.submit(tasks.square, x) for x in range(20)]
        cancelling = [threading.Thread(target=f.cancel) for f in queued for _ in range(3)]
        for thread in cancelling:
            thread.start()
        for thread in cancelling:
            thread.join()
        # Each is cancelled, or running on the worker (prefetched before the cancels came).
        states = [(f.cancel(), f.cancelled(), f.running()) for f in queued]
        assert all(
            said == cancelled and (cancelled or running) for said, cancelled, running in states
        )
        assert sum(cancelled for _, cancelled, _ in states) >= 10
        assert not blocker.cancel()
        crew.cancel()
        wait_until(blocker.done)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_shutdown_cancelling_fifty_queued_futures_returns(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    pool = crew.executor()
    blocker = pool.submit(tasks.sleep_then, 30)
    wait_until(blocker.running)
    queued = [pool.submit(tasks.square, x) for x in range(50)]
    finished = threading.Event()

    def shut() -> None:
        pool.shutdown(wait=True, cancel_futures=True)
        finished.set()

    threading.Thread(target=shut, daemon=True).start()
    crew.cancel([blocker_name(crew)])  # the running one ends; shutdown then returns
    assert finished.wait(30)
    assert sum(future.cancelled() for future in queued) >= len(queued) - 1
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(tasks.square, 1)


def test_shutdown_cancelling_lets_the_tasks_idle_workers_took_finish(make_controller: Make) -> None:
    crew = make_controller(workers=2, seconds_idle=60)
    with crew.executor() as warm:
        list(warm.map(tasks.sleep_then, [0.3, 0.3]))
    wait_until(lambda: (crew.summary()["status"] == "connected").sum() == 2)
    pool = crew.executor()
    futures = [pool.submit(tasks.sleep_then, 0.2, x) for x in range(20)]
    pool.shutdown(wait=True, cancel_futures=True)
    finished = [f for f in futures if not f.cancelled()]
    assert 2 <= len(finished) <= 10
    assert [f.result() for f in finished] == [futures.index(f) for f in finished]


def blocker_name(crew: bc.Controller) -> str:
    """The name of the one task running on the controller (executor tasks are named by it)."""
    dispatcher = crew._life.dispatcher
    assert dispatcher is not None
    running = [
        state.held[0].spec.name for state in dispatcher.scheduler.workers.values() if state.held
    ]
    assert len(running) == 1
    return running[0]


def test_initializer_runs_once_in_each_worker_before_its_first_task(
    make_controller: Make, tmp_path: Path
) -> None:
    crew = make_controller(workers=2)
    marks = tmp_path / "marks"
    marks.mkdir()
    with crew.executor(initializer=tasks.mark_initialized, initargs=(str(marks),)) as pool:
        pids = set(pool.map(tasks.initialized_pid, range(20)))
    assert {path.name for path in marks.iterdir()} == {str(pid) for pid in pids}
    assert all(path.read_text() == "x" for path in marks.iterdir())  # once per worker
    with crew.executor() as plain:  # another executor on the same workers: no initializer
        assert plain.submit(tasks.square, 3).result(timeout=30) == 9


def test_a_failing_initializer_fails_the_task_with_its_exception(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    pool = crew.executor(initializer=tasks.fail, initargs=("cannot set up",))
    with pool, pytest.raises(ValueError, match="cannot set up"):
        pool.submit(tasks.square, 2).result(timeout=30)
    with pytest.raises(TypeError, match="initializer must be callable"):
        crew.executor(initializer=42)  # type: ignore[arg-type]


def test_pending_work_finishes_before_the_interpreter_exits(tmp_path: Path) -> None:
    done = tmp_path / "done"
    finished = _run_script(
        f"""
        import batchcrew as bc
        from tests.integration import tasks
        crew = bc.Controller(workers=2)
        pool = crew.executor()
        for index in range(10):
            pool.submit(tasks.sleep_then_mark, 0.2, {str(done)!r} + str(index))
        print("submitted", flush=True)
        """
    )
    assert finished.returncode == 0, finished.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"done{index}" for index in range(10)
    )
    assert "RuntimeError" not in finished.stderr


def test_submit_after_interpreter_shutdown_raises() -> None:
    finished = _run_script(
        """
        import atexit
        import batchcrew as bc
        crew = bc.Controller(workers=1)
        pool = crew.executor()
        assert pool.submit(abs, -1).result() == 1

        def late() -> None:
            try:
                pool.submit(abs, -2)
            except RuntimeError as error:
                print("refused:", error, flush=True)

        atexit.register(late)
        """
    )
    assert finished.returncode == 0, finished.stderr
    assert "refused: cannot schedule new futures after interpreter shutdown" in finished.stdout


def test_workers_output_shows_on_the_controllers_terminal(tmp_path: Path) -> None:
    finished = _run_script(
        """
        import batchcrew as bc
        with bc.Controller(workers=1) as crew:
            crew.push(print, "hello from a task").result()
        """
    )
    assert finished.returncode == 0, finished.stderr
    assert "hello from a task" in finished.stdout
    logs = tmp_path / "logs"
    finished = _run_script(
        f"""
        import batchcrew as bc
        launcher = bc.LocalLauncher(log_directory={str(logs)!r})
        with bc.Controller(launcher, workers=1) as crew:
            crew.push(print, "hello to a file").result()
        """
    )
    assert "hello to a file" not in finished.stdout
    assert any("hello to a file" in path.read_text() for path in logs.iterdir())
