"""`Task`: the handle `push` returns, and the controller's record of each task it holds."""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchcrew.results import Result

if TYPE_CHECKING:
    from batchcrew.controller import Controller


class TaskGroup:
    """Tasks waited for together (one `map`): a count and an event, so that resolving a task
    of the group wakes nobody until the last one.

    Example:
        >>> group = TaskGroup()
        >>> group.add(1); group.resolved_one(); group.done.is_set()
        True
    """

    __slots__ = ("done", "remaining", "size")

    def __init__(self) -> None:
        self.size = 0
        self.remaining = 0
        self.done = threading.Event()

    def add(self, count: int) -> None:
        """Count `count` more tasks (before any of them resolves)."""
        self.size += count
        self.remaining += count
        if self.remaining == 0:
            self.done.set()  # an empty map is done at once

    def resolved_one(self) -> None:
        """One task of the group has its result."""
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


@dataclass(slots=True, eq=False)
class TaskEntry:
    """What the controller keeps for a task until its result is taken.

    `poppable`: the result goes to `pop`/`collect` (tasks from `push` and `walk`); tasks of a
    `map` or an executor are taken by those instead.
    """

    name: str
    poppable: bool
    result: Result | None = None
    future: concurrent.futures.Future[object] | None = None
    group: TaskGroup | None = None


class Task:
    """A handle on a pushed task.

    Example:
        >>> import batchcrew as bc
        >>> with bc.Controller() as crew:  # doctest: +SKIP
        ...     task = crew.push(pow, 2, 10)
        ...     task.result().value
        1024
    """

    __slots__ = ("_controller", "_entry")

    def __init__(self, controller: Controller, entry: TaskEntry) -> None:
        self._controller = controller
        self._entry = entry

    @property
    def name(self) -> str:
        """The task's name."""
        return self._entry.name

    def done(self) -> bool:
        """True once the task has its result (success or not)."""
        return self._entry.result is not None

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the task's `Result` (at most `timeout` seconds; None: as long as it takes).

        Raises `TimeoutError` if the task is still unresolved when the time is up.
        """
        result = self._controller._wait_for_entry(self._entry, timeout)
        if result is None:
            raise TimeoutError(f"task {self.name!r} has no result after {timeout} s")
        return result

    def cancel(self) -> None:
        """Cancel the task, queued or running; its result has status `cancel`."""
        if self._entry.result is None:
            self._controller.cancel([self.name])

    def __repr__(self) -> str:
        return f"Task({self.name!r}, done={self.done()})"
