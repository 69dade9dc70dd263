"""A container of the local engine: one command run as a local process in its own process group.

Owns a container's life (created, running, exited, removed), its process group, its captured
output and its exit status as Docker reports it, a kill for memory included (the limit itself is
`memory.py`'s). It must not speak HTTP nor decide what the environment holds.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from batchcrew.localbatch.memory import Confinement, MemoryLimits

logger = logging.getLogger("batchcrew.localbatch.containers")

STDOUT = 1
"""Stream type of standard output in Docker's multiplexed log frames."""

STDERR = 2
"""Stream type of standard error in Docker's multiplexed log frames."""

LINE_BYTES_MAX = 16 * 1024
"""Docker's log drivers cut lines longer than this into several records; so do we."""

LOG_BYTES_MAX = 64 * 1024 * 1024
"""Default cap on the output kept per container; the oldest records go first."""

ZERO_TIME = "0001-01-01T00:00:00Z"
"""How Docker writes a time that has not happened (StartedAt of a container never started)."""

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
"""The conditions Docker's `POST /containers/{id}/wait` accepts."""

SECONDS_EXIT = 10.0
"""How long to wait for a killed process group to be reaped before giving up on it."""


class RequestError(Exception):
    """A request the engine cannot honour; `status` is the HTTP status Docker answers with.

    Example:
        >>> error = RequestError(409, "Container abc is not running")
        >>> error.status, str(error)
        (409, 'Container abc is not running')
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


@dataclass(frozen=True)
class ContainerSpec:
    """What `POST /containers/create` asked for, as far as a local process can honour it.

    `memory_bytes` is the memory limit (Docker's `HostConfig.Memory`; 0 for none).

    Example:
        >>> spec = ContainerSpec(name="job-1", image="python", argv=("python", "-V"))
        >>> spec.argv[0]
        'python'
    """

    name: str
    image: str
    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    host_config: Mapping[str, Any] = field(default_factory=dict)
    memory_bytes: int = 0


ExitHook = Callable[[ContainerSpec, int, bool], None]
"""Told of every exit of a container's main process (spec, exit code, killed for memory), before
anyone can see the container as exited."""


def format_timestamp(timestamp_ns: int) -> str:
    """Format nanoseconds since the epoch the way Docker writes log timestamps (RFC 3339, UTC).

    Example:
        >>> format_timestamp(1_700_000_000_123_456_789)
        '2023-11-14T22:13:20.123456789Z'
    """
    seconds, nanoseconds = divmod(timestamp_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanoseconds:09d}Z"


def exit_status(returncode: int) -> int:
    """Turn a `subprocess` return code into Docker's exit code (128 + signal when killed).

    Example:
        >>> exit_status(3), exit_status(-9)
        (3, 137)
    """
    return returncode if returncode >= 0 else 128 - returncode


class Container:
    """One container: its command runs as a local process group, its output is kept in memory.

    States follow Docker's: `created` → `running` → `exited` (and `running` again on a restart);
    `removed` ends it. When the main process exits, the rest of its process group is killed,
    as Docker ends every process of a container whose main process ends. With `memory_limits`
    and a `memory_bytes` in its spec, each run is confined to that much memory; a run the
    kernel kills for reaching it is reported as Docker reports it (`State.OOMKilled`, exit
    code 137). `on_exit` hears of every exit first.

    Example:
        >>> spec = ContainerSpec(name="hello", image="any", argv=("echo", "hi"))
        >>> container = Container("0" * 64, spec)
        >>> container.start({"PATH": "/bin:/usr/bin"}, ".")
        >>> container.wait("not-running")
        (0, '')
        >>> container.status
        'exited'
    """

    def __init__(
        self,
        container_id: str,
        spec: ContainerSpec,
        *,
        log_bytes_max: int = LOG_BYTES_MAX,
        memory_limits: MemoryLimits | None = None,
        on_exit: ExitHook | None = None,
    ) -> None:
        self.id = container_id
        self.spec = spec
        self.created_ns = time.time_ns()
        self._log_bytes_max = log_bytes_max
        self._memory_limits = memory_limits if spec.memory_bytes else None
        self._on_exit = on_exit
        self._confinement: Confinement | None = None
        self._oom_killed = False
        self._condition = threading.Condition()
        self._status = "created"
        self._pid = 0
        self._group_signallable = False
        self._exit_code = 0
        self._error = ""
        self._started_ns = 0
        self._finished_ns = 0
        self._exits = 0
        self._records: collections.deque[LogRecord] = collections.deque()
        self._records_dropped = 0
        self._log_bytes = 0

    @property
    def status(self) -> str:
        """Docker's `State.Status`: created, running, exited or removed.

        Example:
            >>> Container("0" * 64, ContainerSpec("c", "any", ("true",))).status
            'created'
        """
        with self._condition:
            return self._status

    @property
    def pid(self) -> int:
        """The main process's id while running (it leads the process group), else 0.

        Example:
            >>> Container("0" * 64, ContainerSpec("c", "any", ("true",))).pid
            0
        """
        with self._condition:
            return self._pid if self._status == "running" else 0

    def start(self, environment: Mapping[str, str], cwd: str) -> None:
        """Run the command in a new session; raise `RequestError` (304) if already running.

        Example:
            >>> container = Container("1" * 64, ContainerSpec("job", "any", ("pwd",)))
            >>> container.start({"PATH": "/usr/bin:/bin"}, "/")
            >>> container.wait()
            (0, '')
            >>> [record.data for record in container.logs(frozenset({STDOUT}))]
            [b'/\\n']
        """
        with self._condition:
            if self._status == "running":
                raise RequestError(304, "container already started")
            if self._status == "removed":
                raise RequestError(404, f"No such container: {self.id}")
            try:
                process = subprocess.Popen(
                    self._confined_argv(environment),
                    env=dict(environment),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as error:
                self._release_confinement()
                self._exit_code = 127 if isinstance(error, FileNotFoundError) else 126
                self._error = f'exec: "{self.spec.argv[0]}": {error.strerror or error}'
                message = f"failed to start container {self.id}: {self._error}"
                raise RequestError(400, message) from None
            self._pid = process.pid
            self._group_signallable = True
            self._status = "running"
            self._exit_code = 0
            self._error = ""
            self._oom_killed = False
            self._started_ns = time.time_ns()
            self._finished_ns = 0
        assert process.stdout is not None and process.stderr is not None
        readers = [
            threading.Thread(target=self._read, args=(pipe, stream), daemon=True)
            for pipe, stream in ((process.stdout, STDOUT), (process.stderr, STDERR))
        ]
        for reader in readers:
            reader.start()
        threading.Thread(target=self._watch, args=(process, readers), daemon=True).start()
        logger.info("container %s started: pid %d, %s", self.spec.name, process.pid, self.spec.argv)

    def _confined_argv(self, environment: Mapping[str, str]) -> tuple[str, ...]:
        """The command, behind the memory limit of a new run when there is one.

        The shell in front of a limited command would find a missing program only once started
        (exit code 127), so the program is looked for first: starting fails as without a limit.
        """
        if self._memory_limits is None:
            return self.spec.argv
        if shutil.which(self.spec.argv[0], path=environment.get("PATH", os.defpath)) is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.spec.argv[0])
        try:
            self._confinement = self._memory_limits.confine(self.id[:16], self.spec.memory_bytes)
        except OSError as error:
            raise RequestError(
                500, f"cannot limit the memory of container {self.id}: {error}"
            ) from None
        return self._confinement.command(self.spec.argv)

    def _release_confinement(self) -> bool:
        """End the run's memory limit; whether the kernel killed the run for memory."""
        confinement, self._confinement = self._confinement, None
        if confinement is None:
            return False
        oom_killed = confinement.oom_killed()
        confinement.release()
        return oom_killed

    def _read(self, pipe: IO[bytes], stream: int) -> None:
        with pipe:
            while chunk := pipe.readline(LINE_BYTES_MAX):
                self._append(LogRecord(stream, time.time_ns(), chunk))

    def _append(self, record: LogRecord) -> None:
        with self._condition:
            self._records.append(record)
            self._log_bytes += len(record.data)
            while self._log_bytes > self._log_bytes_max and self._records:
                dropped = self._records.popleft()
                self._log_bytes -= len(dropped.data)
                self._records_dropped += 1
                if self._records_dropped == 1:
                    logger.warning(
                        "container %s wrote over %d bytes; dropping its oldest output",
                        self.spec.name,
                        self._log_bytes_max,
                    )
            self._condition.notify_all()

    def _watch(self, process: subprocess.Popen[bytes], readers: list[threading.Thread]) -> None:
        if hasattr(os, "waitid"):
            # Wait for the exit without reaping, so the group id cannot be reused while we kill.
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        with self._condition:
            self._signal_group(signal.SIGKILL)
            self._group_signallable = False
        returncode = process.wait()
        oom_killed = self._release_confinement()
        for reader in readers:
            reader.join(SECONDS_EXIT)
            if reader.is_alive():
                logger.warning(
                    "container %s: a process outside its group keeps its output open",
                    self.spec.name,
                )
        if oom_killed:
            logger.warning(
                "container %s was killed for using more than its %d bytes of memory",
                self.spec.name,
                self.spec.memory_bytes,
            )
        if self._on_exit is not None:
            try:
                self._on_exit(self.spec, exit_status(returncode), oom_killed)
            except Exception:
                logger.exception("container %s: its exit could not be reported", self.spec.name)
        with self._condition:
            self._exit_code = exit_status(returncode)
            self._oom_killed = oom_killed
            self._finished_ns = time.time_ns()
            if self._status == "running":
                self._status = "exited"
            self._exits += 1
            self._condition.notify_all()
        logger.info("container %s exited with status %d", self.spec.name, self._exit_code)

    def _signal_group(self, signal_number: int) -> None:
        if not self._group_signallable:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._pid, signal_number)

    def kill(self, signal_number: int = signal.SIGKILL) -> None:
        """Send a signal to the whole process group; `RequestError` (409) if not running.

        Example:
            >>> container = Container("2" * 64, ContainerSpec("job", "any", ("sleep", "60")))
            >>> container.start({"PATH": "/usr/bin:/bin"}, ".")
            >>> container.kill(signal.SIGTERM)
            >>> container.wait()
            (143, '')
        """
        with self._condition:
            if self._status != "running":
                raise RequestError(
                    409, f"Cannot kill container: {self.id}: Container {self.id} is not running"
                )
            self._signal_group(signal_number)

    def stop(self, seconds: float, signal_number: int = signal.SIGTERM) -> None:
        """Signal the group, wait up to `seconds` (forever when negative), then kill it.

        Raises `RequestError` (304) when the container is not running.

        Example:
            >>> container = Container("3" * 64, ContainerSpec("job", "any", ("sleep", "60")))
            >>> container.start({"PATH": "/usr/bin:/bin"}, ".")
            >>> container.stop(10.0)
            >>> container.status, container.wait()
            ('exited', (143, ''))
        """
        with self._condition:
            if self._status != "running":
                raise RequestError(304, "container already stopped")
            self._signal_group(signal_number)
            deadline = None if seconds < 0 else time.monotonic() + seconds
            while self._status == "running":
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._condition.wait(remaining)
            if self._status == "running":
                self._signal_group(signal.SIGKILL)
                self._wait_for_locked(lambda: self._status != "running", SECONDS_EXIT)

    def _wait_for_locked(self, predicate: Callable[[], bool], seconds: float | None) -> bool:
        deadline = None if seconds is None else time.monotonic() + seconds
        while not predicate():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._condition.wait(remaining)
        return True

    def wait(self, condition: str = "not-running", seconds: float | None = None) -> tuple[int, str]:
        """Block until `condition` (Docker's `not-running`, `next-exit` or `removed`) holds.

        Returns the exit code and the error text ("" when none); raises `RequestError` (400)
        for an unknown condition and (408) when `seconds` pass first.

        Example:
            >>> container = Container("4" * 64, ContainerSpec("job", "any", ("sleep", "60")))
            >>> container.start({"PATH": "/usr/bin:/bin"}, ".")
            >>> container.wait("not-running", seconds=0.1)
            Traceback (most recent call last):
            ...
            batchcrew.localbatch.containers.RequestError: ...
            >>> container.kill()
            >>> container.wait("not-running")
            (137, '')
        """
        with self._condition:
            if condition == "not-running":
                done = self._wait_for_locked(lambda: self._status != "running", seconds)
            elif condition == "next-exit":
                exits = self._exits
                done = self._wait_for_locked(lambda: self._exits > exits, seconds)
            elif condition == "removed":
                done = self._wait_for_locked(lambda: self._status == "removed", seconds)
            else:
                raise RequestError(400, f"invalid condition: {condition!r}")
            if not done:
                raise RequestError(408, f"container {self.id} still running")
            return self._exit_code, self._error

    def remove(self, force: bool) -> None:
        """Mark the container removed; a running one needs `force` (it is killed) or gets 409.

        Example:
            >>> container = Container("5" * 64, ContainerSpec("job", "any", ("sleep", "60")))
            >>> container.start({"PATH": "/usr/bin:/bin"}, ".")
            >>> container.remove(force=True)
            >>> container.status
            'removed'
        """
        with self._condition:
            if self._status == "running":
                if not force:
                    raise RequestError(
                        409,
                        f'cannot remove container "/{self.spec.name}": container is running: '
                        "stop the container before removing or force remove",
                    )
                self._signal_group(signal.SIGKILL)
                if not self._wait_for_locked(lambda: self._status != "running", SECONDS_EXIT):
                    logger.error("container %s did not exit after SIGKILL", self.spec.name)
            self._status = "removed"
            self._condition.notify_all()

    def logs(
        self,
        streams: frozenset[int],
        since_ns: int = 0,
        until_ns: int | None = None,
        tail: int | None = None,
    ) -> list[LogRecord]:
        """The output kept so far from `streams`, between `since_ns` and `until_ns`.

        Example:
            >>> argv = ("sh", "-c", "echo out; echo err >&2")
            >>> container = Container("6" * 64, ContainerSpec("job", "any", argv))
            >>> container.start({"PATH": "/usr/bin:/bin"}, ".")
            >>> container.wait()
            (0, '')
            >>> [record.data for record in container.logs(frozenset({STDOUT}))]
            [b'out\\n']
            >>> sorted(record.data for record in container.logs(frozenset({STDOUT, STDERR})))
            [b'err\\n', b'out\\n']
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
        """Like `logs`, then every new record as it comes, until the container stops running.

        Example:
            >>> argv = ("sh", "-c", "echo one; sleep 0.2; echo two")
            >>> container = Container("7" * 64, ContainerSpec("job", "any", argv))
            >>> container.start({"PATH": "/usr/bin:/bin"}, ".")
            >>> for record in container.follow(frozenset({STDOUT, STDERR})):
            ...     print(record.data)
            b'one\\n'
            b'two\\n'
        """
        with self._condition:
            position = self._records_dropped + len(self._records)
        yield from self.logs(streams, since_ns, until_ns, tail)
        while True:
            with self._condition:
                self._wait_for_locked(functools.partial(self._has_news, position), None)
                start = max(position - self._records_dropped, 0)
                new = list(self._records)[start:]
                position = self._records_dropped + len(self._records)
                finished = self._status != "running"
            for record in new:
                if _wanted(record, streams, since_ns, until_ns):
                    yield record
            if finished:
                return

    def _has_news(self, position: int) -> bool:
        return self._records_dropped + len(self._records) > position or self._status != "running"

    def inspect(self) -> dict[str, Any]:
        """The container as `GET /containers/{id}/json` describes it.

        Example:
            >>> Container("0" * 64, ContainerSpec("c", "any", ("true",))).inspect()["Name"]
            '/c'
        """
        with self._condition:
            running = self._status == "running"
            state = {
                "Status": "exited" if self._status == "removed" else self._status,
                "Running": running,
                "Paused": False,
                "Restarting": False,
                "OOMKilled": self._oom_killed,
                "Dead": False,
                "Pid": self._pid if running else 0,
                "ExitCode": self._exit_code,
                "Error": self._error,
                "StartedAt": format_timestamp(self._started_ns) if self._started_ns else ZERO_TIME,
                "FinishedAt": (
                    format_timestamp(self._finished_ns) if self._finished_ns else ZERO_TIME
                ),
            }
        config = dict(self.spec.config)
        config.setdefault("Image", self.spec.image)
        config.setdefault("Env", list(self.spec.env))
        config["Tty"] = False
        host_config = {"LogConfig": {"Type": "json-file", "Config": {}}, "NetworkMode": "host"}
        host_config.update(self.spec.host_config)
        return {
            "Id": self.id,
            "Created": format_timestamp(self.created_ns),
            "Path": self.spec.argv[0],
            "Args": list(self.spec.argv[1:]),
            "State": state,
            "Image": image_id(self.spec.image),
            "Name": "/" + self.spec.name,
            "RestartCount": 0,
            "Driver": "local-process",
            "Platform": "linux",
            "HostConfig": host_config,
            "Config": config,
            "Mounts": [],
            "NetworkSettings": {
                "IPAddress": "127.0.0.1",
                "Ports": {},
                "Networks": {"host": {"IPAddress": "127.0.0.1", "Gateway": ""}},
            },
        }

    def summary(self) -> dict[str, Any]:
        """The container as one entry of `GET /containers/json` describes it.

        Example:
            >>> Container("0" * 64, ContainerSpec("c", "any", ("true",))).summary()["Status"]
            'Created'
        """
        with self._condition:
            status = self._status
            exit_code = self._exit_code
            since_ns = self._finished_ns if status == "exited" else self._started_ns
        if status == "running":
            text = f"Up {_duration(since_ns)}"
        elif status == "exited":
            text = f"Exited ({exit_code}) {_duration(since_ns)} ago"
        else:
            text = status.capitalize()
        return {
            "Id": self.id,
            "Names": ["/" + self.spec.name],
            "Image": self.spec.image,
            "ImageID": image_id(self.spec.image),
            "Command": " ".join(self.spec.argv),
            "Created": self.created_ns // 1_000_000_000,
            "State": status,
            "Status": text,
            "Ports": [],
            "Labels": dict(self.spec.config.get("Labels") or {}),
            "HostConfig": {"NetworkMode": "host"},
            "NetworkSettings": {"Networks": {}},
            "Mounts": [],
        }


def image_id(image: str) -> str:
    """A stable made-up image id for an image name (the local engine has no images).

    Example:
        >>> image_id("python:3.11")[:7]
        'sha256:'
    """
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def _wanted(
    record: LogRecord, streams: frozenset[int], since_ns: int, until_ns: int | None
) -> bool:
    return (
        record.stream in streams
        and record.timestamp_ns >= since_ns
        and (until_ns is None or record.timestamp_ns <= until_ns)
    )


def _duration(since_ns: int) -> str:
    seconds = max(0, (time.time_ns() - since_ns) // 1_000_000_000)
    if seconds < 60:
        return f"{seconds} seconds"
    if seconds < 3600:
        return f"{seconds // 60} minutes"
    return f"{seconds // 3600} hours"
