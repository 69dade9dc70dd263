"""The launcher interface: start `count` workers at a resource level, stop them, poll them.

Launchers may be slow (AWS calls); the controller calls them from a thread pool, never from its
event loop. They decide nothing about how many workers to run.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("batchcrew.launchers")

ERRORS_KEPT = 200


@dataclass(frozen=True)
class LaunchRequest:
    """What a launcher needs to start workers.

    `environment` holds the variables every worker of the launch must see (controller address,
    one-use token, certificate fingerprint); the launcher adds `BATCHCREW_INDEX` per worker
    (AWS array jobs use `AWS_BATCH_JOB_ARRAY_INDEX` instead).

    Example:
        >>> LaunchRequest(launch="a1b2", count=2, level=0, environment={}, name="crew").count
        2
    """

    launch: str
    count: int
    level: int
    environment: Mapping[str, str]
    name: str


class Launcher(abc.ABC):
    """Base class of launchers: subclass it to start workers somewhere new.

    A subclass implements `launch`, `terminate` and `poll`; it may offer several resource
    `levels` (e.g. memory 4, 8, 16 GiB), level 0 being the smallest.

    Example:
        >>> class Nowhere(Launcher):
        ...     def launch(self, request): return None
        ...     def terminate(self, handle, indices=None): pass
        ...     def poll(self, handle): return {}
        >>> Nowhere().levels
        1
    """

    def __init__(self) -> None:
        self._errors: deque[str] = deque(maxlen=ERRORS_KEPT)
        self._errors_lock = threading.Lock()

    @property
    def levels(self) -> int:
        """How many resource levels this launcher offers (1: all workers alike)."""
        return 1

    def default_host(self) -> str:
        """The address the controller listens on when the user gives none: loopback here; a
        launcher whose workers run on other machines returns an address they can reach.

        Example:
            >>> from batchcrew.launchers.local import LocalLauncher
            >>> LocalLauncher().default_host()
            '127.0.0.1'
        """
        return "127.0.0.1"

    def describe_level(self, level: int) -> str:
        """A short text of what a level means, for logs and summaries.

        Example:
            >>> class One(Launcher):
            ...     def launch(self, request): return None
            ...     def terminate(self, handle, indices=None): pass
            ...     def poll(self, handle): return {}
            >>> One().describe_level(0)
            'level 0'
        """
        return f"level {level}"

    @abc.abstractmethod
    def launch(self, request: LaunchRequest) -> Any:
        """Start `request.count` workers; return a handle for `terminate` and `poll`."""

    @abc.abstractmethod
    def terminate(self, handle: Any, indices: Sequence[int] | None = None) -> None:
        """Stop the workers of a launch (`indices`: only those; None: all of them)."""

    @abc.abstractmethod
    def poll(self, handle: Any) -> dict[int, str]:
        """Workers of a launch that have ended, by index, with the reason they ended."""

    def close(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Release what the launcher holds (thread pools, clients). Called at controller end."""

    def record_error(self, message: str) -> None:
        """Keep an error for `errors()` and log it.

        Example:
            >>> class One(Launcher):
            ...     def launch(self, request): return None
            ...     def terminate(self, handle, indices=None): pass
            ...     def poll(self, handle): return {}
            >>> launcher = One()
            >>> launcher.record_error("launch 1: no capacity")
            >>> launcher.errors()
            ['launch 1: no capacity']
        """
        logger.warning("%s", message)
        with self._errors_lock:
            self._errors.append(message)

    def errors(self) -> list[str]:
        """The most recent launch and termination errors, oldest first."""
        with self._errors_lock:
            return list(self._errors)
