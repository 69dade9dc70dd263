"""AWS faults between `bc.aws.controller()` and the local Batch: an endpoint on 127.0.0.1 that
throttles, answers with server errors, resets connections mid-call and hangs. No task is lost
or resolved twice, launches are retried, the errors are in `launcher.errors()`, and after
`terminate()` the local Batch itself (not the faulty endpoint) lists no active job
(aws.launcher, aws.copies, aws.config, lifecycle)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import batchcrew as bc
from batchcrew import lifecycle
from batchcrew.aws import AWSConfig, Monitor
from batchcrew.localbatch import LocalBatch
from tests.integration import tasks
from tests.support.batch_jobs import job_options
from tests.support.faulty_endpoint import Fault, FaultyEndpoint
from tests.support.polling import wait_until
from tests.support.processes import wait_until_gone

SUBMIT, DESCRIBE = "/v1/submitjob", "/v1/describejobs"
CANCEL, TERMINATE = "/v1/canceljob", "/v1/terminatejob"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

Make = Callable[..., bc.Controller]
Record = Callable[[str, object], None]


@pytest.fixture
def endpoint(local_batch: LocalBatch) -> Iterator[FaultyEndpoint]:
    with FaultyEndpoint(local_batch.endpoint_url) as faulty:
        yield faulty


@pytest.fixture
def make_controller(local_batch: LocalBatch, endpoint: FaultyEndpoint) -> Iterator[Make]:
    """AWS controllers whose every AWS call goes through the faulty endpoint."""
    made: list[bc.Controller] = []

    def make(
        max_attempts: int = 10, seconds_timeout: float = 60.0, **settings: Any
    ) -> bc.Controller:
        aws = AWSConfig(
            region=local_batch.region,
            endpoint_url=endpoint.url,
            credentials=KEYS,
            max_attempts=max_attempts,
            seconds_timeout=seconds_timeout,
        )
        settings = {"workers": 2, "seconds_launch": 120, "seconds_idle": 60, **settings}
        crew = bc.aws.controller(options=job_options(local_batch), aws=aws, **settings)
        made.append(crew)
        return crew

    yield make
    endpoint.heal()
    for crew in made:
        crew.terminate()


def each_once(results: bc.Results, expected: list[int], crew: bc.Controller | None = None) -> None:
    """Every task resolved, once, with its value (and, with `crew`, nothing else arrived)."""
    assert results.values() == expected
    assert {result.status for result in results} == {"success"}
    assert len({result.name for result in results}) == len(expected)
    if crew is not None:
        assert crew.collect() == [] and len(crew) == 0


def nothing_left(local: LocalBatch, seconds: float = 30.0) -> float:
    """The local Batch itself lists no active job, and no job process is left; returns how
    long it took."""
    started = time.monotonic()
    monitor = Monitor(local.job_definition, local.job_queue, aws=local.aws_config())
    pids = set(local.job_pids().values())
    wait_until(lambda: monitor.active().empty, seconds, every=0.1)
    waited = time.monotonic() - started
    wait_until_gone(pids, seconds)
    wait_until(lambda: not local.job_pids(), seconds, every=0.1)
    return waited


def report(record_property: Record, endpoint: FaultyEndpoint, crew: bc.Controller) -> None:
    """The faults injected, the calls that went through and the launcher's errors, in the
    test's report (`--junitxml`)."""
    for (path, kind), count in sorted(endpoint.injected.items()):
        record_property(f"injected {kind} {path}", count)
    for path, count in sorted(endpoint.forwarded.items()):
        record_property(f"forwarded {path}", count)
    record_property("launcher_errors", len(crew.launcher.errors()))


def messages(crew: bc.Controller, operation: str | None = None) -> list[str]:
    return [
        error.message
        for error in crew.launcher.errors()
        if operation is None or error.operation == operation
    ]


def test_submit_job_throttled_for_10_s_is_retried_and_loses_nothing(
    local_batch: LocalBatch,
    endpoint: FaultyEndpoint,
    make_controller: Make,
    record_property: Record,
) -> None:
    endpoint.inject(SUBMIT, Fault("throttle", seconds=10))
    # Three attempts a call, so that calls run out of them while AWS throttles: the controller
    # launches again with back-off instead of giving the tasks up.
    crew = make_controller(max_attempts=3)
    started = time.monotonic()
    results = crew.map(tasks.square, range(40))
    each_once(results, [x * x for x in range(40)], crew)
    record_property("seconds_map", round(time.monotonic() - started, 1))
    assert time.monotonic() - started >= 10  # nothing was submitted while AWS throttled
    failed = [m for m in messages(crew, "launch") if "TooManyRequestsException" in m]
    assert failed, crew.launcher.errors()  # launches that ran out of attempts...
    assert endpoint.injected[SUBMIT, "throttle"] >= 3 * len(failed)  # ...3 attempts each
    assert endpoint.forwarded[SUBMIT] >= 1
    # The final endings are throttled too, and retried.
    endpoint.inject(CANCEL, Fault("throttle", count=2))
    crew.terminate()
    assert endpoint.injected[CANCEL, "throttle"] == 2
    retried = messages(crew, "CancelJob/TerminateJob")
    assert any("succeeded after 2 retried attempt(s)" in message for message in retried)
    record_property("seconds_until_no_job_active", round(nothing_left(local_batch), 2))
    record_property("launches_failed", len(failed))
    report(record_property, endpoint, crew)


def test_bursts_of_server_errors_are_retried_and_lose_nothing(
    local_batch: LocalBatch,
    endpoint: FaultyEndpoint,
    make_controller: Make,
    tmp_path: Path,
    record_property: Record,
) -> None:
    endpoint.inject(SUBMIT, Fault("server_error", count=6))
    endpoint.inject(DESCRIBE, Fault("server_error", count=4))
    crew = make_controller()
    # A worker that dies mid-task makes the controller ask DescribeJobs why, at once.
    survivor = crew.push(tasks.crash_once, str(tmp_path / "crashed"))
    results = crew.map(tasks.square, range(40))
    each_once(results, [x * x for x in range(40)])
    result = survivor.result(timeout=120)
    assert [late.name for late in crew.collect()] == [survivor.name] and len(crew) == 0
    assert (result.status, result.value, result.attempts) == ("success", "survived", 2)
    assert endpoint.injected[SUBMIT, "server_error"] == 6
    wait_until(lambda: endpoint.injected[DESCRIBE, "server_error"] == 4, seconds=30)
    submitted = messages(crew, "SubmitJob")
    assert any("HTTP 500" in m and "HTTP 504" in m for m in submitted), submitted
    assert any("DescribeJobs" in m and "HTTP 503" in m for m in messages(crew)), messages(crew)
    crew.terminate()
    record_property("seconds_until_no_job_active", round(nothing_left(local_batch), 2))
    report(record_property, endpoint, crew)


@pytest.mark.parametrize("after_forwarding", [False, True], ids=["before", "after"])
def test_connections_reset_mid_call_leave_no_copy_of_a_launch_running(
    local_batch: LocalBatch,
    endpoint: FaultyEndpoint,
    make_controller: Make,
    after_forwarding: bool,
    record_property: Record,
) -> None:
    endpoint.inject(SUBMIT, Fault("reset", count=3, after_forwarding=after_forwarding))
    crew = make_controller()
    results = crew.map(tasks.square, range(40))
    each_once(results, [x * x for x in range(40)], crew)
    assert endpoint.injected[SUBMIT, "reset"] == 3
    # The workers of a copy may have run everything before SubmitJob gave up retrying.
    retried = wait_until(
        lambda: [m for m in messages(crew, "SubmitJob") if "ConnectionClosedError" in m], 30
    )
    (record,) = retried
    monitor = Monitor(
        local_batch.job_definition, local_batch.job_queue, aws=local_batch.aws_config()
    )
    if after_forwarding:
        # Each reset attempt made a job before its answer was cut: the launch has 3 copies.
        assert "(3 times)" in record and "made 3 more job(s)" in record, record
    else:
        assert "made no other job" in record, record
    crew.terminate()
    record_property("seconds_until_no_job_active", round(nothing_left(local_batch), 2))
    report(record_property, endpoint, crew)
    # The copies were ended by the controller or by their own workers, which found their
    # places taken (refused) and exited.
    jobs = monitor.jobs()
    assert set(jobs["status"]) <= {"succeeded", "failed"}
    assert len(jobs) == endpoint.forwarded[SUBMIT]


def test_a_hanging_endpoint_does_not_hang_terminate(
    local_batch: LocalBatch,
    endpoint: FaultyEndpoint,
    make_controller: Make,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Record,
) -> None:
    monkeypatch.setattr(lifecycle, "SECONDS_END_LAUNCHES", 3.0)
    # A call to an endpoint that never answers ends after 2 attempts of 3 s (and the back-off).
    crew = make_controller(max_attempts=2, seconds_timeout=3.0)
    assert crew.push(tasks.square, 3).result(timeout=120).value == 9  # one worker connected
    for path in (SUBMIT, CANCEL, TERMINATE):
        endpoint.inject(path, Fault("hang"))
    crew.walk(tasks.sleep_then, [1, 1])  # a second worker is launched; its SubmitJob hangs
    wait_until(lambda: endpoint.held == 1, seconds=30)
    each_once(crew.map(tasks.square, range(20)), [x * x for x in range(20)])
    started = time.monotonic()
    crew.terminate()
    seconds = time.monotonic() - started
    record_property("seconds_terminate", round(seconds, 2))
    # Workers get 1 s to leave, then the launches 3 s to be ended, which never answer.
    assert seconds < 3.0 + 1.0 + 2.0, f"terminate() took {seconds:.1f} s"
    (unended,) = messages(crew, "terminate")
    assert "not ended within 3 s" in unended
    # The hanging submission fails in the background (2 attempts of 3 s) and says so.
    wait_until(lambda: any("submitted late failed" in m for m in messages(crew)), seconds=30)
    assert endpoint.injected[SUBMIT, "hang"] == 2
    # The endpoint comes back and carries out what it held: the jobs it makes now have no
    # controller to dial, and their workers give up within seconds.
    endpoint.heal()
    record_property(
        "seconds_until_no_job_active_after_healing", round(nothing_left(local_batch), 2)
    )
    report(record_property, endpoint, crew)
