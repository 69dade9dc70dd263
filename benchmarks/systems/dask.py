"""dask.distributed over TLS: a LocalCluster of worker processes (one thread each) with a
temporary certificate (`Security.temporary()`), the scheduler in the client's process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import measures
from machine import status_megabytes
from tasks import negate

if TYPE_CHECKING:
    from distributed import Client

LABEL = "dask.distributed (TLS)"
ENVIRONMENT = "dask"


def missing() -> str | None:
    """Why dask cannot run here, or None."""
    return measures.not_installed("distributed", ENVIRONMENT)


def version() -> str:
    """The package's version."""
    import distributed

    return str(distributed.__version__)


class _DaskPool:
    def __init__(self, client: Client) -> None:
        self.client = client

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        # pure=False: equal arguments are distinct tasks, not one cached result
        return list(self.client.gather(self.client.map(fn, items, pure=False)))

    def call(self, fn: Callable[[Any], Any], item: Any) -> Any:
        return self.client.submit(fn, item, pure=False).result()


@contextmanager
def _cluster(workers: int) -> Iterator[Client]:
    from distributed import Client, LocalCluster
    from distributed.security import Security

    security = Security.temporary()
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            security=security,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster, security=security) as client,
    ):
        yield client


@contextmanager
def _open_pool(workers: int) -> Iterator[_DaskPool]:
    with _cluster(workers) as client:
        yield _DaskPool(client)


def _queued_memory(count: int) -> float:
    with _cluster(0) as client:
        futures = client.map(negate, range(count), pure=False)
        scheduler = client.cluster.scheduler  # in this process: its memory is the controller's
        deadline = time.monotonic() + measures.SECONDS_WORKERS_READY
        while len(scheduler.tasks) < len(futures):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(scheduler.tasks)} of {count} tasks reached the scheduler")
            time.sleep(0.05)
        return status_megabytes("VmHWM")


def run(key: str, size: Mapping[str, float]) -> float:
    """Take one measure once."""
    return measures.run(key, size, _open_pool, _queued_memory)
