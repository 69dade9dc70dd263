"""A controller's life: new, started (its loop thread and dispatcher running), terminated.

Owns the runtime and the dispatcher from start to termination, the final termination of every
launch that may still run, and the exit hook that ends live controllers when the interpreter
exits. It knows nothing of tasks beyond asking the dispatcher to cancel them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from batchcrew.errors import BatchcrewError, TerminatedError
from batchcrew.launchers.base import Launcher, LaunchHandle
from batchcrew.settings import Settings
from batchcrew.taskbook import TaskBook

if TYPE_CHECKING:
    from batchcrew.dispatch import Dispatcher
    from batchcrew.runtime import Runtime

logger = logging.getLogger("batchcrew.lifecycle")

T = TypeVar("T")

SECONDS_END_LAUNCHES = 60.0
"""How long `terminate()` waits, in all, for its launches to be ended (submissions still under
way included) once its workers have been told to leave."""


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class Lifecycle:
    """Starts and ends one controller's running parts.

    Example:
        >>> from batchcrew.launchers.local import LocalLauncher
        >>> settings = Settings.checked(tls=None)
        >>> life = Lifecycle(settings, LocalLauncher(), TaskBook(settings.seed), "a1", lambda: None)
        >>> life.start(); life.state
        'started'
        >>> life.terminate(); life.state
        'terminated'
    """

    def __init__(
        self,
        settings: Settings,
        launcher: Launcher,
        tasks: TaskBook,
        controller_id: str,
        wait_for_work: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.launcher = launcher
        self.tasks = tasks
        self.controller_id = controller_id
        self.wait_for_work = wait_for_work
        """Lets pending executor work finish (called at interpreter exit, before the end)."""
        self.state: Literal["new", "started", "terminated"] = "new"
        self.runtime: Runtime | None = None
        self.dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the loop thread and listen (idempotent)."""
        from batchcrew.dispatch import Dispatcher
        from batchcrew.runtime import Runtime

        settings = self.settings
        with self._lock:
            if self.state == "terminated":
                raise TerminatedError(f"controller {settings.name} was terminated")
            if self.state == "started":
                return
            runtime = Runtime(settings.name)
            dispatcher = Dispatcher(
                settings, self.launcher, self.tasks, runtime, self.controller_id
            )
            try:
                runtime.start(dispatcher.start)
            except OSError as error:
                raise BatchcrewError(
                    f"controller {settings.name} could not listen on "
                    f"{settings.host}:{settings.port}: {error}"
                ) from error
            self.runtime, self.dispatcher = runtime, dispatcher
            self.state = "started"
        exit_hook.watch(self)
        logger.info(
            "controller %s listening on %s:%d", settings.name, settings.host, dispatcher.server.port
        )

    def terminate(self) -> None:
        """Cancel what is left, end every worker and launch, stop the loop (idempotent)."""
        runtime, dispatcher = self.runtime, self.dispatcher
        if runtime is not None and runtime.on_loop:
            raise BatchcrewError("terminate() cannot run in a future's done-callback")
        with self._lock:
            started = self.state == "started"
            self.state = "terminated"
        self.tasks.close()
        if not started or runtime is None or dispatcher is None:
            return
        running: list[LaunchHandle] = []

        async def shutdown() -> None:
            # The launches whose workers are told to leave are ended all the same: a worker
            # stuck in code that holds the interpreter cannot leave, and its job would run on.
            running.extend(dispatcher.launching.book.handles())
            await dispatcher.shutdown()

        try:
            runtime.run(shutdown(), timeout=30)
        except Exception:  # the rest of the teardown must happen all the same
            logger.exception("controller %s: the orderly shutdown failed", self.settings.name)
        runtime.stop()
        self._end_launches(dispatcher, running)
        exit_hook.forget(self)
        logger.info("controller %s terminated", self.settings.name)

    def _end_launches(self, dispatcher: Dispatcher, running: list[LaunchHandle]) -> None:
        """Terminate every launch that may still run (`running`: those with workers when the
        shutdown began), including those whose submission is still under way, waiting
        `SECONDS_END_LAUNCHES` at most in all: a submission that comes back later is ended
        then, and calls that do not answer go on in the background (each within its own
        timeouts, such as `AWSConfig.seconds_timeout`)."""
        launcher = self.launcher
        deadline = time.monotonic() + SECONDS_END_LAUNCHES
        leftovers, submissions = dispatcher.launching.leftovers()
        handles = list(dict.fromkeys([*running, *leftovers]))
        came, late = concurrent.futures.wait(submissions, timeout=_left(deadline))
        for submission in came:
            if not submission.cancelled() and submission.exception() is None:
                handles.append(submission.result())  # a failed one left nothing to end
        for submission in late:
            submission.add_done_callback(self._end_late_launch)
        endings = self._start_endings(handles)
        _, unfinished = concurrent.futures.wait(endings, timeout=_left(deadline))
        for ending, handle in endings.items():
            if ending in unfinished:
                launcher.record_error(
                    "terminate",
                    f"not ended within {SECONDS_END_LAUNCHES:g} s; the call goes on in the "
                    "background",
                    handle.external_id,
                )
            elif ending.exception() is not None:  # every launch got its chance
                launcher.record_error("terminate", str(ending.exception()), handle.external_id)
        if late:
            logger.warning(
                "controller %s: %d launch(es) still being submitted after %g s; each is ended "
                "as soon as its submission comes back",
                self.settings.name,
                len(late),
                SECONDS_END_LAUNCHES,
            )
        launcher.close(seconds=_left(deadline))
        busy = launcher.calls_under_way()
        if busy:
            logger.warning(
                "controller %s: %d launcher call(s) still under way; they go on in the background",
                self.settings.name,
                busy,
            )

    def _start_endings(
        self, handles: list[LaunchHandle]
    ) -> dict[concurrent.futures.Future[None], LaunchHandle]:
        """Start terminating every launch of `handles`; the futures of the calls."""
        launcher = self.launcher
        if launcher.processes is None or not handles:
            return {launcher.submit(launcher.terminate, handle): handle for handle in handles}
        # Threads of their own: the launcher's may all be held by calls that do not answer.
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(len(handles), launcher.processes),
            thread_name_prefix="batchcrew-end",
        )
        try:
            return {pool.submit(launcher.terminate, handle): handle for handle in handles}
        finally:
            pool.shutdown(wait=False)

    def _end_late_launch(self, submission: concurrent.futures.Future[LaunchHandle]) -> None:
        """A launch submitted after `terminate()` stopped waiting for it: end it at once, in
        the launcher's thread that submitted it."""
        if submission.cancelled():
            return
        error = submission.exception()
        if error is not None:
            self.launcher.record_error("launch", f"a launch submitted late failed: {error}")
            return
        handle = submission.result()
        try:
            self.launcher.terminate(handle)
        except Exception as error:  # noqa: BLE001 (said where users read launcher errors)
            self.launcher.record_error("terminate", str(error), handle.external_id)
        else:
            logger.info(
                "controller %s: launch %s, submitted late, ended", self.settings.name, handle.launch
            )

    def call(self, function: Callable[[Dispatcher], T], default: T) -> T:
        """`function(dispatcher)` on the loop, waited for; `default` when not running."""
        runtime, dispatcher = self.runtime, self.dispatcher
        if self.state != "started" or runtime is None or dispatcher is None:
            return default
        try:
            return runtime.call(lambda: function(dispatcher))
        except TerminatedError:
            return default

    def post(self, function: Callable[[Dispatcher], object]) -> None:
        """`function(dispatcher)` on the loop soon, not waited for (nothing when not running)."""
        runtime, dispatcher = self.runtime, self.dispatcher
        if runtime is not None and dispatcher is not None:
            runtime.post(function, dispatcher)


class _ExitHook:
    """At interpreter exit, let pending executor work finish, then terminate every live
    controller, so no worker or job outlives the program.

    It runs among the threading module's exit callbacks, before `concurrent.futures` shuts its
    own thread pools (which the launchers use), as the standard executors do for theirs.
    """

    def __init__(self) -> None:
        self.lives: weakref.WeakSet[Lifecycle] = weakref.WeakSet()
        self.registered = False
        self.exiting = False
        self.lock = threading.Lock()

    def watch(self, life: Lifecycle) -> None:
        with self.lock:
            self.lives.add(life)
            if not self.registered:
                _exit_on_sigterm()
                # The standard thread pools (which launchers use) register their own exit
                # callback when their module loads; loaded first, it runs after this one.
                importlib.import_module("concurrent.futures.thread")
                with contextlib.suppress(RuntimeError):  # already shutting down
                    threading._register_atexit(self.run)  # type: ignore[attr-defined]
                    self.registered = True

    def forget(self, life: Lifecycle) -> None:
        with self.lock:
            self.lives.discard(life)

    def run(self) -> None:
        self.exiting = True
        for life in list(self.lives):
            with contextlib.suppress(Exception):
                life.wait_for_work()
        for life in list(self.lives):
            with contextlib.suppress(Exception):
                life.terminate()


def _exit_on_sigterm() -> None:
    """Make SIGTERM end the program as Ctrl-C or the end of the script do, through the exit
    hook, so that no job outlives a controller stopped by a scheduler or `kill` (only when no
    handler is set already, and from the main thread, where handlers can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)


def _raise_system_exit(signal_number: int, frame: object) -> None:
    raise SystemExit(128 + signal_number)


exit_hook = _ExitHook()
