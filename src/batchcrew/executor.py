"""`ControllerExecutor`: a `concurrent.futures.Executor` over a controller's workers, and the
`TaskFuture` it returns.

Code written for the standard pools works unchanged: a failed task raises the exception the task
raised (its remote traceback as `__cause__`), a cancelled future is done at once for `wait` and
`as_completed`, and results are unpickled in the thread that asks for them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from batchcrew.errors import TaskError
from batchcrew.messages import Body
from batchcrew.serialization import load_value

if TYPE_CHECKING:
    from batchcrew.calls import PickledFunction
    from batchcrew.controller import Controller
    from batchcrew.taskbook import TaskEntry

T = TypeVar("T")


class RemoteTraceback(Exception):
    """The traceback text of an exception raised on a worker (the `__cause__` of the exception
    a future raises, as with `ProcessPoolExecutor`).

    Example:
        >>> print(RemoteTraceback('Traceback ...\\nValueError: bad'))
        <BLANKLINE>
        '''
        Traceback ...
        ValueError: bad
        '''
    """

    def __init__(self, traceback: str) -> None:
        super().__init__(traceback)
        self.traceback = traceback

    def __str__(self) -> str:
        return f"\n'''\n{self.traceback}\n'''"


class _Pickled:
    """A successful task's value, still pickled: loaded once, by the first thread that asks."""

    __slots__ = ("body", "lengths", "loaded", "lock", "value")

    def __init__(self, body: Body, lengths: tuple[int, ...]) -> None:
        self.body = body
        self.lengths = lengths
        self.lock = threading.Lock()
        self.loaded = False
        self.value: Any = None

    def load(self) -> Any:
        with self.lock:
            if not self.loaded:
                self.value = load_value(self.body, self.lengths) if self.body else None
                self.loaded, self.body = True, b""
            return self.value


class TaskFuture(concurrent.futures.Future[Any]):
    """The future of one task on a controller's workers.

    Example:
        >>> future = TaskFuture(cancel_task=print)
        >>> future.done()
        False
    """

    def __init__(self, cancel_task: Callable[[str], object]) -> None:
        super().__init__()
        self._cancel_task = cancel_task
        self._cancelling = threading.RLock()
        """Held from a pending future's cancel to its waiters being told (or it starting)."""
        self.name: str | None = None

    def cancel(self) -> bool:
        """Cancel the task if it has not started; True if it is cancelled (again: as often
        as it is asked, from any thread, as with the standard pools' futures)."""
        with self._cancelling:
            pending = not (self.running() or self.done())
            if not super().cancel():
                return False
            if pending:
                # The standard pools' own threads do this when they next look; here it is done
                # at once, so `wait()` and `as_completed()` see the future done now.
                self.set_running_or_notify_cancel()
        if pending and self.name is not None:
            self._cancel_task(self.name)
        return True

    def result(self, timeout: float | None = None) -> Any:
        """The task's value (unpickled here, on first use); raises what the task raised."""
        value = super().result(timeout)
        if isinstance(value, _Pickled):
            try:
                return value.load()
            except Exception as error:
                raise TaskError(
                    f"task {self.name} succeeded but its result could not be unpickled: "
                    f"{error!r:.500}",
                    [],
                ) from error
        return value

    def started(self) -> None:
        """The task went to a worker: from now on it cannot be cancelled (as in any pool)."""
        with self._cancelling:
            if not (self.running() or self.done()):
                self.set_running_or_notify_cancel()

    def settle(self, entry: TaskEntry) -> None:
        """Take the task's final outcome (on the controller's event loop)."""
        resolution = entry.resolution
        assert resolution is not None
        outcome = resolution.outcome
        # The user may cancel the future from another thread at any moment: losing that race
        # is fine, raising out of here (into the event loop) is not.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if outcome.status == "success":
                self.set_result(_Pickled(outcome.body, outcome.buffers))
            elif outcome.status == "cancel":
                if not self.cancel():  # already running: cancel() refuses
                    self.set_exception(concurrent.futures.CancelledError(outcome.error))
            else:
                self.set_exception(_exception_of(entry))


def _exception_of(entry: TaskEntry) -> BaseException:
    """The exception a failed task raised, with its remote traceback; a `TaskError` when there
    is none (crash, timeout) or when it cannot be unpickled here."""
    result = entry.result()
    assert result is not None
    if result.exception is not None:
        exception = result.exception
        if result.traceback:
            exception.__cause__ = RemoteTraceback(result.traceback)
        return exception
    body = entry.resolution.outcome.body if entry.resolution is not None else b""
    if result.status == "error" and result.traceback and not body:
        return TaskError(
            f"error: {result.error} (the exception could not be pickled on the worker; its "
            "traceback is in the result)",
            [result],
        )
    return TaskError(f"{result.status}: {result.error}", [result])


class ControllerExecutor(concurrent.futures.Executor):
    """Submit calls as futures; they run on the controller's workers.

    A failed task's future raises the exception the task raised; a crash or a timeout raises
    `batchcrew.TaskError`, whose `.results` holds the `Result`. `shutdown` waits for (or
    cancels) this executor's futures; the controller itself keeps running until it is
    terminated.

    Example:
        >>> with crew.executor() as pool:
        ...     list(pool.map(abs, [-1, -2]))
        [1, 2]
    """

    def __init__(self, controller: Controller, setup: PickledFunction | None = None) -> None:
        self._controller = controller
        self._setup = setup
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run `fn(*args, **kwargs)` on a worker; return its future."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._controller._exiting():
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            future = self._controller._submit_future(fn, args, kwargs, self._setup)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; optionally cancel pending futures and wait for the rest."""
        with self._lock:
            self._shutdown = True
            futures = list(self._futures)
        if cancel_futures:
            self._controller._caught_up()
            for future in futures:
                future.cancel()
        if wait:
            concurrent.futures.wait(futures)

    def _pending(self) -> list[concurrent.futures.Future[Any]]:
        """Futures not done yet (none once the executor was shut down with cancel_futures)."""
        with self._lock:
            return list(self._futures)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def __repr__(self) -> str:
        with self._lock:
            pending = len(self._futures)
        state = "shut down" if self._shutdown else "open"
        return (
            f"ControllerExecutor(controller={self._controller.name!r}, {state}, pending={pending})"
        )
