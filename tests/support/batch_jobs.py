"""Submitting Python snippets as Batch jobs to a LocalBatch and reading what became of them.

Owns the few boto3 calls the LocalBatch tests repeat; every client is aimed at the LocalBatch's
loopback endpoint with fake keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3

from batchcrew.aws import Options
from batchcrew.localbatch import LocalBatch
from tests.support.polling import wait_until

FINISHED = ("SUCCEEDED", "FAILED")
ROOT = Path(__file__).resolve().parents[2]


def job_options(local: LocalBatch, **settings: Any) -> Options:
    """Options for worker jobs that find the tests' task functions, as an image holds your
    code: the functions travel by reference, so the workers must be able to import them."""
    environment = {"PYTHONPATH": str(ROOT), **settings.pop("environment", {})}
    return Options(local.job_definition, local.job_queue, environment=environment, **settings)


def clients(local: LocalBatch) -> tuple[Any, Any]:
    """boto3 `batch` and `logs` clients for `local`."""
    arguments = local.client_kwargs()
    batch: Any = boto3.client("batch", **arguments)  # type: ignore[call-overload]
    logs: Any = boto3.client("logs", **arguments)  # type: ignore[call-overload]
    return batch, logs


def submit_python(
    batch: Any, local: LocalBatch, code: str, name: str = "job", **submit: Any
) -> str:
    """Submit `python -c code` (plain `python`, as the AWS launcher does); return the job id."""
    overrides = submit.pop("containerOverrides", {})
    overrides.setdefault("command", ["python", "-c", code])
    answer = batch.submit_job(
        jobName=name,
        jobQueue=local.job_queue,
        jobDefinition=local.job_definition,
        containerOverrides=overrides,
        **submit,
    )
    job_id: str = answer["jobId"]
    return job_id


def wait_for_status(
    batch: Any, job_id: str, statuses: tuple[str, ...] = FINISHED, seconds: float = 30.0
) -> dict[str, Any]:
    """Poll DescribeJobs until the job reaches one of `statuses`; return its description."""

    def described() -> dict[str, Any]:
        jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
        return jobs[0] if jobs and jobs[0]["status"] in statuses else {}

    job: dict[str, Any] = wait_until(described, seconds)
    return job


def summary(batch: Any, local: LocalBatch, job_id: str, status: str) -> dict[str, Any]:
    """The job's ListJobs summary (where moto reports the exit code)."""
    listed = batch.list_jobs(jobQueue=local.job_queue, jobStatus=status)["jobSummaryList"]
    matches = [job for job in listed if job["jobId"] == job_id]
    assert matches, f"job {job_id} not listed as {status}"
    found: dict[str, Any] = matches[0]
    return found


def log_messages(logs: Any, job: dict[str, Any]) -> list[str]:
    """Every message of the job's CloudWatch log stream, read until the token repeats."""
    stream = job["container"]["logStreamName"]
    messages: list[str] = []
    token: str | None = None
    while True:
        arguments: dict[str, Any] = {
            "logGroupName": "/aws/batch/job",
            "logStreamName": stream,
            "startFromHead": True,
        }
        if token is not None:
            arguments["nextToken"] = token
        page = logs.get_log_events(**arguments)
        messages.extend(event["message"] for event in page["events"])
        if page.get("nextForwardToken") in (None, token):
            return messages
        token = page["nextForwardToken"]
