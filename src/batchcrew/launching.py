"""Launching: the launch book's decisions carried out with the launcher's own threads.

On the event loop it plans launch rounds (autoscaler), submits launches, polls their workers,
terminates what must end, and records what went wrong where users read it
(`launcher.errors()`). What concerns tasks and connected workers it hands to its owner, the
dispatcher. It never waits for the launcher.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from batchcrew.autoscale import Counts, Policy, plan_launches, seconds_until_round
from batchcrew.errors import AWSError
from batchcrew.launchers.base import Launcher, LaunchHandle, LaunchRequest, WorkerKey, WorkerStatus
from batchcrew.launches import (
    DeadButConnected,
    Decision,
    LaunchBook,
    Outage,
    Terminate,
    Verdict,
    WorkerFailed,
)
from batchcrew.runtime import Runtime
from batchcrew.scheduler import Load
from batchcrew.settings import Settings

logger = logging.getLogger("batchcrew.launching")

SECONDS_WORKER_TIMEOUT = 60.0
"""A worker that hears nothing from its controller this long exits (heartbeats come every 5 s)."""

LAUNCH_FAILURES_MAX = 3
"""Launches in a row that may fail with no worker connected before queued tasks resolve with
an error instead of waiting for a worker that cannot start. Submissions that fail with errors
that may pass (AWS throttling, server errors, an endpoint out of reach) do not count: they are
retried with the same back-off for up to `seconds_launch`."""


class Owner(Protocol):
    """What launching needs from the dispatcher, which owns the tasks and the connections."""

    def load(self) -> Load:
        """Demand and connected supply, per level."""

    def port(self) -> int:
        """The port workers dial."""

    def verdict(self, worker: str, status: WorkerStatus, reason: str) -> None:
        """The launcher's word on a worker lost mid-task."""

    def disconnect(self, worker: str, reason: str) -> None:
        """Drop a connection whose worker has ended."""

    def give_up(self, reason: str) -> None:
        """No worker can be started: resolve what waits for one."""

    def fail(self, error: BaseException) -> None:
        """Say an error of a launcher that calls at once to the user now."""


class Launching:
    """Launch rounds, submissions, polls and terminations of one controller.

    Example:
        >>> crew.start()
        >>> crew._life.dispatcher.launching.book.pending() >= 0
        True
    """

    def __init__(
        self,
        settings: Settings,
        launcher: Launcher,
        runtime: Runtime,
        controller_id: str,
        owner: Owner,
    ) -> None:
        self.settings = settings
        self.launcher = launcher
        self.runtime = runtime
        self.controller_id = controller_id
        self.owner = owner
        self.book = LaunchBook(settings.seconds_launch, launcher.watch_connected)
        self.outage = Outage()
        self.policy = Policy(settings.workers, settings.seconds_interval, launcher.launch_size_max)
        self.submissions: dict[str, concurrent.futures.Future[LaunchHandle]] = {}
        self.last_error = ""
        self.closing = False
        self._last_round: float | None = None
        self._round_scheduled = False

    @property
    def now(self) -> float:
        return self.runtime.loop.time()

    def tick(self, now: float) -> None:
        """Time passes: expiries, polls, the question whether any worker can start, a round."""
        self._decide(self.book.tick(now))
        self.poll(now)
        self._give_up_if_hopeless()
        self.scale()

    # ----- rounds -----------------------------------------------------------------------

    def scale(self) -> None:
        """Launch what demand needs, at most one round every `seconds_interval` (longer after
        launches failed)."""
        if self.closing:
            return
        now = self.now
        failures = self.book.failures_in_row + self.outage.failures
        wait = seconds_until_round(self.policy, self._last_round, failures, now)
        if wait > 0:
            if not self._round_scheduled:
                self._round_scheduled = True
                self.runtime.loop.call_later(wait, self._scheduled_round)
            return
        load = self.owner.load()
        pending = self.book.pending_by_level(self.launcher.levels)
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
        self.scale()

    def _launch(self, level: int, count: int, now: float) -> None:
        record = self.book.order(level, count, now)
        settings = self.settings
        environment = {
            "BATCHCREW_HOST": settings.host,
            "BATCHCREW_PORT": str(self.owner.port()),
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
            self._failed(f"launch {launch} failed: {error}", "launch", None, error)
            transient = isinstance(error, AWSError) and error.transient
            if transient:
                self.outage.failed(self.now)
            self.book.submit_failed(launch, counted=not transient)
        else:
            self.outage = Outage()
            self._decide(self.book.submitted(launch, future.result()))
        self._give_up_if_hopeless()
        self.scale()

    # ----- polls ------------------------------------------------------------------------

    def poll(self, now: float) -> None:
        """Ask the launcher about the workers the book wants news of, if a poll is due."""
        launcher = self.launcher
        targets = self.book.poll_targets(now, launcher.seconds_poll, launcher.watch_connected)
        if targets:
            self._when_done(launcher.submit(launcher.poll, targets), self._polled)

    def investigate(self, launch: str, index: int) -> None:
        """A worker was lost mid-task: ask its launcher why, now."""
        self.book.investigate(launch, index, self.now)
        self.poll(self.now)

    def _polled(self, future: concurrent.futures.Future[dict[WorkerKey, WorkerStatus]]) -> None:
        error = future.exception()
        if error is not None:
            self.launcher.record_error("poll", str(error))
        statuses = None if error is not None else future.result()
        self._decide(self.book.polled(statuses, self.now))
        self._give_up_if_hopeless()
        self.scale()

    # ----- decisions --------------------------------------------------------------------

    def _decide(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Terminate):
                self._terminate(decision.handle, decision.indices)
            elif isinstance(decision, WorkerFailed):
                self._failed(self._failure_text(decision), "launch", decision.label)
            elif isinstance(decision, Verdict):
                reason = f"worker {decision.label} {self._end_text(decision)}"
                logger.warning("%s", reason)
                self.owner.verdict(f"{decision.launch}-{decision.index}", decision.status, reason)
            elif isinstance(decision, DeadButConnected):
                reason = f"its launcher says it has {decision.status.describe()}"
                self.owner.disconnect(f"{decision.launch}-{decision.index}", reason)

    def _failure_text(self, failed: WorkerFailed) -> str:
        status = failed.status.describe() if failed.status else None
        if not failed.expired:
            return f"ended before connecting: {status}"
        where = status or "the launcher could not say where it is"
        seconds = self.settings.seconds_launch
        return f"not connected within seconds_launch={seconds:g} ({where}); terminated"

    def _end_text(self, verdict: Verdict) -> str:
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

    def _failed(
        self, message: str, operation: str, job: str | None, error: BaseException | None = None
    ) -> None:
        self.last_error = message
        self.launcher.record_error(operation, message, job)
        if error is not None and self.launcher.processes is None:
            self.owner.fail(error)

    def refused(self, label: str, reason: str) -> None:
        """A worker of ours was refused (its versions differ): say why, where users look."""
        self._failed(f"worker refused: {reason}", "connect", label)

    def _give_up_if_hopeless(self) -> None:
        failures = self.book.failures_in_row
        if failures >= LAUNCH_FAILURES_MAX:
            self.owner.give_up(
                f"no worker could start: {failures} launches in a row failed; "
                f"last: {self.last_error}"
            )
        outage = self.outage.seconds
        if outage >= self.settings.seconds_launch:
            self.owner.give_up(
                f"no worker could start: launches failed for {outage:.0f} s, longer than "
                f"seconds_launch={self.settings.seconds_launch:g}; last: {self.last_error}"
            )

    def _when_done(
        self,
        future: concurrent.futures.Future[Any],
        callback: Callable[..., None],
        *args: object,
    ) -> None:
        """Run `callback(*args, future)` on the loop once a launcher call is done."""
        future.add_done_callback(lambda done: self.runtime.post(callback, *args, done))

    def leftovers(self) -> tuple[list[LaunchHandle], list[concurrent.futures.Future[LaunchHandle]]]:
        """What may still run once the loop has stopped: every launch in the book, and the
        submissions still under way (their handles are to be ended as they come)."""
        return list(self.book.handles()), list(self.submissions.values())
