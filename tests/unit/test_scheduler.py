"""The scheduler as a pure state machine: every event, the actions it returns, the state after.

Time is a number passed in; no sockets, threads or clocks. Worker ids follow the dispatcher's
`<launch>-<index>` form; how many workers are on their way is a counter the test sets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from batchcrew.messages import Outcome, Status, TaskSpec
from batchcrew.records import HISTORY_KEPT, PREFETCH, PREFETCH_SHORT, SECONDS_SHORT
from batchcrew.scheduler import (
    RECLAIMS_MAX,
    SECONDS_SILENCE,
    SECONDS_TIMEOUT_GRACE,
    SECONDS_VERDICT,
    Action,
    Cause,
    Disconnect,
    Investigate,
    Limits,
    Load,
    Resolve,
    Scheduler,
    SendCancel,
    SendExit,
    SendTask,
)

# ----- helpers ------------------------------------------------------------------------------


class Pending:
    """Workers launched and not yet connected, as the launch book would count them."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def __call__(self) -> int:
        return self.count


def spec(name: str, *, seconds_timeout: float | None = None, seed: int = 7) -> TaskSpec:
    return TaskSpec(name, "key", b"fn", b"args", seed, seconds_timeout)


def specs(*names: str) -> list[TaskSpec]:
    return [spec(name) for name in names]


def success(seconds: float = 0.0) -> Outcome:
    return Outcome("success", body=b"value", seconds=seconds)


CANCELLED = Outcome("cancel", error="cancelled")


def connect(
    scheduler: Scheduler, count: int = 1, *, level: int = 0, now: float = 0.0, launch: str = "L"
) -> list[Action]:
    """Connect `count` workers of one launch, named `<launch>-<index>`."""
    actions: list[Action] = []
    for index in range(count):
        actions += scheduler.worker_connected(f"{launch}-{index}", launch, index, level, now)
    return actions


def crash(
    scheduler: Scheduler, worker: str, now: float, cause: Cause | None, reason: str = "killed"
) -> list[Action]:
    """Lose a worker mid-task, then give its launcher's verdict at once."""
    actions = scheduler.worker_lost(worker, now)
    assert [a for a in actions if isinstance(a, Investigate)] != []
    return actions + scheduler.worker_ended(worker, cause, reason, now)


def sent(actions: Sequence[Action]) -> list[tuple[str, str]]:
    return [(a.worker, a.task.name) for a in actions if isinstance(a, SendTask)]


def resolved(actions: Sequence[Action]) -> list[Resolve]:
    return [a for a in actions if isinstance(a, Resolve)]


def held(scheduler: Scheduler, worker: str) -> list[str]:
    return [task.spec.name for task in scheduler.workers[worker].held]


def queue(scheduler: Scheduler, level: int = 0) -> list[str]:
    return [task.spec.name for task in scheduler.queues[level] if task.queued]


def kinds(actions: Sequence[Action]) -> list[str]:
    return [type(action).__name__ for action in actions]


# ----- push ---------------------------------------------------------------------------------


def test_push_without_workers_queues_in_order_and_sends_nothing() -> None:
    scheduler = Scheduler(Limits())
    assert scheduler.push(specs("a", "b", "c"), now=0.0) == []
    assert queue(scheduler) == ["a", "b", "c"]
    assert scheduler.queued == [3]
    assert scheduler.unresolved() == 3


def test_push_of_a_name_again_after_it_resolved() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.result_received("L-0", "a", success(), now=1.0)
    assert sent(scheduler.push(specs("a"), now=2.0)) == [("L-0", "a")]


def test_push_of_a_name_again_after_it_was_cancelled() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a"), now=0.0)
    scheduler.cancel(["a"], now=1.0)
    scheduler.push(specs("a"), now=2.0)
    assert queue(scheduler) == ["a"]
    assert scheduler.queued == [1]


def test_push_hands_tasks_to_idle_workers_one_each() -> None:
    scheduler = Scheduler(Limits(workers=2))
    connect(scheduler, 2)
    actions = scheduler.push(specs("a", "b"), now=1.0)
    assert sent(actions) == [("L-0", "a"), ("L-1", "b")]
    assert scheduler.queued == [0]


# ----- assignment and prefetch --------------------------------------------------------------


def test_connected_worker_takes_the_first_queued_task() -> None:
    pending = Pending(2)
    scheduler = Scheduler(Limits(workers=2), pending=pending)
    scheduler.push(specs("a", "b"), now=0.0)
    pending.count = 1
    actions = scheduler.worker_connected("L-0", "L", 0, 0, now=1.0)
    assert sent(actions) == [("L-0", "a")]
    task = scheduler.tasks["a"]
    assert (task.worker, task.attempts, task.started_at, task.queued) == ("L-0", 1, 1.0, False)
    assert scheduler.workers["L-0"].idle_since is None
    assert queue(scheduler) == ["b"]


def test_send_task_carries_the_spec_unchanged() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    task = spec("a", seconds_timeout=5.0, seed=99)
    (action,) = scheduler.push([task], now=0.0)
    assert action == SendTask("L-0", task)
    assert isinstance(action, SendTask) and action.task is task


def test_busy_worker_prefetches_one_task_when_no_more_workers_may_come() -> None:
    scheduler = Scheduler(Limits(workers=1))
    connect(scheduler)
    actions = scheduler.push(specs("a", "b", "c"), now=0.0)
    assert sent(actions) == [("L-0", "a"), ("L-0", "b")]
    assert held(scheduler, "L-0") == ["a", "b"]
    assert queue(scheduler) == ["c"]
    assert scheduler.tasks["b"].started_at is None


def test_prefetch_holds_at_most_one_extra_task() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs(*"abcdef"), now=0.0)
    assert len(scheduler.workers["L-0"].held) == 1 + PREFETCH
    assert sent(scheduler.push(specs("g"), now=1.0)) == []


def test_idle_workers_get_a_task_before_any_worker_prefetches() -> None:
    scheduler = Scheduler(Limits(workers=3))
    connect(scheduler, 3)
    actions = scheduler.push(specs("a", "b", "c", "d"), now=0.0)
    assert sent(actions) == [("L-0", "a"), ("L-1", "b"), ("L-2", "c"), ("L-0", "d")]


def test_no_prefetch_while_workers_on_their_way_will_take_the_queue() -> None:
    scheduler = Scheduler(Limits(workers=3), pending=Pending(2))
    connect(scheduler)
    actions = scheduler.push(specs("a", "b", "c"), now=1.0)
    # Two queued tasks, two workers on their way: nothing left over to prefetch.
    assert sent(actions) == [("L-0", "a")]
    assert queue(scheduler) == ["b", "c"]


def test_prefetch_only_the_tasks_beyond_the_workers_on_their_way() -> None:
    pending = Pending(1)
    scheduler = Scheduler(Limits(workers=2), pending=pending)
    connect(scheduler)
    actions = scheduler.push(specs("a", "b", "c"), now=1.0)
    assert sent(actions) == [("L-0", "a"), ("L-0", "b")]
    assert queue(scheduler) == ["c"]
    pending.count = 0
    assert sent(scheduler.worker_connected("L-1", "L", 1, 0, now=2.0)) == [("L-1", "c")]


def test_no_prefetch_while_more_workers_may_be_launched() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9, workers=2))
    connect(scheduler)
    actions = scheduler.push(specs("long-1", "long-2"), now=0.0)
    assert sent(actions) == [("L-0", "long-1")]
    assert queue(scheduler) == ["long-2"]
    assert scheduler.load() == Load(demand=(2,), supply=(1,), connected=1)
    connect(scheduler, launch="M")
    assert held(scheduler, "M-0") == ["long-2"]


def test_prefetch_once_no_more_workers_may_be_launched() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9, workers=2))
    connect(scheduler, count=2)
    scheduler.push(specs("a", "b", "c", "d", "e"), now=0.0)
    assert held(scheduler, "L-0") == ["a", "c"]
    assert held(scheduler, "L-1") == ["b", "d"]
    assert queue(scheduler) == ["e"]


def test_no_prefetch_with_seconds_wall() -> None:
    scheduler = Scheduler(Limits(seconds_wall=100.0))
    connect(scheduler)
    assert sent(scheduler.push(specs("a", "b"), now=0.0)) == [("L-0", "a")]
    assert queue(scheduler) == ["b"]


def test_prefetch_never_goes_beyond_tasks_max() -> None:
    scheduler = Scheduler(Limits(tasks_max=1))
    connect(scheduler)
    assert sent(scheduler.push(specs("a", "b"), now=0.0)) == [("L-0", "a")]
    assert queue(scheduler) == ["b"]


def test_tasks_max_counts_finished_and_held_tasks() -> None:
    scheduler = Scheduler(Limits(tasks_max=3))
    connect(scheduler)
    assert sent(scheduler.push(specs(*"abcde"), now=0.0)) == [("L-0", "a"), ("L-0", "b")]
    actions = scheduler.result_received("L-0", "a", success(), now=1.0)
    assert sent(actions) == [("L-0", "c")]
    assert sent(scheduler.result_received("L-0", "b", success(), now=2.0)) == []
    assert held(scheduler, "L-0") == ["c"]
    assert queue(scheduler) == ["d", "e"]


def test_result_starts_the_prefetched_task_and_refills() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)
    actions = scheduler.result_received("L-0", "a", success(), now=5.0)
    assert sent(actions) == [("L-0", "c")]
    assert held(scheduler, "L-0") == ["b", "c"]
    assert scheduler.tasks["b"].started_at == 5.0
    assert scheduler.tasks["c"].started_at is None


def test_worker_that_finishes_with_an_empty_queue_becomes_idle() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    assert sent(scheduler.result_received("L-0", "a", success(), now=3.0)) == []
    assert scheduler.workers["L-0"].idle_since == 3.0
    assert held(scheduler, "L-0") == []


# ----- results ------------------------------------------------------------------------------


def test_result_resolves_with_the_outcome_attempts_and_labels() -> None:
    scheduler = Scheduler(Limits())
    scheduler.worker_connected(
        "L-0",
        "L",
        0,
        0,
        now=0.0,
        label="job-1:0",
        launch_label="job-1",
        host="ip-10-0-0-1",
        pid=42,
    )
    scheduler.push([spec("a", seed=1234)], now=0.0)
    outcome = Outcome("success", body=b"x", warnings=("UserWarning: careful",), seconds=2.5)
    actions = scheduler.result_received("L-0", "a", outcome, now=3.0)
    assert actions == [Resolve("a", outcome, attempts=1, worker="job-1:0", launch="job-1")]
    assert resolved(actions)[0].outcome is outcome
    assert scheduler.unresolved() == 0
    assert "a" not in scheduler.tasks
    worker = scheduler.workers["L-0"]
    assert (worker.host, worker.pid, worker.label, worker.launch_label) == (
        "ip-10-0-0-1",
        42,
        "job-1:0",
        "job-1",
    )


def test_labels_default_to_the_worker_and_launch_ids() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler, launch="job-1")
    scheduler.push(specs("a"), now=0.0)
    (result,) = resolved(scheduler.result_received("job-1-0", "a", success(), now=1.0))
    assert (result.worker, result.launch) == ("job-1-0", "job-1")


def test_every_resolve_that_names_a_worker_uses_its_labels() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9, crashes_max=1, workers=3))
    for index in range(3):
        scheduler.worker_connected(
            f"L-{index}", "L", index, 0, now=0.0, label=f"job:{index}", launch_label="job"
        )
    scheduler.push([spec("timed", seconds_timeout=1.0), spec("cancelled"), spec("crashed")], 0.0)
    labels = [("job", "job:0"), ("job", "job:1"), ("job", "job:2")]
    cancel = resolved(scheduler.cancel(["cancelled"], now=0.5))
    due = 1.0 + SECONDS_TIMEOUT_GRACE
    for worker in scheduler.workers:
        scheduler.heard_from(worker, now=due)
    timeout = resolved(scheduler.tick(now=due))
    lost = resolved(crash(scheduler, "L-2", now=due, cause="other"))
    found = [(r.launch, r.worker) for r in timeout + cancel + lost]
    assert found == labels
    assert [r.outcome.status for r in timeout + cancel + lost] == ["timeout", "cancel", "crash"]


def test_result_then_the_worker_gets_the_next_task() -> None:
    scheduler = Scheduler(Limits(workers=3), pending=Pending(2))
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)  # b, c wait for the workers on their way
    actions = scheduler.result_received("L-0", "a", success(), now=1.0)
    assert kinds(actions) == ["Resolve", "SendTask"]
    assert sent(actions) == [("L-0", "b")]


def test_error_result_counts_as_an_error_of_the_worker() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    outcome = Outcome("error", body=b"exc", error="ValueError: no", traceback="Traceback ...")
    (result,) = resolved(scheduler.result_received("L-0", "a", outcome, now=1.0))
    assert result.outcome == outcome
    assert scheduler.workers["L-0"].errors == 1


def test_worker_reported_timeout_resolves_timeout() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push([spec("a", seconds_timeout=1.0)], now=0.0)
    outcome = Outcome("timeout", error="timed out after 1 s", seconds=1.0)
    (result,) = resolved(scheduler.result_received("L-0", "a", outcome, now=1.1))
    assert result.outcome == outcome
    assert scheduler.workers["L-0"].errors == 1


def test_result_updates_the_worker_counters() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.result_received("L-0", "a", success(seconds=1.5), now=2.0)
    scheduler.result_received("L-0", "b", Outcome("error", seconds=0.5), now=3.0)
    worker = scheduler.workers["L-0"]
    assert (worker.tasks, worker.errors, worker.seconds_busy) == (2, 1, 2.0)
    assert worker.last_seen == 3.0


def test_result_from_an_unknown_worker_is_dropped() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    assert scheduler.result_received("X-0", "a", success(), now=1.0) == []
    assert held(scheduler, "L-0") == ["a"]


def test_result_for_a_task_the_worker_does_not_hold_is_dropped() -> None:
    scheduler = Scheduler(Limits(workers=2))
    connect(scheduler, 2)
    scheduler.push(specs("a", "b"), now=0.0)
    assert resolved(scheduler.result_received("L-1", "a", success(), now=1.0)) == []
    assert resolved(scheduler.result_received("L-0", "zzz", success(), now=1.0)) == []
    assert held(scheduler, "L-0") == ["a"]
    assert scheduler.workers["L-1"].tasks == 0
    assert scheduler.unresolved() == 2


def test_late_result_from_a_lost_worker_is_dropped_and_the_task_resolves_once() -> None:
    scheduler = Scheduler(Limits(workers=2))
    connect(scheduler, 2)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.result_received("L-1", "b", success(), now=0.5)
    actions = crash(scheduler, "L-0", now=1.0, cause="host")
    assert sent(actions) == [("L-1", "a")]
    assert scheduler.result_received("L-0", "a", success(), now=2.0) == []
    fresh = Outcome("success", body=b"fresh")
    (result,) = resolved(scheduler.result_received("L-1", "a", fresh, now=3.0))
    assert (result.outcome, result.worker, result.attempts) == (fresh, "L-1", 2)
    assert resolved(scheduler.result_received("L-1", "a", success(), now=4.0)) == []


# ----- crashes: investigation and verdict ---------------------------------------------------


def test_lost_worker_running_a_task_is_investigated_before_any_retry() -> None:
    scheduler = Scheduler(Limits(seconds_wall=1000.0))  # no prefetch
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)
    assert scheduler.worker_lost("L-0", now=1.0) == [Investigate("L-0", "L", 0)]
    assert queue(scheduler) == ["b", "c"]
    task = scheduler.tasks["a"]
    assert (task.queued, task.worker, task.started_at) == (False, None, None)
    assert (task.attempts, task.crashes, task.reclaims) == (1, 0, 0)
    assert scheduler.unresolved() == 3
    assert scheduler.workers == {}
    assert [(w.id, w.status) for w in scheduler.history] == [("L-0", "crashed")]


def test_verdict_puts_the_task_back_at_the_front_of_the_queue() -> None:
    scheduler = Scheduler(Limits(seconds_wall=1000.0))
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    assert scheduler.worker_ended("L-0", "other", "exit code 1", now=2.0) == []
    assert queue(scheduler) == ["a", "b", "c"]
    task = scheduler.tasks["a"]
    assert (task.crashes, task.level, task.last_crash, task.queued) == (1, 0, "exit code 1", True)
    assert scheduler.awaiting == {}


def test_verdict_gives_the_task_to_an_idle_worker() -> None:
    scheduler = Scheduler(Limits(seconds_wall=1000.0, workers=2))
    connect(scheduler, 2)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.result_received("L-1", "b", success(), now=0.5)
    assert scheduler.worker_lost("L-0", now=1.0) == [Investigate("L-0", "L", 0)]
    assert sent(scheduler.worker_ended("L-0", "other", "exit code 1", now=1.5)) == [("L-1", "a")]


def test_lost_worker_returns_prefetched_tasks_at_once_without_penalty_in_order() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a", "b", "c", "d"), now=0.0)
    assert held(scheduler, "L-0") == ["a", "b"]
    scheduler.worker_lost("L-0", now=1.0)
    assert queue(scheduler) == ["b", "c", "d"]
    b = scheduler.tasks["b"]
    assert (b.crashes, b.attempts, b.worker, b.queued) == (0, 0, None, True)
    scheduler.worker_ended("L-0", "other", "exit code 1", now=2.0)
    assert queue(scheduler) == ["a", "b", "c", "d"]
    a = scheduler.tasks["a"]
    assert (a.crashes, a.attempts) == (1, 1)


def test_attempts_count_the_workers_that_started_the_task() -> None:
    scheduler = Scheduler(Limits(crashes_max=5))
    scheduler.push(specs("a"), now=0.0)
    connect(scheduler, launch="L0", now=0.0)
    crash(scheduler, "L0-0", now=1.0, cause="other")
    connect(scheduler, launch="L1", now=1.0)
    crash(scheduler, "L1-0", now=2.0, cause="host")
    connect(scheduler, launch="L2", now=2.0)
    scheduler.push(specs("b"), now=2.5)  # prefetched behind "a"
    (result,) = resolved(scheduler.result_received("L2-0", "a", success(), now=3.0))
    assert (result.attempts, result.worker, result.launch) == (3, "L2-0", "L2")
    assert scheduler.tasks["b"].attempts == 1


def test_task_resolves_crash_after_crashes_max() -> None:
    scheduler = Scheduler(Limits(crashes_max=2))
    scheduler.push(specs("a"), now=0.0)
    connect(scheduler, launch="L0")
    crash(scheduler, "L0-0", now=1.0, cause="other", reason="exit code 1")
    scheduler.worker_connected("L1-0", "L1", 0, 0, now=2.0, label="job-9", launch_label="job-9")
    assert scheduler.worker_lost("L1-0", now=3.0) == [Investigate("L1-0", "L1", 0)]
    actions = scheduler.worker_ended("L1-0", "other", "exit code 137", now=4.0)
    message = "the worker crashed 2 time(s) running this task; last: exit code 137"
    outcome = Outcome("crash", error=message)
    assert actions == [Resolve("a", outcome, attempts=2, worker="job-9", launch="job-9")]
    assert scheduler.unresolved() == 0
    assert scheduler.queued == [0]
    assert scheduler.awaiting == {}


def test_crashes_max_of_one_resolves_at_the_first_counted_crash() -> None:
    scheduler = Scheduler(Limits(crashes_max=1))
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)
    assert kinds(scheduler.worker_lost("L-0", now=1.0)) == ["Investigate"]
    assert queue(scheduler) == ["b", "c"]
    actions = scheduler.worker_ended("L-0", None, "unknown", now=2.0)
    assert [(r.name, r.outcome.status) for r in resolved(actions)] == [("a", "crash")]
    assert queue(scheduler) == ["b", "c"]


def test_clean_exit_with_nothing_held() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    assert scheduler.worker_lost("L-0", now=1.0) == []
    assert scheduler.workers == {}
    (departed,) = list(scheduler.history)
    assert (departed.id, departed.status) == ("L-0", "exited")
    assert scheduler.load() == Load(demand=(0,), supply=(0,), connected=0)


def test_losing_an_unknown_or_departed_worker_does_nothing() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.worker_lost("L-0", now=1.0)
    assert scheduler.worker_lost("L-0", now=2.0) == []
    assert scheduler.worker_lost("nobody", now=2.0) == []
    assert len(list(scheduler.history)) == 1


def test_verdict_on_a_worker_not_awaiting_one_does_nothing() -> None:
    scheduler = Scheduler(Limits(workers=2))
    connect(scheduler, 2)
    scheduler.push(specs("a"), now=0.0)
    scheduler.worker_lost("L-1", now=1.0)  # it held nothing
    assert scheduler.worker_ended("L-1", "memory", "OutOfMemoryError", now=1.0) == []
    assert scheduler.worker_ended("nobody", "memory", "OutOfMemoryError", now=1.0) == []
    scheduler.worker_lost("L-0", now=2.0)
    scheduler.worker_ended("L-0", "other", "exit code 1", now=2.0)
    assert scheduler.worker_ended("L-0", "other", "exit code 1", now=3.0) == []  # twice
    task = scheduler.tasks["a"]
    assert (task.crashes, task.level, task.queued) == (1, 0, True)


def test_host_reclaims_retry_at_the_same_level_without_counting() -> None:
    scheduler = Scheduler(Limits(levels=3, crashes_max=1))
    scheduler.push(specs("a"), now=0.0)
    for round_ in range(RECLAIMS_MAX):
        now = float(round_)
        assert sent(connect(scheduler, launch=f"R{round_}", now=now)) == [(f"R{round_}-0", "a")]
        actions = crash(scheduler, f"R{round_}-0", now=now, cause="host", reason="Spot reclaim")
        assert resolved(actions) == []
        task = scheduler.tasks["a"]
        assert (task.crashes, task.reclaims, task.level) == (0, round_ + 1, 0)
    assert queue(scheduler) == ["a"]


def test_host_reclaims_count_as_crashes_once_past_reclaims_max() -> None:
    scheduler = Scheduler(Limits(levels=3, crashes_max=2))
    scheduler.push(specs("a"), now=0.0)
    for round_ in range(RECLAIMS_MAX + 1):
        connect(scheduler, launch=f"R{round_}", now=float(round_))
        crash(scheduler, f"R{round_}-0", now=float(round_), cause="host")
    task = scheduler.tasks["a"]
    assert (task.crashes, task.reclaims, task.level) == (1, RECLAIMS_MAX, 0)  # counted, stays
    connect(scheduler, launch="last", now=100.0)
    actions = crash(scheduler, "last-0", now=100.0, cause="host", reason="host lost")
    (result,) = resolved(actions)
    assert result.outcome.status == "crash"
    assert result.outcome.error == (
        "the worker crashed 2 time(s) running this task; last: host lost"
    )
    assert result.attempts == RECLAIMS_MAX + 2


def test_memory_kill_climbs_one_level_per_kill_up_to_the_top() -> None:
    scheduler = Scheduler(Limits(levels=3, crashes_max=10))
    scheduler.push(specs("a"), now=0.0)
    seen: list[tuple[int, int]] = []
    for round_, level in enumerate([0, 1, 2, 2]):
        assert sent(connect(scheduler, level=level, launch=f"M{round_}")) == [(f"M{round_}-0", "a")]
        crash(scheduler, f"M{round_}-0", now=float(round_), cause="memory")
        task = scheduler.tasks["a"]
        seen.append((task.level, task.crashes))
    assert seen == [(1, 1), (2, 2), (2, 3), (2, 4)]
    assert scheduler.queued == [0, 0, 1]


def test_other_cause_counts_and_stays_at_its_level() -> None:
    scheduler = Scheduler(Limits(levels=3, crashes_max=10))
    scheduler.push(specs("a"), now=0.0)
    for round_ in range(3):
        connect(scheduler, launch=f"O{round_}")
        crash(scheduler, f"O{round_}-0", now=float(round_), cause="other", reason="exit code 1")
    task = scheduler.tasks["a"]
    assert (task.level, task.crashes, task.reclaims, task.last_crash) == (0, 3, 0, "exit code 1")
    assert queue(scheduler, 0) == ["a"]


def test_unknown_cause_climbs_a_level_and_counts() -> None:
    scheduler = Scheduler(Limits(levels=2, crashes_max=10))
    scheduler.push(specs("a"), now=0.0)
    connect(scheduler)
    crash(scheduler, "L-0", now=1.0, cause=None, reason="no idea")
    task = scheduler.tasks["a"]
    assert (task.level, task.crashes) == (1, 1)


def test_no_verdict_within_seconds_verdict_decides_as_unknown() -> None:
    scheduler = Scheduler(Limits(levels=2, crashes_max=10))
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    assert scheduler.tick(now=1.0 + SECONDS_VERDICT - 0.001) == []
    assert scheduler.tasks["a"].crashes == 0
    assert scheduler.tick(now=1.0 + SECONDS_VERDICT) == []
    task = scheduler.tasks["a"]
    assert (task.level, task.crashes, task.queued) == (1, 1, True)
    assert task.last_crash == "worker L-0 was lost; its launcher did not say why"
    assert scheduler.awaiting == {}
    # The launcher's word, come too late, changes nothing.
    assert scheduler.worker_ended("L-0", "host", "reclaimed", now=2.0 + SECONDS_VERDICT) == []
    assert (task.level, task.crashes, task.reclaims) == (1, 1, 0)


def test_no_verdict_can_use_up_the_last_crash() -> None:
    scheduler = Scheduler(Limits(crashes_max=1))
    scheduler.worker_connected("L-0", "L", 0, 0, now=0.0, label="job:0", launch_label="job")
    scheduler.push(specs("a"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    (result,) = resolved(scheduler.tick(now=1.0 + SECONDS_VERDICT))
    assert (result.name, result.outcome.status, result.worker, result.launch) == (
        "a",
        "crash",
        "job:0",
        "job",
    )
    assert result.outcome.error is not None
    assert result.outcome.error.endswith(
        "last: worker job:0 was lost; its launcher did not say why"
    )
    assert scheduler.unresolved() == 0


def test_verdict_for_a_cancelled_task_does_nothing() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    actions = scheduler.cancel(["a"], now=1.5)
    assert actions == [Resolve("a", CANCELLED, attempts=1)]
    assert scheduler.worker_ended("L-0", "memory", "OutOfMemoryError", now=2.0) == []
    assert scheduler.unresolved() == 0
    assert scheduler.queued == [0]


def test_cancelled_task_awaiting_a_verdict_is_no_longer_demand() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    scheduler.cancel(None, now=1.5)
    assert scheduler.load() == Load(demand=(0,), supply=(0,), connected=0)


# ----- resource levels ----------------------------------------------------------------------


def test_memory_killed_task_needs_the_next_level() -> None:
    scheduler = Scheduler(Limits(levels=3))
    connect(scheduler, launch="A")
    scheduler.push(specs("a"), now=0.0)
    crash(scheduler, "A-0", now=1.0, cause="memory")
    assert scheduler.tasks["a"].level == 1
    assert (scheduler.queued, queue(scheduler, 1)) == ([0, 1, 0], ["a"])
    assert sent(connect(scheduler, launch="B", level=0, now=2.0)) == []
    assert sent(connect(scheduler, launch="C", level=1, now=3.0)) == [("C-0", "a")]


def test_task_killed_twice_for_memory_runs_only_on_the_top_level() -> None:
    scheduler = Scheduler(Limits(levels=3))
    scheduler.push(specs("a"), now=0.0)
    connect(scheduler, launch="A", level=0)
    crash(scheduler, "A-0", now=1.0, cause="memory")
    connect(scheduler, launch="B", level=1, now=1.0)
    crash(scheduler, "B-0", now=2.0, cause="memory")
    assert scheduler.tasks["a"].level == 2
    assert sent(connect(scheduler, launch="C", level=1, now=3.0)) == []
    assert sent(connect(scheduler, launch="D", level=2, now=3.0)) == [("D-0", "a")]


def test_with_one_level_a_memory_killed_task_stays_at_level_0() -> None:
    scheduler = Scheduler(Limits(levels=1))
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    crash(scheduler, "L-0", now=1.0, cause="memory")
    assert scheduler.tasks["a"].level == 0
    assert sent(connect(scheduler, launch="M", now=2.0)) == [("M-0", "a")]


def test_tasks_that_never_crashed_keep_running_on_level_0_workers() -> None:
    scheduler = Scheduler(Limits(levels=3, seconds_wall=1000.0))
    connect(scheduler, launch="A")
    scheduler.push(specs("a", "b", "c"), now=0.0)
    crash(scheduler, "A-0", now=1.0, cause="memory")  # "a" now needs level 1
    actions = connect(scheduler, launch="B", level=0, now=2.0)
    assert sent(actions) == [("B-0", "b")]
    assert queue(scheduler, 0) == ["c"]
    assert queue(scheduler, 1) == ["a"]


def test_prefetched_tasks_keep_their_level_after_a_crash() -> None:
    scheduler = Scheduler(Limits(levels=3))
    connect(scheduler)
    scheduler.push(specs("a", "b"), now=0.0)
    crash(scheduler, "L-0", now=1.0, cause="memory")
    assert (scheduler.tasks["a"].level, scheduler.tasks["b"].level) == (1, 0)
    assert (queue(scheduler, 0), queue(scheduler, 1)) == (["b"], ["a"])


def test_higher_level_worker_prefers_its_own_level_then_takes_lower_work() -> None:
    scheduler = Scheduler(Limits(levels=2, seconds_wall=1000.0))
    connect(scheduler, launch="A")
    scheduler.push(specs("a", "b"), now=0.0)
    crash(scheduler, "A-0", now=1.0, cause="memory")  # "a" needs level 1, "b" level 0
    assert sent(connect(scheduler, launch="B", level=1, now=2.0)) == [("B-0", "a")]
    actions = scheduler.result_received("B-0", "a", success(), now=3.0)
    assert sent(actions) == [("B-0", "b")]


# ----- cancel -------------------------------------------------------------------------------


def test_cancel_of_queued_tasks() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a", "b", "c"), now=0.0)
    actions = scheduler.cancel(["b", "c"], now=1.0)
    assert actions == [Resolve("b", CANCELLED), Resolve("c", CANCELLED)]
    assert queue(scheduler) == ["a"]
    assert scheduler.queued == [1]
    assert sent(connect(scheduler)) == [("L-0", "a")]


def test_cancel_of_a_running_task_tells_the_worker_and_resolves() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    actions = scheduler.cancel(["a"], now=1.0)
    assert actions == [
        SendCancel("L-0", "a"),
        Resolve("a", CANCELLED, attempts=1, worker="L-0", launch="L"),
    ]
    assert scheduler.unresolved() == 0


def test_result_of_a_cancelled_task_is_dropped_and_the_worker_moves_on() -> None:
    scheduler = Scheduler(Limits(workers=2), pending=Pending(1))
    connect(scheduler)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.cancel(["a"], now=1.0)
    assert held(scheduler, "L-0") == ["a"]  # until the worker answers
    actions = scheduler.result_received("L-0", "a", CANCELLED, now=2.0)
    assert resolved(actions) == []
    assert sent(actions) == [("L-0", "b")]
    assert scheduler.workers["L-0"].tasks == 1


def test_cancel_of_a_prefetched_task_keeps_the_running_one() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a", "b"), now=0.0)
    actions = scheduler.cancel(["b"], now=1.0)
    assert actions == [
        SendCancel("L-0", "b"),
        Resolve("b", CANCELLED, attempts=0, worker="L-0", launch="L"),  # never started
    ]
    assert scheduler.tasks["a"].started_at == 0.0
    scheduler.worker_lost("L-0", now=2.0)
    scheduler.worker_ended("L-0", "other", "exit code 1", now=2.0)
    assert queue(scheduler) == ["a"]
    assert resolved(scheduler.cancel(["a"], now=3.0))[0].attempts == 1


def test_cancel_of_everything() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)
    actions = scheduler.cancel(None, now=1.0)
    assert {r.name for r in resolved(actions)} == {"a", "b", "c"}
    assert {a.name for a in actions if isinstance(a, SendCancel)} == {"a", "b"}
    assert scheduler.unresolved() == 0
    assert scheduler.queued == [0]
    assert scheduler.cancel(None, now=2.0) == []


def test_cancel_ignores_unknown_and_resolved_names() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.result_received("L-0", "a", success(), now=1.0)
    assert scheduler.cancel(["a", "nope"], now=2.0) == []


def test_cancelled_queued_task_is_skipped_by_the_next_worker() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.cancel(["a"], now=0.5)
    assert sent(connect(scheduler, now=1.0)) == [("L-0", "b")]
    assert scheduler.queued == [0]


def test_cancel_naming_a_task_twice_resolves_it_once() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a"), now=0.0)
    assert scheduler.cancel(["a", "a"], now=1.0) == [Resolve("a", CANCELLED)]


# ----- fail_queued --------------------------------------------------------------------------


def test_fail_queued_resolves_every_queued_task_with_the_reason() -> None:
    scheduler = Scheduler(Limits(levels=2, seconds_wall=1000.0, workers=2))
    connect(scheduler, 2, launch="A")
    scheduler.push(specs("a", "b", "c", "d"), now=0.0)
    crash(scheduler, "A-1", now=1.0, cause="memory")  # "b" needs level 1 now
    assert (queue(scheduler, 0), queue(scheduler, 1)) == (["c", "d"], ["b"])
    reason = "no worker could start: 5 launches in a row failed"
    actions = scheduler.fail_queued(reason)
    failed = Outcome("error", error=reason)
    assert actions == [
        Resolve("c", failed),
        Resolve("d", failed),
        Resolve("b", failed, attempts=1),
    ]
    assert scheduler.queued == [0, 0]
    assert list(scheduler.tasks) == ["a"]  # the running task is left to its worker
    actions = scheduler.result_received("A-0", "a", success(), now=2.0)
    assert [r.name for r in resolved(actions)] == ["a"]


def test_fail_queued_leaves_tasks_awaiting_a_verdict() -> None:
    scheduler = Scheduler(Limits(seconds_wall=1000.0))
    connect(scheduler)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    assert [r.name for r in resolved(scheduler.fail_queued("hopeless"))] == ["b"]
    assert scheduler.unresolved() == 1
    scheduler.worker_ended("L-0", "other", "exit code 1", now=2.0)
    assert queue(scheduler) == ["a"]


def test_fail_queued_with_nothing_queued_does_nothing() -> None:
    scheduler = Scheduler(Limits())
    assert scheduler.fail_queued("hopeless") == []
    scheduler.push(specs("a"), now=0.0)
    scheduler.cancel(["a"], now=0.0)  # a cancelled entry left in the queue is skipped
    assert scheduler.fail_queued("hopeless") == []


# ----- timeouts -----------------------------------------------------------------------------


def test_timeout_backstop_waits_for_the_grace_period() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler)
    scheduler.push([spec("a", seconds_timeout=10.0)], now=0.0)
    almost = 10.0 + SECONDS_TIMEOUT_GRACE - 0.001
    scheduler.heard_from("L-0", now=almost)
    assert scheduler.tick(now=almost) == []


def test_timeout_backstop_resolves_timeout_and_disconnects() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler)
    scheduler.push([spec("a", seconds_timeout=10.0)], now=1.0)
    due = 1.0 + 10.0 + SECONDS_TIMEOUT_GRACE
    scheduler.heard_from("L-0", now=due)
    actions = scheduler.tick(now=due)
    message = f"no answer {10.0 + SECONDS_TIMEOUT_GRACE:g} s after the task started"
    assert actions == [
        Resolve(
            "a",
            Outcome("timeout", error=message, seconds=due - 1.0),
            attempts=1,
            worker="L-0",
            launch="L",
        ),
        Disconnect("L-0", "task a overran its timeout"),
    ]
    assert scheduler.unresolved() == 0
    scheduler.heard_from("L-0", now=due + 1.0)
    assert kinds(scheduler.tick(now=due + 1.0)) == ["Disconnect"]  # until it is lost


def test_timeout_backstop_counts_from_when_a_prefetched_task_started() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler)
    scheduler.push([spec("a"), spec("b", seconds_timeout=10.0)], now=0.0)
    scheduler.result_received("L-0", "a", success(), now=100.0)
    due = 100.0 + 10.0 + SECONDS_TIMEOUT_GRACE
    scheduler.heard_from("L-0", now=due)
    assert scheduler.tick(now=due - 0.001) == []
    assert [r.name for r in resolved(scheduler.tick(now=due))] == ["b"]


def test_timeout_backstop_ignores_tasks_without_a_timeout() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.heard_from("L-0", now=10_000.0)
    assert scheduler.tick(now=10_000.0) == []


def test_timeout_backstop_returns_the_prefetched_task_without_penalty() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9, crashes_max=1))
    connect(scheduler)
    scheduler.push([spec("a", seconds_timeout=1.0), spec("b")], now=0.0)
    assert held(scheduler, "L-0") == ["a", "b"]
    due = 1.0 + SECONDS_TIMEOUT_GRACE
    scheduler.heard_from("L-0", now=due)
    scheduler.tick(now=due)
    # The Disconnect took effect; the resolved task is not investigated.
    assert scheduler.worker_lost("L-0", now=due + 1.0) == []
    b = scheduler.tasks["b"]
    assert (b.crashes, b.attempts, b.queued) == (0, 0, True)
    assert scheduler.awaiting == {}


def test_worker_written_off_by_the_timeout_backstop_takes_no_more_tasks() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler)
    scheduler.push([spec("a", seconds_timeout=1.0)], now=0.0)
    due = 1.0 + SECONDS_TIMEOUT_GRACE
    scheduler.heard_from("L-0", now=due)
    scheduler.tick(now=due)
    assert sent(scheduler.push(specs("b"), now=due + 0.5)) == []
    scheduler.worker_lost("L-0", now=due + 1.0)
    b = scheduler.tasks["b"]
    assert (b.crashes, b.attempts, b.queued) == (0, 0, True)


def test_late_result_after_the_timeout_backstop_is_dropped() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler)
    scheduler.push([spec("a", seconds_timeout=1.0)], now=0.0)
    due = 1.0 + SECONDS_TIMEOUT_GRACE
    scheduler.heard_from("L-0", now=due)
    scheduler.tick(now=due)
    assert resolved(scheduler.result_received("L-0", "a", success(), now=due + 0.1)) == []


# ----- exits: idle, tasks_max, wall time, silence -------------------------------------------


def test_idle_worker_is_told_to_exit_once() -> None:
    scheduler = Scheduler(Limits(seconds_idle=30.0))
    connect(scheduler, now=0.0)
    scheduler.heard_from("L-0", now=29.0)
    assert scheduler.tick(now=29.0) == []
    scheduler.heard_from("L-0", now=30.0)
    assert scheduler.tick(now=30.0) == [SendExit("L-0", "idle for seconds_idle=30")]
    scheduler.heard_from("L-0", now=40.0)
    assert scheduler.tick(now=40.0) == []
    assert scheduler.workers["L-0"].retiring == "idle for seconds_idle=30"


def test_idle_clock_starts_when_the_last_task_finishes() -> None:
    scheduler = Scheduler(Limits(seconds_idle=30.0))
    connect(scheduler, now=0.0)
    scheduler.push(specs("a"), now=1.0)
    scheduler.heard_from("L-0", now=50.0)
    assert scheduler.tick(now=50.0) == []
    scheduler.result_received("L-0", "a", success(), now=50.0)
    assert scheduler.tick(now=79.0) == []
    assert kinds(scheduler.tick(now=80.0)) == ["SendExit"]


def test_exiting_worker_takes_no_new_work() -> None:
    scheduler = Scheduler(Limits(seconds_idle=30.0))
    connect(scheduler, now=0.0)
    scheduler.tick(now=30.0)
    assert scheduler.push(specs("a"), now=31.0) == []
    assert scheduler.load() == Load(demand=(1,), supply=(0,), connected=1)


def test_worker_that_ran_tasks_max_is_told_to_exit_after_its_result() -> None:
    scheduler = Scheduler(Limits(tasks_max=2))
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)
    assert kinds(scheduler.result_received("L-0", "a", success(), now=1.0)) == ["Resolve"]
    actions = scheduler.result_received("L-0", "b", success(), now=2.0)
    assert actions[1:] == [SendExit("L-0", "ran tasks_max=2 tasks")]
    assert queue(scheduler) == ["c"]
    assert scheduler.tick(now=3.0) == []


def test_wall_time_exit_waits_for_the_current_task() -> None:
    scheduler = Scheduler(Limits(seconds_wall=100.0, seconds_idle=1e9))
    connect(scheduler, now=0.0)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.heard_from("L-0", now=100.0)
    assert scheduler.tick(now=100.0) == []
    assert scheduler.workers["L-0"].retiring == "lived seconds_wall=100"
    actions = scheduler.result_received("L-0", "a", success(), now=120.0)
    assert kinds(actions) == ["Resolve", "SendExit"]
    assert queue(scheduler) == ["b"]


def test_worker_past_its_wall_time_starts_no_task_even_before_a_tick() -> None:
    scheduler = Scheduler(Limits(seconds_wall=100.0, seconds_idle=1e9))
    connect(scheduler, now=0.0)
    scheduler.push(specs("a", "b"), now=0.0)
    actions = scheduler.result_received("L-0", "a", success(), now=101.0)
    assert sent(actions) == []
    assert actions[-1] == SendExit("L-0", "lived seconds_wall=100")
    assert queue(scheduler) == ["b"]


def test_idle_worker_past_its_wall_time_gets_no_pushed_task() -> None:
    scheduler = Scheduler(Limits(seconds_wall=100.0, seconds_idle=1e9))
    connect(scheduler, now=0.0)
    assert scheduler.push(specs("a"), now=100.0) == []
    scheduler.heard_from("L-0", now=100.0)
    assert kinds(scheduler.tick(now=100.0)) == ["SendExit"]


def test_silent_idle_worker_is_disconnected() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler, now=0.0)
    assert scheduler.tick(now=SECONDS_SILENCE) == []
    actions = scheduler.tick(now=SECONDS_SILENCE + 1.0)
    assert actions == [Disconnect("L-0", f"silent for {SECONDS_SILENCE + 1.0:.0f} s")]


def test_heartbeats_keep_a_worker_from_being_silent() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler, now=0.0)
    scheduler.heard_from("L-0", now=50.0)
    scheduler.heard_from("nobody", now=60.0)  # unknown: ignored
    assert scheduler.tick(now=50.0 + SECONDS_SILENCE) == []
    assert list(scheduler.workers) == ["L-0"]
    assert scheduler.workers["L-0"].last_seen == 50.0


def test_silent_worker_takes_no_more_tasks_before_it_is_lost() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9, crashes_max=1))
    connect(scheduler, now=0.0)
    scheduler.tick(now=SECONDS_SILENCE + 1.0)
    assert scheduler.push(specs("a"), now=SECONDS_SILENCE + 2.0) == []
    assert scheduler.load() == Load(demand=(1,), supply=(0,), connected=1)
    assert scheduler.worker_lost("L-0", now=SECONDS_SILENCE + 3.0) == []
    assert (scheduler.tasks["a"].crashes, scheduler.tasks["a"].queued) == (0, True)


def test_silent_busy_worker_is_kept_a_task_may_hold_its_interpreter() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler, now=0.0)
    scheduler.push(specs("a"), now=0.0)
    assert scheduler.tick(now=10 * SECONDS_SILENCE) == []
    result = resolved(scheduler.result_received("L-0", "a", success(), now=11 * SECONDS_SILENCE))
    assert [r.name for r in result] == ["a"]
    assert kinds(scheduler.tick(now=12 * SECONDS_SILENCE + 1.0)) == ["Disconnect"]  # now idle


# ----- load ---------------------------------------------------------------------------------


def test_load_of_an_empty_scheduler() -> None:
    scheduler = Scheduler(Limits(levels=2))
    assert scheduler.load() == Load(demand=(0, 0), supply=(0, 0), connected=0)


def test_load_with_only_queued_work() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a", "b"), now=0.0)
    assert scheduler.load() == Load(demand=(2,), supply=(0,), connected=0)


def test_load_counts_running_tasks_as_demand_but_not_prefetched_ones() -> None:
    scheduler = Scheduler(Limits(workers=2))
    connect(scheduler, 2)
    scheduler.push(specs("a", "b", "c", "d", "e"), now=0.0)
    # "a" and "b" run, "c" and "d" are prefetched behind them, "e" waits.
    assert scheduler.load() == Load(demand=(3,), supply=(2,), connected=2)


def test_load_leaves_out_retiring_workers_but_counts_them_connected() -> None:
    scheduler = Scheduler(Limits(seconds_wall=10.0, seconds_idle=1e9, workers=2))
    connect(scheduler, 2)
    scheduler.push(specs("a"), now=0.0)
    scheduler.heard_from("L-0", now=10.0)
    scheduler.heard_from("L-1", now=10.0)
    scheduler.tick(now=10.0)
    assert scheduler.load() == Load(demand=(0,), supply=(0,), connected=2)


def test_load_counts_tasks_awaiting_a_verdict_as_demand() -> None:
    scheduler = Scheduler(Limits(levels=2, seconds_wall=1000.0))
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    assert scheduler.load() == Load(demand=(1, 0), supply=(0, 0), connected=0)
    scheduler.worker_ended("L-0", "memory", "OutOfMemoryError", now=2.0)
    assert scheduler.load() == Load(demand=(0, 1), supply=(0, 0), connected=0)


def test_load_shows_demand_at_the_level_the_task_needs() -> None:
    scheduler = Scheduler(Limits(levels=3, seconds_wall=1000.0))  # no prefetch
    connect(scheduler, launch="A")
    scheduler.push(specs("a", "b"), now=0.0)
    crash(scheduler, "A-0", now=1.0, cause="memory")
    assert scheduler.load() == Load(demand=(1, 1, 0), supply=(0, 0, 0), connected=0)
    connect(scheduler, launch="B", level=1, now=2.0)
    assert scheduler.load() == Load(demand=(1, 1, 0), supply=(0, 1, 0), connected=1)


# ----- history ------------------------------------------------------------------------------


def test_departed_workers_are_kept_oldest_first_with_what_they_did() -> None:
    scheduler = Scheduler(Limits(workers=2))
    connect(scheduler, 2)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.result_received("L-0", "a", success(seconds=2.0), now=2.0)
    scheduler.worker_lost("L-0", now=3.0)
    scheduler.worker_lost("L-1", now=4.0)
    departed = list(scheduler.history)
    assert [(w.id, w.status, w.tasks, w.seconds_busy) for w in departed] == [
        ("L-0", "exited", 1, 2.0),
        ("L-1", "crashed", 0, 0.0),
    ]
    assert scheduler.departures.earlier.workers == 0


def test_history_keeps_history_kept_workers_and_adds_up_the_rest() -> None:
    tasks = 5_000
    scheduler = Scheduler(Limits(tasks_max=1, workers=1))
    scheduler.push([spec(f"t{i}") for i in range(tasks)], now=0.0)
    workers = crashes = errors = finished = 0
    now = 0.0
    while scheduler.unresolved():
        now += 1.0
        worker = f"W{workers}-0"
        actions = scheduler.worker_connected(worker, f"W{workers}", 0, 0, now)
        workers += 1
        ((_, name),) = sent(actions)
        if workers % 100 == 0:  # now and then a host is reclaimed under a task
            crash(scheduler, worker, now, cause="host")
            crashes += 1
            continue
        failed = finished % 10 == 0
        errors += failed
        outcome = Outcome("error" if failed else "success", seconds=0.5)
        actions = scheduler.result_received(worker, name, outcome, now)
        assert kinds(actions) == ["Resolve", "SendExit"]
        finished += 1
        assert scheduler.worker_lost(worker, now) == []
    assert finished == tasks
    history, earlier = list(scheduler.history), scheduler.departures.earlier
    assert len(history) == HISTORY_KEPT
    assert history[-1].id == f"W{workers - 1}-0"
    assert earlier.workers + len(history) == workers
    assert earlier.tasks + sum(w.tasks for w in history) == tasks
    assert earlier.errors + sum(w.errors for w in history) == errors
    assert earlier.crashes + sum(w.status == "crashed" for w in history) == crashes
    assert earlier.seconds_busy + sum(w.seconds_busy for w in history) == 0.5 * tasks
    assert (scheduler.workers, scheduler.tasks, scheduler.awaiting) == ({}, {}, {})
    assert all(len(entries) == 0 for entries in scheduler.queues)


# ----- random sequences of events -----------------------------------------------------------


@dataclass
class Model:
    """Simulated workers and launcher driving a scheduler, and what it is expected to hold.

    Each inbox lists the tasks sent to a worker and not yet answered, in the order sent; a
    worker answers them in that order, as the real worker does. `coming[k]` is how many
    workers of level k are on their way; `lost` the workers whose verdict is awaited.
    """

    scheduler: Scheduler
    rng: random.Random
    pending: Pending
    coming: list[int]
    now: float = 0.0
    live: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    inboxes: dict[str, list[str]] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)
    leaving: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    pushed: int = 0
    resolved: int = 0
    connected: int = 0
    departed: int = 0

    def apply(self, actions: list[Action]) -> None:
        scheduler, limits = self.scheduler, self.scheduler.limits
        for action in actions:
            if isinstance(action, SendTask):
                worker = scheduler.workers[action.worker]
                assert worker.retiring is None
                assert (
                    limits.seconds_wall is None
                    or self.now - worker.connected_at < limits.seconds_wall
                )
                assert scheduler.tasks[action.task.name].level <= worker.level
                self.inboxes[action.worker].append(action.task.name)
            elif isinstance(action, Resolve):
                name = action.name
                assert name in self.live, f"{name} resolved twice or never pushed"
                assert action.attempts >= 0
                self.live.remove(name)
                self.done.add(name)
                self.resolved += 1
            elif isinstance(action, SendCancel):
                assert action.name in self.inboxes[action.worker]
            elif isinstance(action, (SendExit, Disconnect)):
                assert action.worker in scheduler.workers
                self.leaving.add(action.worker)
            else:
                assert isinstance(action, Investigate)
                assert action.worker not in scheduler.workers
                assert action.worker == f"{action.launch}-{action.index}"
                self.lost.add(action.worker)

    def step(self) -> None:
        rng, scheduler = self.rng, self.scheduler
        self.now += rng.choice([0.0, 0.5, 1.0, 3.0, 10.0, 40.0])
        workers = sorted(scheduler.workers)
        (event,) = rng.choices(
            ["push", "launch", "connect", "answer", "crash", "verdict", "cancel", "tick", "fail"],
            weights=[2, 1, 3, 6, 1, 2, 1, 3, 0.2],
        )
        if event == "push":
            self.push()
        elif event == "launch":
            self.coming[rng.randrange(len(self.coming))] += rng.randint(1, 3)
        elif event == "connect" and any(self.coming):
            self.connect()
        elif event == "answer" and workers:
            self.answer(rng.choice(workers))
        elif event == "crash" and workers:
            self.lose(rng.choice(workers))
        elif event == "verdict" and self.lost:
            worker = rng.choice(sorted(self.lost))
            self.lost.discard(worker)
            causes: list[Cause | None] = ["memory", "host", "host", "other", None]
            self.apply(scheduler.worker_ended(worker, rng.choice(causes), "ended", self.now))
        elif event == "cancel" and self.live:
            chosen = rng.choice(sorted(self.live))
            self.apply(scheduler.cancel([chosen, "unknown"], self.now))
        elif event == "tick":
            for worker in workers:
                if rng.random() < 0.9:
                    scheduler.heard_from(worker, self.now)
            self.apply(scheduler.tick(self.now))
            if any(self.coming) and rng.random() < 0.3:  # a launch expires
                self.coming[rng.choice([k for k, n in enumerate(self.coming) if n])] -= 1
        elif event == "fail":
            self.apply(scheduler.fail_queued("hopeless"))
        for worker in sorted(self.leaving):
            if not self.inboxes.get(worker) or rng.random() < 0.3:
                self.lose(worker)
        self.pending.count = sum(self.coming)

    def push(self) -> None:
        rng = self.rng
        names = [f"t{self.pushed + i}" for i in range(rng.randint(1, 4))]
        again = sorted(self.done - self.live)
        if again and rng.random() < 0.3:
            names.append(rng.choice(again))
        self.pushed += len(names)
        timeout = rng.choice([None, None, 5.0])
        self.live.update(names)
        self.apply(self.scheduler.push([spec(n, seconds_timeout=timeout) for n in names], self.now))

    def connect(self) -> None:
        level = self.rng.choice([k for k, count in enumerate(self.coming) if count])
        self.coming[level] -= 1
        self.pending.count = sum(self.coming)
        launch = f"M{self.connected}"
        self.connected += 1
        worker = f"{launch}-0"
        self.inboxes[worker] = []
        self.levels[worker] = level
        self.apply(self.scheduler.worker_connected(worker, launch, 0, level, self.now))

    def answer(self, worker: str) -> None:
        inbox = self.inboxes[worker]
        if not inbox or self.rng.random() < 0.1:
            self.apply(self.scheduler.result_received(worker, "stray", success(), self.now))
            return
        name = inbox.pop(0)
        statuses: list[Status] = ["success", "success", "error", "timeout", "cancel"]
        outcome = Outcome(self.rng.choice(statuses), seconds=1.0)
        self.apply(self.scheduler.result_received(worker, name, outcome, self.now))

    def lose(self, worker: str) -> None:
        del self.inboxes[worker]
        self.leaving.discard(worker)
        self.departed += 1
        self.apply(self.scheduler.worker_lost(worker, self.now))

    def check(self) -> None:
        scheduler, limits = self.scheduler, self.scheduler.limits
        assert set(scheduler.tasks) == self.live
        assert scheduler.unresolved() == len(self.live)
        assert self.pushed == self.resolved + len(self.live)
        assert set(scheduler.awaiting) <= self.lost
        holders: dict[int, list[str]] = {}
        running = 0
        for worker in scheduler.workers.values():
            assert [task.spec.name for task in worker.held] == self.inboxes[worker.id]
            assert worker.level == self.levels[worker.id]
            assert len(worker.held) <= 1 + PREFETCH_SHORT
            if limits.tasks_max is not None:
                assert worker.tasks + len(worker.held) <= limits.tasks_max
            for task in worker.held:
                holders.setdefault(id(task), []).append(worker.id)
            if worker.held and worker.retiring is None:
                running += 1
        for level, entries in enumerate(scheduler.queues):
            waiting = [task for task in entries if task.queued]
            assert scheduler.queued[level] == len(waiting)
            assert len({id(task) for task in waiting}) == len(waiting)
            assert all(task.level == level for task in waiting)
        awaiting = {id(task) for task, _ in scheduler.awaiting.values()}
        for name, task in scheduler.tasks.items():
            assert task.spec.name == name
            places = [task.queued, id(task) in holders, id(task) in awaiting]
            assert places.count(True) == 1, f"{name} is in {places}"
            if id(task) in holders:
                assert holders[id(task)] == [task.worker]
            else:
                assert task.worker is None and task.started_at is None
            assert task.crashes < limits.crashes_max
            assert task.reclaims <= RECLAIMS_MAX
            assert task.level <= min(task.crashes, limits.levels - 1)
        load = scheduler.load()
        assert min(load.demand) >= 0 and min(load.supply) >= 0
        assert load.connected == len(scheduler.workers)
        assert sum(load.demand) == sum(scheduler.queued) + running + len(scheduler.awaiting)
        assert sum(load.supply) == sum(w.retiring is None for w in scheduler.workers.values())
        assert len(list(scheduler.history)) <= HISTORY_KEPT
        assert scheduler.departures.earlier.workers + len(list(scheduler.history)) == self.departed

    def finish(self) -> None:
        """Cancel everything, let every worker go and every verdict lapse: nothing is left."""
        scheduler = self.scheduler
        self.apply(scheduler.cancel(None, self.now))
        assert self.live == set()
        for worker in sorted(scheduler.workers):
            self.lose(worker)
        self.now += SECONDS_VERDICT
        self.apply(scheduler.tick(self.now))
        self.check()
        levels = scheduler.limits.levels
        assert scheduler.awaiting == {}
        assert scheduler.load() == Load(demand=(0,) * levels, supply=(0,) * levels, connected=0)
        assert scheduler.queued == [0] * levels


@pytest.mark.parametrize("seed", range(40))
def test_random_events_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    limits = Limits(
        seconds_idle=rng.choice([10.0, 60.0]),
        seconds_wall=rng.choice([None, None, 150.0]),
        tasks_max=rng.choice([None, 1, 3]),
        crashes_max=rng.choice([1, 2, 3]),
        levels=rng.choice([1, 2, 3]),
        workers=rng.choice([1, 3, 8]),
    )
    pending = Pending()
    model = Model(Scheduler(limits, pending=pending), rng, pending, [0] * limits.levels)
    for _ in range(300):
        model.step()
        model.check()
    model.finish()


def test_short_tasks_are_prefetched_deeper_long_ones_one_at_a_time() -> None:
    scheduler = Scheduler(Limits(workers=1))
    connect(scheduler)
    scheduler.push(specs(*(f"t{i}" for i in range(40))), now=0.0)
    assert len(held(scheduler, "L-0")) == 1 + PREFETCH  # nothing measured yet: one ahead
    for _ in range(20):  # short tasks come back: the worker may hold more
        name = held(scheduler, "L-0")[0]
        scheduler.result_received("L-0", name, success(seconds=SECONDS_SHORT / 10), now=1.0)
    assert len(held(scheduler, "L-0")) == 1 + PREFETCH_SHORT
    for _ in range(30):  # then long ones: back to one ahead as the held ones come back
        name = held(scheduler, "L-0")[0]
        scheduler.result_received("L-0", name, success(seconds=1.0), now=2.0)
        if len(held(scheduler, "L-0")) <= 1 + PREFETCH:
            break
    assert len(held(scheduler, "L-0")) <= 1 + PREFETCH
