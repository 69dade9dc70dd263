"""batchcrew as users run it: TLS on (the default), workers as local processes."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import measures
from machine import status_megabytes
from tasks import negate

if TYPE_CHECKING:
    import batchcrew as bc

LABEL = "batchcrew (TLS)"
ENVIRONMENT = None


def missing() -> str | None:
    """Why batchcrew cannot run here, or None."""
    return None if importlib.util.find_spec("batchcrew") else "batchcrew is not installed"


def version() -> str:
    """The package's version (the controller's modules imported)."""
    import batchcrew as bc

    importlib.import_module("batchcrew.controller")  # loaded here, not under a clock
    return bc.__version__


class _CrewPool:
    def __init__(self, crew: bc.Controller) -> None:
        self.crew = crew
        self.executor = crew.executor()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return self.crew.map(fn, items).values()

    def call(self, fn: Callable[[Any], Any], item: Any) -> Any:
        return self.executor.submit(fn, item).result()


@contextmanager
def _open_pool(workers: int) -> Iterator[_CrewPool]:
    import batchcrew as bc

    with bc.Controller(workers=workers, seconds_idle=600, seconds_launch=300) as crew:
        yield _CrewPool(crew)


def _queued_memory(count: int) -> float:
    import batchcrew as bc
    from launchers import IdleLauncher

    crew = bc.Controller(IdleLauncher(), workers=2)
    try:
        crew.walk(negate, range(count))
        crew.cancel([])  # runs on the event loop after the pushes: every task is queued there
        return status_megabytes("VmHWM")
    finally:
        crew.terminate()


def run(key: str, size: Mapping[str, float]) -> float:
    """Take one measure once."""
    return measures.run(key, size, _open_pool, _queued_memory)
