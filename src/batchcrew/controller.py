"""`Controller`: the user's face. Push tasks, get results; workers come and go by themselves.

Its methods are synchronous and thread-safe; they hand work to one event-loop thread that owns
the scheduler, the server and the launch rounds. Launcher calls run on a thread pool.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import math
import reprlib
import secrets
import sys
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from batchcrew.autoscale import Policy, plan_launches, seconds_until_round
from batchcrew.errors import BatchcrewError, TaskError, TerminatedError
from batchcrew.launchers.base import Launcher, LaunchRequest
from batchcrew.protocol import BODY_BYTES_MAX, SECONDS_HEARTBEAT, Kind, function_key
from batchcrew.results import Result, Results, describe_call
from batchcrew.scheduler import (
    Action,
    Disconnect,
    Limits,
    Resolve,
    Scheduler,
    SendCancel,
    SendExit,
    SendTask,
    TaskSpec,
    TerminateLaunch,
)
from batchcrew.seeds import controller_seed, task_seed
from batchcrew.serialization import dumps_function, dumps_value
from batchcrew.server import Server, ServerCounts
from batchcrew.task import Task, TaskEntry, TaskGroup
from batchcrew.tls import TLS

if TYPE_CHECKING:
    import pandas

    from batchcrew.executor import ControllerExecutor

logger = logging.getLogger("batchcrew.controller")

T = TypeVar("T")

SECONDS_POLL_LAUNCHES = 1.0
"""How often the controller asks the launcher which unconnected workers have ended."""

SECONDS_WORKER_TIMEOUT = 60.0
"""A worker that hears nothing from its controller this long exits (heartbeats come every 5 s)."""

SECONDS_EXIT_GRACE = 1.0
"""At termination, how long workers have to leave by themselves before they are stopped."""

PUSH_BATCH = 1000
"""Tasks `map` hands to the event loop at a time."""

_Function = tuple[str, bytes, Callable[..., Any]]
"""A function's cache key, its pickle, and the function itself."""
_Call = tuple[_Function, tuple[Any, ...], dict[str, Any], str | None]
"""A function, positional and keyword arguments, and a task name (None: generated)."""
_Prepared = tuple[str, bytes, str, bytes, str | None]
"""A function's key and pickle, the call's text, the pickled arguments, the task name."""

NAME_LENGTH_MAX = 1024
"""The longest task name (names travel in frame headers)."""


def _check_seconds(name: str, value: Any, *, none: bool = False, zero: bool = False) -> None:
    if value is None and none:
        return
    allowed = "a number" + (" >= 0" if zero else " > 0") + (" or None" if none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, not {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {allowed}, not {value!r}")


def _check_count(name: str, value: Any, *, minimum: int, none: bool = False) -> None:
    if value is None and none:
        return
    allowed = f"an integer >= {minimum}" + (" or None" if none else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be {allowed}, not {value!r}")


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
        >>> with bc.Controller(workers=2, seed=1) as crew:  # doctest: +SKIP
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
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError("name must be a non-empty string or None")
        _check_count("workers", workers, minimum=1)
        if host is not None and (not isinstance(host, str) or not host):
            raise ValueError("host must be a non-empty address string or None")
        _check_count("port", port, minimum=0)
        if port > 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, not {port}")
        if not (tls is None or tls == "automatic" or isinstance(tls, TLS)):
            raise ValueError("tls must be 'automatic', a batchcrew.TLS object, or None")
        _check_seconds("seconds_idle", seconds_idle)
        _check_seconds("seconds_launch", seconds_launch)
        _check_seconds("seconds_wall", seconds_wall, none=True)
        _check_seconds("seconds_interval", seconds_interval)
        _check_count("tasks_max", tasks_max, minimum=1, none=True)
        _check_count("crashes_max", crashes_max, minimum=1)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an integer or None, not {type(seed).__name__}")
        if seed is not None and not -(2**127) <= seed < 2**127:
            raise ValueError("seed must be an integer from -2**127 to 2**127 - 1")
        self.launcher = launcher
        self.name = name or f"crew-{secrets.token_hex(3)}"
        self.workers = workers
        self.host = host or launcher.default_host()
        self.port = port
        self.tls = TLS.automatic() if tls == "automatic" else tls
        self.seed = controller_seed(seed)
        self._limits = Limits(
            seconds_idle=float(seconds_idle),
            seconds_launch=float(seconds_launch),
            seconds_wall=None if seconds_wall is None else float(seconds_wall),
            tasks_max=tasks_max,
            crashes_max=crashes_max,
            levels=launcher.levels,
            workers=workers,
        )
        self._policy = Policy(workers=workers, seconds_interval=float(seconds_interval))
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiters = 0
        self._entries: dict[str, TaskEntry] = {}
        self._resolved: deque[TaskEntry] = deque()
        self._unresolved = 0
        self._unresolved_poppable = 0
        self._pushed = 0
        self._names = itertools.count()
        self._state: Literal["new", "started", "terminated"] = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._scheduler = Scheduler(self._limits)
        self._server: Server | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._launch_futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._polling: set[str] = set()
        self._inbox: list[TaskSpec] = []
        self._inbox_scheduled = False
        self._last_round: float | None = None
        self._round_scheduled = False
        self._last_heartbeat = 0.0
        self._last_poll = 0.0

    # ----- life -------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening (idempotent; the first push starts the controller by itself)."""
        with self._lock:
            if self._state == "terminated":
                raise TerminatedError(f"controller {self.name} was terminated")
            if self._state == "started":
                return
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix=f"batchcrew-{self.name}-launch"
            )
            self._loop = asyncio.new_event_loop()
            self._server = Server(
                self._scheduler,
                self._apply,
                self.tls.server_context() if self.tls else None,
                self.host,
                self.port,
                report=self.launcher.record_error,
            )
            started = threading.Event()
            self._thread = threading.Thread(
                target=self._run_loop, args=(started,), name=f"batchcrew-{self.name}", daemon=True
            )
            self._thread.start()
            started.wait()
            if not self._server.listening:
                self._thread.join()
                self._pool.shutdown()
                self._loop.close()
                self._loop = self._thread = self._pool = self._server = None
                raise BatchcrewError(
                    f"controller {self.name} could not listen on {self.host}:{self.port}"
                )
            self.port = self._server.port
            self._state = "started"
        _live_controllers.add(self)
        logger.info("controller %s listening on %s:%d", self.name, self.host, self.port)

    def terminate(self) -> None:
        """End every worker this controller launched and stop listening (idempotent).

        Unresolved tasks resolve with status `cancel`.
        """
        if self._thread is not None and threading.get_ident() == self._thread.ident:
            raise BatchcrewError("terminate() cannot run in a future's done-callback")
        with self._lock:
            if self._state != "started":
                self._state = "terminated"
                return
            self._state = "terminated"
        loop, thread, pool = self._loop, self._thread, self._pool
        assert loop is not None and thread is not None and pool is not None
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        except Exception:  # the rest of the teardown must happen all the same
            logger.exception("controller %s: the orderly shutdown failed", self.name)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        # Launches still in flight finish first, so none starts a worker after this point.
        pool.shutdown(wait=True, cancel_futures=True)
        for launch, future in self._launch_futures.items():
            if future.cancelled() or future.exception() is not None:
                continue
            try:
                self.launcher.terminate(future.result())
            except Exception as error:  # noqa: BLE001 (every launch must get its chance)
                self.launcher.record_error(f"terminating launch {launch} failed: {error!r}")
        self.launcher.close()
        _live_controllers.discard(self)
        logger.info("controller %s terminated", self.name)

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"Controller(name={self.name!r}, workers={self.workers}, state={self._state!r})"

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
            >>> with Controller() as crew:  # doctest: +SKIP
            ...     crew.push(sum, [1, 2, 3], name="six").result().value
            6
        """
        function = _pickle_function(fn)
        entry = self._push_many(
            [(function, args, kwargs, name)], seconds_timeout=seconds_timeout, poppable=True
        )[0]
        return Task(self, entry)

    def walk(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        names: Iterable[str] | None = None,
        seconds_timeout: float | None = None,
    ) -> list[Task]:
        """Push `fn` over zipped iterables without waiting; return the tasks.

        Example:
            >>> with Controller() as crew:  # doctest: +SKIP
            ...     tasks = crew.walk(pow, [2, 3], [2, 2])
            ...     crew.wait()
        """
        entries = self._push_calls(fn, iterables, names, seconds_timeout, poppable=True)
        return [Task(self, entry) for entry in entries]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        names: Iterable[str] | None = None,
        error: Literal["raise", "warn", "ignore"] = "raise",
        progress: bool | None = None,
        seconds_timeout: float | None = None,
    ) -> Results:
        """Run `fn` over zipped iterables and return the results in input order.

        `error`: "raise" raises `TaskError` (carrying every result) if a task did not succeed,
        "warn" warns, "ignore" says nothing. `progress`: show a progress bar (None: when
        stderr is a terminal).

        Example:
            >>> with Controller(workers=2) as crew:  # doctest: +SKIP
            ...     crew.map(pow, [2, 3], [2, 2]).values()
            [4, 9]
        """
        if error not in ("raise", "warn", "ignore"):
            raise ValueError(f"error must be 'raise', 'warn' or 'ignore', not {error!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError("progress must be True, False or None")
        group = TaskGroup()
        entries = self._push_calls(
            fn, iterables, names, seconds_timeout, poppable=False, group=group
        )
        show = sys.stderr.isatty() if progress is None else progress
        try:
            self._wait_group(group, show)
        finally:
            self._abandon(entries)
        results = Results(entry.result for entry in entries if entry.result is not None)
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
            >>> with Controller() as crew:  # doctest: +SKIP
            ...     crew.push(abs, -1)
            ...     crew.pop(timeout=None).value
            1
        """
        if timeout is not None:
            _check_seconds("timeout", timeout, zero=True)
        with self._changed:
            self._wait(lambda: bool(self._resolved) or not self._unresolved_poppable, timeout)
            if not self._resolved:
                return None
            entry = self._resolved.popleft()
            self._entries.pop(entry.name, None)
            return entry.result

    def collect(self) -> Results:
        """Take every result resolved so far (does not wait).

        Example:
            >>> with Controller() as crew:  # doctest: +SKIP
            ...     crew.push(abs, -1); crew.wait()
            ...     crew.collect().values()
            [1]
        """
        with self._lock:
            taken = Results(entry.result for entry in self._resolved if entry.result is not None)
            for entry in self._resolved:
                self._entries.pop(entry.name, None)
            self._resolved.clear()
        return taken

    def wait(self, mode: Literal["all", "one"] = "all", timeout: float | None = None) -> bool:
        """Wait until every task is resolved ("all") or one result awaits `pop` ("one").

        Returns False if `timeout` seconds passed first.

        Example:
            >>> with Controller() as crew:  # doctest: +SKIP
            ...     crew.push(abs, -1)
            ...     crew.wait(mode="all", timeout=60)
            True
        """
        if mode not in ("all", "one"):
            raise ValueError(f"mode must be 'all' or 'one', not {mode!r}")
        if timeout is not None:
            _check_seconds("timeout", timeout, zero=True)
        with self._changed:
            if mode == "all":
                return self._wait(lambda: self._unresolved == 0, timeout)
            return self._wait(lambda: bool(self._resolved) or self._unresolved == 0, timeout)

    def cancel(self, names: Iterable[str] | None = None) -> None:
        """Cancel tasks by name, queued or running (None: every unresolved task).

        Example:
            >>> with Controller() as crew:  # doctest: +SKIP
            ...     crew.push(time.sleep, 60, name="slow")
            ...     crew.cancel(["slow"])
        """
        if isinstance(names, str):
            raise TypeError("names must be a list of task names, not one string")
        chosen = None if names is None else list(names)
        if self._state != "started":
            return
        self._call(lambda now: self._apply(self._scheduler.cancel(chosen, now)))

    def saturated(self) -> bool:
        """True when the controller holds at least as many tasks as it may run workers.

        Example:
            >>> Controller(workers=2).saturated()
            False
        """
        return len(self) >= self.workers

    def summary(self) -> pandas.DataFrame:
        """One row per worker: host, pid, launch, level, status, tasks, busy time, errors, crashes.

        Example:
            >>> with Controller() as crew:  # doctest: +SKIP
            ...     crew.map(abs, [-1, -2])
            ...     crew.summary().tasks.sum()
            2
        """
        import pandas

        rows: list[dict[str, Any]] = []
        if self._state == "started":
            rows = self._call(lambda now: self._summary_rows())
        columns = ["worker", "host", "pid", "launch", "level", "status", "tasks", "seconds_busy"]
        frame: pandas.DataFrame = pandas.DataFrame(rows, columns=[*columns, "errors", "crashes"])
        return frame

    def executor(self) -> ControllerExecutor:
        """A `concurrent.futures.Executor` whose tasks run on this controller's workers.

        Example:
            >>> with Controller() as crew:  # doctest: +SKIP
            ...     with crew.executor() as pool:
            ...         pool.submit(pow, 2, 3).result()
            8
        """
        from batchcrew.executor import ControllerExecutor

        return ControllerExecutor(self)

    @property
    def connections_refused(self) -> ServerCounts:
        """Counts of connections refused (wrong token, garbage, failed TLS, versions).

        Example:
            >>> Controller().connections_refused.refused
            0
        """
        return self._server.counts if self._server is not None else ServerCounts()

    # ----- for Task and the executor ----------------------------------------------------

    def _submit_future(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        entry = self._push_many(
            [(_pickle_function(fn), args, kwargs, None)],
            seconds_timeout=None,
            poppable=False,
            future=future,
        )[0]
        future.add_done_callback(lambda done: self._future_done(entry, done))
        return future

    def _future_done(self, entry: TaskEntry, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled() and entry.result is None:
            self.cancel([entry.name])
        with self._lock:
            if entry.result is not None and self._entries.get(entry.name) is entry:
                del self._entries[entry.name]

    def _wait_for_entry(self, entry: TaskEntry, timeout: float | None) -> Result | None:
        with self._changed:
            self._wait(lambda: entry.result is not None, timeout)
            return entry.result

    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait on the condition (its lock held) while counting waiters, so that a result
        delivered when nobody waits costs no wake-up."""
        self._waiters += 1
        try:
            return self._changed.wait_for(predicate, timeout)
        finally:
            self._waiters -= 1

    # ----- pushing ----------------------------------------------------------------------

    def _push_calls(
        self,
        fn: Callable[..., Any],
        iterables: Sequence[Iterable[Any]],
        names: Iterable[str] | None,
        seconds_timeout: float | None,
        poppable: bool,
        group: TaskGroup | None = None,
    ) -> list[TaskEntry]:
        if not iterables:
            raise ValueError("give at least one iterable of arguments")
        function = _pickle_function(fn)
        arguments = list(zip(*iterables, strict=False))
        chosen: list[str | None] = [None] * len(arguments)
        if names is not None:
            if isinstance(names, str):
                raise TypeError("names must be an iterable of task names, not one string")
            chosen = list(names)
            if len(chosen) != len(arguments):
                raise ValueError(
                    f"names has {len(chosen)} elements but there are {len(arguments)} tasks"
                )
            if len(set(chosen)) != len(chosen):
                raise ValueError("names must be unique")
        # Everything is checked and pickled before the first task goes out: all or nothing.
        prepared = self._prepare(
            [(function, args, {}, name) for args, name in zip(arguments, chosen, strict=True)]
        )
        if names is not None:
            with self._lock:
                taken = [name for name in chosen if name in self._entries]
            if taken:
                raise ValueError(f"a task named {taken[0]!r} is still held")
        if group is not None:
            group.add(len(prepared))  # all at once: the group must not finish between batches
        entries: list[TaskEntry] = []
        try:
            for start in range(0, len(prepared), PUSH_BATCH):
                entries += self._submit(
                    prepared[start : start + PUSH_BATCH],
                    seconds_timeout=seconds_timeout,
                    poppable=poppable,
                    group=group,
                )
        except BaseException:
            self._abandon(entries)
            raise
        return entries

    def _prepare(self, calls: list[_Call]) -> list[_Prepared]:
        """Check names and pickle arguments; touches no state."""
        prepared: list[_Prepared] = []
        for (key, data, fn), args, kwargs, name in calls:
            if name is not None and (
                not isinstance(name, str) or not name or len(name) > NAME_LENGTH_MAX
            ):
                raise ValueError(
                    f"a task name must be a non-empty string of at most {NAME_LENGTH_MAX} "
                    f"characters, not {reprlib.repr(name)}"
                )
            command = describe_call(fn, args, kwargs)
            try:
                packed = dumps_value((args, kwargs))
            except Exception as error:
                raise TypeError(f"the arguments of {command} cannot be pickled: {error}") from error
            if len(data) + len(packed) > BODY_BYTES_MAX:
                raise ValueError(
                    f"{command} pickles to {len(data) + len(packed):,} bytes, over the "
                    f"{BODY_BYTES_MAX:,}-byte limit of a task; pass a path instead"
                )
            prepared.append((key, data, command, packed, name))
        return prepared

    def _push_many(
        self,
        calls: list[_Call],
        *,
        seconds_timeout: float | None,
        poppable: bool,
        future: concurrent.futures.Future[Any] | None = None,
    ) -> list[TaskEntry]:
        prepared = self._prepare(calls)
        return self._submit(
            prepared, seconds_timeout=seconds_timeout, poppable=poppable, future=future
        )

    def _submit(
        self,
        prepared: list[_Prepared],
        *,
        seconds_timeout: float | None,
        poppable: bool,
        future: concurrent.futures.Future[Any] | None = None,
        group: TaskGroup | None = None,
    ) -> list[TaskEntry]:
        """Register prepared tasks and hand them to the loop, atomically with respect to
        `terminate()`: a task is either refused here or seen by the shutdown."""
        _check_seconds("seconds_timeout", seconds_timeout, none=True)
        timeout = None if seconds_timeout is None else float(seconds_timeout)
        self.start()
        specs: list[TaskSpec] = []
        entries: list[TaskEntry] = []
        with self._lock:
            if self._state != "started":
                raise TerminatedError(f"controller {self.name} was terminated")
            taken = [name for *_, name in prepared if name is not None and name in self._entries]
            if taken:
                raise ValueError(f"a task named {taken[0]!r} is still held")
            for key, data, command, packed, name in prepared:
                if name is None:
                    name = self._fresh_name()
                entry = TaskEntry(name, poppable, future=future, group=group)
                self._entries[name] = entry
                entries.append(entry)
                seed = task_seed(self.seed, self._pushed)
                self._pushed += 1
                specs.append(TaskSpec(name, command, key, data, packed, seed, timeout))
            self._unresolved += len(specs)
            if poppable:
                self._unresolved_poppable += len(specs)
            assert self._loop is not None
            self._inbox += specs
            if not self._inbox_scheduled:  # one wake-up of the loop for a burst of pushes
                self._inbox_scheduled = True
                self._loop.call_soon_threadsafe(self._on_push)
        return entries

    def _abandon(self, entries: list[TaskEntry]) -> None:
        """Cancel what is still running of these tasks and forget them all (a map that ends
        early: interrupted, or refused half-way)."""
        unresolved = [entry.name for entry in entries if entry.result is None]
        if unresolved and self._state == "started":
            self.cancel(unresolved)
        with self._lock:
            for entry in entries:
                if self._entries.get(entry.name) is entry:
                    del self._entries[entry.name]
                    if entry.result is None:
                        self._unresolved -= 1  # never delivered now: the loop has stopped
                        if entry.group is not None:
                            entry.group.resolved_one()

    def _fresh_name(self) -> str:
        while True:
            name = f"task-{next(self._names)}"
            if name not in self._entries:
                return name

    def _wait_group(self, group: TaskGroup, show_progress: bool) -> None:
        if not show_progress:
            group.done.wait()
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            job = bar.add_task("tasks", total=group.size)
            while not group.done.wait(timeout=0.2):
                bar.update(job, completed=group.size - group.remaining)
            bar.update(job, completed=group.size)

    # ----- the event-loop side ----------------------------------------------------------

    def _run_loop(self, started: threading.Event) -> None:
        loop, server = self._loop, self._server
        assert loop is not None and server is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except OSError as error:
            logger.error("controller %s cannot listen on %s: %s", self.name, self.host, error)
            started.set()
            return  # start() closes the loop
        loop.call_soon(self._tick)
        started.set()
        loop.run_forever()
        loop.close()

    def _call(self, function: Callable[[float], T]) -> T:
        """Run `function(now)` on the loop thread and wait for its return value.

        On the loop thread itself (a future's done-callback) it runs at once: waiting there
        would wait forever.
        """
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        if threading.get_ident() == thread.ident:
            return function(loop.time())
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(function(loop.time()))
            except BaseException as error:  # noqa: BLE001 (raised again in the caller)
                done.set_exception(error)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:
            raise TerminatedError(f"controller {self.name} was terminated") from None
        while True:
            try:
                return done.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if not thread.is_alive():
                    raise TerminatedError(f"controller {self.name} was terminated") from None

    def _on_push(self) -> None:
        loop, server = self._loop, self._server
        assert loop is not None and server is not None
        with self._lock:
            specs, self._inbox = self._inbox, []
            self._inbox_scheduled = False
        with server.batch():
            self._apply(self._scheduler.push(specs, loop.time()))
        self._scale()

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            try:
                self._carry_out(action)
            except Exception:  # one failed action must not drop the others
                logger.exception("controller %s could not carry out %s", self.name, action)

    def _carry_out(self, action: Action) -> None:
        server = self._server
        assert server is not None
        if isinstance(action, SendTask):
            entry = self._entries.get(action.task.name)
            future = entry.future if entry is not None else None
            if future is not None and not (future.running() or future.done()):
                future.set_running_or_notify_cancel()  # a cancelled one is being cancelled
            server.send_task(action.worker, action.task)
        elif isinstance(action, Resolve):
            self._deliver(action.result)
        elif isinstance(action, SendExit):
            server.send(action.worker, Kind.EXIT, {"reason": action.reason})
        elif isinstance(action, SendCancel):
            server.send(action.worker, Kind.CANCEL, {"name": action.name})
        elif isinstance(action, Disconnect):
            server.disconnect(action.worker, action.reason)
        elif isinstance(action, TerminateLaunch):
            self._terminate_launch(action)

    def _deliver(self, result: Result) -> None:
        with self._changed:
            entry = self._entries.get(result.name)
            if entry is None or entry.result is not None:
                return
            entry.result = result
            self._unresolved -= 1
            if entry.poppable:
                self._unresolved_poppable -= 1
                self._resolved.append(entry)
            if entry.group is not None:
                entry.group.resolved_one()
            if self._waiters:
                self._changed.notify_all()
        future = entry.future
        if future is None or future.done():
            return
        # The user may cancel the future from another thread at any moment: losing that race
        # is fine, raising out of here (and dropping the worker's connection) is not.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if result.ok:
                future.set_result(result.value)
            elif result.status == "cancel":
                if not future.cancel():  # already running: cancel() refuses
                    future.set_exception(concurrent.futures.CancelledError(result.error))
            else:
                future.set_exception(TaskError(f"{result.status}: {result.error}", [result]))

    def _tick(self) -> None:
        loop = self._loop
        if loop is None or self._state == "terminated":
            return
        now = loop.time()
        try:
            self._apply(self._scheduler.tick(now))
            if now - self._last_heartbeat >= SECONDS_HEARTBEAT:
                self._last_heartbeat = now
                assert self._server is not None
                self._server.broadcast(Kind.HEARTBEAT, {})
            if now - self._last_poll >= SECONDS_POLL_LAUNCHES:
                self._last_poll = now
                self._poll_launches()
            self._scale()
        except Exception:
            logger.exception("controller %s: error in its periodic check", self.name)
        loop.call_later(self._policy.seconds_interval, self._tick)

    def _scale(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        failures = self._scheduler.launch_failures
        wait = seconds_until_round(self._policy, self._last_round, failures, now)
        if wait > 0:
            if not self._round_scheduled:
                self._round_scheduled = True
                loop.call_later(wait, self._scheduled_round)
            return
        orders = plan_launches(self._policy, self._scheduler.counts())
        if not orders:
            return
        self._last_round = now
        for order in orders:
            self._launch(order.level, order.count, now)

    def _scheduled_round(self) -> None:
        self._round_scheduled = False
        if self._state == "started":
            self._scale()

    def _launch(self, level: int, count: int, now: float) -> None:
        server, pool = self._server, self._pool
        assert server is not None and pool is not None
        launch = secrets.token_hex(4)
        token = secrets.token_urlsafe(24)
        self._scheduler.launch_started(launch, level, count, now)
        server.allow(launch, token)
        environment = {
            "BATCHCREW_HOST": self.host,
            "BATCHCREW_PORT": str(self.port),
            "BATCHCREW_TOKEN": token,
            "BATCHCREW_LAUNCH": launch,
            "BATCHCREW_FINGERPRINT": self.tls.fingerprint() if self.tls else "",
            "BATCHCREW_SECONDS_TIMEOUT": str(SECONDS_WORKER_TIMEOUT),
        }
        request = LaunchRequest(launch, count, level, environment, self.name)
        logger.info(
            "launching %d worker(s) at %s (launch %s)",
            count,
            self.launcher.describe_level(level),
            launch,
        )
        future = self._launch_futures[launch] = pool.submit(self.launcher.launch, request)
        future.add_done_callback(functools.partial(self._threadsafe, self._launched, launch))

    def _threadsafe(self, function: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(function, *args)

    def _launched(self, launch: str, future: concurrent.futures.Future[Any]) -> None:
        loop = self._loop
        assert loop is not None
        error = future.exception()
        if error is None:
            return
        self._launch_futures.pop(launch, None)
        self.launcher.record_error(f"launch {launch} failed: {error}")
        self._scheduler.launch_failed(launch, None, loop.time())
        assert self._server is not None
        self._server.revoke(launch)

    def _handle(self, launch: str) -> Any:
        """The launcher's handle of a launch that went out (None while in flight or failed)."""
        future = self._launch_futures.get(launch)
        if future is None or not future.done() or future.exception() is not None:
            return None
        return future.result()

    def _poll_launches(self) -> None:
        """Ask the launcher about launches with a worker that is not connected now: to learn of
        workers that die before connecting, and to reap (and forget) finished launches. A
        connected worker's own connection says when it ends, so it costs no poll."""
        pool = self._pool
        assert pool is not None
        live = {(state.launch, state.index) for state in self._scheduler.workers.values()}
        for launch_id in list(self._launch_futures):
            handle = self._handle(launch_id)
            count = self._scheduler.launches[launch_id].count
            if handle is None or launch_id in self._polling:
                continue
            if all((launch_id, index) in live for index in range(count)):
                continue
            self._polling.add(launch_id)
            polled = functools.partial(self._threadsafe, self._polled, launch_id)
            pool.submit(self.launcher.poll, handle).add_done_callback(polled)

    def _polled(self, launch: str, future: concurrent.futures.Future[dict[int, str]]) -> None:
        loop = self._loop
        assert loop is not None
        self._polling.discard(launch)
        error = future.exception()
        if error is not None:
            self.launcher.record_error(f"polling launch {launch} failed: {error}")
            return
        state = self._scheduler.launches.get(launch)
        if state is None:
            return
        ended = future.result()
        for index, reason in ended.items():
            if index in state.connected or index in state.closed:
                continue
            self.launcher.record_error(
                f"worker {index} of launch {launch} ended before connecting: {reason}"
            )
            self._scheduler.launch_failed(launch, [index], loop.time())
        if len(ended) >= state.count:  # every worker of the launch is gone: forget it
            self._launch_futures.pop(launch, None)

    def _terminate_launch(self, action: TerminateLaunch) -> None:
        pool, server = self._pool, self._server
        assert pool is not None and server is not None
        server.revoke(action.launch)
        self.launcher.record_error(f"launch {action.launch}: {action.reason}")
        handle = self._handle(action.launch)
        if handle is not None and action.indices:
            pool.submit(self.launcher.terminate, handle, action.indices)

    def _summary_rows(self) -> list[dict[str, Any]]:
        assert self._server is not None
        identities = self._server.identities
        states = [*self._scheduler.departed, *self._scheduler.workers.values()]
        return [
            {
                "worker": state.id,
                "host": identities.get(state.id, ("", None))[0],
                "pid": identities.get(state.id, ("", None))[1],
                "launch": state.launch,
                "level": state.level,
                "status": state.status,
                "tasks": state.tasks,
                "seconds_busy": state.seconds_busy,
                "errors": state.errors,
                "crashes": int(state.status == "crashed"),
            }
            for state in states
        ]

    async def _shutdown(self) -> None:
        server = self._server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._apply(self._scheduler.cancel(None, loop.time()))
        server.broadcast(Kind.EXIT, {"reason": "the controller is terminating"})
        deadline = loop.time() + SECONDS_EXIT_GRACE
        while self._scheduler.workers and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await server.close()


def _pickle_function(fn: Callable[..., Any]) -> _Function:
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    try:
        data = dumps_function(fn)
    except Exception as error:
        raise TypeError(f"fn {fn!r} cannot be pickled: {error}") from error
    return function_key(data), data, fn


_live_controllers: weakref.WeakSet[Controller] = weakref.WeakSet()


@atexit.register
def _terminate_live_controllers() -> None:
    for controller in list(_live_controllers):
        with contextlib.suppress(Exception):
            controller.terminate()
