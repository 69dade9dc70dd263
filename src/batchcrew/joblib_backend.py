"""`BatchcrewBackend`: joblib's parallel backend "batchcrew", whose batches run as tasks on a
controller's workers.

Owns the meeting of joblib's backend API and `ControllerExecutor`: how many batches are in
flight, the thread that hands completions back to joblib, and the local controller made for a
`Parallel` call when none is given. It must not be imported by `import batchcrew` (joblib is
optional and workers stay light): `batchcrew.joblib_hook` registers it when joblib loads.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import operator
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joblib import cpu_count
from joblib.parallel import AutoBatchingMixin, ParallelBackendBase, SequentialBackend

from batchcrew.executor import TaskFuture

if TYPE_CHECKING:
    from joblib import Parallel

    from batchcrew.controller import Controller
    from batchcrew.executor import ControllerExecutor

logger = logging.getLogger("batchcrew.joblib_backend")

_Completed = Callable[[concurrent.futures.Future[Any]], object]
"""joblib's completion callback of one batch, given the batch's future."""


@dataclass(eq=False)
class _Batch:
    """One joblib batch: the call, joblib's callback, the round of submissions it belongs to
    (an abort starts a new one) and, once sent to the controller, its future."""

    call: Callable[[], Any]
    completed: _Completed | None
    round: int
    future: concurrent.futures.Future[Any] | None = None


_Completion = tuple[_Batch, concurrent.futures.Future[Any]]


class BatchcrewBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's backend "batchcrew": `Parallel` batches run on a controller's workers.

    `n_jobs` is how many batches are on the controller at once, at most its `workers` (-1 or
    None: all of them, -2: all but one, as in joblib). Without a controller, each `Parallel`
    call (or `with Parallel(...)` block) gets a local `Controller` of `n_jobs` workers (-1: one
    per CPU), terminated when the call ends. When that comes to one batch at a time, joblib runs
    the calls in the calling process, as it does with every backend. A failed call raises the
    exception it raised (a crash or a timeout: `batchcrew.TaskError`) and the batches in flight
    are cancelled; calls nested in a task run one after another on its worker. joblib sizes the
    batches itself (`batch_size="auto"`).

    Example:
        >>> import joblib
        >>> with joblib.parallel_config(backend="batchcrew", controller=crew):
        ...     joblib.Parallel(n_jobs=-1)(joblib.delayed(abs)(x) for x in [-1, -2, -3])
        [1, 2, 3]
    """

    default_n_jobs = -1  # choosing this backend means using the controller's workers
    supports_retrieve_callback = True
    uses_threads = False
    supports_sharedmem = False

    def __init__(
        self, controller: Controller | None = None, *, nesting_level: int | None = None
    ) -> None:
        if controller is not None:
            from batchcrew.controller import Controller

            if not isinstance(controller, Controller):
                raise TypeError(
                    f"controller must be a batchcrew.Controller, not {type(controller).__name__}"
                )
        super().__init__(nesting_level=nesting_level)
        self.controller = controller
        # joblib callbacks that raised, each logged: the Parallel call they belong to would
        # then wait for ever, as it would with joblib's own backends
        self.callback_errors = 0
        self._local: Controller | None = None
        self._executor: ControllerExecutor | None = None
        self._limit = 1
        self._lock = threading.Lock()
        self._round = 0
        self._sent: set[_Batch] = set()
        self._waiting: collections.deque[_Batch] = collections.deque()
        self._done: queue.SimpleQueue[_Completion | None] = queue.SimpleQueue()
        self._relay: threading.Thread | None = None

    # ----- joblib's backend API ---------------------------------------------------------

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many batches may run at once for this `n_jobs`.

        Example:
            >>> backend = BatchcrewBackend(crew)  # two workers
            >>> [backend.effective_n_jobs(n) for n in (-1, -2, 1, 8)]
            [2, 1, 1, 2]
        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        wanted = self.default_n_jobs if n_jobs is None else n_jobs
        workers = cpu_count() if self.controller is None else self.controller.workers
        if wanted == -1 and self.controller is not None:
            # Every worker, even when there is one: the work goes to the controller's workers
            # (an AWS job, say), never back into this process.
            return max(workers, 2)
        if wanted < 0:
            return max(workers + 1 + wanted, 1)
        return wanted if self.controller is None else min(wanted, workers)

    def configure(self, n_jobs: int = 1, parallel: Parallel | None = None, **_: Any) -> int:
        """Get ready for a `Parallel` call; return how many batches may run at once.

        joblib also passes the settings of its own process pools (memory mapping, temporary
        folder, start method): none applies to batches that travel pickled.
        """
        self.parallel = parallel
        limit = self.effective_n_jobs(n_jobs)
        if limit == 1:
            return 1  # joblib runs the calls itself, in this process
        controller = self.controller
        if controller is None:
            from batchcrew.controller import Controller

            if self._local is None:
                self._local = Controller(workers=limit)
            controller = self._local
        with self._lock:
            self._limit = limit
        if self._executor is None:
            self._executor = controller.executor()
        if self._relay is None:
            self._relay = threading.Thread(
                target=self._hand_back, name=f"batchcrew-joblib-{controller.name}", daemon=True
            )
            self._relay.start()
        return limit

    def submit(self, func: Callable[[], Any], callback: _Completed | None = None) -> _Batch:
        """Send a batch to the controller, or keep it until a batch in flight completes."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the batchcrew backend is not configured: use it from Parallel")
        with self._lock:
            batch = _Batch(func, callback, self._round)
            sending = len(self._sent) < self._limit
            if sending:
                self._sent.add(batch)
            else:
                self._waiting.append(batch)
        if sending:
            self._send(executor, batch)
        return batch

    apply_async = submit  # the name joblib < 1.5 calls

    def retrieve_result_callback(self, out: concurrent.futures.Future[Any]) -> Any:
        """The batch's results (unpickled here, on the relay thread), or what it raised."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Forget the batches not sent and cancel those on the controller (a call failed).

        The backend stays ready either way: joblib calls `terminate` when it is done with it.
        """
        with self._lock:
            self._round += 1
            sent, self._sent = self._sent, set()
            self._waiting.clear()
        names = [
            batch.future.name
            for batch in sent
            if isinstance(batch.future, TaskFuture) and batch.future.name is not None
        ]
        controller = self.controller if self.controller is not None else self._local
        if names and controller is not None:
            controller.cancel(names)

    def terminate(self) -> None:
        """End the `Parallel` call: stop the relay thread, end the local controller if any."""
        self.abort_everything()  # nothing is in flight after a call that went well
        relay, self._relay = self._relay, None
        if relay is not None:
            self._done.put(None)
            if relay is not threading.current_thread():
                relay.join()
            self._done = queue.SimpleQueue()  # completions that come late go nowhere
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
        local, self._local = self._local, None
        if local is not None:
            local.terminate()
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple[SequentialBackend, None]:
        """Calls nested in a task run one after another on its worker.

        Example:
            >>> BatchcrewBackend(nesting_level=0).get_nested_backend()[0].nesting_level
            1
        """
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

    # ----- batches in flight ------------------------------------------------------------

    def _send(self, executor: ControllerExecutor, batch: _Batch) -> None:
        # The batch travels as the argument of a function pickled once per worker, so the
        # controller's function cache never holds batches (nor the data in them).
        try:
            future = executor.submit(operator.call, batch.call)
        except Exception as error:  # noqa: BLE001 (joblib raises it as the batch's outcome)
            future = concurrent.futures.Future[Any]()
            future.set_exception(error)
        batch.future = future
        done = self._done
        future.add_done_callback(lambda finished: done.put((batch, finished)))

    def _hand_back(self) -> None:
        """Relay thread: hand each completion to joblib, after sending the next waiting batch.

        Completions come in on the controller's event loop, which must never wait, and joblib's
        callback unpickles the results, reads the caller's iterator and submits the next batch.
        """
        done = self._done
        while (completion := done.get()) is not None:
            batch, future = completion
            following = self._next(batch)
            if following is not None and self._executor is not None:
                self._send(self._executor, following)
            if batch.completed is None:
                continue
            try:
                batch.completed(future)
            except Exception:
                self.callback_errors += 1
                logger.exception("joblib's completion callback failed")

    def _next(self, batch: _Batch) -> _Batch | None:
        """Free the slot of a completed batch; return the waiting batch that takes it."""
        with self._lock:
            if batch.round != self._round:
                return None  # aborted: its slot was freed then
            self._sent.discard(batch)
            if not self._waiting:
                return None
            following = self._waiting.popleft()
            self._sent.add(following)
            return following
