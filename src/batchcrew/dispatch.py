"""The dispatcher: on the event loop, the one owner of the scheduler and the launch book.

Events come in from the server (workers admitted, frames, connections lost), from the task
book's inbox, from the clock and from the launcher's calls; decisions go out as frames for the
server to send, outcomes for the task book, and calls for the launcher's own threads. It never
blocks the loop and never touches a socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from typing import Any

from batchcrew import protocol
from batchcrew.autoscale import Counts, Policy, plan_launches, seconds_until_round
from batchcrew.errors import ConnectionRefused, ProtocolError
from batchcrew.launchers.base import Launcher, LaunchHandle, LaunchRequest, WorkerKey, WorkerStatus
from batchcrew.launches import (
    DeadButConnected,
    Decision,
    LaunchBook,
    Terminate,
    Verdict,
    WorkerFailed,
)
from batchcrew.protocol import SECONDS_HEARTBEAT, Frame, Kind
from batchcrew.runtime import Runtime
from batchcrew.scheduler import (
    Action,
    Disconnect,
    Investigate,
    Limits,
    Resolve,
    Scheduler,
    SendTask,
)
from batchcrew.server import Server
from batchcrew.settings import Settings
from batchcrew.taskbook import TaskBook

logger = logging.getLogger("batchcrew.dispatch")

SECONDS_WORKER_TIMEOUT = 60.0
"""A worker that hears nothing from its controller this long exits (heartbeats come every 5 s)."""

SECONDS_EXIT_GRACE = 1.0
"""At termination, how long workers have to leave by themselves before they are stopped."""

LAUNCH_FAILURES_MAX = 3
"""Launches in a row that may fail with no worker connected before queued tasks resolve with
an error instead of waiting for a worker that cannot start."""


class Dispatcher:
    """Turns events into the scheduler's and the launch book's decisions, and carries them out.

    Example:
        >>> crew.start()
        >>> crew._dispatcher.scheduler.unresolved()
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
        self.launcher = launcher
        self.tasks = tasks
        self.runtime = runtime
        self.controller_id = controller_id
        self.launches = LaunchBook(settings.seconds_launch, launcher.watch_connected)
        limits = Limits(
            seconds_idle=settings.seconds_idle,
            seconds_wall=settings.seconds_wall,
            tasks_max=settings.tasks_max,
            crashes_max=settings.crashes_max,
            levels=launcher.levels,
            workers=settings.workers,
        )
        self.scheduler = Scheduler(limits, pending=self.launches.pending)
        self.policy = Policy(settings.workers, settings.seconds_interval, launcher.launch_size_max)
        self.server = Server(
            self,
            settings.tls.server_context() if settings.tls else None,
            settings.host,
            settings.port,
        )
        self.versions = protocol.versions()
        self.submissions: dict[str, concurrent.futures.Future[LaunchHandle]] = {}
        self.last_launch_error = ""
        self._last_round: float | None = None
        self._round_scheduled = False
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
        mismatch = self._version_mismatch(hello)
        try:
            admission = self.launches.admit(launch, index, str(hello.get("token", "")), mismatch)
        except ConnectionRefused as refusal:
            if mismatch is not None and str(refusal) == mismatch:
                # Ours, with the right token, but it cannot serve: say why, where users look.
                label = self.launches.label(launch, index if isinstance(index, int) else 0)
                self._launch_failed(f"worker refused: {mismatch}", "connect", label)
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
            self.launches.left(state.launch, state.index)
        if not self._closing:
            self._scale()
        return actions

    # ----- from the user (through the task book) ----------------------------------------

    def pushed(self) -> None:
        """Tasks are waiting in the task book's inbox."""
        specs = self.tasks.take_inbox()
        if specs and not self._closing:
            with self.server.batch():
                self.server.execute(self._carry_out(self.scheduler.push(specs, self.now)))
            self._scale()

    def cancel(self, names: Sequence[str] | None) -> None:
        """Cancel tasks by name (None: all)."""
        with self.server.batch():
            self.server.execute(self._carry_out(self.scheduler.cancel(names, self.now)))

    # ----- the clock --------------------------------------------------------------------

    def _tick(self) -> None:
        if self._closing:
            return
        now = self.now
        try:
            with self.server.batch():
                self.server.execute(self._carry_out(self.scheduler.tick(now)))
                self._decide(self.launches.tick(now))
                if now - self._last_heartbeat >= SECONDS_HEARTBEAT:
                    self._last_heartbeat = now
                    self.server.broadcast(protocol.encode(Kind.HEARTBEAT, {}))
            self._poll(now)
            self._give_up_if_hopeless()
            self._scale()
        except Exception:
            logger.exception("controller %s: error in its periodic check", self.settings.name)
        self.runtime.loop.call_later(self.settings.seconds_interval, self._tick)

    # ----- launching --------------------------------------------------------------------

    def _scale(self) -> None:
        now = self.now
        wait = seconds_until_round(
            self.policy, self._last_round, self.launches.failures_in_row, now
        )
        if wait > 0:
            if not self._round_scheduled:
                self._round_scheduled = True
                self.runtime.loop.call_later(wait, self._scheduled_round)
            return
        load = self.scheduler.load()
        pending = self.launches.pending_by_level(self.launcher.levels)
        counts = Counts(
            load.demand,
            tuple(supply + more for supply, more in zip(load.supply, pending, strict=True)),
            load.connected + sum(pending),
        )
        orders = plan_launches(self.policy, counts)
        if not orders:
            return
        self._last_round = now
        for order in orders:
            self._launch(order.level, order.count, now)

    def _scheduled_round(self) -> None:
        self._round_scheduled = False
        if not self._closing:
            self._scale()

    def _launch(self, level: int, count: int, now: float) -> None:
        record = self.launches.order(level, count, now)
        settings = self.settings
        environment = {
            "BATCHCREW_HOST": settings.host,
            "BATCHCREW_PORT": str(self.server.port),
            "BATCHCREW_TOKEN": record.token,
            "BATCHCREW_LAUNCH": record.id,
            "BATCHCREW_FINGERPRINT": settings.tls.fingerprint() if settings.tls else "",
            "BATCHCREW_SECONDS_TIMEOUT": str(SECONDS_WORKER_TIMEOUT),
        }
        request = LaunchRequest(
            record.id, count, level, environment, settings.name, self.controller_id
        )
        logger.info(
            "launching %d worker(s) at %s (launch %s)",
            count,
            self.launcher.describe_level(level),
            record.id,
        )
        future = self.launcher.submit(self.launcher.launch, request)
        self.submissions[record.id] = future
        self._when_done(future, self._launched, record.id)

    def _launched(self, launch: str, future: concurrent.futures.Future[LaunchHandle]) -> None:
        self.submissions.pop(launch, None)
        error = future.exception()
        if error is not None:
            self._launch_failed(f"launch {launch} failed: {error}", "launch", None, error)
            self.launches.submit_failed(launch)
        else:
            self._decide(self.launches.submitted(launch, future.result()))
        self._give_up_if_hopeless()
        self._scale()

    def _poll(self, now: float) -> None:
        launcher = self.launcher
        targets = self.launches.poll_targets(now, launcher.seconds_poll, launcher.watch_connected)
        if targets:
            self._when_done(launcher.submit(launcher.poll, targets), self._polled)

    def _polled(self, future: concurrent.futures.Future[dict[WorkerKey, WorkerStatus]]) -> None:
        error = future.exception()
        if error is not None:
            self.launcher.record_error("poll", str(error))
        statuses = None if error is not None else future.result()
        self._decide(self.launches.polled(statuses, self.now))
        self._give_up_if_hopeless()
        if not self._closing:
            self._scale()

    def _decide(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Terminate):
                self._terminate(decision.handle, decision.indices)
            elif isinstance(decision, WorkerFailed):
                status = decision.status.describe() if decision.status else None
                if decision.expired:
                    where = status or "the launcher could not say where it is"
                    message = (
                        f"not connected within seconds_launch={self.settings.seconds_launch:g} "
                        f"({where}); terminated"
                    )
                else:
                    message = f"ended before connecting: {status}"
                self._launch_failed(message, "launch", decision.label)
            elif isinstance(decision, Verdict):
                reason = f"worker {decision.label} {self._describe_end(decision)}"
                logger.warning("%s", reason)
                worker = f"{decision.launch}-{decision.index}"
                cause = decision.status.cause
                with self.server.batch():
                    self.server.execute(
                        self._carry_out(
                            self.scheduler.worker_ended(worker, cause, reason, self.now)
                        )
                    )
            elif isinstance(decision, DeadButConnected):
                worker = f"{decision.launch}-{decision.index}"
                reason = f"its launcher says it has {decision.status.describe()}"
                self.server.execute([Disconnect(worker, reason)])

    def _describe_end(self, verdict: Verdict) -> str:
        status = verdict.status
        if status.cause == "memory":
            return f"ran out of memory at {self.launcher.describe_level(verdict.level)}"
        if status.cause == "host":
            return f"lost its host: {status.reason or 'reclaimed'}"
        return status.describe()

    def _terminate(self, handle: LaunchHandle, indices: Sequence[int] | None) -> None:
        chosen = None if indices is None else list(indices)
        future = self.launcher.submit(self.launcher.terminate, handle, chosen)
        self._when_done(future, self._terminated, handle)

    def _terminated(self, handle: LaunchHandle, future: concurrent.futures.Future[None]) -> None:
        error = future.exception()
        if error is not None:
            self.launcher.record_error("terminate", str(error), handle.external_id)

    def _launch_failed(
        self, message: str, operation: str, job: str | None, error: BaseException | None = None
    ) -> None:
        self.last_launch_error = message
        self.launcher.record_error(operation, message, job)
        if error is not None and self.launcher.processes is None:
            self.tasks.fail(error)  # calls made at once raise at once: say it to the user now

    def _give_up_if_hopeless(self) -> None:
        """After launches keep failing with no worker connected, resolve the queued tasks with
        the launcher's last word instead of letting `map` and `wait` hang."""
        failures = self.launches.failures_in_row
        if failures < LAUNCH_FAILURES_MAX or self.scheduler.workers:
            return
        reason = (
            f"no worker could start: {failures} launches in a row failed; "
            f"last: {self.last_launch_error}"
        )
        resolved = self.scheduler.fail_queued(reason)
        if resolved:
            logger.error("%s", reason)
            self._carry_out(resolved)

    def _when_done(
        self,
        future: concurrent.futures.Future[Any],
        callback: Callable[..., None],
        *args: object,
    ) -> None:
        """Run `callback(*args, future)` on the loop once a launcher call is done."""
        future.add_done_callback(lambda done: self.runtime.post(callback, *args, done))

    # ----- actions ----------------------------------------------------------------------

    def _carry_out(self, actions: Sequence[Action]) -> list[Action]:
        """Do what is not the server's (outcomes, investigations); return what is."""
        frames: list[Action] = []
        resolved: list[Resolve] = []
        for action in actions:
            if isinstance(action, Resolve):
                resolved.append(action)
            elif isinstance(action, Investigate):
                self.launches.investigate(action.launch, action.index, self.now)
                self._poll(self.now)
            else:
                if isinstance(action, SendTask):
                    entry = self.tasks.entries.get(action.task.name)
                    if entry is not None and entry.future is not None:
                        entry.future.started()
                frames.append(action)
        if resolved:
            self.tasks.deliver(resolved)
        return frames

    def _version_mismatch(self, hello: dict[str, Any]) -> str | None:
        names = {"protocol": "protocol", "python": "Python", "cloudpickle": "cloudpickle"}
        for key, label in names.items():
            theirs, ours = str(hello.get(key)), self.versions[key]
            if theirs != ours:
                return f"worker runs {label} {theirs:.40}, controller {ours}"
        if hello.get("batchcrew") != self.versions["batchcrew"]:
            logger.warning(
                "worker runs batchcrew %.40s, controller %s",
                hello.get("batchcrew"),
                self.versions["batchcrew"],
            )
        return None

    # ----- the end ----------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Cancel every task, tell every worker to leave, and close the server (on the loop)."""
        self._closing = True
        self.cancel(None)
        self.server.broadcast(
            protocol.encode(Kind.EXIT, {"reason": "the controller is terminating"})
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SECONDS_EXIT_GRACE
        while self.scheduler.workers and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await self.server.close()

    def leftovers(self) -> tuple[list[LaunchHandle], list[concurrent.futures.Future[LaunchHandle]]]:
        """What may still run once the loop has stopped: every launch in the book, and the
        submissions still under way (their handles are to be ended as they come)."""
        return list(self.launches.handles()), list(self.submissions.values())
