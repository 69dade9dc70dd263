"""The launch book: one record per launch (token, handle, workers, polls, expiry, termination).

Pure state machine like the scheduler: events in (time passed in), decisions out. It never
calls a launcher; the dispatcher carries out what it decides. A launch is forgotten once every
one of its workers has ended and nothing about it is still being asked, so the book stays
bounded however long the controller runs.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from batchcrew.errors import ConnectionRefused
from batchcrew.launchers.base import LaunchHandle, WorkerKey, WorkerStatus

SECONDS_EXPIRY_POLL = 10.0
"""How long an expiring launch waits for the launcher to say where its workers are."""

SECONDS_INVESTIGATION_FIRST = 0.05
"""The first re-poll of a lost worker the launcher still reports alive (it doubles)."""

SECONDS_INVESTIGATION_MAX = 60.0
"""How long the launcher is asked about a lost worker before the book stops asking."""

SECONDS_POLL_MAX = 120.0
"""A poll not answered in this time is given up for lost (a launcher call that hangs): the
book asks again and expires launches without it."""


@dataclass(slots=True, eq=False)
class LaunchRecord:
    """Everything the controller knows of one launch.

    Each worker index is waiting (launched, not connected), connected, leaving (its connection
    closed; its launcher has yet to confirm the end), or done (ended for good: left after
    connecting, ended before connecting, or written off).
    """

    id: str
    level: int
    count: int
    token: str
    ordered_at: float
    handle: LaunchHandle | None = None
    connected: set[int] = field(default_factory=set)
    leaving: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    written_off: set[int] = field(default_factory=set)
    ever_connected: bool = False
    seen: set[int] = field(default_factory=set)
    """Indices that connected at some time."""
    failure_counted: bool = False
    ended_while_connected: set[int] = field(default_factory=set)
    expiring_since: float | None = None
    expiry_asked: bool = False
    """A poll that asks where the workers of this expiring launch are has gone out."""
    abandoned: bool = False
    """Written off while its submission was still under way: end it when the handle comes."""

    @property
    def waiting(self) -> list[int]:
        """Indices launched and neither connected nor done."""
        if self.abandoned:
            return []
        return [
            index
            for index in range(self.count)
            if index not in self.connected and index not in self.leaving and index not in self.done
        ]

    @property
    def pending(self) -> int:
        """Workers of this launch still expected to connect."""
        if self.abandoned:
            return 0
        return self.count - len(self.connected) - len(self.leaving) - len(self.done)

    def label(self, index: int) -> str:
        """How users see worker `index` (the launcher's id when known)."""
        if self.handle is not None:
            return self.handle.worker_label(index)
        return f"{self.id}:{index}"


@dataclass(frozen=True, slots=True)
class Terminate:
    """Stop workers of a launch (`indices` None: all of them).

    Example:
        >>> Terminate(LaunchHandle("L", 2, "L"), (1,)).indices
        (1,)
    """

    handle: LaunchHandle
    indices: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """A worker ended before it connected, or was written off for not connecting in time.

    `status` is what the launcher said of it (None: it could not say).

    Example:
        >>> WorkerFailed("L", 0, "L:0", WorkerStatus("ended", "exited", 5), expired=False).expired
        False
    """

    launch: str
    index: int
    label: str
    status: WorkerStatus | None
    expired: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """The launcher's word on a worker that was lost while it ran a task.

    Example:
        >>> Verdict("L", 0, "L:0", 1, WorkerStatus("ended", cause="memory")).status.cause
        'memory'
    """

    launch: str
    index: int
    label: str
    level: int
    status: WorkerStatus


@dataclass(frozen=True, slots=True)
class DeadButConnected:
    """A worker whose connection is open although its launcher says it has ended (a process
    it started still holds the socket): drop the connection.

    Example:
        >>> DeadButConnected("L", 0, WorkerStatus("ended")).index
        0
    """

    launch: str
    index: int
    status: WorkerStatus


Decision = Terminate | WorkerFailed | Verdict | DeadButConnected


@dataclass(frozen=True, slots=True)
class Admission:
    """A worker the book lets in: its launch's level and how users see it.

    Example:
        >>> Admission(level=0, label="job-1:0", launch_label="job-1").level
        0
    """

    level: int
    label: str
    launch_label: str


class Investigations:
    """Lost workers whose end the launcher is asked about: when to ask next, how long to wait
    after that (doubling), and when asking began (it stops after `SECONDS_INVESTIGATION_MAX`).

    Example:
        >>> asked = Investigations()
        >>> asked.add(("L", 0), now=1.0)
        >>> asked.due(1.0), asked.of("L")
        (True, {0})
    """

    def __init__(self) -> None:
        self.asked: dict[WorkerKey, tuple[float, float, float]] = {}

    def __contains__(self, key: WorkerKey) -> bool:
        return key in self.asked

    def add(self, key: WorkerKey, now: float) -> None:
        """Ask about a worker at the next chance."""
        self.asked[key] = (now, SECONDS_INVESTIGATION_FIRST, now)

    def drop(self, key: WorkerKey) -> None:
        """Stop asking about a worker (its end is known)."""
        self.asked.pop(key, None)

    def due(self, now: float) -> bool:
        """Whether some worker is to be asked about now."""
        return any(due <= now for due, _, _ in self.asked.values())

    def of(self, launch: str) -> set[int]:
        """The workers of a launch being asked about."""
        return {index for (owner, index) in self.asked if owner == launch}

    def keep_only(self, launches: Mapping[str, object]) -> None:
        """Forget workers of launches no longer known."""
        for key in [key for key in self.asked if key[0] not in launches]:
            del self.asked[key]

    def ask_again(self, now: float) -> set[str]:
        """After a poll that did not settle them: ask again a little later, or give up on
        those asked about too long (the launches of those are returned)."""
        dropped: set[str] = set()
        for key, (_, pause, first) in list(self.asked.items()):
            if now - first >= SECONDS_INVESTIGATION_MAX:
                del self.asked[key]  # the scheduler has long given up waiting
                dropped.add(key[0])
            else:
                self.asked[key] = (now + pause, min(pause * 2, 2.0), first)
        return dropped


@dataclass(slots=True)
class Outage:
    """Submissions in a row that failed with errors that may pass (the cloud throttled or out
    of reach): they make the next rounds wait, but are not counted as launches that failed
    (`LaunchBook.submit_failed`) until they have lasted long.

    Example:
        >>> outage = Outage()
        >>> outage.failed(now=3.0); outage.failed(now=10.0)
        >>> outage.failures, outage.seconds
        (2, 7.0)
    """

    failures: int = 0
    first: float = 0.0
    latest: float = 0.0

    def failed(self, now: float) -> None:
        """One more submission failed."""
        if not self.failures:
            self.first = now
        self.failures += 1
        self.latest = now

    @property
    def seconds(self) -> float:
        """From the first failure in the row to the latest."""
        return self.latest - self.first


class LaunchBook:
    """The launches of one controller, from order to the end of their last worker.

    Example:
        >>> book = LaunchBook(seconds_launch=30.0)
        >>> record = book.order(level=0, count=2, now=0.0)
        >>> book.pending()
        2
        >>> book.admit(record.id, 0, record.token).level
        0
        >>> book.pending()
        1
    """

    def __init__(self, seconds_launch: float, confirm_ends: bool = False) -> None:
        self.seconds_launch = seconds_launch
        self.confirm_ends = confirm_ends
        """Keep asking about a worker whose connection closed until its launcher says it has
        ended (local processes: so each is reaped and its process group ended)."""
        self.records: dict[str, LaunchRecord] = {}
        self.failures_in_row = 0
        """Launches in a row that ended without any worker connecting (for back-off)."""
        self.launches = 0
        self.workers_launched = 0
        self.investigating = Investigations()
        self.polling_since: float | None = None
        """When the poll under way went out (None: no poll under way)."""
        self.last_poll: float | None = None

    # ----- events -----------------------------------------------------------------------

    def order(self, level: int, count: int, now: float) -> LaunchRecord:
        """Record a new launch of `count` workers at `level`; its submission starts now."""
        launch = secrets.token_hex(4)
        while launch in self.records:
            launch = secrets.token_hex(4)
        record = LaunchRecord(launch, level, count, secrets.token_urlsafe(24), now)
        self.records[launch] = record
        self.launches += 1
        self.workers_launched += count
        return record

    def submitted(self, launch: str, handle: LaunchHandle) -> list[Decision]:
        """The launcher has submitted a launch. One written off meanwhile is ended at once."""
        record = self.records.get(launch)
        if record is None:
            return [Terminate(handle)]
        record.handle = handle
        if not record.abandoned:
            return []
        spared = record.connected | record.leaving
        self._forget_if_finished(record)
        if not spared:
            return [Terminate(handle)]
        return [Terminate(handle, tuple(i for i in range(record.count) if i not in spared))]

    def submit_failed(self, launch: str, counted: bool = True) -> None:
        """No worker of a launch will come: its submission failed (`counted` unless it may pass)."""
        record = self.records.get(launch)
        if record is None:
            return
        if record.connected or record.leaving:
            # The submission reached the launcher after all (its answer was lost): keep the
            # workers that came, expect no more.
            record.abandoned = True
            return
        del self.records[launch]
        if counted and not record.failure_counted:
            record.failure_counted = True
            self.failures_in_row += 1

    def admit(
        self, launch: str, index: object, token: str, refusal: str | None = None
    ) -> Admission:
        """Check a worker's credentials and let it in; raises `ConnectionRefused`.

        With `refusal`, a worker with good credentials is refused all the same (it cannot
        serve: its versions differ) and no longer waited for.
        """
        record = self.records.get(launch)
        if record is None or not hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), record.token.encode()
        ):
            raise ConnectionRefused(
                f"wrong token or unknown launch {launch!r:.80}", reply="authentication failed"
            )
        if not isinstance(index, int) or isinstance(index, bool):
            raise ConnectionRefused("HELLO carries no worker index")
        if not 0 <= index < record.count:
            raise ConnectionRefused(f"launch {launch} has no worker index {index}")
        if index in record.connected:
            raise ConnectionRefused(f"worker {index} of launch {launch} is connected already")
        if index in record.written_off or record.abandoned:
            raise ConnectionRefused(
                f"worker {index} of launch {launch} was written off: it did not connect "
                f"within seconds_launch={self.seconds_launch:g}"
            )
        if index in record.seen:
            raise ConnectionRefused(
                f"worker {index} of launch {launch} has connected before and has since left; "
                "its token was for one connection"
            )
        if index in record.done:
            raise ConnectionRefused(
                f"worker {index} of launch {launch} was reported ended before it connected"
            )
        if refusal is not None:
            record.done.add(index)
            self._launch_ended_if_failed(record)
            self._forget_if_finished(record)
            raise ConnectionRefused(refusal)
        record.connected.add(index)
        record.seen.add(index)
        record.ever_connected = True
        self.failures_in_row = 0
        launch_label = record.handle.external_id if record.handle is not None else record.id
        return Admission(record.level, record.label(index), launch_label)

    def left(self, launch: str, index: int) -> None:
        """A connected worker's connection has closed."""
        record = self.records.get(launch)
        if record is None:
            return
        record.connected.discard(index)
        (record.leaving if self.confirm_ends else record.done).add(index)
        self._forget_if_finished(record)

    def investigate(self, launch: str, index: int, now: float) -> None:
        """Ask the launcher, at the next chance, why a worker lost mid-task ended."""
        self.investigating.add((launch, index), now)

    def tick(self, now: float) -> list[Decision]:
        """Time passes: launches not connected within `seconds_launch` start to expire."""
        decisions: list[Decision] = []
        for record in list(self.records.values()):
            if not record.waiting or now - record.ordered_at < self.seconds_launch:
                continue
            if record.handle is None:
                # Still being submitted: write it off now, end it when the handle comes.
                decisions += self._expire(record, {})
                record.abandoned = True
            elif record.expiring_since is None:
                record.expiring_since = now  # the next poll asks where its workers are
            elif now - record.expiring_since >= SECONDS_EXPIRY_POLL and not self._polling(now):
                decisions += self._expire(record, {})  # the launcher could not say
        return decisions

    # ----- polls ------------------------------------------------------------------------

    def poll_targets(
        self, now: float, seconds_poll: float, connected_too: bool
    ) -> dict[LaunchHandle, list[int]]:
        """The workers to ask the launcher about now (empty: no poll due).

        Every `seconds_poll`: workers launched and not connected (to learn of those that die
        first), and connected ones too when `connected_too` (cheap for local processes).
        At once: workers of expiring launches and lost workers being investigated.
        """
        if self._polling(now):
            return {}
        self.investigating.keep_only(self.records)  # a launch gone leaves no one to ask
        urgent = any(
            record.expiring_since is not None and record.handle is not None
            for record in self.records.values()
        ) or self.investigating.due(now)
        regular = self.last_poll is None or now - self.last_poll >= seconds_poll
        if not urgent and not regular:
            return {}
        targets: dict[LaunchHandle, list[int]] = {}
        for record in self.records.values():
            if record.handle is None:
                continue
            expiring = record.expiring_since is not None
            indices = set(record.waiting) if regular or expiring else set()
            record.expiry_asked = record.expiry_asked or expiring
            if connected_too and regular:
                indices |= record.connected | record.leaving
            indices |= self.investigating.of(record.id)
            if indices:
                targets[record.handle] = sorted(indices)
        if regular:
            self.last_poll = now
        if targets:
            self.polling_since = now
        return targets

    def polled(
        self, statuses: Mapping[WorkerKey, WorkerStatus] | None, now: float
    ) -> list[Decision]:
        """The launcher answered a poll (None: the poll failed)."""
        self.polling_since = None
        decisions: list[Decision] = []
        found = statuses or {}
        for key, status in found.items():
            decisions += self._observe(key, status)
        for launch in self.investigating.ask_again(now):
            self._forget_if_finished(self.records.get(launch))
        for record in list(self.records.values()):
            if record.expiry_asked and statuses is not None:
                decisions += self._expire(record, found)
        return decisions

    # ----- queries ----------------------------------------------------------------------

    def _polling(self, now: float) -> bool:
        since = self.polling_since
        return since is not None and now - since < SECONDS_POLL_MAX

    def pending(self) -> int:
        """Workers launched and still expected to connect.

        Example:
            >>> LaunchBook(30.0).pending()
            0
        """
        return sum(record.pending for record in self.records.values())

    def pending_by_level(self, levels: int) -> tuple[int, ...]:
        """`pending()` per resource level."""
        counts = [0] * levels
        for record in self.records.values():
            counts[record.level] += record.pending
        return tuple(counts)

    def handles(self) -> Iterator[LaunchHandle]:
        """The handles of every launch still in the book (for the final termination)."""
        for record in self.records.values():
            if record.handle is not None:
                yield record.handle

    def label(self, launch: str, index: int) -> str:
        """How users see a worker of a launch still in the book."""
        record = self.records.get(launch)
        return record.label(index) if record is not None else f"{launch}:{index}"

    # ----- internals --------------------------------------------------------------------

    def _observe(self, key: WorkerKey, status: WorkerStatus) -> list[Decision]:
        launch, index = key
        record = self.records.get(launch)
        if record is None:
            self.investigating.drop(key)
            return []
        decisions: list[Decision] = []
        if key in self.investigating and status.ended:
            self.investigating.drop(key)
            decisions.append(Verdict(launch, index, record.label(index), record.level, status))
        if not status.ended:
            record.ended_while_connected.discard(index)
            return decisions
        if index in record.leaving:
            record.leaving.discard(index)
            record.done.add(index)
        elif index in record.connected:
            # Seen twice, a poll apart: a worker that just exited has closed its connection
            # by then, so only one whose socket something else still holds is dropped.
            if index in record.ended_while_connected:
                decisions.append(DeadButConnected(launch, index, status))
            record.ended_while_connected.add(index)
        elif index not in record.done:
            record.done.add(index)
            decisions.append(WorkerFailed(launch, index, record.label(index), status, False))
            self._launch_ended_if_failed(record)
        self._forget_if_finished(record)
        return decisions

    def _expire(
        self, record: LaunchRecord, found: Mapping[WorkerKey, WorkerStatus]
    ) -> list[Decision]:
        record.expiring_since = None
        record.expiry_asked = False
        missing = record.waiting
        if not missing:
            return []
        decisions: list[Decision] = []
        for index in missing:
            record.done.add(index)
            record.written_off.add(index)
            status = found.get((record.id, index))
            decisions.append(WorkerFailed(record.id, index, record.label(index), status, True))
        if record.handle is not None:
            decisions.append(Terminate(record.handle, tuple(missing)))
        self._launch_ended_if_failed(record)
        self._forget_if_finished(record)
        return decisions

    def _launch_ended_if_failed(self, record: LaunchRecord) -> None:
        if record.ever_connected or record.failure_counted or len(record.done) < record.count:
            return
        record.failure_counted = True
        self.failures_in_row += 1

    def _forget_if_finished(self, record: LaunchRecord | None) -> None:
        if record is None or record.connected or record.leaving or record.waiting:
            return
        if record.handle is None and not record.abandoned:
            return  # the submission has not come back yet
        if self.investigating.of(record.id):
            return
        self.records.pop(record.id, None)
