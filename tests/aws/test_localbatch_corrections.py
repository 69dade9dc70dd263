"""Where moto's Batch differs from AWS's documented behaviour, the LocalBatch answers as AWS does.

Each test submits real jobs to the session's LocalBatch through boto3 and checks one rule of
the AWS Batch API reference or user guide that stock moto breaks (batchcrew.localbatch.corrections).
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from batchcrew.localbatch import LocalBatch
from tests.support.batch_jobs import clients, log_messages, submit_python, wait_for_status
from tests.support.job_states import seconds_per_job_state, wait_until_running
from tests.support.polling import wait_until

EXIT_WITH_INDEX_1_FAILING = (
    "import os, sys; sys.exit(int(os.environ['AWS_BATCH_JOB_ARRAY_INDEX'] == '1'))"
)


def described(batch: Any, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = batch.describe_jobs(jobs=[job_id])["jobs"][0]
    return job


def listed_ids(batch: Any, **arguments: Any) -> list[str]:
    return [job["jobId"] for job in batch.list_jobs(**arguments)["jobSummaryList"]]


def test_a_queue_lists_an_array_parent_and_only_arrayjobid_lists_its_children(
    local_batch: LocalBatch,
) -> None:
    batch, _ = clients(local_batch)
    parent = submit_python(batch, local_batch, "pass", name="array", arrayProperties={"size": 3})
    children = [f"{parent}:{index}" for index in range(3)]
    wait_until(lambda: described(batch, parent)["status"] == "SUCCEEDED", seconds=30)
    first_start = min(described(batch, child)["startedAt"] for child in children)
    assert described(batch, parent)["startedAt"] == first_start  # moto says 0

    assert listed_ids(batch, jobQueue=local_batch.job_queue, jobStatus="SUCCEEDED") == [parent]
    summaries = batch.list_jobs(arrayJobId=parent, jobStatus="SUCCEEDED")["jobSummaryList"]
    assert sorted(job["jobId"] for job in summaries) == children
    assert sorted(job["arrayProperties"]["index"] for job in summaries) == [0, 1, 2]
    for index, child in enumerate(children):
        assert described(batch, child)["arrayProperties"] == {"index": index}


def test_listing_without_a_status_gives_the_running_jobs_only(local_batch: LocalBatch) -> None:
    batch, _ = clients(local_batch)
    done = submit_python(batch, local_batch, "pass", name="done")
    wait_for_status(batch, done)
    running = submit_python(batch, local_batch, "import time; time.sleep(60)", name="running")
    wait_until_running(batch, local_batch, running)
    assert listed_ids(batch, jobQueue=local_batch.job_queue) == [running]


def test_an_array_parent_waits_starts_and_fails_with_its_children(
    local_batch: LocalBatch,
) -> None:
    batch, _ = clients(local_batch)
    seconds_per_job_state(local_batch, 1.0)
    sleep = "import time; time.sleep(60)"
    parent = submit_python(batch, local_batch, sleep, name="array", arrayProperties={"size": 2})
    waiting = described(batch, parent)
    assert waiting["status"] == "SUBMITTED"
    assert "startedAt" not in waiting

    # AWS: PENDING once a child is RUNNABLE, never RUNNING; it started when its first child did.
    wait_until_running(batch, local_batch, f"{parent}:0")
    started = wait_until(lambda: described(batch, parent).get("startedAt"), seconds=30)
    assert described(batch, parent)["status"] == "PENDING"
    assert listed_ids(batch, jobQueue=local_batch.job_queue, jobStatus="PENDING") == [parent]
    first_child = min(
        described(batch, f"{parent}:{index}").get("startedAt") or float("inf") for index in (0, 1)
    )
    assert started == first_child

    # Ending the parent ends the children; once they have all failed, so has the parent.
    batch.terminate_job(jobId=parent, reason="enough")
    job = wait_until(lambda: (found := described(batch, parent))["status"] == "FAILED" and found)
    assert job["statusReason"] == "enough"
    assert job["arrayProperties"]["statusSummary"]["FAILED"] == 2
    assert job["stoppedAt"] >= job["startedAt"]
    for index in (0, 1):
        assert described(batch, f"{parent}:{index}")["status"] == "FAILED"


def test_an_array_parent_fails_when_a_child_fails(local_batch: LocalBatch) -> None:
    batch, _ = clients(local_batch)
    parent = submit_python(
        batch, local_batch, EXIT_WITH_INDEX_1_FAILING, name="array", arrayProperties={"size": 3}
    )
    children = [wait_for_status(batch, f"{parent}:{index}") for index in range(3)]
    assert [child["status"] for child in children] == ["SUCCEEDED", "FAILED", "SUCCEEDED"]
    job = wait_until(lambda: (found := described(batch, parent))["status"] == "FAILED" and found)
    summary = job["arrayProperties"]["statusSummary"]
    assert (summary["SUCCEEDED"], summary["FAILED"]) == (2, 1)
    assert job["stoppedAt"] == max(child["stoppedAt"] for child in children)
    assert listed_ids(batch, jobQueue=local_batch.job_queue, jobStatus="FAILED") == [parent]


def test_describe_jobs_gives_the_exit_code_of_the_container_and_its_attempt(
    local_batch: LocalBatch,
) -> None:
    batch, _ = clients(local_batch)
    job_id = submit_python(batch, local_batch, "raise SystemExit(3)", name="exits-3")
    job = wait_for_status(batch, job_id)
    assert job["status"] == "FAILED"
    assert job["container"]["exitCode"] == 3
    assert job["attempts"][-1]["container"]["exitCode"] == 3


def test_a_one_character_job_name_is_accepted(local_batch: LocalBatch) -> None:
    batch, _ = clients(local_batch)
    job_id = submit_python(batch, local_batch, "pass", name="a")
    assert described(batch, job_id)["jobName"] == "a"


def test_log_timestamps_are_integer_milliseconds(local_batch: LocalBatch) -> None:
    batch, logs = clients(local_batch)
    job = wait_for_status(batch, submit_python(batch, local_batch, "print('x')", name="logged"))
    assert log_messages(logs, job) == ["x"]
    events = logs.get_log_events(
        logGroupName="/aws/batch/job", logStreamName=job["container"]["logStreamName"]
    )["events"]
    assert [type(event["timestamp"]) for event in events] == [int]
    assert abs(events[0]["timestamp"] - job["stoppedAt"]) < 60_000


def register(batch: Any, name: str, platform: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "image": "python:3.11-slim",
        "resourceRequirements": [
            {"type": "VCPU", "value": "1"},
            {"type": "MEMORY", "value": "2048"},
        ],
    }
    if platform == "FARGATE":
        properties["executionRoleArn"] = "arn:aws:iam::123456789012:role/execution"
    answer: dict[str, Any] = batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        platformCapabilities=[platform],
        containerProperties=properties,
    )
    return answer


def test_each_revision_keeps_the_platform_it_was_registered_with(
    local_batch: LocalBatch,
) -> None:
    batch, _ = clients(local_batch)
    register(batch, "defn", "EC2")
    register(batch, "defn", "FARGATE")
    register(batch, "defn", "EC2")
    revisions = batch.describe_job_definitions(jobDefinitionName="defn")["jobDefinitions"]
    platforms = {each["revision"]: each["platformCapabilities"] for each in revisions}
    assert platforms == {1: ["EC2"], 2: ["FARGATE"], 3: ["EC2"]}


def test_a_bare_name_runs_the_latest_active_revision_and_an_inactive_one_is_refused(
    local_batch: LocalBatch,
) -> None:
    batch, _ = clients(local_batch)
    name = local_batch.job_definition
    second = register(batch, name, "EC2")
    assert second["revision"] == 2
    batch.deregister_job_definition(jobDefinition=second["jobDefinitionArn"])

    job_id = submit_python(batch, local_batch, "pass", name="bare-name")
    assert described(batch, job_id)["jobDefinition"].endswith(f"job-definition/{name}:1")

    for inactive in (f"{name}:2", second["jobDefinitionArn"]):
        with pytest.raises(ClientError) as refused:
            batch.submit_job(
                jobName="inactive",
                jobQueue=local_batch.job_queue,
                jobDefinition=inactive,
                containerOverrides={"command": ["python", "-c", "pass"]},
            )
        assert refused.value.response["Error"]["Code"] == "ClientException"
        assert "INACTIVE" in refused.value.response["Error"]["Message"]

    batch.deregister_job_definition(jobDefinition=f"{name}:1")
    with pytest.raises(ClientError, match="does not exist"):
        submit_python(batch, local_batch, "pass", name="no-active-revision")
