"""The monitor against moto's Batch and Logs in server mode (batchcrew.aws.monitor).

What moto cannot show (ListJobs pages, the 100-id limit of DescribeJobs, its ignored filters) is
covered with Stubber in tests/unit/test_aws_monitor.py.
"""

from __future__ import annotations

import io
import logging
import time

import pytest

from batchcrew.aws.definition import JobDefinition
from batchcrew.aws.monitor import Monitor
from batchcrew.aws.validation import JOB_STATUSES
from batchcrew.errors import AWSError
from tests.aws.controlplane_fixtures import (  # noqa: F401 (fixtures are used by name)
    BatchEnvironment,
    batch_env_fixture,
    controlplane_moto_server_fixture,
)
from tests.polling import wait_until


def register(batch_env: BatchEnvironment, name: str = "defn") -> JobDefinition:
    definition = JobDefinition(name, batch_env.job_queue, aws=batch_env.aws_config())
    definition.register(image="python:3.11-slim", cpus=1, memory=512, memory_units="MiB")
    return definition


def monitor_for(batch_env: BatchEnvironment, name: str = "defn") -> Monitor:
    return Monitor(name, batch_env.job_queue, aws=batch_env.aws_config())


def status_of(monitor: Monitor, job_id: str) -> str:
    return str(monitor.status(job_id)["status"].iloc[0])


def test_a_job_is_listed_under_each_state_it_goes_through(batch_env: BatchEnvironment) -> None:
    register(batch_env)
    register(batch_env, "someone-else")
    monitor = monitor_for(batch_env)
    assert batch_env.docker is not None
    batch_env.docker.hold = True  # the job will wait in RUNNING for a container
    batch_env.seconds_per_job_state(1.0)
    job_id = monitor.submit("walker", ["true"])["id"].iloc[0]
    other_id = monitor_for(batch_env, "someone-else").submit("other", ["true"])["id"].iloc[0]

    seen: set[str] = set()
    before_the_end = {"submitted", "pending", "runnable", "starting", "running"}

    def everything_before_the_end_seen() -> bool:
        # Only the states not seen yet are asked, so that a round stays short under load.
        for state in [each for each in JOB_STATUSES if each not in seen]:
            frame = getattr(monitor, state)()
            assert other_id not in set(frame["id"]), "a job of another definition was listed"
            if job_id in set(frame["id"]):
                assert frame.loc[frame["id"] == job_id, "status"].iloc[0] == state
                seen.add(state)
        return before_the_end <= seen

    wait_until(everything_before_the_end_seen, seconds=30, every=0.05)
    assert job_id in set(monitor.active()["id"])
    assert job_id not in set(monitor.inactive()["id"])

    batch_env.docker.release()  # no container after all: the job fails
    wait_until(lambda: job_id in set(monitor.failed()["id"]), seconds=15)
    assert job_id in set(monitor.inactive()["id"])
    assert job_id not in set(monitor.active()["id"])

    batch_env.jobs_succeed_at_submit()
    done_id = monitor.submit("done", ["true"])["id"].iloc[0]
    assert monitor.succeeded()["id"].tolist() == [done_id]
    everything = monitor.jobs()
    assert set(everything["id"]) == {job_id, done_id}
    assert dict(zip(everything["id"], everything["status"], strict=True)) == {
        job_id: "failed",
        done_id: "succeeded",
    }
    assert set(everything["queue"]) == {batch_env.job_queue}
    assert everything["created"].notna().all()


def test_status_describes_jobs_by_id(batch_env: BatchEnvironment) -> None:
    register(batch_env)
    monitor = monitor_for(batch_env)
    first = monitor.submit("first", ["echo", "1"])["id"].iloc[0]
    second = monitor.submit("second", ["echo", "2"])["id"].iloc[0]
    wait_until(lambda: set(monitor.status([first, second])["status"]) == {"failed"}, seconds=15)

    frame = monitor.status([second, first])
    assert frame["id"].tolist() == [second, first]
    assert frame["name"].tolist() == ["second", "first"]
    assert set(frame["queue"]) == {batch_env.job_queue}
    assert frame["stopped"].notna().all()
    assert frame["details"].iloc[0]["jobQueue"] == batch_env.job_queue_arn
    assert frame["details"].iloc[0]["container"]["command"] == ["echo", "2"]
    assert frame["log_stream"].isna().all()  # no container ever ran

    with pytest.raises(AWSError, match=r"DescribeJobs in us-east-1 on job no-such-id failed"):
        monitor.status("no-such-id")


def test_terminate_ends_jobs_that_have_not_started_with_the_reason(
    batch_env: BatchEnvironment,
) -> None:
    register(batch_env)
    monitor = monitor_for(batch_env)
    batch_env.seconds_per_job_state(1.0)
    ids = [monitor.submit(f"job-{n}", ["sleep", "60"])["id"].iloc[0] for n in range(3)]
    progress: list[tuple[int, int]] = []
    ended = monitor.terminate(
        ids[:2], reason="test is over", progress=lambda done, total: progress.append((done, total))
    )
    assert ended == ids[:2]
    assert progress == [(1, 2), (2, 2)]
    batch_env.job_states_at_full_speed()
    wait_until(lambda: set(monitor.status(ids[:2])["status"]) == {"failed"}, seconds=20)
    assert monitor.status(ids[:2])["reason"].tolist() == ["test is over", "test is over"]
    assert monitor.status(ids[2])["reason"].isna().all()


def test_terminate_all_ends_only_the_active_jobs_of_this_definition(
    batch_env: BatchEnvironment,
) -> None:
    register(batch_env)
    register(batch_env, "someone-else")
    monitor = monitor_for(batch_env)
    others = monitor_for(batch_env, "someone-else")
    batch_env.seconds_per_job_state(1.0)
    ours = {monitor.submit(f"ours-{n}", ["true"])["id"].iloc[0] for n in range(2)}
    theirs = others.submit("theirs", ["true"])["id"].iloc[0]

    assert set(monitor.terminate(all=True)) == ours
    batch_env.job_states_at_full_speed()
    wait_until(lambda: set(monitor.status(sorted(ours))["status"]) == {"failed"}, seconds=20)
    assert set(monitor.status(sorted(ours))["reason"]) == {
        "cancelled/terminated by the batchcrew monitor"
    }
    assert others.status(theirs)["reason"].isna().all()
    assert monitor.terminate(all=True) == []


def test_log_of_a_job_that_never_ran_is_empty_with_its_status(
    batch_env: BatchEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    register(batch_env)
    monitor = monitor_for(batch_env)
    job_id = monitor.submit("no-container", ["true"])["id"].iloc[0]
    wait_until(lambda: status_of(monitor, job_id) == "failed", seconds=15)
    output = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="batchcrew.aws.monitor"):
        frame = monitor.log(job_id, file=output)
    assert frame.empty
    assert output.getvalue() == ""
    assert f"job {job_id} is failed and has no log stream yet" in caplog.text


def test_log_reads_the_jobs_stream_from_cloudwatch(
    batch_env: BatchEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    register(batch_env)
    monitor = monitor_for(batch_env)
    batch_env.jobs_succeed_at_submit()
    job_id = monitor.submit("logged", ["echo", "hello"])["id"].iloc[0]
    stream = monitor.status(job_id)["log_stream"].iloc[0]
    assert stream == f"defn/default/{job_id}"

    # moto names the stream but writes no logs without a container: reading says so.
    with caplog.at_level(logging.WARNING, logger="batchcrew.aws.monitor"):
        assert monitor.log(job_id, file=io.StringIO()).empty
    assert f"job {job_id} is succeeded and has no readable log stream {stream}" in caplog.text

    logs = batch_env.client("logs")
    logs.create_log_group(logGroupName="/aws/batch/job")
    logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
    now = int(time.time() * 1000)
    lines = [f"line {n}" for n in range(30)]
    logs.put_log_events(
        logGroupName="/aws/batch/job",
        logStreamName=stream,
        logEvents=[{"timestamp": now + n, "message": line} for n, line in enumerate(lines)],
    )
    output = io.StringIO()
    frame = monitor.log(job_id, file=output)
    assert output.getvalue().splitlines() == lines
    assert frame["message"].tolist() == lines
    assert frame["timestamp"].is_monotonic_increasing
    assert frame["ingestion_time"].notna().all()
    assert (
        monitor.log(job_id, file=io.StringIO(), start_from_head=False)["message"].tolist() == lines
    )


def test_submitting_to_unknown_names_is_a_clear_error(batch_env: BatchEnvironment) -> None:
    register(batch_env)
    with pytest.raises(AWSError) as caught:
        monitor_for(batch_env, "no-such-definition").submit("x", ["true"])
    assert caught.value.operation == "SubmitJob"
    assert caught.value.region == batch_env.region
    assert "job definition no-such-definition" in caught.value.resource
    assert "ClientException" in caught.value.reason

    wrong_queue = Monitor("defn", "no-such-queue", aws=batch_env.aws_config())
    with pytest.raises(AWSError, match="on job queue no-such-queue failed: ClientException"):
        wrong_queue.submit("x", ["true"])


def test_a_queue_given_by_arn_is_listed_by_name(batch_env: BatchEnvironment) -> None:
    register(batch_env)
    monitor = Monitor("defn", [batch_env.job_queue_arn], aws=batch_env.aws_config())
    batch_env.jobs_succeed_at_submit()
    monitor.submit("by-arn", ["true"])
    assert monitor.succeeded()["queue"].tolist() == [batch_env.job_queue]
