"""How the Engine API describes a container of the local engine, from its spec and its state.

Owns `GET /containers/{id}/json` and the entries of `GET /containers/json` as Docker writes
them, Docker's way of writing times, and made-up image ids. Plain code over values: it starts no
process, takes no lock and speaks no HTTP.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchcrew.localbatch.containers import ContainerSpec

__all__ = [
    "ZERO_TIME",
    "ContainerState",
    "format_timestamp",
    "image_id",
    "inspect_document",
    "summary_document",
]

ZERO_TIME = "0001-01-01T00:00:00Z"
"""How Docker writes a time that has not happened (StartedAt of a container never started)."""


@dataclass(frozen=True)
class ContainerState:
    """A container's state at one moment, as far as its descriptions tell it.

    Example:
        >>> ContainerState("exited", exit_code=3, finished_ns=1_700_000_000_000_000_000).status
        'exited'
    """

    status: str = "created"
    """Docker's `State.Status`: created, running, exited or removed."""
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_ns: int = 0
    finished_ns: int = 0


def inspect_document(
    container_id: str, spec: ContainerSpec, created_ns: int, state: ContainerState
) -> dict[str, Any]:
    """The container as `GET /containers/{id}/json` describes it.

    Example:
        >>> from batchcrew.localbatch.containers import ContainerSpec
        >>> spec = ContainerSpec("c", "any", ("true",))
        >>> document = inspect_document("0" * 64, spec, 0, ContainerState("running", pid=42))
        >>> document["Name"], document["State"]["Pid"], document["State"]["StartedAt"]
        ('/c', 42, '0001-01-01T00:00:00Z')
    """
    running = state.status == "running"
    state_document = {
        "Status": "exited" if state.status == "removed" else state.status,
        "Running": running,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": state.oom_killed,
        "Dead": False,
        "Pid": state.pid if running else 0,
        "ExitCode": state.exit_code,
        "Error": state.error,
        "StartedAt": format_timestamp(state.started_ns) if state.started_ns else ZERO_TIME,
        "FinishedAt": format_timestamp(state.finished_ns) if state.finished_ns else ZERO_TIME,
    }
    config = dict(spec.config)
    config.setdefault("Image", spec.image)
    config.setdefault("Env", list(spec.env))
    config["Tty"] = False
    host_config = {"LogConfig": {"Type": "json-file", "Config": {}}, "NetworkMode": "host"}
    host_config.update(spec.host_config)
    return {
        "Id": container_id,
        "Created": format_timestamp(created_ns),
        "Path": spec.argv[0],
        "Args": list(spec.argv[1:]),
        "State": state_document,
        "Image": image_id(spec.image),
        "Name": "/" + spec.name,
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


def summary_document(
    container_id: str, spec: ContainerSpec, created_ns: int, state: ContainerState
) -> dict[str, Any]:
    """The container as one entry of `GET /containers/json` describes it.

    Example:
        >>> from batchcrew.localbatch.containers import ContainerSpec
        >>> spec = ContainerSpec("c", "any", ("true",))
        >>> state = ContainerState("exited", exit_code=1, finished_ns=time.time_ns())
        >>> summary_document("0" * 64, spec, 0, state)["Status"]
        'Exited (1) 0 seconds ago'
    """
    status = state.status
    since_ns = state.finished_ns if status == "exited" else state.started_ns
    if status == "running":
        text = f"Up {_duration(since_ns)}"
    elif status == "exited":
        text = f"Exited ({state.exit_code}) {_duration(since_ns)} ago"
    else:
        text = status.capitalize()
    return {
        "Id": container_id,
        "Names": ["/" + spec.name],
        "Image": spec.image,
        "ImageID": image_id(spec.image),
        "Command": " ".join(spec.argv),
        "Created": created_ns // 1_000_000_000,
        "State": status,
        "Status": text,
        "Ports": [],
        "Labels": dict(spec.config.get("Labels") or {}),
        "HostConfig": {"NetworkMode": "host"},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    }


def format_timestamp(timestamp_ns: int) -> str:
    """Format nanoseconds since the epoch the way Docker writes log timestamps (RFC 3339, UTC).

    Example:
        >>> format_timestamp(1_700_000_000_123_456_789)
        '2023-11-14T22:13:20.123456789Z'
    """
    seconds, nanoseconds = divmod(timestamp_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanoseconds:09d}Z"


def image_id(image: str) -> str:
    """A stable made-up image id for an image name (the local engine has no images).

    Example:
        >>> image_id("python:3.11")[:7]
        'sha256:'
    """
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def _duration(since_ns: int) -> str:
    seconds = max(0, (time.time_ns() - since_ns) // 1_000_000_000)
    if seconds < 60:
        return f"{seconds} seconds"
    if seconds < 3600:
        return f"{seconds // 60} minutes"
    return f"{seconds // 3600} hours"
