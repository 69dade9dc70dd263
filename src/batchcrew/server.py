"""The controller's listening side: TLS connections from workers, frames in and out.

It authenticates workers, turns their frames into scheduler events and the scheduler's
actions into frames. It runs on the controller's event-loop thread and never blocks it:
frames are parsed as bytes arrive (no coroutine per frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import pickle
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batchcrew import protocol
from batchcrew.errors import ProtocolError
from batchcrew.protocol import Frame, FrameParser, FunctionCache, Kind, versions
from batchcrew.scheduler import (
    Action,
    ConnectionRefused,
    Outcome,
    OutcomeStatus,
    Scheduler,
    TaskSpec,
)

logger = logging.getLogger("batchcrew.server")

SECONDS_HELLO = 10.0
"""How long a new connection has to complete TLS and say HELLO."""

REASONS_KEPT = 100


@dataclass
class ServerCounts:
    """Connections the server refused, by reason.

    Example:
        >>> ServerCounts().refused
        0
    """

    refused: int = 0
    protocol_errors: int = 0
    handshake_failures: int = 0
    reasons: list[str] = field(default_factory=list)


class Server:
    """Accept workers and speak the protocol with them.

    Example:
        >>> from batchcrew.scheduler import Limits
        >>> server = Server(Scheduler(Limits()), apply=print, ssl_context=None,
        ...                 host="127.0.0.1", port=0)
        >>> server.port
        0
    """

    def __init__(
        self,
        scheduler: Scheduler,
        apply: Callable[[list[Action]], None],
        ssl_context: ssl.SSLContext | None,
        host: str,
        port: int,
        report: Callable[[str], None] = logger.warning,
    ) -> None:
        self.scheduler = scheduler
        self.apply = apply
        self.report = report
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.counts = ServerCounts()
        self.identities: dict[str, tuple[str, int | None]] = {}
        """Host name and process id each worker gave in its HELLO."""
        self._tokens: dict[str, str] = {}
        self._peers: dict[str, _Connection] = {}
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._versions = versions()
        self.batching = False
        self.dirty: list[_Connection] = []

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Frames written inside leave at the end, one write per connection: a burst of
        results and the tasks they free go out in as few sends as there are workers.

        Example:
            >>> from batchcrew.scheduler import Limits
            >>> server = Server(Scheduler(Limits()), print, None, "127.0.0.1", 0)
            >>> with server.batch():
            ...     server.batching
            True
        """
        if self.batching:
            yield
            return
        self.batching = True
        try:
            yield
        finally:
            self.batching = False
            dirty, self.dirty = self.dirty, []
            for connection in dirty:
                connection.flush()

    @property
    def listening(self) -> bool:
        """True once the server has bound its port."""
        return self._server is not None

    async def start(self) -> None:
        """Listen; `self.port` becomes the port actually bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)

    def allow(self, launch: str, token: str) -> None:
        """Accept workers of `launch` that present `token`."""
        self._tokens[launch] = token

    def revoke(self, launch: str) -> None:
        """Accept no more workers of `launch`."""
        self._tokens.pop(launch, None)

    def send_task(self, worker: str, task: TaskSpec) -> None:
        """Send a task; its function travels only if this worker does not hold it yet."""
        peer = self._peers.get(worker)
        if peer is None:
            return
        header: dict[str, Any] = {"name": task.name, "function": task.function, "seed": task.seed}
        if task.seconds_timeout is not None:
            header["seconds_timeout"] = task.seconds_timeout
        if peer.functions.seen(task.function):
            body = task.arguments
        else:
            header["function_size"] = len(task.function_data)
            body = task.function_data + task.arguments
        peer.write(protocol.encode(Kind.TASK, header, body))

    def send(self, worker: str, kind: Kind, header: dict[str, Any]) -> None:
        """Send a control frame (EXIT, CANCEL) to one worker."""
        peer = self._peers.get(worker)
        if peer is not None:
            peer.write(protocol.encode(kind, header))

    def broadcast(self, kind: Kind, header: dict[str, Any]) -> None:
        """Send a control frame to every connected worker."""
        data = protocol.encode(kind, header)
        for peer in self._peers.values():
            peer.write(data)

    def disconnect(self, worker: str, reason: str) -> None:
        """Drop a worker's connection."""
        peer = self._peers.get(worker)
        if peer is not None:
            logger.warning("dropping worker %s: %s", worker, reason)
            peer.abort()

    # ----- for connections --------------------------------------------------------------

    def greet(self, connection: _Connection, hello: Frame) -> str | None:
        """Check a HELLO; welcome the worker (its id) or refuse it (None)."""
        if hello.kind is not Kind.HELLO:
            raise ProtocolError(f"expected HELLO, got {hello.kind.name}")
        header = hello.header
        address = connection.address
        launch = str(header.get("launch", ""))
        token = str(header.get("token", ""))
        expected = self._tokens.get(launch)
        given = token.encode("utf-8", "surrogatepass")
        if expected is None or not hmac.compare_digest(given, expected.encode()):
            self.refused(f"connection from {address}: wrong token or unknown launch {launch!r}")
            connection.write(protocol.encode(Kind.REFUSE, {"reason": "authentication failed"}))
            return None
        mismatch = self._version_mismatch(header)
        index = header.get("index")
        worker = f"{launch}-{index}"
        try:
            if mismatch:
                raise ConnectionRefused(mismatch)
            if not isinstance(index, int):
                raise ConnectionRefused("HELLO carries no worker index")
            now = asyncio.get_running_loop().time()
            actions = self.scheduler.worker_connected(worker, launch, index, now)
        except ConnectionRefused as refusal:
            self.refused(f"worker {worker} from {address} refused: {refusal}")
            if mismatch:
                # The launch is ours but cannot serve: stop waiting for it and say why.
                indices = [index] if isinstance(index, int) else None
                now = asyncio.get_running_loop().time()
                self.scheduler.launch_failed(launch, indices, now)
                self.report(f"launch {launch}: worker refused: {mismatch}")
            connection.write(protocol.encode(Kind.REFUSE, {"reason": str(refusal)}))
            return None
        self._peers[worker] = connection
        pid = header.get("pid")
        self.identities[worker] = (str(header.get("host")), pid if isinstance(pid, int) else None)
        connection.write(protocol.encode(Kind.WELCOME, {"worker": worker}))
        logger.info("worker %s connected from %s (pid %s)", worker, address, pid)
        self.apply(actions)
        return worker

    def received(self, worker: str, frame: Frame) -> None:
        """A frame from a welcomed worker."""
        now = asyncio.get_running_loop().time()
        if frame.kind is Kind.RESULT:
            name, outcome = _outcome(frame.header, frame.body)
            self.apply(self.scheduler.result_received(worker, name, outcome, now))
        elif frame.kind is Kind.HEARTBEAT:
            self.scheduler.heard_from(worker, now)
        else:
            raise ProtocolError(f"a worker may not send {frame.kind.name}")

    def opened(self, connection: _Connection) -> None:
        self._connections.add(connection)

    def closed(self, connection: _Connection) -> None:
        """A connection ended: a welcomed worker is lost to the scheduler."""
        self._connections.discard(connection)
        worker = connection.worker
        if worker is not None and self._peers.get(worker) is connection:
            del self._peers[worker]
            now = asyncio.get_running_loop().time()
            self.apply(self.scheduler.worker_lost(worker, now))

    def refused(self, message: str) -> None:
        """Count and log a refused connection."""
        self.counts.refused += 1
        self.counts.reasons.append(message)
        del self.counts.reasons[:-REASONS_KEPT]
        logger.warning("%s", message)

    def _version_mismatch(self, hello: dict[str, Any]) -> str | None:
        names = {"protocol": "protocol", "python": "Python", "cloudpickle": "cloudpickle"}
        for key, label in names.items():
            theirs, ours = str(hello.get(key)), self._versions[key]
            if theirs != ours:
                return f"worker runs {label} {theirs}, controller {ours}"
        if hello.get("batchcrew") != self._versions["batchcrew"]:
            logger.warning(
                "worker runs batchcrew %s, controller %s",
                hello.get("batchcrew"),
                self._versions["batchcrew"],
            )
        return None


class _Connection(asyncio.Protocol):
    """One TCP connection: paused until TLS is up, then HELLO, then frames as they arrive."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.worker: str | None = None
        self.address: Any = None
        self.functions = FunctionCache()
        # Before authentication: no body, and a header no longer than a HELLO needs.
        self.parser = FrameParser(body_bytes_max=0, header_bytes_max=protocol.HELLO_BYTES_MAX)
        self.failed = False
        self.transport: asyncio.Transport | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        self._upgrade: asyncio.Task[None] | None = None
        self._early: list[bytes] = []
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.transport is not None:
            return  # the TLS transport replacing the plain one: already set up below
        self.address = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            protocol.keep_alive(sock)
        self.server.opened(self)
        loop = asyncio.get_running_loop()
        self._hello_timer = loop.call_later(SECONDS_HELLO, self._too_slow)
        if self.server.ssl_context is None:
            self.transport = transport
            return
        # Nothing is read until TLS is set up on this very connection.
        transport.pause_reading()
        self._upgrade = asyncio.ensure_future(self._start_tls(transport))

    async def _start_tls(self, plain: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        context = self.server.ssl_context
        assert context is not None
        try:
            secured = await loop.start_tls(
                plain, self, context, server_side=True, ssl_handshake_timeout=SECONDS_HELLO
            )
        except (TimeoutError, OSError) as error:
            plain.close()
            self.server.counts.handshake_failures += 1
            self.server.refused(f"TLS handshake with {self.address} failed: {error!r}")
            return
        if secured is None:
            plain.close()
            return
        self.transport = secured
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            # TLS delivers the first bytes before start_tls returns the transport to answer on.
            self._early.append(data)
            return
        if self.failed:
            return
        with self.server.batch():
            self._frames_received(data)

    def _frames_received(self, data: bytes) -> None:
        try:
            for frame in self.parser.feed(data):
                if self.worker is None:
                    self._hello(frame)
                    if self.worker is None:
                        return
                else:
                    self.server.received(self.worker, frame)
        except ProtocolError as error:
            self._fail(f"protocol error from {self.worker or self.address}: {error}")
        except Exception as error:
            logger.exception("unexpected error on the connection from %s", self.address)
            self._fail(f"connection from {self.worker or self.address} failed: {error!r:.200}")

    def _fail(self, reason: str) -> None:
        self.failed = True
        self.server.counts.protocol_errors += 1
        self.server.refused(reason)
        self.close()

    def _hello(self, frame: Frame) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self.worker = self.server.greet(self, frame)
        if self.worker is None:
            self.close()
            return
        self.parser.body_bytes_max = protocol.BODY_BYTES_MAX
        self.parser.header_bytes_max = protocol.HEADER_BYTES_MAX

    def _too_slow(self) -> None:
        if self.worker is None:
            self.server.refused(f"connection from {self.address}: no HELLO in {SECONDS_HELLO:g} s")
            self.close()

    def eof_received(self) -> bool | None:
        if self.parser.buffered and not self.failed:
            self.server.counts.protocol_errors += 1
            self.server.refused(f"connection from {self.worker or self.address} ended mid-frame")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self.server.closed(self)

    def write(self, data: bytes) -> None:
        """Send bytes now, or with the rest of a batch (see `Server.batch`)."""
        if self.server.batching:
            if not self._outgoing:
                self.server.dirty.append(self)
            self._outgoing.append(data)
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def flush(self) -> None:
        """Send what a batch queued, in one write."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self._outgoing:
            self.flush()  # a REFUSE or an EXIT still leaves before the connection closes
        if self.transport is not None:
            self.transport.close()
        if self._upgrade is not None and not self._upgrade.done():
            self._upgrade.cancel()

    def abort(self) -> None:
        """Drop the connection at once (no TLS goodbye to a peer that stopped answering)."""
        if self.transport is not None:
            self.transport.abort()
        if self._upgrade is not None and not self._upgrade.done():
            self._upgrade.cancel()


def _outcome(header: dict[str, Any], body: bytes) -> tuple[str, Outcome]:
    name = header.get("name")
    status: OutcomeStatus
    if header.get("status") == "success":
        status = "success"
    elif header.get("status") in ("error", "timeout", "cancel"):
        status = header["status"]
    else:
        raise ProtocolError(f"RESULT with an unknown status {header.get('status')!r}")
    if not isinstance(name, str):
        raise ProtocolError("RESULT without a task name")
    value = None
    error = header.get("error")
    if status == "success" and body:
        try:
            value = pickle.loads(body)
        except Exception as exception:  # noqa: BLE001 (the result is bad, not the connection)
            status, error = "error", f"the result could not be unpickled: {exception!r}"
    warnings = header.get("warnings") or ()
    return name, Outcome(
        status=status,
        value=value,
        error=None if error is None else str(error),
        traceback=header.get("traceback"),
        warnings=tuple(str(item) for item in warnings),
        seconds=float(header.get("seconds", 0.0)),
    )
