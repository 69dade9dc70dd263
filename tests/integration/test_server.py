"""The server under attack on 127.0.0.1: every connection that does not become a worker is
refused and counted exactly once, nothing from it is ever unpickled, it leaves nothing behind
(connections, TLS objects, descriptors, memory), and real workers are served throughout."""

from __future__ import annotations

import asyncio.sslproto
import contextlib
import gc
import logging
import operator
import pickle
import random
import select
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

import batchcrew as bc
from batchcrew import protocol, server
from batchcrew.protocol import Kind
from tests.integration import tasks
from tests.support.launchers import RecordingLauncher
from tests.support.light_workers import ThreadLauncher
from tests.support.peers import (
    all_refused,
    closed_by_the_server,
    dial,
    hello,
    open_idle,
    read_frame,
    read_until_the_end,
    server_of,
)
from tests.support.polling import wait_until
from tests.support.processes import trimmed_footprint

Make = Callable[..., bc.Controller]
Tls = Literal["automatic"] | None

MEGABYTES_KEPT_MAX = 20
"""How much more memory the controller may hold after a flood than before it (noise of the
allocator; a leak of one connection's TLS state is about 0.3 MB, 150 MB for 500)."""


@pytest.fixture
def seconds_hello(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Shorten how long a connection may take to say HELLO (before the controller starts)."""
    return lambda seconds: monkeypatch.setattr(server, "SECONDS_HELLO", seconds)


def _serving(make: Make, tls: Tls = "automatic") -> tuple[bc.Controller, ThreadLauncher]:
    """A controller with one connected worker (a thread of this process, on real TLS)."""
    launcher = ThreadLauncher()
    crew = make(launcher, workers=1, tls=tls)
    assert crew.push(operator.neg, 1).result(timeout=30).value == -1
    return crew, launcher


def _still_serves(crew: bc.Controller) -> None:
    assert crew.map(operator.neg, range(50)).values() == [-x for x in range(50)]


def _ssl_protocols() -> int:
    gc.collect()
    return sum(isinstance(item, asyncio.sslproto.SSLProtocol) for item in gc.get_objects())


def test_500_idle_connections_are_refused_once_each_and_leave_nothing_behind(
    make_controller: Make, seconds_hello: Callable[[float], None]
) -> None:
    seconds_hello(1.0)
    crew, _ = _serving(make_controller)
    for connection in open_idle(crew, 500):  # the same load once, so the allocator has grown
        connection.close()
    all_refused(crew, 500)
    before, protocols = trimmed_footprint(), _ssl_protocols()
    idle = open_idle(crew, 500)  # TCP only: none of them starts TLS
    try:
        wait_until(lambda: server_of(crew).connections == 501)
        _still_serves(crew)
        assert all(closed_by_the_server(connection) for connection in idle)
    finally:
        for connection in idle:
            connection.close()
    all_refused(crew, 1000)
    assert crew.connections_refused.reasons[-1].endswith("no HELLO in 1 s")
    assert _ssl_protocols() <= protocols  # none of the flood's is left
    after = trimmed_footprint()
    assert after.fds <= before.fds and after.threads <= before.threads, after.grown_since(before)
    assert after.megabytes < before.megabytes + MEGABYTES_KEPT_MAX, after.grown_since(before)
    _still_serves(crew)


@pytest.mark.parametrize("ending", ["close", "silence"])
def test_a_partial_frame_is_counted_once_however_the_connection_ends(
    make_controller: Make, seconds_hello: Callable[[float], None], ending: str
) -> None:
    seconds_hello(0.5)
    crew, launcher = _serving(make_controller)
    partial = hello(launcher.requests[0])[:20]
    connections = []
    for _ in range(10):
        connection = dial(crew)
        connection.sendall(partial)
        connections.append(connection)
    try:
        if ending == "silence":  # the server cuts them at the HELLO deadline
            assert not any(read_until_the_end(connection) for connection in connections)
    finally:
        for connection in connections:
            connection.close()
    all_refused(crew, 10)
    _still_serves(crew)


def test_slow_loris_connections_are_cut_at_the_hello_deadline_and_counted_once_each(
    make_controller: Make, seconds_hello: Callable[[float], None]
) -> None:
    seconds_hello(1.0)
    crew, launcher = _serving(make_controller)
    before = trimmed_footprint()
    trickle = hello(launcher.requests[0])
    connections = {dial(crew): 0 for _ in range(50)}
    try:
        while connections:  # a byte to each connection every 0.1 s, until the server cuts it
            for connection, sent in connections.items():
                with contextlib.suppress(OSError):  # cut already: `select` tells it below
                    connection.sendall(trickle[sent : sent + 1])
                connections[connection] = (sent + 1) % len(trickle)
            cut, _, _ = select.select(list(connections), [], [], 0.1)
            for connection in cut:
                assert closed_by_the_server(connection)
                del connections[connection]
                connection.close()
    finally:
        for connection in connections:
            connection.close()
    all_refused(crew, 50)
    assert all("no HELLO in 1 s" in reason for reason in crew.connections_refused.reasons)
    after = trimmed_footprint()
    assert after.fds <= before.fds and after.megabytes < before.megabytes + MEGABYTES_KEPT_MAX
    _still_serves(crew)


def test_random_bytes_with_and_without_tls_are_refused_once_each(make_controller: Make) -> None:
    crew, _ = _serving(make_controller)
    before = trimmed_footprint()
    draws = random.Random(11)
    for index in range(40):
        with dial(crew, tls=index % 2 == 0) as connection:
            connection.sendall(draws.randbytes(draws.randint(1, 4_000)))
    all_refused(crew, 40)
    after = trimmed_footprint()
    assert after.fds <= before.fds and after.megabytes < before.megabytes + MEGABYTES_KEPT_MAX
    _still_serves(crew)


def test_a_hello_cut_anywhere_is_refused_once_and_admits_no_one(make_controller: Make) -> None:
    crew, launcher = _serving(make_controller)
    whole = hello(launcher.requests[0], index=1)  # the token of a real worker, a free index
    cuts = [*range(protocol.PREFIX.size + 1), *range(protocol.PREFIX.size + 1, len(whole), 9)]
    for cut in cuts:
        with dial(crew) as connection:
            connection.sendall(whole[:cut])
    all_refused(crew, len(cuts))
    assert len(crew.summary()) == 1
    _still_serves(crew)


@pytest.mark.parametrize(
    "prefix",
    [
        protocol.PREFIX.pack(Kind.HELLO, 2**32 - 1, 0),
        protocol.PREFIX.pack(Kind.HELLO, 0, 2**32 - 1),
        protocol.PREFIX.pack(Kind.RESULT, 2**32 - 1, 2**32 - 1),
        protocol.PREFIX.pack(Kind.HELLO, protocol.HELLO_BYTES_MAX + 1, 0),
    ],
    ids=["header", "body", "both", "hello-size"],
)
def test_maximal_lengths_are_refused_from_the_prefix_alone(
    make_controller: Make, seconds_hello: Callable[[float], None], prefix: bytes
) -> None:
    seconds_hello(60)  # only the prefix can be why the connection is cut at once
    crew, _ = _serving(make_controller)
    with dial(crew) as connection:
        connection.settimeout(5)
        connection.sendall(prefix)
        assert read_frame(connection) is None
    all_refused(crew, 1)
    reason = crew.connections_refused.reasons[-1]
    assert "limit" in reason or "a RESULT frame is not taken here" in reason
    _still_serves(crew)


def _refusal(crew: bc.Controller, request: bc.LaunchRequest, index: int) -> str:
    with dial(crew) as connection:
        connection.sendall(hello(request, index))
        frame = read_frame(connection)
    assert frame is not None and frame.kind is Kind.REFUSE
    return str(frame.header["reason"])


def test_a_replayed_token_is_refused_with_what_is_true(make_controller: Make) -> None:
    launcher = RecordingLauncher()
    crew = make_controller(launcher, workers=2)
    crew.walk(operator.neg, [1, 2])
    request = wait_until(lambda: launcher.requests and launcher.requests[0])
    assert request.count == 2
    first, second = dial(crew), dial(crew)
    with first, second:
        for index, worker in enumerate((first, second)):
            worker.sendall(hello(request, index))
            welcome = read_frame(worker)
            assert welcome is not None and welcome.kind is Kind.WELCOME
        assert _refusal(crew, request, 1) == (
            f"worker 1 of launch {request.launch} is connected already"
        )
        first.close()  # worker 0 leaves; worker 1 keeps the launch in the book
        wait_until(lambda: (crew.summary()["status"] != "connected").any())
        assert _refusal(crew, request, 0) == (
            f"worker 0 of launch {request.launch} has connected before and has since left; "
            "its token was for one connection"
        )
        all_refused(crew, 2)


class _Positions:
    """Every place a peer that is not (yet) a worker can put a pickle, with `bait` as the
    pickle: raw on the socket, as a HELLO's header, as the body of every frame kind, after
    a refused HELLO in the same write and in a later one."""

    def __init__(self, request: bc.LaunchRequest, bait: bytes) -> None:
        self.request, self.bait = request, bait

    def frames(self) -> list[tuple[str, list[bytes]]]:
        bait, request = self.bait, self.request
        as_text = bait.decode("latin-1")
        bodies = [
            (f"{kind.name} body before HELLO", [_frame(kind, {"name": "task-0"}, bait)])
            for kind in Kind
        ]
        wrong = hello(request, token="not-the-token")
        used = hello(request)  # the token of the worker already connected
        mismatch = hello(request, python="2.7")
        result = _frame(Kind.RESULT, {"name": "task-0", "status": "success"}, bait)
        return [
            ("raw bytes", [bait]),
            ("raw bytes after a prefix", [protocol.PREFIX.pack(Kind.HELLO, len(bait), 0), bait]),
            ("HELLO header", [protocol.encode(Kind.HELLO, {"token": as_text, "pickle": as_text})]),
            *bodies,
            ("RESULT with a wrong token, same write", [wrong + result]),
            ("RESULT with a wrong token, next write", [wrong, result]),
            ("RESULT with a used token, same write", [used + result]),
            ("RESULT with a used token, next write", [used, result]),
            ("RESULT with other versions, same write", [mismatch + result]),
        ]


def _frame(kind: Kind, header: dict[str, Any], body: bytes) -> bytes:
    """A frame as a hostile peer writes it (the encoder's own checks are not its concern)."""
    header_bytes = protocol.encode(Kind.HEARTBEAT, header)[protocol.PREFIX.size :]
    return protocol.PREFIX.pack(kind, len(header_bytes), len(body)) + header_bytes + body


@pytest.mark.parametrize("tls", ["automatic", None], ids=["tls", "plaintext"])
def test_nothing_from_a_peer_that_is_not_a_worker_is_ever_unpickled(
    make_controller: Make, tmp_path: Path, tls: Tls
) -> None:
    crew, launcher = _serving(make_controller, tls)
    mark = tmp_path / "unpickled"
    bait = pickle.dumps(tasks.MarkWhenLoaded(str(mark)))
    positions = _Positions(launcher.requests[0], bait).frames()
    if tls is not None:
        positions += [("plaintext to the TLS port", [bait])]
    for name, writes in positions:
        with dial(crew, tls=tls is not None and name != "plaintext to the TLS port") as peer:
            for data in writes:
                try:
                    peer.sendall(data)
                except OSError:  # the server has hung up already: it read enough
                    break
            peer.settimeout(5)
            assert {frame.kind for frame in read_until_the_end(peer)} <= {Kind.REFUSE}
        assert not mark.exists(), f"unpickled: {name}"
    all_refused(crew, len(positions))
    assert not mark.exists()
    # The bait works: a worker's result carrying it leaves the mark when it is taken.
    assert crew.push(tasks.mark_when_loaded, str(mark)).result(timeout=30).status == "success"
    assert mark.exists()


def test_refusals_are_logged_one_by_one_then_summed_up(
    make_controller: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server, "REFUSALS_LOGGED", 3)
    monkeypatch.setattr(server, "SECONDS_REFUSAL_WINDOW", 2.0)
    crew, _ = _serving(make_controller)
    with caplog.at_level(logging.WARNING, logger="batchcrew.server"):
        for _ in range(12):
            with dial(crew) as connection:
                connection.sendall(b"\xff" * 16)
        all_refused(crew, 12)
        # The sum comes when the window ends, even if no other connection ever comes.
        wait_until(lambda: any("more connections" in r.message for r in caplog.records))
    lines = [record.getMessage() for record in caplog.records]
    one_by_one = [line for line in lines if line.startswith("protocol error from")]
    sums = [line for line in lines if "more connections refused (protocol: " in line]
    assert len(one_by_one) + len(sums) == len(lines)
    assert lines[:3] == one_by_one[:3] and lines[3] in sums  # three, then the rest of the window
    assert len(one_by_one) + sum(int(line.split()[0]) for line in sums) == 12
    _still_serves(crew)
