"""The progress bar of `map`: done of total, how many failed, elapsed and remaining time.

Drawn with rich on standard error, only when asked (by default: when standard error is a
terminal); removed when the map ends.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from batchcrew.taskbook import TaskGroup


class TaskProgress:
    """A transient bar: `update(done, failed)` as tasks resolve.

    Example:
        >>> with TaskProgress(total=10, disable=True) as bar:
        ...     bar.update(4, failed=1)
        ...     bar.done, bar.failed
        (4, 1)
    """

    def __init__(self, total: int, disable: bool = False, console: Console | None = None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._progress = Progress(
            TextColumn("tasks"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            transient=True,
            disable=disable,
            console=console,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> TaskProgress:
        self._progress.start()
        self._task = self._progress.add_task("tasks", total=self.total, failed="")
        return self

    def update(self, done: int, failed: int) -> None:
        """Show `done` tasks resolved so far, `failed` of them not successful."""
        self.done, self.failed = done, failed
        if self._task is not None:
            text = f"[red]{failed} failed" if failed else ""
            self._progress.update(self._task, completed=done, failed=text)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._progress.stop()


def wait_for_group(group: TaskGroup, show: bool, check: Callable[[], None]) -> None:
    """Wait until every task of a `map` has resolved, with a bar when `show`; `check` runs
    between looks (it raises what should end the wait early).

    Example:
        >>> group = TaskGroup(); group.add(0)
        >>> wait_for_group(group, show=False, check=lambda: None)
    """
    if not show:
        while not group.done.wait(timeout=1.0):
            check()
        return
    with TaskProgress(group.size) as bar:
        while not group.done.wait(timeout=0.2):
            check()
            bar.update(group.size - group.remaining, group.failed)
        bar.update(group.size, group.failed)
