"""Workers as local processes: the embedded default, no cloud needed.

Each worker is `python -m batchcrew.worker` in its own process group, told where to dial by
its environment. This module starts and stops processes; it decides nothing about scaling.
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
from batchcrew.launchers.base import Launcher, LaunchRequest

SECONDS_TERMINATE_GRACE = 2.0
"""How long a worker has between SIGTERM and SIGKILL."""


@dataclass
class LocalLaunch:
    """The processes of one local launch, by worker index.

    Example:
        >>> LocalLaunch("a1b2").processes
        {}
    """

    launch: str
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)


class LocalLauncher(Launcher):
    """Start workers as local processes.

    Args:
        log_directory: where each worker writes `<launch>-<index>.log` (stdout and stderr);
            None discards worker output.
        python: the Python interpreter that runs workers.
        env: extra environment variables for workers (on top of this process's environment).

    Example:
        >>> import batchcrew as bc
        >>> launcher = bc.LocalLauncher(log_directory="logs")
        >>> crew = bc.Controller(launcher, workers=2)  # doctest: +SKIP
    """

    def __init__(
        self,
        log_directory: str | os.PathLike[str] | None = None,
        python: str | os.PathLike[str] = sys.executable,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
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

    def launch(self, request: LaunchRequest) -> LocalLaunch:
        """Start `request.count` worker processes."""
        if self.log_directory is not None:
            self.log_directory.mkdir(parents=True, exist_ok=True)
        handle = LocalLaunch(request.launch)
        for index in range(request.count):
            environment = {**os.environ, **self.env, **request.environment}
            environment["BATCHCREW_INDEX"] = str(index)
            log_path = None
            if self.log_directory is not None:
                log_path = self.log_directory / f"{request.launch}-{index}.log"
            try:
                with open(log_path or os.devnull, "ab") as output:
                    process = subprocess.Popen(
                        [self.python, "-m", "batchcrew.worker"],
                        env=environment,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            except OSError as error:
                raise LaunchError(f"cannot start {self.python}: {error}") from error
            handle.processes[index] = process
        return handle

    def terminate(self, handle: LocalLaunch, indices: Sequence[int] | None = None) -> None:
        """SIGTERM the chosen workers, then SIGKILL those still alive after a grace period."""
        chosen = [
            process
            for index, process in handle.processes.items()
            if indices is None or index in indices
        ]
        for process in chosen:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + SECONDS_TERMINATE_GRACE
        for process in chosen:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()

    def poll(self, handle: LocalLaunch) -> dict[int, str]:
        """Workers that have exited, with their exit status."""
        ended: dict[int, str] = {}
        for index, process in handle.processes.items():
            code = process.poll()
            if code is not None:
                ended[index] = _describe_exit(code)
        return ended


def _signal_group(process: subprocess.Popen[bytes], signal_number: signal.Signals) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal_number)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
