"""`Controller`: the user's face. Push tasks, get results; workers come and go by themselves.

A thin façade: settings are checked by `settings.py`, tasks are held by the task book, and the
event loop (runtime) runs the dispatcher, which owns the scheduler, the launch book and the
server. Every method is synchronous and thread-safe.
"""

from __future__ import annotations

import concurrent.futures
import functools
import secrets
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from batchcrew.calls import PickledFunction, pickle_function, prepare
from batchcrew.launchers.base import Launcher
from batchcrew.lifecycle import Lifecycle, exit_hook
from batchcrew.settings import Settings
from batchcrew.taskbook import TaskBook
from batchcrew.tasks import TaskMethods
from batchcrew.tls import TLS

if TYPE_CHECKING:
    import pandas

    from batchcrew.executor import ControllerExecutor, TaskFuture
    from batchcrew.server import ServerCounts


class Controller(TaskMethods):
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
        self._life = Lifecycle(self._settings, launcher, self._tasks, self._id, self._wait_for_work)
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
        dispatcher = self._life.dispatcher
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
        self._life.start()

    def terminate(self) -> None:
        """End every worker and job this controller launched and stop listening (idempotent).

        Unresolved tasks resolve with status `cancel`.

        Example:
            >>> with Controller() as other:
            ...     other.terminate()
            >>> try:
            ...     other.push(abs, 1)
            ... except RuntimeError as error:
            ...     print(type(error).__name__)
            TerminatedError
        """
        self._life.terminate()

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __repr__(self) -> str:
        tasks = self._tasks
        return (
            f"Controller(name={self.name!r}, workers={self.workers}, "
            f"state={self._life.state!r}, held={len(tasks)}, unresolved={tasks.unresolved})"
        )

    # ----- workers ----------------------------------------------------------------------

    def summary(self) -> pandas.DataFrame:
        """One row per worker: host, pid, launch, level, status, tasks, busy time, errors,
        crashes, and for a worker that crashed, how it ended (its launcher's words).

        Departed workers beyond the most recent thousand are added up in one first row.

        Example:
            >>> _ = crew.map(abs, [-1, -2])
            >>> int(crew.summary().tasks.sum()) >= 2
            True
        """
        import pandas

        from batchcrew.report import SUMMARY_COLUMNS, summary_rows

        empty: list[dict[str, Any]] = []
        rows = self._life.call(lambda dispatcher: summary_rows(dispatcher.scheduler), empty)
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

        dispatcher = self._life.dispatcher
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
        self._life.post(lambda dispatcher: dispatcher.cancel([name]))

    def _caught_up(self) -> None:
        """Return once the loop has taken every task pushed so far: those idle workers took
        are started (as a standard pool's idle workers take theirs at once)."""
        self._life.call(lambda dispatcher: None, None)

    def _exiting(self) -> bool:
        return exit_hook.exiting

    def _wait_for_work(self) -> None:
        """Let pending executor futures finish (at interpreter exit, as the standard pools do)."""
        for executor in list(self._executors):
            concurrent.futures.wait(executor._pending())
