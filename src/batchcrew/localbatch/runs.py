"""One run of a container's command: a local process leading a process group of its own.

Owns starting the process (behind its memory limit, when it has one), reading its two pipes into
the container's output, and its end: the rest of its group killed, the process reaped, the limit
released and the exit told once. It knows nothing of container states or of HTTP.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from batchcrew.localbatch.memory import Confinement, MemoryLimits
from batchcrew.localbatch.output import STDERR, STDOUT, ContainerOutput

__all__ = ["ConfinementError", "ProcessRun", "RunEnded", "exit_status"]

logger = logging.getLogger("batchcrew.localbatch.runs")

SECONDS_EXIT = 10.0
"""How long to wait for a killed process group to be reaped before giving up on it."""

RunEnded = Callable[[int, bool], None]
"""Told once that a run ended: its exit code as Docker reports it, and whether the kernel killed
it for memory."""


class ConfinementError(Exception):
    """The memory limit of a new run could not be set up, so the run did not start.

    Example:
        >>> str(ConfinementError("no room for another cgroup"))
        'no room for another cgroup'
    """


def exit_status(returncode: int) -> int:
    """Turn a `subprocess` return code into Docker's exit code (128 + signal when killed).

    Example:
        >>> exit_status(3), exit_status(-9)
        (3, 137)
    """
    return returncode if returncode >= 0 else 128 - returncode


class ProcessRun:
    """A command running as the leader of a new session, its output read into `output`.

    When the leader exits, the rest of its group is killed (as Docker ends every process of a
    container whose main process ends), then `ended` is told. With `memory_limits`, the command
    runs under a limit of `memory_bytes` named `limit_name` (by default `name`, which is the
    command's first word unless given), and the run releases the limit at its end.

    Example:
        >>> import queue
        >>> output, exits = ContainerOutput("hello"), queue.Queue()
        >>> run = ProcessRun(("echo", "hi"), {"PATH": "/bin:/usr/bin"}, ".", output,
        ...                  lambda code, oom_killed: exits.put(code))
        >>> exits.get(timeout=10), [record.data for record in output.logs(frozenset({STDOUT}))]
        (0, [b'hi\\n'])
    """

    def __init__(
        self,
        argv: Sequence[str],
        environment: Mapping[str, str],
        cwd: str,
        output: ContainerOutput,
        ended: RunEnded,
        *,
        name: str = "",
        memory_limits: MemoryLimits | None = None,
        memory_bytes: int = 0,
        limit_name: str = "",
    ) -> None:
        """Start the process: an `OSError` when it cannot start, `ConfinementError` when its
        memory limit cannot be set up."""
        self._name = name or argv[0]
        self._memory_bytes = memory_bytes
        self._confinement: Confinement | None = None
        if memory_limits is not None:
            self._confinement = _confinement(
                argv, environment, memory_limits, memory_bytes, limit_name or self._name
            )
        self._lock = threading.Lock()
        self._group_signallable = False
        try:
            process = subprocess.Popen(
                tuple(argv) if self._confinement is None else self._confinement.command(argv),
                env=dict(environment),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError:
            self._release_confinement()
            raise
        self.pid = process.pid
        """The leader's process id, which is also its group's."""
        self._group_signallable = True
        assert process.stdout is not None and process.stderr is not None
        readers = [
            threading.Thread(target=output.read, args=(pipe, stream), daemon=True)
            for pipe, stream in ((process.stdout, STDOUT), (process.stderr, STDERR))
        ]
        for reader in readers:
            reader.start()
        threading.Thread(target=self._watch, args=(process, readers, ended), daemon=True).start()

    def signal(self, signal_number: int) -> None:
        """Send a signal to the whole group, unless the leader has exited already.

        Example:
            >>> import queue
            >>> exits = queue.Queue()
            >>> run = ProcessRun(("sleep", "60"), {"PATH": "/bin:/usr/bin"}, ".",
            ...                  ContainerOutput("sleeper"), lambda code, _: exits.put(code))
            >>> run.signal(signal.SIGTERM)
            >>> exits.get(timeout=10)
            143
        """
        with self._lock:
            if not self._group_signallable:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal_number)

    def _watch(
        self, process: subprocess.Popen[bytes], readers: list[threading.Thread], ended: RunEnded
    ) -> None:
        if hasattr(os, "waitid"):
            # Wait for the exit without reaping, so the group id cannot be reused while we kill.
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        with self._lock:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self._group_signallable = False
        returncode = process.wait()
        oom_killed = self._release_confinement()
        for reader in readers:
            reader.join(SECONDS_EXIT)
            if reader.is_alive():
                logger.warning(
                    "container %s: a process outside its group keeps its output open", self._name
                )
        if oom_killed:
            logger.warning(
                "container %s was killed for using more than its %d bytes of memory",
                self._name,
                self._memory_bytes,
            )
        ended(exit_status(returncode), oom_killed)

    def _release_confinement(self) -> bool:
        """End the run's memory limit; whether the kernel killed the run for memory."""
        confinement, self._confinement = self._confinement, None
        if confinement is None:
            return False
        oom_killed = confinement.oom_killed()
        confinement.release()
        return oom_killed


def _confinement(
    argv: Sequence[str],
    environment: Mapping[str, str],
    memory_limits: MemoryLimits,
    memory_bytes: int,
    limit_name: str,
) -> Confinement:
    """The memory limit of a new run.

    The shell in front of a limited command would find a missing program only once started
    (exit code 127), so the program is looked for first: starting fails as without a limit.
    """
    if shutil.which(argv[0], path=environment.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    try:
        return memory_limits.confine(limit_name, memory_bytes)
    except OSError as error:
        raise ConfinementError(str(error)) from None
