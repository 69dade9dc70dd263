"""Launches that never connect, processes that die early, and the worker's own entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import batchcrew as bc
from tests.integration import tasks
from tests.support.polling import wait_until
from tests.support.processes import process_alive

Make = Callable[..., bc.Controller]


class FirstLaunchHangs(bc.LocalLauncher):
    """The first launch runs a program that never connects; later launches are real."""

    def __init__(self, hanging_python: Path) -> None:
        super().__init__()
        self.hanging_python = str(hanging_python)
        self.launches: list[bc.LaunchRequest] = []

    def launch(self, request: bc.LaunchRequest) -> bc.LaunchHandle:
        self.launches.append(request)
        self.python = self.hanging_python if len(self.launches) == 1 else sys.executable
        return super().launch(request)


def test_launch_not_connected_in_time_is_terminated_and_replaced(
    make_controller: Make, tmp_path: Path
) -> None:
    hanging = tmp_path / "hanging-python"
    hanging.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\nexec sleep 60\n")
    hanging.chmod(0o755)
    launcher = FirstLaunchHangs(hanging)
    crew = make_controller(launcher, workers=1, seconds_launch=1.0)
    result = crew.push(tasks.square, 8).result(timeout=60)
    assert result.value == 64
    assert len(launcher.launches) == 2
    assert result.launch == launcher.launches[1].launch
    expired = [e for e in launcher.errors() if "not connected within seconds_launch=1" in e.message]
    assert len(expired) == 1
    # The launcher was asked where the worker was before it was terminated: its own words
    # ("running") are in the error, and the kill that followed is no launch failure of its own.
    assert "(running)" in expired[0].message
    assert expired[0].job == f"{launcher.launches[0].launch}"
    assert not any("ended before connecting" in e.message for e in launcher.errors())
    hung_pid = int((tmp_path / "pid").read_text())
    wait_until(lambda: not process_alive(hung_pid), seconds=10)


def test_worker_that_dies_before_connecting_is_reported(
    make_controller: Make, tmp_path: Path
) -> None:
    failing = tmp_path / "failing-python"
    failing.write_text("#!/bin/sh\nexit 5\n")
    failing.chmod(0o755)
    launcher = bc.LocalLauncher(python=failing)
    crew = make_controller(launcher, workers=1)
    task = crew.push(tasks.square, 2)
    wait_until(
        lambda: any("ended before connecting" in e.message for e in launcher.errors()), seconds=20
    )
    assert "exited with status 5" in launcher.errors()[0].message
    assert not task.done()  # it waits for a worker that can run it
    task.cancel()


def test_worker_needs_its_environment() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCREW_")}
    for command in (
        [sys.executable, "-m", "batchcrew.worker"],
        [sys.executable, "-m", "batchcrew", "worker"],
    ):
        finished = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=60
        )
        assert finished.returncode == 2
        assert (
            "BATCHCREW_HOST, BATCHCREW_PORT, BATCHCREW_TOKEN, BATCHCREW_LAUNCH" in finished.stderr
        )
