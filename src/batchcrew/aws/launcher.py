"""Workers as AWS Batch jobs: `BatchLauncher`, one SubmitJob per launch (an array job for many).

Owns what a launch sends to AWS (job name, tags, the worker's command and environment, the
level's resources), reading workers' states with DescribeJobs across launches, AWS's verdict
on why a worker ended, ending jobs, and the copies of a launch that a retried SubmitJob made.
It decides nothing about how many workers to run, and the controller never waits on its AWS
calls from its event loop (they go through `submit`).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from batchcrew.aws.config import AWSConfig, FailedAttempt, failed_attempts
from batchcrew.aws.copies import Copies, summary
from batchcrew.aws.jobs import ARRAY_SIZE_MAX, Jobs, SubmittedJob
from batchcrew.aws.options import TAG_VALUE_CHARACTERS, TAGS_SET_BY_BATCHCREW, Options
from batchcrew.aws.validation import check_int
from batchcrew.errors import AWSError
from batchcrew.launchers.base import (
    Cause,
    Launcher,
    LaunchHandle,
    LaunchRequest,
    Phase,
    WorkerKey,
    WorkerStatus,
)
from batchcrew.network import own_address

__all__ = ["BatchLaunch", "BatchLauncher", "job_name", "worker_status"]

logger = logging.getLogger("batchcrew.aws.launcher")

T = TypeVar("T")

PHASES: dict[str, Phase] = {
    "SUBMITTED": "queued",
    "PENDING": "queued",
    "RUNNABLE": "queued",
    "STARTING": "starting",
    "RUNNING": "running",
    "SUCCEEDED": "ended",
    "FAILED": "ended",
}
"""The launcher seam's phase of each AWS Batch job status."""

OUT_OF_MEMORY_PREFIX = "outofmemoryerror"
"""How AWS's `container.reason` starts (any case) when the container was killed for using more
memory than it had: `OutOfMemoryError: Container killed due to memory usage`."""

HOST_LOST_PREFIXES = ("host ec2", "your spot task was interrupted")
"""How AWS's `statusReason` starts (any case) when the job's host went away: an EC2 instance
stopped or reclaimed (`Host EC2 (instance i-...) terminated.`, matched by AWS's own retry
pattern `Host EC2*`) or a Fargate Spot task interrupted."""

TERMINATE_REASON = "batchcrew: the controller ended this worker"
"""The reason CancelJob and TerminateJob record for the jobs this launcher ends."""

JOB_NAME_PREFIX = "batchcrew"
JOB_NAME_CHARACTERS = 128
_NOT_IN_JOB_NAMES = re.compile(r"[^A-Za-z0-9_-]")
_NOT_IN_TAG_VALUES = re.compile(r"[^\w\s.:/=+\-@]")


@dataclass(frozen=True, eq=False)
class BatchLaunch(LaunchHandle):
    """One launch as AWS Batch knows it: `external_id` is the job id (the array's, for many).

    Worker `index` is the job `external_id` itself for a launch of one, else the array child
    `<external_id>:<index>`.

    Example:
        >>> launch = BatchLaunch("a1b2", 3, "6f1c", job_name="batchcrew-crew-a1b2", level=0)
        >>> launch.job_id(2)
        '6f1c:2'
    """

    job_name: str
    level: int

    def job_id(self, index: int) -> str:
        """The AWS Batch job id of worker `index`.

        Example:
            >>> BatchLaunch("a1b2", 1, "6f1c", job_name="batchcrew-a1b2", level=0).job_id(0)
            '6f1c'
        """
        check_int("index", index, 0, self.count - 1)
        return self.worker_label(index)


class BatchLauncher(Launcher):
    """Start workers as AWS Batch jobs of `options` (an `Options`), through `aws`.

    Each launch is one SubmitJob: a plain job for one worker, an array job of `count` children
    for more (each child learns its index from `AWS_BATCH_JOB_ARRAY_INDEX`). The jobs are named
    `batchcrew-<controller name>-<launch id>` and tagged with the controller's name and id.
    `processes` threads make the AWS calls; None makes them in the calling thread, so that
    errors raise where they happen (for troubleshooting).

    Example:
        >>> options = Options("defn", "queue", memory=[4, 8, 16], memory_units="GiB")
        >>> launcher = BatchLauncher(options, aws=AWSConfig(region="us-east-1"))
        >>> launcher.levels, launcher.describe_level(2), launcher.launch_size_max
        (3, '16 GiB memory', 10000)
        >>> launcher.close()
    """

    launch_size_max = ARRAY_SIZE_MAX
    seconds_poll = 5.0  # DescribeJobs for workers not connected yet; a connected one's socket
    # says when it ends, and a lost one is asked about at once

    def __init__(
        self, options: Options, aws: AWSConfig | None = None, processes: int | None = 4
    ) -> None:
        if not isinstance(options, Options):
            raise TypeError(
                f"options must be a batchcrew.aws.Options, not {type(options).__name__}"
            )
        super().__init__(processes)
        self._options = options
        self._jobs = Jobs(aws)
        self._copies = Copies(self._jobs, options.job_queue, self.record_error, TERMINATE_REASON)

    @property
    def options(self) -> Options:
        """The settings every worker job is submitted with."""
        return self._options

    @property
    def aws(self) -> AWSConfig:
        """The AWS configuration (region, endpoint, clients) of every call."""
        return self._jobs.aws

    @property
    def levels(self) -> int:
        """How many resource levels the options make (`memory`, `cpus`, `gpus` lists)."""
        return self._options.levels

    def describe_level(self, level: int) -> str:
        """What a worker of `level` gets, such as '8 GiB memory, 2 vCPUs'.

        Example:
            >>> options = Options("defn", "queue", memory=[4, 8], memory_units="GiB", cpus=2)
            >>> launcher = BatchLauncher(options, aws=AWSConfig(region="us-east-1"))
            >>> launcher.describe_level(0)
            '4 GiB memory, 2 vCPUs'
        """
        return self._options.describe_level(level)

    def default_host(self) -> str:
        """This machine's own address on its network, which jobs in the same VPC can reach; on
        a local Batch (an endpoint on this machine) its jobs run here too: 127.0.0.1.

        Example:
            >>> local = AWSConfig(region="us-east-1", endpoint_url="http://127.0.0.1:5000")
            >>> BatchLauncher(Options("defn", "queue"), aws=local).default_host()
            '127.0.0.1'
        """
        endpoint = urllib.parse.urlsplit(self.aws.endpoint_url or "").hostname
        if endpoint in ("localhost", "127.0.0.1", "::1"):
            return "127.0.0.1"
        return own_address()

    def launch(self, request: LaunchRequest) -> BatchLaunch:
        """Submit one job for `request.count` workers of `request.level` (an array for 2+).

        Example:
            On a local Batch (`local`), with no controller to dial (the workers give up):

            >>> options = Options(local.job_definition, local.job_queue)
            >>> launcher = BatchLauncher(options, aws=local.aws_config(), processes=None)
            >>> launch = launcher.launch(LaunchRequest("a1b2", 4, 0, {}, "crew"))
            >>> launch.count, launch.job_name, launch.job_id(3) == f"{launch.external_id}:3"
            (4, 'batchcrew-crew-a1b2', True)
            >>> launcher.terminate(launch)
        """
        if not isinstance(request, LaunchRequest):
            raise TypeError(f"request must be a LaunchRequest, not {type(request).__name__}")
        check_int("count", request.count, 1, self.launch_size_max)
        tags = {TAGS_SET_BY_BATCHCREW[0]: _tag_value(request.name)}
        if request.controller:
            tags[TAGS_SET_BY_BATCHCREW[1]] = _tag_value(request.controller)
        name = job_name(request.name, request.launch)
        submission = self._options.submission(
            name, request.environment, level=request.level, array_size=request.count, tags=tags
        )
        submitted: SubmittedJob | None = None
        error: AWSError | None = None
        with failed_attempts() as failed:
            try:
                submitted = self._jobs.submit(submission)
            except AWSError as caught:
                error = caught
        if any(attempt.carried_out for attempt in failed):
            # AWS may have made the job more than once, or once although the call failed.
            submitted = self._copies.reconciled(request.launch, name, submitted, failed, error)
        elif error is not None or submitted is None:
            raise error or AssertionError("SubmitJob answered nothing")
        elif failed:
            self._record_retries("SubmitJob", f"launch {request.launch}", submitted.job_id, failed)
        logger.info(
            "launch %s: job %s (%s) for %d worker(s) with %s",
            request.launch,
            submitted.job_id,
            submitted.name,
            request.count,
            self._options.describe_level(request.level),
        )
        return BatchLaunch(
            request.launch, request.count, submitted.job_id, submitted.name, request.level
        )

    def poll(self, workers: Mapping[LaunchHandle, Sequence[int]]) -> dict[WorkerKey, WorkerStatus]:
        """The state of the given workers of many launches: DescribeJobs, 100 ids a call.

        A worker AWS does not know (any more) is left out.

        Example:
            >>> options = Options(local.job_definition, local.job_queue)
            >>> launcher = BatchLauncher(options, aws=local.aws_config(), processes=None)
            >>> launch = launcher.launch(LaunchRequest("c3d4", 3, 0, {}, "crew"))
            >>> found = launcher.poll({launch: [0, 2]})
            >>> sorted(found), {status.phase for status in found.values()} <= {
            ...     "queued", "starting", "running", "ended"}
            ([('c3d4', 0), ('c3d4', 2)], True)
            >>> launcher.terminate(launch)
        """
        keys: dict[str, WorkerKey] = {}
        for handle, indices in workers.items():
            launch = _batch_launch(handle)
            for index in indices:
                keys[launch.job_id(index)] = (launch.launch, index)
        if not keys:
            return {}
        found = self._retried("DescribeJobs", "a poll", None, self._jobs.describe, list(keys))
        return {keys[job_id]: worker_status(job) for job_id, job in found.items() if job_id in keys}

    def terminate(self, handle: LaunchHandle, indices: Sequence[int] | None = None) -> None:
        """End workers of a launch, queued ones included: CancelJob, then TerminateJob.

        All of them (`indices` None, or every index) are ended through the launch's own job
        id, which AWS applies to every child of an array; some of them through the children's
        ids.

        Example:
            >>> options = Options(local.job_definition, local.job_queue)
            >>> launcher = BatchLauncher(options, aws=local.aws_config(), processes=None)
            >>> launch = launcher.launch(LaunchRequest("e5f6", 4, 0, {}, "crew"))
            >>> launcher.terminate(launch, [3])  # one child
            >>> launcher.terminate(launch)  # the rest
        """
        launch = _batch_launch(handle)
        every = set(range(launch.count))
        chosen = every if indices is None else set(indices)
        if chosen == every:  # with the copies a retried SubmitJob made, if any
            targets = [launch.external_id, *self._copies.active(launch.launch)]
        else:
            targets = [launch.job_id(index) for index in sorted(chosen)]
        if targets:
            self._retried(
                "CancelJob/TerminateJob",
                f"launch {launch.launch}",
                launch.external_id,
                self._jobs.end,
                list(dict.fromkeys(targets)),
                TERMINATE_REASON,
            )

    def close(self, seconds: float | None = None) -> None:
        """End the copies still known of launches (a retried SubmitJob that AWS carried out
        more than once), then wait for calls under way and release the threads.

        Example:
            >>> aws = AWSConfig(region="us-east-1")
            >>> launcher = BatchLauncher(Options("defn", "queue"), aws=aws)
            >>> launcher.close(seconds=10.0)
            >>> launcher.calls_under_way()
            0
        """
        if self._copies:
            self.submit(self._copies.end_all)
        super().close(seconds)

    def _retried(
        self,
        operation: str,
        what: str,
        job: str | None,
        call: Callable[..., T],
        *args: Any,
    ) -> T:
        """`call(*args)`, and a record in `errors()` of the attempts botocore retried."""
        with failed_attempts() as failed:
            result = call(*args)
        if failed:
            self._record_retries(operation, what, job, failed)
        return result

    def _record_retries(
        self, operation: str, what: str, job: str | None, failed: Sequence[FailedAttempt]
    ) -> None:
        self.record_error(
            operation,
            f"{what} succeeded after {len(failed)} retried attempt(s): {summary(failed)}",
            job,
        )


def job_name(controller: str, launch: str) -> str:
    """`batchcrew-<controller>-<launch>` made valid for AWS Batch: at most 128 letters, digits,
    `-` and `_`; a long controller name is cut, never the launch id.

    Example:
        >>> job_name("my workflow (v2)", "a1b2")
        'batchcrew-my-workflow--v2--a1b2'
    """
    room = JOB_NAME_CHARACTERS - len(JOB_NAME_PREFIX) - 1
    launch_part = _NOT_IN_JOB_NAMES.sub("-", launch)[:room]
    room -= len(launch_part) + 1
    controller_part = _NOT_IN_JOB_NAMES.sub("-", controller)[: max(room, 0)]
    parts = (JOB_NAME_PREFIX, controller_part, launch_part)
    return "-".join(part for part in parts if part)


def worker_status(job: Mapping[str, Any]) -> WorkerStatus:
    """A worker's state from AWS's description of its job (one element of DescribeJobs' `jobs`).

    The reason joins AWS's `statusReason` and the container's `reason`; the exit code is the
    container's (or the last attempt's). An ended worker's cause is `memory` when the container
    was killed for memory (`OutOfMemoryError...`), `host` when its host went away (`Host EC2...`,
    a Spot reclaim), else `other`.

    Example:
        >>> job = {"status": "FAILED", "statusReason": "Essential container in task exited",
        ...        "attempts": [{"container": {"exitCode": 137,
        ...            "reason": "OutOfMemoryError: Container killed due to memory usage"}}]}
        >>> status = worker_status(job)
        >>> status.cause, status.exit_code
        ('memory', 137)
        >>> worker_status({"status": "RUNNABLE"}).phase
        'queued'
    """
    status = str(job.get("status", "")).upper()
    # A status AWS adds later is not an end: the worker is then taken to be still waiting.
    phase = PHASES.get(status, "queued")
    container = job.get("container") or {}
    attempts = job.get("attempts") or [{}]
    last_attempt = attempts[-1]
    last_container = last_attempt.get("container") or {}
    exit_code = container.get("exitCode", last_container.get("exitCode"))
    container_reason = container.get("reason") or last_container.get("reason")
    texts = [text for text in (job.get("statusReason"), container_reason) if text]
    reason = "; ".join(dict.fromkeys(texts)) or None
    cause: Cause | None = None
    if phase == "ended":
        cause = "other"
        if _starts_with(
            OUT_OF_MEMORY_PREFIX, container.get("reason"), last_container.get("reason")
        ):
            cause = "memory"
        elif _starts_with(
            HOST_LOST_PREFIXES, job.get("statusReason"), last_attempt.get("statusReason")
        ):
            cause = "host"
    return WorkerStatus(phase, reason, exit_code, cause)


def _starts_with(prefixes: str | tuple[str, ...], *texts: object) -> bool:
    return any(isinstance(text, str) and text.lower().startswith(prefixes) for text in texts)


def _tag_value(text: str) -> str:
    """`text` with the characters AWS refuses in tag values replaced, cut to AWS's length."""
    return _NOT_IN_TAG_VALUES.sub("_", text)[:TAG_VALUE_CHARACTERS]


def _batch_launch(handle: LaunchHandle) -> BatchLaunch:
    if not isinstance(handle, BatchLaunch):
        raise TypeError(f"handle must be a BatchLaunch, not {type(handle).__name__}")
    return handle
