"""`ControllerExecutor`: a `concurrent.futures.Executor` over a controller's workers."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from batchcrew.controller import Controller

T = TypeVar("T")


class ControllerExecutor(concurrent.futures.Executor):
    """Submit calls as futures; they run on the controller's workers.

    A failed task's future raises `batchcrew.TaskError`, whose `.results` holds the `Result`
    with the remote traceback. `shutdown` waits for (or cancels) this executor's futures; the
    controller itself keeps running until it is terminated.

    Example:
        >>> import batchcrew as bc
        >>> with bc.Controller() as crew, crew.executor() as pool:  # doctest: +SKIP
        ...     list(pool.map(abs, [-1, -2]))
        [1, 2]
    """

    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run `fn(*args, **kwargs)` on a worker; return its future."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to an executor that was shut down")
        future = self._controller._submit_future(fn, args, kwargs)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; optionally cancel pending futures and wait for the rest."""
        with self._lock:
            self._shutdown = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                future.cancel()
        if wait:
            concurrent.futures.wait(futures)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)
