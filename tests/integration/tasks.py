"""Task functions for integration tests, importable by worker processes."""

from __future__ import annotations

import os
import random
import signal
import time
import warnings
from pathlib import Path


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    warnings.warn(f"about to fail: {message}", UserWarning, stacklevel=1)
    raise ValueError(message)


def make_generator() -> object:
    return (x for x in range(3))


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_once(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        os._exit(1)
    return "survived"


def draw() -> float:
    return random.random()


def pid(_: object = None) -> int:
    return os.getpid()


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def busy_until_marker(marker: str) -> str:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(60)
    return "not cancelled"


def huge_error() -> None:
    raise ValueError("x" * 100_000)


def many_warnings() -> str:
    for index in range(5_000):
        warnings.warn(f"warning {index}", UserWarning, stacklevel=1)
    return "done"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def unprintable_error() -> None:
    raise _Unprintable()


def sleep_then_mark(seconds: float, marker: str) -> str:
    time.sleep(seconds)
    Path(marker).write_text("ran")
    return "ran"


def draws() -> tuple[float, float]:
    import numpy

    return random.random(), float(numpy.random.random())


class _HoldsALock(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        import threading

        self.lock = threading.Lock()


def raise_unpicklable() -> None:
    raise _HoldsALock()


def _load_only_on_a_worker(message: str) -> Exception:
    if "BATCHCREW_LAUNCH" not in os.environ:
        raise RuntimeError("this exception loads only on a worker")
    return ValueError(message)


class _WorkerOnly(Exception):
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_load_only_on_a_worker, (str(self),))


def raise_only_the_worker_can_load() -> None:
    raise _WorkerOnly("only a worker can load me")


def mark_initialized(folder: str) -> None:
    with open(Path(folder) / str(os.getpid()), "a") as mark:
        mark.write("x")


def initialized_pid(_: object) -> int:
    time.sleep(0.01)  # long enough for both workers to take some
    return os.getpid()


def allocate_and_touch(megabytes: int) -> int:
    """Hold `megabytes` of memory, every page written, for a moment; return the size."""
    block = bytearray(megabytes * 2**20)
    for start in range(0, len(block), 4096):
        block[start] = 1
    return megabytes


def interrupt() -> None:
    raise KeyboardInterrupt
