"""Frame encoding and the checks the parser makes before a body arrives."""

from __future__ import annotations

import itertools
import json
import math
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# ----- fuzzing: whatever a peer sends, the parser answers with frames or a ProtocolError -----

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["success", "error", "timeout", "cancel", "t1"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_HEADERS = st.dictionaries(
    st.sampled_from(["name", "status", "seconds", "error", "traceback", "warnings"]) | st.text(),
    _JSON,
    max_size=8,
)


@st.composite
def _segments(draw: st.DrawFn) -> bytes:
    """Bytes as a hostile or broken peer may send them: frames whole, cut, bent or made up."""
    kind = draw(st.integers(0, 255) | st.sampled_from(list(Kind)))
    header = draw(_HEADERS)
    body = draw(st.binary(max_size=100))
    try:
        frame = protocol.encode(Kind(kind), header, body) if kind in set(Kind) else b""
    except ProtocolError:
        frame = b""
    choice = draw(st.sampled_from(["frame", "cut", "bent", "prefix", "random"]))
    if choice == "frame" and frame:
        return frame
    if choice == "cut" and frame:
        return frame[: draw(st.integers(0, len(frame)))]
    if choice == "bent" and frame:
        position = draw(st.integers(0, len(frame) - 1))
        return frame[:position] + bytes([draw(st.integers(0, 255))]) + frame[position + 1 :]
    if choice == "prefix":
        lengths = st.sampled_from([0, 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
        return protocol.PREFIX.pack(kind, draw(lengths), draw(lengths))
    return draw(st.binary(max_size=100))


def _feed(parser: FrameParser, pieces: list[bytes]) -> tuple[list[Frame], bool]:
    """Frames returned before the parser refused the stream (and whether it did)."""
    frames: list[Frame] = []
    for piece in pieces:
        try:
            frames += parser.feed(piece)
        except ProtocolError:
            return frames, True
        held_max = protocol.PREFIX.size + parser.header_bytes_max + parser.body_bytes_max
        assert parser.buffered < max(held_max, protocol.PREFIX.size)
    return frames, False


@settings(max_examples=200, deadline=2_000)
@given(
    data=st.lists(_segments(), max_size=5).map(b"".join),
    cuts=st.lists(st.integers(0, 1_500), max_size=8),
    body_bytes_max=st.sampled_from([0, 10, 100, protocol.BODY_BYTES_MAX]),
    header_bytes_max=st.sampled_from([0, 50, protocol.HELLO_BYTES_MAX, protocol.HEADER_BYTES_MAX]),
)
def test_any_bytes_cut_anywhere_give_the_same_frames_or_a_protocol_error(
    data: bytes, cuts: list[int], body_bytes_max: int, header_bytes_max: int
) -> None:
    def parser() -> FrameParser:
        return FrameParser(body_bytes_max, header_bytes_max)

    bounds = [0, *sorted(cut for cut in cuts if cut < len(data)), len(data)]
    pieces = [data[start:end] for start, end in itertools.pairwise(bounds)]
    one_by_one, refused = _feed(parser(), [data[i : i + 1] for i in range(len(data))])
    whole, whole_refused = _feed(parser(), [data])
    cut, cut_refused = _feed(parser(), pieces)
    assert whole_refused == cut_refused == refused
    # Frames completed in the read that is refused are not returned, never others.
    assert whole == one_by_one[: len(whole)] and cut == one_by_one[: len(cut)]
    if not refused:
        assert whole == cut == one_by_one


def test_a_prefix_announcing_gigabytes_reserves_no_more_than_the_reserve() -> None:
    parser = FrameParser(protocol.BODY_BYTES_MAX)
    tracemalloc.start()
    try:
        parser.feed(protocol.PREFIX.pack(Kind.TASK, 0, protocol.BODY_BYTES_MAX) + b"x" * 1000)
        held = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parser.buffered == protocol.PREFIX.size + 1000
    assert held < 2 * protocol.LARGE_FRAME_RESERVED < protocol.BODY_BYTES_MAX // 16


@pytest.mark.parametrize("body_bytes", [10, protocol.LARGE_FRAME_BYTES * 3], ids=["small", "large"])
def test_frames_keep_nothing_of_the_buffer_they_were_read_from(body_bytes: int) -> None:
    # Both sides read every connection into one buffer and overwrite it at the next read.
    data = protocol.encode(Kind.TASK, {"name": "t"}, b"b" * body_bytes)
    data += protocol.encode(Kind.HEARTBEAT, {})
    reused = bytearray(1000)
    parser = FrameParser(protocol.BODY_BYTES_MAX)
    frames: list[Frame] = []
    for start in range(0, len(data), len(reused)):
        piece = data[start : start + len(reused)]
        reused[: len(piece)] = piece
        frames += parser.feed(memoryview(reused)[: len(piece)])
        reused[:] = b"x" * len(reused)  # the next read's bytes
    assert [(frame.kind, frame.header) for frame in frames] == [
        (Kind.TASK, {"name": "t"}),
        (Kind.HEARTBEAT, {}),
    ]
    assert bytes(frames[0].body) == b"b" * body_bytes


def test_a_frame_longer_than_the_reserve_arrives_whole_in_any_pieces() -> None:
    body = bytes(range(256)) * (3 * protocol.LARGE_FRAME_RESERVED // 256 + 7)
    data = protocol.encode(Kind.TASK, {"name": "big"}, body) + protocol.encode(Kind.HEARTBEAT, {})
    parser = FrameParser(protocol.BODY_BYTES_MAX)
    frames: list[Frame] = []
    for start in range(0, len(data), 1_000_003):
        frames += parser.feed(data[start : start + 1_000_003])
    assert [frame.kind for frame in frames] == [Kind.TASK, Kind.HEARTBEAT]
    assert frames[0].header == {"name": "big"} and frames[0].body == body
    assert parser.buffered == 0


@settings(max_examples=200, deadline=2_000)
@given(header=_HEADERS, body=st.binary(max_size=50))
def test_any_result_header_gives_an_outcome_or_a_protocol_error(
    header: dict[str, Any], body: bytes
) -> None:
    # What arrives went through JSON: the header is what decoding its text gives.
    arrived = protocol.decode_header(json.dumps(header).encode())
    try:
        name, outcome = protocol.read_result(Frame(Kind.RESULT, arrived, body))
    except ProtocolError:
        return
    assert name == arrived["name"] and outcome.status == arrived["status"]
    assert outcome.body == body and math.isfinite(outcome.seconds)


@pytest.mark.parametrize(
    "changes",
    [
        {"seconds": 10**400},
        {"seconds": float("nan")},
        {"status": ["success"]},
        {"warnings": [[[[]]]] * 2},
        {"error": {"deep": [[["nested"]]]}},
    ],
    ids=["huge-seconds", "nan-seconds", "list-status", "nested-warnings", "nested-error"],
)
def test_malformed_results_are_protocol_errors(changes: dict[str, Any]) -> None:
    header = {"name": "t1", "status": "success", "seconds": 1.0, **changes}
    with pytest.raises(ProtocolError, match="RESULT with"):
        protocol.read_result(Frame(Kind.RESULT, header))


def test_a_result_nested_to_the_json_limit_is_a_protocol_error() -> None:
    depth = 950  # decodes, but turning it into text would exhaust the interpreter's stack
    text = '{"name":"t","status":"success","warnings":[' + "[" * depth + "]" * depth + "]}"
    with pytest.raises(ProtocolError):
        protocol.read_result(Frame(Kind.RESULT, protocol.decode_header(text.encode())))
