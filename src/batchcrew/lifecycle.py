"""A controller's life: new, started (its loop thread and dispatcher running), terminated.

Owns the runtime and the dispatcher from start to termination, the final termination of every
launch that may still run, and the exit hook that ends live controllers when the interpreter
exits. It knows nothing of tasks beyond asking the dispatcher to cancel them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from batchcrew.errors import BatchcrewError, TerminatedError
from batchcrew.launchers.base import Launcher
from batchcrew.settings import Settings
from batchcrew.taskbook import TaskBook

if TYPE_CHECKING:
    from batchcrew.dispatch import Dispatcher
    from batchcrew.runtime import Runtime

logger = logging.getLogger("batchcrew.lifecycle")

T = TypeVar("T")


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
        try:
            runtime.run(dispatcher.shutdown(), timeout=30)
        except Exception:  # the rest of the teardown must happen all the same
            logger.exception("controller %s: the orderly shutdown failed", self.settings.name)
        runtime.stop()
        self._end_launches(dispatcher)
        exit_hook.forget(self)
        logger.info("controller %s terminated", self.settings.name)

    def _end_launches(self, dispatcher: Dispatcher) -> None:
        """Terminate every launch that may still run, including those whose submission is
        still under way (each as soon as its handle comes back)."""
        launcher = self.launcher
        handles, submissions = dispatcher.launching.leftovers()
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
