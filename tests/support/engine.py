"""The local engine as a real process, and plain HTTP to it, for tests of the Engine API.

Owns starting `python -m batchcrew.localbatch.engine`, reading its port, raw requests and the
parsing of Docker's multiplexed log frames. It never talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import docker

from tests.support.polling import wait_until


@dataclass(frozen=True)
class Response:
    """One HTTP answer of the engine."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class EngineProcess:
    """`python -m batchcrew.localbatch.engine --port 0` in a process of its own."""

    def __init__(self, environment: Mapping[str, str] | None = None, workdir: str | None = None):
        self.environment = dict(os.environ if environment is None else environment)
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (read after the process ends)

    def __enter__(self) -> EngineProcess:
        command = [sys.executable, "-m", "batchcrew.localbatch.engine", "--port", "0"]
        if self.workdir is not None:
            command += ["--workdir", self.workdir]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, env=self.environment
        )
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(30):
                self.stop()
                raise AssertionError(f"the engine did not print its port: {self.log()}")
        line = self.process.stdout.readline()
        if not line.strip():
            self.stop()
            raise AssertionError(f"the engine exited at start: {self.log()}")
        self.port = int(line)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def client(self) -> docker.DockerClient:
        """A docker-py client for this engine, as moto makes one."""
        return docker.DockerClient(base_url=self.docker_host, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """One request on a fresh connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            answer = connection.getresponse()
            return Response(answer.status, dict(answer.getheaders()), answer.read())
        finally:
            connection.close()

    def post_json(self, path: str, value: object) -> Response:
        body = json.dumps(value).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json"})

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, seconds: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the engine did not stop on SIGTERM") from None
        if self.process.stdout is not None:
            self.process.stdout.close()
        return status

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")


def parse_frames(body: bytes) -> list[tuple[int, bytes]]:
    """Split a multiplexed log body into (stream, payload); fail on a malformed header."""
    frames: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(body):
        assert len(body) - offset >= 8, "truncated frame header"
        stream, zero1, zero2, zero3, length = struct.unpack_from(">BBBBL", body, offset)
        assert stream in (1, 2) and (zero1, zero2, zero3) == (0, 0, 0)
        start = offset + 8
        assert start + length <= len(body), "truncated frame payload"
        frames.append((stream, body[start : start + length]))
        offset = start + length
    return frames


def wait_for_output(container: Any, text: str, seconds: float = 20.0) -> str:
    """Poll a container's logs until `text` appears; return them."""

    def output_with_text() -> str:
        output: str = container.logs().decode()
        return output if text in output else ""

    return wait_until(output_with_text, seconds)
