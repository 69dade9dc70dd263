"""The task methods of a controller: push, walk, map, pop, collect, wait, cancel.

They check the user's arguments, turn calls into tasks (`calls.py`), hold them in the task book
and wake the event loop once per burst; what happens on the loop is the dispatcher's business.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from batchcrew.calls import Call, PickledFunction, pickle_function, prepare, prepare_map
from batchcrew.errors import TaskError
from batchcrew.results import Result, Results
from batchcrew.settings import Settings, check_seconds
from batchcrew.task import Task
from batchcrew.taskbook import TaskBook, TaskEntry, TaskGroup

if TYPE_CHECKING:
    from batchcrew.executor import TaskFuture
    from batchcrew.lifecycle import Lifecycle

PUSH_BATCH = 1000
"""Tasks `map` hands to the event loop at a time, so workers start before the last is ready."""


class TaskMethods:
    """What a controller does with tasks (mixed into `Controller`, which provides the
    settings, the task book and the lifecycle)."""

    _settings: Settings
    _tasks: TaskBook
    _life: Lifecycle

    def push(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        seconds_timeout: float | None = None,
        **kwargs: Any,
    ) -> Task:
        """Queue `fn(*args, **kwargs)` on the workers; return its `Task`.

        `name` must not be held already (a task is held until its result is popped);
        `seconds_timeout` stops the task on its worker after that many seconds.

        Example:
            >>> crew.push(sum, [1, 2, 3], name="six").result().value
            6
            >>> crew.pop().name
            'six'
        """
        function = pickle_function(fn)
        check_seconds("seconds_timeout", seconds_timeout, none=True)
        call = prepare(function, args, kwargs, name)
        entry = self._add(function, [call], seconds_timeout, poppable=True)[0]
        return Task(self._tasks, entry, self.cancel)

    def walk(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        names: Iterable[str] | None = None,
        seconds_timeout: float | None = None,
        strict: bool = True,
    ) -> list[Task]:
        """Push `fn` over zipped iterables without waiting; return the tasks.

        Example:
            >>> tasks = crew.walk(pow, [2, 3], [2, 2])
            >>> [task.result().value for task in tasks]
            [4, 9]
            >>> len(crew.collect())
            2
        """
        entries = self._push_map(fn, iterables, names, seconds_timeout, strict, poppable=True)
        return [Task(self._tasks, entry, self.cancel) for entry in entries]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        names: Iterable[str] | None = None,
        error: Literal["raise", "warn", "ignore"] = "raise",
        progress: bool | None = None,
        seconds_timeout: float | None = None,
        strict: bool = True,
    ) -> Results:
        """Run `fn` over zipped iterables and return the results in input order.

        `error`: "raise" raises `TaskError` (carrying every result) if a task did not succeed,
        "warn" warns, "ignore" says nothing. `progress`: show a progress bar (None: when
        stderr is a terminal). `strict`: iterables of different lengths are an error (False:
        stop at the shortest, as `zip` does).

        Example:
            >>> crew.map(pow, [2, 3], [2, 2]).values()
            [4, 9]
        """
        from batchcrew.progress import wait_for_group

        if error not in ("raise", "warn", "ignore"):
            raise ValueError(f"error must be 'raise', 'warn' or 'ignore', not {error!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError("progress must be True, False or None")
        group = TaskGroup()
        entries = self._push_map(
            fn, iterables, names, seconds_timeout, strict, poppable=False, group=group
        )
        try:
            show = sys.stderr.isatty() if progress is None else progress
            wait_for_group(group, show, self._tasks.raise_failure)
        finally:
            self._forget(entries)
        results = Results(result for entry in entries if (result := entry.result()) is not None)
        failed = results.failed()
        if failed and error != "ignore":
            first = failed[0]
            message = (
                f"{len(failed)} of {len(results)} tasks did not succeed; "
                f"first: {first.name} ({first.status}): {first.error}"
            )
            if error == "raise":
                raise TaskError(message, results)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return results

    def pop(self, timeout: float | None = 0) -> Result | None:
        """Take one resolved result, or None.

        `timeout`: 0 does not block; None blocks until a task resolves or nothing is left
        outstanding; a number waits at most that long.

        Example:
            >>> _ = crew.push(abs, -1)
            >>> crew.pop(timeout=None).value
            1
        """
        if timeout is not None:
            check_seconds("timeout", timeout, zero=True)
        return self._tasks.pop(timeout)

    def collect(self) -> Results:
        """Take every result resolved so far (does not wait).

        Example:
            >>> _ = crew.push(abs, -1)
            >>> crew.wait()
            True
            >>> crew.collect().values()
            [1]
        """
        return self._tasks.collect()

    def wait(self, mode: Literal["all", "one"] = "all", timeout: float | None = None) -> bool:
        """Wait until every task is resolved ("all") or one result awaits `pop` ("one").

        Returns False if `timeout` seconds passed first.

        Example:
            >>> _ = crew.push(abs, -1)
            >>> crew.wait(mode="all", timeout=60)
            True
            >>> len(crew.collect())
            1
        """
        if mode not in ("all", "one"):
            raise ValueError(f"mode must be 'all' or 'one', not {mode!r}")
        if timeout is not None:
            check_seconds("timeout", timeout, zero=True)
        return self._tasks.wait(mode, timeout)

    def cancel(self, names: Iterable[str] | None = None) -> None:
        """Cancel tasks by name, queued or running (None: every unresolved task).

        Example:
            >>> import time
            >>> slow = crew.push(time.sleep, 60, name="slow")
            >>> crew.cancel(["slow"])
            >>> slow.result().status
            'cancel'
            >>> crew.collect().values()
            [None]
        """
        if isinstance(names, str):
            raise TypeError("names must be a list of task names, not one string")
        chosen = None if names is None else list(names)
        self._life.call(lambda dispatcher: dispatcher.cancel(chosen), None)

    def saturated(self) -> bool:
        """True when the controller holds at least as many tasks as it may run workers.

        Example:
            >>> crew.saturated()
            False
        """
        return len(self._tasks) >= self._settings.workers

    def __len__(self) -> int:
        return len(self._tasks)

    # ----- internals --------------------------------------------------------------------

    def _push_map(
        self,
        fn: Callable[..., Any],
        iterables: Sequence[Iterable[Any]],
        names: Iterable[str] | None,
        seconds_timeout: float | None,
        strict: bool,
        poppable: bool,
        group: TaskGroup | None = None,
    ) -> list[TaskEntry]:
        function = pickle_function(fn)
        check_seconds("seconds_timeout", seconds_timeout, none=True)
        calls = prepare_map(function, iterables, names, strict)
        if group is not None:
            group.add(len(calls))  # all at once: the group must not finish between batches
        entries: list[TaskEntry] = []
        try:
            for start in range(0, len(calls), PUSH_BATCH):
                batch = calls[start : start + PUSH_BATCH]
                entries += self._add(function, batch, seconds_timeout, poppable, group=group)
        except BaseException:
            self._forget(entries)
            raise
        return entries

    def _add(
        self,
        function: PickledFunction,
        calls: list[Call],
        seconds_timeout: float | None,
        poppable: bool,
        future: TaskFuture | None = None,
        group: TaskGroup | None = None,
        setup: PickledFunction | None = None,
    ) -> list[TaskEntry]:
        if self._life.state != "started":
            self._life.start()
        entries, wake = self._tasks.add(
            function, calls, seconds_timeout, poppable, future, group, setup
        )
        if wake:  # one wake-up of the loop for a burst of pushes
            self._life.post(lambda dispatcher: dispatcher.pushed())
        return entries

    def _forget(self, entries: Sequence[TaskEntry]) -> None:
        """Stop holding tasks of a map that ended (early: interrupted, or refused half-way)."""
        unresolved = self._tasks.forget(entries)
        if unresolved:
            self.cancel(unresolved)
