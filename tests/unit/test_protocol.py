"""Frame encoding and the checks the parser makes before a body arrives."""

from __future__ import annotations

import pytest

from batchcrew import protocol
from batchcrew.errors import ProtocolError
from batchcrew.protocol import Frame, FrameParser, FunctionCache, Kind, function_key


def test_round_trip_with_body_in_any_chunks() -> None:
    data = protocol.encode(Kind.TASK, {"name": "t1", "seed": 3}, b"payload")
    data += protocol.encode(Kind.HEARTBEAT, {})
    for chunk in (1, 3, 7, len(data)):
        parser = FrameParser(protocol.BODY_BYTES_MAX)
        frames: list[Frame] = []
        for start in range(0, len(data), chunk):
            frames += parser.feed(data[start : start + chunk])
        assert frames == [
            Frame(Kind.TASK, {"name": "t1", "seed": 3}, b"payload"),
            Frame(Kind.HEARTBEAT, {}),
        ]
        assert parser.buffered == 0


def test_partial_frame_stays_buffered() -> None:
    parser = FrameParser(protocol.BODY_BYTES_MAX)
    data = protocol.encode(Kind.RESULT, {"name": "t"}, b"0123456789")
    assert parser.feed(data[:-3]) == []
    assert parser.buffered == len(data) - 3


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown frame kind 200"):
        FrameParser(0).feed(protocol.PREFIX.pack(200, 2, 0))


def test_oversize_body_is_refused_from_the_prefix_alone() -> None:
    prefix = protocol.PREFIX.pack(Kind.HELLO, 2, 5000)
    with pytest.raises(ProtocolError, match="body of 5000 bytes is over the 10 limit"):
        FrameParser(10).feed(prefix)


def test_oversize_header_is_refused() -> None:
    with pytest.raises(ProtocolError, match="header of"):
        protocol.parse_prefix(protocol.PREFIX.pack(Kind.HELLO, protocol.HEADER_BYTES_MAX + 1, 0), 0)
    with pytest.raises(ProtocolError, match="over the limit"):
        protocol.encode(Kind.HELLO, {"x": "y" * protocol.HEADER_BYTES_MAX})


@pytest.mark.parametrize("header", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_header_must_be_a_json_object(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_header(header)


def test_function_caches_evict_alike() -> None:
    controller_side, worker_side = FunctionCache(capacity=2), FunctionCache(capacity=2)
    keys = ["a", "b", "a", "c", "b", "a", "d", "d"]
    sent = [controller_side.seen(key) for key in keys]
    received = [worker_side.seen(key, key.encode()) for key in keys]
    assert sent == received == [False, False, True, False, False, False, False, True]
    assert worker_side.get("d") == b"d"
    assert function_key(b"x") == function_key(b"x") != function_key(b"y")
