"""Task functions for integration tests, importable by worker processes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import subprocess
import sys
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


class MarkWhenLoaded:
    """Pickles to a call that creates a directory: whoever unpickles it leaves a mark."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.path,))


def mark_when_loaded(path: str) -> MarkWhenLoaded:
    return MarkWhenLoaded(path)


def result_over_the_limit(limit: int) -> bytes:
    """Lower this worker's result limit (the worker reads it when the task returns), then
    return a result just over it."""
    from batchcrew import protocol

    protocol.BODY_BYTES_MAX = limit
    return b"x" * (limit + 1)


def print_megabytes(megabytes: int) -> int:
    line = "x" * 1023 + "\n"
    for _ in range(megabytes * 1024):
        sys.stdout.write(line)
    sys.stdout.flush()
    return megabytes


def close_every_fd() -> str:
    os.closerange(0, os.sysconf("SC_OPEN_MAX"))
    return "closed"


def start_children(record: str) -> list[int]:
    """Start a child by exec and one by fork, both sleeping; write their pids to `record`."""
    started = subprocess.Popen(["sleep", "120"])
    forked = os.fork()
    if forked == 0:
        try:
            time.sleep(120)
        finally:
            os._exit(0)
    pids = [started.pid, forked]
    Path(record).write_text(" ".join(map(str, pids)))
    return pids


def start_children_and_crash(record: str) -> None:
    start_children(record)
    os.kill(os.getpid(), signal.SIGKILL)


def start_children_and_sleep(record: str) -> None:
    start_children(record)
    time.sleep(120)


def start_children_and_get_stuck(record: str) -> None:
    """As stubborn as a task gets: it ignores SIGTERM, and so do its children (they inherit
    that, through exec too); then it blocks the signals that stop tasks and sleeps in C code
    that holds the interpreter, so no Python code of its worker runs: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    start_children(record)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGALRM})
    ctypes.PyDLL(None).sleep(120)


def child_holds_the_connection_and_crash(record: str) -> None:
    """Hand every socket of this worker to a child that outlives it, then die."""
    sockets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets.append(int(fd))
    holder = subprocess.Popen(["sleep", "120"], pass_fds=sockets)
    Path(record).write_text(str(holder.pid))
    os.kill(os.getpid(), signal.SIGKILL)


def square_after(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


def allocate_and_touch(megabytes: int) -> int:
    """Hold `megabytes` of memory, every page written, for a moment; return the size."""
    block = bytearray(megabytes * 2**20)
    for start in range(0, len(block), 4096):
        block[start] = 1
    return megabytes


def interrupt() -> None:
    raise KeyboardInterrupt
