"""The jobs of one job definition on one or more AWS Batch job queues, listed by status.

Owns ListJobs as people use it: every status asked on its own, every page read, jobs of other
definitions left out, newest first, as a DataFrame. It neither describes, submits nor ends jobs
(see `monitor`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.frames import ColumnKind, table
from batchcrew.aws.validation import (
    ACTIVE_STATUSES,
    INACTIVE_STATUSES,
    check_definition_reference,
    check_queue_reference,
    check_statuses,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["JOB_COLUMNS", "JobListing", "job_row"]

JOB_COLUMNS: dict[str, ColumnKind] = {
    "name": "text",
    "id": "text",
    "arn": "text",
    "queue": "text",
    "status": "text",
    "reason": "text",
    "created": "time",
    "started": "time",
    "stopped": "time",
}


class JobListing:
    """The jobs of one job definition on its job queues, all of them or by status.

    `job_definition` is a name (every revision), `name:revision` or a full ARN. `job_queue`
    is one queue (name or ARN) or a list of them; listing covers them all. Without `aws`,
    `AWSConfig()` finds the region in the usual places. `Monitor` is a listing that also
    inspects, submits, terminates and reads logs.

    Example:
        >>> listing = JobListing(local.job_definition, local.job_queue, aws=local.aws_config())
        >>> listing.job_queues
        ('batchcrew-local-queue',)
        >>> set(listing.inactive()["status"]) <= {"succeeded", "failed"}
        True
    """

    def __init__(
        self,
        job_definition: str,
        job_queue: str | Sequence[str],
        aws: AWSConfig | None = None,
    ) -> None:
        self._job_definition = check_definition_reference(job_definition)
        if isinstance(job_queue, str):
            queues = [check_queue_reference(job_queue)]
        elif isinstance(job_queue, Sequence) and job_queue:
            queues = [check_queue_reference(queue) for queue in job_queue]
        else:
            raise TypeError("job_queue must be a queue name or ARN, or a non-empty list of them")
        self._job_queues = tuple(dict.fromkeys(queues))
        self._aws = AWSConfig.given_or_default(aws)
        self._matches_definition = _definition_matcher(self._job_definition)

    @property
    def job_definition(self) -> str:
        """The job definition whose jobs are listed (name, `name:revision` or ARN)."""
        return self._job_definition

    @property
    def job_queues(self) -> tuple[str, ...]:
        """The job queues listed, without repeats."""
        return self._job_queues

    @property
    def aws(self) -> AWSConfig:
        """The AWS configuration (region, endpoint, clients) of the calls."""
        return self._aws

    def jobs(self, status: str | Sequence[str] | None = None) -> pd.DataFrame:
        """The jobs of this definition on the queues, newest first, optionally only `status`.

        `status` is one of `submitted`, `pending`, `runnable`, `starting`, `running`,
        `succeeded`, `failed` or a list of them; None means all seven. Columns: `name, id,
        arn, queue, status, reason, created, started, stopped`.

        Example:
            >>> list(monitor.jobs(status=["runnable", "running"]).columns)
            ['name', 'id', 'arn', 'queue', 'status', 'reason', 'created', 'started', 'stopped']
        """
        statuses = check_statuses(status)
        rows: list[dict[str, Any]] = []
        for queue in self._job_queues:
            for state in statuses:
                for summary in self._list_jobs(queue, state):
                    if self._matches_definition(summary.get("jobDefinition")):
                        rows.append(job_row(summary, queue))
        frame = table(rows, JOB_COLUMNS)
        # A job that moved on between two per-status calls shows up twice; statuses are asked
        # in lifecycle order, so its last row is the newest news.
        frame = frame.drop_duplicates(subset="id", keep="last")
        frame = frame.sort_values("created", ascending=False, kind="stable", na_position="last")
        result: pd.DataFrame = frame.reset_index(drop=True)
        return result

    def submitted(self) -> pd.DataFrame:
        """Jobs waiting to be evaluated by the scheduler.

        Example:
            >>> set(monitor.submitted()["status"]) <= {"submitted"}
            True
        """
        return self.jobs("submitted")

    def pending(self) -> pd.DataFrame:
        """Jobs waiting on dependencies.

        Example:
            >>> set(monitor.pending()["status"]) <= {"pending"}
            True
        """
        return self.jobs("pending")

    def runnable(self) -> pd.DataFrame:
        """Jobs waiting for compute capacity.

        Example:
            >>> set(monitor.runnable()["status"]) <= {"runnable"}
            True
        """
        return self.jobs("runnable")

    def starting(self) -> pd.DataFrame:
        """Jobs placed on a host whose container is starting.

        Example:
            >>> set(monitor.starting()["status"]) <= {"starting"}
            True
        """
        return self.jobs("starting")

    def running(self) -> pd.DataFrame:
        """Jobs whose container runs.

        Example:
            >>> import time
            >>> job_id = monitor.submit(["sleep", "600"])["id"].iloc[0]
            >>> while job_id not in set(monitor.running()["id"]):
            ...     time.sleep(0.2)
            >>> monitor.terminate(job_id).ended == (job_id,)
            True
        """
        return self.jobs("running")

    def succeeded(self) -> pd.DataFrame:
        """Jobs that exited with code 0.

        Example:
            >>> import time
            >>> job_id = monitor.submit(["python", "-c", "pass"])["id"].iloc[0]
            >>> while job_id not in set(monitor.succeeded()["id"]):
            ...     time.sleep(0.2)
        """
        return self.jobs("succeeded")

    def failed(self) -> pd.DataFrame:
        """Jobs that failed, were cancelled or were terminated.

        Example:
            >>> import time
            >>> job_id = monitor.submit(["python", "-c", "raise SystemExit(3)"])["id"].iloc[0]
            >>> while job_id not in set(monitor.failed()["id"]):
            ...     time.sleep(0.2)
            >>> monitor.status(job_id)["exit_code"].tolist()
            [3]
        """
        return self.jobs("failed")

    def active(self) -> pd.DataFrame:
        """Jobs not finished yet: submitted, pending, runnable, starting or running.

        Example:
            >>> sorted(set(monitor.active()["status"]) - {"submitted", "pending", "runnable",
            ...                                          "starting", "running"})
            []
        """
        return self.jobs(ACTIVE_STATUSES)

    def inactive(self) -> pd.DataFrame:
        """Finished jobs: succeeded or failed.

        Example:
            >>> set(monitor.inactive()["status"]) <= {"succeeded", "failed"}
            True
        """
        return self.jobs(INACTIVE_STATUSES)

    def _list_jobs(self, queue: str, status: str) -> list[Mapping[str, Any]]:
        """Every job of `queue` in `status`, over all pages.

        AWS returns only RUNNING jobs when no status is given, and a JOB_DEFINITION filter
        makes it ignore the status, so the status is always given and the definition is
        matched here.
        """
        batch = self._aws.client("batch")
        paginator = batch.get_paginator("list_jobs")

        def every_page() -> list[Mapping[str, Any]]:
            summaries: list[Mapping[str, Any]] = []
            job_status: Any = status.upper()
            for page in paginator.paginate(jobQueue=queue, jobStatus=job_status):
                summaries.extend(page.get("jobSummaryList", []))
            return summaries

        return self._aws.call("ListJobs", f"job queue {queue}", every_page)


def _definition_matcher(job_definition: str) -> Callable[[object], bool]:
    """A test of a job's definition ARN against a name, `name:revision` or ARN."""
    if job_definition.startswith("arn:"):
        base, _, last = job_definition.rpartition(":")
        if last.isdigit() and "job-definition/" in base:
            return lambda arn: arn == job_definition  # that revision only
        # An ARN without a revision means every revision, as SubmitJob reads it.
        job_definition = job_definition.rpartition("/")[2]
    name, _, revision = job_definition.partition(":")

    def matches(arn: object) -> bool:
        if not isinstance(arn, str):
            return False
        arn_name, _, arn_revision = arn.rpartition("/")[2].partition(":")
        return arn_name == name and (not revision or arn_revision == revision)

    return matches


def job_row(summary: Mapping[str, Any], queue: str) -> dict[str, Any]:
    """The `JOB_COLUMNS` of one job (a ListJobs summary or a DescribeJobs description).

    Example:
        >>> job_row({"jobId": "6f1c", "status": "RUNNING"}, "arn:aws:batch:::job-queue/q1")["queue"]
        'q1'
    """
    return {
        "name": summary.get("jobName"),
        "id": summary.get("jobId"),
        "arn": summary.get("jobArn"),
        "queue": _base_name(queue),
        "status": str(summary.get("status", "")).lower() or None,
        "reason": summary.get("statusReason"),
        "created": summary.get("createdAt"),
        "started": summary.get("startedAt"),
        "stopped": summary.get("stoppedAt"),
    }


def _base_name(queue: str) -> str | None:
    return queue.rpartition("/")[2] or None
