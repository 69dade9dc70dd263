"""The scheduler as a pure state machine: every event, the actions it returns, the state after.

Time is a number passed in; no sockets, threads or clocks. Worker ids follow the server's
`<launch>-<index>` form.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from batchcrew.results import Result
from batchcrew.scheduler import (
    PREFETCH,
    SECONDS_SILENCE,
    SECONDS_TIMEOUT_GRACE,
    Action,
    ConnectionRefused,
    Counts,
    Disconnect,
    Limits,
    Outcome,
    OutcomeStatus,
    Resolve,
    Scheduler,
    SendCancel,
    SendExit,
    SendTask,
    TaskSpec,
    TerminateLaunch,
)

# ----- helpers ------------------------------------------------------------------------------


def spec(name: str, *, seconds_timeout: float | None = None, seed: int = 7) -> TaskSpec:
    return TaskSpec(name, f"f({name!r})", "key", b"fn", b"args", seed, seconds_timeout)


def specs(*names: str) -> list[TaskSpec]:
    return [spec(name) for name in names]


def success(value: object = None, seconds: float = 0.0) -> Outcome:
    return Outcome("success", value=value, seconds=seconds)


def connect(
    scheduler: Scheduler, count: int = 1, *, level: int = 0, now: float = 0.0, launch: str = "L"
) -> list[Action]:
    """Launch `count` workers named `<launch>-<index>` and connect them all."""
    scheduler.launch_started(launch, level=level, count=count, now=now)
    actions: list[Action] = []
    for index in range(count):
        actions += scheduler.worker_connected(f"{launch}-{index}", launch, index, now=now)
    return actions


def sent(actions: Sequence[Action]) -> list[tuple[str, str]]:
    return [(a.worker, a.task.name) for a in actions if isinstance(a, SendTask)]


def resolved(actions: Sequence[Action]) -> list[Result]:
    return [a.result for a in actions if isinstance(a, Resolve)]


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


def test_push_of_a_queued_name_raises() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a"), now=0.0)
    with pytest.raises(ValueError, match="'a' is still held"):
        scheduler.push(specs("a"), now=1.0)
    assert scheduler.queued == [1]


def test_push_of_a_running_name_raises() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    with pytest.raises(ValueError, match="still held"):
        scheduler.push(specs("a"), now=1.0)


def test_push_of_a_name_again_after_it_resolved() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.result_received("L-0", "a", success(1), now=1.0)
    assert sent(scheduler.push(specs("a"), now=2.0)) == [("L-0", "a")]


def test_push_of_a_name_again_after_it_was_cancelled() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a"), now=0.0)
    scheduler.cancel(["a"], now=1.0)
    scheduler.push(specs("a"), now=2.0)
    assert queue(scheduler) == ["a"]
    assert scheduler.queued == [1]


def test_push_hands_tasks_to_idle_workers_one_each() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler, 2)
    actions = scheduler.push(specs("a", "b"), now=1.0)
    assert sent(actions) == [("L-0", "a"), ("L-1", "b")]
    assert scheduler.queued == [0]


# ----- assignment and prefetch --------------------------------------------------------------


def test_connected_worker_takes_the_first_queued_task() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.launch_started("L", level=0, count=2, now=0.0)
    actions = scheduler.worker_connected("L-0", "L", 0, now=1.0)
    assert sent(actions) == [("L-0", "a")]
    task = scheduler.tasks["a"]
    assert (task.worker, task.attempts, task.started_at, task.queued) == ("L-0", 1, 1.0, False)
    assert scheduler.workers["L-0"].idle_since is None


def test_send_task_carries_the_spec_unchanged() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    task = spec("a", seconds_timeout=5.0, seed=99)
    (action,) = scheduler.push([task], now=0.0)
    assert action == SendTask("L-0", task)


def test_busy_worker_prefetches_one_task_when_no_launch_is_pending() -> None:
    scheduler = Scheduler(Limits())
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
    scheduler = Scheduler(Limits())
    connect(scheduler, 3)
    actions = scheduler.push(specs("a", "b", "c", "d"), now=0.0)
    assert sent(actions)[:3] == [("L-0", "a"), ("L-1", "b"), ("L-2", "c")]
    assert sent(actions)[3] == ("L-0", "d")


def test_no_prefetch_while_workers_still_launching_will_take_the_queue() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("L", level=0, count=3, now=0.0)
    scheduler.worker_connected("L-0", "L", 0, now=0.0)
    actions = scheduler.push(specs("a", "b", "c"), now=1.0)
    # Two queued tasks, two workers on their way: nothing left over to prefetch.
    assert sent(actions) == [("L-0", "a")]
    assert queue(scheduler) == ["b", "c"]


def test_prefetch_only_the_tasks_beyond_the_workers_still_launching() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("L", level=0, count=2, now=0.0)
    scheduler.worker_connected("L-0", "L", 0, now=0.0)
    actions = scheduler.push(specs("a", "b", "c"), now=1.0)
    assert sent(actions) == [("L-0", "a"), ("L-0", "b")]
    assert queue(scheduler) == ["c"]
    assert sent(scheduler.worker_connected("L-1", "L", 1, now=2.0)) == [("L-1", "c")]


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


def test_result_resolves_with_every_field() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler, launch="job-1")
    scheduler.push([spec("a", seed=1234)], now=0.0)
    outcome = Outcome("success", value={"x": 1}, warnings=("UserWarning: careful",), seconds=2.5)
    (result,) = resolved(scheduler.result_received("job-1-0", "a", outcome, now=3.0))
    assert result == Result(
        name="a",
        command="f('a')",
        status="success",
        value={"x": 1},
        error=None,
        traceback=None,
        warnings=("UserWarning: careful",),
        seconds=2.5,
        seed=1234,
        attempts=1,
        worker="job-1-0",
        launch="job-1",
    )
    assert scheduler.unresolved() == 0
    assert "a" not in scheduler.tasks


def test_result_then_the_worker_gets_the_next_task() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("L", level=0, count=3, now=0.0)
    scheduler.worker_connected("L-0", "L", 0, now=0.0)
    scheduler.push(specs("a", "b", "c"), now=0.0)  # b, c wait for the launching workers
    actions = scheduler.result_received("L-0", "a", success(), now=1.0)
    assert kinds(actions) == ["Resolve", "SendTask"]
    assert sent(actions) == [("L-0", "b")]


def test_error_result_keeps_error_and_traceback_and_drops_the_value() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    outcome = Outcome("error", value=5, error="ValueError: no", traceback="Traceback ...")
    (result,) = resolved(scheduler.result_received("L-0", "a", outcome, now=1.0))
    assert (result.status, result.value) == ("error", None)
    assert (result.error, result.traceback) == ("ValueError: no", "Traceback ...")
    assert scheduler.workers["L-0"].errors == 1


def test_worker_reported_timeout_resolves_timeout() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push([spec("a", seconds_timeout=1.0)], now=0.0)
    outcome = Outcome("timeout", error="timed out after 1 s", seconds=1.0)
    (result,) = resolved(scheduler.result_received("L-0", "a", outcome, now=1.1))
    assert (result.status, result.error, result.seconds) == ("timeout", "timed out after 1 s", 1.0)
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
    scheduler = Scheduler(Limits())
    connect(scheduler, 2)
    scheduler.push(specs("a", "b"), now=0.0)
    assert resolved(scheduler.result_received("L-1", "a", success(), now=1.0)) == []
    assert resolved(scheduler.result_received("L-0", "zzz", success(), now=1.0)) == []
    assert held(scheduler, "L-0") == ["a"]
    assert scheduler.workers["L-1"].tasks == 0
    assert scheduler.unresolved() == 2


def test_late_result_from_a_crashed_worker_is_dropped_and_the_task_resolves_once() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler, 2)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.result_received("L-1", "b", success(), now=0.5)
    actions = scheduler.worker_lost("L-0", now=1.0)
    assert sent(actions) == [("L-1", "a")]
    assert scheduler.result_received("L-0", "a", success("late"), now=2.0) == []
    (result,) = resolved(scheduler.result_received("L-1", "a", success("fresh"), now=3.0))
    assert (result.value, result.worker, result.attempts) == ("fresh", "L-1", 2)
    assert resolved(scheduler.result_received("L-1", "a", success(), now=4.0)) == []


# ----- crashes and exits --------------------------------------------------------------------


def test_crash_puts_the_running_task_at_the_front_of_the_queue() -> None:
    scheduler = Scheduler(Limits(seconds_wall=1000.0))  # no prefetch
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)
    assert scheduler.worker_lost("L-0", now=1.0) == []
    assert queue(scheduler) == ["a", "b", "c"]
    task = scheduler.tasks["a"]
    assert (task.crashes, task.attempts, task.worker, task.started_at) == (1, 1, None, None)
    assert scheduler.queued == [3]
    assert scheduler.workers == {}
    assert scheduler.departed[0].status == "crashed"


def test_crash_gives_the_task_back_to_an_idle_worker() -> None:
    scheduler = Scheduler(Limits(seconds_wall=1000.0))
    connect(scheduler, 2)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.result_received("L-1", "b", success(), now=0.5)
    assert sent(scheduler.worker_lost("L-0", now=1.0)) == [("L-1", "a")]


def test_crash_returns_prefetched_tasks_without_penalty_in_order() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a", "b", "c", "d"), now=0.0)
    assert held(scheduler, "L-0") == ["a", "b"]
    scheduler.worker_lost("L-0", now=1.0)
    assert queue(scheduler) == ["a", "b", "c", "d"]
    a, b = scheduler.tasks["a"], scheduler.tasks["b"]
    assert (a.crashes, a.attempts) == (1, 1)
    assert (b.crashes, b.attempts, b.worker, b.queued) == (0, 0, None, True)


def test_attempts_count_the_workers_that_started_the_task() -> None:
    scheduler = Scheduler(Limits(crashes_max=5))
    scheduler.push(specs("a"), now=0.0)
    connect(scheduler, launch="L0", now=0.0)
    scheduler.worker_lost("L0-0", now=1.0)
    connect(scheduler, launch="L1", now=1.0)
    scheduler.worker_lost("L1-0", now=2.0)
    connect(scheduler, launch="L2", now=2.0)
    scheduler.push(specs("b"), now=2.5)  # prefetched behind "a"
    (result,) = resolved(scheduler.result_received("L2-0", "a", success(), now=3.0))
    assert (result.attempts, result.worker, result.launch) == (3, "L2-0", "L2")
    assert scheduler.tasks["b"].attempts == 1


def test_task_resolves_crash_after_crashes_max() -> None:
    scheduler = Scheduler(Limits(crashes_max=2))
    scheduler.push([spec("a", seed=11)], now=0.0)
    connect(scheduler, launch="L0")
    assert scheduler.worker_lost("L0-0", now=1.0) == []
    connect(scheduler, launch="L1", now=2.0)
    (result,) = resolved(scheduler.worker_lost("L1-0", now=3.0))
    assert (result.name, result.status, result.value) == ("a", "crash", None)
    assert (result.attempts, result.seed, result.worker, result.launch) == (2, 11, "L1-0", "L1")
    assert result.error == "the worker crashed 2 time(s) running this task"
    assert scheduler.unresolved() == 0
    assert scheduler.queued == [0]


def test_crashes_max_of_one_resolves_at_the_first_crash() -> None:
    scheduler = Scheduler(Limits(crashes_max=1))
    connect(scheduler)
    scheduler.push(specs("a", "b", "c"), now=0.0)
    actions = scheduler.worker_lost("L-0", now=1.0)
    assert [(r.name, r.status) for r in resolved(actions)] == [("a", "crash")]
    assert queue(scheduler) == ["b", "c"]


def test_clean_exit_with_nothing_held() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    assert scheduler.worker_lost("L-0", now=1.0) == []
    assert scheduler.workers == {}
    (departed,) = scheduler.departed
    assert (departed.id, departed.status) == ("L-0", "exited")
    assert scheduler.counts() == Counts(demand=(0,), supply=(0,), workers=0)


def test_losing_an_unknown_or_departed_worker_does_nothing() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.worker_lost("L-0", now=1.0)
    assert scheduler.worker_lost("L-0", now=2.0) == []
    assert scheduler.worker_lost("nobody", now=2.0) == []
    assert len(scheduler.departed) == 1


# ----- cancel -------------------------------------------------------------------------------


def test_cancel_of_queued_tasks() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a", "b", "c"), now=0.0)
    actions = scheduler.cancel(["b", "c"], now=1.0)
    assert kinds(actions) == ["Resolve", "Resolve"]
    results = resolved(actions)
    assert [(r.name, r.status, r.error) for r in results] == [
        ("b", "cancel", "cancelled"),
        ("c", "cancel", "cancelled"),
    ]
    assert (results[0].attempts, results[0].worker, results[0].seed) == (0, None, 7)
    assert queue(scheduler) == ["a"]
    assert scheduler.queued == [1]
    assert sent(connect(scheduler)) == [("L-0", "a")]


def test_cancel_of_a_running_task_tells_the_worker_and_resolves() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    actions = scheduler.cancel(["a"], now=1.0)
    assert actions[0] == SendCancel("L-0", "a")
    (result,) = resolved(actions)
    assert (result.status, result.worker, result.launch, result.attempts) == (
        "cancel",
        "L-0",
        "L",
        1,
    )
    assert scheduler.unresolved() == 0


def test_result_of_a_cancelled_task_is_dropped_and_the_worker_moves_on() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("L", level=0, count=2, now=0.0)
    scheduler.worker_connected("L-0", "L", 0, now=0.0)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.cancel(["a"], now=1.0)
    assert held(scheduler, "L-0") == ["a"]  # until the worker answers
    actions = scheduler.result_received("L-0", "a", Outcome("cancel"), now=2.0)
    assert resolved(actions) == []
    assert sent(actions) == [("L-0", "b")]
    assert scheduler.workers["L-0"].tasks == 1


def test_cancel_of_a_prefetched_task_keeps_the_running_one() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler)
    scheduler.push(specs("a", "b"), now=0.0)
    actions = scheduler.cancel(["b"], now=1.0)
    assert actions[0] == SendCancel("L-0", "b")
    assert [r.name for r in resolved(actions)] == ["b"]
    assert scheduler.tasks["a"].started_at == 0.0
    scheduler.worker_lost("L-0", now=2.0)
    assert queue(scheduler) == ["a"]


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
    assert kinds(actions) == ["Resolve", "Disconnect"]
    (result,) = resolved(actions)
    assert (result.status, result.seconds, result.worker) == ("timeout", due - 1.0, "L-0")
    assert result.error == f"no answer {10.0 + SECONDS_TIMEOUT_GRACE:g} s after the task started"
    assert actions[1] == Disconnect("L-0", "task a overran its timeout")
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
    actions = scheduler.worker_lost("L-0", now=due + 1.0)  # the Disconnect took effect
    assert resolved(actions) == []
    b = scheduler.tasks["b"]
    assert (b.crashes, b.attempts, b.queued) == (0, 0, True)


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
    assert scheduler.counts() == Counts(demand=(1,), supply=(0,), workers=1)


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


def test_silent_worker_is_disconnected() -> None:
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


def test_silent_worker_takes_no_more_tasks_before_it_is_lost() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9, crashes_max=1))
    connect(scheduler, now=0.0)
    scheduler.tick(now=SECONDS_SILENCE + 1.0)
    assert scheduler.push(specs("a"), now=SECONDS_SILENCE + 2.0) == []
    assert scheduler.counts() == Counts(demand=(1,), supply=(0,), workers=1)
    assert scheduler.worker_lost("L-0", now=SECONDS_SILENCE + 3.0) == []
    assert (scheduler.tasks["a"].crashes, scheduler.tasks["a"].queued) == (0, True)


def test_silent_busy_worker_is_kept_a_task_may_hold_its_interpreter() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler, now=0.0)
    scheduler.push(specs("a"), now=0.0)
    assert scheduler.tick(now=10 * SECONDS_SILENCE) == []
    result = resolved(scheduler.result_received("L-0", "a", success(1), now=11 * SECONDS_SILENCE))
    assert [r.value for r in result] == [1]
    assert kinds(scheduler.tick(now=12 * SECONDS_SILENCE + 1.0)) == ["Disconnect"]  # now idle


# ----- launches and connections -------------------------------------------------------------


def test_launch_expires_after_seconds_launch_with_the_missing_indices_only() -> None:
    scheduler = Scheduler(Limits(seconds_launch=30.0, seconds_idle=1e9))
    scheduler.launch_started("L", level=0, count=4, now=0.0)
    scheduler.worker_connected("L-1", "L", 1, now=1.0)
    scheduler.launch_failed("L", [3], now=2.0)
    scheduler.heard_from("L-1", now=29.0)
    assert scheduler.tick(now=29.0) == []
    scheduler.heard_from("L-1", now=30.0)
    (action,) = scheduler.tick(now=30.0)
    assert action == TerminateLaunch("L", (0, 2), "not connected within seconds_launch=30")
    assert scheduler.launches["L"].pending == 0
    assert scheduler.tick(now=31.0) == []
    assert "L" not in scheduler.open_launches


def test_late_connection_of_an_expired_launch_is_refused() -> None:
    scheduler = Scheduler(Limits(seconds_launch=30.0))
    scheduler.launch_started("L", level=0, count=1, now=0.0)
    scheduler.tick(now=30.0)
    with pytest.raises(ConnectionRefused, match="written off"):
        scheduler.worker_connected("L-0", "L", 0, now=31.0)
    assert scheduler.workers == {}


def test_fully_connected_launch_is_never_terminated() -> None:
    scheduler = Scheduler(Limits(seconds_launch=30.0, seconds_idle=1e9))
    connect(scheduler, 2)
    for worker in ("L-0", "L-1"):
        scheduler.heard_from(worker, now=40.0)
    assert scheduler.tick(now=40.0) == []
    assert scheduler.open_launches == {}


def test_failed_launch_stops_counting_as_supply() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a"), now=0.0)
    scheduler.launch_started("L", level=0, count=3, now=0.0)
    assert scheduler.counts() == Counts(demand=(1,), supply=(3,), workers=3)
    scheduler.launch_failed("L", None, now=1.0)
    assert scheduler.launches["L"].pending == 0
    assert scheduler.counts() == Counts(demand=(1,), supply=(0,), workers=0)
    assert scheduler.tick(now=100.0) == []


def test_failed_indices_keep_connected_workers() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("L", level=0, count=3, now=0.0)
    scheduler.worker_connected("L-0", "L", 0, now=0.0)
    scheduler.launch_failed("L", [0, 2], now=1.0)
    launch = scheduler.launches["L"]
    assert (launch.connected, launch.closed, launch.pending) == ({0}, {2}, 1)
    scheduler.launch_failed("L", None, now=2.0)
    assert (launch.closed, launch.pending) == ({1, 2}, 0)
    assert scheduler.counts() == Counts(demand=(0,), supply=(1,), workers=1)


def test_failed_indices_out_of_range_are_ignored() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("L", level=0, count=2, now=0.0)
    scheduler.launch_failed("L", [5, -1], now=1.0)
    assert scheduler.launches["L"].pending == 2
    scheduler.worker_connected("L-0", "L", 0, now=1.0)
    scheduler.worker_connected("L-1", "L", 1, now=1.0)
    scheduler.launch_failed("L", [7], now=2.0)
    assert scheduler.launches["L"].pending == 0


def test_failure_of_an_unknown_launch_is_ignored() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_failed("nope", None, now=0.0)
    assert scheduler.launches == {}


def test_a_launch_id_is_recorded_once() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("L", level=0, count=1, now=0.0)
    with pytest.raises(ValueError, match="already recorded"):
        scheduler.launch_started("L", level=0, count=1, now=1.0)


@pytest.mark.parametrize(
    ("worker", "launch", "index", "message"),
    [
        ("X-0", "X", 0, "unknown launch 'X'"),
        ("L-2", "L", 2, "has no worker index 2"),
        ("L--1", "L", -1, "has no worker index -1"),
        ("L-0-again", "L", 0, "worker 0 of launch L already connected"),
        ("L-1", "L", 1, "worker 1 of launch L already connected"),  # ended before connecting
        ("L-0", "M", 0, "worker L-0 is already connected"),
    ],
)
def test_connection_refusals(worker: str, launch: str, index: int, message: str) -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("L", level=0, count=2, now=0.0)
    scheduler.launch_started("M", level=0, count=1, now=0.0)
    scheduler.worker_connected("L-0", "L", 0, now=0.0)
    scheduler.launch_failed("L", [1], now=0.0)
    with pytest.raises(ConnectionRefused, match=message):
        scheduler.worker_connected(worker, launch, index, now=1.0)
    assert list(scheduler.workers) == ["L-0"]
    assert scheduler.launches["L"].connected == {0}


# ----- resource levels ----------------------------------------------------------------------


def test_crashed_task_needs_the_next_level() -> None:
    scheduler = Scheduler(Limits(levels=3))
    connect(scheduler, launch="A")
    scheduler.push(specs("a"), now=0.0)
    scheduler.worker_lost("A-0", now=1.0)
    assert scheduler.tasks["a"].level == 1
    assert (scheduler.queued, queue(scheduler, 1)) == ([0, 1, 0], ["a"])
    assert sent(connect(scheduler, launch="B", level=0, now=2.0)) == []
    assert sent(connect(scheduler, launch="C", level=1, now=3.0)) == [("C-0", "a")]


def test_task_that_crashed_twice_runs_only_on_the_top_level() -> None:
    scheduler = Scheduler(Limits(levels=3))
    scheduler.push(specs("a"), now=0.0)
    connect(scheduler, launch="A", level=0)
    scheduler.worker_lost("A-0", now=1.0)
    connect(scheduler, launch="B", level=1, now=1.0)
    scheduler.worker_lost("B-0", now=2.0)
    assert scheduler.tasks["a"].level == 2
    assert sent(connect(scheduler, launch="C", level=1, now=3.0)) == []
    assert sent(connect(scheduler, launch="D", level=2, now=3.0)) == [("D-0", "a")]


def test_level_is_capped_at_the_top_level() -> None:
    scheduler = Scheduler(Limits(levels=2, crashes_max=10))
    scheduler.push(specs("a"), now=0.0)
    for round_ in range(4):
        connect(scheduler, launch=f"L{round_}", level=1, now=float(round_))
        scheduler.worker_lost(f"L{round_}-0", now=float(round_))
    task = scheduler.tasks["a"]
    assert (task.crashes, task.level) == (4, 1)
    assert scheduler.queued == [0, 1]


def test_with_one_level_a_crashed_task_stays_at_level_0() -> None:
    scheduler = Scheduler(Limits(levels=1))
    connect(scheduler)
    scheduler.push(specs("a"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    assert scheduler.tasks["a"].level == 0
    assert sent(connect(scheduler, launch="M", now=2.0)) == [("M-0", "a")]


def test_tasks_that_never_crashed_keep_running_on_level_0_workers() -> None:
    scheduler = Scheduler(Limits(levels=3, seconds_wall=1000.0))
    connect(scheduler, launch="A")
    scheduler.push(specs("a", "b", "c"), now=0.0)
    scheduler.worker_lost("A-0", now=1.0)  # "a" now needs level 1
    actions = connect(scheduler, launch="B", level=0, now=2.0)
    assert sent(actions) == [("B-0", "b")]
    assert queue(scheduler, 0) == ["c"]
    assert queue(scheduler, 1) == ["a"]


def test_prefetched_tasks_keep_their_level_after_a_crash() -> None:
    scheduler = Scheduler(Limits(levels=3))
    connect(scheduler)
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.worker_lost("L-0", now=1.0)
    assert (scheduler.tasks["a"].level, scheduler.tasks["b"].level) == (1, 0)
    assert (queue(scheduler, 0), queue(scheduler, 1)) == (["b"], ["a"])


def test_higher_level_worker_prefers_its_own_level_then_takes_lower_work() -> None:
    scheduler = Scheduler(Limits(levels=2, seconds_wall=1000.0))
    connect(scheduler, launch="A")
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.worker_lost("A-0", now=1.0)  # "a" needs level 1, "b" level 0
    assert sent(connect(scheduler, launch="B", level=1, now=2.0)) == [("B-0", "a")]
    actions = scheduler.result_received("B-0", "a", success(), now=3.0)
    assert sent(actions) == [("B-0", "b")]


def test_counts_show_demand_at_the_level_the_task_needs() -> None:
    scheduler = Scheduler(Limits(levels=3, seconds_wall=1000.0))  # no prefetch
    connect(scheduler, launch="A")
    scheduler.push(specs("a", "b"), now=0.0)
    scheduler.worker_lost("A-0", now=1.0)
    assert scheduler.counts() == Counts(demand=(1, 1, 0), supply=(0, 0, 0), workers=0)
    connect(scheduler, launch="B", level=1, now=2.0)
    assert scheduler.counts() == Counts(demand=(1, 1, 0), supply=(0, 1, 0), workers=1)


# ----- counts -------------------------------------------------------------------------------


def test_counts_of_an_empty_scheduler() -> None:
    scheduler = Scheduler(Limits(levels=2))
    assert scheduler.counts() == Counts(demand=(0, 0), supply=(0, 0), workers=0)


def test_counts_with_only_queued_work() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a", "b"), now=0.0)
    assert scheduler.counts() == Counts(demand=(2,), supply=(0,), workers=0)


def test_counts_with_pending_launches() -> None:
    scheduler = Scheduler(Limits(levels=2))
    scheduler.launch_started("A", level=0, count=2, now=0.0)
    scheduler.launch_started("B", level=1, count=3, now=0.0)
    assert scheduler.counts() == Counts(demand=(0, 0), supply=(2, 3), workers=5)
    scheduler.worker_connected("A-0", "A", 0, now=1.0)
    assert scheduler.counts() == Counts(demand=(0, 0), supply=(2, 3), workers=5)


def test_counts_running_tasks_as_demand_but_not_prefetched_ones() -> None:
    scheduler = Scheduler(Limits())
    connect(scheduler, 2)
    scheduler.push(specs("a", "b", "c", "d", "e"), now=0.0)
    # "a" and "b" run, "c" and "d" are prefetched behind them, "e" waits.
    assert scheduler.counts() == Counts(demand=(3,), supply=(2,), workers=2)


def test_counts_leave_out_retiring_workers_but_keep_them_in_the_total() -> None:
    scheduler = Scheduler(Limits(seconds_wall=10.0, seconds_idle=1e9))
    connect(scheduler, 2)
    scheduler.push(specs("a"), now=0.0)
    scheduler.heard_from("L-0", now=10.0)
    scheduler.heard_from("L-1", now=10.0)
    scheduler.tick(now=10.0)
    assert scheduler.counts() == Counts(demand=(0,), supply=(0,), workers=2)


def test_counts_after_a_launch_expired() -> None:
    scheduler = Scheduler(Limits(seconds_launch=30.0))
    scheduler.push(specs("a"), now=0.0)
    scheduler.launch_started("L", level=0, count=2, now=0.0)
    scheduler.tick(now=30.0)
    assert scheduler.counts() == Counts(demand=(1,), supply=(0,), workers=0)


# ----- random sequences of events -----------------------------------------------------------


@dataclass
class Model:
    """Simulated workers driving a scheduler, and what the test expects it to hold.

    Each inbox lists the tasks sent to a worker and not yet answered, in the order sent; a
    worker answers them in that order, as the real worker does.
    """

    scheduler: Scheduler
    rng: random.Random
    now: float = 0.0
    live: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    inboxes: dict[str, list[str]] = field(default_factory=dict)
    leaving: set[str] = field(default_factory=set)
    pushed: int = 0
    launched: int = 0

    def apply(self, actions: list[Action]) -> None:
        limits = self.scheduler.limits
        for action in actions:
            if isinstance(action, SendTask):
                worker = self.scheduler.workers[action.worker]
                assert worker.retiring is None
                assert (
                    limits.seconds_wall is None
                    or self.now - worker.connected_at < limits.seconds_wall
                )
                self.inboxes[action.worker].append(action.task.name)
            elif isinstance(action, Resolve):
                name = action.result.name
                assert name in self.live, f"{name} resolved twice or never pushed"
                self.live.remove(name)
                self.done.add(name)
            elif isinstance(action, SendCancel):
                assert action.name in self.inboxes[action.worker]
            elif isinstance(action, (SendExit, Disconnect)):
                assert action.worker in self.scheduler.workers
                self.leaving.add(action.worker)
            else:
                assert isinstance(action, TerminateLaunch)

    def step(self) -> None:
        rng, scheduler = self.rng, self.scheduler
        self.now += rng.choice([0.0, 0.5, 1.0, 3.0, 10.0, 40.0])
        workers = sorted(scheduler.workers)
        (event,) = rng.choices(
            ["push", "launch", "connect", "answer", "crash", "cancel", "tick"],
            weights=[2, 1, 3, 6, 1, 1, 3],
        )
        if event == "push":
            self.push()
        elif event == "launch":
            launch = f"M{self.launched}"
            self.launched += 1
            level = rng.randrange(scheduler.limits.levels)
            scheduler.launch_started(launch, level, rng.randint(1, 3), self.now)
        elif event == "connect" and scheduler.launches:
            self.connect(rng.choice(sorted(scheduler.open_launches or scheduler.launches)))
        elif event == "answer" and workers:
            self.answer(rng.choice(workers))
        elif event == "crash" and workers:
            self.lose(rng.choice(workers))
        elif event == "cancel" and self.live:
            chosen = rng.choice(sorted(self.live))
            self.apply(scheduler.cancel([chosen, "unknown"], self.now))
        elif event == "tick":
            for worker in workers:
                if rng.random() < 0.9:
                    scheduler.heard_from(worker, self.now)
            self.apply(scheduler.tick(self.now))
            if scheduler.launches and rng.random() < 0.3:
                failing = scheduler.launches[rng.choice(sorted(scheduler.launches))]
                scheduler.launch_failed(failing.id, [rng.randrange(failing.count + 1)], self.now)
        for worker in sorted(self.leaving):
            if not self.inboxes.get(worker) or rng.random() < 0.3:
                self.lose(worker)

    def push(self) -> None:
        rng = self.rng
        names = [f"t{self.pushed + i}" for i in range(rng.randint(1, 4))]
        self.pushed += len(names)
        if self.live and rng.random() < 0.2:
            with pytest.raises(ValueError, match="still held"):
                self.scheduler.push([spec(rng.choice(sorted(self.live)))], self.now)
        again = sorted(self.done - self.live)
        if again and rng.random() < 0.3:
            names.append(rng.choice(again))
        timeout = rng.choice([None, None, 5.0])
        self.live.update(names)
        self.apply(self.scheduler.push([spec(n, seconds_timeout=timeout) for n in names], self.now))

    def connect(self, launch_id: str) -> None:
        launch = self.scheduler.launches[launch_id]
        expected = [i for i in range(launch.count) if i not in launch.connected | launch.closed]
        if expected and self.rng.random() < 0.8:
            index = self.rng.choice(expected)
        else:
            index = self.rng.randrange(launch.count + 1)  # sometimes a refusal
        worker = f"{launch_id}-{index}"
        try:
            actions = self.scheduler.worker_connected(worker, launch_id, index, self.now)
        except ConnectionRefused:
            assert (
                launch.expired or index == launch.count or index in launch.connected | launch.closed
            )
            return
        self.inboxes[worker] = []
        self.apply(actions)

    def answer(self, worker: str) -> None:
        inbox = self.inboxes[worker]
        if not inbox or self.rng.random() < 0.1:
            self.apply(self.scheduler.result_received(worker, "stray", success(), self.now))
            return
        name = inbox.pop(0)
        statuses: list[OutcomeStatus] = ["success", "success", "error", "timeout", "cancel"]
        status = self.rng.choice(statuses)
        outcome = Outcome(status, value=name, seconds=1.0)
        self.apply(self.scheduler.result_received(worker, name, outcome, self.now))

    def lose(self, worker: str) -> None:
        del self.inboxes[worker]
        self.leaving.discard(worker)
        self.apply(self.scheduler.worker_lost(worker, self.now))

    def check(self) -> None:
        scheduler, limits = self.scheduler, self.scheduler.limits
        assert set(scheduler.tasks) == self.live
        holders: dict[int, list[str]] = {}
        for worker in scheduler.workers.values():
            assert [task.spec.name for task in worker.held] == self.inboxes[worker.id]
            assert len(worker.held) <= 1 + PREFETCH
            if limits.tasks_max is not None:
                assert worker.tasks + len(worker.held) <= limits.tasks_max
            for task in worker.held:
                holders.setdefault(id(task), []).append(worker.id)
                assert task.level <= worker.level
        for level, entries in enumerate(scheduler.queues):
            waiting = [task for task in entries if task.queued]
            assert scheduler.queued[level] == len(waiting)
            assert len({id(task) for task in waiting}) == len(waiting)
            assert all(task.level == level for task in waiting)
        for name, task in scheduler.tasks.items():
            assert task.spec.name == name
            if task.queued:
                assert holders.get(id(task), []) == [] and task.worker is None
            else:
                assert holders.get(id(task), []) == [task.worker]
            assert task.crashes < limits.crashes_max
            assert task.level == min(task.crashes, limits.levels - 1)
        queued = {id(task) for entries in scheduler.queues for task in entries if task.queued}
        assert queued == {id(task) for task in scheduler.tasks.values() if task.queued}
        counts = scheduler.counts()
        assert min(counts.demand) >= 0 and min(counts.supply) >= 0
        assert all(launch.pending >= 0 for launch in scheduler.launches.values())
        pending = sum(launch.pending for launch in scheduler.launches.values())
        assert counts.workers == len(scheduler.workers) + pending


@pytest.mark.parametrize("seed", range(40))
def test_random_events_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    limits = Limits(
        seconds_idle=rng.choice([10.0, 60.0]),
        seconds_launch=rng.choice([30.0, 100.0]),
        seconds_wall=rng.choice([None, None, 150.0]),
        tasks_max=rng.choice([None, 1, 3]),
        crashes_max=rng.choice([1, 2, 3]),
        levels=rng.choice([1, 2, 3]),
    )
    model = Model(Scheduler(limits), rng)
    for _ in range(300):
        model.step()
        model.check()
    model.apply(model.scheduler.cancel(None, model.now))
    model.check()
    assert model.live == set()
    assert model.scheduler.queued == [0] * limits.levels


# ----- prefetch and room to launch, failures in a row, atomic pushes ------------------------


def test_no_prefetch_while_more_workers_may_be_launched() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9, workers=2))
    connect(scheduler)
    actions = scheduler.push(specs("long-1", "long-2"), now=0.0)
    assert sent(actions) == [("L-0", "long-1")]
    assert queue(scheduler) == ["long-2"]
    assert scheduler.counts() == Counts(demand=(2,), supply=(1,), workers=1)
    connect(scheduler, launch="M")
    assert held(scheduler, "M-0") == ["long-2"]


def test_prefetch_once_no_more_workers_may_be_launched() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9, workers=2))
    connect(scheduler, count=2)
    scheduler.push(specs("a", "b", "c", "d", "e"), now=0.0)
    assert held(scheduler, "L-0") == ["a", "c"]
    assert held(scheduler, "L-1") == ["b", "d"]
    assert queue(scheduler) == ["e"]


def test_push_is_all_or_nothing() -> None:
    scheduler = Scheduler(Limits())
    scheduler.push(specs("a"), now=0.0)
    with pytest.raises(ValueError, match="'a' is still held"):
        scheduler.push(specs("b", "a"), now=0.0)
    with pytest.raises(ValueError, match="'c' is still held"):
        scheduler.push(specs("c", "c"), now=0.0)
    assert sorted(scheduler.tasks) == ["a"]
    assert scheduler.queued == [1]


def test_launch_failures_count_until_a_worker_connects() -> None:
    scheduler = Scheduler(Limits())
    scheduler.launch_started("A", level=0, count=3, now=0.0)
    scheduler.launch_failed("A", [0, 1], now=1.0)
    scheduler.launch_failed("A", [1], now=1.0)  # already counted
    assert scheduler.launch_failures == 2
    scheduler.worker_connected("A-2", "A", 2, now=2.0)
    assert scheduler.launch_failures == 0


def test_cancelled_prefetched_task_never_started() -> None:
    scheduler = Scheduler(Limits(seconds_idle=1e9))
    connect(scheduler)
    scheduler.push(specs("running", "prefetched"), now=0.0)
    actions = scheduler.cancel(["prefetched"], now=1.0)
    assert kinds(actions) == ["SendCancel", "Resolve"]
    assert resolved(actions)[0].attempts == 0
    assert resolved(scheduler.cancel(["running"], now=1.0))[0].attempts == 1
