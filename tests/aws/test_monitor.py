"""The monitor against a LocalBatch: moto's Batch and Logs, jobs run as local processes.

Jobs really go through their states, succeed or fail by their own exit codes and write their
output to CloudWatch Logs (batchcrew.aws.monitor). What moto cannot show (ListJobs pages, the
100-id limit of DescribeJobs, its ignored filters) is covered with Stubber in
tests/unit/test_aws_monitor.py.
"""

from __future__ import annotations

import io
import logging

import boto3
import pytest

from batchcrew.aws.definition import JobDefinition
from batchcrew.aws.monitor import Monitor
from batchcrew.aws.validation import JOB_STATUSES
from batchcrew.errors import AWSError
from batchcrew.localbatch import LocalBatch
from tests.support.batch_jobs import clients
from tests.support.job_states import (
    job_states_at_full_speed,
    seconds_per_job_state,
    sleeping_command,
    wait_until_running,
)
from tests.support.polling import wait_until
from tests.support.processes import group_members, wait_until_gone

QUICK = ["python", "-c", "pass"]
NO_SUCH_PROGRAM = ["batchcrew-test-no-such-program"]  # the container cannot start


def register(local_batch: LocalBatch, name: str = "defn") -> JobDefinition:
    definition = JobDefinition(name, local_batch.job_queue, aws=local_batch.aws_config())
    definition.register(image="python:3.11-slim", cpus=1, memory=512, memory_units="MiB")
    return definition


def monitor_for(local_batch: LocalBatch, name: str = "defn") -> Monitor:
    return Monitor(name, local_batch.job_queue, aws=local_batch.aws_config())


def status_of(monitor: Monitor, job_id: str) -> str:
    return str(monitor.status(job_id)["status"].iloc[0])


def statuses_of(monitor: Monitor, ids: list[str]) -> list[str]:
    return [str(status) for status in monitor.status(ids)["status"]]


def queue_arn(local_batch: LocalBatch) -> str:
    batch = boto3.client("batch", **local_batch.client_kwargs())  # type: ignore[call-overload]
    queues = batch.describe_job_queues(jobQueues=[local_batch.job_queue])["jobQueues"]
    arn: str = queues[0]["jobQueueArn"]
    return arn


def test_a_job_is_listed_under_each_state_it_goes_through(local_batch: LocalBatch) -> None:
    register(local_batch)
    register(local_batch, "someone-else")
    monitor = monitor_for(local_batch)
    seconds_per_job_state(local_batch, 1.0)
    job_id = monitor.submit(sleeping_command(), name="walker")["id"].iloc[0]
    other_id = monitor_for(local_batch, "someone-else").submit(QUICK, name="other")["id"].iloc[0]

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
    batch, _ = clients(local_batch)
    pid = wait_until_running(batch, local_batch, job_id)  # its process really runs
    members = group_members(pid) | {pid}
    assert job_id in set(monitor.active()["id"])
    assert job_id not in set(monitor.inactive()["id"])

    job_states_at_full_speed(local_batch)
    assert monitor.terminate(job_id, reason="walked far enough").ended == (job_id,)
    wait_until(lambda: job_id in set(monitor.failed()["id"]), seconds=15)
    wait_until_gone(members)
    assert monitor.status(job_id)["reason"].tolist() == ["walked far enough"]
    assert job_id in set(monitor.inactive()["id"])
    assert job_id not in set(monitor.active()["id"])

    done_id = monitor.submit(QUICK, name="done")["id"].iloc[0]
    wait_until(lambda: monitor.succeeded()["id"].tolist() == [done_id], seconds=15)
    everything = monitor.jobs()
    assert set(everything["id"]) == {job_id, done_id}
    assert dict(zip(everything["id"], everything["status"], strict=True)) == {
        job_id: "failed",
        done_id: "succeeded",
    }
    assert set(everything["queue"]) == {local_batch.job_queue}
    assert everything["created"].notna().all()
    assert everything["started"].notna().all()
    assert everything["stopped"].notna().all()


def test_status_describes_jobs_by_id(local_batch: LocalBatch) -> None:
    register(local_batch)
    monitor = monitor_for(local_batch)
    first_command = ["python", "-c", "print(1)"]
    second_command = ["python", "-c", "raise SystemExit(2)"]
    first = monitor.submit(first_command, name="first")["id"].iloc[0]
    second = monitor.submit(second_command, name="second")["id"].iloc[0]
    wait_until(lambda: statuses_of(monitor, [first, second]) == ["succeeded", "failed"], seconds=30)

    frame = monitor.status([second, first])
    assert frame["id"].tolist() == [second, first]
    assert frame["name"].tolist() == ["second", "first"]
    assert frame["status"].tolist() == ["failed", "succeeded"]
    assert frame["exit_code"].tolist() == [2, 0]
    assert set(frame["queue"]) == {local_batch.job_queue}
    assert frame["started"].notna().all()
    assert frame["stopped"].notna().all()
    assert frame["details"].iloc[0]["jobQueue"] == queue_arn(local_batch)
    assert frame["details"].iloc[0]["container"]["command"] == second_command
    assert frame["details"].iloc[1]["container"]["command"] == first_command
    assert frame["log_stream"].tolist() == [f"defn/default/{second}", f"defn/default/{first}"]

    with pytest.raises(AWSError, match=r"DescribeJobs in us-east-1 on job no-such-id failed"):
        monitor.status("no-such-id")


def test_terminate_ends_jobs_that_have_not_started_with_the_reason(
    local_batch: LocalBatch,
) -> None:
    register(local_batch)
    monitor = monitor_for(local_batch)
    seconds_per_job_state(local_batch, 60.0)  # the jobs wait in SUBMITTED
    ids = [monitor.submit(sleeping_command(), name=f"job-{n}")["id"].iloc[0] for n in range(2)]
    ids.append(monitor.submit(QUICK, name="job-2")["id"].iloc[0])
    assert statuses_of(monitor, ids) == ["submitted"] * 3
    progress: list[tuple[int, int]] = []
    ended = monitor.terminate(
        ids[:2], reason="test is over", progress=lambda done, total: progress.append((done, total))
    )
    assert ended.ended == tuple(ids[:2])
    assert progress == [(1, 2), (2, 2)]
    job_states_at_full_speed(local_batch)
    wait_until(lambda: statuses_of(monitor, ids) == ["failed", "failed", "succeeded"], seconds=20)
    assert monitor.status(ids[:2])["reason"].tolist() == ["test is over", "test is over"]
    assert monitor.status(ids[2])["reason"].isna().all()


def test_terminate_all_ends_only_the_active_jobs_of_this_definition(
    local_batch: LocalBatch,
) -> None:
    register(local_batch)
    register(local_batch, "someone-else")
    monitor = monitor_for(local_batch)
    others = monitor_for(local_batch, "someone-else")
    batch, _ = clients(local_batch)
    running = monitor.submit(sleeping_command(), name="ours-running")["id"].iloc[0]
    pid = wait_until_running(batch, local_batch, running)
    members = group_members(pid) | {pid}
    seconds_per_job_state(local_batch, 60.0)  # jobs submitted from now on wait in SUBMITTED
    waiting = monitor.submit(sleeping_command(), name="ours-waiting")["id"].iloc[0]
    theirs = others.submit(QUICK, name="theirs")["id"].iloc[0]
    ours = {running, waiting}
    assert statuses_of(monitor, [running, waiting, theirs]) == ["running", "submitted", "submitted"]

    # TerminateJob ends the running one (its process is killed), CancelJob the waiting one.
    assert set(monitor.terminate(all=True).ended) == ours
    job_states_at_full_speed(local_batch)
    wait_until(lambda: set(statuses_of(monitor, sorted(ours))) == {"failed"}, seconds=20)
    wait_until_gone(members)
    assert set(monitor.status(sorted(ours))["reason"]) == {
        "cancelled/terminated by the batchcrew monitor"
    }
    wait_until(lambda: status_of(others, theirs) == "succeeded", seconds=20)
    assert others.status(theirs)["reason"].isna().all()
    assert monitor.terminate(all=True).ended == ()

    # Ids AWS does not know, and jobs already finished, are reported and left alone.
    done = monitor.terminate([running, "no-such-job"])
    assert (done.ended, done.finished, done.unknown) == ((), (running,), ("no-such-job",))


def test_log_of_a_job_that_never_ran_is_empty_with_its_status(
    local_batch: LocalBatch, caplog: pytest.LogCaptureFixture
) -> None:
    register(local_batch)
    monitor = monitor_for(local_batch)
    job_id = monitor.submit(NO_SUCH_PROGRAM, name="no-container")["id"].iloc[0]
    wait_until(lambda: status_of(monitor, job_id) == "failed", seconds=15)
    output = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="batchcrew.aws.logs"):
        frame = monitor.log(job_id, file=output)
    assert frame.empty
    assert output.getvalue() == ""
    assert f"job {job_id} is failed and has no log stream, so there is no log to read" in (
        caplog.text
    )


def test_log_reads_the_jobs_stream_from_cloudwatch(
    local_batch: LocalBatch, caplog: pytest.LogCaptureFixture
) -> None:
    register(local_batch)
    monitor = monitor_for(local_batch)
    lines = [f"line {n}" for n in range(30)]
    code = "for n in range(30): print(f'line {n}')"
    job_id = monitor.submit(["python", "-c", code], name="logged")["id"].iloc[0]
    wait_until(lambda: status_of(monitor, job_id) == "succeeded", seconds=30)
    stream = monitor.status(job_id)["log_stream"].iloc[0]
    assert stream == f"defn/default/{job_id}"

    output = io.StringIO()
    frame = monitor.log(job_id, file=output)
    assert output.getvalue().splitlines() == lines
    assert frame["message"].tolist() == lines
    assert frame["timestamp"].is_monotonic_increasing
    assert frame["ingestion_time"].notna().all()
    assert (
        monitor.log(job_id, file=io.StringIO(), start_from_head=False)["message"].tolist() == lines
    )

    # A stream that is gone (deleted, or expired under the group's retention): reading says so.
    logs = boto3.client("logs", **local_batch.client_kwargs())  # type: ignore[call-overload]
    logs.delete_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
    with caplog.at_level(logging.WARNING, logger="batchcrew.aws.logs"):
        assert monitor.log(job_id, file=io.StringIO()).empty
    assert f"job {job_id} is succeeded and has no readable log stream {stream}" in caplog.text


def test_submitting_to_unknown_names_is_a_clear_error(local_batch: LocalBatch) -> None:
    register(local_batch)
    with pytest.raises(AWSError) as caught:
        monitor_for(local_batch, "no-such-definition").submit(["true"], name="x")
    assert caught.value.operation == "SubmitJob"
    assert caught.value.region == local_batch.region
    assert "job definition no-such-definition" in caught.value.resource
    assert "ClientException" in caught.value.reason

    wrong_queue = Monitor("defn", "no-such-queue", aws=local_batch.aws_config())
    with pytest.raises(AWSError, match="on job queue no-such-queue failed: ClientException"):
        wrong_queue.submit(["true"], name="x")


def test_a_queue_given_by_arn_is_listed_by_name(local_batch: LocalBatch) -> None:
    register(local_batch)
    monitor = Monitor("defn", [queue_arn(local_batch)], aws=local_batch.aws_config())
    job_id = monitor.submit(QUICK, name="by-arn")["id"].iloc[0]
    wait_until(lambda: monitor.succeeded()["id"].tolist() == [job_id], seconds=15)
    assert monitor.succeeded()["queue"].tolist() == [local_batch.job_queue]


def test_an_array_job_is_one_row_whose_status_follows_its_children(
    local_batch: LocalBatch,
) -> None:
    register(local_batch)
    monitor = monitor_for(local_batch)
    batch, _ = clients(local_batch)
    parent = batch.submit_job(
        jobName="array",
        jobQueue=local_batch.job_queue,
        jobDefinition="defn",
        arrayProperties={"size": 3},
        containerOverrides={"command": QUICK},
    )["jobId"]
    wait_until(lambda: monitor.succeeded()["id"].tolist() == [parent], seconds=30)
    assert monitor.jobs()["id"].tolist() == [parent]  # not its three children
    assert monitor.active().empty
    assert monitor.terminate(all=True).ended == ()
