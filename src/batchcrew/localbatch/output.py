"""What a container of the local engine wrote: its output, kept in memory, read back or followed.

Owns the records (a line, or a piece of a long line, of standard output or error, with the time
it was read), the cap on the bytes kept, and reading them as Docker's logs endpoint does: by
stream, time and tail, or following them while the container runs. It starts no process.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

__all__ = [
    "LINE_BYTES_MAX",
    "LOG_BYTES_MAX",
    "STDERR",
    "STDOUT",
    "ContainerOutput",
    "LogRecord",
]

logger = logging.getLogger("batchcrew.localbatch.output")

STDOUT = 1
"""Stream type of standard output in Docker's multiplexed log frames."""

STDERR = 2
"""Stream type of standard error in Docker's multiplexed log frames."""

LINE_BYTES_MAX = 16 * 1024
"""Docker's log drivers cut lines longer than this into several records; so do we."""

LOG_BYTES_MAX = 64 * 1024 * 1024
"""Default cap on the output kept per container; the oldest records go first."""


@dataclass(frozen=True)
class LogRecord:
    """One line (or piece of a long line) a container wrote, with the time it was read.

    Example:
        >>> LogRecord(STDOUT, 1_700_000_000_000_000_000, b"hello\\n").stream
        1
    """

    stream: int
    timestamp_ns: int
    data: bytes


class ContainerOutput:
    """The output of one container's runs, at most `bytes_max` bytes of it (the newest).

    The container says when a run starts and ends, so that `follow` knows when to stop.

    Example:
        >>> output = ContainerOutput("job", bytes_max=10)
        >>> output.append(LogRecord(STDOUT, 1, b"first\\n"))
        >>> output.append(LogRecord(STDERR, 2, b"second\\n"))
        >>> [record.data for record in output.logs(frozenset({STDOUT, STDERR}))]
        [b'second\\n']
    """

    def __init__(self, name: str, bytes_max: int = LOG_BYTES_MAX) -> None:
        self._name = name
        self._bytes_max = bytes_max
        self._condition = threading.Condition()
        self._records: collections.deque[LogRecord] = collections.deque()
        self._records_dropped = 0
        self._bytes = 0
        self._running = False

    def run_started(self) -> None:
        """A run of the container started: followers wait for what it writes.

        Example:
            >>> ContainerOutput("job").run_started()
        """
        with self._condition:
            self._running = True
            self._condition.notify_all()

    def run_ended(self) -> None:
        """The run ended: followers stop once they have what it wrote.

        Example:
            >>> ContainerOutput("job").run_ended()
        """
        with self._condition:
            self._running = False
            self._condition.notify_all()

    def read(self, pipe: IO[bytes], stream: int) -> None:
        """Keep every line read from `pipe` until its end, then close it.

        Example:
            >>> import io
            >>> output = ContainerOutput("job")
            >>> output.read(io.BytesIO(b"one\\ntwo\\n"), STDOUT)
            >>> [record.data for record in output.logs(frozenset({STDOUT}))]
            [b'one\\n', b'two\\n']
        """
        with pipe:
            while chunk := pipe.readline(LINE_BYTES_MAX):
                self.append(LogRecord(stream, time.time_ns(), chunk))

    def append(self, record: LogRecord) -> None:
        """Keep `record`, dropping the oldest records beyond the cap.

        Example:
            >>> ContainerOutput("job").append(LogRecord(STDOUT, 1, b"hello\\n"))
        """
        with self._condition:
            self._records.append(record)
            self._bytes += len(record.data)
            while self._bytes > self._bytes_max and self._records:
                dropped = self._records.popleft()
                self._bytes -= len(dropped.data)
                self._records_dropped += 1
                if self._records_dropped == 1:
                    logger.warning(
                        "container %s wrote over %d bytes; dropping its oldest output",
                        self._name,
                        self._bytes_max,
                    )
            self._condition.notify_all()

    def logs(
        self,
        streams: frozenset[int],
        since_ns: int = 0,
        until_ns: int | None = None,
        tail: int | None = None,
    ) -> list[LogRecord]:
        """The records kept so far from `streams`, between `since_ns` and `until_ns`.

        Example:
            >>> output = ContainerOutput("job")
            >>> for n in range(3):
            ...     output.append(LogRecord(STDOUT, n, b"%d\\n" % n))
            >>> [record.data for record in output.logs(frozenset({STDOUT}), since_ns=1, tail=1)]
            [b'2\\n']
        """
        with self._condition:
            records = list(self._records)
        selected = [record for record in records if _wanted(record, streams, since_ns, until_ns)]
        if tail is not None:
            selected = selected[len(selected) - tail :] if tail > 0 else []
        return selected

    def follow(
        self,
        streams: frozenset[int],
        since_ns: int = 0,
        until_ns: int | None = None,
        tail: int | None = None,
    ) -> Iterator[LogRecord]:
        """Like `logs`, then every new record as it comes, until the run ends.

        Example:
            >>> output = ContainerOutput("job")
            >>> output.append(LogRecord(STDOUT, 1, b"done\\n"))
            >>> [record.data for record in output.follow(frozenset({STDOUT}))]  # no run: no wait
            [b'done\\n']
        """
        with self._condition:
            position = self._records_dropped + len(self._records)
        yield from self.logs(streams, since_ns, until_ns, tail)
        while True:
            with self._condition:
                self._condition.wait_for(functools.partial(self._has_news, position))
                start = max(position - self._records_dropped, 0)
                new = list(self._records)[start:]
                position = self._records_dropped + len(self._records)
                finished = not self._running
            for record in new:
                if _wanted(record, streams, since_ns, until_ns):
                    yield record
            if finished:
                return

    def _has_news(self, position: int) -> bool:
        return self._records_dropped + len(self._records) > position or not self._running


def _wanted(
    record: LogRecord, streams: frozenset[int], since_ns: int, until_ns: int | None
) -> bool:
    return (
        record.stream in streams
        and record.timestamp_ns >= since_ns
        and (until_ns is None or record.timestamp_ns <= until_ns)
    )
