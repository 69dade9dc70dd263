"""The worker's connection: a socket, TLS through memory buffers, and frame parsing.

Any thread may send or read; a lock serializes the TLS state, so the main thread can run the
hot path itself while a watchdog thread listens during long tasks. No asyncio here: a task
result goes out without a thread hop.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections import deque
from collections.abc import Sequence

from batchcrew import protocol
from batchcrew.errors import CertificateMismatch
from batchcrew.protocol import Frame, Kind
from batchcrew.tls import certificate_matches, client_context


class Channel:
    """A connected, optionally TLS-protected stream of frames.

    Example:
        A worker's channel is `Channel.connect(host, port, fingerprint, seconds)`; here, the
        two ends of a socket pair, without TLS:

        >>> this_end, other_end = socket.socketpair()
        >>> channel, peer = Channel(this_end), Channel(other_end)
        >>> channel.send(protocol.encode(protocol.Kind.HEARTBEAT, {}))
        >>> [frame.kind.name for frame in peer.receive()]
        ['HEARTBEAT']
        >>> channel.close(), peer.close()
        (None, None)
    """

    def __init__(
        self,
        sock: socket.socket,
        tls: ssl.SSLObject | None = None,
        incoming: ssl.MemoryBIO | None = None,
        outgoing: ssl.MemoryBIO | None = None,
    ) -> None:
        self.sock = sock
        self._tls = tls
        self._incoming = incoming or ssl.MemoryBIO()
        self._outgoing = outgoing or ssl.MemoryBIO()
        self._lock = threading.Lock()
        self._parser = protocol.FrameParser(protocol.BODY_BYTES_MAX)
        # Reads go into these (under the lock) and the parser copies what it keeps.
        self._received = memoryview(bytearray(protocol.READ_BYTES))
        self._plain = memoryview(bytearray(protocol.READ_BYTES))
        self._frames: deque[Frame] = deque()
        self.closed = False
        """Closed by this side (`close`)."""
        self._ended = False
        """The controller ended the connection: frames read before it are still taken."""

    @classmethod
    def connect(cls, host: str, port: int, fingerprint: str | None, seconds: float) -> Channel:
        """Connect, do the TLS handshake (when `fingerprint` is given) and check the pin."""
        sock = socket.create_connection((host, port), timeout=seconds)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol.keep_alive(sock)
        if fingerprint is None:
            sock.settimeout(None)
            return cls(sock, None)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context().wrap_bio(incoming, outgoing, server_side=False)
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if outgoing.pending:
                        sock.sendall(outgoing.read())
                    data = sock.recv(protocol.READ_BYTES)
                    if not data:
                        raise ConnectionError(
                            "the controller closed the connection during TLS"
                        ) from None
                    incoming.write(data)
            if outgoing.pending:
                sock.sendall(outgoing.read())
        except BaseException:
            sock.close()
            raise
        if not certificate_matches(tls.getpeercert(binary_form=True), fingerprint):
            sock.close()
            raise CertificateMismatch(
                f"the certificate of {host}:{port} does not match the pinned fingerprint"
            )
        sock.settimeout(None)
        return cls(sock, tls, incoming, outgoing)

    def send(self, data: bytes) -> None:
        """Send bytes (already framed); safe from any thread."""
        self.send_parts((data,))

    def send_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        """Send a frame's pieces one after another (a large body is never copied to join its
        head); safe from any thread."""
        with self._lock:
            if self._tls is None:
                for part in parts:
                    self.sock.sendall(part)
                return
            for part in parts:
                self._tls.write(part)
            self.sock.sendall(self._outgoing.read())

    def pop_frame(self) -> Frame | None:
        """The oldest frame received and not yet taken, if any."""
        with self._lock:
            return self._frames.popleft() if self._frames else None

    def holds_task(self, name: str) -> bool:
        """True if a TASK of this name was received and not yet taken."""
        return self._holds(Kind.TASK, name)

    def holds_cancel(self, name: str) -> bool:
        """True if a CANCEL of this name was received and not yet taken."""
        return self._holds(Kind.CANCEL, name)

    def _holds(self, kind: Kind, name: str) -> bool:
        with self._lock:
            return any(f.kind is kind and f.header.get("name") == name for f in self._frames)

    def receive(self) -> list[Frame]:
        """Read what the socket has now (never blocks); queue and return the frames it completes.

        Raises `ConnectionError` when the controller has closed the connection.
        """
        with self._lock:
            frames: list[Frame] = []
            # Everything available: an edge-triggered reader gets no second call.
            while not self._ended:
                try:
                    count = self.sock.recv_into(self._received, flags=socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                if not count:
                    self._ended = True
                    break
                frames += self._decode(self._received[:count])
                if count < protocol.READ_BYTES:
                    break  # the socket is drained (a new arrival raises a new edge)
            self._frames.extend(frames)
            if self._ended and not frames:  # what came before the end is taken first
                raise ConnectionError("the controller closed the connection")
            return frames

    def _decode(self, data: memoryview) -> list[Frame]:
        """Frames completed by bytes from the socket (the lock held)."""
        if self._tls is None:
            return self._parser.feed(data)
        self._incoming.write(data)
        frames: list[Frame] = []
        while not self._ended:
            try:
                count: int = self._tls.read(protocol.READ_BYTES, self._plain)  # type: ignore[assignment]
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                count = 0
            if not count:  # close_notify, perhaps in the same read as the last frames
                self._ended = True
                break
            frames += self._parser.feed(self._plain[:count])
        if self._outgoing.pending:  # post-handshake messages the TLS layer answers
            self.sock.sendall(self._outgoing.read())
        return frames

    def hide_from_children(self) -> None:
        """In a process forked from the worker (by a task), let go of the connection: only the
        worker itself holds it, so the controller sees it close when the worker dies."""
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, self.sock.fileno())  # the number stays taken: nothing reuses it
            os.close(null)

    def close(self) -> None:
        """Close the socket (wakes any thread waiting on it)."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
