"""The AWS Batch jobs gateway: submit, describe and end jobs, for people and launchers alike.

Owns the SubmitJob request (and AWS's limit on container overrides), DescribeJobs in chunks of
100 ids, finding jobs by name, and CancelJob with TerminateJob. Every call goes through
`AWSConfig.call`, so every failure is an `AWSError` naming the operation, the region and the
jobs. It returns plain values: no pandas, and nothing about workers or launches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.validation import (
    check_command,
    check_int,
    check_job_ids,
    check_job_name,
    check_priority,
    check_text,
    environment_list,
    extra_container_overrides,
    retry_strategy_request,
    shared_request_fields,
)
from batchcrew.errors import AWSError

__all__ = [
    "ARRAY_SIZE_MAX",
    "CONTAINER_OVERRIDES_MAX_CHARACTERS",
    "CONTAINER_OVERRIDES_RESERVED_CHARACTERS",
    "DESCRIBE_JOBS_MAX_IDS",
    "Jobs",
    "Submission",
    "SubmittedJob",
    "check_overrides_size",
    "check_reason",
    "jobs_text",
]

logger = logging.getLogger("batchcrew.aws.jobs")

DESCRIBE_JOBS_MAX_IDS = 100
"""The most job ids one DescribeJobs call takes (AWS refuses more)."""

ARRAY_SIZE_MAX = 10_000
"""The most children one array job may have."""

CONTAINER_OVERRIDES_MAX_CHARACTERS = 8192
"""AWS's limit on a job's container overrides, JSON formatting included (it is the limit of the
ECS task overrides that AWS Batch turns them into)."""

CONTAINER_OVERRIDES_RESERVED_CHARACTERS = 1024
"""Characters of that limit left free for what AWS Batch adds itself (its `AWS_BATCH_*`
variables), so that batchcrew's overrides stay far below it."""

REASON_MAX_CHARACTERS = 1024
"""The longest reason CancelJob and TerminateJob accept."""


def check_overrides_size(
    overrides: Mapping[str, Any], what: str = "the container overrides", kept: int = 0
) -> int:
    """The size of `overrides` as AWS counts it; `ValueError` when it is too close to the limit.

    The limit is AWS's, less what AWS Batch adds itself and `kept` more characters that the
    caller keeps for later additions.

    Example:
        >>> check_overrides_size({"command": ["python", "-m", "batchcrew.worker"]})
        46
    """
    size = len(json.dumps(overrides, separators=(",", ":")))
    reserved = CONTAINER_OVERRIDES_RESERVED_CHARACTERS + kept
    allowed = CONTAINER_OVERRIDES_MAX_CHARACTERS - reserved
    if size > allowed:
        raise ValueError(
            f"{what} take {size:,} characters; AWS Batch allows "
            f"{CONTAINER_OVERRIDES_MAX_CHARACTERS:,} in containerOverrides and batchcrew keeps "
            f"{reserved:,} of them free (for the variables AWS Batch and batchcrew add), so at "
            f"most {allowed:,}: shorten the environment"
        )
    return size


def check_reason(reason: object) -> str:
    """A reason for CancelJob and TerminateJob: text of 1 to 1024 characters.

    Example:
        >>> check_reason("no longer needed")
        'no longer needed'
    """
    text = check_text("reason", reason)
    if len(text) > REASON_MAX_CHARACTERS:
        raise ValueError(f"reason must have at most {REASON_MAX_CHARACTERS} characters")
    return text


@dataclass(frozen=True)
class Submission:
    """One SubmitJob request: a plain job, or an array job when `array_size` is 2 or more.

    The container overrides carry `command`, `environment` and `resource_requirements` (the
    `resourceRequirements` list of `aws.resources.resource_requirements`), plus any extra
    members `container_overrides` passes on. The other fields are SubmitJob's own.

    Example:
        >>> submission = Submission("fit", "queue", "defn", ["python", "-V"], array_size=3)
        >>> request = submission.request()
        >>> request["arrayProperties"], request["containerOverrides"]
        ({'size': 3}, {'command': ['python', '-V']})
    """

    name: str
    job_queue: str
    job_definition: str
    command: Sequence[str]
    environment: Mapping[str, str] = field(default_factory=dict)
    resource_requirements: Sequence[Mapping[str, str]] = ()
    array_size: int = 1
    share_identifier: str | None = None
    scheduling_priority_override: int | None = None
    parameters: Mapping[str, str] | None = None
    retry_strategy: Mapping[str, Any] | None = None
    propagate_tags: bool | None = None
    seconds_timeout: int | None = None
    tags: Mapping[str, str] | None = None
    container_overrides: Mapping[str, Any] | None = None

    def overrides(self) -> dict[str, Any]:
        """The `containerOverrides` member, checked against AWS's size limit.

        Example:
            >>> Submission("a", "q", "d", ["true"], environment={"STAGE": "dev"}).overrides()
            {'command': ['true'], 'environment': [{'name': 'STAGE', 'value': 'dev'}]}
        """
        overrides: dict[str, Any] = {"command": check_command(self.command)}
        variables = environment_list(self.environment)
        if variables:
            overrides["environment"] = variables
        if self.resource_requirements:
            overrides["resourceRequirements"] = [dict(each) for each in self.resource_requirements]
        overrides.update(extra_container_overrides(self.container_overrides) or {})
        check_overrides_size(overrides)
        return overrides

    def request(self) -> dict[str, Any]:
        """The keyword arguments of boto3's `submit_job`.

        Example:
            >>> Submission("a", "q", "d", ["true"], seconds_timeout=600).request()["timeout"]
            {'attemptDurationSeconds': 600}
        """
        request: dict[str, Any] = {
            "jobName": check_job_name(self.name),
            "jobQueue": check_text("job_queue", self.job_queue),
            "jobDefinition": check_text("job_definition", self.job_definition),
            "containerOverrides": self.overrides(),
        }
        if check_int("array_size", self.array_size, 1, ARRAY_SIZE_MAX) >= 2:
            request["arrayProperties"] = {"size": self.array_size}
        if self.share_identifier is not None:
            request["shareIdentifier"] = check_text("share_identifier", self.share_identifier)
        priority = check_priority("scheduling_priority_override", self.scheduling_priority_override)
        if priority is not None:
            request["schedulingPriorityOverride"] = priority
        strategy = retry_strategy_request(self.retry_strategy)
        if strategy is not None:
            request["retryStrategy"] = strategy
        request.update(
            shared_request_fields(
                self.seconds_timeout, self.tags, self.propagate_tags, self.parameters
            )
        )
        return request


@dataclass(frozen=True)
class SubmittedJob:
    """What SubmitJob answered: the job's id (the parent's, for an array), name and ARN.

    Example:
        >>> SubmittedJob("6f1c", "fit", "arn:aws:batch:us-east-1:123456789012:job/6f1c").job_id
        '6f1c'
    """

    job_id: str
    name: str
    arn: str | None


class Jobs:
    """Submit, describe and end AWS Batch jobs, one boto3 client shared through `aws`.

    Example:
        Against a local Batch (`local`; on AWS, `AWSConfig(region=...)` and your own queue
        and job definition):

        >>> jobs = Jobs(local.aws_config())
        >>> hello = Submission("hello", local.job_queue, local.job_definition, ["sleep", "60"])
        >>> job = jobs.submit(hello)
        >>> jobs.describe([job.job_id])[job.job_id]["status"] in {
        ...     "SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"}
        True
        >>> jobs.end([job.job_id], reason="no longer needed") == [job.job_id]
        True
    """

    def __init__(self, aws: AWSConfig | None = None) -> None:
        self._aws = AWSConfig.given_or_default(aws)

    @property
    def aws(self) -> AWSConfig:
        """The AWS configuration (region, endpoint, clients) every call uses."""
        return self._aws

    def submit(self, submission: Submission) -> SubmittedJob:
        """Make one SubmitJob call; an `AWSError` names the definition and the queue.

        Example:
            >>> jobs = Jobs(local.aws_config())
            >>> jobs.submit(Submission("hi", local.job_queue, local.job_definition, ["true"]))
            SubmittedJob(job_id='...', name='hi', arn='arn:aws:batch:...')
        """
        request = submission.request()
        batch = self._aws.client("batch")
        response = self._aws.call(
            "SubmitJob",
            f"job definition {request['jobDefinition']} on job queue {request['jobQueue']}",
            batch.submit_job,
            **request,
        )
        logger.info(
            "submitted job %s (%s) to %s%s",
            response["jobName"],
            response["jobId"],
            request["jobQueue"],
            f" as an array of {submission.array_size}" if submission.array_size >= 2 else "",
        )
        return SubmittedJob(response["jobId"], response["jobName"], response.get("jobArn"))

    def describe(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """AWS's description of every id it knows, by id, asking 100 ids a call at the most.

        An id AWS does not know (a typo, another region, a job aged out) is left out.

        Example:
            >>> jobs = Jobs(local.aws_config())
            >>> job = jobs.submit(Submission("hi", local.job_queue, local.job_definition, ["true"]))
            >>> described = jobs.describe([job.job_id, "no-such-job"])
            >>> list(described) == [job.job_id], described[job.job_id]["jobName"]
            (True, 'hi')
        """
        ids = check_job_ids(job_ids, argument="job_ids")
        batch = self._aws.client("batch")
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), DESCRIBE_JOBS_MAX_IDS):
            chunk = ids[start : start + DESCRIBE_JOBS_MAX_IDS]
            response = self._aws.call(
                "DescribeJobs", jobs_text(chunk), batch.describe_jobs, jobs=chunk
            )
            for job in response.get("jobs", []):
                found[job["jobId"]] = dict(job)
        return found

    def named(self, name: str, job_queue: str) -> list[dict[str, Any]]:
        """Every job called `name` on `job_queue`, in any state (ListJobs' summaries; array
        children are not listed apart from their parent).

        Example:
            >>> jobs = Jobs(local.aws_config())
            >>> once = Submission("once", local.job_queue, local.job_definition, ["true"])
            >>> job = jobs.submit(once)
            >>> job.job_id in [found["jobId"] for found in jobs.named("once", local.job_queue)]
            True
        """
        name = check_job_name(name)
        batch = self._aws.client("batch")
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            request: dict[str, Any] = {
                "jobQueue": job_queue,
                "filters": [{"name": "JOB_NAME", "values": [name]}],
            }
            if token:
                request["nextToken"] = token
            page = self._aws.call("ListJobs", f"job queue {job_queue}", batch.list_jobs, **request)
            found += [
                dict(job) for job in page.get("jobSummaryList", []) if job.get("jobName") == name
            ]
            token = page.get("nextToken")
            if not token:
                return found

    def end(
        self,
        job_ids: Sequence[str],
        reason: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """End jobs in any state: CancelJob (not started yet), then TerminateJob (started).

        An array job's id ends all its children; `<id>:<index>` ends one child. Every job is
        tried even when one fails; the failures are raised together at the end. `progress(done,
        total)` is called after each job. Returns the ids acted on.

        Example:
            >>> jobs = Jobs(local.aws_config())
            >>> pair = Submission("pair", local.job_queue, local.job_definition, ["sleep", "60"],
            ...                   array_size=2)
            >>> job = jobs.submit(pair)
            >>> jobs.end([f"{job.job_id}:1", job.job_id], reason="done") == [
            ...     f"{job.job_id}:1", job.job_id]
            True
        """
        targets = check_job_ids(job_ids, argument="job_ids")
        reason = check_reason(reason)
        batch = self._aws.client("batch")
        failures: list[tuple[str, AWSError]] = []
        for done, job_id in enumerate(targets, start=1):
            try:
                for operation, call in (
                    ("CancelJob", batch.cancel_job),
                    ("TerminateJob", batch.terminate_job),
                ):
                    self._aws.call(operation, f"job {job_id}", call, jobId=job_id, reason=reason)
            except AWSError as error:
                logger.warning("could not end job %s: %s", job_id, error)
                failures.append((job_id, error))
            if progress is not None:
                progress(done, len(targets))
        logger.info("asked AWS Batch to end %d job(s)", len(targets) - len(failures))
        if len(failures) == 1:
            raise failures[0][1]
        if failures:
            raise AWSError(
                "CancelJob/TerminateJob",
                self._aws.region,
                f"{len(failures)} of {len(targets)} jobs",
                "; ".join(f"job {job_id}: {error.reason}" for job_id, error in failures),
            )
        return targets


def jobs_text(ids: Sequence[str]) -> str:
    """How error messages name jobs: one by id, many by their first three ids and a count.

    Example:
        >>> jobs_text(["a"]), jobs_text(["a", "b", "c", "d", "e"])
        ('job a', 'jobs a, b, c and 2 more')
    """
    if len(ids) == 1:
        return f"job {ids[0]}"
    shown = ", ".join(ids[:3])
    more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
    return f"jobs {shown}{more}"
