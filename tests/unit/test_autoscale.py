"""The autoscaler: how many workers at which level, in how many launches, and when a launch
round may run."""

from __future__ import annotations

import random

import pytest

from batchcrew.autoscale import (
    SECONDS_BACKOFF_MAX,
    Counts,
    LaunchOrder,
    Policy,
    plan_launches,
    seconds_until_round,
)
from batchcrew.launches import LaunchBook
from batchcrew.messages import TaskSpec
from batchcrew.scheduler import Limits, Scheduler


def counts(demand: tuple[int, ...], supply: tuple[int, ...], workers: int = 0) -> Counts:
    return Counts(demand=demand, supply=supply, workers=workers)


def spec(name: str) -> TaskSpec:
    return TaskSpec(name, "key", b"fn", b"args", 1)


def counts_of(scheduler: Scheduler, book: LaunchBook) -> Counts:
    """What the autoscaler is told: connected workers and the workers on their way."""
    load = scheduler.load()
    coming = book.pending_by_level(scheduler.limits.levels)
    supply = tuple(now + later for now, later in zip(load.supply, coming, strict=True))
    return Counts(load.demand, supply, load.connected + sum(coming))


# ----- plan_launches ------------------------------------------------------------------------


def test_no_workers_before_work_arrives() -> None:
    assert plan_launches(Policy(workers=4, seconds_interval=1.0), counts((0,), (0,))) == []
    assert plan_launches(Policy(workers=4, seconds_interval=1.0), counts((0, 0), (0, 0))) == []


def test_one_worker_per_task_while_there_is_room() -> None:
    policy = Policy(workers=4, seconds_interval=1.0)
    assert plan_launches(policy, counts((3,), (0,))) == [LaunchOrder(level=0, count=3)]


def test_launches_stop_at_the_workers_total() -> None:
    policy = Policy(workers=4, seconds_interval=1.0)
    assert plan_launches(policy, counts((100,), (0,))) == [LaunchOrder(level=0, count=4)]


def test_connected_workers_and_pending_launches_use_up_the_room() -> None:
    policy = Policy(workers=4, seconds_interval=1.0)
    assert plan_launches(policy, counts((100,), (3,), workers=3)) == [LaunchOrder(0, 1)]
    assert plan_launches(policy, counts((100,), (4,), workers=4)) == []


def test_retiring_workers_use_up_room_without_being_supply() -> None:
    policy = Policy(workers=2, seconds_interval=1.0)
    assert plan_launches(policy, counts((5,), (0,), workers=2)) == []
    assert plan_launches(policy, counts((5,), (0,), workers=1)) == [LaunchOrder(0, 1)]


def test_nothing_when_already_over_the_workers_total() -> None:
    policy = Policy(workers=2, seconds_interval=1.0)
    assert plan_launches(policy, counts((10,), (0,), workers=5)) == []


def test_supply_from_pending_launches_counts() -> None:
    policy = Policy(workers=10, seconds_interval=1.0)
    assert plan_launches(policy, counts((3,), (3,), workers=3)) == []
    assert plan_launches(policy, counts((5,), (3,), workers=3)) == [LaunchOrder(0, 2)]


def test_more_supply_than_demand_launches_nothing() -> None:
    policy = Policy(workers=10, seconds_interval=1.0)
    assert plan_launches(policy, counts((1,), (4,), workers=4)) == []


def test_launches_at_the_level_the_demand_needs() -> None:
    policy = Policy(workers=10, seconds_interval=1.0)
    assert plan_launches(policy, counts((0, 0, 2), (0, 0, 0))) == [LaunchOrder(2, 2)]
    assert plan_launches(policy, counts((3, 2), (0, 0))) == [LaunchOrder(1, 2), LaunchOrder(0, 3)]


def test_a_higher_level_worker_serves_lower_level_demand() -> None:
    policy = Policy(workers=10, seconds_interval=1.0)
    assert plan_launches(policy, counts((0, 1, 0), (0, 0, 1), workers=1)) == []
    assert plan_launches(policy, counts((2, 0), (0, 1), workers=1)) == [LaunchOrder(0, 1)]


def test_a_worker_launched_for_a_higher_level_counts_as_supply_below() -> None:
    policy = Policy(workers=10, seconds_interval=1.0)
    # Levels 1 and 2 together need two workers: the level-2 launch is not counted again.
    orders = plan_launches(policy, counts((0, 1, 1), (0, 0, 0)))
    assert orders == [LaunchOrder(2, 1), LaunchOrder(1, 1)]
    orders = plan_launches(policy, counts((2, 0, 3), (0, 0, 1), workers=1))
    assert orders == [LaunchOrder(2, 2), LaunchOrder(0, 2)]


def test_a_lower_level_worker_does_not_serve_higher_demand() -> None:
    policy = Policy(workers=10, seconds_interval=1.0)
    assert plan_launches(policy, counts((0, 2), (5, 0), workers=5)) == [LaunchOrder(1, 2)]


def test_the_room_goes_to_the_highest_level_first() -> None:
    policy = Policy(workers=6, seconds_interval=1.0)
    orders = plan_launches(policy, counts((5, 0, 5), (0, 0, 0)))
    assert orders == [LaunchOrder(2, 5), LaunchOrder(0, 1)]
    assert sum(order.count for order in orders) == policy.workers


@pytest.mark.parametrize("workers", [1, 2, 5, 9])
def test_launches_never_exceed_the_room(workers: int) -> None:
    policy = Policy(workers=workers, seconds_interval=1.0)
    for demand in [(7, 0, 0), (0, 7, 0), (3, 3, 3), (1, 2, 3)]:
        for existing in range(workers + 2):
            orders = plan_launches(policy, counts(demand, (0, 0, existing), workers=existing))
            assert sum(order.count for order in orders) <= max(0, workers - existing)
            assert all(order.count > 0 for order in orders)


# ----- launch_size_max ----------------------------------------------------------------------


def test_no_launch_size_max_means_one_launch_per_level() -> None:
    policy = Policy(workers=25_000, seconds_interval=1.0)
    assert plan_launches(policy, counts((25_000,), (0,))) == [LaunchOrder(0, 25_000)]


def test_a_big_round_is_split_into_launches_of_at_most_launch_size_max() -> None:
    policy = Policy(workers=25_000, seconds_interval=1.0, launch_size_max=10_000)
    assert plan_launches(policy, counts((25_000,), (0,))) == [
        LaunchOrder(0, 10_000),
        LaunchOrder(0, 10_000),
        LaunchOrder(0, 5_000),
    ]
    assert plan_launches(policy, counts((20_000,), (0,))) == [LaunchOrder(0, 10_000)] * 2
    assert plan_launches(policy, counts((10_000,), (0,))) == [LaunchOrder(0, 10_000)]


def test_launch_size_max_splits_each_level_on_its_own_from_the_top() -> None:
    policy = Policy(workers=100, seconds_interval=1.0, launch_size_max=3)
    assert plan_launches(policy, counts((5, 0, 7), (0, 0, 0))) == [
        LaunchOrder(2, 3),
        LaunchOrder(2, 3),
        LaunchOrder(2, 1),
        LaunchOrder(0, 3),
        LaunchOrder(0, 2),
    ]


def test_launch_size_max_of_one_launches_each_worker_alone() -> None:
    policy = Policy(workers=3, seconds_interval=1.0, launch_size_max=1)
    assert plan_launches(policy, counts((10,), (0,))) == [LaunchOrder(0, 1)] * 3


def test_launch_size_max_changes_how_workers_are_grouped_not_how_many() -> None:
    rng = random.Random(4)
    for _ in range(500):
        levels = rng.randint(1, 4)
        demand = tuple(rng.randint(0, 40) for _ in range(levels))
        supply = tuple(rng.randint(0, 10) for _ in range(levels))
        workers = sum(supply) + rng.randint(0, 5)
        total = rng.randint(1, 120)
        size = rng.randint(1, 15)
        whole = plan_launches(Policy(total, 1.0), counts(demand, supply, workers))
        split = plan_launches(
            Policy(total, 1.0, launch_size_max=size), counts(demand, supply, workers)
        )
        assert all(0 < order.count <= size for order in split)
        assert [order.level for order in split] == sorted(
            (order.level for order in split), reverse=True
        )
        for level in range(levels):
            at_level = [order.count for order in split if order.level == level]
            assert sum(at_level) == sum(o.count for o in whole if o.level == level)
            assert len(at_level) == -(-sum(at_level) // size)  # as few launches as may be
        assert sum(order.count for order in split) <= max(0, total - workers)


@pytest.mark.parametrize("size", [0, -1])
def test_policy_refuses_a_launch_size_max_below_one(size: int) -> None:
    with pytest.raises(ValueError, match="launch_size_max"):
        Policy(workers=2, seconds_interval=1.0, launch_size_max=size)


# ----- from the scheduler's load and the launch book ----------------------------------------


def test_plans_until_the_workers_on_their_way_meet_the_demand() -> None:
    scheduler = Scheduler(Limits(levels=3))
    book = LaunchBook(seconds_launch=30.0)
    policy = Policy(workers=4, seconds_interval=1.0)
    assert plan_launches(policy, counts_of(scheduler, book)) == []
    scheduler.push([spec(name) for name in "abcdef"], now=0.0)
    (order,) = plan_launches(policy, counts_of(scheduler, book))
    assert order == LaunchOrder(0, 4)
    book.order(order.level, order.count, now=0.0)
    assert plan_launches(policy, counts_of(scheduler, book)) == []


def test_plans_for_a_task_awaiting_a_verdict_then_one_level_up_after_a_memory_kill() -> None:
    scheduler = Scheduler(Limits(levels=3, seconds_wall=1000.0, workers=4))
    book = LaunchBook(seconds_launch=30.0)
    policy = Policy(workers=4, seconds_interval=1.0)
    scheduler.push([spec("a"), spec("b")], now=0.0)
    record = book.order(level=0, count=2, now=0.0)
    for index in range(2):
        admission = book.admit(record.id, index, record.token)
        scheduler.worker_connected(f"{record.id}-{index}", record.id, index, admission.level, 0.0)
    scheduler.worker_lost(f"{record.id}-0", now=1.0)
    book.left(record.id, 0)
    # "a" waits for its verdict and still needs a worker; "b" runs on the other one.
    assert plan_launches(policy, counts_of(scheduler, book)) == [LaunchOrder(0, 1)]
    scheduler.worker_ended(f"{record.id}-0", "memory", "OutOfMemoryError", now=2.0)
    assert plan_launches(policy, counts_of(scheduler, book)) == [LaunchOrder(1, 1)]


# ----- seconds_until_round ------------------------------------------------------------------


def test_first_round_may_run_at_once() -> None:
    policy = Policy(workers=2, seconds_interval=1.0)
    assert seconds_until_round(policy, last_round=None, failures=0, now=5.0) == 0.0
    assert seconds_until_round(policy, last_round=None, failures=3, now=5.0) == 0.0


def test_rounds_wait_out_the_interval() -> None:
    policy = Policy(workers=2, seconds_interval=1.0)
    assert seconds_until_round(policy, last_round=4.0, failures=0, now=4.25) == 0.75
    assert seconds_until_round(policy, last_round=4.0, failures=0, now=5.0) == 0.0
    assert seconds_until_round(policy, last_round=4.0, failures=0, now=50.0) == 0.0


def test_rounds_run_at_most_once_per_interval() -> None:
    policy = Policy(workers=2, seconds_interval=1.0)
    last_round: float | None = None
    rounds = []
    for step in range(100):  # an event every 0.1 s
        now = step / 10
        if seconds_until_round(policy, last_round, failures=0, now=now) == 0.0:
            rounds.append(now)
            last_round = now
    assert rounds == pytest.approx([float(second) for second in range(10)])


def test_backoff_doubles_with_each_failure_up_to_the_cap() -> None:
    policy = Policy(workers=2, seconds_interval=1.0)
    waits = [seconds_until_round(policy, 0.0, failures, now=0.0) for failures in range(8)]
    assert waits == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        SECONDS_BACKOFF_MAX,
        SECONDS_BACKOFF_MAX,
        SECONDS_BACKOFF_MAX,
    ]


def test_backoff_starts_from_half_a_second_for_short_intervals() -> None:
    policy = Policy(workers=2, seconds_interval=0.1)
    waits = [seconds_until_round(policy, 0.0, failures, now=0.0) for failures in range(4)]
    assert waits == pytest.approx([0.1, 1.0, 2.0, 4.0])


def test_backoff_is_capped() -> None:
    policy = Policy(workers=2, seconds_interval=1.0)
    for failures in (5, 6, 16, 17, 1000):
        assert seconds_until_round(policy, 0.0, failures, now=0.0) == SECONDS_BACKOFF_MAX
    assert seconds_until_round(policy, 0.0, 1000, now=SECONDS_BACKOFF_MAX - 1.0) == 1.0


def test_backoff_never_shortens_a_long_interval() -> None:
    policy = Policy(workers=2, seconds_interval=2 * SECONDS_BACKOFF_MAX)
    for failures in (0, 1, 5):
        assert seconds_until_round(policy, 0.0, failures, now=0.0) == 2 * SECONDS_BACKOFF_MAX
