"""The jobs of one job definition on AWS Batch: list, inspect, submit, terminate, read logs.

Owns `Monitor`, the one object people use for that, and its tables: the listing is `listing`'s,
the AWS calls on jobs go through the `jobs` gateway, and reading logs is `logs`'s. It does not
register job definitions (see `definition`) and launches no workers.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.frames import ColumnKind, table
from batchcrew.aws.jobs import Jobs, Submission, check_reason, jobs_text
from batchcrew.aws.listing import JOB_COLUMNS, JobListing, job_row
from batchcrew.aws.logs import DEFAULT_LOG_GROUP, JobLogs, LogEvent, log_stream_of
from batchcrew.aws.resources import resource_requirements
from batchcrew.aws.validation import (
    ACTIVE_STATUSES,
    INACTIVE_STATUSES,
    JOB_STATUSES,
    check_job_ids,
    check_queue_reference,
)
from batchcrew.errors import AWSError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_LOG_GROUP",
    "INACTIVE_STATUSES",
    "JOB_STATUSES",
    "LogEvent",
    "Monitor",
    "Termination",
]

logger = logging.getLogger("batchcrew.aws.monitor")

DEFAULT_REASON = "cancelled/terminated by the batchcrew monitor"

STATUS_COLUMNS: dict[str, ColumnKind] = {
    **JOB_COLUMNS,
    "exit_code": "nullable_integer",
    "log_stream": "text",
    "details": "object",
}
SUBMIT_COLUMNS: dict[str, ColumnKind] = {"name": "text", "id": "text", "arn": "text"}
LOG_COLUMNS: dict[str, ColumnKind] = {
    "message": "text",
    "timestamp": "time",
    "ingestion_time": "time",
}


@dataclass(frozen=True)
class Termination:
    """What `Monitor.terminate` did, by job id.

    Example:
        >>> Termination(ended=("6f1c",), finished=(), unknown=("typo",)).unknown
        ('typo',)
    """

    ended: tuple[str, ...]
    """Jobs AWS Batch was asked to end (CancelJob and TerminateJob)."""
    finished: tuple[str, ...]
    """Jobs that had already succeeded or failed: nothing to end."""
    unknown: tuple[str, ...]
    """Ids AWS Batch does not know in this region (a typo, or a job aged out)."""


class Monitor(JobListing):
    """List, inspect, submit, terminate and read the logs of the jobs of one job definition.

    `job_definition` is a name (every revision), `name:revision` or a full ARN. `job_queue`
    is one queue (name or ARN) or a list of them; listing covers them all, submitting uses the
    first unless told otherwise. Without `aws`, `AWSConfig()` finds the region in the usual
    places.

    Example:
        >>> monitor = Monitor(local.job_definition, local.job_queue, aws=local.aws_config())
        >>> job_id = monitor.submit(["python", "-c", "print('hello')"])["id"].iloc[0]
        >>> for event in monitor.events(job_id, follow=True, seconds_interval=0.2):
        ...     print(event.message)
        hello
        >>> monitor.status(job_id)[["status", "exit_code"]].values.tolist()
        [['succeeded', 0]]
    """

    def __init__(
        self,
        job_definition: str,
        job_queue: str | Sequence[str],
        log_group: str = DEFAULT_LOG_GROUP,
        aws: AWSConfig | None = None,
    ) -> None:
        super().__init__(job_definition, job_queue, aws)
        self._jobs = Jobs(self._aws)
        self._logs = JobLogs(self._jobs, log_group)

    @property
    def log_group(self) -> str:
        """The CloudWatch log group used when a job's own log configuration names none."""
        return self._logs.log_group

    def __repr__(self) -> str:
        return (
            f"Monitor(job_definition={self._job_definition!r}, "
            f"job_queue={list(self._job_queues)!r}, region={self._aws.region!r})"
        )

    # One job at a time ----------------------------------------------------------------------

    def status(self, job_id: str | Sequence[str]) -> pd.DataFrame:
        """One row per job id: the `jobs()` columns plus `exit_code`, `log_stream`, `details`.

        `details` holds AWS's whole description of the job. Many ids are asked 100 at a time.
        An id AWS does not know (wrong region, a typo, a job aged out) is an `AWSError`.

        Example:
            >>> job_id = monitor.submit(["python", "-c", "pass"], name="checked")["id"].iloc[0]
            >>> monitor.status(job_id)[["name", "id"]].values.tolist() == [["checked", job_id]]
            True
        """
        ids = check_job_ids(job_id, argument="job_id")
        found = self._jobs.describe(ids)
        missing = [each for each in ids if each not in found]
        if missing:
            raise AWSError(
                "DescribeJobs",
                self._aws.region,
                jobs_text(missing),
                "no such job in this region (a job that finished long ago may have aged out)",
            )
        return table((_detail_row(found[each]) for each in ids), STATUS_COLUMNS)

    def submit(
        self,
        command: Sequence[str],
        name: str | None = None,
        cpus: float | None = None,
        gpus: int | None = None,
        memory: float | None = None,
        memory_units: str = "gigabytes",
        environment: Mapping[str, str] | None = None,
        *,
        seconds_timeout: int | None = None,
        share_identifier: str | None = None,
        scheduling_priority_override: int | None = None,
        tags: Mapping[str, str] | None = None,
        propagate_tags: bool | None = None,
        parameters: Mapping[str, str] | None = None,
        job_queue: str | None = None,
    ) -> pd.DataFrame:
        """Submit one job of this definition running `command`; returns `name, id, arn`.

        `command` is a list of words, never one string. `name` defaults to `batchcrew-job-` and
        eight random hex digits.
        Resources override the job definition's: `cpus` vCPUs, `gpus` GPUs, `memory` in
        `memory_units` (`gigabytes`, `gibibytes`, `megabytes`, `mebibytes` or `GB`, `GiB`,
        `MB`, `MiB`). `job_queue` defaults to the monitor's first queue.

        Example:
            >>> job = monitor.submit(["echo", "hello"], name="hello", memory=2, memory_units="GiB")
            >>> job["name"].tolist()
            ['hello']
        """
        queue = self._job_queues[0] if job_queue is None else check_queue_reference(job_queue)
        submission = Submission(
            name=_random_job_name() if name is None else name,
            job_queue=queue,
            job_definition=self._job_definition,
            command=command,
            environment={} if environment is None else environment,
            resource_requirements=resource_requirements(cpus, gpus, memory, memory_units),
            share_identifier=share_identifier,
            scheduling_priority_override=scheduling_priority_override,
            parameters=parameters,
            propagate_tags=propagate_tags,
            seconds_timeout=seconds_timeout,
            tags=tags,
        )
        job = self._jobs.submit(submission)
        row = {"name": job.name, "id": job.job_id, "arn": job.arn}
        return table([row], SUBMIT_COLUMNS)

    def terminate(
        self,
        ids: str | Sequence[str] | None = None,
        all: bool = False,
        reason: str = DEFAULT_REASON,
        progress: Callable[[int, int], None] | None = None,
    ) -> Termination:
        """End jobs: CancelJob (for jobs not yet started) and TerminateJob (for started ones).

        Give `ids`, or `all=True` for every active job of this definition on the queues. Ids
        are looked up first, because AWS accepts CancelJob and TerminateJob for ids it does
        not know: the result says which jobs were asked to end, which had already finished
        and which ids AWS does not know. Every job is tried even when one fails; failures are
        raised together at the end. `progress(done, total)` is called after each job.

        Example:
            >>> monitor = Monitor(local.job_definition, local.job_queue, aws=local.aws_config())
            >>> job_id = monitor.submit(["sleep", "600"])["id"].iloc[0]
            >>> monitor.terminate([job_id, "no-such-job"]) == Termination(
            ...     ended=(job_id,), finished=(), unknown=("no-such-job",))
            True
        """
        if all and ids is not None:
            raise ValueError("terminate: give ids or all=True, not both")
        if not isinstance(all, bool):
            raise TypeError(f"all must be True or False, not {type(all).__name__}")
        reason = check_reason(reason)
        finished: list[str] = []
        unknown: list[str] = []
        if all:
            targets = [str(each) for each in self.active()["id"]]
        elif ids is None:
            raise ValueError("terminate: give the ids of the jobs to end, or all=True")
        else:
            asked = check_job_ids(ids)
            found = self._jobs.describe(asked)
            unknown = [each for each in asked if each not in found]
            finished = [
                each
                for each in asked
                if each in found and str(found[each].get("status", "")).lower() in INACTIVE_STATUSES
            ]
            targets = [each for each in asked if each in found and each not in finished]
        if finished or unknown:
            logger.info(
                "leaving alone %d job(s) already finished and %d unknown id(s)",
                len(finished),
                len(unknown),
            )
        self._jobs.end(targets, reason, progress)
        return Termination(tuple(targets), tuple(finished), tuple(unknown))

    # Logs -----------------------------------------------------------------------------------

    def events(
        self,
        job_id: str,
        *,
        start_from_head: bool = True,
        follow: bool = False,
        seconds_interval: float = 5.0,
    ) -> Iterator[LogEvent]:
        """Yield the CloudWatch log events of a job as they are read.

        The log group is the one in the job's own `awslogs` configuration, else this monitor's
        `log_group`. With `start_from_head=False` reading starts at the latest page of events.
        With `follow=True` it keeps polling every `seconds_interval` seconds until the job has
        finished. A job with no log stream (yet, or ever, when it ended without one) yields
        nothing and logs a warning with the job's status and AWS's reason.

        Example:
            >>> job = monitor.submit(["python", "-c", "print('one'); print('two')"])
            >>> job_id = job["id"].iloc[0]
            >>> for event in monitor.events(job_id, follow=True, seconds_interval=0.2):
            ...     print(event.message)
            one
            two
        """
        return self._logs.events(
            job_id,
            start_from_head=start_from_head,
            follow=follow,
            seconds_interval=seconds_interval,
        )

    def log(
        self,
        job_id: str,
        file: TextIO | None = None,
        start_from_head: bool = True,
    ) -> pd.DataFrame:
        """Write a job's log messages to `file` (default: standard output) and return them.

        Returns a DataFrame `message, timestamp, ingestion_time`. To only collect the frame,
        pass `file=io.StringIO()`. A job without a log stream yet gives an empty frame and a
        logged warning with its status and reason.

        Example:
            >>> import time
            >>> job_id = monitor.submit(["python", "-c", "print('hello')"])["id"].iloc[0]
            >>> while job_id not in set(monitor.inactive()["id"]):
            ...     time.sleep(0.2)
            >>> frame = monitor.log(job_id)
            hello
            >>> frame["message"].tolist()
            ['hello']
        """
        target = sys.stdout if file is None else file
        rows: list[dict[str, Any]] = []
        for event in self.events(job_id, start_from_head=start_from_head):
            target.write(event.message if event.message.endswith("\n") else event.message + "\n")
            rows.append(
                {
                    "message": event.message,
                    "timestamp": event.timestamp,
                    "ingestion_time": event.ingestion_time,
                }
            )
        target.flush()
        return table(rows, LOG_COLUMNS)


def _random_job_name() -> str:
    return f"batchcrew-job-{secrets.token_hex(4)}"


def _detail_row(job: Mapping[str, Any]) -> dict[str, Any]:
    row = job_row(job, str(job.get("jobQueue", "")))
    container = job.get("container") or {}
    attempts = job.get("attempts") or []
    last_attempt = (attempts[-1].get("container") or {}) if attempts else {}
    exit_code = container.get("exitCode", last_attempt.get("exitCode"))
    row["exit_code"] = exit_code
    row["log_stream"] = log_stream_of(job)
    row["details"] = dict(job)
    return row
