"""The autoscaler: how many workers at which level, and when a launch round may run."""

from __future__ import annotations

import pytest

from batchcrew.autoscale import (
    SECONDS_BACKOFF_MAX,
    LaunchOrder,
    Policy,
    plan_launches,
    seconds_until_round,
)
from batchcrew.scheduler import Counts, Limits, Scheduler, TaskSpec


def counts(demand: tuple[int, ...], supply: tuple[int, ...], workers: int = 0) -> Counts:
    return Counts(demand=demand, supply=supply, workers=workers)


def spec(name: str) -> TaskSpec:
    return TaskSpec(name, f"f({name!r})", "key", b"fn", b"args", 1)


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


def test_plans_from_the_scheduler_counts_until_supply_meets_demand() -> None:
    scheduler = Scheduler(Limits(levels=3))
    policy = Policy(workers=4, seconds_interval=1.0)
    assert plan_launches(policy, scheduler.counts()) == []
    scheduler.push([spec(name) for name in "abcdef"], now=0.0)
    (order,) = plan_launches(policy, scheduler.counts())
    assert order == LaunchOrder(0, 4)
    scheduler.launch_started("L", order.level, order.count, now=0.0)
    assert plan_launches(policy, scheduler.counts()) == []


def test_plans_a_higher_level_worker_for_a_task_whose_worker_crashed() -> None:
    scheduler = Scheduler(Limits(levels=3, seconds_wall=1000.0))
    policy = Policy(workers=4, seconds_interval=1.0)
    scheduler.push([spec("a"), spec("b")], now=0.0)
    scheduler.launch_started("L", level=0, count=2, now=0.0)
    scheduler.worker_connected("L-0", "L", 0, now=0.0)
    scheduler.worker_connected("L-1", "L", 1, now=0.0)
    scheduler.worker_lost("L-0", now=1.0)  # "a" now needs level 1; "b" runs on L-1
    assert plan_launches(policy, scheduler.counts()) == [LaunchOrder(1, 1)]


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


def test_backoff_doubles_with_each_failure() -> None:
    policy = Policy(workers=2, seconds_interval=1.0)
    waits = [seconds_until_round(policy, 0.0, failures, now=0.0) for failures in range(5)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]


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
