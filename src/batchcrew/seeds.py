"""Per-task seeds derived from the controller's seed and the task's place in the push order."""

from __future__ import annotations

import hashlib
import secrets

SEED_BITS = 63


def controller_seed(seed: int | None) -> int:
    """The controller's seed: the one given, or a fresh random one.

    Example:
        >>> controller_seed(42)
        42
    """
    if seed is None:
        return secrets.randbits(SEED_BITS)
    return seed


def task_seed(seed: int, index: int) -> int:
    """The seed of the `index`-th task pushed to a controller seeded with `seed`.

    A keyed hash spawns independent streams: the same controller seed gives the same task
    seeds whichever worker runs each task, and neighbouring indices share no structure.

    Example:
        >>> task_seed(1, 0) == task_seed(1, 0) != task_seed(1, 1)
        True
    """
    return TaskSeeds(seed)(index)


class TaskSeeds:
    """`task_seed` for one controller seed, its keyed hash set up once (a copy per task).

    Example:
        >>> TaskSeeds(1)(5) == task_seed(1, 5)
        True
    """

    __slots__ = ("_keyed",)

    def __init__(self, seed: int) -> None:
        key = seed.to_bytes(16, "big", signed=True)
        self._keyed = hashlib.blake2b(key=key, digest_size=8)

    def __call__(self, index: int) -> int:
        hashed = self._keyed.copy()
        hashed.update(index.to_bytes(8, "big"))
        return int.from_bytes(hashed.digest(), "big") >> (64 - SEED_BITS)


def numpy_seed(seed: int) -> list[int]:
    """The seed of numpy's global generator for a task: derived apart from `seed` itself, so
    numpy's draws do not repeat those of `random` (both are Mersenne Twisters).

    Example:
        >>> words = numpy_seed(task_seed(1, 0))
        >>> len(words), all(0 <= word < 2**32 for word in words)
        (4, True)
    """
    digest = hashlib.blake2b(seed.to_bytes(8, "big"), person=b"numpy", digest_size=16).digest()
    return [int.from_bytes(digest[start : start + 4], "big") for start in range(0, 16, 4)]
