"""The copies of a launch that a retried SubmitJob made: AWS may carry out an attempt whose
answer is lost (a server error, a connection cut, a timeout), and the retry submits the job again.

Owns finding a launch's jobs by its name (unique to the launch), choosing the launch's own,
ending the copies no worker can have started, and remembering the names so that the launch's end
ends every copy. It never submits jobs, and knows nothing of workers beyond job states.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from batchcrew.aws.config import FailedAttempt
from batchcrew.aws.jobs import Jobs, SubmittedJob
from batchcrew.errors import AWSError

__all__ = ["ACTIVE", "NOT_STARTED", "Copies", "not_started", "summary"]

logger = logging.getLogger("batchcrew.aws.copies")

NOT_STARTED = frozenset({"SUBMITTED", "PENDING", "RUNNABLE"})
"""Job states in which no worker of the job has started (for an array parent, see
`not_started`)."""

ACTIVE = NOT_STARTED | {"STARTING", "RUNNING"}
"""Job states of jobs that have not finished."""

COPIES_KEPT = 1000
"""Launches with copies remembered for their end; older ones are only in the log."""

Record = Callable[[str, str, str | None], None]
"""How errors are recorded: `record(operation, message, job)` (`Launcher.record_error`)."""


class Copies:
    """The copies of launches made by `jobs` on `job_queue`, for one launcher.

    Example (on a local Batch, `local`): a SubmitJob whose answer was lost, then retried,
    made two jobs under the launch's name; the one AWS answered with is the launch's.

        >>> from batchcrew.aws.jobs import Submission
        >>> jobs = Jobs(local.aws_config())
        >>> launch = Submission("batchcrew-copies-a1b2", local.job_queue, local.job_definition,
        ...                     ["sleep", "60"])
        >>> lost, answered = jobs.submit(launch), jobs.submit(launch)
        >>> errors = []
        >>> copies = Copies(jobs, local.job_queue, lambda *error: errors.append(error), "a copy")
        >>> timeout = FailedAttempt("SubmitJob", "read timeout", carried_out=True)
        >>> copies.reconciled("a1b2", launch.name, answered, [timeout]) == answered
        True
        >>> len(copies), errors[0][0]  # remembered, so that the launch's end ends every copy
        (1, 'SubmitJob')
        >>> answered.job_id in copies.active("a1b2")  # the launch's jobs still running
        True
        >>> _ = jobs.end([lost.job_id, answered.job_id], reason="example over")
    """

    def __init__(self, jobs: Jobs, job_queue: str, record: Record, reason: str) -> None:
        self._jobs = jobs
        self._job_queue = job_queue
        self._record = record
        self._reason = reason
        self._names: OrderedDict[str, str] = OrderedDict()
        """Job names of launches AWS may hold more than one job of, by launch id."""
        self._lock = threading.Lock()

    def reconciled(
        self,
        launch: str,
        name: str,
        answered: SubmittedJob | None,
        failed: Sequence[FailedAttempt],
        error: AWSError | None = None,
    ) -> SubmittedJob:
        """The launch's job after SubmitJob attempts that AWS may have carried out: the one
        AWS answered with, else the first one made under the launch's name (`error`, the
        call's failure, is raised when there is none). Copies no worker can have started are
        ended (a started one may hold a worker of the launch: the token is the same), and the
        name is kept, so that the launch's end ends them all."""
        problem = ""
        try:
            jobs = sorted(
                self._jobs.named(name, self._job_queue),
                key=lambda job: (job.get("createdAt", 0), job["jobId"]),
            )
        except AWSError as lookup:
            if answered is None and error is not None:
                logger.warning(
                    "launch %s: could not look for jobs named %s: %s", launch, name, lookup
                )
                raise error from None
            jobs, problem = [], f"; its copies could not be looked for: {lookup.reason}"
        if answered is not None:
            how = f"SubmitJob was retried ({summary(failed)})"
        elif jobs:
            answered = SubmittedJob(jobs[0]["jobId"], name, jobs[0].get("jobArn"))
            how = f"SubmitJob failed ({summary(failed)}) but made job {answered.job_id}"
        else:
            raise error or AssertionError("SubmitJob gave neither a job nor an error")
        copies = [job["jobId"] for job in jobs if job["jobId"] != answered.job_id]
        waiting: list[str] = []
        if copies:
            try:
                described = self._jobs.describe(copies)
            except AWSError as lookup:
                problem = f"; its copies could not be described: {lookup.reason}"
            else:
                waiting = [job_id for job_id, job in described.items() if not_started(job)]
        ended = ""
        if waiting:
            try:
                self._jobs.end(waiting, self._reason)
                ended = f", ended the {len(waiting)} not started"
            except AWSError as ending:
                ended = f", could not end the {len(waiting)} not started: {ending.reason}"
        if copies or problem:
            self._remember(launch, name)
        made = f"made {len(copies)} more job(s) named {name}" if copies else "made no other job"
        self._record(
            "SubmitJob",
            f"launch {launch}: {how}; it {made}{ended}{problem}; job {answered.job_id} is the "
            "launch's",
            answered.job_id,
        )
        return answered

    def active(self, launch: str) -> list[str]:
        """The ids of the launch's active copies, for its end (the launch is forgotten here;
        copies that cannot be looked for are said in the launcher's errors)."""
        with self._lock:
            name = self._names.pop(launch, None)
        if name is None:
            return []
        try:
            jobs = self._jobs.named(name, self._job_queue)
        except AWSError as error:
            self._record("terminate", f"launch {launch}: its copies are unknown: {error}", None)
            return []
        return [job["jobId"] for job in jobs if _active(job)]

    def __len__(self) -> int:
        """How many launches are known to have copies."""
        with self._lock:
            return len(self._names)

    def end_all(self) -> None:
        """End the active copies of every launch still remembered (at the launcher's close)."""
        with self._lock:
            names, self._names = self._names, OrderedDict()
        for launch, name in names.items():
            try:
                jobs = self._jobs.named(name, self._job_queue)
                active = [job["jobId"] for job in jobs if _active(job)]
                if active:
                    self._jobs.end(active, self._reason)
            except AWSError as error:
                self._record("terminate", f"launch {launch}: {error}", None)

    def _remember(self, launch: str, name: str) -> None:
        with self._lock:
            self._names[launch] = name
            while len(self._names) > COPIES_KEPT:
                self._names.popitem(last=False)


def not_started(job: Mapping[str, Any]) -> bool:
    """Whether no worker of a job (as DescribeJobs describes it) can have started: an array
    parent stays PENDING while its children run, so they are counted too.

    Example:
        >>> not_started({"status": "RUNNABLE"})
        True
        >>> not_started({"status": "PENDING", "arrayProperties": {"statusSummary": {"RUNNING": 1}}})
        False
    """
    if job.get("status") not in NOT_STARTED:
        return False
    states = (job.get("arrayProperties") or {}).get("statusSummary") or {}
    return not any(states.get(state) for state in ("STARTING", "RUNNING", "SUCCEEDED", "FAILED"))


def summary(failed: Sequence[FailedAttempt]) -> str:
    """The problems of failed attempts, each once with how often it happened.

    Example:
        >>> throttled = FailedAttempt("SubmitJob", "HTTP 429 TooManyRequestsException", False)
        >>> summary([throttled, throttled])
        'SubmitJob: HTTP 429 TooManyRequestsException (2 times)'
    """
    counts = Counter(str(attempt) for attempt in failed)
    return "; ".join(
        f"{problem} ({n} times)" if n > 1 else problem for problem, n in counts.items()
    )


def _active(job: Mapping[str, Any]) -> bool:
    return job.get("status") in ACTIVE
