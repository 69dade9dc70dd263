"""Frames between controller and worker: a 9-byte prefix, a header, an optional body.

The prefix carries the kind and both lengths, so a reader refuses an oversize frame, or a kind
it does not take, before it reads the rest. The frames spoken before authentication (HELLO,
WELCOME, REFUSE) have JSON headers; the others, between authenticated peers only, have compact
`marshal` headers. Bodies are pickles and are never unpickled before the peer is authenticated.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import json
import logging
import marshal
import math
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from batchcrew.errors import ProtocolError
from batchcrew.messages import Body, Outcome, Status, TaskSpec
from batchcrew.version import __version__

logger = logging.getLogger("batchcrew.protocol")

PROTOCOL_VERSION = 2
PREFIX = struct.Struct("!BII")
HEADER_BYTES_MAX = 1 << 16
HELLO_BYTES_MAX = 4096
BODY_BYTES_MAX = 1 << 31
READ_BYTES = 1 << 18
"""The most bytes either side reads from a socket, or decrypts, at a time: into buffers it
made once, since a fresh buffer this large costs a memory mapping of its own every time."""
SECONDS_HEARTBEAT = 5.0
"""Each side sends a HEARTBEAT this often, so the other knows it is alive."""
FUNCTIONS_CACHED = 64
"""Function pickles each side remembers per connection; both sides evict alike."""


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


OPEN_KINDS = frozenset({Kind.HELLO, Kind.WELCOME, Kind.REFUSE})
"""Frames that may pass before authentication: their headers are JSON, safe to read from
anyone; every other header is `marshal`, read only from an authenticated peer."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame.

    Example:
        >>> Frame(Kind.EXIT, {"reason": "idle"}).header["reason"]
        'idle'
    """

    kind: Kind
    header: dict[str, Any]
    body: Body = b""


def encode(kind: Kind, header: dict[str, Any], body: bytes = b"") -> bytes:
    """Encode a frame to bytes.

    Example:
        >>> data = encode(Kind.HEARTBEAT, {})
        >>> len(data)
        11
    """
    head = _head(kind, header, len(body))
    return head + body if body else head


def encode_parts(kind: Kind, header: dict[str, Any], body: bytes) -> tuple[bytes, bytes]:
    """A frame as its head (prefix and header) and its body, so a large body is written as it
    is, never copied into one string with its head.

    Example:
        >>> head, body = encode_parts(Kind.TASK, {"name": "t"}, b"x" * 10)
        >>> head + body == encode(Kind.TASK, {"name": "t"}, b"x" * 10)
        True
    """
    return _head(kind, header, len(body)), body


def _head(kind: Kind, header: dict[str, Any], body_length: int) -> bytes:
    if kind in OPEN_KINDS:
        header_bytes = json.dumps(header, separators=(",", ":")).encode()
    else:
        header_bytes = marshal.dumps(header)
    if len(header_bytes) > HEADER_BYTES_MAX:
        raise ProtocolError(f"a {kind.name} header of {len(header_bytes)} bytes is over the limit")
    return PREFIX.pack(kind, len(header_bytes), body_length) + header_bytes


def task_frame(spec: TaskSpec, with_function: bool, with_setup: bool = False) -> bytes:
    """A TASK frame; the pickles of the function and of the setup travel only when the worker
    does not hold them (body: setup, function, arguments).

    Example:
        >>> frame = FrameParser(BODY_BYTES_MAX).feed(
        ...     task_frame(TaskSpec("t1", "k", b"fn", b"args", seed=3), with_function=True))[0]
        >>> frame.header["function_size"], frame.body
        (2, b'fnargs')
    """
    return b"".join(task_frame_parts(spec, with_function, with_setup))


def task_frame_parts(
    spec: TaskSpec, with_function: bool, with_setup: bool = False
) -> list[bytes | memoryview]:
    """`task_frame` as the pieces to write one after another (no copy of the pickles).

    Example:
        >>> parts = task_frame_parts(TaskSpec("t1", "k", b"fn", b"args", seed=3), True)
        >>> parts[1:]
        [b'fn', b'args']
    """
    header: dict[str, Any] = {"name": spec.name, "function": spec.function, "seed": spec.seed}
    if spec.seconds_timeout is not None:
        header["seconds_timeout"] = spec.seconds_timeout
    parts: list[bytes | memoryview] = [b""]
    if spec.setup is not None:
        header["setup"] = spec.setup
        if with_setup:
            header["setup_size"] = len(spec.setup_data)
            parts.append(spec.setup_data)
    if with_function:
        header["function_size"] = len(spec.function_data)
        parts.append(spec.function_data)
    parts.append(spec.arguments)
    if spec.argument_buffers:
        header["buffers"] = [buffer.nbytes for buffer in spec.argument_buffers]
        parts += spec.argument_buffers
    parts[0] = _head(Kind.TASK, header, sum(memoryview(part).nbytes for part in parts))
    return parts


def result_frame(name: str, outcome: Outcome) -> bytes:
    """A RESULT frame (the worker's answer to a TASK), in one string.

    Example:
        >>> outcome = Outcome("error", error="ValueError: bad", seconds=1.5)
        >>> frame = FrameParser(BODY_BYTES_MAX).feed(result_frame("t1", outcome))[0]
        >>> read_result(frame) == ("t1", outcome)
        True
    """
    return b"".join(result_frame_parts(name, outcome))


def result_frame_parts(
    name: str, outcome: Outcome, buffers: Sequence[memoryview] = ()
) -> list[Body]:
    """`result_frame` as its pieces: head, pickle, and the large buffers the pickle refers to
    (sent as they are, their lengths in the header).

    Example:
        >>> result_frame_parts("t1", Outcome("success", b"pickle"))[1:]
        [b'pickle']
    """
    header: dict[str, Any] = {"name": name, "status": outcome.status, "seconds": outcome.seconds}
    if outcome.error is not None:
        header["error"] = outcome.error
    if outcome.traceback is not None:
        header["traceback"] = outcome.traceback
    if outcome.warnings:
        header["warnings"] = list(outcome.warnings)
    if buffers:
        header["buffers"] = [buffer.nbytes for buffer in buffers]
    length = len(outcome.body) + sum(buffer.nbytes for buffer in buffers)
    return [_head(Kind.RESULT, header, length), outcome.body, *buffers]


_REPORTED: dict[object, Status] = {
    "success": "success",
    "error": "error",
    "timeout": "timeout",
    "cancel": "cancel",
}


def read_result(frame: Frame) -> tuple[str, Outcome]:
    """The task name and outcome a RESULT frame carries; raises `ProtocolError` if malformed.

    The body stays pickled: it is loaded by whoever takes the result.
    """
    header = frame.header
    name, reported = header.get("name"), header.get("status")
    # Only texts are shown or looked up: a list or an object (nested as deep as the header
    # allows) is refused before anything turns it into text.
    status = _REPORTED.get(reported) if type(reported) is str else None
    if status is None:
        shown = repr(reported)[:50] if isinstance(reported, str) else type(reported).__name__
        raise ProtocolError(f"RESULT with an unknown status {shown}")
    if type(name) is not str:
        raise ProtocolError("RESULT without a task name")
    seconds = header.get("seconds", 0.0)
    if type(seconds) is not float or not math.isfinite(seconds):
        if type(seconds) is not int or abs(seconds) > 1 << 53:
            raise ProtocolError("RESULT with a malformed duration")
        seconds = float(seconds)
    if len(header) == 3 and "seconds" in header:  # name, status, seconds: nothing more
        return name, Outcome(status, frame.body, seconds=seconds)
    error, trace, warnings = header.get("error"), header.get("traceback"), header.get("warnings")
    if not all(text is None or isinstance(text, str) for text in (error, trace)):
        raise ProtocolError("RESULT with an error or traceback that is not text")
    if warnings is not None and not (
        isinstance(warnings, list) and all(isinstance(item, str) for item in warnings)
    ):
        raise ProtocolError("RESULT with warnings that are not a list of texts")
    lengths = header.get("buffers", [])
    if not (
        isinstance(lengths, list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths)
        and sum(lengths) <= len(frame.body)
    ):
        raise ProtocolError("RESULT with malformed buffer lengths")
    return name, Outcome(
        status=status,
        body=frame.body,
        error=error,
        traceback=trace,
        warnings=tuple(warnings or ()),
        seconds=seconds,
        buffers=tuple(lengths),
    )


def parse_prefix(
    prefix: bytes | bytearray | memoryview,
    body_bytes_max: int,
    header_bytes_max: int = HEADER_BYTES_MAX,
    kinds: frozenset[Kind] | None = None,
) -> tuple[Kind, int, int]:
    """Check a frame prefix against the limits (and the kinds taken: None, any); return kind,
    header length, body length.

    Example:
        >>> parse_prefix(PREFIX.pack(8, 2, 0), 0)
        (<Kind.HEARTBEAT: 8>, 2, 0)
    """
    kind_number, header_length, body_length = PREFIX.unpack_from(prefix)
    try:
        kind = Kind(kind_number)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind_number}") from None
    if kinds is not None and kind not in kinds:
        raise ProtocolError(f"a {kind.name} frame is not taken here")
    if header_length > header_bytes_max:
        raise ProtocolError(f"header of {header_length} bytes is over the {header_bytes_max} limit")
    if body_length > body_bytes_max:
        raise ProtocolError(f"body of {body_length} bytes is over the {body_bytes_max} limit")
    return kind, header_length, body_length


def decode_header(data: bytes, kind: Kind = Kind.HELLO) -> dict[str, Any]:
    """Decode a frame's header (JSON for the frames spoken before authentication, `marshal`
    for the others), which must be a mapping of names.

    Example:
        >>> decode_header(b'{"name": "a"}')
        {'name': 'a'}
        >>> decode_header(marshal.dumps({"name": "a"}), Kind.RESULT)
        {'name': 'a'}
    """
    if kind in OPEN_KINDS:
        try:
            header = json.loads(data)
        except (ValueError, RecursionError) as error:  # bad UTF-8, bad JSON, absurd nesting
            raise ProtocolError(f"header is not JSON: {error!r:.200}") from None
    else:
        try:
            header = marshal.loads(data)
        except (ValueError, EOFError, TypeError) as error:
            raise ProtocolError(f"header does not decode: {error!r:.200}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object" if kind in OPEN_KINDS else "bad header")
    return header


def keep_alive(sock: socket.socket) -> None:
    """Let the kernel probe an idle connection, so a vanished peer is noticed within about
    90 s even while the process is too busy to send heartbeats.

    Example:
        >>> with socket.socket() as sock:
        ...     keep_alive(sock)
        ...     sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        True
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class FrameParser:
    """Turn a byte stream into frames, checking each prefix before its body arrives.

    Sans-I/O: feed it whatever bytes came in, get back the frames they complete. A large frame
    is received into a buffer of its own, made once its prefix is read, and its body is a view
    of that buffer: the bytes are copied once, as they arrive. The buffer reserves at most
    `LARGE_FRAME_RESERVED` up front and grows past it only as bytes come, so a prefix that
    announces gigabytes it never sends cannot make the parser hold them.

    Example:
        >>> parser = FrameParser(body_bytes_max=0)
        >>> data = encode(Kind.HEARTBEAT, {})
        >>> parser.feed(data[:5]), parser.feed(data[5:])
        ([], [Frame(kind=<Kind.HEARTBEAT: 8>, header={}, body=b'')])
    """

    def __init__(
        self,
        body_bytes_max: int,
        header_bytes_max: int = HEADER_BYTES_MAX,
        kinds: frozenset[Kind] | None = None,
    ) -> None:
        self.body_bytes_max = body_bytes_max
        self.header_bytes_max = header_bytes_max
        self.kinds = kinds
        """The kinds of frame taken (None: any); another kind is refused from its prefix."""
        self._buffer = bytearray()
        self._large: _LargeFrame | None = None

    def feed(self, data: bytes | memoryview) -> list[Frame]:
        """Add bytes; return the frames completed so far. Raises `ProtocolError`."""
        frames: list[Frame] = []
        large = self._large
        if large is not None:
            taken = large.fill(data)
            if not large.complete:
                return frames
            self._large = None
            frames.append(large.frame())
            data = memoryview(data)[taken:]
        buffer = self._buffer
        buffer += data
        size = PREFIX.size
        start = 0
        view = memoryview(buffer)
        try:
            while len(buffer) - start >= size:
                kind, header_length, body_length = parse_prefix(
                    view[start : start + size],
                    self.body_bytes_max,
                    self.header_bytes_max,
                    self.kinds,
                )
                header_end = start + size + header_length
                end = header_end + body_length
                if len(buffer) < end:
                    if end - start >= LARGE_FRAME_BYTES:  # the rest goes straight in place
                        self._large = _LargeFrame(kind, header_length, view[start:])
                        start = len(buffer)
                    break
                header = decode_header(bytes(view[start + size : header_end]), kind)
                frames.append(Frame(kind, header, bytes(view[header_end:end])))
                start = end
        finally:
            view.release()
        if start == len(buffer):
            buffer.clear()
        elif start:
            del buffer[:start]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        large = self._large
        return len(self._buffer) + (large.filled if large is not None else 0)


LARGE_FRAME_BYTES = 1 << 16
"""A frame this long is received into a buffer of its own."""

LARGE_FRAME_RESERVED = 1 << 24
"""The most a large frame's buffer reserves before its bytes arrive."""


class _LargeFrame:
    """A large frame being received: a buffer of (up to) its size, filled as bytes arrive."""

    __slots__ = ("buffer", "filled", "header_length", "kind", "size")

    def __init__(self, kind: Kind, header_length: int, start: memoryview) -> None:
        body_length: int = PREFIX.unpack_from(start)[2]
        self.kind = kind
        self.header_length = header_length
        self.size: int = PREFIX.size + header_length + body_length
        self.buffer = bytearray(max(len(start), min(self.size, LARGE_FRAME_RESERVED)))
        self.filled = len(start)
        self.buffer[: self.filled] = start

    @property
    def complete(self) -> bool:
        return self.filled == self.size

    def fill(self, data: bytes | memoryview) -> int:
        """Take what of `data` belongs to this frame; return how many bytes that was."""
        taken = min(len(data), self.size - self.filled)
        end = self.filled + taken
        if end <= len(self.buffer):
            self.buffer[self.filled : end] = memoryview(data)[:taken]
        else:  # past the reserve: the bytes are appended, the buffer growing as they come
            self.buffer[self.filled :] = memoryview(data)[:taken]
        self.filled += taken
        return taken

    def frame(self) -> Frame:
        header_end = PREFIX.size + self.header_length
        view = memoryview(self.buffer)
        header = decode_header(bytes(view[PREFIX.size : header_end]), self.kind)
        return Frame(self.kind, header, view[header_end:])


def version_mismatch(hello: dict[str, Any], ours: dict[str, str]) -> str | None:
    """What makes a worker unable to serve this controller (None: nothing), naming both sides;
    a different batchcrew version alone is only logged.

    Example:
        >>> ours = versions()
        >>> version_mismatch({**ours, "python": "2.7"}, ours)[:27]
        'worker runs Python 2.7, con'
    """
    names = {"protocol": "protocol", "python": "Python", "cloudpickle": "cloudpickle"}
    for key, label in names.items():
        theirs = str(hello.get(key))
        if theirs != ours[key]:
            return f"worker runs {label} {theirs:.40}, controller {ours[key]}"
    if hello.get("batchcrew") != ours["batchcrew"]:
        logger.warning(
            "worker runs batchcrew %.40s, controller %s", hello.get("batchcrew"), ours["batchcrew"]
        )
    return None


def versions() -> dict[str, str]:
    """The versions a worker and its controller must agree on.

    Example:
        >>> sorted(versions())
        ['batchcrew', 'cloudpickle', 'protocol', 'python']
    """
    return {
        "protocol": str(PROTOCOL_VERSION),
        "batchcrew": __version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "cloudpickle": cloudpickle.__version__,
    }


class FunctionCache:
    """Function pickles by key, least recently used evicted first.

    Controller and worker keep one each per connection and update them in the same order, so
    the controller knows which functions the worker already holds and sends each only once.

    Example:
        >>> cache = FunctionCache(capacity=1)
        >>> cache.seen("a"), cache.seen("a")
        (False, True)
    """

    def __init__(self, capacity: int = FUNCTIONS_CACHED) -> None:
        self.capacity = capacity
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def seen(self, key: str, data: bytes = b"") -> bool:
        """Note a use of `key`; True if it was held already (then `data` is ignored)."""
        if key in self._items:
            self._items.move_to_end(key)
            return True
        self._items[key] = data
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return False

    def get(self, key: str) -> bytes:
        """The pickle stored for `key`."""
        return self._items[key]


def function_key(data: bytes) -> str:
    """The cache key of a function pickle.

    Example:
        >>> len(function_key(b"abc"))
        32
    """
    return hashlib.blake2b(data, digest_size=16).hexdigest()
