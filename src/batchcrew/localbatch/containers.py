"""A container of the local engine: one command run as a local process in its own process group.

Owns a container's life (created, running, exited, removed): its runs started, signalled,
waited for and removed, and its exit status as Docker reports it, a kill for memory included.
A run's process is `runs.py`'s, the output kept `output.py`'s, the documents that describe it
`descriptions.py`'s and the memory limit `memory.py`'s. It must not speak HTTP nor decide what
the environment holds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batchcrew.localbatch.descriptions import ContainerState, inspect_document, summary_document
from batchcrew.localbatch.memory import MemoryLimits
from batchcrew.localbatch.output import LOG_BYTES_MAX, ContainerOutput, LogRecord
from batchcrew.localbatch.runs import SECONDS_EXIT, ConfinementError, ProcessRun

logger = logging.getLogger("batchcrew.localbatch.containers")

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
"""The conditions Docker's `POST /containers/{id}/wait` accepts."""


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
        self._output = ContainerOutput(spec.name, log_bytes_max)
        self._memory_limits = memory_limits if spec.memory_bytes else None
        self._on_exit = on_exit
        self._run: ProcessRun | None = None
        self._condition = threading.Condition()
        # Replaced whole under the condition, never changed: a reader needs no lock.
        self._state = ContainerState()
        self._exits = 0

    @property
    def status(self) -> str:
        """Docker's `State.Status`: created, running, exited or removed.

        Example:
            >>> Container("0" * 64, ContainerSpec("c", "any", ("true",))).status
            'created'
        """
        return self._state.status

    @property
    def pid(self) -> int:
        """The main process's id while running (it leads the process group), else 0.

        Example:
            >>> Container("0" * 64, ContainerSpec("c", "any", ("true",))).pid
            0
        """
        state = self._state
        return state.pid if state.status == "running" else 0

    def start(self, environment: Mapping[str, str], cwd: str) -> None:
        """Run the command in a new session; raise `RequestError` (304) if already running.

        Example:
            >>> from batchcrew.localbatch.output import STDOUT
            >>> container = Container("1" * 64, ContainerSpec("job", "any", ("pwd",)))
            >>> container.start({"PATH": "/usr/bin:/bin"}, "/")
            >>> container.wait()
            (0, '')
            >>> [record.data for record in container.logs(frozenset({STDOUT}))]
            [b'/\\n']
        """
        with self._condition:
            if self._state.status == "running":
                raise RequestError(304, "container already started")
            if self._state.status == "removed":
                raise RequestError(404, f"No such container: {self.id}")
            try:
                run = ProcessRun(
                    self.spec.argv,
                    environment,
                    cwd,
                    self._output,
                    self._run_ended,
                    name=self.spec.name,
                    memory_limits=self._memory_limits,
                    memory_bytes=self.spec.memory_bytes,
                    limit_name=self.id[:16],
                )
            except ConfinementError as error:
                message = f"cannot limit the memory of container {self.id}: {error}"
                raise RequestError(500, message) from None
            except OSError as error:
                self._state = replace(
                    self._state,
                    exit_code=127 if isinstance(error, FileNotFoundError) else 126,
                    error=f'exec: "{self.spec.argv[0]}": {error.strerror or error}',
                )
                message = f"failed to start container {self.id}: {self._state.error}"
                raise RequestError(400, message) from None
            self._run = run
            self._state = ContainerState("running", run.pid, started_ns=time.time_ns())
            self._output.run_started()
        logger.info("container %s started: pid %d, %s", self.spec.name, run.pid, self.spec.argv)

    def _run_ended(self, exit_code: int, oom_killed: bool) -> None:
        if self._on_exit is not None:
            try:
                self._on_exit(self.spec, exit_code, oom_killed)
            except Exception:
                logger.exception("container %s: its exit could not be reported", self.spec.name)
        with self._condition:
            self._state = replace(
                self._state,
                status="exited" if self._state.status == "running" else self._state.status,
                exit_code=exit_code,
                oom_killed=oom_killed,
                finished_ns=time.time_ns(),
            )
            self._exits += 1
            self._output.run_ended()
            self._condition.notify_all()
        logger.info("container %s exited with status %d", self.spec.name, exit_code)

    def _signal_group(self, signal_number: int) -> None:
        if self._run is not None:
            self._run.signal(signal_number)

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
            if self._state.status != "running":
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
            if self._state.status != "running":
                raise RequestError(304, "container already stopped")
            self._signal_group(signal_number)
            if not self._condition.wait_for(self._not_running, None if seconds < 0 else seconds):
                self._signal_group(signal.SIGKILL)
                self._condition.wait_for(self._not_running, SECONDS_EXIT)

    def _not_running(self) -> bool:
        return self._state.status != "running"

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
                done = self._condition.wait_for(self._not_running, seconds)
            elif condition == "next-exit":
                exits = self._exits
                done = self._condition.wait_for(lambda: self._exits > exits, seconds)
            elif condition == "removed":
                done = self._condition.wait_for(lambda: self._state.status == "removed", seconds)
            else:
                raise RequestError(400, f"invalid condition: {condition!r}")
            if not done:
                raise RequestError(408, f"container {self.id} still running")
            return self._state.exit_code, self._state.error

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
            if self._state.status == "running":
                if not force:
                    raise RequestError(
                        409,
                        f'cannot remove container "/{self.spec.name}": container is running: '
                        "stop the container before removing or force remove",
                    )
                self._signal_group(signal.SIGKILL)
                if not self._condition.wait_for(self._not_running, SECONDS_EXIT):
                    logger.error("container %s did not exit after SIGKILL", self.spec.name)
            self._state = replace(self._state, status="removed")
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
            >>> from batchcrew.localbatch.output import STDERR, STDOUT
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
        return self._output.logs(streams, since_ns, until_ns, tail)

    def follow(
        self,
        streams: frozenset[int],
        since_ns: int = 0,
        until_ns: int | None = None,
        tail: int | None = None,
    ) -> Iterator[LogRecord]:
        """Like `logs`, then every new record as it comes, until the container stops running.

        Example:
            >>> from batchcrew.localbatch.output import STDERR, STDOUT
            >>> argv = ("sh", "-c", "echo one; sleep 0.2; echo two")
            >>> container = Container("7" * 64, ContainerSpec("job", "any", argv))
            >>> container.start({"PATH": "/usr/bin:/bin"}, ".")
            >>> for record in container.follow(frozenset({STDOUT, STDERR})):
            ...     print(record.data)
            b'one\\n'
            b'two\\n'
        """
        return self._output.follow(streams, since_ns, until_ns, tail)

    def inspect(self) -> dict[str, Any]:
        """The container as `GET /containers/{id}/json` describes it.

        Example:
            >>> Container("0" * 64, ContainerSpec("c", "any", ("true",))).inspect()["Name"]
            '/c'
        """
        return inspect_document(self.id, self.spec, self.created_ns, self._state)

    def summary(self) -> dict[str, Any]:
        """The container as one entry of `GET /containers/json` describes it.

        Example:
            >>> Container("0" * 64, ContainerSpec("c", "any", ("true",))).summary()["Status"]
            'Created'
        """
        return summary_document(self.id, self.spec, self.created_ns, self._state)
