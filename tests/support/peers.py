"""Hand-made peers: dial a controller and speak (or break) the protocol by hand, or play a
controller to a worker."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import ssl
from typing import Any

import batchcrew as bc
from batchcrew import protocol
from batchcrew.protocol import Kind, versions
from batchcrew.server import Server
from tests.support.polling import wait_until


def server_of(crew: bc.Controller) -> Server:
    """The server of a started controller (to count its open connections)."""
    dispatcher = crew._life.dispatcher
    assert dispatcher is not None, "the controller is not started"
    return dispatcher.server


@functools.cache
def _client_context() -> ssl.SSLContext:
    """One context for every hand-made peer (a context per connection would weigh on the
    memory of the process that the tests measure)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def dial(crew: bc.Controller, tls: bool = True) -> socket.socket:
    """A connection to the controller, with TLS (not pinned) or without."""
    raw = socket.create_connection(("127.0.0.1", crew.port), timeout=10)
    if not tls:
        return raw
    return _client_context().wrap_socket(raw)


def all_refused(crew: bc.Controller, count: int, workers: int = 1) -> None:
    """Wait until `count` connections were refused in all and only the connections of
    `workers` workers are left; fail unless each was counted exactly once."""
    counts, connections = crew.connections_refused, server_of(crew)

    def settled() -> bool:
        return counts.refused >= count and connections.connections == workers

    wait_until(settled, seconds=30)
    assert counts.refused == count, list(counts.reasons)[-5:]


def open_idle(crew: bc.Controller, count: int) -> list[socket.socket]:
    """`count` TCP connections to the controller that never start TLS nor say anything."""
    return [socket.create_connection(("127.0.0.1", crew.port), timeout=30) for _ in range(count)]


def closed_by_the_server(connection: socket.socket) -> bool:
    """Wait for the server to end a connection that sends nothing; True once it has."""
    try:
        return connection.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def read_frame(connection: socket.socket) -> protocol.Frame | None:
    """The next whole frame, or None when the connection ends first."""

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                return b""
            data += chunk
        return data

    prefix = exactly(protocol.PREFIX.size)
    if not prefix:
        return None
    kind, header_length, body_length = protocol.parse_prefix(prefix, protocol.BODY_BYTES_MAX)
    header = protocol.decode_header(exactly(header_length), kind)
    return protocol.Frame(kind, header, exactly(body_length) if body_length else b"")


def read_until_the_end(connection: socket.socket) -> list[protocol.Frame]:
    """Every frame the controller sends until it ends the connection (closed or reset)."""
    frames: list[protocol.Frame] = []
    try:
        while (frame := read_frame(connection)) is not None:
            frames.append(frame)
    except ConnectionResetError:
        pass
    return frames


def hello(request: bc.LaunchRequest, index: int = 0, **changes: Any) -> bytes:
    """A HELLO as worker `index` of a launch would say it (with `changes`)."""
    header = {
        "token": request.environment["BATCHCREW_TOKEN"],
        "launch": request.launch,
        "index": index,
        "pid": os.getpid(),
        **versions(),
    }
    header.update(changes)
    return protocol.encode(Kind.HELLO, header)


def answer_and_close_in_one_send(listener: socket.socket, tls: bc.TLS, answer: bytes) -> None:
    """Play a controller to one worker: accept, complete TLS, then send `answer` and the TLS
    close_notify together, in one send (so the worker reads both in one read)."""
    context = tls.server_context()
    context.num_tickets = 0  # nothing else follows the handshake: the answer comes alone
    connection, _ = listener.accept()
    connection.settimeout(10)
    with connection:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        session = context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                session.do_handshake()
                break
            except ssl.SSLWantReadError:
                connection.sendall(outgoing.read())
                data = connection.recv(65536)
                if not data:
                    return
                incoming.write(data)
        connection.sendall(outgoing.read())
        session.write(answer)
        with contextlib.suppress(ssl.SSLWantReadError):  # the peer's close_notify: not awaited
            session.unwrap()  # writes close_notify
        connection.sendall(outgoing.read())
        with contextlib.suppress(OSError):
            connection.recv(1)  # until the worker closes its side
