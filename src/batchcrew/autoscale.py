"""The autoscaler: how many workers to launch, at which resource level, and when.

A pure function of per-level demand and supply and of the time; it never launches anything.
"""

from __future__ import annotations

from dataclasses import dataclass

SECONDS_BACKOFF_MAX = 30.0
"""The longest pause between launch rounds after launches keep failing."""


@dataclass(frozen=True, slots=True)
class LaunchOrder:
    """Launch `count` workers at resource level `level`.

    Example:
        >>> LaunchOrder(level=0, count=4).count
        4
    """

    level: int
    count: int


@dataclass(frozen=True, slots=True)
class Policy:
    """The autoscaler's settings: the most workers at once, the shortest time between launch
    rounds, and the most workers one launch may hold (None: no limit).

    Example:
        >>> Policy(workers=4, seconds_interval=0.25).launch_size_max is None
        True
    """

    workers: int
    seconds_interval: float
    launch_size_max: int | None = None

    def __post_init__(self) -> None:
        size = self.launch_size_max
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"launch_size_max must be an integer >= 1 or None, not {size!r}")


@dataclass(frozen=True, slots=True)
class Counts:
    """What the autoscaler decides from.

    `demand[k]`: tasks that need a worker of level k; `supply[k]`: workers of level k that
    take more work, connected or on their way; `workers`: every worker connected or on its way.

    Example:
        >>> Counts(demand=(3,), supply=(1,), workers=1).workers
        1
    """

    demand: tuple[int, ...]
    supply: tuple[int, ...]
    workers: int


def seconds_until_round(
    policy: Policy, last_round: float | None, failures: int, now: float
) -> float:
    """Seconds to wait before the next launch round (0: a round may run now).

    Rounds are at least `seconds_interval` apart, so a burst of pushes becomes one launch of
    many workers (one AWS array job); after launches fail in a row the pause doubles, up to
    `SECONDS_BACKOFF_MAX` (or `seconds_interval` when that is longer).

    Example:
        >>> seconds_until_round(Policy(2, 1.0), last_round=None, failures=0, now=5.0)
        0.0
        >>> seconds_until_round(Policy(2, 1.0), last_round=4.5, failures=0, now=5.0)
        0.5
    """
    if last_round is None:
        return 0.0
    pause = policy.seconds_interval
    if failures:
        backoff = max(pause, 0.5) * 2 ** min(failures, 16)
        pause = max(pause, min(backoff, SECONDS_BACKOFF_MAX))
    return max(0.0, last_round + pause - now)


def plan_launches(policy: Policy, counts: Counts) -> list[LaunchOrder]:
    """Decide the launches of one round.

    Tasks that need level k can run on workers of level k or higher, so levels are served from
    the top down: a worker launched for a higher level also counts as supply for lower ones.
    The total never exceeds `policy.workers`; a level's workers go out in as few launches as
    `launch_size_max` allows.

    Example:
        >>> plan_launches(Policy(workers=4, seconds_interval=0.25),
        ...               Counts(demand=(10,), supply=(1,), workers=1))
        [LaunchOrder(level=0, count=3)]
    """
    room = policy.workers - counts.workers
    orders: list[LaunchOrder] = []
    demand_above = supply_above = 0
    size = policy.launch_size_max
    for level in reversed(range(len(counts.demand))):
        demand_above += counts.demand[level]
        supply_above += counts.supply[level]
        count = min(demand_above - supply_above, room)
        if count <= 0:
            continue
        room -= count
        supply_above += count
        while count > 0:
            part = count if size is None else min(count, size)
            orders.append(LaunchOrder(level, part))
            count -= part
    return orders
