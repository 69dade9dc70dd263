"""Frame encoding and the checks a reader makes before it reads a body."""

from __future__ import annotations

import asyncio

import pytest

from batchcrew import protocol
from batchcrew.errors import ProtocolError
from batchcrew.protocol import Frame, Kind
from batchcrew.server import read_frame


def _read(data: bytes, body_bytes_max: int = protocol.BODY_BYTES_MAX) -> Frame | None:
    async def go() -> Frame | None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, body_bytes_max)

    return asyncio.run(go())


def test_round_trip_with_body() -> None:
    data = protocol.encode(Kind.TASK, {"name": "t1", "seed": 3}, b"payload")
    assert _read(data) == Frame(Kind.TASK, {"name": "t1", "seed": 3}, b"payload")


def test_clean_end_of_stream_is_none() -> None:
    assert _read(b"") is None


def test_truncated_frames_are_errors() -> None:
    data = protocol.encode(Kind.RESULT, {"name": "t"}, b"0123456789")
    with pytest.raises(ProtocolError, match="inside a frame prefix"):
        _read(data[:4])
    with pytest.raises(ProtocolError, match="inside a RESULT frame"):
        _read(data[:-3])


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown frame kind 200"):
        protocol.parse_prefix(protocol.PREFIX.pack(200, 2, 0), 0)


def test_oversize_body_is_refused_from_the_prefix_alone() -> None:
    prefix = protocol.PREFIX.pack(Kind.HELLO, 2, 5000)
    with pytest.raises(ProtocolError, match="body of 5000 bytes is over the 10 limit"):
        _read(prefix, body_bytes_max=10)


def test_oversize_header_is_refused() -> None:
    with pytest.raises(ProtocolError, match="header of"):
        protocol.parse_prefix(protocol.PREFIX.pack(Kind.HELLO, protocol.HEADER_BYTES_MAX + 1, 0), 0)
    with pytest.raises(ProtocolError, match="over the limit"):
        protocol.encode(Kind.HELLO, {"x": "y" * protocol.HEADER_BYTES_MAX})


@pytest.mark.parametrize("header", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_header_must_be_a_json_object(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_header(header)
