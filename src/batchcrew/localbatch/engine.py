"""The Docker Engine API stand-in: the part of the Engine HTTP API that moto's Batch drives.

Owns the registry of containers, routing, request parsing and Docker-shaped answers
(`{"message": ...}` errors, multiplexed logs) over HTTP; `containers.py` runs the processes.
It must never listen beyond 127.0.0.1, and no request may take the server down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import secrets
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from batchcrew.localbatch.containers import WAIT_CONDITIONS, Container, ContainerSpec, RequestError
from batchcrew.localbatch.descriptions import format_timestamp, image_id
from batchcrew.localbatch.environment import (
    host_environment,
    job_environment,
    parse_container_env,
)
from batchcrew.localbatch.memory import LIMIT_BYTES_MIN, MemoryLimits, detect_memory_limits
from batchcrew.localbatch.output import LOG_BYTES_MAX, STDERR, STDOUT, LogRecord

logger = logging.getLogger("batchcrew.localbatch.engine")

API_VERSION = "1.45"
"""The Engine API version served (docker-py 7 asks for it when it negotiates)."""

API_VERSION_MIN = "1.24"
"""The oldest Engine API version accepted in a `/v1.NN/` path prefix."""

LOOPBACK = "127.0.0.1"
"""The only address the engine listens on."""

REQUEST_BYTES_MAX = 1024 * 1024
"""Largest request body accepted; a container's create request is a few kilobytes."""

SECONDS_IDLE_CONNECTION = 300.0
"""A keep-alive connection idle this long is closed, so its handler thread ends."""

NAME_PATTERN = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")
VERSION_PREFIX = re.compile(r"/v(?P<version>[0-9]+\.[0-9]+)(?P<rest>/.*)")


@dataclass(frozen=True)
class Request:
    """One parsed API request, as the endpoint functions see it.

    Example:
        >>> Request("GET", {"id": "abc"}, {"all": "1"}, b"", "").parameters["id"]
        'abc'
    """

    method: str
    parameters: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Reply:
    """One answer: a status, then either a whole body or chunks streamed as they come.

    Example:
        >>> Reply(204).status
        204
    """

    status: int
    body: bytes | Iterator[bytes] = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


class BatchJobs(Protocol):
    """What the engine learns from, and tells, the Batch service whose jobs its containers run.

    Both are given a container's environment (`AWS_BATCH_JOB_ID` names its job).
    """

    def memory_bytes(self, environment: Mapping[str, str]) -> int:
        """The memory the job asked for, in bytes (0: none), for a container created without
        a limit of its own."""

    def container_exited(
        self, environment: Mapping[str, str], exit_code: int, oom_killed: bool
    ) -> None:
        """Record how the job's container ended, before the container is seen as exited."""


def json_reply(status: int, value: object) -> Reply:
    """A reply whose body is `value` as JSON.

    Example:
        >>> json_reply(404, {"message": "No such container: x"}).body
        b'{"message": "No such container: x"}'
    """
    return Reply(status, json.dumps(value).encode())


class Engine:
    """A Docker Engine API server on 127.0.0.1 whose containers are local process groups.

    Point docker-py (or moto, through `DOCKER_HOST`) at `docker_host`. The image of a container
    is ignored; its command runs on this machine in `workdir`, with the environment described
    in `environment.py`. A container's memory limit (`HostConfig.Memory`, docker-py's
    `mem_limit`; else the memory its Batch job asked `jobs` for) is enforced by
    `memory_limits` (found by `detect_memory_limits` on first need). `close()` kills every
    container's process group.

    Example:
        >>> import docker
        >>> with Engine() as engine:
        ...     client = docker.DockerClient(base_url=engine.docker_host)
        ...     container = client.containers.run("any", ["python", "-V"], detach=True)
        ...     container.wait()["StatusCode"]
        0
    """

    def __init__(
        self,
        port: int = 0,
        *,
        workdir: str | os.PathLike[str] | None = None,
        python: str = sys.executable,
        environment: Mapping[str, str] | None = None,
        log_bytes_max: int = LOG_BYTES_MAX,
        memory_limits: MemoryLimits | None = None,
        jobs: BatchJobs | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {port}")
        self.workdir = os.path.abspath(os.fspath(workdir) if workdir is not None else os.getcwd())
        if not os.path.isdir(self.workdir):
            raise ValueError(f"workdir must be an existing directory, not {self.workdir!r}")
        self.base_environment = host_environment(
            os.environ if environment is None else environment, python
        )
        self._port_requested = port
        self._log_bytes_max = log_bytes_max
        self._memory_limits = memory_limits
        self.jobs = jobs
        self._lock = threading.Lock()
        self._containers: dict[str, Container] = {}
        self._closing = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Engine:
        """Bind 127.0.0.1 and serve in a background thread; returns the engine itself.

        Example:
            >>> engine = Engine().start()
            >>> engine.start() is engine  # already serving
            True
            >>> engine.close()
        """
        with self._lock:
            if self._server is not None:
                return self
            if self._closing:
                raise RuntimeError("a closed engine cannot start again")
            server = _Server((LOOPBACK, self._port_requested), self)
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="batchcrew-localbatch-engine",
                daemon=True,
            )
            self._thread.start()
        logger.info("engine listening on %s", self.docker_host)
        return self

    @property
    def port(self) -> int:
        """The TCP port the engine listens on (after `start`).

        Example:
            >>> with Engine() as engine:  # port 0: a free one is picked
            ...     0 < engine.port < 65536
            True
        """
        if self._server is None:
            raise RuntimeError("the engine is not started")
        return int(self._server.server_address[1])

    @property
    def docker_host(self) -> str:
        """The engine's address in `DOCKER_HOST` form.

        Example:
            >>> with Engine() as engine:
            ...     engine.docker_host == f"tcp://127.0.0.1:{engine.port}"
            True
        """
        return f"tcp://{LOOPBACK}:{self.port}"

    def close(self) -> None:
        """Stop serving and kill every container's process group; safe to call twice.

        Example:
            >>> engine = Engine().start()
            >>> container = engine.create(ContainerSpec("job-1", "any", ("sleep", "60")))
            >>> engine.start_container(container)
            >>> engine.close()
            >>> container.status
            'removed'
            >>> engine.close()  # a second time does nothing
        """
        with self._lock:
            self._closing = True
            server, self._server = self._server, None
            containers = list(self._containers.values())
            self._containers.clear()
        if server is None:
            return
        server.shutdown()
        for container in containers:
            try:
                container.remove(force=True)
            except Exception:
                logger.exception("could not kill container %s", container.spec.name)
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
        if self._memory_limits is not None:
            self._memory_limits.close()
        logger.info("engine closed; %d containers killed or removed", len(containers))

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def create(self, spec: ContainerSpec) -> Container:
        """Register a new container; a name already in use is Docker's 409 conflict.

        Example:
            >>> with Engine() as engine:
            ...     first = engine.create(ContainerSpec("job-1", "any", ("python", "-V")))
            ...     engine.create(ContainerSpec("job-1", "any", ("python", "-V")))
            Traceback (most recent call last):
            ...
            batchcrew.localbatch.containers.RequestError: Conflict. The container name "/job-1" ...
        """
        with self._lock:
            self._check_open()
            for other in self._containers.values():
                if other.spec.name == spec.name:
                    raise RequestError(
                        409,
                        f'Conflict. The container name "/{spec.name}" is already in use by '
                        f'container "{other.id}". You have to remove (or rename) that '
                        "container to be able to reuse that name.",
                    )
            if spec.memory_bytes and self._memory_limits is None:
                self._memory_limits = detect_memory_limits()
            container = Container(
                secrets.token_hex(32),
                spec,
                log_bytes_max=self._log_bytes_max,
                memory_limits=self._memory_limits,
                on_exit=self._container_exited if self.jobs is not None else None,
            )
            self._containers[container.id] = container
        return container

    def start_container(self, container: Container) -> None:
        """Start a container unless the engine is closing (so no process outlives `close`).

        Example:
            >>> with Engine() as engine:
            ...     container = engine.create(ContainerSpec("job-1", "any", ("python", "-V")))
            ...     engine.start_container(container)
            ...     container.wait()
            (0, '')
        """
        with self._lock:
            self._check_open()
            container.start(
                job_environment(self.base_environment, container.spec.env), self.workdir
            )

    def _container_exited(self, spec: ContainerSpec, exit_code: int, oom_killed: bool) -> None:
        assert self.jobs is not None
        self.jobs.container_exited(parse_container_env(spec.env), exit_code, oom_killed)

    def lookup(self, reference: str) -> Container:
        """Find a container by id, unique id prefix or name, as Docker does.

        Example:
            >>> with Engine() as engine:
            ...     container = engine.create(ContainerSpec("job-1", "any", ("python", "-V")))
            ...     engine.lookup("job-1") is engine.lookup(container.id[:12]) is container
            True
        """
        name = reference.removeprefix("/")
        with self._lock:
            found = self._containers.get(reference)
            if found is not None:
                return found
            for container in self._containers.values():
                if container.spec.name == name:
                    return container
            matches = [
                container
                for container in self._containers.values()
                if reference and container.id.startswith(reference)
            ]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise RequestError(400, f"multiple IDs found with provided prefix: {reference}")
        raise RequestError(404, f"No such container: {reference}")

    def remove(self, reference: str, force: bool) -> None:
        """Remove a container (killing it first when `force`).

        Example:
            >>> with Engine() as engine:
            ...     container = engine.create(ContainerSpec("job-1", "any", ("sleep", "60")))
            ...     engine.start_container(container)
            ...     engine.remove("job-1", force=True)
            ...     engine.containers()
            []
        """
        container = self.lookup(reference)
        container.remove(force)
        with self._lock:
            self._containers.pop(container.id, None)

    def containers(self) -> list[Container]:
        """Every container not yet removed, oldest first.

        Example:
            >>> Engine().containers()
            []
        """
        with self._lock:
            return sorted(self._containers.values(), key=lambda container: container.created_ns)

    def _check_open(self) -> None:
        if self._closing:
            raise RequestError(503, "the engine is shutting down")


# Endpoints: each takes the engine and a parsed request and returns a reply (see ROUTES).


def _ping(engine: Engine, request: Request) -> Reply:
    """`GET /_ping`."""
    return Reply(
        200,
        b"OK",
        "text/plain; charset=utf-8",
        {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"},
    )


def _version(engine: Engine, request: Request) -> Reply:
    """`GET /version`."""
    machine = platform.machine().lower()
    architecture = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    engine_version = _package_version()
    return json_reply(
        200,
        {
            "Platform": {"Name": "batchcrew local engine (containers are local processes)"},
            "Components": [
                {
                    "Name": "Engine",
                    "Version": engine_version,
                    "Details": {
                        "ApiVersion": API_VERSION,
                        "MinAPIVersion": API_VERSION_MIN,
                        "Os": platform.system().lower(),
                        "Arch": architecture,
                        "KernelVersion": platform.release(),
                        "Experimental": "false",
                    },
                }
            ],
            "Version": engine_version,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": API_VERSION_MIN,
            "GitCommit": "",
            "GoVersion": "",
            "Os": platform.system().lower(),
            "Arch": architecture,
            "KernelVersion": platform.release(),
            "BuildTime": "",
        },
    )


def _image_inspect(engine: Engine, request: Request) -> Reply:
    """`GET /images/{name}/json`: every image "exists", since the image is ignored."""
    name = request.parameters["name"]
    return json_reply(
        200,
        {
            "Id": image_id(name),
            "RepoTags": [name],
            "RepoDigests": [],
            "Created": "1970-01-01T00:00:00Z",
            "Os": "linux",
            "Architecture": "amd64",
            "Size": 0,
            "Config": {"Cmd": None, "Entrypoint": None, "Env": [], "WorkingDir": ""},
        },
    )


def _image_pull(engine: Engine, request: Request) -> Reply:
    """`POST /images/create`: a pull that finds the image already here."""
    name = request.query.get("fromImage", "")
    if not name:
        raise RequestError(400, "fromImage is required: the local engine only pulls images")
    tag = request.query.get("tag", "") or "latest"
    reference = name if ":" in name.rsplit("/", 1)[-1] or "@" in name else f"{name}:{tag}"
    lines = [
        {"status": f"Pulling from {name}", "id": tag},
        {"status": f"Status: Image is up to date for {reference}"},
    ]
    return Reply(200, b"".join(json.dumps(line).encode() + b"\r\n" for line in lines))


def _container_list(engine: Engine, request: Request) -> Reply:
    """`GET /containers/json`: running containers, or all of them with `all=1`."""
    every = _flag(request.query, "all")
    return json_reply(
        200,
        [
            container.summary()
            for container in reversed(engine.containers())
            if every or container.status == "running"
        ],
    )


def _container_create(engine: Engine, request: Request) -> Reply:
    """`POST /containers/create`."""
    config = _json_object(request)
    name = request.query.get("name", "")
    if name and not NAME_PATTERN.fullmatch(name):
        raise RequestError(
            400, f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    image = config.get("Image") or ""
    if not isinstance(image, str):
        raise RequestError(400, "invalid Image: expected a string")
    argv = _string_list(config.get("Entrypoint"), "Entrypoint") + _string_list(
        config.get("Cmd"), "Cmd"
    )
    if not argv:
        raise RequestError(400, "No command specified")
    env = _string_list(config.get("Env"), "Env")
    host_config = config.get("HostConfig") or {}
    if not isinstance(host_config, dict):
        raise RequestError(400, "invalid HostConfig: expected an object")
    warnings = [
        f"HostConfig.{key} is ignored: containers are processes on this machine"
        for key in ("Mounts", "Binds")
        if host_config.get(key)
    ]
    memory = _memory_bytes(engine, host_config, env)
    spec = ContainerSpec(
        name=name.removeprefix("/") or f"local_{secrets.token_hex(6)}",
        image=image,
        argv=tuple(argv),
        env=tuple(env),
        config=config,
        host_config={**host_config, "Memory": memory},
        memory_bytes=memory,
    )
    container = engine.create(spec)
    return json_reply(201, {"Id": container.id, "Warnings": warnings})


def _memory_bytes(engine: Engine, host_config: Mapping[str, Any], env: list[str]) -> int:
    """The container's memory limit: its own `HostConfig.Memory`, else its Batch job's."""
    memory = host_config.get("Memory") or 0
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
        raise RequestError(400, "invalid HostConfig.Memory: expected a number of bytes")
    if 0 < memory < LIMIT_BYTES_MIN:
        raise RequestError(400, "Minimum memory limit allowed is 6MB")
    if memory or engine.jobs is None:
        return memory
    try:
        return engine.jobs.memory_bytes(parse_container_env(env))
    except Exception:
        logger.exception("the memory of the job of a container could not be read; no limit")
        return 0


def _container_inspect(engine: Engine, request: Request) -> Reply:
    """`GET /containers/{id}/json`."""
    return json_reply(200, engine.lookup(request.parameters["id"]).inspect())


def _container_start(engine: Engine, request: Request) -> Reply:
    """`POST /containers/{id}/start`."""
    engine.start_container(engine.lookup(request.parameters["id"]))
    return Reply(204)


def _container_logs(engine: Engine, request: Request) -> Reply:
    """`GET /containers/{id}/logs`: Docker's multiplexed stream, 8-byte header per frame."""
    container = engine.lookup(request.parameters["id"])
    streams = frozenset(
        stream
        for stream, name in ((STDOUT, "stdout"), (STDERR, "stderr"))
        if _flag(request.query, name)
    )
    if not streams:
        raise RequestError(400, "Bad parameters: you must choose at least one stream")
    since_ns = _timestamp_ns(request.query, "since") or 0
    until_ns = _timestamp_ns(request.query, "until")
    tail = _tail(request.query)
    timestamps = _flag(request.query, "timestamps")
    content_type = "application/vnd.docker.multiplexed-stream"
    if _flag(request.query, "follow"):
        records = container.follow(streams, since_ns, until_ns, tail)
        frames = (_frame(record, timestamps) for record in records)
        return Reply(200, frames, content_type)
    records_now = container.logs(streams, since_ns, until_ns, tail)
    return Reply(200, b"".join(_frame(record, timestamps) for record in records_now), content_type)


def _container_wait(engine: Engine, request: Request) -> Reply:
    """`POST /containers/{id}/wait`: the status line at once, the exit code when it comes.

    Docker answers with its headers before the container exits, and clients (the docker CLI)
    start the container only once they have them.
    """
    container = engine.lookup(request.parameters["id"])
    condition = request.query.get("condition") or "not-running"
    if condition not in WAIT_CONDITIONS:
        raise RequestError(400, f"invalid condition: {condition!r}")

    def exit_status() -> Iterator[bytes]:
        exit_code, error = container.wait(condition)
        wait_error = {"Message": error} if error else None
        yield json.dumps({"StatusCode": exit_code, "Error": wait_error}).encode()

    return Reply(200, exit_status())


def _container_kill(engine: Engine, request: Request) -> Reply:
    """`POST /containers/{id}/kill`: signals the container's whole process group."""
    container = engine.lookup(request.parameters["id"])
    container.kill(_signal_number(request.query.get("signal", ""), signal.SIGKILL))
    return Reply(204)


def _container_stop(engine: Engine, request: Request) -> Reply:
    """`POST /containers/{id}/stop`: stop signal, then SIGKILL after `t` seconds."""
    container = engine.lookup(request.parameters["id"])
    default_seconds = container.spec.config.get("StopTimeout")
    seconds_text = request.query.get("t", "")
    try:
        seconds = float(seconds_text) if seconds_text else float(default_seconds or 10)
    except ValueError:
        raise RequestError(400, f"invalid value for t: {seconds_text!r}") from None
    default_signal = _signal_number(str(container.spec.config.get("StopSignal") or ""), 15)
    container.stop(seconds, _signal_number(request.query.get("signal", ""), default_signal))
    return Reply(204)


def _container_remove(engine: Engine, request: Request) -> Reply:
    """`DELETE /containers/{id}`."""
    engine.remove(request.parameters["id"], _flag(request.query, "force"))
    return Reply(204)


Endpoint = Callable[[Engine, Request], Reply]

ROUTES: tuple[tuple[str, re.Pattern[str], Endpoint], ...] = (
    ("GET", re.compile(r"/_ping"), _ping),
    ("HEAD", re.compile(r"/_ping"), _ping),
    ("GET", re.compile(r"/version"), _version),
    ("GET", re.compile(r"/images/(?P<name>.+)/json"), _image_inspect),
    ("POST", re.compile(r"/images/create"), _image_pull),
    ("GET", re.compile(r"/containers/json"), _container_list),
    ("POST", re.compile(r"/containers/create"), _container_create),
    ("GET", re.compile(r"/containers/(?P<id>[^/]+)/json"), _container_inspect),
    ("POST", re.compile(r"/containers/(?P<id>[^/]+)/start"), _container_start),
    ("GET", re.compile(r"/containers/(?P<id>[^/]+)/logs"), _container_logs),
    ("POST", re.compile(r"/containers/(?P<id>[^/]+)/wait"), _container_wait),
    ("POST", re.compile(r"/containers/(?P<id>[^/]+)/kill"), _container_kill),
    ("POST", re.compile(r"/containers/(?P<id>[^/]+)/stop"), _container_stop),
    ("DELETE", re.compile(r"/containers/(?P<id>[^/]+)"), _container_remove),
)
"""Method, path pattern (after any `/v1.NN` prefix) and endpoint of every route served."""


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version("batchcrew")
    except PackageNotFoundError:
        return "0+unknown"


def _flag(query: Mapping[str, str], name: str) -> bool:
    # Docker reads a boolean query parameter as true unless it is empty, 0, no, false or none.
    return query.get(name, "").strip().lower() not in ("", "0", "no", "false", "none")


def _json_object(request: Request) -> dict[str, Any]:
    media_type = request.content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type != "application/json":
        raise RequestError(
            400, f"unsupported Content-Type header ({media_type}): must be 'application/json'"
        )
    if not request.body.strip():
        raise RequestError(400, "config cannot be empty in order to create a container")
    try:
        value = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(400, f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise RequestError(400, f"invalid JSON: expected an object, not {type(value).__name__}")
    return value


def _string_list(value: object, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise RequestError(400, f"invalid {name}: expected a list of strings")


def _timestamp_ns(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name, "").strip()
    if not text:
        return None
    try:
        return int(Decimal(text) * 1_000_000_000)
    except InvalidOperation:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(400, f"invalid value for {name}: {text!r}") from None
    return int(Decimal(str(moment.timestamp())) * 1_000_000_000)


def _tail(query: Mapping[str, str]) -> int | None:
    text = query.get("tail", "").strip()
    if text in ("", "all"):
        return None
    if text.isdigit():
        return int(text)
    raise RequestError(400, f"invalid value for tail: {text!r}")


def _signal_number(text: str, default: int) -> int:
    text = text.strip()
    if not text:
        return int(default)
    if text.isdigit():
        number = int(text)
        if number in signal.valid_signals():
            return number
    else:
        name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise RequestError(400, f"Invalid signal: {text}")


def _frame(record: LogRecord, timestamps: bool) -> bytes:
    payload = record.data
    if timestamps:
        payload = format_timestamp(record.timestamp_ns).encode() + b" " + payload
    return struct.pack(">BxxxL", record.stream, len(payload)) + payload


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine) -> None:
        self.engine = engine
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        # Handler threads idle on keep-alive connections would otherwise outlive the engine.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "batchcrew-localbatch"
    timeout = SECONDS_IDLE_CONNECTION
    # Headers and body go out in separate writes; with Nagle's algorithm each reply would
    # wait for the client's delayed acknowledgement (about 40 ms).
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Requests too broken to route (bad request line, unknown method) get a Docker-style
        # JSON error too, and the connection is closed since its framing cannot be trusted.
        self.close_connection = True
        body = json.dumps({"message": message or explain or HTTPStatus(code).phrase}).encode()
        self.send_response(code)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if getattr(self, "command", "") != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            reply = self._route(method)
        except RequestError as error:
            if error.status >= 500:
                logger.warning("%s %s: %s", method, self.path, error.message)
            reply = json_reply(error.status, {"message": error.message})
        except Exception as error:
            logger.exception("%s %s failed", method, self.path)
            reply = json_reply(500, {"message": f"internal error: {error}"})
        self._send(reply, head=method == "HEAD")

    def _route(self, method: str) -> Reply:
        body = self._read_body()
        split = urlsplit(self.path)
        path = split.path
        prefixed = VERSION_PREFIX.fullmatch(path)
        if prefixed:
            requested = prefixed["version"]
            if _version_tuple(requested) > _version_tuple(API_VERSION):
                raise RequestError(
                    400,
                    f"client version {requested} is too new. "
                    f"Maximum supported API version is {API_VERSION}",
                )
            if _version_tuple(requested) < _version_tuple(API_VERSION_MIN):
                raise RequestError(
                    400,
                    f"client version {requested} is too old. "
                    f"Minimum supported API version is {API_VERSION_MIN}, "
                    "please upgrade your client to a newer version",
                )
            path = prefixed["rest"]
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        for route_method, pattern, endpoint in ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                parameters = {key: unquote(value) for key, value in match.groupdict().items()}
                request = Request(
                    method, parameters, query, body, self.headers.get("Content-Type", "")
                )
                return endpoint(self.server.engine, request)
        raise RequestError(404, "page not found")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if not 0 <= length <= REQUEST_BYTES_MAX:
            self.close_connection = True
            raise RequestError(
                400, f"Content-Length must be between 0 and {REQUEST_BYTES_MAX}, not {length_text}"
            )
        return self.rfile.read(length)

    def _read_chunked_body(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise RequestError(400, "malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > REQUEST_BYTES_MAX:
                self.close_connection = True
                raise RequestError(400, f"request body over {REQUEST_BYTES_MAX} bytes")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(16)

    def _send(self, reply: Reply, head: bool) -> None:
        self.send_response(reply.status)
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Ostype", "linux")
        self.send_header("Docker-Experimental", "false")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(reply.body, bytes):
            if reply.status in (204, 304):
                self.end_headers()
                return
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if not head:
                self.wfile.write(reply.body)
            return
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in reply.body:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        except Exception:
            logger.exception("streaming %s failed", self.path)
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    """Run the engine in the foreground: `python -m batchcrew.localbatch.engine --port N`.

    Prints the port it listens on (useful with `--port 0`), then serves until SIGTERM or
    Ctrl-C, when it kills every container's process group.

    Example (not run as a test: it serves until SIGTERM):
        >>> main(["--port", "0"])  # doctest: +SKIP
        41234
    """
    parser = argparse.ArgumentParser(
        prog="python -m batchcrew.localbatch.engine",
        description="A Docker Engine API on 127.0.0.1 that runs containers as local processes.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--workdir", default=None, help="directory the jobs run in (default: .)")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    stopping = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda number, frame: stopping.set())
    with Engine(arguments.port, workdir=arguments.workdir) as engine:
        print(engine.port, flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
