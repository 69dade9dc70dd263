"""The launcher seam: start workers, read their state, stop them. Nothing about scaling.

A launcher owns its threads: the controller hands it calls through `submit` and never waits on
them from its event loop. Values crossing the seam are typed: a `LaunchRequest` goes in, a
`LaunchHandle` comes back, `poll` answers a `WorkerStatus` per worker.
"""

from __future__ import annotations

import abc
import concurrent.futures
import datetime
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

logger = logging.getLogger("batchcrew.launchers")

T = TypeVar("T")

ERRORS_KEPT = 200
"""Launcher errors kept for `errors()` (older ones are only in the log)."""

Phase = Literal["queued", "starting", "running", "ended"]
"""Where a launched worker is: waiting for room, starting, running, or gone."""

Cause = Literal["memory", "host", "other"]
"""Why an ended worker ended, as far as its launcher can tell: killed for using too much memory,
lost with its host (an instance or Spot reclaim), or anything else."""


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """What a launcher knows of one worker it launched.

    `reason` is the launcher's own words (AWS's `statusReason`, or how a process exited);
    `cause` is set once the worker has ended.

    Example:
        >>> status = WorkerStatus("ended", "OutOfMemoryError: Container killed", 137, "memory")
        >>> status.ended, status.cause
        (True, 'memory')
    """

    phase: Phase
    reason: str | None = None
    exit_code: int | None = None
    cause: Cause | None = None

    @property
    def ended(self) -> bool:
        """True once the worker has stopped for good."""
        return self.phase == "ended"

    def describe(self) -> str:
        """A short text for logs and errors.

        Example:
            >>> WorkerStatus("ended", "Essential container exited", 1).describe()
            'ended: Essential container exited (exit code 1)'
        """
        text: str = self.phase
        if self.reason:
            text += f": {self.reason}"
        if self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        return text


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """What a launcher needs to start `count` workers at resource level `level`.

    `environment` holds what every worker of the launch must see (controller address, one-use
    token, certificate fingerprint); the launcher tells each worker its index (local workers by
    `BATCHCREW_INDEX`, AWS array children by `AWS_BATCH_JOB_ARRAY_INDEX`). `name` and
    `controller` are the controller's name and its unique id, for job names and tags.

    Example:
        >>> LaunchRequest("a1b2", count=2, level=0, environment={}, name="crew").count
        2
    """

    launch: str
    count: int
    level: int
    environment: Mapping[str, str]
    name: str
    controller: str = ""


@dataclass(frozen=True, eq=False)
class LaunchHandle:
    """A launch as its launcher knows it. `external_id` is what users see (the AWS job id).

    Subclasses add what their launcher needs to find the workers again.

    Example:
        >>> handle = LaunchHandle("a1b2", 3, "1f3c-77")
        >>> handle.worker_label(2)
        '1f3c-77:2'
    """

    launch: str
    count: int
    external_id: str

    def worker_label(self, index: int) -> str:
        """How users see worker `index`: the launch's id, with the index when there are more.

        Example:
            >>> LaunchHandle("a1b2", 1, "job-9").worker_label(0)
            'job-9'
        """
        return self.external_id if self.count == 1 else f"{self.external_id}:{index}"


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One launcher error: when, during which operation, for which job, and what was said.

    Example:
        >>> when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        >>> str(ErrorRecord(when, "SubmitJob", "job-9", "no such queue"))
        '2026-01-02 03:04:05 SubmitJob job-9: no such queue'
    """

    time: datetime.datetime
    operation: str
    job: str | None
    message: str

    def __str__(self) -> str:
        job = f" {self.job}" if self.job else ""
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.operation}{job}: {self.message}"


WorkerKey = tuple[str, int]
"""A launched worker: its launch id and its index in the launch."""


class Launcher(abc.ABC):
    """Base class of launchers: subclass it to start workers somewhere new.

    A subclass implements `launch`, `poll` and `terminate`; it may offer several resource
    `levels` (e.g. memory 4, 8, 16 GiB, level 0 the smallest) and cap how many workers one
    launch may hold (`launch_size_max`). The controller calls it through `submit`, which runs
    calls on up to `processes` threads of the launcher's own (None: at once, in the calling
    thread, so that errors surface where they happen).

    Example:
        >>> class Nowhere(Launcher):
        ...     def launch(self, request): return LaunchHandle(request.launch, request.count, "x")
        ...     def poll(self, workers): return {}
        ...     def terminate(self, handle, indices=None): pass
        >>> launcher = Nowhere()
        >>> launcher.submit(len, "abc").result(), launcher.levels
        (3, 1)
        >>> launcher.close()
    """

    launch_size_max: int | None = None
    """The most workers one launch may hold (None: no limit)."""

    seconds_poll: float = 1.0
    """How often the controller polls workers that have not connected yet."""

    watch_connected: bool = False
    """Whether connected workers are polled too (cheap for local processes; on AWS a connected
    worker's own connection says when it ends, and polls cost API calls)."""

    def __init__(self, processes: int | None = 4) -> None:
        if processes is not None and (
            isinstance(processes, bool) or not isinstance(processes, int) or processes < 1
        ):
            raise ValueError(f"processes must be an integer >= 1 or None, not {processes!r}")
        self.processes = processes
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._under_way: set[concurrent.futures.Future[Any]] = set()
        self._errors: deque[ErrorRecord] = deque(maxlen=ERRORS_KEPT)
        self._errors_lock = threading.Lock()

    @property
    def levels(self) -> int:
        """How many resource levels this launcher offers (1: all workers alike)."""
        return 1

    def default_host(self) -> str:
        """The address the controller listens on when the user gives none: loopback here; a
        launcher whose workers run on other machines returns an address they can reach.

        Example:
            >>> from batchcrew.launchers.local import LocalLauncher
            >>> LocalLauncher().default_host()
            '127.0.0.1'
        """
        return "127.0.0.1"

    def describe_level(self, level: int) -> str:
        """A short text of what a level means, for logs and results (e.g. '4 GiB memory').

        Example:
            >>> from batchcrew.launchers.local import LocalLauncher
            >>> LocalLauncher().describe_level(0)
            'level 0'
        """
        return f"level {level}"

    @abc.abstractmethod
    def launch(self, request: LaunchRequest) -> LaunchHandle:
        """Start `request.count` workers; return the handle `poll` and `terminate` take."""

    @abc.abstractmethod
    def poll(self, workers: Mapping[LaunchHandle, Sequence[int]]) -> dict[WorkerKey, WorkerStatus]:
        """The state of the given workers of many launches, read in as few calls as possible.

        Keys are `(launch, index)`; a worker the launcher cannot find is left out.
        """

    @abc.abstractmethod
    def terminate(self, handle: LaunchHandle, indices: Sequence[int] | None = None) -> None:
        """Stop workers of a launch (`indices`: only those; None: all), queued ones included."""

    def submit(self, call: Callable[..., T], *args: object) -> concurrent.futures.Future[T]:
        """Run `call(*args)` the way this launcher runs its calls; return its future.

        Example:
            >>> from batchcrew.launchers.local import LocalLauncher
            >>> launcher = LocalLauncher(processes=None)
            >>> launcher.submit(divmod, 7, 2).result()
            (3, 1)
        """
        if self.processes is None:
            done: concurrent.futures.Future[T] = concurrent.futures.Future()
            try:
                done.set_result(call(*args))
            except Exception as error:  # noqa: BLE001 (the caller reads it from the future)
                done.set_exception(error)
            return done
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.processes, thread_name_prefix="batchcrew-launcher"
                )
            future = self._pool.submit(call, *args)
            self._under_way.add(future)
        future.add_done_callback(self._call_done)
        return future

    def _call_done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._pool_lock:
            self._under_way.discard(future)

    def close(self, seconds: float | None = None) -> None:
        """Wait for calls under way (at most `seconds`; None: however long they take), then
        release the threads (the controller calls it last). Calls still running after
        `seconds` (a cloud that does not answer) finish in the background."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            under_way = list(self._under_way)
        if pool is not None:
            pool.shutdown(wait=seconds is None)
            concurrent.futures.wait(under_way, timeout=seconds)

    def calls_under_way(self) -> int:
        """How many calls `submit` started have not finished.

        Example:
            >>> from batchcrew.launchers.local import LocalLauncher
            >>> LocalLauncher().calls_under_way()
            0
        """
        with self._pool_lock:
            return len(self._under_way)

    def record_error(self, operation: str, message: str, job: str | None = None) -> None:
        """Keep an error for `errors()` and log it.

        Example:
            >>> from batchcrew.launchers.local import LocalLauncher
            >>> launcher = LocalLauncher()
            >>> launcher.record_error("launch", "no capacity", job="a1b2")
            >>> launcher.errors()[0].message
            'no capacity'
        """
        record = ErrorRecord(datetime.datetime.now(datetime.UTC), operation, job, message)
        logger.warning("%s", record)
        with self._errors_lock:
            self._errors.append(record)

    def errors(self) -> list[ErrorRecord]:
        """The latest launch, poll and termination errors, oldest first.

        Example:
            >>> from batchcrew.launchers.local import LocalLauncher
            >>> LocalLauncher().errors()
            []
        """
        with self._errors_lock:
            return list(self._errors)
