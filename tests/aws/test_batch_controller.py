"""`bc.aws.controller()` end to end on the local Batch: a real moto server, worker jobs that run
as local processes in their own memory limits, real TLS back to the controller
(aws.batch_controller)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import batchcrew as bc
from batchcrew.aws import AWSConfig, Monitor, Options
from batchcrew.aws.launcher import TERMINATE_REASON
from batchcrew.localbatch import LocalBatch
from tests.integration import tasks
from tests.support.batch_jobs import clients, job_options
from tests.support.faulty_endpoint import Fault, FaultyEndpoint
from tests.support.polling import wait_until
from tests.support.processes import alive, memory_cgroups_allowed, wait_until_gone

Make = Callable[..., bc.Controller]
FINISHED = {"SUCCEEDED", "FAILED"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_aws_controller(local_batch: LocalBatch) -> Iterator[Make]:
    """AWS controllers on the local Batch; every one is terminated after the test."""
    made: list[bc.Controller] = []

    def make(options: Options | None = None, **settings: Any) -> bc.Controller:
        settings.setdefault("seconds_idle", 60)
        settings.setdefault("aws", local_batch.aws_config())
        options = options or job_options(local_batch)
        crew = bc.aws.controller(options=options, **settings)
        made.append(crew)
        return crew

    yield make
    for crew in made:
        crew.terminate()


def monitor_of(local: LocalBatch, aws: AWSConfig | None = None) -> Monitor:
    return Monitor(local.job_definition, local.job_queue, aws=aws or local.aws_config())


def parents(local: LocalBatch) -> list[dict[str, Any]]:
    """Every job submitted to the queue, as DescribeJobs sees it (array parents, not children)."""
    batch, _ = clients(local)
    ids = [
        job["jobId"]
        for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", *FINISHED)
        for job in batch.list_jobs(jobQueue=local.job_queue, jobStatus=status)["jobSummaryList"]
    ]
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 100):
        found += batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]
    return found


def test_two_hundred_tasks_on_four_worker_jobs(
    local_batch: LocalBatch, make_aws_controller: Make
) -> None:
    crew = make_aws_controller(workers=4, seconds_launch=120)
    assert crew.host == "127.0.0.1"  # the local Batch runs its jobs on this machine
    results = crew.map(tasks.square, range(200))
    assert results.values() == [x * x for x in range(200)]
    jobs = {job["jobId"]: job for job in parents(local_batch)}
    assert 1 <= len(jobs) <= 4  # a handful of SubmitJob calls, not one per worker
    assert all(result.launch in jobs for result in results)  # each names its Batch job
    for result in results:
        job = jobs[result.launch or ""]
        size = (job.get("arrayProperties") or {}).get("size")
        expected = result.launch if size is None else result.worker
        assert result.worker == expected
        if size is not None:
            assert str(result.worker).startswith(f"{result.launch}:")
    assert any((job.get("arrayProperties") or {}).get("size", 1) >= 2 for job in jobs.values())
    tags = next(iter(jobs.values()))["tags"]
    assert tags["batchcrew:controller"] == crew.name
    assert tags["batchcrew:controller-id"] == crew.id


def test_workers_cycle_and_terminate_leaves_no_job_active(
    local_batch: LocalBatch, make_aws_controller: Make
) -> None:
    crew = make_aws_controller(workers=2, tasks_max=2, seconds_idle=2, seconds_launch=120)
    results = crew.map(tasks.pid, range(8))
    assert len({result.worker for result in results}) >= 4  # at most two tasks each
    crew.push(tasks.sleep_then, 60)
    wait_until(lambda: not monitor_of(local_batch).running().empty, seconds=60)
    pids = set(local_batch.job_pids().values())
    crew.terminate()
    wait_until(lambda: monitor_of(local_batch).active().empty, seconds=30)
    wait_until_gone(pids, seconds=30)


@pytest.mark.skipif(not memory_cgroups_allowed(), reason="no memory cgroup can be made here")
def test_a_task_killed_for_memory_reruns_one_level_up(
    local_batch: LocalBatch, make_aws_controller: Make
) -> None:
    options = job_options(local_batch, memory=[0.25, 1], memory_units="gigabytes")
    crew = make_aws_controller(options, workers=3, crashes_max=3, seconds_launch=120)
    big = crew.push(tasks.allocate_and_touch, 600)
    small = crew.walk(tasks.square, range(6))
    result = big.result(timeout=180)
    assert result.status == "success" and result.value == 600
    assert result.attempts == 2  # killed once at 0.25 GB, then run at 1 GB
    summary = crew.summary().set_index("worker")
    levels = summary["level"]
    assert levels[result.worker] == 1
    crashed = summary[summary["status"] == "crashed"]
    assert len(crashed) == 1
    assert "ran out of memory at 0.25 GB memory" in crashed["ending"].iloc[0]
    assert {levels[task.result(timeout=120).worker] for task in small} == {0}
    assert crew.launcher.describe_level(1) == "1 GB memory"
    jobs = {job["jobId"]: job for job in parents(local_batch)}
    killed = [job for job in jobs.values() if job["jobId"] != result.launch]
    assert any("OutOfMemoryError" in str(job) for job in killed) or any(
        "OutOfMemoryError" in str(child) for child in children_of(local_batch, killed)
    )


def children_of(local: LocalBatch, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The array children of `jobs`, as DescribeJobs sees them."""
    batch, _ = clients(local)
    ids = [
        f"{job['jobId']}:{index}"
        for job in jobs
        for index in range((job.get("arrayProperties") or {}).get("size", 0))
    ]
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 100):
        found += batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]
    return found


def test_a_task_that_always_kills_its_worker_ends_as_a_crash(
    local_batch: LocalBatch, make_aws_controller: Make
) -> None:
    crew = make_aws_controller(workers=1, crashes_max=2, seconds_launch=120)
    result = crew.push(tasks.crash).result(timeout=180)
    assert result.status == "crash" and result.attempts == 2
    assert result.error is not None and "crashed 2 time(s)" in result.error
    assert f"worker {result.worker}" in result.error


def test_workers_that_cannot_start_are_reported_and_map_returns_errors(
    local_batch: LocalBatch, make_aws_controller: Make
) -> None:
    # The interpreter cannot start.
    options = job_options(local_batch, environment={"PYTHONHOME": "/nonexistent-python-home"})
    crew = make_aws_controller(options, workers=2, seconds_launch=120)
    with pytest.raises(bc.TaskError) as raised:
        crew.map(tasks.square, range(3))
    results = raised.value.results
    assert [result.status for result in results] == ["error"] * 3
    assert "launches in a row failed" in (results[0].error or "")
    errors = crew.launcher.errors()
    assert any("ended before connecting" in error.message for error in errors)
    assert any("exit code 1" in error.message for error in errors)


def test_killing_the_controller_ends_every_job(local_batch: LocalBatch) -> None:
    script = textwrap.dedent(
        f"""
        import batchcrew as bc
        from tests.integration import tasks
        aws = bc.aws.AWSConfig(region="us-east-1", endpoint_url={local_batch.endpoint_url!r})
        options = bc.aws.Options({local_batch.job_definition!r}, {local_batch.job_queue!r})
        crew = bc.aws.controller(workers=3, options=options, aws=aws, seconds_launch=120)
        crew.walk(tasks.sleep_then, [300, 300, 300])
        import time
        while (crew.summary()["status"] == "connected").sum() < 3:
            time.sleep(0.05)
        print("busy", flush=True)
        time.sleep(600)
        """
    )
    environment = {**os.environ, **local_batch.environment_variables()}
    controller = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert controller.stdout is not None
        assert controller.stdout.readline().strip() == "busy"
        pids = set(local_batch.job_pids().values())
        assert len(pids) == 3 and alive(pids) == pids
        controller.send_signal(signal.SIGKILL)
        controller.wait(timeout=10)
        # Each worker sees its controller's sockets close and leaves, mid-task.
        wait_until(lambda: monitor_of(local_batch).active().empty, seconds=90)
        wait_until_gone(pids, seconds=30)
    finally:
        controller.kill()
        controller.wait()


SECONDS_IDLE_JOBS_END = 10.0
"""How soon the jobs of idle workers end once their controller is SIGKILLed: the workers see
its connections close at once and leave (docs/reliability.md)."""


def test_killing_the_controller_ends_every_idle_job(
    local_batch: LocalBatch, record_property: Callable[[str, object], None]
) -> None:
    script = textwrap.dedent(
        f"""
        import time
        import batchcrew as bc
        from tests.integration import tasks
        aws = bc.aws.AWSConfig(region="us-east-1", endpoint_url={local_batch.endpoint_url!r})
        options = bc.aws.Options(
            {local_batch.job_definition!r}, {local_batch.job_queue!r},
            environment={{"PYTHONPATH": {str(ROOT)!r}}},
        )
        crew = bc.aws.controller(
            workers=3, options=options, aws=aws, seconds_launch=120, seconds_idle=600
        )
        assert crew.map(tasks.sleep_then, [0.5] * 6, range(6)).values() == list(range(6))
        while (crew.summary()["status"] == "connected").sum() < 3:
            time.sleep(0.05)
        print("idle", flush=True)
        time.sleep(600)
        """
    )
    environment = {**os.environ, **local_batch.environment_variables(), "PYTHONPATH": str(ROOT)}
    controller = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert controller.stdout is not None
        assert controller.stdout.readline().strip() == "idle"
        jobs = local_batch.job_pids()
        assert len(jobs) == 3 and alive(jobs.values()) == set(jobs.values())
        batch, _ = clients(local_batch)
        controller.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        controller.wait(timeout=10)

        def all_ended() -> bool:
            described = batch.describe_jobs(jobs=list(jobs))["jobs"]
            return len(described) == 3 and all(job["status"] in FINISHED for job in described)

        wait_until(all_ended, seconds=SECONDS_IDLE_JOBS_END, every=0.05)
        record_property("seconds_until_every_job_ended", round(time.monotonic() - killed, 2))
        wait_until_gone(jobs.values(), seconds=SECONDS_IDLE_JOBS_END)
        assert monitor_of(local_batch).active().empty
        described = batch.describe_jobs(jobs=list(jobs))["jobs"]
        assert {job["status"] for job in described} == {"SUCCEEDED"}  # they left, not killed
    finally:
        controller.kill()
        controller.wait()


def test_terminate_ends_the_job_of_a_worker_stuck_in_a_task(
    local_batch: LocalBatch, make_aws_controller: Make, tmp_path: Path
) -> None:
    crew = make_aws_controller(workers=1, seconds_launch=120)
    record = tmp_path / "children"
    # The task blocks the signals that stop tasks and sleeps in C code holding the
    # interpreter: its worker cannot leave when told to.
    crew.push(tasks.start_children_and_get_stuck, str(record))
    wait_until(lambda: record.exists() and record.read_text().strip(), seconds=60)
    ((job_id, pid),) = local_batch.job_pids().items()
    children = {int(child) for child in record.read_text().split()}
    crew.terminate()
    batch, _ = clients(local_batch)

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = batch.describe_jobs(jobs=[job_id])["jobs"][0]
        return job if job["status"] in FINISHED else None

    job = wait_until(ended, seconds=30)
    assert job["statusReason"] == TERMINATE_REASON
    wait_until_gone({pid, *children}, seconds=30)


def test_sigterm_ends_every_job_of_the_controller(local_batch: LocalBatch) -> None:
    script = textwrap.dedent(
        f"""
        import batchcrew as bc
        from tests.integration import tasks
        aws = bc.aws.AWSConfig(region="us-east-1", endpoint_url={local_batch.endpoint_url!r})
        options = bc.aws.Options({local_batch.job_definition!r}, {local_batch.job_queue!r})
        crew = bc.aws.controller(workers=2, options=options, aws=aws, seconds_launch=120)
        crew.walk(tasks.sleep_then, [300, 300, 300, 300])  # two run, two wait
        import time
        while (crew.summary()["status"] == "connected").sum() < 2:
            time.sleep(0.05)
        print("busy", flush=True)
        time.sleep(600)
        """
    )
    environment = {**os.environ, **local_batch.environment_variables()}
    controller = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert controller.stdout is not None
        assert controller.stdout.readline().strip() == "busy"
        controller.send_signal(signal.SIGTERM)
        assert controller.wait(timeout=60) == 128 + signal.SIGTERM
        # Every job was told to end before the process exited; AWS ends them in a moment.
        wait_until(lambda: monitor_of(local_batch).active().empty, seconds=30)
    finally:
        controller.kill()
        controller.wait()


@pytest.mark.parametrize("processes", [None, 4])
def test_calls_at_once_or_on_threads_give_the_same_results(
    make_aws_controller: Make, processes: int | None
) -> None:
    crew = make_aws_controller(workers=2, processes=processes, seconds_launch=120)
    assert crew.map(tasks.square, range(20)).values() == [x * x for x in range(20)]


def test_a_slow_submit_job_does_not_stall_connected_workers(
    local_batch: LocalBatch, make_aws_controller: Make
) -> None:
    with FaultyEndpoint(local_batch.endpoint_url) as endpoint:
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        aws = AWSConfig(region="us-east-1", endpoint_url=endpoint.url, credentials=credentials)
        crew = make_aws_controller(workers=2, aws=aws, processes=4, seconds_launch=120)
        assert crew.push(tasks.square, 3).result(timeout=120).value == 9  # one worker now
        endpoint.inject("/v1/submitjob", Fault("hang"))
        # Two tasks for one worker: a second worker is launched, its SubmitJob held back...
        crew.walk(tasks.sleep_then, [1, 1])
        wait_until(lambda: endpoint.held == 1, seconds=30)
        # ...and meanwhile the connected worker runs everything.
        results = crew.map(tasks.square, range(20))
        assert results.values() == [x * x for x in range(20)]
        assert endpoint.held == 1
        endpoint.heal()
        crew.terminate()  # while its endpoint is there to take the last calls
