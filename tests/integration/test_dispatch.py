"""The controller's loop side with a real server: launches and their ends, bounded records,
verdicts on lost workers, and where results are unpickled."""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable, Sequence

import pytest

import batchcrew as bc
from batchcrew import autoscale, lifecycle, protocol
from batchcrew.errors import AWSError
from batchcrew.launchers.base import LaunchHandle, WorkerStatus
from batchcrew.messages import Outcome
from batchcrew.protocol import Kind
from batchcrew.records import HISTORY_KEPT
from tests.integration import tasks
from tests.support.launchers import RecordingLauncher
from tests.support.light_workers import ThreadLauncher
from tests.support.peers import dial, hello, read_frame
from tests.support.polling import wait_until

Make = Callable[..., bc.Controller]


def test_records_stay_bounded_with_a_worker_per_task(make_controller: Make) -> None:
    crew = make_controller(
        ThreadLauncher(), workers=20, tasks_max=1, seconds_interval=0.02, seconds_idle=30
    )
    results = crew.map(operator.neg, range(5000))
    assert results.values() == [-x for x in range(5000)]
    dispatcher = crew._life.dispatcher
    assert dispatcher is not None
    scheduler, launches, server = dispatcher.scheduler, dispatcher.launching.book, dispatcher.server
    wait_until(lambda: not scheduler.workers and not launches.records, seconds=30)
    assert len(scheduler.history) <= HISTORY_KEPT
    assert scheduler.departures.earlier.workers + len(scheduler.history) == 5000
    assert not scheduler.tasks and not scheduler.awaiting
    wait_until(lambda: server.connections == 0)
    summary = crew.summary()
    assert len(summary) == HISTORY_KEPT + 1  # the rest are added up in one row
    assert int(summary["tasks"].sum()) == 5000


def test_expiry_records_the_launchers_word_and_the_kill_is_no_new_failure(
    make_controller: Make,
) -> None:
    launcher = RecordingLauncher()
    crew = make_controller(launcher, workers=1, seconds_launch=0.5)
    task = crew.push(tasks.square, 2)
    first = wait_until(lambda: launcher.requests and launcher.requests[0])
    launcher.statuses[(first.launch, 0)] = WorkerStatus(
        "queued", "RUNNABLE: no instance type has enough memory"
    )
    wait_until(lambda: launcher.terminated)
    assert launcher.terminated[0] == (first.launch, [0])
    errors = [error for error in launcher.errors() if error.job == f"job-{first.launch}"]
    assert len(errors) == 1
    assert "not connected within seconds_launch=0.5" in errors[0].message
    assert "RUNNABLE: no instance type has enough memory" in errors[0].message
    # The job then ends because it was terminated: that is not reported as a failure again.
    launcher.statuses[(first.launch, 0)] = WorkerStatus("ended", "terminated", 143)
    wait_until(lambda: len(launcher.requests) >= 2)  # replaced while demand remains
    assert not any("ended before connecting" in error.message for error in launcher.errors())
    task.cancel()


class SlowLauncher(RecordingLauncher):
    """A launcher whose first submission returns only when the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def launch(self, request: bc.LaunchRequest) -> LaunchHandle:
        if not self.requests:
            self.release.wait(30)
        return super().launch(request)


def test_a_late_submission_is_terminated_as_soon_as_it_returns(make_controller: Make) -> None:
    launcher = SlowLauncher()
    crew = make_controller(launcher, workers=1, seconds_launch=0.3)
    task = crew.push(tasks.square, 2)
    wait_until(lambda: any("not connected within" in error.message for error in launcher.errors()))
    assert not launcher.terminated
    launcher.release.set()
    wait_until(lambda: launcher.terminated, seconds=5)
    assert launcher.terminated[0] == (launcher.requests[0].launch, None)
    task.cancel()


def test_workers_that_never_start_resolve_the_queue_with_the_launchers_reason(
    make_controller: Make,
) -> None:
    class Failing(RecordingLauncher):
        def launch(self, request: bc.LaunchRequest) -> LaunchHandle:
            for index in range(request.count):
                self.statuses[(request.launch, index)] = WorkerStatus(
                    "ended", "CannotPullContainerError: pull access denied", 1
                )
            return super().launch(request)

    crew = make_controller(Failing(), workers=2, seconds_interval=0.05)
    with pytest.raises(bc.TaskError) as raised:
        crew.map(tasks.square, range(5))
    results = raised.value.results
    assert [result.status for result in results] == ["error"] * 5
    assert "CannotPullContainerError: pull access denied" in (results[0].error or "")
    assert "3 launches in a row failed" in (results[0].error or "")


class Throttled(RecordingLauncher):
    """A launcher whose submissions fail as AWS fails them when it throttles, `failures` times
    (None: always)."""

    def __init__(self, failures: int | None) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def launch(self, request: bc.LaunchRequest) -> LaunchHandle:
        self.attempts += 1
        if self.failures is None or self.attempts <= self.failures:
            raise AWSError(
                "SubmitJob",
                "us-east-1",
                "job queue q1",
                "TooManyRequestsException: slow down",
                transient=True,
            )
        return super().launch(request)


def test_submissions_that_fail_for_a_while_are_retried_not_given_up(
    make_controller: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autoscale, "SECONDS_BACKOFF_MAX", 0.05)
    launcher = Throttled(failures=5)
    crew = make_controller(launcher, workers=1, seconds_interval=0.01, seconds_launch=30)
    task = crew.push(tasks.square, 2)
    wait_until(lambda: launcher.requests, seconds=10)  # the sixth submission went through
    assert launcher.attempts == 6
    assert not task.done()  # still waiting for its worker, not given up after 3 failures
    failed = [error.message for error in launcher.errors() if error.operation == "launch"]
    assert len(failed) == 5 and all("TooManyRequestsException" in text for text in failed)
    task.cancel()


def test_submissions_failing_longer_than_seconds_launch_give_the_queue_up(
    make_controller: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autoscale, "SECONDS_BACKOFF_MAX", 0.05)
    launcher = Throttled(failures=None)
    crew = make_controller(launcher, workers=1, seconds_interval=0.01, seconds_launch=0.5)
    result = crew.push(tasks.square, 2).result(timeout=10)
    assert result.status == "error"
    assert "longer than seconds_launch=0.5" in (result.error or "")
    assert "TooManyRequestsException: slow down" in (result.error or "")
    assert launcher.attempts > 3


class Unanswered(RecordingLauncher):
    """A launcher whose terminations do not return until the test lets them."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def terminate(self, handle: LaunchHandle, indices: Sequence[int] | None = None) -> None:
        self.release.wait(30)
        super().terminate(handle, indices)


def test_terminate_waits_a_bounded_time_for_a_launcher_that_does_not_answer(
    make_controller: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "SECONDS_END_LAUNCHES", 0.5)
    launcher = Unanswered()
    crew = make_controller(launcher, workers=1)
    crew.push(tasks.square, 2)
    first = wait_until(lambda: launcher.requests and launcher.requests[0])
    wait_until(lambda: crew._life.call(lambda d: list(d.launching.book.handles()), []))
    started = time.monotonic()
    crew.terminate()
    assert time.monotonic() - started < 0.5 + 2.0
    (unended,) = [error for error in launcher.errors() if error.operation == "terminate"]
    assert unended.job == f"job-{first.launch}" and "not ended within 0.5 s" in unended.message
    launcher.release.set()  # the call goes on in the background, and ends the launch
    wait_until(lambda: launcher.terminated == [(first.launch, None)], seconds=5)


def test_a_submission_still_under_way_at_terminate_is_ended_when_it_returns(
    make_controller: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "SECONDS_END_LAUNCHES", 0.5)
    launcher = SlowLauncher()
    crew = make_controller(launcher, workers=1)
    crew.push(tasks.square, 2)
    wait_until(lambda: launcher.calls_under_way() == 1)  # the submission waits
    started = time.monotonic()
    crew.terminate()
    assert time.monotonic() - started < 0.5 + 2.0
    assert launcher.terminated == []
    launcher.release.set()
    wait_until(lambda: launcher.terminated, seconds=5)
    assert launcher.terminated == [(launcher.requests[0].launch, None)]


def test_a_synchronous_launcher_raises_its_error_at_once(make_controller: Make) -> None:
    class Broken(RecordingLauncher):
        def __init__(self) -> None:
            super().__init__()
            self.processes = None

        def launch(self, request: bc.LaunchRequest) -> LaunchHandle:
            raise bc.LaunchError("no such job queue: q1")

    crew = make_controller(Broken(), workers=1)
    with pytest.raises(bc.LaunchError, match="no such job queue: q1"):
        crew.map(tasks.square, [1])


def test_a_worker_killed_for_memory_sends_its_task_one_level_up(make_controller: Make) -> None:
    launcher = RecordingLauncher(levels=2)
    crew = make_controller(launcher, workers=1)
    task = crew.push(tasks.square, 3)
    request = wait_until(lambda: launcher.requests and launcher.requests[0])
    assert request.level == 0
    with dial(crew) as connection:
        connection.sendall(hello(request))
        assert (welcome := read_frame(connection)) is not None and welcome.kind is Kind.WELCOME
        assert (sent := read_frame(connection)) is not None and sent.kind is Kind.TASK
        launcher.statuses[(request.launch, 0)] = WorkerStatus(
            "ended", "OutOfMemoryError: Container killed due to memory usage", 137, "memory"
        )
    retry = wait_until(lambda: len(launcher.requests) >= 2 and launcher.requests[1])
    assert retry.level == 1
    with dial(crew) as connection:
        connection.sendall(hello(retry))
        read_frame(connection)
        sent = read_frame(connection)
        assert sent is not None and sent.header["name"] == task.name
        body = protocol.result_frame(task.name, Outcome("success", b"\x80\x05K\t."))
        connection.sendall(body)
        result = task.result(timeout=10)
    assert result.value == 9 and result.attempts == 2
    assert result.worker == f"job-{retry.launch}"


class _Recorder:
    """Unpickling it records which thread did it."""

    threads: list[str] = []

    def __reduce__(self) -> tuple[Callable[[], _Recorder], tuple[()]]:
        return (_loaded_in_thread, ())


def _loaded_in_thread() -> _Recorder:
    _Recorder.threads.append(threading.current_thread().name)
    return _Recorder()


def test_results_are_unpickled_by_the_thread_that_takes_them(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    _Recorder.threads.clear()
    value = crew.push(_Recorder).result(timeout=30).value
    assert isinstance(value, _Recorder)
    with crew.executor() as pool:
        assert isinstance(pool.submit(_Recorder).result(timeout=30), _Recorder)
    assert _Recorder.threads == [threading.current_thread().name] * 2


def test_settings_cannot_change_behind_the_controllers_back() -> None:
    crew = bc.Controller(workers=2)
    with pytest.raises(AttributeError):
        crew.workers = 8  # type: ignore[misc]
    assert crew.workers == crew.settings.workers == 2


def test_poll_asks_about_many_launches_in_one_call(make_controller: Make) -> None:
    launcher = RecordingLauncher()
    crew = make_controller(launcher, workers=3, seconds_interval=0.05, seconds_launch=60)
    for count in (1, 2, 3):
        crew.push(tasks.square, count)
        wait_until(lambda count=count: len(launcher.requests) == count)
    wait_until(lambda: any(len(poll) == 3 for poll in launcher.polls))
    crew.cancel()
