"""The CloudWatch logs of AWS Batch jobs: where a job's log is, and its events as they are read.

Owns GetLogEvents, its forward tokens, the log group and stream named in a job's description,
and following a job's log until the job ends. It returns plain values (no pandas) and neither
submits nor ends jobs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchcrew.aws.config import error_code
from batchcrew.aws.jobs import Jobs
from batchcrew.aws.validation import INACTIVE_STATUSES, check_text
from batchcrew.errors import AWSError

__all__ = ["DEFAULT_LOG_GROUP", "JobLogs", "LogEvent", "log_stream_of"]

logger = logging.getLogger("batchcrew.aws.logs")

DEFAULT_LOG_GROUP = "/aws/batch/job"
"""The log group AWS Batch writes to when a job's log configuration names none."""


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


class JobLogs:
    """Read the log events of AWS Batch jobs, looking each job up through `jobs`.

    A job's log group is the one in its own `awslogs` configuration, else `log_group`.

    Example:
        >>> logs = JobLogs(Jobs(local.aws_config()), log_group="/aws/batch/job")
        >>> logs.log_group
        '/aws/batch/job'
    """

    def __init__(self, jobs: Jobs, log_group: str = DEFAULT_LOG_GROUP) -> None:
        if not isinstance(jobs, Jobs):
            raise TypeError(f"jobs must be a Jobs gateway, not {type(jobs).__name__}")
        self._jobs = jobs
        self._log_group = check_text("log_group", log_group)

    @property
    def log_group(self) -> str:
        """The log group used when a job's own log configuration names none.

        Example:
            >>> JobLogs(Jobs(local.aws_config()), log_group="/my/jobs").log_group
            '/my/jobs'
        """
        return self._log_group

    def events(
        self,
        job_id: str,
        *,
        start_from_head: bool = True,
        follow: bool = False,
        seconds_interval: float = 5.0,
    ) -> Iterator[LogEvent]:
        """Yield a job's log events as they are read; `Monitor.events` tells how.

        Example:
            >>> from batchcrew.aws.jobs import Submission
            >>> jobs = Jobs(local.aws_config())
            >>> command = ["python", "-c", "print(1); print(2)"]
            >>> job = jobs.submit(Submission("two", local.job_queue, local.job_definition, command))
            >>> events = JobLogs(jobs).events(job.job_id, follow=True, seconds_interval=0.2)
            >>> [event.message for event in events]
            ['1', '2']
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
            job = self._describe(job_id)
            finished = str(job.get("status", "")).lower() in INACTIVE_STATUSES
            group = _log_group_of(job) or self._log_group
            stream = log_stream_of(job)
            problem = (
                "has no log stream, so there is no log to read"
                if finished
                else "has no log stream yet"
            )
            if stream is not None:
                try:
                    for page_events, resume_token in self._read_pages(
                        group, stream, token, start_from_head
                    ):
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

    def _describe(self, job_id: str) -> Mapping[str, Any]:
        found = self._jobs.describe([job_id])
        if job_id not in found:
            raise AWSError(
                "DescribeJobs",
                self._jobs.aws.region,
                f"job {job_id}",
                "no such job in this region (a job that finished long ago may have aged out)",
            )
        return found[job_id]

    def _read_pages(
        self, group: str, stream: str, token: str | None, start_from_head: bool
    ) -> Iterator[tuple[list[LogEvent], str | None]]:
        """Pages of events from `token` on, with the token to resume from after each page.

        The end is reached when AWS hands back the token that was sent: empty pages alone do
        not mean the end.
        """
        aws = self._jobs.aws
        logs = aws.client("logs")
        while True:
            request: dict[str, Any] = {
                "logGroupName": group,
                "logStreamName": stream,
                # AWS requires startFromHead=true whenever a forward token is sent.
                "startFromHead": True if token is not None else start_from_head,
            }
            if token is not None:
                request["nextToken"] = token
            page = aws.call(
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


def log_stream_of(job: Mapping[str, Any]) -> str | None:
    """The log stream of a job's description (its container's, else its last attempt's).

    Example:
        >>> log_stream_of({"attempts": [{"container": {"logStreamName": "defn/default/abc"}}]})
        'defn/default/abc'
    """
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
