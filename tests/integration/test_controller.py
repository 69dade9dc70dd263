"""The controller with real local worker processes over real TLS on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import batchcrew as bc
from tests.integration import tasks
from tests.support.polling import wait_until
from tests.support.processes import process_alive

Make = Callable[..., bc.Controller]


def test_map_returns_results_in_input_order(make_controller: Make) -> None:
    crew = make_controller(workers=2)
    results = crew.map(tasks.square, range(50))
    assert results.values() == [x * x for x in range(50)]
    assert all(result.status == "success" and result.attempts == 1 for result in results)
    assert [result.command for result in results[:2]] == ["square(0)", "square(1)"]
    assert len(crew) == 0
    frame = results.to_frame()
    assert list(frame["value"]) == results.values()


def test_push_pop_wait_collect(make_controller: Make) -> None:
    crew = make_controller(workers=2)
    assert crew.pop() is None
    first = crew.push(tasks.square, 3, name="three")
    crew.push(tasks.square, 4, name="four")
    assert len(crew) == 2
    with pytest.raises(ValueError, match="'three' is still held"):
        crew.push(tasks.square, 5, name="three")
    assert first.result(timeout=30).value == 9
    assert crew.wait(mode="all", timeout=30)
    popped = crew.pop()
    assert popped is not None and popped.name in {"three", "four"}
    rest = crew.collect()
    assert {result.name for result in rest} | {popped.name} == {"three", "four"}
    assert len(crew) == 0
    assert first.result().value == 9  # a handle keeps its result after the pop
    crew.push(tasks.square, 5, name="three")  # the name is free again
    result = crew.pop(timeout=None)
    assert result is not None and result.value == 25
    assert crew.pop(timeout=None) is None  # nothing outstanding: returns at once


def test_wait_one_and_timeouts(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    crew.push(tasks.sleep_then, 30, name="slow")
    assert crew.wait(mode="one", timeout=0.2) is False
    assert crew.pop(timeout=0.1) is None
    task = crew.walk(tasks.square, [2])[0]
    with pytest.raises(TimeoutError):
        task.result(timeout=0.05)
    crew.cancel(["slow"])
    assert crew.wait(mode="one", timeout=30)


def test_error_keeps_message_traceback_warnings_and_the_worker(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    failed = crew.push(tasks.fail, "bad input").result(timeout=30)
    assert failed.status == "error"
    assert failed.error == "ValueError: bad input"
    assert failed.traceback is not None and "in fail" in failed.traceback
    assert failed.warnings == ("UserWarning: about to fail: bad input",)
    after = crew.push(tasks.square, 6).result(timeout=30)
    assert after.value == 36 and after.worker == failed.worker


def test_unpicklable_result_is_an_error_not_a_crash(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    result = crew.push(tasks.make_generator).result(timeout=30)
    assert result.status == "error"
    assert result.error is not None and "could not be pickled" in result.error
    assert result.attempts == 1
    assert crew.push(tasks.square, 2).result(timeout=30).worker == result.worker


def test_map_error_modes(make_controller: Make) -> None:
    crew = make_controller(workers=2)
    with pytest.raises(bc.TaskError, match="1 of 3 tasks did not succeed") as raised:
        crew.map(_fail_on_two, [1, 2, 3])
    assert [result.status for result in raised.value.results] == ["success", "error", "success"]
    with pytest.warns(RuntimeWarning, match="did not succeed"):
        warned = crew.map(_fail_on_two, [2], error="warn")
    assert warned[0].status == "error"
    assert crew.map(_fail_on_two, [2], error="ignore")[0].status == "error"
    assert len(crew) == 0


def _fail_on_two(x: int) -> int:
    if x == 2:
        raise RuntimeError("two")
    return x


def test_crashed_task_is_retried_on_another_worker(make_controller: Make, tmp_path: Path) -> None:
    crew = make_controller(workers=1)
    result = crew.push(tasks.crash_once, str(tmp_path / "marker")).result(timeout=60)
    assert result.status == "success" and result.value == "survived"
    assert result.attempts == 2
    summary = crew.summary()
    assert sorted(summary["status"]) == ["connected", "crashed"]
    assert summary["crashes"].sum() == 1


def test_task_that_always_crashes_resolves_as_crash(make_controller: Make) -> None:
    crew = make_controller(workers=2, crashes_max=2)
    result = crew.push(tasks.crash, name="doomed").result(timeout=60)
    assert result.status == "crash"
    assert result.attempts == 2
    assert "crashed 2 time(s)" in (result.error or "")
    assert crew.push(tasks.square, 3).result(timeout=60).value == 9


def test_seeds_reproduce_across_runs_and_worker_counts(make_controller: Make) -> None:
    one = make_controller(workers=1, seed=123)
    two = make_controller(workers=3, seed=123)
    other = make_controller(workers=2, seed=124)
    draws_one = [one.push(tasks.draw).result(timeout=30) for _ in range(6)]
    draws_two = two.map(_draw_ignoring, range(6))
    assert [r.value for r in draws_one] == draws_two.values()
    assert [r.seed for r in draws_one] == [r.seed for r in draws_two]
    assert other.map(_draw_ignoring, range(6)).values() != draws_two.values()


def _draw_ignoring(_: int) -> float:
    return tasks.draw()


def test_idle_workers_exit_and_come_back(make_controller: Make) -> None:
    crew = make_controller(workers=2, seconds_idle=0.5)
    assert crew.summary().empty  # no workers before work arrives
    crew.map(tasks.square, range(4))
    wait_until(lambda: set(crew.summary()["status"]) == {"exited"}, seconds=30)
    assert crew.map(tasks.square, [7]).values() == [49]


def test_tasks_max_gives_each_task_a_fresh_worker(make_controller: Make) -> None:
    crew = make_controller(workers=2, tasks_max=1)
    results = crew.map(tasks.pid, range(4))
    assert len(set(results.values())) == 4
    wait_until(lambda: (crew.summary()["status"] == "exited").sum() == 4, seconds=30)
    assert (crew.summary()["tasks"] == 1).all()


def test_workers_never_exceed_the_limit(make_controller: Make) -> None:
    crew = make_controller(workers=2)
    crew.map(tasks.sleep_then, [0.05] * 20)
    assert len(crew.summary()) <= 2


def test_wall_time_retires_workers_after_their_task(make_controller: Make) -> None:
    crew = make_controller(workers=1, seconds_wall=0.3)
    results = crew.map(tasks.sleep_then, [0.4, 0.4], [1, 2])
    assert results.values() == [1, 2]
    assert results[0].worker != results[1].worker


def test_task_timeout_stops_the_task_and_keeps_the_worker(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    timed_out = crew.push(tasks.sleep_then, 60, seconds_timeout=0.3).result(timeout=30)
    assert timed_out.status == "timeout"
    assert timed_out.error == "timed out after 0.3 s"
    assert crew.push(tasks.square, 5).result(timeout=30).worker == timed_out.worker


def test_cancel_a_running_task(make_controller: Make, tmp_path: Path) -> None:
    crew = make_controller(workers=1)
    marker = tmp_path / "running"
    task = crew.push(tasks.busy_until_marker, str(marker), name="busy")
    queued = crew.push(tasks.square, 2, name="queued")
    wait_until(marker.exists)
    crew.cancel(["busy"])
    assert task.result(timeout=5).status == "cancel"
    assert queued.result(timeout=30).value == 4
    assert queued.result().worker == task.result().worker or task.result().worker is None


def test_cancel_everything(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    handles = crew.walk(tasks.sleep_then, [60] * 5)
    crew.cancel()
    assert {handle.result(timeout=10).status for handle in handles} == {"cancel"}
    assert crew.wait(timeout=5)


def test_terminate_ends_every_worker(make_controller: Make) -> None:
    crew = make_controller(workers=2)
    crew.map(tasks.square, range(4))
    pids = list(crew.summary()["pid"])
    waiting = crew.push(tasks.sleep_then, 60)
    crew.terminate()
    assert waiting.result(timeout=1).status == "cancel"
    wait_until(lambda: not any(process_alive(pid) for pid in pids), seconds=10)
    crew.terminate()  # idempotent
    with pytest.raises(bc.BatchcrewError, match="terminated"):
        crew.push(tasks.square, 1)


def test_token_is_passed_in_the_environment_not_argv(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    crew.push(tasks.square, 1).result(timeout=30)
    pid = int(crew.summary()["pid"][0])
    command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    token = next(item for item in environment if item.startswith(b"BATCHCREW_TOKEN="))
    assert len(token) > len("BATCHCREW_TOKEN=") + 20
    assert not any(token.split(b"=", 1)[1] in part for part in command_line)


def test_executor_face(make_controller: Make) -> None:
    crew = make_controller(workers=2)
    with crew.executor() as pool:
        assert pool.submit(tasks.square, 9).result(timeout=30) == 81
        assert list(pool.map(tasks.square, [1, 2, 3])) == [1, 4, 9]
        failing = pool.submit(tasks.fail, "boom")
        with pytest.raises(ValueError, match="boom") as raised:  # the task's own exception
            failing.result(timeout=30)
        assert isinstance(raised.value.__cause__, bc.executor.RemoteTraceback)
        assert "in fail" in str(raised.value.__cause__)
        slow = pool.submit(tasks.sleep_then, 60)
        wait_until(slow.running)
        assert not slow.cancel()  # a running future cannot be cancelled, as in any executor
        crew.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            slow.result(timeout=10)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(tasks.square, 1)
    wait_until(lambda: len(crew) == 0, seconds=10)


def test_tls_off_on_request(make_controller: Make) -> None:
    crew = make_controller(workers=1, tls=None)
    assert crew.push(tasks.square, 12).result(timeout=30).value == 144


def test_custom_tls_certificate(make_controller: Make, tmp_path: Path) -> None:
    made = bc.TLS.automatic()
    (tmp_path / "c.pem").write_bytes(made.certificate_pem)
    (tmp_path / "k.pem").write_bytes(made.key_pem)
    crew = make_controller(workers=1, tls=bc.TLS.custom(tmp_path / "c.pem", tmp_path / "k.pem"))
    assert crew.push(tasks.square, 11).result(timeout=30).value == 121


def test_log_directory_keeps_worker_output(make_controller: Make, tmp_path: Path) -> None:
    crew = make_controller(bc.LocalLauncher(log_directory=tmp_path / "logs"), workers=1)
    crew.push(tasks.square, 1).result(timeout=30)
    crew.terminate()
    logs = list((tmp_path / "logs").glob("*.log"))
    assert len(logs) == 1
    assert "told to exit" in logs[0].read_text() or "closed" in logs[0].read_text()


def test_broken_interpreter_is_reported_and_tasks_wait(make_controller: Make) -> None:
    launcher = bc.LocalLauncher(python=os.devnull)
    crew = make_controller(launcher, workers=1)
    task = crew.push(tasks.square, 2)
    wait_until(lambda: launcher.errors(), seconds=10)
    assert "cannot start" in launcher.errors()[0].message
    assert not task.done()
    task.cancel()  # the controller is still serving
    assert task.result(timeout=5).status == "cancel"


def test_error_texts_read_well(make_controller: Make, tmp_path: Path) -> None:
    crew = make_controller(workers=1)
    interrupted = crew.push(tasks.interrupt).result(timeout=30)
    assert interrupted.status == "error" and interrupted.error == "KeyboardInterrupt"
    script = tmp_path / "analysis.py"
    script.write_text(
        "import batchcrew as bc\n"
        "\n"
        "def fit(x):\n"
        "    return x / 0\n"
        "\n"
        "if __name__ == '__main__':\n"
        "    with bc.Controller() as crew:\n"
        "        print(crew.push(fit, 1).result().traceback)\n"
    )
    finished = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert f'File "{script}", line 4, in fit' in finished.stdout
    assert "<dynamic-code>" not in finished.stdout


def test_map_refuses_iterables_of_different_lengths(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    with pytest.raises(ValueError, match=r"different lengths \(3, 2\)"):
        crew.map(tasks.square, [1, 2, 3], [10, 20])
    assert crew.map(pow, [1, 2, 3], [2, 2], strict=False).values() == [1, 4]
    assert len(crew) == 0


def test_reprs_are_short_and_say_what_matters(make_controller: Make) -> None:
    crew = make_controller(workers=2)
    crew.map(tasks.square, range(3))
    assert repr(crew).startswith(f"Controller(name={crew.name!r}, workers=2, state='started'")
    assert repr(bc.LocalLauncher(log_directory="logs")).startswith(
        "LocalLauncher(log_directory='logs'"
    )
    with crew.executor() as pool:
        assert repr(pool) == f"ControllerExecutor(controller={crew.name!r}, open, pending=0)"
