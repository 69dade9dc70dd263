"""The launch book as a pure state machine: launches from order to the end of their last worker.

Time is a number passed in; no launcher is called. A test plays the dispatcher: it asks the book
whom to poll, answers with the statuses a launcher would give, and reads the decisions.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from batchcrew.errors import ConnectionRefused
from batchcrew.launchers.base import LaunchHandle, WorkerKey, WorkerStatus
from batchcrew.launches import (
    SECONDS_EXPIRY_POLL,
    SECONDS_INVESTIGATION_FIRST,
    SECONDS_INVESTIGATION_MAX,
    Admission,
    DeadButConnected,
    Decision,
    LaunchBook,
    LaunchRecord,
    Outage,
    Terminate,
    Verdict,
    WorkerFailed,
)

SECONDS_LAUNCH = 30.0
SECONDS_POLL = 1.0
NEVER = 1e9
"""A `seconds_poll` so long that only urgent polls (expiry, investigations) are due."""

# ----- helpers ------------------------------------------------------------------------------


def launched(
    book: LaunchBook, count: int = 1, *, level: int = 0, now: float = 0.0
) -> tuple[LaunchRecord, LaunchHandle]:
    """Order a launch and have the launcher submit it."""
    record = book.order(level=level, count=count, now=now)
    handle = LaunchHandle(record.id, count, f"job-{record.id}")
    assert book.submitted(record.id, handle) == []
    return record, handle


def admit(book: LaunchBook, record: LaunchRecord, *indices: int) -> None:
    for index in indices:
        book.admit(record.id, index, record.token)


def poll(
    book: LaunchBook,
    now: float,
    statuses: Mapping[WorkerKey, WorkerStatus] | None = None,
    *,
    seconds_poll: float = SECONDS_POLL,
    connected_too: bool = False,
) -> tuple[dict[LaunchHandle, list[int]], list[Decision]]:
    """Ask the book whom to poll; if anyone, answer with `statuses` (none by default)."""
    targets = book.poll_targets(now, seconds_poll, connected_too)
    if not targets:
        return targets, []
    return targets, book.polled({} if statuses is None else statuses, now)


def ended(
    reason: str = "Essential container in task exited", exit_code: int | None = 1
) -> WorkerStatus:
    return WorkerStatus("ended", reason, exit_code, "other")


RUNNING = WorkerStatus("running")
OUT_OF_MEMORY = WorkerStatus("ended", "OutOfMemoryError: Container killed", 137, "memory")


def refused(book: LaunchBook, launch: str, index: object, token: str) -> ConnectionRefused:
    with pytest.raises(ConnectionRefused) as caught:
        book.admit(launch, index, token)
    return caught.value


# ----- order and pending --------------------------------------------------------------------


def test_order_records_a_launch_with_its_own_id_and_token() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    first = book.order(level=0, count=2, now=1.0)
    second = book.order(level=1, count=3, now=2.0)
    assert first.id != second.id and first.token != second.token
    assert len(first.token) >= 32
    assert (first.level, first.count, first.ordered_at, first.handle) == (0, 2, 1.0, None)
    assert list(book.records) == [first.id, second.id]
    assert (book.launches, book.workers_launched, book.failures_in_row) == (2, 5, 0)


def test_pending_counts_workers_neither_connected_nor_ended() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 3)
    assert (book.pending(), record.waiting) == (3, [0, 1, 2])
    admit(book, record, 1)
    assert (book.pending(), record.waiting) == (2, [0, 2])
    poll(book, 0.0, {(record.id, 0): ended()})
    assert (book.pending(), record.waiting) == (1, [2])
    book.left(record.id, 1)
    assert book.pending() == 1


def test_pending_by_level() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    book.order(level=0, count=2, now=0.0)
    book.order(level=2, count=3, now=0.0)
    record = book.order(level=2, count=1, now=0.0)
    assert book.pending_by_level(3) == (2, 0, 4)
    admit(book, record, 0)
    assert book.pending_by_level(3) == (2, 0, 3)
    assert book.pending() == 5


# ----- admit --------------------------------------------------------------------------------


def test_admit_lets_a_worker_in_with_its_level_and_labels() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    unsubmitted = book.order(level=1, count=2, now=0.0)
    assert book.admit(unsubmitted.id, 1, unsubmitted.token) == Admission(
        level=1, label=f"{unsubmitted.id}:1", launch_label=unsubmitted.id
    )
    assert unsubmitted.connected == {1}
    several = book.order(level=0, count=2, now=0.0)
    book.submitted(several.id, LaunchHandle(several.id, 2, "job-9"))
    assert book.admit(several.id, 1, several.token) == Admission(0, "job-9:1", "job-9")
    single = book.order(level=0, count=1, now=0.0)
    book.submitted(single.id, LaunchHandle(single.id, 1, "job-10"))
    assert book.admit(single.id, 0, single.token) == Admission(0, "job-10", "job-10")


@pytest.mark.parametrize("token", ["", "wrong", "almost", "\udcff"])
def test_admit_with_a_wrong_token_is_refused_without_saying_why(token: str) -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    for guess in (token, record.token[:-1], record.token + "x"):
        refusal = refused(book, record.id, 0, guess)
        assert refusal.reply == "authentication failed"
        assert "wrong token" in str(refusal)
    assert (record.connected, book.pending()) == (set(), 2)


def test_admit_of_an_unknown_launch_is_refused_without_saying_why() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book)
    other, _ = launched(book)
    refusal = refused(book, "nope", 0, record.token)
    assert refusal.reply == "authentication failed"
    assert "unknown launch 'nope'" in str(refusal)
    # One launch's token opens no other launch.
    assert refused(book, other.id, 0, record.token).reply == "authentication failed"
    assert other.connected == set()


@pytest.mark.parametrize("index", [-1, 2, 10**9])
def test_admit_with_an_index_out_of_range_is_refused(index: int) -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    refusal = refused(book, record.id, index, record.token)
    assert str(refusal) == f"launch {record.id} has no worker index {index}"
    assert refusal.reply == str(refusal)  # the peer showed the token: it may know why
    assert book.pending() == 2


@pytest.mark.parametrize("index", [None, "0", 0.0, True])
def test_admit_without_an_integer_index_is_refused(index: object) -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    assert str(refused(book, record.id, index, record.token)) == "HELLO carries no worker index"
    assert book.pending() == 2


def test_admit_of_a_connected_worker_again_is_refused() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    admit(book, record, 0)
    refusal = refused(book, record.id, 0, record.token)
    assert str(refusal) == f"worker 0 of launch {record.id} is connected already"
    assert (record.connected, book.pending()) == ({0}, 1)


@pytest.mark.parametrize("confirm_ends", [False, True])
def test_admit_after_the_worker_left_says_it_left(confirm_ends: bool) -> None:
    book = LaunchBook(SECONDS_LAUNCH, confirm_ends=confirm_ends)
    record, _ = launched(book, 2)
    admit(book, record, 0)
    book.left(record.id, 0)
    refusal = refused(book, record.id, 0, record.token)
    assert "has connected before and has since left" in str(refusal)
    assert book.pending() == 1


def test_admit_of_a_written_off_worker_says_so() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    admit(book, record, 0)
    book.tick(SECONDS_LAUNCH)
    poll(book, SECONDS_LAUNCH, seconds_poll=NEVER)
    assert record.written_off == {1}
    refusal = refused(book, record.id, 1, record.token)
    assert str(refusal) == (
        f"worker 1 of launch {record.id} was written off: it did not connect within "
        "seconds_launch=30"
    )


def test_admit_of_a_worker_of_a_launch_written_off_while_submitting_says_so() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record = book.order(level=0, count=2, now=0.0)
    book.tick(SECONDS_LAUNCH)
    assert "was written off" in str(refused(book, record.id, 1, record.token))


def test_admit_of_a_worker_seen_ended_before_connecting_does_not_say_it_left() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    poll(book, 0.0, {(record.id, 0): ended()})
    assert "has since left" not in str(refused(book, record.id, 0, record.token))


# ----- refused with good credentials (versions that differ) ------------------------------

MISMATCH = "worker runs Python 3.10, controller 3.12"


def test_refusal_with_good_credentials_stops_waiting_for_the_worker() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    with pytest.raises(ConnectionRefused, match=r"Python 3\.10"):
        book.admit(record.id, 0, record.token, MISMATCH)
    assert (record.connected, record.done, book.pending()) == (set(), {0}, 1)
    assert "reported ended" in str(refused(book, record.id, 0, record.token))


def test_refusal_with_bad_credentials_says_nothing_of_versions() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    with pytest.raises(ConnectionRefused) as raised:
        book.admit(record.id, 0, "wrong", MISMATCH)
    assert raised.value.reply == "authentication failed"
    assert book.pending() == 2


def test_launch_whose_last_worker_is_refused_is_forgotten() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 1)
    with pytest.raises(ConnectionRefused):
        book.admit(record.id, 0, record.token, MISMATCH)
    assert book.records == {}


def test_launch_whose_workers_are_all_refused_counts_as_failed() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    first = book.order(level=0, count=1, now=0.0)
    book.submit_failed(first.id)
    assert book.failures_in_row == 1
    record, _ = launched(book, 1)
    with pytest.raises(ConnectionRefused):
        book.admit(record.id, 0, record.token, MISMATCH)
    assert book.failures_in_row == 2


# ----- left ---------------------------------------------------------------------------------


def test_left_without_confirm_ends_ends_the_worker_at_once() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    admit(book, record, 0, 1)
    book.left(record.id, 0)
    assert (record.connected, record.leaving, record.done) == ({1}, set(), {0})
    assert record.id in book.records
    book.left(record.id, 1)
    assert book.records == {}
    assert book.pending() == 0


def test_left_with_confirm_ends_waits_until_the_launcher_says_ended() -> None:
    book = LaunchBook(SECONDS_LAUNCH, confirm_ends=True)
    record, handle = launched(book, 1)
    admit(book, record, 0)
    book.left(record.id, 0)
    assert (record.connected, record.leaving, record.done) == (set(), {0}, set())
    assert book.pending() == 0
    key = (record.id, 0)
    targets, decisions = poll(book, 0.0, {key: RUNNING}, connected_too=True)
    assert (targets, decisions) == ({handle: [0]}, [])
    assert record.leaving == {0}
    targets, decisions = poll(book, 1.0, {key: ended("exited", 0)}, connected_too=True)
    assert (targets, decisions) == ({handle: [0]}, [])  # an end after leaving is no failure
    assert book.records == {}
    assert book.failures_in_row == 0


def test_left_of_an_unknown_launch_is_ignored() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    book.left("nope", 0)
    assert book.records == {}


# ----- submission ---------------------------------------------------------------------------


def test_submitted_gives_the_handle_to_labels_and_handles() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record = book.order(level=0, count=2, now=0.0)
    assert (book.label(record.id, 1), list(book.handles())) == (f"{record.id}:1", [])
    handle = LaunchHandle(record.id, 2, "job-7")
    assert book.submitted(record.id, handle) == []
    assert record.handle is handle
    assert (book.label(record.id, 1), list(book.handles())) == ("job-7:1", [handle])
    assert book.label("gone", 3) == "gone:3"


def test_submit_failed_forgets_the_launch_and_counts_a_failed_launch() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    first = book.order(level=0, count=2, now=0.0)
    book.submit_failed(first.id)
    assert (book.records, book.pending(), book.failures_in_row) == ({}, 0, 1)
    second = book.order(level=0, count=5, now=1.0)
    book.submit_failed(second.id)
    assert book.failures_in_row == 2
    book.submit_failed("nope")
    book.submit_failed(second.id)  # twice
    assert book.failures_in_row == 2


def test_a_submission_failure_that_may_pass_is_not_counted_as_a_failed_launch() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    first = book.order(level=0, count=2, now=0.0)
    book.submit_failed(first.id, counted=False)
    assert (book.records, book.pending(), book.failures_in_row) == ({}, 0, 0)


def test_an_outage_counts_failures_and_lasts_from_the_first_to_the_latest() -> None:
    outage = Outage()
    assert (outage.failures, outage.seconds) == (0, 0.0)
    for now in (5.0, 6.5, 9.0):
        outage.failed(now)
    assert (outage.failures, outage.seconds) == (3, 4.0)


def test_failures_in_row_count_launches_not_workers() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 3)
    statuses = {(record.id, index): ended("CannotPullContainerError", None) for index in range(3)}
    _, decisions = poll(book, 0.0, statuses)
    assert [(d.index, d.expired) for d in decisions if isinstance(d, WorkerFailed)] == [
        (0, False),
        (1, False),
        (2, False),
    ]
    assert book.failures_in_row == 1
    assert book.records == {}


def test_failures_in_row_reset_when_a_worker_connects() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    for _ in range(2):
        book.submit_failed(book.order(level=0, count=1, now=0.0).id)
    assert book.failures_in_row == 2
    record, _ = launched(book, 1)
    admit(book, record, 0)
    assert book.failures_in_row == 0


def test_launch_where_one_worker_connected_is_no_failure() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    admit(book, record, 0)
    _, decisions = poll(book, 0.0, {(record.id, 1): ended()})
    assert [type(d).__name__ for d in decisions] == ["WorkerFailed"]
    assert book.failures_in_row == 0


def test_launch_written_off_while_submitting_then_failing_counts_once() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record = book.order(level=0, count=1, now=0.0)
    book.tick(SECONDS_LAUNCH)
    assert book.failures_in_row == 1
    book.submit_failed(record.id)
    assert (book.records, book.failures_in_row) == ({}, 1)


# ----- expiry -------------------------------------------------------------------------------


def test_launch_starts_to_expire_after_seconds_launch() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2, now=5.0)
    poll(book, 5.0)
    assert book.tick(5.0 + SECONDS_LAUNCH - 0.001) == []
    assert record.expiring_since is None
    assert book.tick(5.0 + SECONDS_LAUNCH) == []  # first, ask the launcher where they are
    assert record.expiring_since == 5.0 + SECONDS_LAUNCH
    assert book.pending() == 2


def test_expiring_launch_is_polled_at_once_and_its_waiting_workers_expired() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 4)
    admit(book, record, 1)
    poll(book, 0.0, seconds_poll=NEVER)
    book.tick(SECONDS_LAUNCH)
    targets = book.poll_targets(SECONDS_LAUNCH, NEVER, False)
    assert targets == {handle: [0, 2, 3]}
    statuses = {
        (record.id, 0): WorkerStatus("queued", "RUNNABLE: no capacity"),
        (record.id, 2): WorkerStatus("starting", "STARTING"),
    }  # the launcher could not find worker 3
    decisions = book.polled(statuses, SECONDS_LAUNCH + 1.0)
    assert decisions == [
        WorkerFailed(record.id, 0, record.label(0), statuses[(record.id, 0)], expired=True),
        WorkerFailed(record.id, 2, record.label(2), statuses[(record.id, 2)], expired=True),
        WorkerFailed(record.id, 3, record.label(3), None, expired=True),
        Terminate(handle, (0, 2, 3)),
    ]
    assert (record.written_off, record.connected, book.pending()) == ({0, 2, 3}, {1}, 0)
    assert record.expiring_since is None
    assert book.failures_in_row == 0  # a worker of it did connect
    assert book.tick(SECONDS_LAUNCH + 2.0) == []
    assert book.poll_targets(SECONDS_LAUNCH + 2.0, NEVER, False) == {}


def test_expiring_worker_seen_ended_fails_as_ended_and_the_rest_expire() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 2)
    poll(book, 0.0, seconds_poll=NEVER)
    book.tick(SECONDS_LAUNCH)
    status = ended("CannotPullContainerError", None)
    _, decisions = poll(book, SECONDS_LAUNCH, {(record.id, 0): status}, seconds_poll=NEVER)
    assert decisions == [
        WorkerFailed(record.id, 0, record.label(0), status, expired=False),
        WorkerFailed(record.id, 1, record.label(1), None, expired=True),
        Terminate(handle, (1,)),
    ]
    assert book.failures_in_row == 1
    assert book.records == {}


def test_answer_to_a_poll_asked_before_the_expiry_expires_nothing() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 1)
    assert book.poll_targets(SECONDS_LAUNCH - 1.0, SECONDS_POLL, False) == {handle: [0]}
    book.tick(SECONDS_LAUNCH)
    assert book.polled({(record.id, 0): RUNNING}, SECONDS_LAUNCH) == []
    assert book.pending() == 1
    _, decisions = poll(book, SECONDS_LAUNCH, {(record.id, 0): RUNNING}, seconds_poll=NEVER)
    assert [type(d).__name__ for d in decisions] == ["WorkerFailed", "Terminate"]


def test_launch_not_submitted_in_time_is_written_off_and_ended_when_its_handle_comes() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record = book.order(level=0, count=2, now=0.0)
    assert book.tick(SECONDS_LAUNCH - 0.001) == []
    assert book.tick(SECONDS_LAUNCH) == [
        WorkerFailed(record.id, 0, f"{record.id}:0", None, expired=True),
        WorkerFailed(record.id, 1, f"{record.id}:1", None, expired=True),
    ]
    assert (book.pending(), book.failures_in_row) == (0, 1)
    assert book.tick(SECONDS_LAUNCH + 1.0) == []
    handle = LaunchHandle(record.id, 2, "job-late")
    assert book.submitted(record.id, handle) == [Terminate(handle)]  # every worker of it
    assert book.records == {}
    assert book.failures_in_row == 1


def test_launch_written_off_while_submitting_spares_the_workers_that_connected() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record = book.order(level=0, count=2, now=0.0)
    admit(book, record, 0)
    book.tick(SECONDS_LAUNCH)
    decisions = book.submitted(record.id, LaunchHandle(record.id, 2, "job-late"))
    for decision in decisions:
        assert isinstance(decision, Terminate)
        assert decision.indices is not None and 0 not in decision.indices


@pytest.mark.parametrize("asked", [False, True])
def test_launch_the_launcher_cannot_place_expires_after_seconds_expiry_poll(asked: bool) -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 1)
    poll(book, 0.0, seconds_poll=NEVER)
    start = SECONDS_LAUNCH
    book.tick(start)
    if asked:  # the poll went out and failed
        assert book.poll_targets(start, NEVER, False) == {handle: [0]}
        assert book.polled(None, start + 1.0) == []
    assert book.tick(start + SECONDS_EXPIRY_POLL - 0.001) == []
    assert book.tick(start + SECONDS_EXPIRY_POLL) == [
        WorkerFailed(record.id, 0, record.label(0), None, expired=True),
        Terminate(handle, (0,)),
    ]
    assert (book.records, book.failures_in_row) == ({}, 1)


def test_poll_that_never_answers_does_not_hold_off_expiry_forever() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 1)
    poll(book, 0.0, seconds_poll=NEVER)
    book.tick(SECONDS_LAUNCH)
    assert book.poll_targets(SECONDS_LAUNCH, NEVER, False) == {handle: [0]}
    decisions = book.tick(SECONDS_LAUNCH + 100 * SECONDS_EXPIRY_POLL)
    assert WorkerFailed(record.id, 0, record.label(0), None, expired=True) in decisions


def test_fully_connected_launch_never_expires() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 2)
    admit(book, record, 0, 1)
    assert book.tick(100 * SECONDS_LAUNCH) == []
    assert record.expiring_since is None
    assert book.poll_targets(100 * SECONDS_LAUNCH, NEVER, False) == {}


def test_written_off_worker_that_ends_later_is_no_new_failure() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 2)
    admit(book, record, 0)
    poll(book, 0.0, seconds_poll=NEVER)
    book.tick(SECONDS_LAUNCH)
    poll(book, SECONDS_LAUNCH, seconds_poll=NEVER)
    assert record.written_off == {1}
    # The termination took effect: the launcher now reports the killed worker as ended.
    killed = ended("Terminated by the controller", None)
    targets, decisions = poll(
        book, SECONDS_LAUNCH + 1.0, {(record.id, 1): killed}, connected_too=True
    )
    assert (targets, decisions) == ({handle: [0]}, [])
    assert (record.done, book.failures_in_row) == ({1}, 0)
    # Once the launch is forgotten, news of it changes nothing either.
    book.left(record.id, 0)
    assert book.records == {}
    assert book.polled({(record.id, 1): killed, (record.id, 0): ended()}, 40.0) == []


# ----- workers that end before connecting ---------------------------------------------------


def test_worker_that_ends_before_connecting_fails_with_the_launchers_status() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 2)
    status = ended("CannotPullContainerError: image not found", None)
    statuses = {(record.id, 0): status, (record.id, 1): RUNNING}
    targets, decisions = poll(book, 0.0, statuses)
    assert targets == {handle: [0, 1]}
    assert decisions == [WorkerFailed(record.id, 0, record.label(0), status, expired=False)]
    assert (record.waiting, book.pending(), book.failures_in_row) == ([1], 1, 0)
    _, decisions = poll(book, 1.0, {(record.id, 0): status, (record.id, 1): status})
    assert [(d.index, d.expired) for d in decisions if isinstance(d, WorkerFailed)] == [(1, False)]
    assert (book.records, book.failures_in_row) == ({}, 1)


@pytest.mark.parametrize(
    "status", [WorkerStatus("queued", "RUNNABLE"), WorkerStatus("starting"), RUNNING]
)
def test_worker_seen_on_its_way_is_still_waited_for(status: WorkerStatus) -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 1)
    assert poll(book, 0.0, {(record.id, 0): status})[1] == []
    assert (record.waiting, book.pending()) == ([0], 1)


# ----- poll cadence -------------------------------------------------------------------------


def test_first_poll_is_due_at_once_and_asks_for_the_waiting_workers() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    waiting, waiting_handle = launched(book, 3)
    admit(book, waiting, 1)
    full, _ = launched(book, 1)
    admit(book, full, 0)
    book.order(level=0, count=2, now=0.0)  # no handle yet: nothing to ask about
    assert book.poll_targets(0.0, SECONDS_POLL, False) == {waiting_handle: [0, 2]}
    assert book.polling_since is not None


def test_one_poll_at_a_time() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 1)
    assert book.poll_targets(0.0, SECONDS_POLL, False) == {handle: [0]}
    assert book.poll_targets(100.0, SECONDS_POLL, True) == {}
    book.investigate(record.id, 0, 100.0)
    assert book.poll_targets(100.0, SECONDS_POLL, False) == {}  # urgent, but one at a time
    book.polled({}, 100.0)
    assert book.polling_since is None
    assert book.poll_targets(100.0, SECONDS_POLL, False) == {handle: [0]}


def test_polls_come_every_seconds_poll() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    _, handle = launched(book, 1)
    assert poll(book, 0.0)[0] == {handle: [0]}
    assert poll(book, 0.999)[0] == {}
    assert poll(book, 1.0)[0] == {handle: [0]}
    assert poll(book, 1.5, seconds_poll=0.5)[0] == {handle: [0]}
    assert book.last_poll == 1.5


def test_failed_poll_is_no_different_for_the_cadence() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    _, handle = launched(book, 1)
    book.poll_targets(0.0, SECONDS_POLL, False)
    assert book.polled(None, 0.5) == []
    assert book.poll_targets(0.5, SECONDS_POLL, False) == {}
    assert book.poll_targets(1.0, SECONDS_POLL, False) == {handle: [0]}


def test_connected_too_adds_connected_and_leaving_workers_to_regular_polls() -> None:
    book = LaunchBook(SECONDS_LAUNCH, confirm_ends=True)
    record, handle = launched(book, 3)
    admit(book, record, 0, 1)
    book.left(record.id, 1)
    assert poll(book, 0.0, connected_too=True)[0] == {handle: [0, 1, 2]}
    assert poll(book, 1.0, connected_too=False)[0] == {handle: [2]}
    book.tick(SECONDS_LAUNCH)  # an urgent poll asks only for what is urgent
    assert book.poll_targets(SECONDS_LAUNCH, NEVER, True) == {handle: [2]}


def test_urgent_poll_asks_only_about_expiring_and_investigated_workers() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    expiring, expiring_handle = launched(book, 2, now=0.0)
    launched(book, 2, now=SECONDS_LAUNCH - 1.0)  # not late yet
    lost, lost_handle = launched(book, 2)
    admit(book, lost, 0, 1)
    poll(book, 0.0, seconds_poll=NEVER)
    book.investigate(lost.id, 1, SECONDS_LAUNCH)
    book.left(lost.id, 1)
    book.tick(SECONDS_LAUNCH)
    assert book.poll_targets(SECONDS_LAUNCH, NEVER, False) == {
        expiring_handle: [0, 1],
        lost_handle: [1],
    }
    assert expiring.expiry_asked


def test_nothing_to_ask_sends_no_poll() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    assert book.poll_targets(0.0, SECONDS_POLL, True) == {}
    record, _ = launched(book, 1)
    admit(book, record, 0)
    assert book.poll_targets(5.0, SECONDS_POLL, False) == {}
    assert book.polling_since is None
    assert book.last_poll == 5.0


# ----- investigations -----------------------------------------------------------------------


def test_investigation_polls_at_once_and_gives_the_verdict_when_ended() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 2, level=1)
    admit(book, record, 0, 1)
    poll(book, 0.0, seconds_poll=NEVER)
    book.investigate(record.id, 0, 5.0)
    book.left(record.id, 0)
    assert book.poll_targets(5.0, NEVER, False) == {handle: [0]}
    decisions = book.polled({(record.id, 0): OUT_OF_MEMORY}, 5.1)
    assert decisions == [Verdict(record.id, 0, record.label(0), 1, OUT_OF_MEMORY)]
    assert book.investigating.asked == {}
    assert book.failures_in_row == 0
    assert record.id in book.records  # worker 1 is still connected
    assert book.poll_targets(6.0, NEVER, False) == {}


def test_investigation_is_asked_again_with_a_growing_pause_while_not_ended() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, handle = launched(book, 1)
    admit(book, record, 0)
    key = (record.id, 0)
    book.investigate(record.id, 0, 0.0)
    book.left(record.id, 0)
    now, pauses = 0.0, []
    for _ in range(9):
        assert book.poll_targets(now, NEVER, False) == {handle: [0]}
        assert book.polled({key: RUNNING}, now) == []
        due, _, first = book.investigating.asked[key]
        assert first == 0.0
        pauses.append(due - now)
        assert book.poll_targets(due - 0.001, NEVER, False) == {}
        now = due
    first_pause = SECONDS_INVESTIGATION_FIRST
    expected = [first_pause * 2**n for n in range(6)] + [2.0, 2.0, 2.0]
    assert pauses == pytest.approx(expected)
    # A failed poll is asked again the same way.
    book.poll_targets(now, NEVER, False)
    assert book.polled(None, now) == []
    assert book.investigating.asked[key][0] == now + 2.0
    book.poll_targets(now + 2.0, NEVER, False)
    assert book.polled({key: OUT_OF_MEMORY}, now + 2.0) == [
        Verdict(record.id, 0, record.label(0), 0, OUT_OF_MEMORY)
    ]
    assert (book.records, book.investigating.asked) == ({}, {})


def test_investigation_is_dropped_after_seconds_investigation_max() -> None:
    book = LaunchBook(SECONDS_LAUNCH)
    record, _ = launched(book, 1)
    admit(book, record, 0)
    book.investigate(record.id, 0, 10.0)
    book.left(record.id, 0)
    assert record.id in book.records  # kept while the question is open
    key = (record.id, 0)
    book.poll_targets(10.0 + SECONDS_INVESTIGATION_MAX - 0.001, NEVER, False)
    book.polled({key: RUNNING}, 10.0 + SECONDS_INVESTIGATION_MAX - 0.001)
    assert key in book.investigating
    late = 10.0 + SECONDS_INVESTIGATION_MAX + 1.0
    assert book.poll_targets(late, NEVER, False) != {}
    assert book.polled({key: RUNNING}, late) == []
    assert (book.investigating.asked, book.records) == ({}, {})


def test_verdict_for_a_worker_leaving_with_confirm_ends_also_ends_it() -> None:
    book = LaunchBook(SECONDS_LAUNCH, confirm_ends=True)
    record, _ = launched(book, 1)
    admit(book, record, 0)
    book.investigate(record.id, 0, 0.0)
    book.left(record.id, 0)
    status = WorkerStatus("ended", "Host EC2 terminated", None, "host")
    _, decisions = poll(book, 0.0, {(record.id, 0): status}, connected_too=True)
    assert decisions == [Verdict(record.id, 0, record.label(0), 0, status)]
    assert book.records == {}


# ----- workers dead but connected -----------------------------------------------------------


def test_dead_but_connected_only_when_seen_ended_on_two_polls() -> None:
    book = LaunchBook(SECONDS_LAUNCH, confirm_ends=True)
    record, _ = launched(book, 1)
    admit(book, record, 0)
    key, status = (record.id, 0), ended("exited", 0)
    assert poll(book, 0.0, {key: status}, connected_too=True)[1] == []
    assert poll(book, 1.0, {key: status}, connected_too=True)[1] == [
        DeadButConnected(record.id, 0, status)
    ]
    assert record.connected == {0}  # until its connection closes


def test_dead_but_connected_needs_two_sightings_in_a_row() -> None:
    book = LaunchBook(SECONDS_LAUNCH, confirm_ends=True)
    record, _ = launched(book, 1)
    admit(book, record, 0)
    key, status = (record.id, 0), ended("exited", 0)
    for now, seen in enumerate([status, RUNNING, status]):
        assert poll(book, float(now), {key: seen}, connected_too=True)[1] == []
    assert [type(d).__name__ for d in poll(book, 3.0, {key: status}, connected_too=True)[1]] == [
        "DeadButConnected"
    ]


def test_worker_that_leaves_after_one_sighting_is_not_dead_but_connected() -> None:
    book = LaunchBook(SECONDS_LAUNCH, confirm_ends=True)
    record, _ = launched(book, 1)
    admit(book, record, 0)
    key, status = (record.id, 0), ended("exited", 0)
    poll(book, 0.0, {key: status}, connected_too=True)
    book.left(record.id, 0)
    assert poll(book, 1.0, {key: status}, connected_too=True)[1] == []
    assert book.records == {}


# ----- bounded --------------------------------------------------------------------------------


@pytest.mark.parametrize("confirm_ends", [False, True])
def test_finished_launches_leave_no_record(confirm_ends: bool) -> None:
    book = LaunchBook(SECONDS_LAUNCH, confirm_ends=confirm_ends)
    verdicts = 0
    for step in range(5_000):
        now = 2.0 * step
        record, handle = launched(book, 1, now=now)
        assert poll(book, now)[0] == {handle: [0]}
        admit(book, record, 0)
        key = (record.id, 0)
        lost = step % 10 == 0  # now and then a worker is lost mid-task
        if lost:
            book.investigate(record.id, 0, now)
        book.left(record.id, 0)
        if lost or confirm_ends:
            targets, decisions = poll(
                book, now + 0.5, {key: ended()}, seconds_poll=0.5, connected_too=confirm_ends
            )
            assert targets == {handle: [0]}
            verdicts += len(decisions)
        assert book.records == {}
    assert verdicts == 500
    assert (book.investigating.asked, book.pending(), book.failures_in_row) == ({}, 0, 0)
    assert (book.launches, book.workers_launched) == (5_000, 5_000)
    assert list(book.handles()) == []
