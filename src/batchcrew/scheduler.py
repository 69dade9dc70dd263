"""The scheduler: which worker holds which task, and what happens on every event.

Pure state machine: methods take events (with the time passed in) and return actions. No
sockets, threads or clocks live here, so every transition is tested without I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from batchcrew.results import Result, Status

PREFETCH = 1
"""Tasks a busy worker may hold beyond the one it runs, so it never waits on the network.

Not used with `seconds_wall`: a worker must not start a task after its wall time."""

OutcomeStatus = Literal["success", "error", "timeout", "cancel"]

SECONDS_TIMEOUT_GRACE = 30.0
"""How long past its timeout a task may stay unanswered before its worker is written off."""

SECONDS_SILENCE = 60.0
"""An idle worker that sends nothing (not even a heartbeat) this long is written off."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task as the controller hands it over: already serialized, with its seed.

    Example:
        >>> TaskSpec("t1", "f(1)", "key", b"fn", b"args", seed=7).name
        't1'
    """

    name: str
    command: str
    function: str
    function_data: bytes
    arguments: bytes
    seed: int
    seconds_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker reports about a task it ran.

    Example:
        >>> Outcome("success", value=3).status
        'success'
    """

    status: OutcomeStatus
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(slots=True, eq=False)
class TaskState:
    """A task held by the scheduler, queued or on a worker."""

    spec: TaskSpec
    level: int = 0
    attempts: int = 0
    crashes: int = 0
    worker: str | None = None
    started_at: float | None = None
    queued: bool = False


@dataclass(slots=True, eq=False)
class WorkerState:
    """A connected (or departed) worker and what it holds."""

    id: str
    launch: str
    index: int
    level: int
    connected_at: float
    last_seen: float
    idle_since: float | None
    held: deque[TaskState] = field(default_factory=deque)
    tasks: int = 0
    errors: int = 0
    seconds_busy: float = 0.0
    retiring: str | None = None
    exit_sent: bool = False
    status: Literal["connected", "exited", "crashed"] = "connected"


@dataclass(slots=True, eq=False)
class LaunchState:
    """A launch of `count` workers at one resource level."""

    id: str
    level: int
    count: int
    launched_at: float
    connected: set[int] = field(default_factory=set)
    closed: set[int] = field(default_factory=set)
    expired: bool = False

    @property
    def pending(self) -> int:
        """Workers of this launch still expected to connect."""
        if self.expired:
            return 0
        return self.count - len(self.connected) - len(self.closed)


@dataclass(frozen=True, slots=True)
class SendTask:
    """Send a task to a worker.

    Example:
        >>> SendTask("w1", TaskSpec("t", "f()", "k", b"", b"", 1)).worker
        'w1'
    """

    worker: str
    task: TaskSpec


@dataclass(frozen=True, slots=True)
class SendExit:
    """Tell a worker to exit once it holds nothing.

    Example:
        >>> SendExit("w1", "idle for 300 s").reason
        'idle for 300 s'
    """

    worker: str
    reason: str


@dataclass(frozen=True, slots=True)
class SendCancel:
    """Tell a worker to abandon a task it holds.

    Example:
        >>> SendCancel("w1", "t1").name
        't1'
    """

    worker: str
    name: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Drop a worker's connection (it stopped answering).

    Example:
        >>> Disconnect("w1", "silent for 60 s").worker
        'w1'
    """

    worker: str
    reason: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """A task has its final result.

    Example:
        >>> Resolve(Result("t", "f()", "success")).result.name
        't'
    """

    result: Result


@dataclass(frozen=True, slots=True)
class TerminateLaunch:
    """Stop the workers of a launch that never connected.

    Example:
        >>> TerminateLaunch("L1", (0, 2), "not connected after 30 s").indices
        (0, 2)
    """

    launch: str
    indices: tuple[int, ...]
    reason: str


Action = SendTask | SendExit | SendCancel | Disconnect | Resolve | TerminateLaunch


@dataclass(frozen=True, slots=True)
class Limits:
    """The scheduler's settings (validated by the controller).

    Example:
        >>> Limits(seconds_idle=30).crashes_max
        5
    """

    seconds_idle: float = 300.0
    seconds_launch: float = 30.0
    seconds_wall: float | None = None
    tasks_max: int | None = None
    crashes_max: int = 5
    levels: int = 1
    workers: int = 1
    """The most workers at once: tasks are prefetched only when no more may be launched."""


@dataclass(frozen=True, slots=True)
class Counts:
    """Per-level counts the autoscaler decides from.

    `demand[k]`: tasks that need a worker of level k (queued, or running on a worker that
    takes more work); `supply[k]`: workers of level k that take more work plus launches of
    level k not yet connected; `workers`: every connected worker and pending launch slot.
    """

    demand: tuple[int, ...]
    supply: tuple[int, ...]
    workers: int


class Scheduler:
    """Holds the queue, the workers, the launches; turns events into actions.

    Example:
        >>> scheduler = Scheduler(Limits())
        >>> scheduler.push([TaskSpec("t1", "f()", "k", b"", b"", 1)], now=0.0)
        []
        >>> scheduler.launch_started("L1", level=0, count=1, now=0.0)
        >>> [type(a).__name__ for a in scheduler.worker_connected("w1", "L1", 0, now=0.1)]
        ['SendTask']
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.tasks: dict[str, TaskState] = {}
        self.queues: list[deque[TaskState]] = [deque() for _ in range(limits.levels)]
        self.queued = [0] * limits.levels
        self.workers: dict[str, WorkerState] = {}
        self.departed: list[WorkerState] = []
        self.launches: dict[str, LaunchState] = {}
        self.open_launches: dict[str, LaunchState] = {}
        self.launch_failures = 0
        """Workers that ended before connecting since the last one connected (for back-off)."""

    # ----- events -----------------------------------------------------------------------

    def push(self, specs: Iterable[TaskSpec], now: float) -> list[Action]:
        """Queue new tasks (names must not be held) and hand them to idle workers.

        All or nothing: if one name is held, no task of the batch is queued.
        """
        specs = list(specs)
        names = [spec.name for spec in specs]
        taken = [name for name in names if name in self.tasks]
        if taken or len(set(names)) != len(names):
            duplicate = taken[0] if taken else next(n for n in names if names.count(n) > 1)
            raise ValueError(f"a task named {duplicate!r} is still held")
        for spec in specs:
            state = TaskState(spec)
            self.tasks[spec.name] = state
            self._enqueue(state, front=False)
        return self._assign_all(now)

    def launch_started(self, launch: str, level: int, count: int, now: float) -> None:
        """Record a launch of `count` workers at `level`."""
        if launch in self.launches:
            raise ValueError(f"launch {launch!r} is already recorded")
        self.launches[launch] = self.open_launches[launch] = LaunchState(launch, level, count, now)

    def launch_failed(self, launch: str, indices: Iterable[int] | None, now: float) -> None:
        """Workers of a launch ended (or never started) before connecting: stop expecting them."""
        state = self.launches.get(launch)
        if state is None:
            return
        closed = range(state.count) if indices is None else indices
        ended = {
            index for index in closed if 0 <= index < state.count and index not in state.connected
        } - state.closed
        self.launch_failures += len(ended)
        state.closed.update(ended)

    def worker_connected(self, worker: str, launch: str, index: int, now: float) -> list[Action]:
        """A worker passed authentication. Returns actions; raises `ConnectionRefused`."""
        state = self.launches.get(launch)
        if state is None:
            raise ConnectionRefused(f"unknown launch {launch!r}")
        if state.expired:
            raise ConnectionRefused(f"launch {launch} was written off before it connected")
        if not 0 <= index < state.count:
            raise ConnectionRefused(f"launch {launch} has no worker index {index}")
        if index in state.connected or index in state.closed:
            raise ConnectionRefused(f"worker {index} of launch {launch} already connected")
        if worker in self.workers:
            raise ConnectionRefused(f"worker {worker} is already connected")
        state.connected.add(index)
        self.launch_failures = 0
        self.workers[worker] = WorkerState(
            id=worker,
            launch=launch,
            index=index,
            level=state.level,
            connected_at=now,
            last_seen=now,
            idle_since=now,
        )
        return self._assign_all(now)

    def heard_from(self, worker: str, now: float) -> None:
        """Any frame from a worker shows it is alive."""
        state = self.workers.get(worker)
        if state is not None:
            state.last_seen = now

    def result_received(self, worker: str, name: str, outcome: Outcome, now: float) -> list[Action]:
        """A worker finished a task. A late or unknown result is dropped."""
        state = self.workers.get(worker)
        if state is None:
            return []
        state.last_seen = now
        task = self._take_held(state, name)
        if task is None:
            return self._after_worker_freed(state, now)
        state.tasks += 1
        state.seconds_busy += outcome.seconds
        if outcome.status != "success":
            state.errors += 1
        if state.held:
            state.held[0].started_at = now
        actions: list[Action] = []
        if self.tasks.get(name) is task:
            del self.tasks[name]
            actions.append(Resolve(self._result(task, outcome.status, outcome, state)))
        actions += self._after_worker_freed(state, now)
        return actions

    def worker_lost(self, worker: str, now: float) -> list[Action]:
        """A worker's connection closed. What it held goes back to the queue or crashes."""
        state = self.workers.pop(worker, None)
        if state is None:
            return []
        self.departed.append(state)
        actions: list[Action] = []
        if not state.held:
            state.status = "exited"
            return self._assign_all(now)
        state.status = "crashed"
        running, *waiting = state.held
        state.held.clear()
        for task in reversed(waiting):
            task.attempts -= 1
            task.worker = None
            task.started_at = None
            if self.tasks.get(task.spec.name) is task:
                self._enqueue(task, front=True)
        if self.tasks.get(running.spec.name) is running:
            running.crashes += 1
            running.worker = None
            running.started_at = None
            if running.crashes >= self.limits.crashes_max:
                del self.tasks[running.spec.name]
                message = f"the worker crashed {running.crashes} time(s) running this task"
                outcome = Outcome("error", error=message)
                actions.append(Resolve(self._result(running, "crash", outcome, state)))
            else:
                running.level = min(running.crashes, self.limits.levels - 1)
                self._enqueue(running, front=True)
        return actions + self._assign_all(now)

    def cancel(self, names: Iterable[str] | None, now: float) -> list[Action]:
        """Cancel tasks by name (None: every task held). Unknown names are ignored."""
        chosen = list(self.tasks) if names is None else [n for n in names if n in self.tasks]
        actions: list[Action] = []
        for name in chosen:
            task = self.tasks.pop(name)
            if task.queued:
                self._dequeue(task)
            elif task.worker is not None:
                actions.append(SendCancel(task.worker, name))
            outcome = Outcome("cancel", error="cancelled")
            holder = self.workers.get(task.worker) if task.worker else None
            if holder is not None and holder.held and holder.held[0] is not task:
                task.attempts -= 1  # prefetched, never started
            actions.append(Resolve(self._result(task, "cancel", outcome, holder)))
        return actions

    def tick(self, now: float) -> list[Action]:
        """Time passes: exits, timeouts, silent workers and expired launches."""
        actions: list[Action] = []
        for state in list(self.workers.values()):
            # A busy worker may be silent: a task holding the GIL stops its heartbeats. Its
            # connection's TCP keepalive (in the kernel) tells a dead peer from a busy one.
            if not state.held and now - state.last_seen > SECONDS_SILENCE:
                state.retiring = f"silent for {now - state.last_seen:.0f} s"  # no more work
                actions.append(Disconnect(state.id, state.retiring))
                continue
            if state.held:
                actions += self._timeout_backstop(state, now)
            actions += self._retire_if_due(state, now)
        for launch in list(self.open_launches.values()):
            if launch.pending == 0:
                del self.open_launches[launch.id]
                continue
            if now - launch.launched_at >= self.limits.seconds_launch:
                launch.expired = True
                missing = tuple(
                    index
                    for index in range(launch.count)
                    if index not in launch.connected and index not in launch.closed
                )
                reason = f"not connected within seconds_launch={self.limits.seconds_launch:g}"
                actions.append(TerminateLaunch(launch.id, missing, reason))
        return actions

    # ----- queries ----------------------------------------------------------------------

    def counts(self) -> Counts:
        """Per-level demand and supply for the autoscaler."""
        levels = self.limits.levels
        demand = list(self.queued)
        supply = [0] * levels
        for state in self.workers.values():
            if state.retiring is None:
                supply[state.level] += 1
                if state.held:
                    demand[state.held[0].level] += 1
        pending = 0
        for launch in self.open_launches.values():
            supply[launch.level] += launch.pending
            pending += launch.pending
        return Counts(tuple(demand), tuple(supply), len(self.workers) + pending)

    def unresolved(self) -> int:
        """Tasks not yet resolved (queued or on a worker).

        Example:
            >>> Scheduler(Limits()).unresolved()
            0
        """
        return len(self.tasks)

    # ----- internals --------------------------------------------------------------------

    def _enqueue(self, task: TaskState, front: bool) -> None:
        task.queued = True
        queue = self.queues[task.level]
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self.queued[task.level] += 1

    def _dequeue(self, task: TaskState) -> None:
        # Left in the deque and skipped when reached: removal from the middle would be O(n).
        task.queued = False
        self.queued[task.level] -= 1

    def _next_task(self, level: int) -> TaskState | None:
        for current in range(level, -1, -1):
            queue = self.queues[current]
            while queue:
                task = queue.popleft()
                if task.queued:
                    self._dequeue(task)
                    return task
        return None

    def _accepts(self, state: WorkerState, depth: int, now: float) -> bool:
        if state.retiring is not None or len(state.held) > depth:
            return False
        wall = self.limits.seconds_wall
        if wall is not None and (state.held or now - state.connected_at >= wall):
            return False  # past its wall time, or a prefetched task could outlive it
        limit = self.limits.tasks_max
        return limit is None or state.tasks + len(state.held) < limit

    def _give(self, state: WorkerState, task: TaskState, now: float) -> SendTask:
        task.worker = state.id
        task.attempts += 1
        if not state.held:
            task.started_at = now
        state.held.append(task)
        state.idle_since = None
        return SendTask(state.id, task.spec)

    def _assign_all(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if not any(self.queued):
            return actions
        for state in self.workers.values():
            if not state.held and self._accepts(state, 0, now):
                task = self._next_task(state.level)
                if task is not None:
                    actions.append(self._give(state, task, now))
        for state in self.workers.values():
            actions += self._fill(state, now)
        return actions

    def _fill(self, state: WorkerState, now: float) -> list[Action]:
        """Give a worker a task if it is idle, and one more if work is left over."""
        actions: list[Action] = []
        while any(self.queued) and self._accepts(state, PREFETCH, now):
            if state.held and self._surplus() <= 0:
                break
            task = self._next_task(state.level)
            if task is None:
                break
            actions.append(self._give(state, task, now))
        return actions

    def _after_worker_freed(self, state: WorkerState, now: float) -> list[Action]:
        actions = self._fill(state, now)
        if not state.held and state.idle_since is None:
            state.idle_since = now
        return actions + self._retire_if_due(state, now)

    def _surplus(self) -> int:
        """Queued tasks that no idle, launching or launchable worker will take.

        While more workers may be launched, nothing is prefetched: a second long task must
        not wait behind the first on a busy worker while a new worker could run it.
        """
        for launch_id in [key for key, launch in self.open_launches.items() if not launch.pending]:
            del self.open_launches[launch_id]
        pending = sum(launch.pending for launch in self.open_launches.values())
        room = self.limits.workers - len(self.workers) - pending
        return sum(self.queued) - pending - max(0, room)

    def _retire_if_due(self, state: WorkerState, now: float) -> list[Action]:
        if state.retiring is None:
            reason = self._retirement_reason(state, now)
            if reason is None:
                return []
            state.retiring = reason
        if state.held or state.exit_sent:
            return []
        state.exit_sent = True
        return [SendExit(state.id, state.retiring)]

    def _retirement_reason(self, state: WorkerState, now: float) -> str | None:
        limits = self.limits
        if limits.tasks_max is not None and state.tasks >= limits.tasks_max:
            return f"ran tasks_max={limits.tasks_max} tasks"
        if limits.seconds_wall is not None and now - state.connected_at >= limits.seconds_wall:
            return f"lived seconds_wall={limits.seconds_wall:g}"
        if state.idle_since is not None and now - state.idle_since >= limits.seconds_idle:
            return f"idle for seconds_idle={limits.seconds_idle:g}"
        return None

    def _timeout_backstop(self, state: WorkerState, now: float) -> list[Action]:
        task = state.held[0]
        timeout = task.spec.seconds_timeout
        if timeout is None or task.started_at is None:
            return []
        if now - task.started_at < timeout + SECONDS_TIMEOUT_GRACE:
            return []
        actions: list[Action] = []
        if self.tasks.get(task.spec.name) is task:
            del self.tasks[task.spec.name]
            message = f"no answer {timeout + SECONDS_TIMEOUT_GRACE:g} s after the task started"
            outcome = Outcome("timeout", error=message, seconds=now - task.started_at)
            actions.append(Resolve(self._result(task, "timeout", outcome, state)))
        # Still held until the worker is lost: what it prefetched then goes back without a
        # crash, and a written-off worker takes no more work meanwhile.
        state.retiring = f"task {task.spec.name} overran its timeout"
        actions.append(Disconnect(state.id, state.retiring))
        return actions

    def _take_held(self, state: WorkerState, name: str) -> TaskState | None:
        for position, task in enumerate(state.held):
            if task.spec.name == name:
                del state.held[position]
                return task
        return None

    def _result(
        self, task: TaskState, status: Status, outcome: Outcome, worker: WorkerState | None
    ) -> Result:
        return Result(
            name=task.spec.name,
            command=task.spec.command,
            status=status,
            value=outcome.value if status == "success" else None,
            error=outcome.error,
            traceback=outcome.traceback,
            warnings=outcome.warnings,
            seconds=outcome.seconds,
            seed=task.spec.seed,
            attempts=task.attempts,
            worker=worker.id if worker else None,
            launch=worker.launch if worker else None,
        )


class ConnectionRefused(Exception):
    """A worker may not join (unknown or expired launch, duplicate index).

    Example:
        >>> str(ConnectionRefused("unknown launch 'L9'"))
        "unknown launch 'L9'"
    """
