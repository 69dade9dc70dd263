"""The worker's connection against a controller played by hand over real TLS on 127.0.0.1."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest

import batchcrew as bc
from batchcrew import protocol
from batchcrew.channel import Channel
from batchcrew.protocol import Frame, Kind
from tests.support.peers import answer_and_close_in_one_send
from tests.support.polling import wait_until


@pytest.fixture
def refusing_controller() -> Iterator[tuple[int, bc.TLS]]:
    """A port where a controller answers one worker with REFUSE and close_notify in one send."""
    tls = bc.TLS.automatic()
    refusal = protocol.encode(Kind.REFUSE, {"reason": "authentication failed"})
    with socket.create_server(("127.0.0.1", 0)) as listener:
        answering = threading.Thread(
            target=answer_and_close_in_one_send, args=(listener, tls, refusal), daemon=True
        )
        answering.start()
        yield listener.getsockname()[1], tls
        answering.join(timeout=10)


def test_frames_read_with_the_close_are_returned_then_the_end_is_raised(
    refusing_controller: tuple[int, bc.TLS],
) -> None:
    port, tls = refusing_controller
    channel = Channel.connect("127.0.0.1", port, tls.fingerprint(), 10.0)
    outcomes: list[list[Frame] | ConnectionError] = []

    def receive_until_the_end() -> None:
        frames: list[Frame] = []
        while not frames and select.select([channel.sock], [], [], 10)[0]:
            frames = channel.receive()
        outcomes.append(frames)
        try:
            outcomes.append(channel.receive())  # the socket itself is still open
        except ConnectionError as error:
            outcomes.append(error)

    try:
        # A channel that spins never returns from `receive`: it runs where a test can give up.
        threading.Thread(target=receive_until_the_end, daemon=True).start()
        wait_until(lambda: len(outcomes) == 2, seconds=5)
        frames, end = outcomes
        assert isinstance(frames, list) and [frame.kind for frame in frames] == [Kind.REFUSE]
        assert isinstance(end, ConnectionError) and "closed the connection" in str(end)
    finally:
        channel.close()
