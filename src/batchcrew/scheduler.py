"""The scheduler: which worker holds which task, and what happens on every event.

Pure state machine: methods take events (with the time passed in) and return actions. No
sockets, threads or clocks live here, so every transition is tested without I/O. Launches are
not its business (the launch book owns them); it learns only how many workers are on their way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from batchcrew.messages import Outcome, TaskSpec
from batchcrew.records import Departures, LevelQueues, Pace, TaskState, WorkerState

SECONDS_TIMEOUT_GRACE = 30.0
"""How long past its timeout a task may stay unanswered before its worker is written off."""

SECONDS_SILENCE = 60.0
"""An idle worker that sends nothing (not even a heartbeat) this long is written off."""

SECONDS_VERDICT = 30.0
"""How long a crashed task waits for its launcher to say why the worker died."""

RECLAIMS_MAX = 10
"""Host or Spot reclaims a task may suffer on top of `crashes_max` (each retried at once)."""

Cause = Literal["memory", "host", "other"]


@dataclass(frozen=True, slots=True)
class SendTask:
    """Send a task to a worker.

    Example:
        >>> SendTask("w1", TaskSpec("t", "k", b"", b"", 1)).worker
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
    """Drop a worker's connection (it stopped answering, or it is known to be dead).

    Example:
        >>> Disconnect("w1", "silent for 60 s").worker
        'w1'
    """

    worker: str
    reason: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """A task has its final outcome; `worker` and `launch` are labels of where it ran last.

    Example:
        >>> Resolve("t", Outcome("success"), attempts=1).outcome.status
        'success'
    """

    name: str
    outcome: Outcome
    attempts: int = 0
    worker: str | None = None
    launch: str | None = None


@dataclass(frozen=True, slots=True)
class Investigate:
    """A worker was lost while it ran a task: ask its launcher why, then call `worker_ended`.

    Example:
        >>> Investigate("L-0", "L", 0).index
        0
    """

    worker: str
    launch: str
    index: int


Action = SendTask | SendExit | SendCancel | Disconnect | Resolve | Investigate


@dataclass(frozen=True, slots=True)
class Limits:
    """The scheduler's settings (validated by the controller).

    Example:
        >>> Limits(seconds_idle=30).crashes_max
        5
    """

    seconds_idle: float = 300.0
    seconds_wall: float | None = None
    tasks_max: int | None = None
    crashes_max: int = 5
    levels: int = 1
    workers: int = 1
    """The most workers at once: tasks are prefetched only when no more may be launched."""


@dataclass(frozen=True, slots=True)
class Load:
    """Per-level counts the autoscaler decides from.

    `demand[k]`: tasks that need a worker of level k (queued, or running on a worker that
    takes more work); `supply[k]`: connected workers of level k that take more work;
    `connected`: every connected worker.
    """

    demand: tuple[int, ...]
    supply: tuple[int, ...]
    connected: int


class Scheduler:
    """Holds the queue and the workers; turns events into actions.

    `pending()` says how many launched workers have yet to connect (the launch book knows).

    Example:
        >>> scheduler = Scheduler(Limits())
        >>> scheduler.push([TaskSpec("t1", "k", b"", b"", 1)], now=0.0)
        []
        >>> [type(a).__name__ for a in scheduler.worker_connected("L-0", "L", 0, 0, now=0.1)]
        ['SendTask']
    """

    def __init__(self, limits: Limits, pending: Callable[[], int] = lambda: 0) -> None:
        self.limits = limits
        self.pending = pending
        self.tasks: dict[str, TaskState] = {}
        self.queues = LevelQueues(limits.levels)
        self.workers: dict[str, WorkerState] = {}
        self.departures = Departures()
        self.pace = Pace()
        self.awaiting: dict[str, tuple[TaskState, float]] = {}
        """Tasks whose worker died under them, by worker, with the time it was lost."""

    # ----- events -----------------------------------------------------------------------

    def push(self, specs: Iterable[TaskSpec], now: float) -> list[Action]:
        """Queue new tasks and hand them to idle workers (names are unique: the task book
        checks them)."""
        for spec in specs:
            state = TaskState(spec)
            self.tasks[spec.name] = state
            self.queues.put(state, front=False)
        return self._assign_all(now)

    def worker_connected(
        self,
        worker: str,
        launch: str,
        index: int,
        level: int,
        now: float,
        *,
        label: str = "",
        launch_label: str = "",
        host: str = "",
        pid: int | None = None,
    ) -> list[Action]:
        """An admitted worker joins; it gets work if there is some."""
        self.workers[worker] = WorkerState(
            id=worker,
            launch=launch,
            index=index,
            level=level,
            connected_at=now,
            last_seen=now,
            idle_since=now,
            label=label or worker,
            launch_label=launch_label or launch,
            host=host,
            pid=pid,
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
        task = state.take(name)
        if task is None:
            return self._after_worker_freed(state, now)
        state.tasks += 1
        state.seconds_busy += outcome.seconds
        self.pace.observe(outcome.seconds)
        if not outcome.ok:
            state.errors += 1
        if state.held:
            state.held[0].started_at = now
        actions: list[Action] = []
        if self.tasks.get(name) is task:
            del self.tasks[name]
            actions.append(resolution(task, outcome, state))
        actions += self._after_worker_freed(state, now)
        return actions

    def worker_lost(self, worker: str, now: float) -> list[Action]:
        """A worker's connection closed. What it prefetched goes back to the queue; the task it
        ran waits for the launcher's word on why the worker died (`worker_ended`)."""
        state = self.workers.pop(worker, None)
        if state is None:
            return []
        actions: list[Action] = []
        state.status = "crashed" if state.held else "exited"
        self.departures.add(state)
        if not state.held:
            return self._assign_all(now)
        running, *waiting = state.held
        state.held.clear()
        for task in reversed(waiting):
            task.attempts -= 1
            task.worker = None
            task.started_at = None
            if self.tasks.get(task.spec.name) is task:
                self.queues.put(task, front=True)
        if self.tasks.get(running.spec.name) is running:
            running.worker = None
            running.started_at = None
            self.awaiting[worker] = (running, now)
            actions.append(Investigate(worker, state.launch, state.index))
        return actions + self._assign_all(now)

    def worker_ended(
        self, worker: str, cause: Cause | None, reason: str, now: float
    ) -> list[Action]:
        """The launcher's verdict on a worker lost mid-task: a reclaimed host retries the task
        as it was, an out-of-memory kill (or an unknown cause) retries it one level up, any
        other death retries it where it was; each but a reclaim counts toward `crashes_max`."""
        waiting = self.awaiting.pop(worker, None)
        if waiting is None:
            return []
        task = waiting[0]
        departed = self.departures.find(worker)
        if departed is not None:
            departed.ending = reason
        if self.tasks.get(task.spec.name) is not task:
            return []
        task.last_crash = reason
        if cause == "host" and task.reclaims < RECLAIMS_MAX:
            task.reclaims += 1
        else:
            task.crashes += 1
            if task.crashes >= self.limits.crashes_max:
                del self.tasks[task.spec.name]
                message = (
                    f"the worker crashed {task.crashes} time(s) running this task; last: {reason}"
                )
                return [resolution(task, Outcome("crash", error=message), departed)]
            if cause in (None, "memory"):
                task.level = min(task.level + 1, self.limits.levels - 1)
        self.queues.put(task, front=True)
        return self._assign_all(now)

    def cancel(self, names: Iterable[str] | None, now: float) -> list[Action]:
        """Cancel tasks by name (None: every task held). Unknown names are ignored."""
        chosen = list(self.tasks) if names is None else list(dict.fromkeys(names))
        actions: list[Action] = []
        for name in chosen:
            task = self.tasks.pop(name, None)
            if task is None:
                continue
            for worker, (waiting, _) in list(self.awaiting.items()):
                if waiting is task:
                    del self.awaiting[worker]
            if task.queued:
                self.queues.remove(task)
            elif task.worker is not None:
                actions.append(SendCancel(task.worker, name))
            holder = self.workers.get(task.worker) if task.worker else None
            if holder is not None and holder.held and holder.held[0] is not task:
                task.attempts -= 1  # prefetched, never started
            actions.append(resolution(task, Outcome("cancel", error="cancelled"), holder))
        return actions

    def fail_queued(self, reason: str) -> list[Action]:
        """Resolve every queued task with an error: no worker can be started to run it."""
        actions: list[Action] = []
        for task in self.queues.drain():
            del self.tasks[task.spec.name]
            actions.append(resolution(task, Outcome("error", error=reason), None))
        return actions

    def tick(self, now: float) -> list[Action]:
        """Time passes: exits, timeouts, silent workers, crash verdicts that never came."""
        actions: list[Action] = []
        for state in list(self.workers.values()):
            # A busy worker may be silent: a task holding the GIL stops its heartbeats. Its
            # connection's TCP keepalive (in the kernel) tells a dead peer from a busy one.
            if not state.held and now - state.last_seen > SECONDS_SILENCE:
                state.retiring = f"silent for {now - state.last_seen:.0f} s"  # no more work
                actions.append(Disconnect(state.id, state.retiring))
                continue
            if state.held:
                actions += overrun(self.tasks, state, now)
            actions += self._retire_if_due(state, now)
        for worker, (_, lost_at) in list(self.awaiting.items()):
            if now - lost_at >= SECONDS_VERDICT:
                departed = self.departures.find(worker)
                label = departed.label if departed is not None else worker
                reason = f"worker {label} was lost; its launcher did not say why"
                actions += self.worker_ended(worker, None, reason, now)
        return actions

    # ----- queries ----------------------------------------------------------------------

    def load(self) -> Load:
        """Per-level demand and connected supply, for the autoscaler."""
        levels = self.limits.levels
        demand = list(self.queued)
        supply = [0] * levels
        for state in self.workers.values():
            if state.retiring is None:
                supply[state.level] += 1
                if state.held:
                    demand[state.held[0].level] += 1
        for task, _ in self.awaiting.values():
            if self.tasks.get(task.spec.name) is task:
                demand[task.level] += 1
        return Load(tuple(demand), tuple(supply), len(self.workers))

    def unresolved(self) -> int:
        """Tasks not yet resolved (queued, on a worker, or awaiting a verdict).

        Example:
            >>> Scheduler(Limits()).unresolved()
            0
        """
        return len(self.tasks)

    @property
    def queued(self) -> list[int]:
        """Queued tasks per level."""
        return self.queues.counts

    @property
    def history(self) -> Iterable[WorkerState]:
        """Departed workers kept whole, oldest first."""
        return self.departures.history

    # ----- internals --------------------------------------------------------------------

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
            if not state.held and accepts(self.limits, state, 0, now):
                task = self.queues.take(state.level)
                if task is not None:
                    actions.append(self._give(state, task, now))
        for state in self.workers.values():
            actions += self._fill(state, now)
        return actions

    def _fill(self, state: WorkerState, now: float) -> list[Action]:
        """Give a worker a task if it is idle, and more (`Pace.prefetch`) if work is left
        over (never with `seconds_wall`: a worker must not start a task after its wall time)."""
        actions: list[Action] = []
        depth = self.pace.prefetch
        while any(self.queued) and accepts(self.limits, state, depth, now):
            if state.held and self._surplus() <= 0:
                break
            task = self.queues.take(state.level)
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
        pending = self.pending()
        room = self.limits.workers - len(self.workers) - pending
        return sum(self.queued) - pending - max(0, room)

    def _retire_if_due(self, state: WorkerState, now: float) -> list[Action]:
        if state.retiring is None:
            reason = retirement_reason(self.limits, state, now)
            if reason is None:
                return []
            state.retiring = reason
        if state.held or state.exit_sent:
            return []
        state.exit_sent = True
        return [SendExit(state.id, state.retiring)]


def overrun(tasks: dict[str, TaskState], state: WorkerState, now: float) -> list[Action]:
    """The timeout backstop: a task stuck past its timeout (in code no signal interrupts) is
    resolved as `timeout` and its worker written off."""
    task = state.held[0]
    timeout = task.spec.seconds_timeout
    if timeout is None or task.started_at is None:
        return []
    if now - task.started_at < timeout + SECONDS_TIMEOUT_GRACE:
        return []
    actions: list[Action] = []
    if tasks.get(task.spec.name) is task:
        del tasks[task.spec.name]
        message = f"no answer {timeout + SECONDS_TIMEOUT_GRACE:g} s after the task started"
        outcome = Outcome("timeout", error=message, seconds=now - task.started_at)
        actions.append(resolution(task, outcome, state))
    # Still held until the worker is lost: what it prefetched then goes back without a
    # crash, and a written-off worker takes no more work meanwhile.
    state.retiring = f"task {task.spec.name} overran its timeout"
    actions.append(Disconnect(state.id, state.retiring))
    return actions


def accepts(limits: Limits, state: WorkerState, depth: int, now: float) -> bool:
    """Whether a worker holding `depth` tasks or fewer may take one more."""
    if state.retiring is not None or len(state.held) > depth:
        return False
    wall = limits.seconds_wall
    if wall is not None and (state.held or now - state.connected_at >= wall):
        return False  # past its wall time, or a prefetched task could outlive it
    return limits.tasks_max is None or state.tasks + len(state.held) < limits.tasks_max


def retirement_reason(limits: Limits, state: WorkerState, now: float) -> str | None:
    """Why a worker should leave now (None: it stays)."""
    if limits.tasks_max is not None and state.tasks >= limits.tasks_max:
        return f"ran tasks_max={limits.tasks_max} tasks"
    if limits.seconds_wall is not None and now - state.connected_at >= limits.seconds_wall:
        return f"lived seconds_wall={limits.seconds_wall:g}"
    if state.idle_since is not None and now - state.idle_since >= limits.seconds_idle:
        return f"idle for seconds_idle={limits.seconds_idle:g}"
    return None


def resolution(task: TaskState, outcome: Outcome, worker: WorkerState | None) -> Resolve:
    """A task's final outcome, with labels of where it ran last."""
    return Resolve(
        task.spec.name,
        outcome,
        attempts=task.attempts,
        worker=worker.label if worker else None,
        launch=worker.launch_label if worker else None,
    )
