"""`Task`: the handle `push` and `walk` return."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from batchcrew.results import Result

if TYPE_CHECKING:
    from batchcrew.taskbook import TaskBook, TaskEntry


class Task:
    """A handle on a pushed task.

    Example:
        >>> task = crew.push(pow, 2, 10)
        >>> task.result().value, task.done()
        (1024, True)
        >>> crew.pop().value
        1024
    """

    __slots__ = ("_book", "_cancel", "_entry")

    def __init__(
        self, book: TaskBook, entry: TaskEntry, cancel: Callable[[list[str]], None]
    ) -> None:
        self._book = book
        self._entry = entry
        self._cancel = cancel

    @property
    def name(self) -> str:
        """The task's name."""
        return self._entry.name

    def done(self) -> bool:
        """True once the task has its result (success or not)."""
        return self._entry.resolution is not None

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the task's `Result` (at most `timeout` seconds; None: as long as it takes).

        Raises `TimeoutError` if the task is still unresolved when the time is up.
        """
        result = self._book.wait_entry(self._entry, timeout)
        if result is None:
            raise TimeoutError(f"task {self.name!r} has no result after {timeout} s")
        return result

    def cancel(self) -> None:
        """Cancel the task, queued or running; its result has status `cancel`."""
        if self._entry.resolution is None:
            self._cancel([self.name])

    def __repr__(self) -> str:
        return f"Task({self.name!r}, done={self.done()})"
