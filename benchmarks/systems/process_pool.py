"""concurrent.futures.ProcessPoolExecutor: the floor (fork, pipes, no network, no TLS)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import measures
from machine import status_megabytes
from tasks import nap, negate

LABEL = "ProcessPoolExecutor"
ENVIRONMENT = None


def missing() -> str | None:
    """Nothing to install: the standard library."""
    return None


def version() -> str:
    """The Python version (the pool comes with it, imported already)."""
    return f"Python {platform.python_version()}"


class _ExecutorPool:
    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self.executor = executor

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return list(self.executor.map(fn, items))

    def call(self, fn: Callable[[Any], Any], item: Any) -> Any:
        return self.executor.submit(fn, item).result()


@contextmanager
def _open_pool(workers: int) -> Iterator[_ExecutorPool]:
    with concurrent.futures.ProcessPoolExecutor(workers) as executor:
        yield _ExecutorPool(executor)


def _queued_memory(count: int) -> float:
    workers = 2
    executor = concurrent.futures.ProcessPoolExecutor(workers)
    try:
        for _ in range(workers):
            executor.submit(nap, 600)  # every worker busy: nothing queued runs
        for number in range(count):
            executor.submit(negate, number)
        return status_megabytes("VmHWM")
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        for process in multiprocessing.active_children():
            process.terminate()
            process.join()


def run(key: str, size: Mapping[str, float]) -> float:
    """Take one measure once."""
    return measures.run(key, size, _open_pool, _queued_memory)
