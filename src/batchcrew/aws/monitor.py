"""The jobs of one job definition on AWS Batch: list, inspect, submit, terminate, read logs.

Owns ListJobs, DescribeJobs, SubmitJob, CancelJob, TerminateJob and GetLogEvents as people use
them. It does not register job definitions (see `definition`) and launches no workers.
"""

from __future__ import annotations

import logging
import math
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from batchcrew.aws.config import AWSConfig, error_code
from batchcrew.aws.frames import ColumnKind, table
from batchcrew.aws.jobs import Jobs, Submission, check_reason, jobs_text
from batchcrew.aws.resources import resource_requirements
from batchcrew.aws.validation import (
    ACTIVE_STATUSES,
    INACTIVE_STATUSES,
    JOB_STATUSES,
    check_definition_reference,
    check_job_ids,
    check_queue_reference,
    check_statuses,
    check_text,
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

DEFAULT_LOG_GROUP = "/aws/batch/job"
DEFAULT_REASON = "cancelled/terminated by the batchcrew monitor"

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
class LogEvent:
    """One CloudWatch Logs event of a job: the message and when it was logged and ingested.

    Example:
        >>> event = LogEvent("hello", timestamp=1000, ingestion_time=1500)
        >>> event.logged_at.isoformat()
        '1970-01-01T00:00:01+00:00'
    """

    message: str
    timestamp: int
    """Epoch milliseconds when the job wrote the line."""
    ingestion_time: int | None
    """Epoch milliseconds when CloudWatch received it."""

    @property
    def logged_at(self) -> datetime:
        """`timestamp` as a UTC datetime."""
        return datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)


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


class Monitor:
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
        self._job_definition = check_definition_reference(job_definition)
        if isinstance(job_queue, str):
            queues = [check_queue_reference(job_queue)]
        elif isinstance(job_queue, Sequence) and job_queue:
            queues = [check_queue_reference(queue) for queue in job_queue]
        else:
            raise TypeError("job_queue must be a queue name or ARN, or a non-empty list of them")
        self._job_queues = tuple(dict.fromkeys(queues))
        self._log_group = check_text("log_group", log_group)
        self._aws = AWSConfig.given_or_default(aws)
        self._jobs = Jobs(self._aws)
        self._matches_definition = _definition_matcher(self._job_definition)

    @property
    def job_definition(self) -> str:
        """The job definition this monitor watches (name, `name:revision` or ARN)."""
        return self._job_definition

    @property
    def job_queues(self) -> tuple[str, ...]:
        """The job queues this monitor looks at, without repeats."""
        return self._job_queues

    @property
    def log_group(self) -> str:
        """The CloudWatch log group used when a job's own log configuration names none."""
        return self._log_group

    @property
    def aws(self) -> AWSConfig:
        """The AWS configuration (region, endpoint, clients) of this monitor."""
        return self._aws

    def __repr__(self) -> str:
        return (
            f"Monitor(job_definition={self._job_definition!r}, "
            f"job_queue={list(self._job_queues)!r}, region={self._aws.region!r})"
        )

    # Listing ------------------------------------------------------------------------------

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
                        rows.append(_summary_row(summary, queue))
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
            >>> job_id = monitor.submit(["python", "-c", "pass"])["id"].iloc[0]
            >>> while job_id not in set(monitor.succeeded()["id"]):
            ...     time.sleep(0.2)
        """
        return self.jobs("succeeded")

    def failed(self) -> pd.DataFrame:
        """Jobs that failed, were cancelled or were terminated.

        Example:
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
        job_id = check_text("job_id", job_id)
        if not isinstance(start_from_head, bool) or not isinstance(follow, bool):
            raise TypeError("start_from_head and follow must be True or False")
        if (
            isinstance(seconds_interval, bool)
            or not isinstance(seconds_interval, (int, float))
            or not math.isfinite(seconds_interval)
            or seconds_interval < 0
        ):
            raise ValueError(f"seconds_interval must be a number >= 0, not {seconds_interval!r}")
        token: str | None = None
        while True:
            job = self._describe_one(job_id)
            finished = str(job.get("status", "")).lower() in INACTIVE_STATUSES
            group = _log_group_of(job) or self._log_group
            stream = _log_stream_of(job)
            problem = (
                "has no log stream, so there is no log to read"
                if finished
                else "has no log stream yet"
            )
            if stream is not None:
                try:
                    pages = self._read_log_pages(group, stream, token, start_from_head)
                    for page_events, resume_token in pages:
                        yield from page_events
                        token = resume_token
                except AWSError as error:
                    if error_code(error) != "ResourceNotFoundException":
                        raise
                    problem = f"has no readable log stream {stream} in log group {group}" + (
                        " (deleted, expired or never written)" if finished else " yet"
                    )
                else:
                    problem = ""
            if problem and (finished or not follow):
                logger.warning(
                    "job %s is %s and %s: %s",
                    job_id,
                    str(job.get("status", "unknown")).lower(),
                    problem,
                    job.get("statusReason") or "AWS gives no reason",
                )
                return
            if finished or not follow:
                return
            time.sleep(seconds_interval)

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

    # AWS calls ------------------------------------------------------------------------------

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

    def _describe_one(self, job_id: str) -> Mapping[str, Any]:
        found = self._jobs.describe([job_id])
        if job_id not in found:
            raise AWSError(
                "DescribeJobs",
                self._aws.region,
                f"job {job_id}",
                "no such job in this region (a job that finished long ago may have aged out)",
            )
        return found[job_id]

    def _read_log_pages(
        self, group: str, stream: str, token: str | None, start_from_head: bool
    ) -> Iterator[tuple[list[LogEvent], str | None]]:
        """Pages of events from `token` on, with the token to resume from after each page.

        The end is reached when AWS hands back the token that was sent: empty pages alone do
        not mean the end.
        """
        logs = self._aws.client("logs")
        while True:
            request: dict[str, Any] = {
                "logGroupName": group,
                "logStreamName": stream,
                # AWS requires startFromHead=true whenever a forward token is sent.
                "startFromHead": True if token is not None else start_from_head,
            }
            if token is not None:
                request["nextToken"] = token
            page = self._aws.call(
                "GetLogEvents",
                f"log stream {stream} in log group {group}",
                logs.get_log_events,
                **request,
            )
            events = [
                LogEvent(
                    message=str(raw.get("message", "")),
                    timestamp=int(raw.get("timestamp", 0)),
                    ingestion_time=raw.get("ingestionTime"),
                )
                for raw in page.get("events", [])
            ]
            following = page.get("nextForwardToken")
            if following is None or following == token:
                yield events, token
                return
            token = following
            yield events, token


def _random_job_name() -> str:
    return f"batchcrew-job-{secrets.token_hex(4)}"


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


def _summary_row(summary: Mapping[str, Any], queue: str) -> dict[str, Any]:
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


def _detail_row(job: Mapping[str, Any]) -> dict[str, Any]:
    row = _summary_row(job, str(job.get("jobQueue", "")))
    container = job.get("container") or {}
    attempts = job.get("attempts") or []
    last_attempt = (attempts[-1].get("container") or {}) if attempts else {}
    exit_code = container.get("exitCode", last_attempt.get("exitCode"))
    row["exit_code"] = exit_code
    row["log_stream"] = _log_stream_of(job)
    row["details"] = dict(job)
    return row


def _log_stream_of(job: Mapping[str, Any]) -> str | None:
    container = job.get("container") or {}
    stream = container.get("logStreamName")
    if not stream:
        for attempt in reversed(job.get("attempts") or []):
            stream = (attempt.get("container") or {}).get("logStreamName")
            if stream:
                break
    return str(stream) if stream else None


def _log_group_of(job: Mapping[str, Any]) -> str | None:
    configuration = (job.get("container") or {}).get("logConfiguration") or {}
    if configuration.get("logDriver") != "awslogs":
        return None
    group = (configuration.get("options") or {}).get("awslogs-group")
    return str(group) if group else None


def _base_name(queue: str) -> str | None:
    return queue.rpartition("/")[2] or None
