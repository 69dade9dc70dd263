"""Light workers: threads of the test process that speak the real protocol over real TLS.

For tests that need thousands of short-lived workers (a worker per task, floods of arrivals)
without thousands of processes. They run tasks in their own thread, with no timeouts, seeds or
cancellation: only what those tests exercise.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import batchcrew as bc
from batchcrew import protocol
from batchcrew.channel import Channel
from batchcrew.launchers.base import LaunchHandle, WorkerKey, WorkerStatus
from batchcrew.messages import Outcome
from batchcrew.protocol import FunctionCache, Kind
from batchcrew.serialization import dumps_value
from batchcrew.worker import WorkerSettings


@dataclass(frozen=True, eq=False)
class ThreadLaunch(LaunchHandle):
    threads: dict[int, threading.Thread] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)


class ThreadLauncher(bc.Launcher):
    """Starts each worker as a thread of this process; keeps each request (a test may dial in
    with the token of a worker that came)."""

    def __init__(self) -> None:
        super().__init__()
        self.launched = 0
        self.requests: list[bc.LaunchRequest] = []

    def launch(self, request: bc.LaunchRequest) -> LaunchHandle:
        self.requests.append(request)
        handle = ThreadLaunch(request.launch, request.count, request.launch)
        for index in range(request.count):
            environment = {**request.environment, "BATCHCREW_INDEX": str(index)}
            thread = threading.Thread(target=serve, args=(environment, handle, index), daemon=True)
            handle.threads[index] = thread
            thread.start()
        self.launched += request.count
        return handle

    def poll(self, workers: Mapping[LaunchHandle, Sequence[int]]) -> dict[WorkerKey, WorkerStatus]:
        found: dict[WorkerKey, WorkerStatus] = {}
        for handle, indices in workers.items():
            assert isinstance(handle, ThreadLaunch)
            for index in indices:
                alive = handle.threads[index].is_alive()
                found[(handle.launch, index)] = WorkerStatus("running" if alive else "ended")
        return found

    def terminate(self, handle: LaunchHandle, indices: Sequence[int] | None = None) -> None:
        assert isinstance(handle, ThreadLaunch)
        for index, channel in list(handle.channels.items()):
            if indices is None or index in indices:
                channel.close()


def serve(environment: Mapping[str, str], handle: ThreadLaunch, index: int) -> None:
    """Connect, say HELLO, run tasks until told to exit or the connection ends."""
    settings = WorkerSettings.from_environment(environment)
    try:
        channel = Channel.connect(settings.host, settings.port, settings.fingerprint, 30.0)
    except OSError:
        return
    handle.channels[index] = channel
    hello = {
        "token": settings.token,
        "launch": settings.launch,
        "index": settings.index,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **protocol.versions(),
    }
    functions = FunctionCache()
    try:
        channel.send(protocol.encode(Kind.HELLO, hello))
        while True:
            frame = channel.pop_frame()
            if frame is None:
                select.select([channel.sock], [], [], 30.0)
                channel.receive()
                continue
            if frame.kind is Kind.TASK:
                size = int(frame.header.get("function_size", 0))
                key = str(frame.header["function"])
                functions.seen(key, frame.body[:size])
                fn = pickle.loads(functions.get(key))
                args, kwargs = pickle.loads(frame.body[size:])
                outcome = Outcome("success", dumps_value(fn(*args, **kwargs)))
                channel.send(protocol.result_frame(str(frame.header["name"]), outcome))
            elif frame.kind in (Kind.EXIT, Kind.REFUSE):
                return
    except (OSError, bc.ProtocolError):
        return
    finally:
        channel.close()
