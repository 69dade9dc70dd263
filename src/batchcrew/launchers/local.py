"""Workers as local processes: the embedded default, no cloud needed.

Each worker is `python -m batchcrew.worker` in a process group of its own, told where to dial
by its environment. Whatever a task starts joins that group and dies with its worker: the group
is killed when the worker is terminated and as soon as the worker is found to have exited. This
module starts, watches and stops processes; it decides nothing about scaling.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batchcrew.errors import LaunchError
from batchcrew.launchers.base import (
    Launcher,
    LaunchHandle,
    LaunchRequest,
    WorkerKey,
    WorkerStatus,
)

SECONDS_TERMINATE_GRACE = 2.0
"""How long a worker has between SIGTERM and SIGKILL."""


@dataclass(frozen=True, eq=False)
class LocalLaunch(LaunchHandle):
    """The processes of one local launch, by worker index.

    Example:
        >>> LocalLaunch("a1b2", 1, "a1b2").processes
        {}
    """

    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    reaped: set[int] = field(default_factory=set)
    """Workers whose exit was seen and whose process group was killed."""


class LocalLauncher(Launcher):
    """Start workers as local processes.

    Args:
        log_directory: where each worker writes `<launch>-<index>.log` (stdout and stderr);
            None (the default) lets workers write to this process's own stdout and stderr, so
            a `print` in a task shows on your terminal, as with the standard pools.
        python: the Python interpreter that runs workers.
        env: extra environment variables for workers (on top of this process's environment).
        processes: threads that start and stop workers (None: in the controller's thread).

    Example:
        >>> import batchcrew as bc
        >>> bc.LocalLauncher(log_directory="logs")
        LocalLauncher(log_directory='logs', python=...)
    """

    watch_connected = True

    def __init__(
        self,
        log_directory: str | os.PathLike[str] | None = None,
        python: str | os.PathLike[str] = sys.executable,
        env: Mapping[str, str] | None = None,
        processes: int | None = 4,
    ) -> None:
        super().__init__(processes)
        if log_directory is not None and not isinstance(log_directory, (str, os.PathLike)):
            raise TypeError("log_directory must be a path or None")
        if not isinstance(python, (str, os.PathLike)) or not str(python):
            raise TypeError("python must be the path of a Python interpreter")
        if env is not None and (
            not isinstance(env, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise TypeError("env must be a mapping of strings to strings, or None")
        self.log_directory = Path(log_directory) if log_directory is not None else None
        self.python = str(python)
        self.env = dict(env or {})

    def __repr__(self) -> str:
        directory = None if self.log_directory is None else str(self.log_directory)
        return f"LocalLauncher(log_directory={directory!r}, python={self.python!r})"

    def launch(self, request: LaunchRequest) -> LocalLaunch:
        """Start `request.count` worker processes."""
        if self.log_directory is not None:
            self.log_directory.mkdir(parents=True, exist_ok=True)
        handle = LocalLaunch(request.launch, request.count, request.launch)
        try:
            for index in range(request.count):
                handle.processes[index] = self._start(request, index)
        except BaseException:
            self.terminate(handle)  # all or none: no half-started launch is left running
            raise
        return handle

    def _start(self, request: LaunchRequest, index: int) -> subprocess.Popen[bytes]:
        environment = {**os.environ, **self.env, **request.environment}
        environment["BATCHCREW_INDEX"] = str(index)
        # On a shared terminal a worker says only what matters; in its own log, everything.
        environment.setdefault("BATCHCREW_LOG_LEVEL", "INFO" if self.log_directory else "WARNING")
        output: int | None = None
        log = None
        if self.log_directory is not None:
            log = open(self.log_directory / f"{request.launch}-{index}.log", "ab")  # noqa: SIM115
            output = log.fileno()
        try:
            return subprocess.Popen(
                [self.python, "-m", "batchcrew.worker"],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if log is not None else None,
                start_new_session=True,
            )
        except OSError as error:
            raise LaunchError(f"cannot start {self.python}: {error}") from error
        finally:
            if log is not None:
                log.close()

    def poll(self, workers: Mapping[LaunchHandle, Sequence[int]]) -> dict[WorkerKey, WorkerStatus]:
        """Each worker's state: running, or ended with its exit status. Whatever an ended
        worker left behind in its process group is killed now."""
        found: dict[WorkerKey, WorkerStatus] = {}
        for handle, indices in workers.items():
            assert isinstance(handle, LocalLaunch)
            for index in indices:
                process = handle.processes.get(index)
                if process is None:
                    continue
                code = process.poll()
                if code is None:
                    found[(handle.launch, index)] = WorkerStatus("running")
                    continue
                if index not in handle.reaped:
                    handle.reaped.add(index)
                    _signal_group(process.pid, signal.SIGKILL)
                found[(handle.launch, index)] = _ended(code)
        return found

    def terminate(self, handle: LaunchHandle, indices: Sequence[int] | None = None) -> None:
        """SIGTERM the chosen workers' process groups, SIGKILL what is left after a grace
        period (the groups too: a task's children die with their worker)."""
        assert isinstance(handle, LocalLaunch)
        chosen = [
            (index, process)
            for index, process in handle.processes.items()
            if indices is None or index in indices
        ]
        for _, process in chosen:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + SECONDS_TERMINATE_GRACE
        for index, process in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            handle.reaped.add(index)


def _signal_group(group: int, signal_number: signal.Signals) -> None:
    """Signal a worker's process group, whether or not the worker itself is still alive (the
    group outlives its leader while any member lives)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal_number)


def _ended(code: int) -> WorkerStatus:
    if code < 0:  # a signal: perhaps the kernel's out-of-memory killer, perhaps not
        return WorkerStatus("ended", f"killed by {signal.Signals(-code).name}", 128 - code)
    return WorkerStatus("ended", f"exited with status {code}", code, "other")
