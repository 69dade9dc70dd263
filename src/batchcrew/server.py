"""The controller's listening side: TLS connections from workers, frames in and out.

It turns bytes into connection events for one handler (which owns the scheduler) and carries
out the frame actions it gets back. It decides nothing about tasks or launches. It runs on the
controller's event-loop thread and never blocks it: frames are parsed as bytes arrive. Every
connection that does not become a worker is refused, logged (rate-limited) and counted exactly
once, and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchcrew import protocol
from batchcrew.errors import ConnectionRefused, ProtocolError
from batchcrew.protocol import Frame, FrameParser, FunctionCache, Kind
from batchcrew.scheduler import Action, Disconnect, SendCancel, SendExit, SendTask

logger = logging.getLogger("batchcrew.server")

SECONDS_HELLO = 10.0
"""How long a new connection has to complete TLS and say HELLO."""

LARGE_BYTES = 1 << 16
"""A frame piece this long is encrypted on its own rather than joined to its neighbours."""

WORKER_KINDS = frozenset({Kind.RESULT, Kind.HEARTBEAT})
"""The frames an admitted worker may send."""

BACKLOG = 1024
"""Connections the kernel queues before the server accepts them: hundreds of workers (or of
bad peers) arriving at once are queued rather than made to retry after a second or more."""

REASONS_KEPT = 100
"""Refusal reasons kept in `ServerCounts.reasons` (older ones are only counted)."""

REFUSALS_LOGGED = 10
"""Refusals logged one by one in each `SECONDS_REFUSAL_WINDOW`; the rest are summed up."""

SECONDS_REFUSAL_WINDOW = 60.0


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
    reasons: deque[str] = field(default_factory=lambda: deque(maxlen=REASONS_KEPT))


class Handler(Protocol):
    """The owner of the scheduler, as the server sees it: connection events in, frame actions
    out (`SendTask`, `SendExit`, `SendCancel`, `Disconnect`)."""

    def admit(self, hello: dict[str, Any], address: object) -> tuple[str, list[Action]]:
        """A HELLO: the worker's id and first actions, or `ConnectionRefused`."""

    def received(self, worker: str, frame: Frame) -> list[Action]:
        """A frame from an admitted worker; raises `ProtocolError` if it is not allowed."""

    def lost(self, worker: str) -> list[Action]:
        """An admitted worker's connection has closed."""


class _RefusalLog:
    """Logs refusals one by one up to a rate, then once a window with the counts by kind, so a
    flood of bad connections cannot flood the user's terminal. The counts are said when the
    window ends, whether or not another refusal comes."""

    def __init__(self) -> None:
        self.window_start = time.monotonic()
        self.logged = 0
        self.held: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self.window_start >= SECONDS_REFUSAL_WINDOW:
            self.flush()
            self.window_start, self.logged = now, 0
        if self.logged < REFUSALS_LOGGED:
            self.logged += 1
            logger.warning("%s", message)
            return
        if not self.held:
            seconds = self.window_start + SECONDS_REFUSAL_WINDOW - now
            self._timer = asyncio.get_running_loop().call_later(seconds, self.flush)
        self.held[kind] += 1

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.held:
            kinds = ", ".join(f"{kind}: {count}" for kind, count in self.held.most_common())
            logger.warning("%d more connections refused (%s)", self.held.total(), kinds)
            self.held.clear()


class Server:
    """Accept workers and speak the protocol with them.

    Example:
        >>> server = Server(handler=None, ssl_context=None, host="127.0.0.1", port=0)
        >>> server.port, server.counts.refused
        (0, 0)
    """

    def __init__(
        self, handler: Handler | None, ssl_context: ssl.SSLContext | None, host: str, port: int
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.counts = ServerCounts()
        self._peers: dict[str, _Connection] = {}
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._refusals = _RefusalLog()
        self.batching = False
        self.dirty: list[_Connection] = []
        # Every connection reads into these, one at a time on the loop, and its parser copies
        # what it keeps: no connection holds a read buffer of its own.
        self.received = memoryview(bytearray(protocol.READ_BYTES))
        self.plain = memoryview(bytearray(protocol.READ_BYTES))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Frames written inside leave at the end, one write per connection: a burst of
        results and the tasks they free go out in as few sends as there are workers.

        Example:
            >>> server = Server(None, None, "127.0.0.1", 0)
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
    def connections(self) -> int:
        """Open connections, admitted or not (for leak checks).

        Example:
            >>> Server(None, None, "127.0.0.1", 0).connections
            0
        """
        return len(self._connections)

    async def start(self) -> None:
        """Listen; `self.port` becomes the port actually bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=BACKLOG
        )
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
        self._refusals.flush()

    def execute(self, actions: Iterable[Action]) -> None:
        """Carry out frame actions (others are not the server's and are skipped)."""
        for action in actions:
            if isinstance(action, SendTask):
                peer = self._peers.get(action.worker)
                if peer is not None:
                    task = action.task
                    # The worker keeps a cache like this one, updated in the same order.
                    new_setup = task.setup is not None and not peer.functions.seen(task.setup)
                    new_function = not peer.functions.seen(task.function)
                    peer.write_parts(protocol.task_frame_parts(task, new_function, new_setup))
            elif isinstance(action, SendExit):
                self.send(action.worker, protocol.encode(Kind.EXIT, {"reason": action.reason}))
            elif isinstance(action, SendCancel):
                self.send(action.worker, protocol.encode(Kind.CANCEL, {"name": action.name}))
            elif isinstance(action, Disconnect):
                peer = self._peers.get(action.worker)
                if peer is not None:
                    logger.warning("dropping worker %s: %s", action.worker, action.reason)
                    peer.abort()

    def send(self, worker: str, data: bytes) -> None:
        """Send an encoded frame to one worker."""
        peer = self._peers.get(worker)
        if peer is not None:
            peer.write(data)

    def broadcast(self, data: bytes) -> None:
        """Send an encoded frame to every admitted worker."""
        for peer in self._peers.values():
            peer.write(data)

    # ----- for connections --------------------------------------------------------------

    def admitted(self, connection: _Connection, worker: str) -> None:
        self._peers[worker] = connection

    def opened(self, connection: _Connection) -> None:
        self._connections.add(connection)

    def ended(self, connection: _Connection) -> None:
        """A connection is over: it leaves the server, and an admitted worker is lost."""
        self._connections.discard(connection)
        worker = connection.worker
        if worker is not None and self._peers.get(worker) is connection:
            del self._peers[worker]
            if self.handler is not None:
                self.execute(self.handler.lost(worker))

    def refused(self, kind: str, message: str) -> None:
        """Count and log (rate-limited) one refused connection."""
        self.counts.refused += 1
        if kind == "protocol":
            self.counts.protocol_errors += 1
        elif kind == "handshake":
            self.counts.handshake_failures += 1
        self.counts.reasons.append(message)
        self._refusals.add(kind, message)


class _Connection(asyncio.BufferedProtocol):
    """One TCP connection: TLS (through memory buffers, as the worker's channel does), then
    HELLO, then frames as they arrive.

    Doing TLS here rather than in asyncio's SSL layer keeps a connection small (no 256 KiB
    read buffer each) and its handshake inside the HELLO timer. It is refused at most once
    (`_refuse`) and leaves the server exactly once (`_end`), whichever way it ends: a failed
    handshake, a timer, a bad frame, or the peer going away.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.worker: str | None = None
        self.address: Any = None
        self.functions = FunctionCache()
        # Before admission: a HELLO only, no body, a header no longer than a HELLO needs.
        self.parser = FrameParser(0, protocol.HELLO_BYTES_MAX, frozenset({Kind.HELLO}))
        self.transport: asyncio.Transport | None = None
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing_tls = ssl.MemoryBIO()
        self._secured = False
        self._hello_timer: asyncio.TimerHandle | None = None
        self._outgoing: list[bytes | memoryview] = []
        self._counted = False
        self._over = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.address = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            protocol.keep_alive(sock)
        self.server.opened(self)
        self._hello_timer = asyncio.get_running_loop().call_later(SECONDS_HELLO, self._too_slow)
        context = self.server.ssl_context
        if context is not None:
            self._tls = context.wrap_bio(self._incoming, self._outgoing_tls, server_side=True)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.received

    def buffer_updated(self, nbytes: int) -> None:
        if self._counted or self._over:
            return
        data = self.server.received[:nbytes]
        with self.server.batch():
            if self._tls is None:
                self._frames_received(data)
            else:
                self._tls_received(data)

    def _tls_received(self, data: memoryview) -> None:
        tls = self._tls
        assert tls is not None
        self._incoming.write(data)
        if not self._secured:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._send_tls()
                return
            except (ssl.SSLError, OSError) as error:
                self._send_tls()  # the alert that says why, when there is one
                self._refuse(
                    "handshake", f"TLS handshake with {self.address} failed: {error!r:.200}"
                )
                self.abort()
                return
            self._secured = True
        plain = self.server.plain
        while not self._counted:
            try:
                count: int = tls.read(protocol.READ_BYTES, plain)  # type: ignore[assignment]
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the peer's goodbye
                self.close()
                break
            except (ssl.SSLError, OSError) as error:
                self._refuse("protocol", f"TLS from {self._peer} failed: {error!r:.200}")
                self._drop()
                break
            if not count:
                break
            self._frames_received(plain[:count])
        self._send_tls()  # whatever TLS itself has to say (session tickets, key updates)

    def _frames_received(self, data: memoryview) -> None:
        try:
            for frame in self.parser.feed(data):
                if self.worker is None:
                    self._hello(frame)
                    if self.worker is None:
                        return
                elif self.server.handler is not None:
                    self.server.execute(self.server.handler.received(self.worker, frame))
        except ProtocolError as error:
            self._refuse("protocol", f"protocol error from {self._peer}: {error}")
            self._drop()
        except Exception as error:
            logger.exception("unexpected error on the connection from %s", self._peer)
            self._refuse("protocol", f"connection from {self._peer} failed: {error!r:.200}")
            self._drop()

    @property
    def _peer(self) -> str:
        return self.worker or str(self.address)

    def _hello(self, frame: Frame) -> None:
        handler = self.server.handler
        try:
            if handler is None:
                raise ConnectionRefused("the controller takes no workers")
            worker, actions = handler.admit(frame.header, self.address)
        except ConnectionRefused as refusal:
            self._refuse("refused", f"connection from {self.address} refused: {refusal}")
            self.write(protocol.encode(Kind.REFUSE, {"reason": refusal.reply}))
            self.close()
            return
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self.worker = worker
        self.server.admitted(self, worker)
        self.parser.body_bytes_max = protocol.BODY_BYTES_MAX
        self.parser.header_bytes_max = protocol.HEADER_BYTES_MAX
        self.parser.kinds = WORKER_KINDS
        self.write(protocol.encode(Kind.WELCOME, {"worker": worker}))
        self.server.execute(actions)

    def _too_slow(self) -> None:
        if self.worker is None:
            self._refuse("slow", f"connection from {self.address}: no HELLO in {SECONDS_HELLO:g} s")
            self._drop()

    def _drop(self) -> None:
        """End a connection that broke the protocol: a worker is closed gracefully (what is
        queued still leaves); a peer that never became one is cut off, with nothing to say."""
        if self.worker is None:
            self.abort()
        else:
            self.close()

    def _refuse(self, kind: str, message: str) -> None:
        if not self._counted and self.worker is None:
            self._counted = True
            self.server.refused(kind, message)

    def eof_received(self) -> bool | None:
        if self.worker is None:
            if not self._secured and self._tls is not None:
                self._refuse("handshake", f"TLS handshake with {self.address} failed: it left")
            else:
                detail = " mid-frame" if self.parser.buffered else " before saying HELLO"
                self._refuse("protocol", f"connection from {self.address} ended{detail}")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.worker is None:
            self._refuse("protocol", f"connection from {self.address} closed before HELLO")
        self._end()

    def _end(self) -> None:
        if self._over:
            return
        self._over = True
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self._outgoing.clear()
        self._tls = None
        self.server.ended(self)

    def write(self, data: bytes) -> None:
        """Send bytes now, or with the rest of a batch (see `Server.batch`)."""
        self.write_parts([data])

    def write_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        """Send the pieces of a frame one after another (a large body is never copied to join
        its head), now or with the rest of a batch."""
        if self.server.batching:
            if not self._outgoing:
                self.server.dirty.append(self)
            self._outgoing += parts
            return
        self._send(list(parts))

    def flush(self) -> None:
        """Send what a batch queued."""
        parts, self._outgoing = self._outgoing, []
        if parts:
            self._send(parts)

    def _send(self, parts: list[bytes | memoryview]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self._over:
            return
        tls = self._tls
        if tls is None:
            transport.writelines(parts)
            return
        if not self._secured:
            return  # nothing goes out before the handshake
        if all(len(part) < LARGE_BYTES for part in parts):
            tls.write(b"".join(parts))  # one TLS record for a burst of small frames
        else:
            for part in parts:
                tls.write(part)
        self._send_tls()

    def _send_tls(self) -> None:
        transport = self.transport
        if self._outgoing_tls.pending and transport is not None and not transport.is_closing():
            transport.write(self._outgoing_tls.read())

    def close(self) -> None:
        """Close gracefully: what is queued still leaves, then TLS's goodbye."""
        if self._outgoing:
            self.flush()  # a REFUSE or an EXIT still leaves before the connection closes
        tls = self._tls
        if tls is not None and self._secured:
            with contextlib.suppress(ssl.SSLError, OSError):
                tls.unwrap()  # writes close_notify; the peer's own is not waited for
            self._send_tls()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (no TLS goodbye to a peer that stopped answering)."""
        if self.transport is not None:
            self.transport.abort()
