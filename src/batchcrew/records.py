"""The scheduler's records: a task it holds, a worker and what it did, the per-level queues of
waiting tasks, and the departed workers (the latest kept whole, the rest added up).

Plain data and bookkeeping: no I/O, no clocks, no decisions (those are the scheduler's).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from batchcrew.messages import TaskSpec

HISTORY_KEPT = 1000
"""Departed workers kept for `summary()`; older ones are only counted."""

PREFETCH = 1
"""Tasks a busy worker may hold beyond the one it runs, so it never waits on the network."""

PREFETCH_SHORT = 8
"""Tasks a busy worker may hold beyond the one it runs while tasks are short: a burst of
results and the tasks that replace them then share one read and one write on each side."""

SECONDS_SHORT = 0.005
"""Tasks this short or shorter, on the recent average, are short."""


@dataclass(slots=True, eq=False)
class TaskState:
    """A task held by the scheduler: queued, on a worker, or waiting for a crash verdict."""

    spec: TaskSpec
    level: int = 0
    attempts: int = 0
    crashes: int = 0
    reclaims: int = 0
    worker: str | None = None
    started_at: float | None = None
    queued: bool = False
    last_crash: str | None = None


@dataclass(slots=True, eq=False)
class WorkerState:
    """A connected (or departed) worker, what it holds and what it did.

    `label` and `launch_label` are how users see it (on AWS: the job ids).
    """

    id: str
    launch: str
    index: int
    level: int
    connected_at: float
    last_seen: float
    idle_since: float | None
    label: str = ""
    launch_label: str = ""
    host: str = ""
    pid: int | None = None
    held: deque[TaskState] = field(default_factory=deque)
    tasks: int = 0
    errors: int = 0
    seconds_busy: float = 0.0
    retiring: str | None = None
    exit_sent: bool = False
    status: Literal["connected", "exited", "crashed"] = "connected"
    ending: str | None = None
    """Why a crashed worker ended, in its launcher's words (out of memory, a host lost...)."""

    def take(self, name: str) -> TaskState | None:
        """Remove and return the held task of this name (None: it holds none)."""
        for position, task in enumerate(self.held):
            if task.spec.name == name:
                del self.held[position]
                return task
        return None


@dataclass(slots=True)
class Earlier:
    """Departed workers no longer in the history, added up.

    Example:
        >>> Earlier().workers
        0
    """

    workers: int = 0
    tasks: int = 0
    errors: int = 0
    crashes: int = 0
    seconds_busy: float = 0.0


class Pace:
    """How long tasks have taken lately (an exponential average of what workers report), and
    so how many a busy worker may hold.

    Example:
        >>> pace = Pace()
        >>> pace.prefetch
        1
        >>> for _ in range(20):
        ...     pace.observe(0.0001)
        >>> pace.prefetch
        8
    """

    def __init__(self) -> None:
        self.seconds: float | None = None

    def observe(self, seconds: float) -> None:
        """A task took `seconds` on its worker."""
        previous = self.seconds
        self.seconds = seconds if previous is None else 0.9 * previous + 0.1 * seconds

    @property
    def prefetch(self) -> int:
        """Tasks a busy worker may hold beyond the one it runs (one until tasks are known to
        be short: a long task must not wait behind another on a busy worker)."""
        if self.seconds is None or self.seconds > SECONDS_SHORT:
            return PREFETCH
        return PREFETCH_SHORT


class LevelQueues:
    """Waiting tasks, one queue per resource level; a task leaves its queue in O(1) (it is
    marked, and skipped when reached).

    Example:
        >>> queues = LevelQueues(levels=2)
        >>> task = TaskState(TaskSpec("t", "k", b"", b"", 1), level=1)
        >>> queues.put(task); queues.counts
        [0, 1]
        >>> queues.take(level=0) is None, queues.take(level=1) is task
        (True, True)
    """

    def __init__(self, levels: int) -> None:
        self.queues: list[deque[TaskState]] = [deque() for _ in range(levels)]
        self.counts = [0] * levels

    def __getitem__(self, level: int) -> deque[TaskState]:
        return self.queues[level]

    def put(self, task: TaskState, front: bool = False) -> None:
        """Queue a task at its level (`front`: ahead of the others, as a retry)."""
        task.queued = True
        queue = self.queues[task.level]
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self.counts[task.level] += 1

    def remove(self, task: TaskState) -> None:
        """Take a task out of the queues (left in its deque and skipped when reached)."""
        task.queued = False
        self.counts[task.level] -= 1

    def take(self, level: int) -> TaskState | None:
        """The next task a worker of `level` may run: its own level first, then lower ones."""
        for current in range(level, -1, -1):
            queue = self.queues[current]
            while queue:
                task = queue.popleft()
                if task.queued:
                    self.remove(task)
                    return task
        return None

    def drain(self) -> Iterator[TaskState]:
        """Take every queued task, level by level."""
        for queue in self.queues:
            while queue:
                task = queue.popleft()
                if task.queued:
                    self.remove(task)
                    yield task


class Departures:
    """Departed workers: the latest `HISTORY_KEPT` kept whole, older ones added up in
    `earlier`.

    Example:
        >>> departures = Departures()
        >>> departures.earlier.workers, len(departures.history)
        (0, 0)
    """

    def __init__(self) -> None:
        self.history: deque[WorkerState] = deque()
        self.earlier = Earlier()

    def add(self, state: WorkerState) -> None:
        """Keep a worker that has left."""
        self.history.append(state)
        if len(self.history) > HISTORY_KEPT:
            old = self.history.popleft()
            earlier = self.earlier
            earlier.workers += 1
            earlier.tasks += old.tasks
            earlier.errors += old.errors
            earlier.crashes += old.status == "crashed"
            earlier.seconds_busy += old.seconds_busy

    def find(self, worker: str) -> WorkerState | None:
        """A departed worker still in the history, by id."""
        for state in reversed(self.history):
            if state.id == worker:
                return state
        return None
