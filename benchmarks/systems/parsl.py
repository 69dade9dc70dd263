"""parsl's HighThroughputExecutor on this machine: a LocalProvider block of worker processes,
an interchange process between them and the client, CurveZMQ encryption on (its default)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import measures
from machine import status_megabytes
from tasks import negate

if TYPE_CHECKING:
    from parsl.executors import HighThroughputExecutor

LABEL = "parsl HTEX"
ENVIRONMENT = "parsl"


def missing() -> str | None:
    """Why parsl cannot run here, or None."""
    return measures.not_installed("parsl", ENVIRONMENT)


def version() -> str:
    """The package's version (the executor's modules imported)."""
    import parsl

    importlib.import_module("parsl.executors")  # loaded here, not under a clock
    return str(parsl.__version__)


class _ParslPool:
    def __init__(self) -> None:
        self.apps: dict[Callable[[Any], Any], Callable[[Any], Future[Any]]] = {}

    def _app(self, fn: Callable[[Any], Any]) -> Callable[[Any], Future[Any]]:
        from parsl import python_app

        if fn not in self.apps:
            self.apps[fn] = python_app(fn)
        return self.apps[fn]

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        app = self._app(fn)
        return [future.result() for future in [app(item) for item in items]]

    def call(self, fn: Callable[[Any], Any], item: Any) -> Any:
        return self._app(fn)(item).result()


@contextmanager
def _loaded(workers: int, blocks: int) -> Iterator[HighThroughputExecutor]:
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    executor = HighThroughputExecutor(
        label="htex",
        address="127.0.0.1",
        max_workers_per_node=max(workers, 1),
        cores_per_worker=1 / max(workers, 1),  # the worker count, not the cores, sets the size
        provider=LocalProvider(init_blocks=blocks, min_blocks=blocks, max_blocks=blocks),
    )
    dataflow = parsl.load(Config(executors=[executor], strategy="none", run_dir="runinfo"))
    try:
        yield executor
    finally:
        dataflow.cleanup()
        parsl.clear()


@contextmanager
def _open_pool(workers: int) -> Iterator[_ParslPool]:
    with _loaded(workers, blocks=1):
        yield _ParslPool()


def _queued_memory(count: int) -> float:
    with _loaded(2, blocks=0) as executor:  # no block of workers: tasks wait at the interchange
        app = _ParslPool()._app(negate)
        for number in range(count):
            app(number)
        interchange = executor.interchange_proc
        assert interchange is not None
        _until_steady(interchange.pid)
        return status_megabytes("VmHWM") + status_megabytes("VmHWM", interchange.pid)


def _until_steady(pid: int) -> None:
    """Wait until the interchange has taken every task: its memory stops growing for 1 s."""
    deadline = time.monotonic() + measures.SECONDS_WORKERS_READY
    readings = [-1.0]
    while len(readings) < 5 or len(set(readings[-5:])) > 1:
        if time.monotonic() > deadline:
            raise TimeoutError("the interchange's memory did not settle")
        time.sleep(0.25)
        readings.append(status_megabytes("VmRSS", pid))


def run(key: str, size: Mapping[str, float]) -> float:
    """Take one measure once."""
    return measures.run(key, size, _open_pool, _queued_memory)
