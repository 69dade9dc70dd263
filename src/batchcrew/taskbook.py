"""The task book: every task the user holds, from push until its result is taken.

Owns task names (each checked here, and only here), seeds, the inbox of tasks on their way to
the event loop, resolved results waiting for `pop`, and the waits on them. Results are unpickled
in the thread that takes them, never on the event loop. Thread-safe; one lock.
"""

from __future__ import annotations

import itertools
import pickle
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchcrew.calls import Call, PickledFunction
from batchcrew.errors import LaunchError, TerminatedError
from batchcrew.messages import TaskSpec
from batchcrew.results import Result, Results
from batchcrew.scheduler import Resolve
from batchcrew.seeds import TaskSeeds
from batchcrew.serialization import load_value

if TYPE_CHECKING:
    from batchcrew.executor import TaskFuture


class TaskGroup:
    """Tasks waited for together (one `map`): a count and an event, so that resolving a task
    of the group wakes nobody until the last one.

    Example:
        >>> group = TaskGroup()
        >>> group.add(1); group.resolved_one(); group.done.is_set()
        True
    """

    __slots__ = ("done", "failed", "remaining", "size")

    def __init__(self) -> None:
        self.size = 0
        self.remaining = 0
        self.failed = 0
        self.done = threading.Event()

    def add(self, count: int) -> None:
        """Count `count` more tasks (before any of them resolves)."""
        self.size += count
        self.remaining += count
        if self.remaining == 0:
            self.done.set()  # an empty map is done at once

    def resolved_one(self, ok: bool = True) -> None:
        """One task of the group has its result (`ok`: it succeeded)."""
        self.failed += not ok
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


@dataclass(slots=True, eq=False)
class TaskEntry:
    """What the book keeps for a task until its result is taken.

    `poppable`: the result goes to `pop`/`collect` (tasks from `push` and `walk`); tasks of a
    `map` or an executor are taken by those instead.
    """

    name: str
    command: str
    seed: int
    poppable: bool
    resolution: Resolve | None = None
    future: TaskFuture | None = None
    group: TaskGroup | None = None
    built: Result | None = None

    def result(self) -> Result | None:
        """The task's `Result` (None while unresolved), unpickled on first use."""
        if self.built is None and self.resolution is not None:
            self.built = build_result(self, self.resolution)
        return self.built


def build_result(entry: TaskEntry, resolution: Resolve) -> Result:
    """The user's `Result` of a resolved task: its outcome with its value unpickled.

    Example:
        >>> from batchcrew.messages import Outcome
        >>> entry = TaskEntry("t", "f()", seed=1, poppable=True)
        >>> build_result(entry, Resolve("t", Outcome("success", pickle.dumps(5)), 1)).value
        5
    """
    outcome = resolution.outcome
    value: object = None
    exception: BaseException | None = None
    status, error = outcome.status, outcome.error
    if status == "success" and outcome.body:
        try:
            value = load_value(outcome.body, outcome.buffers)
        except Exception as problem:  # noqa: BLE001 (the result is bad, not the controller)
            status, error = "error", f"the result could not be unpickled: {problem!r:.500}"
    elif status == "error" and outcome.body:
        try:
            loaded = pickle.loads(outcome.body)
        except Exception as problem:  # noqa: BLE001 (the message and traceback still tell)
            error = f"{error} (the exception could not be unpickled here: {problem!r:.300})"
        else:
            if isinstance(loaded, BaseException):
                exception = loaded
    return Result(
        name=entry.name,
        command=entry.command,
        status=status,
        value=value,
        error=error,
        traceback=outcome.traceback,
        warnings=outcome.warnings,
        seconds=outcome.seconds,
        seed=entry.seed,
        attempts=resolution.attempts,
        worker=resolution.worker,
        launch=resolution.launch,
        exception=exception,
    )


class TaskBook:
    """The user-side record of tasks, shared by the user's threads and the event loop.

    Example:
        >>> from batchcrew.calls import pickle_function, prepare
        >>> book = TaskBook(seed=1)
        >>> function = pickle_function(abs)
        >>> entries, wake = book.add(function, [prepare(function, (-1,), {}, "a")], None, True)
        >>> [spec.name for spec in book.take_inbox()], len(book)
        (['a'], 1)
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._seeds = TaskSeeds(seed)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.entries: dict[str, TaskEntry] = {}
        self.resolved: deque[TaskEntry] = deque()
        self.unresolved = 0
        self.unresolved_poppable = 0
        self.pushed = 0
        self.accepting = True
        self.failure: BaseException | None = None
        """An error every wait raises (a synchronous launcher failed)."""
        self._names = itertools.count()
        self._inbox: list[TaskSpec] = []
        self._inbox_waiting = False
        self._waiters = 0

    def __len__(self) -> int:
        with self.lock:
            return len(self.entries)

    # ----- the user's side --------------------------------------------------------------

    def add(
        self,
        function: PickledFunction,
        calls: Sequence[Call],
        seconds_timeout: float | None,
        poppable: bool,
        future: TaskFuture | None = None,
        group: TaskGroup | None = None,
        setup: PickledFunction | None = None,
    ) -> tuple[list[TaskEntry], bool]:
        """Hold prepared calls as tasks, all or none; True when the loop must be woken to
        take the inbox (one wake-up serves a whole burst of pushes)."""
        entries: list[TaskEntry] = []
        with self.lock:
            if not self.accepting:
                raise TerminatedError("the controller was terminated")
            given = [call.name for call in calls if call.name is not None]
            taken = [name for name in given if name in self.entries]
            if taken or len(set(given)) != len(given):
                duplicate = taken[0] if taken else next(n for n in given if given.count(n) > 1)
                raise ValueError(f"a task named {duplicate!r} is still held")
            for call in calls:
                name = call.name if call.name is not None else self._fresh_name()
                seed = self._seeds(self.pushed)
                self.pushed += 1
                entry = TaskEntry(name, call.command, seed, poppable, future=future, group=group)
                self.entries[name] = entry
                entries.append(entry)
                self._inbox.append(
                    TaskSpec(
                        name,
                        function.key,
                        function.data,
                        call.arguments.data,
                        seed,
                        seconds_timeout,
                        None if setup is None else setup.key,
                        b"" if setup is None else setup.data,
                        call.arguments.buffers,
                    )
                )
            self.unresolved += len(entries)
            if poppable:
                self.unresolved_poppable += len(entries)
            wake = not self._inbox_waiting
            self._inbox_waiting = True
        return entries, wake

    def pop(self, timeout: float | None) -> Result | None:
        """Take the oldest resolved result (see `Controller.pop`)."""
        with self.changed:
            self._wait(lambda: bool(self.resolved) or not self.unresolved_poppable, timeout)
            if not self.resolved:
                return None
            entry = self.resolved.popleft()
            self.entries.pop(entry.name, None)
        return entry.result()

    def collect(self) -> Results:
        """Take every result resolved so far."""
        with self.lock:
            taken = list(self.resolved)
            self.resolved.clear()
            for entry in taken:
                self.entries.pop(entry.name, None)
        return Results(result for entry in taken if (result := entry.result()) is not None)

    def wait(self, mode: str, timeout: float | None) -> bool:
        """Wait for every task ("all") or for a result to pop ("one")."""
        with self.changed:
            if mode == "all":
                return self._wait(lambda: self.unresolved == 0, timeout)
            return self._wait(lambda: bool(self.resolved) or self.unresolved == 0, timeout)

    def wait_entry(self, entry: TaskEntry, timeout: float | None) -> Result | None:
        """Wait for one task's result (None if `timeout` passed first)."""
        with self.changed:
            self._wait(lambda: entry.resolution is not None, timeout)
        return entry.result()

    def forget(self, entries: Sequence[TaskEntry]) -> list[str]:
        """Stop holding these tasks (a map that ended, or ended early); return the names of
        those still unresolved, for the caller to cancel."""
        unresolved: list[str] = []
        with self.changed:
            for entry in entries:
                if self.entries.get(entry.name) is entry:
                    del self.entries[entry.name]
                    if entry.resolution is None:  # its outcome will find no entry now
                        unresolved.append(entry.name)
                        self.unresolved -= 1
                        self.unresolved_poppable -= entry.poppable
            if unresolved and self._waiters:
                self.changed.notify_all()
        return unresolved

    def close(self) -> None:
        """Take no more tasks."""
        with self.lock:
            self.accepting = False

    def fail(self, error: BaseException) -> None:
        """Make the next wait raise `error` (a synchronous launcher failed: say it at once)."""
        with self.changed:
            self.failure = error
            self.changed.notify_all()

    def raise_failure(self) -> None:
        """Raise the failure a wait should raise, if there is one (and forget it)."""
        with self.lock:
            self._raise_failure()

    def _raise_failure(self) -> None:
        failure, self.failure = self.failure, None
        if failure is not None:
            raise LaunchError(f"a worker could not be launched: {failure}") from failure

    # ----- the event loop's side --------------------------------------------------------

    def take_inbox(self) -> list[TaskSpec]:
        """The tasks pushed since the last call, in push order."""
        with self.lock:
            specs, self._inbox = self._inbox, []
            self._inbox_waiting = False
        return specs

    def deliver(self, resolutions: Sequence[Resolve]) -> None:
        """Record final outcomes; wake waiters; settle futures (outside the lock, since their
        callbacks may call the controller)."""
        settle: list[tuple[TaskFuture, TaskEntry]] = []
        with self.changed:
            for resolution in resolutions:
                entry = self.entries.get(resolution.name)
                if entry is None or entry.resolution is not None:
                    continue
                entry.resolution = resolution
                self.unresolved -= 1
                if entry.poppable:
                    self.unresolved_poppable -= 1
                    self.resolved.append(entry)
                if entry.group is not None:
                    entry.group.resolved_one(resolution.outcome.ok)
                if entry.future is not None:
                    settle.append((entry.future, entry))
                    del self.entries[entry.name]  # the future holds it now; nothing pops it
            if self._waiters:
                self.changed.notify_all()
        for future, entry in settle:
            future.settle(entry)

    # ----- internals --------------------------------------------------------------------

    def _fresh_name(self) -> str:
        while True:
            name = f"task-{next(self._names)}"
            if name not in self.entries:
                return name

    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait on the condition (its lock held) while counting waiters, so that a result
        delivered when nobody waits costs no wake-up. Raises the book's failure, if any."""
        self._waiters += 1
        try:
            done = self.changed.wait_for(lambda: predicate() or self.failure is not None, timeout)
        finally:
            self._waiters -= 1
        if not predicate():
            self._raise_failure()
        return done
