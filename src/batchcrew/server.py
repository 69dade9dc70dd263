"""The controller's listening side: TLS connections from workers, frames in and out.

It authenticates workers, turns their frames into scheduler events and the scheduler's
actions into frames. It runs on the controller's event-loop thread and never blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import pickle
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchcrew import protocol
from batchcrew.errors import ProtocolError
from batchcrew.protocol import FunctionCache, Kind, versions
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


@dataclass(eq=False)
class _Peer:
    worker: str
    writer: asyncio.StreamWriter
    functions: FunctionCache = field(default_factory=FunctionCache)


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
        self._tokens: dict[str, str] = {}
        self._peers: dict[str, _Peer] = {}
        self.identities: dict[str, tuple[str, int | None]] = {}
        """Host name and process id each worker gave in its HELLO."""
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._versions = versions()

    async def start(self) -> None:
        """Listen; `self.port` becomes the port actually bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Accepted(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers.values()):
            peer.writer.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=2.0)
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
        peer.writer.write(protocol.encode(Kind.TASK, header, body))

    def send(self, worker: str, kind: Kind, header: dict[str, Any]) -> None:
        peer = self._peers.get(worker)
        if peer is not None and not peer.writer.is_closing():
            peer.writer.write(protocol.encode(kind, header))

    def broadcast(self, kind: Kind, header: dict[str, Any]) -> None:
        data = protocol.encode(kind, header)
        for peer in self._peers.values():
            if not peer.writer.is_closing():
                peer.writer.write(data)

    def disconnect(self, worker: str, reason: str) -> None:
        peer = self._peers.get(worker)
        if peer is not None:
            logger.warning("dropping worker %s: %s", worker, reason)
            peer.writer.close()

    # ----- connections ------------------------------------------------------------------

    async def open(self, transport: asyncio.Transport) -> None:
        """Set up TLS (if on) on a new connection, then serve it."""
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=protocol.HEADER_BYTES_MAX, loop=loop)
            stream = asyncio.StreamReaderProtocol(reader, loop=loop)
            address = transport.get_extra_info("peername")
            if self.ssl_context is None:
                transport.set_protocol(stream)
                transport.resume_reading()
            else:
                plain = transport
                try:
                    secured = await loop.start_tls(
                        plain,
                        stream,
                        self.ssl_context,
                        server_side=True,
                        ssl_handshake_timeout=SECONDS_HELLO,
                    )
                except (TimeoutError, OSError) as error:
                    plain.close()
                    self.counts.handshake_failures += 1
                    self._refused(f"TLS handshake with {address} failed: {error!r}")
                    return
                if secured is None:
                    plain.close()
                    return
                transport = secured
            stream.connection_made(transport)
            writer = asyncio.StreamWriter(transport, stream, reader, loop)
            await self._serve(reader, writer, address)
        finally:
            self._connections.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: Any
    ) -> None:
        worker: str | None = None
        try:
            worker = await self._greet(reader, writer, address)
            if worker is not None:
                await self._listen(worker, reader)
        except ProtocolError as error:
            self.counts.protocol_errors += 1
            self._refused(f"protocol error from {address}: {error}")
        except (TimeoutError, ConnectionError, ssl.SSLError) as error:
            if worker is None:
                self._refused(f"connection from {address} failed before HELLO: {error!r}")
            else:
                logger.info("worker %s connection ended: %r", worker, error)
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            if worker is not None:
                self._peers.pop(worker, None)
                self.apply(self.scheduler.worker_lost(worker, asyncio.get_running_loop().time()))

    async def _greet(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: Any
    ) -> str | None:
        frame = await asyncio.wait_for(read_frame(reader, 0), timeout=SECONDS_HELLO)
        if frame is None:
            self._refused(f"connection from {address} closed before HELLO")
            return None
        if frame.kind is not Kind.HELLO:
            raise ProtocolError(f"expected HELLO, got {frame.kind.name}")
        hello = frame.header
        launch = str(hello.get("launch", ""))
        token = str(hello.get("token", ""))
        expected = self._tokens.get(launch)
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            self._refused(f"connection from {address}: wrong token or unknown launch {launch!r}")
            writer.write(protocol.encode(Kind.REFUSE, {"reason": "authentication failed"}))
            return None
        mismatch = self._version_mismatch(hello)
        index = hello.get("index")
        worker = f"{launch}-{index}"
        try:
            if mismatch:
                raise ConnectionRefused(mismatch)
            if not isinstance(index, int):
                raise ConnectionRefused("HELLO carries no worker index")
            now = asyncio.get_running_loop().time()
            actions = self.scheduler.worker_connected(worker, launch, index, now)
        except ConnectionRefused as refusal:
            self._refused(f"worker {worker} from {address} refused: {refusal}")
            if mismatch:
                # The launch is ours but cannot serve: stop waiting for it and say why.
                indices = [index] if isinstance(index, int) else None
                now = asyncio.get_running_loop().time()
                self.scheduler.launch_failed(launch, indices, now)
                self.report(f"launch {launch}: worker refused: {mismatch}")
            writer.write(protocol.encode(Kind.REFUSE, {"reason": str(refusal)}))
            return None
        self._peers[worker] = _Peer(worker, writer)
        pid = hello.get("pid")
        self.identities[worker] = (str(hello.get("host")), pid if isinstance(pid, int) else None)
        writer.write(protocol.encode(Kind.WELCOME, {"worker": worker}))
        logger.info("worker %s connected from %s (pid %s)", worker, address, hello.get("pid"))
        self.apply(actions)
        return worker

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

    async def _listen(self, worker: str, reader: asyncio.StreamReader) -> None:
        scheduler, apply, loop = self.scheduler, self.apply, asyncio.get_running_loop()
        while True:
            frame = await read_frame(reader, protocol.BODY_BYTES_MAX)
            if frame is None:
                return
            if frame.kind is Kind.RESULT:
                name, outcome = _outcome(frame.header, frame.body)
                apply(scheduler.result_received(worker, name, outcome, loop.time()))
            elif frame.kind is Kind.HEARTBEAT:
                scheduler.heard_from(worker, loop.time())
            else:
                raise ProtocolError(f"a worker may not send {frame.kind.name}")

    def _refused(self, message: str) -> None:
        self.counts.refused += 1
        self.counts.reasons.append(message)
        del self.counts.reasons[:-100]
        logger.warning("%s", message)


async def read_frame(reader: asyncio.StreamReader, body_bytes_max: int) -> protocol.Frame | None:
    """Read one frame; None at a clean end of stream, `ProtocolError` on anything malformed.

    Example:
        >>> async def first(reader):
        ...     return await read_frame(reader, protocol.BODY_BYTES_MAX)
    """
    try:
        prefix = await reader.readexactly(protocol.PREFIX.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise ProtocolError("connection closed inside a frame prefix") from None
        return None
    kind, header_length, body_length = protocol.parse_prefix(prefix, body_bytes_max)
    try:
        header_bytes = await reader.readexactly(header_length)
        body = await reader.readexactly(body_length) if body_length else b""
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"connection closed inside a {kind.name} frame") from None
    return protocol.Frame(kind, protocol.decode_header(header_bytes), body)


class _Accepted(asyncio.Protocol):
    """A new TCP connection, paused until TLS is set up so no byte is read too early."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self.opening = asyncio.ensure_future(self.server.open(transport))


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
