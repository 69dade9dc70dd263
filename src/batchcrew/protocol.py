"""Frames between controller and worker: a 9-byte prefix, a JSON header, an optional body.

The prefix carries the kind and both lengths, so a reader refuses an oversize frame before it
reads the rest. Bodies are pickles and are never unpickled before the peer is authenticated.
"""

from __future__ import annotations

import asyncio
import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

from batchcrew.errors import ProtocolError

PROTOCOL_VERSION = 1
PREFIX = struct.Struct("!BII")
HEADER_BYTES_MAX = 1 << 16
HELLO_BYTES_MAX = 4096
BODY_BYTES_MAX = 1 << 31
PICKLE_PROTOCOL = 5


class Kind(enum.IntEnum):
    """What a frame says.

    Example:
        >>> Kind(4).name
        'TASK'
    """

    HELLO = 1
    WELCOME = 2
    REFUSE = 3
    TASK = 4
    RESULT = 5
    EXIT = 6
    CANCEL = 7
    HEARTBEAT = 8


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame.

    Example:
        >>> Frame(Kind.EXIT, {"reason": "idle"}).header["reason"]
        'idle'
    """

    kind: Kind
    header: dict[str, Any]
    body: bytes = b""


def encode(kind: Kind, header: dict[str, Any], body: bytes = b"") -> bytes:
    """Encode a frame to bytes.

    Example:
        >>> data = encode(Kind.HEARTBEAT, {})
        >>> len(data)
        11
    """
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    if len(header_bytes) > HEADER_BYTES_MAX:
        raise ProtocolError(f"a {kind.name} header of {len(header_bytes)} bytes is over the limit")
    return PREFIX.pack(kind, len(header_bytes), len(body)) + header_bytes + body


def parse_prefix(prefix: bytes, body_bytes_max: int) -> tuple[Kind, int, int]:
    """Check a frame prefix against the limits; return kind, header length, body length.

    Example:
        >>> parse_prefix(PREFIX.pack(8, 2, 0), 0)
        (<Kind.HEARTBEAT: 8>, 2, 0)
    """
    kind_number, header_length, body_length = PREFIX.unpack(prefix)
    try:
        kind = Kind(kind_number)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind_number}") from None
    if header_length > HEADER_BYTES_MAX:
        raise ProtocolError(f"header of {header_length} bytes is over the {HEADER_BYTES_MAX} limit")
    if body_length > body_bytes_max:
        raise ProtocolError(f"body of {body_length} bytes is over the {body_bytes_max} limit")
    return kind, header_length, body_length


def decode_header(data: bytes) -> dict[str, Any]:
    """Decode a JSON header, which must be an object.

    Example:
        >>> decode_header(b'{"name": "a"}')
        {'name': 'a'}
    """
    try:
        header = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    return header


async def read_frame(reader: asyncio.StreamReader, body_bytes_max: int) -> Frame | None:
    """Read one frame; None at a clean end of stream, `ProtocolError` on anything malformed.

    Example:
        >>> async def first(reader):
        ...     return await read_frame(reader, BODY_BYTES_MAX)
    """
    try:
        prefix = await reader.readexactly(PREFIX.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise ProtocolError("connection closed inside a frame prefix") from None
        return None
    kind, header_length, body_length = parse_prefix(prefix, body_bytes_max)
    try:
        header_bytes = await reader.readexactly(header_length)
        body = await reader.readexactly(body_length) if body_length else b""
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"connection closed inside a {kind.name} frame") from None
    return Frame(kind, decode_header(header_bytes), body)
