"""Hand-made peers of a controller: dial its port, speak (or break) the protocol by hand."""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

import batchcrew as bc
from batchcrew import protocol
from batchcrew.protocol import Kind, versions


def dial(crew: bc.Controller, tls: bool = True) -> socket.socket:
    """A connection to the controller, with TLS (not pinned) or without."""
    raw = socket.create_connection(("127.0.0.1", crew.port), timeout=10)
    if not tls:
        return raw
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(raw)


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
    header = protocol.decode_header(exactly(header_length))
    return protocol.Frame(kind, header, exactly(body_length) if body_length else b"")


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
