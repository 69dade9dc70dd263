"""The child process of a `LocalBatch` as its parent sees it: started, spoken to, stopped.

Owns the child's command line and environment, its log file, the line that announces its ports,
plain HTTP to its two servers (moto's `/moto-api` and the engine's containers) and a stop that
leaves no job process behind. It makes no AWS client and knows nothing of Batch resources.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from batchcrew.errors import BatchcrewError

__all__ = ["BackendProcess"]

logger = logging.getLogger("batchcrew.localbatch.backend_process")

BACKEND_COMMAND = (sys.executable, "-m", "batchcrew.localbatch.backend")

SECONDS_STOP = 15.0
SECONDS_HTTP = 10.0


class BackendProcess:
    """The process hosting moto's server and the local engine, with its own scratch directory.

    Making one creates the directory and opens the log (`log_path`, by default in that
    directory); `start` runs the child and reads its ports; `stop` ends it and every job it
    runs, closes the log and removes the directory, and may be called at any time.

    Example:
        >>> backend = BackendProcess(workdir=".")
        >>> backend.start(seconds_start=60)
        >>> backend.running, backend.job_pids()
        (True, {})
        >>> backend.stop()
        >>> backend.running, os.path.exists(backend.directory)
        (False, False)
    """

    def __init__(self, workdir: str, log_path: str | None = None) -> None:
        self.workdir = workdir
        self.directory = tempfile.mkdtemp(prefix="batchcrew-local-batch-")
        """Scratch space of the child; also where clients find no AWS configuration."""
        self.log_path = log_path or os.path.join(self.directory, "local-batch.log")
        self._log_file: IO[bytes] | None = open(self.log_path, "ab")  # noqa: SIM115 (see stop)
        self._process: subprocess.Popen[bytes] | None = None
        self.moto_port = 0
        self.engine_port = 0

    def start(self, seconds_start: float) -> None:
        """Run the child and wait up to `seconds_start` for its ports; else `BatchcrewError`.

        The error carries the end of the child's log. The caller stops this object either way.

        Example:
            >>> backend = BackendProcess(workdir=".")
            >>> backend.start(seconds_start=0.001)
            Traceback (most recent call last):
            ...
            batchcrew.errors.BatchcrewError: LocalBatch did not start within 0.001 s...
            >>> backend.stop()
        """
        self._process = subprocess.Popen(
            [
                *BACKEND_COMMAND,
                *("--workdir", self.workdir, "--log-level", "INFO"),
                *("--parent-directory", self.directory),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=self._child_environment(),
            cwd=self.workdir,
            start_new_session=True,
        )
        ports = self._read_ports(self._process, seconds_start)
        self.moto_port = ports["moto_port"]
        self.engine_port = ports["engine_port"]

    @property
    def running(self) -> bool:
        """Whether the child has been started and is alive.

        Example:
            >>> BackendProcess(workdir=".").running
            False
        """
        process = self._process
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int:
        """The child's process id; 0 before `start` and after `stop`.

        Example:
            >>> BackendProcess(workdir=".").pid
            0
        """
        process = self._process
        return 0 if process is None else process.pid

    @property
    def endpoint_url(self) -> str:
        """moto's address.

        Example:
            >>> backend.endpoint_url == local.endpoint_url
            True
        """
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def docker_host(self) -> str:
        """The engine's address in `DOCKER_HOST` form.

        Example:
            >>> backend.docker_host == local.docker_host
            True
        """
        return f"tcp://127.0.0.1:{self.engine_port}"

    def stop(self) -> None:
        """Stop the child and kill every job process; close the log, remove the directory.

        Example:
            >>> backend = BackendProcess(workdir=".")
            >>> backend.stop()
            >>> os.path.exists(backend.directory)
            False
        """
        process, self._process = self._process, None
        if process is not None:
            self._stop_child(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def moto_api(self, path: str, body: object = None) -> None:
        """POST to moto's `/moto-api/<path>` (reset, config, state-manager), with a JSON body.

        Example:
            >>> backend.moto_api("state-manager/unset-transition", {"model_name": "batch::job"})
        """
        data = b"" if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/{path}", data=data, method="POST"
        )
        with urllib.request.urlopen(request, timeout=SECONDS_HTTP) as response:
            response.read()

    def engine(self, method: str, path: str) -> Any:
        """The engine's JSON answer to `method path`; `BatchcrewError` for an HTTP error.

        Example:
            >>> isinstance(backend.engine("GET", "/containers/json"), list)
            True
            >>> backend.engine("GET", "/containers/no-such-container/json")
            Traceback (most recent call last):
            ...
            batchcrew.errors.BatchcrewError: engine GET /containers/no-such-container/json: 404 ...
        """
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.engine_port}{path}", method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=SECONDS_HTTP) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise BatchcrewError(f"engine {method} {path}: {error.code} {error.read()!r}") from None
        return json.loads(body) if body else None

    def job_pids(self) -> dict[str, int]:
        """Process ids of the running job processes, by Batch job id (else container name).

        Example:
            >>> backend.job_pids() == local.job_pids()
            True
        """
        pids: dict[str, int] = {}
        for summary in self.engine("GET", "/containers/json"):
            try:
                details = self.engine("GET", f"/containers/{summary['Id']}/json")
            except BatchcrewError:
                continue  # removed between the two calls
            pid = int(details["State"]["Pid"])
            if not pid:
                continue
            env = dict(entry.partition("=")[::2] for entry in details["Config"].get("Env") or [])
            pids[env.get("AWS_BATCH_JOB_ID") or details["Name"].lstrip("/")] = pid
        return pids

    def kill_containers(self) -> int:
        """Kill every running container; returns how many were running.

        Example:
            >>> backend.kill_containers() >= 0
            True
        """
        running = self.engine("GET", "/containers/json")
        for summary in running:
            with contextlib.suppress(BatchcrewError):
                self.engine("POST", f"/containers/{summary['Id']}/kill")
        return len(running)

    def _child_environment(self) -> dict[str, str]:
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AWS_", "DOCKER_", "MOTO_", "TEST_SERVER_MODE"))
        }
        # moto must never read this machine's AWS configuration: point it at files that do
        # not exist.
        environment["AWS_CONFIG_FILE"] = os.path.join(self.directory, "no-aws-config")
        environment["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(
            self.directory, "no-aws-credentials"
        )
        environment["PYTHONUNBUFFERED"] = "1"
        return environment

    def _read_ports(self, process: subprocess.Popen[bytes], seconds_start: float) -> dict[str, int]:
        assert process.stdout is not None
        deadline = time.monotonic() + seconds_start
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BatchcrewError(
                        f"LocalBatch did not start within {seconds_start:g} s{self._log_tail()}"
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    raise BatchcrewError(f"LocalBatch's process exited at start{self._log_tail()}")
                buffer += chunk
        process.stdout.close()
        try:
            ports: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
            return {"moto_port": int(ports["moto_port"]), "engine_port": int(ports["engine_port"])}
        except (ValueError, KeyError, TypeError):
            raise BatchcrewError(
                f"LocalBatch's process announced {buffer!r}, not its ports{self._log_tail()}"
            ) from None

    def _log_tail(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            text = Path(self.log_path).read_bytes()[-2000:].decode(errors="replace").strip()
        except OSError:
            return ""
        return f"; its log ({self.log_path}) ends with:\n{text}" if text else ""

    def _stop_child(self, process: subprocess.Popen[bytes]) -> None:
        pids: dict[str, int] = {}
        if process.poll() is None and self.engine_port:
            try:
                pids = self.job_pids()
            except (OSError, ValueError, KeyError, BatchcrewError) as error:
                logger.warning("could not list job processes before stopping: %s", error)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(SECONDS_STOP)
        except subprocess.TimeoutExpired:
            logger.error("LocalBatch's process did not stop in %g s; killing it", SECONDS_STOP)
            process.kill()
            process.wait()
            for pid in pids.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()
