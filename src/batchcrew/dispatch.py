"""The dispatcher: on the event loop, the one owner of the scheduler.

Events come in from the server (workers admitted, frames, connections lost), from the task
book's inbox, from the clock and from launching (verdicts on lost workers); decisions go out as
frames for the server to send and outcomes for the task book. Launches are launching's business
(`launching.py`). It never blocks the loop and never touches a socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from batchcrew import protocol
from batchcrew.errors import ConnectionRefused, ProtocolError
from batchcrew.launchers.base import Launcher, WorkerStatus
from batchcrew.launching import Launching
from batchcrew.messages import Outcome
from batchcrew.protocol import SECONDS_HEARTBEAT, Frame, Kind
from batchcrew.runtime import Runtime
from batchcrew.scheduler import (
    Action,
    Disconnect,
    Investigate,
    Limits,
    Load,
    Resolve,
    Scheduler,
    SendTask,
)
from batchcrew.server import Server
from batchcrew.settings import Settings
from batchcrew.taskbook import TaskBook

logger = logging.getLogger("batchcrew.dispatch")

SECONDS_EXIT_GRACE = 1.0
"""At termination, how long workers have to leave by themselves before they are stopped."""


class Dispatcher:
    """Turns events into the scheduler's decisions, and carries them out.

    Example:
        >>> crew.start()
        >>> crew._life.dispatcher.scheduler.unresolved()
        0
    """

    def __init__(
        self,
        settings: Settings,
        launcher: Launcher,
        tasks: TaskBook,
        runtime: Runtime,
        controller_id: str,
    ) -> None:
        self.settings = settings
        self.tasks = tasks
        self.runtime = runtime
        self.launching = Launching(settings, launcher, runtime, controller_id, self)
        limits = Limits(
            seconds_idle=settings.seconds_idle,
            seconds_wall=settings.seconds_wall,
            tasks_max=settings.tasks_max,
            crashes_max=settings.crashes_max,
            levels=launcher.levels,
            workers=settings.workers,
        )
        self.scheduler = Scheduler(limits, pending=self.launching.book.pending)
        self.server = Server(
            self,
            settings.tls.server_context() if settings.tls else None,
            settings.host,
            settings.port,
        )
        self.versions = protocol.versions()
        self._last_heartbeat = 0.0
        self._closing = False

    @property
    def now(self) -> float:
        return self.runtime.loop.time()

    async def start(self) -> None:
        """Listen, and start the clock (on the loop)."""
        await self.server.start()
        self.runtime.loop.call_soon(self._tick)

    # ----- from the server --------------------------------------------------------------

    def admit(self, hello: dict[str, Any], address: object) -> tuple[str, list[Action]]:
        """A worker said HELLO: check its token and versions, then let the scheduler in on it."""
        launch = str(hello.get("launch", ""))
        index = hello.get("index")
        mismatch = protocol.version_mismatch(hello, self.versions)
        book = self.launching.book
        try:
            admission = book.admit(launch, index, str(hello.get("token", "")), mismatch)
        except ConnectionRefused as refusal:
            if mismatch is not None and str(refusal) == mismatch:  # ours, but it cannot serve
                self.launching.refused(book.label(launch, int(index or 0)), mismatch)
            raise
        assert isinstance(index, int)
        worker = f"{launch}-{index}"
        pid = hello.get("pid")
        actions = self.scheduler.worker_connected(
            worker,
            launch,
            index,
            admission.level,
            self.now,
            label=admission.label,
            launch_label=admission.launch_label,
            host=str(hello.get("host", "")),
            pid=pid if isinstance(pid, int) else None,
        )
        logger.info("worker %s connected from %s (pid %s)", admission.label, address, pid)
        return worker, self._carry_out(actions)

    def received(self, worker: str, frame: Frame) -> list[Action]:
        """A frame from an admitted worker."""
        if frame.kind is Kind.RESULT:
            name, outcome = protocol.read_result(frame)
            return self._carry_out(self.scheduler.result_received(worker, name, outcome, self.now))
        if frame.kind is Kind.HEARTBEAT:
            self.scheduler.heard_from(worker, self.now)
            return []
        raise ProtocolError(f"a worker may not send {frame.kind.name}")

    def lost(self, worker: str) -> list[Action]:
        """An admitted worker's connection closed."""
        state = self.scheduler.workers.get(worker)
        actions = self._carry_out(self.scheduler.worker_lost(worker, self.now))
        if state is not None:
            self.launching.book.left(state.launch, state.index)
        self.launching.scale()
        return actions

    # ----- from the user (through the task book) ----------------------------------------

    def pushed(self) -> None:
        """Tasks are waiting in the task book's inbox."""
        specs = self.tasks.take_inbox()
        if specs and not self._closing:
            with self.server.batch():
                self.server.execute(self._carry_out(self.scheduler.push(specs, self.now)))
            if any(self.scheduler.queued):  # idle workers took them all: no worker to launch
                self.launching.scale()

    def cancel(self, names: Sequence[str] | None) -> None:
        """Cancel tasks by name (None: all)."""
        with self.server.batch():
            self.server.execute(self._carry_out(self.scheduler.cancel(names, self.now)))

    # ----- from launching (the `launching.Owner` protocol) ------------------------------

    def load(self) -> Load:
        """Demand and connected supply, per level."""
        return self.scheduler.load()

    def port(self) -> int:
        """The port workers dial."""
        return self.server.port

    def verdict(self, worker: str, status: WorkerStatus, reason: str) -> None:
        """The launcher's word on a worker lost mid-task decides its task's retry."""
        actions = self.scheduler.worker_ended(worker, status.cause, reason, self.now)
        with self.server.batch():
            self.server.execute(self._carry_out(actions))

    def disconnect(self, worker: str, reason: str) -> None:
        """Drop a connection whose worker has ended (a process it started holds the socket)."""
        self.server.execute([Disconnect(worker, reason)])

    def give_up(self, reason: str) -> None:
        """No worker can be started: resolve the queued tasks with why, unless some worker is
        connected (it may still run them)."""
        if self.scheduler.workers:
            return
        resolved = self.scheduler.fail_queued(reason)
        if resolved:
            logger.error("%s", reason)
            self._carry_out(resolved)

    def fail(self, error: BaseException) -> None:
        """A launcher that calls at once failed: the user's next wait raises it."""
        self.tasks.fail(error)

    # ----- the clock --------------------------------------------------------------------

    def _tick(self) -> None:
        if self._closing:
            return
        now = self.now
        try:
            with self.server.batch():
                self.server.execute(self._carry_out(self.scheduler.tick(now)))
                if now - self._last_heartbeat >= SECONDS_HEARTBEAT:
                    self._last_heartbeat = now
                    self.server.broadcast(protocol.encode(Kind.HEARTBEAT, {}))
            self.launching.tick(now)
        except Exception:
            logger.exception("controller %s: error in its periodic check", self.settings.name)
        self.runtime.loop.call_later(self.settings.seconds_interval, self._tick)

    # ----- actions ----------------------------------------------------------------------

    def _carry_out(self, actions: Sequence[Action]) -> list[Action]:
        """Do what is not the server's (outcomes, investigations); return what is."""
        frames: list[Action] = []
        resolved: list[Resolve] = []
        for action in actions:
            if isinstance(action, Resolve):
                resolved.append(action)
            elif isinstance(action, Investigate):
                self.launching.investigate(action.launch, action.index)
            else:
                if isinstance(action, SendTask):
                    entry = self.tasks.entries.get(action.task.name)
                    if entry is not None and entry.future is not None:
                        entry.future.started()
                frames.append(action)
        if resolved:
            self.tasks.deliver(resolved)
        return frames

    # ----- the end ----------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Cancel every task, tell every worker to leave, and close the server (on the loop)."""
        self._closing = self.launching.closing = True
        self.cancel(None)
        unseen = self.tasks.take_inbox()  # pushed, never seen by the scheduler
        cancelled = Outcome("cancel", error="cancelled")
        self.tasks.deliver([Resolve(spec.name, cancelled) for spec in unseen])
        self.server.broadcast(
            protocol.encode(Kind.EXIT, {"reason": "the controller is terminating"})
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SECONDS_EXIT_GRACE
        while self.scheduler.workers and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await self.server.close()
