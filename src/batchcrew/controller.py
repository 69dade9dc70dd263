"""`Controller`: the user's face. Push tasks, get results; workers come and go by themselves.

A thin façade: settings are checked by `settings.py`, tasks are held by the task book, and the
event loop (runtime) runs the dispatcher, which owns the scheduler, the launch book and the
server. Every method is synchronous and thread-safe.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import secrets
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from batchcrew.calls import Call, PickledFunction, check_name, pickle_function, prepare
from batchcrew.errors import BatchcrewError, TaskError, TerminatedError
from batchcrew.launchers.base import Launcher
from batchcrew.results import Result, Results
from batchcrew.settings import Settings, check_seconds
from batchcrew.task import Task
from batchcrew.taskbook import TaskBook, TaskEntry, TaskGroup
from batchcrew.tls import TLS

if TYPE_CHECKING:
    import pandas

    from batchcrew.dispatch import Dispatcher
    from batchcrew.executor import ControllerExecutor, TaskFuture
    from batchcrew.runtime import Runtime
    from batchcrew.server import ServerCounts

logger = logging.getLogger("batchcrew.controller")

PUSH_BATCH = 1000
"""Tasks `map` hands to the event loop at a time, so workers start before the last is ready."""


class Controller:
    """Run Python tasks on auto-scaled workers.

    Workers are launched when tasks arrive (up to `workers` at once), run tasks one after
    another, and leave after `seconds_idle` without work, after `tasks_max` tasks or after
    `seconds_wall` seconds. A worker that dies mid-task is a crash: its task is retried on
    another worker and resolves with status `crash` after `crashes_max` crashes.

    Args:
        launcher: how workers start; None means `LocalLauncher()` (local processes).
        name: a name for logs and job names (default: random).
        workers: the most workers at once.
        host: the address workers dial (default: the launcher's, 127.0.0.1 for local).
        port: the TCP port to listen on (0: any free port).
        tls: "automatic" (a fresh self-signed certificate), a `TLS` object, or None (plaintext).
        seconds_idle: a worker with nothing to do this long exits.
        seconds_launch: a launched worker that has not connected in this time is written off.
        seconds_wall: a worker exits after this long, once its task is done (None: no limit).
        seconds_interval: the shortest time between launch rounds and between checks.
        tasks_max: a worker exits after this many tasks (None: no limit).
        crashes_max: crashes a task may suffer before it resolves as `crash`.
        seed: the seed every task's seed derives from (None: random).

    Example:
        >>> import batchcrew as bc
        >>> with bc.Controller(workers=2, seed=1) as crew:
        ...     crew.map(pow, [2, 3], [5, 2]).values()
        [32, 9]
    """

    def __init__(
        self,
        launcher: Launcher | None = None,
        *,
        name: str | None = None,
        workers: int = 1,
        host: str | None = None,
        port: int = 0,
        tls: TLS | Literal["automatic"] | None = "automatic",
        seconds_idle: float = 300.0,
        seconds_launch: float = 30.0,
        seconds_wall: float | None = None,
        seconds_interval: float = 0.25,
        tasks_max: int | None = None,
        crashes_max: int = 5,
        seed: int | None = None,
    ) -> None:
        if launcher is None:
            from batchcrew.launchers.local import LocalLauncher

            launcher = LocalLauncher()
        if not isinstance(launcher, Launcher):
            raise TypeError(f"launcher must be a batchcrew.Launcher, not {type(launcher).__name__}")
        self._settings = Settings.checked(
            name=name,
            workers=workers,
            host=launcher.default_host() if host is None else host,
            port=port,
            tls=tls,
            seconds_idle=seconds_idle,
            seconds_launch=seconds_launch,
            seconds_wall=seconds_wall,
            seconds_interval=seconds_interval,
            tasks_max=tasks_max,
            crashes_max=crashes_max,
            seed=seed,
        )
        self._launcher = launcher
        self._id = secrets.token_hex(8)
        self._tasks = TaskBook(self._settings.seed)
        self._runtime: Runtime | None = None
        self._dispatcher: Dispatcher | None = None
        self._state: Literal["new", "started", "terminated"] = "new"
        self._state_lock = threading.Lock()
        self._executors: weakref.WeakSet[ControllerExecutor] = weakref.WeakSet()

    # ----- settings (read-only) ---------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """Every setting, as checked at construction."""
        return self._settings

    @property
    def launcher(self) -> Launcher:
        """The launcher that starts workers (its `errors()` tell why launches failed)."""
        return self._launcher

    @property
    def name(self) -> str:
        """The controller's name (in logs and job names)."""
        return self._settings.name

    @property
    def id(self) -> str:
        """A unique id of this controller (in job tags)."""
        return self._id

    @property
    def workers(self) -> int:
        """The most workers at once."""
        return self._settings.workers

    @property
    def host(self) -> str:
        """The address workers dial."""
        return self._settings.host

    @property
    def port(self) -> int:
        """The port workers dial (the one bound, once started)."""
        dispatcher = self._dispatcher
        return dispatcher.server.port if dispatcher is not None else self._settings.port

    @property
    def seed(self) -> int:
        """The seed every task's seed derives from."""
        return self._settings.seed

    # ----- life -------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening (idempotent; the first push starts the controller by itself).

        Example:
            >>> crew.start()
            >>> crew.port > 0
            True
        """
        from batchcrew.dispatch import Dispatcher
        from batchcrew.runtime import Runtime

        with self._state_lock:
            if self._state == "terminated":
                raise TerminatedError(f"controller {self.name} was terminated")
            if self._state == "started":
                return
            runtime = Runtime(self.name)
            dispatcher = Dispatcher(self._settings, self._launcher, self._tasks, runtime, self._id)
            try:
                runtime.start(dispatcher.start)
            except OSError as error:
                raise BatchcrewError(
                    f"controller {self.name} could not listen on "
                    f"{self._settings.host}:{self._settings.port}: {error}"
                ) from error
            self._runtime, self._dispatcher = runtime, dispatcher
            self._state = "started"
        _exit_hook.watch(self)
        logger.info("controller %s listening on %s:%d", self.name, self.host, self.port)

    def terminate(self) -> None:
        """End every worker and job this controller launched and stop listening (idempotent).

        Unresolved tasks resolve with status `cancel`.

        Example:
            >>> with Controller() as other:
            ...     other.terminate()
            >>> try:
            ...     other.push(abs, 1)
            ... except TerminatedError as error:
            ...     print(type(error).__name__, isinstance(error, RuntimeError))
            TerminatedError True
        """
        runtime, dispatcher = self._runtime, self._dispatcher
        if runtime is not None and runtime.on_loop:
            raise BatchcrewError("terminate() cannot run in a future's done-callback")
        with self._state_lock:
            started = self._state == "started"
            self._state = "terminated"
        self._tasks.close()
        if not started or runtime is None or dispatcher is None:
            return
        try:
            runtime.run(dispatcher.shutdown(), timeout=30)
        except Exception:  # the rest of the teardown must happen all the same
            logger.exception("controller %s: the orderly shutdown failed", self.name)
        runtime.stop()
        self._end_launches(dispatcher)
        _exit_hook.forget(self)
        logger.info("controller %s terminated", self.name)

    def _end_launches(self, dispatcher: Dispatcher) -> None:
        """Terminate every launch that may still run, including those whose submission is
        still under way (each as soon as its handle comes back)."""
        launcher = self._launcher
        handles, submissions = dispatcher.leftovers()
        for submission in submissions:
            with contextlib.suppress(Exception):  # a failed submission left nothing to end
                handles.append(submission.result(timeout=60))
        endings = [launcher.submit(launcher.terminate, handle) for handle in handles]
        for handle, ending in zip(handles, endings, strict=True):
            try:
                ending.result()
            except Exception as error:  # noqa: BLE001 (every launch gets its chance)
                launcher.record_error("terminate", str(error), handle.external_id)
        launcher.close()

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        tasks = self._tasks
        return (
            f"Controller(name={self.name!r}, workers={self.workers}, state={self._state!r}, "
            f"held={len(tasks)}, unresolved={tasks.unresolved})"
        )

    # ----- tasks ------------------------------------------------------------------------

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
        entries = self._push_calls(fn, iterables, names, seconds_timeout, strict, poppable=True)
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
        if error not in ("raise", "warn", "ignore"):
            raise ValueError(f"error must be 'raise', 'warn' or 'ignore', not {error!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError("progress must be True, False or None")
        group = TaskGroup()
        entries = self._push_calls(
            fn, iterables, names, seconds_timeout, strict, poppable=False, group=group
        )
        try:
            self._wait_group(group, sys.stderr.isatty() if progress is None else progress)
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
        runtime, dispatcher = self._runtime, self._dispatcher
        if self._state == "started" and runtime is not None and dispatcher is not None:
            with contextlib.suppress(TerminatedError):
                runtime.call(lambda: dispatcher.cancel(chosen))

    def saturated(self) -> bool:
        """True when the controller holds at least as many tasks as it may run workers.

        Example:
            >>> Controller(workers=2).saturated()
            False
        """
        return len(self) >= self.workers

    def summary(self) -> pandas.DataFrame:
        """One row per worker: host, pid, launch, level, status, tasks, busy time, errors, crashes.

        Departed workers beyond the most recent thousand are added up in one last row.

        Example:
            >>> _ = crew.map(abs, [-1, -2])
            >>> int(crew.summary().tasks.sum()) >= 2
            True
        """
        import pandas

        from batchcrew.report import SUMMARY_COLUMNS, summary_rows

        rows: list[dict[str, Any]] = []
        runtime, dispatcher = self._runtime, self._dispatcher
        if self._state == "started" and runtime is not None and dispatcher is not None:
            with contextlib.suppress(TerminatedError):
                rows = runtime.call(lambda: summary_rows(dispatcher.scheduler))
        frame: pandas.DataFrame = pandas.DataFrame(rows, columns=SUMMARY_COLUMNS)
        return frame

    def executor(
        self, initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = ()
    ) -> ControllerExecutor:
        """A `concurrent.futures.Executor` whose tasks run on this controller's workers.

        `initializer(*initargs)` runs once in each worker before the first task of this
        executor it runs (as with the standard pools); if it raises, that task fails with its
        exception and the next task of the executor on that worker tries it again.

        Example:
            >>> with crew.executor() as pool:
            ...     pool.submit(pow, 2, 3).result()
            8
        """
        from batchcrew.executor import ControllerExecutor

        setup = None
        if initializer is not None:
            if not callable(initializer):
                raise TypeError(f"initializer must be callable, not {type(initializer).__name__}")
            if isinstance(initargs, (str, bytes)):
                raise TypeError("initargs must be a tuple of arguments, not a string")
            setup = pickle_function(functools.partial(initializer, *initargs))
        executor = ControllerExecutor(self, setup)
        self._executors.add(executor)
        return executor

    @property
    def connections_refused(self) -> ServerCounts:
        """Counts of connections refused (wrong token, garbage, failed TLS, versions).

        Example:
            >>> crew.connections_refused.refused
            0
        """
        from batchcrew.server import ServerCounts

        dispatcher = self._dispatcher
        return dispatcher.server.counts if dispatcher is not None else ServerCounts()

    # ----- for the executor -------------------------------------------------------------

    def _submit_future(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        setup: PickledFunction | None = None,
    ) -> TaskFuture:
        from batchcrew.executor import TaskFuture

        function = pickle_function(fn)
        call = prepare(function, args, kwargs, None)
        future = TaskFuture(self._cancel_soon)
        entry = self._add(function, [call], None, poppable=False, future=future, setup=setup)[0]
        future.name = entry.name
        return future

    def _cancel_soon(self, name: str) -> None:
        runtime, dispatcher = self._runtime, self._dispatcher
        if runtime is not None and dispatcher is not None:
            runtime.post(dispatcher.cancel, [name])

    def _exiting(self) -> bool:
        return _exit_hook.exiting

    def _wait_for_work(self) -> None:
        """Let pending executor futures finish (at interpreter exit, as the standard pools do)."""
        import concurrent.futures

        for executor in list(self._executors):
            concurrent.futures.wait(executor._pending())

    # ----- pushing ----------------------------------------------------------------------

    def _push_calls(
        self,
        fn: Callable[..., Any],
        iterables: Sequence[Iterable[Any]],
        names: Iterable[str] | None,
        seconds_timeout: float | None,
        strict: bool,
        poppable: bool,
        group: TaskGroup | None = None,
    ) -> list[TaskEntry]:
        if not iterables:
            raise ValueError("give at least one iterable of arguments")
        function = pickle_function(fn)
        check_seconds("seconds_timeout", seconds_timeout, none=True)
        arguments = _zip_arguments(iterables, strict)
        chosen: list[str | None] = [None] * len(arguments)
        if names is not None:
            if isinstance(names, str):
                raise TypeError("names must be an iterable of task names, not one string")
            chosen = list(names)
            if len(chosen) != len(arguments):
                raise ValueError(
                    f"names has {len(chosen)} elements but there are {len(arguments)} tasks"
                )
            for name in chosen:
                check_name(name)
            if len(set(chosen)) != len(chosen):
                raise ValueError("names must be unique")
        # Everything is checked and pickled before the first task goes out: all or nothing.
        calls = [
            prepare(function, args, {}, name) for args, name in zip(arguments, chosen, strict=True)
        ]
        if group is not None:
            group.add(len(calls))  # all at once: the group must not finish between batches
        entries: list[TaskEntry] = []
        try:
            for start in range(0, len(calls), PUSH_BATCH):
                entries += self._add(
                    function,
                    calls[start : start + PUSH_BATCH],
                    seconds_timeout,
                    poppable,
                    group=group,
                )
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
        self.start()
        entries, wake = self._tasks.add(
            function, calls, seconds_timeout, poppable, future, group, setup
        )
        if wake and self._runtime is not None and self._dispatcher is not None:
            self._runtime.post(self._dispatcher.pushed)  # one wake-up for a burst of pushes
        return entries

    def _forget(self, entries: Sequence[TaskEntry]) -> None:
        """Stop holding tasks of a map that ended (early: interrupted, or refused half-way)."""
        unresolved = self._tasks.forget(entries)
        if unresolved:
            self.cancel(unresolved)

    def _wait_group(self, group: TaskGroup, show_progress: bool) -> None:
        if not show_progress:
            while not group.done.wait(timeout=1.0):
                self._tasks.raise_failure()
            return
        from batchcrew.progress import TaskProgress

        with TaskProgress(group.size) as bar:
            while not group.done.wait(timeout=0.2):
                self._tasks.raise_failure()
                bar.update(group.size - group.remaining, group.failed)
            bar.update(group.size, group.failed)


def _zip_arguments(iterables: Sequence[Iterable[Any]], strict: bool) -> list[tuple[Any, ...]]:
    """Zip the iterables of a `map`; with `strict`, lengths that differ are a `ValueError`."""
    lists = [list(iterable) for iterable in iterables]
    lengths = {len(items) for items in lists}
    if strict and len(lengths) > 1:
        shown = ", ".join(str(len(items)) for items in lists)
        raise ValueError(
            f"the iterables have different lengths ({shown}); make them equal, or pass "
            "strict=False to stop at the shortest"
        )
    return list(zip(*lists, strict=False))


class _ExitHook:
    """At interpreter exit, let pending executor work finish, then terminate every live
    controller, so no worker or job outlives the program.

    It runs among the threading module's exit callbacks, before `concurrent.futures` shuts its
    own thread pools (which the launchers use), as the standard executors do for theirs.
    """

    def __init__(self) -> None:
        self.controllers: weakref.WeakSet[Controller] = weakref.WeakSet()
        self.registered = False
        self.exiting = False
        self.lock = threading.Lock()

    def watch(self, controller: Controller) -> None:
        with self.lock:
            self.controllers.add(controller)
            if not self.registered:
                # The standard thread pools (which launchers use) register their own exit
                # callback when their module loads; loaded first, it runs after this one.
                importlib.import_module("concurrent.futures.thread")
                with contextlib.suppress(RuntimeError):  # already shutting down
                    threading._register_atexit(self.run)  # type: ignore[attr-defined]
                    self.registered = True

    def forget(self, controller: Controller) -> None:
        with self.lock:
            self.controllers.discard(controller)

    def run(self) -> None:
        self.exiting = True
        for controller in list(self.controllers):
            with contextlib.suppress(Exception):
                controller._wait_for_work()
        for controller in list(self.controllers):
            with contextlib.suppress(Exception):
                controller.terminate()


_exit_hook = _ExitHook()
