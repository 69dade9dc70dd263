"""The jobs gateway against AWS's documented contract, with botocore Stubber (aws.jobs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.jobs import (
    ARRAY_SIZE_MAX,
    DESCRIBE_JOBS_MAX_IDS,
    Jobs,
    Submission,
    check_overrides_size,
)
from batchcrew.errors import AWSError

REGION = "us-east-1"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
def jobs() -> Jobs:
    return Jobs(AWSConfig(region=REGION, credentials=KEYS))


@pytest.fixture
def stub(jobs: Jobs) -> Iterator[Stubber]:
    with Stubber(jobs.aws.client("batch")) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def job(job_id: str, status: str = "RUNNING") -> dict[str, Any]:
    return {
        "jobName": "fit",
        "jobId": job_id,
        "jobQueue": "queue",
        "status": status,
        "jobDefinition": "defn",
        "startedAt": 1,
    }


def test_an_array_submission_is_one_call_with_its_size(jobs: Jobs, stub: Stubber) -> None:
    submission = Submission("fit", "queue", "defn", ["python", "-V"], array_size=ARRAY_SIZE_MAX)
    expected = {
        "jobName": "fit",
        "jobQueue": "queue",
        "jobDefinition": "defn",
        "containerOverrides": {"command": ["python", "-V"]},
        "arrayProperties": {"size": ARRAY_SIZE_MAX},
    }
    stub.add_response(
        "submit_job", {"jobName": "fit", "jobId": "j-1", "jobArn": "arn:j-1"}, expected
    )
    submitted = jobs.submit(submission)
    assert (submitted.job_id, submitted.name, submitted.arn) == ("j-1", "fit", "arn:j-1")


def test_one_job_is_a_plain_job_without_array_properties() -> None:
    assert "arrayProperties" not in Submission("fit", "queue", "defn", ["true"]).request()


@pytest.mark.parametrize("size", [0, ARRAY_SIZE_MAX + 1])
def test_array_sizes_beyond_aws_limits_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="array_size must be at least 1 and at most 10000"):
        Submission("fit", "queue", "defn", ["true"], array_size=size).request()


def test_overrides_over_the_limit_are_refused_before_any_call(jobs: Jobs, stub: Stubber) -> None:
    environment = {f"VARIABLE_{n}": "v" * 100 for n in range(60)}
    with pytest.raises(ValueError, match="characters; AWS Batch allows 8,192"):
        jobs.submit(Submission("fit", "queue", "defn", ["true"], environment=environment))
    # Nothing was stubbed: a call would have failed with a stub error instead.


def test_the_size_is_the_compact_json_aws_counts() -> None:
    assert check_overrides_size({"command": ["a"]}) == len('{"command":["a"]}')
    assert check_overrides_size({"command": ["a" * 7100]}) == 7100 + len('{"command":[""]}')
    with pytest.raises(ValueError, match="at most 6,144"):
        check_overrides_size({"command": ["a" * 7100]}, kept=1024)


def test_a_refused_submission_is_an_aws_error_naming_operation_region_and_resource(
    jobs: Jobs, stub: Stubber
) -> None:
    stub.add_client_error(
        "submit_job", service_error_code="ClientException", service_message="no queue q9"
    )
    with pytest.raises(AWSError) as caught:
        jobs.submit(Submission("fit", "q9", "defn", ["true"]))
    assert str(caught.value) == (
        "SubmitJob in us-east-1 on job definition defn on job queue q9 failed: "
        "ClientException: no queue q9"
    )


def test_describe_asks_100_ids_a_call_and_leaves_out_unknown_ids(jobs: Jobs, stub: Stubber) -> None:
    ids = [f"j-{n}" for n in range(250)]
    for start in (0, 100, 200):
        chunk = ids[start : start + DESCRIBE_JOBS_MAX_IDS]
        known = [job(each) for each in chunk if each != "j-150"]
        stub.add_response("describe_jobs", {"jobs": known}, {"jobs": chunk})
    found = jobs.describe(ids)
    assert len(found) == 249
    assert "j-150" not in found
    assert found["j-249"]["status"] == "RUNNING"


def test_a_failed_describe_names_the_jobs(jobs: Jobs, stub: Stubber) -> None:
    stub.add_client_error(
        "describe_jobs", service_error_code="ServerException", http_status_code=500
    )
    with pytest.raises(AWSError, match=r"DescribeJobs in us-east-1 on jobs a, b, c and 1 more"):
        jobs.describe(["a", "b", "c", "d"])


def test_end_cancels_then_terminates_every_job(jobs: Jobs, stub: Stubber) -> None:
    for job_id in ("p-1", "p-2:3"):
        for operation in ("cancel_job", "terminate_job"):
            stub.add_response(operation, {}, {"jobId": job_id, "reason": "done"})
    progress: list[tuple[int, int]] = []
    assert jobs.end(["p-1", "p-2:3"], "done", lambda *done: progress.append(done)) == [
        "p-1",
        "p-2:3",
    ]
    assert progress == [(1, 2), (2, 2)]


def test_end_tries_every_job_and_raises_the_failures_together(jobs: Jobs, stub: Stubber) -> None:
    stub.add_client_error(
        "cancel_job", service_error_code="ClientException", service_message="gone"
    )
    stub.add_response("cancel_job", {}, {"jobId": "b", "reason": "done"})
    stub.add_response("terminate_job", {}, {"jobId": "b", "reason": "done"})
    stub.add_response("cancel_job", {}, {"jobId": "c", "reason": "done"})
    stub.add_client_error(
        "terminate_job", service_error_code="ClientException", service_message="no"
    )
    with pytest.raises(AWSError) as caught:
        jobs.end(["a", "b", "c"], "done")
    assert caught.value.operation == "CancelJob/TerminateJob"
    assert caught.value.resource == "2 of 3 jobs"
    assert "job a: ClientException: gone" in caught.value.reason
    assert "job c: ClientException: no" in caught.value.reason


def test_end_checks_its_reason(jobs: Jobs) -> None:
    with pytest.raises(ValueError, match="at most 1024"):
        jobs.end(["a"], "x" * 1025)
    with pytest.raises(ValueError, match="reason"):
        jobs.end(["a"], "")
