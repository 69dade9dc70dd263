"""Hostile and mismatched peers: each is refused and logged while the controller keeps serving."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import batchcrew as bc
from batchcrew import protocol
from batchcrew.protocol import Kind, versions
from tests.integration import tasks
from tests.support.launchers import RecordingLauncher
from tests.support.peers import dial, hello, read_frame
from tests.support.polling import wait_until
from tests.support.processes import process_alive

Make = Callable[..., bc.Controller]


@pytest.fixture
def recorded(make_controller: Make) -> Iterator[tuple[bc.Controller, bc.LaunchRequest]]:
    launcher = RecordingLauncher()
    crew = make_controller(launcher, workers=1, seconds_launch=60)
    crew.push(tasks.square, 4, name="four")
    request = wait_until(lambda: launcher.requests and launcher.requests[0])
    yield crew, request


def _still_serving(crew: bc.Controller) -> None:
    with dial(crew) as connection:
        connection.sendall(hello(_request_of(crew)))
        frame = read_frame(connection)
        assert frame is not None and frame.kind is Kind.WELCOME
        task = read_frame(connection)
        assert task is not None and task.kind is Kind.TASK and task.header["name"] == "four"


def _request_of(crew: bc.Controller) -> bc.LaunchRequest:
    launcher = crew.launcher
    assert isinstance(launcher, RecordingLauncher)
    return launcher.requests[0]


def test_wrong_token_is_refused(
    recorded: tuple[bc.Controller, bc.LaunchRequest], caplog: pytest.LogCaptureFixture
) -> None:
    crew, request = recorded
    with caplog.at_level(logging.WARNING, logger="batchcrew.server"), dial(crew) as connection:
        connection.sendall(hello(request, token="not-the-token"))
        frame = read_frame(connection)
    assert frame is not None and frame.kind is Kind.REFUSE
    assert frame.header["reason"] == "authentication failed"
    assert "wrong token" in caplog.text
    assert crew.connections_refused.refused == 1
    _still_serving(crew)


def test_plaintext_client_is_refused(recorded: tuple[bc.Controller, bc.LaunchRequest]) -> None:
    crew, request = recorded
    with dial(crew, tls=False) as connection:
        connection.sendall(hello(request))
        assert connection.recv(100) in (b"", b"\x15\x03\x01\x00\x02\x02\x16")  # EOF or TLS alert
    wait_until(lambda: crew.connections_refused.refused >= 1)
    _still_serving(crew)


def test_garbage_after_tls_is_refused(recorded: tuple[bc.Controller, bc.LaunchRequest]) -> None:
    crew, _ = recorded
    with dial(crew) as connection:
        connection.sendall(b"\xff" * 64)
        assert read_frame(connection) is None
    wait_until(lambda: crew.connections_refused.protocol_errors == 1)
    _still_serving(crew)


def test_oversize_frame_is_refused_before_its_body(
    recorded: tuple[bc.Controller, bc.LaunchRequest],
) -> None:
    crew, _ = recorded
    with dial(crew) as connection:
        connection.sendall(protocol.PREFIX.pack(Kind.HELLO, 10, 1 << 30))
        assert read_frame(connection) is None
    wait_until(lambda: crew.connections_refused.protocol_errors == 1)
    assert "over the 0 limit" in crew.connections_refused.reasons[-1]
    _still_serving(crew)


@pytest.mark.parametrize(
    ("field", "theirs", "label"),
    [
        ("python", "2.7", "Python"),
        ("cloudpickle", "0.1.0", "cloudpickle"),
        ("protocol", "99", "protocol"),
    ],
)
def test_version_mismatch_names_both_sides(
    recorded: tuple[bc.Controller, bc.LaunchRequest], field: str, theirs: str, label: str
) -> None:
    crew, request = recorded
    with dial(crew) as connection:
        connection.sendall(hello(request, **{field: theirs}))
        frame = read_frame(connection)
    assert frame is not None and frame.kind is Kind.REFUSE
    ours = versions()[field]
    assert frame.header["reason"] == f"worker runs {label} {theirs}, controller {ours}"
    assert any(frame.header["reason"] in error.message for error in crew.launcher.errors())


def test_worker_refuses_a_controller_with_another_certificate(make_controller: Make) -> None:
    crew = make_controller(workers=1)
    crew.start()
    environment = {
        **os.environ,
        "BATCHCREW_HOST": "127.0.0.1",
        "BATCHCREW_PORT": str(crew.port),
        "BATCHCREW_TOKEN": "x",
        "BATCHCREW_LAUNCH": "x",
        "BATCHCREW_FINGERPRINT": bc.TLS.automatic().fingerprint(),
    }
    finished = subprocess.run(
        [sys.executable, "-m", "batchcrew.worker"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 3
    assert "does not match the pinned fingerprint" in finished.stderr


def test_workers_exit_when_the_controller_is_killed(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        import batchcrew as bc
        from tests.integration import tasks
        crew = bc.Controller(workers=2)
        crew.map(tasks.square, range(4))
        crew.walk(tasks.sleep_then, [60, 60])
        time.sleep(0.5)
        print(*crew.summary()["pid"], flush=True)
        time.sleep(120)
        """
    )
    controller = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert controller.stdout is not None
        pids = [int(pid) for pid in controller.stdout.readline().split()]
        assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
        controller.send_signal(signal.SIGKILL)
        controller.wait(timeout=10)
        # A dead controller's sockets close at once, and its workers exit even mid-task.
        wait_until(lambda: not any(process_alive(pid) for pid in pids), seconds=10)
    finally:
        controller.kill()
        controller.wait()


def test_each_bad_connection_is_counted_once(
    recorded: tuple[bc.Controller, bc.LaunchRequest],
) -> None:
    crew, _ = recorded
    for _ in range(5):
        with dial(crew) as connection:
            connection.sendall(b"\xff" * 64)
            assert read_frame(connection) is None
    wait_until(lambda: crew.connections_refused.protocol_errors >= 5)
    _still_serving(crew)
    assert crew.connections_refused.protocol_errors == 5


@pytest.mark.parametrize(
    "hello",
    [
        protocol.PREFIX.pack(Kind.HELLO, 3000, 0) + b"[" * 3000,  # nesting beyond any parser
        protocol.PREFIX.pack(Kind.HELLO, 5000, 0) + b" " * 5000,  # longer than a HELLO needs
        protocol.encode(Kind.HELLO, {"token": "\ud800", "launch": "x", "index": 0}),
    ],
)
def test_malformed_hello_is_refused_and_counted(
    recorded: tuple[bc.Controller, bc.LaunchRequest], hello: bytes
) -> None:
    crew, _ = recorded
    with dial(crew) as connection:
        connection.sendall(hello)
        frame = read_frame(connection)
    assert frame is None or frame.kind is Kind.REFUSE
    wait_until(lambda: crew.connections_refused.refused == 1)
    _still_serving(crew)
