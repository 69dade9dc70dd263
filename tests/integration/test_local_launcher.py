"""Launches that never connect, processes that die early, and the worker's own entry points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import batchcrew as bc
from tests.integration import tasks
from tests.support.polling import wait_until
from tests.support.processes import process_alive, wait_until_gone

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


def _worker_pid(crew: bc.Controller) -> int:
    return int(wait_until(lambda: list(crew.summary()["pid"]))[0])


@pytest.mark.parametrize("ending", ["tasks_max", "seconds_idle", "killed", "terminate"])
def test_task_children_die_with_their_worker(
    make_controller: Make, children_record: Path, ending: str
) -> None:
    limits = {"tasks_max": {"tasks_max": 1}, "seconds_idle": {"seconds_idle": 0.5}}
    crew = make_controller(workers=1, crashes_max=1, **limits.get(ending, {}))
    if ending in ("tasks_max", "seconds_idle"):  # the worker leaves when told to
        crew.push(tasks.start_children, str(children_record)).result(timeout=30)
    else:  # the task still runs; one that only SIGKILL can end when it comes to terminate()
        stubborn = ending == "terminate"
        function = (
            tasks.start_children_and_get_stuck if stubborn else tasks.start_children_and_sleep
        )
        task = crew.push(function, str(children_record))
        wait_until(children_record.exists)
    worker = _worker_pid(crew)
    if ending == "killed":
        os.kill(worker, signal.SIGKILL)
        assert task.result(timeout=30).status == "crash"
    elif ending == "terminate":
        crew.terminate()
    children = [int(pid) for pid in children_record.read_text().split()]
    wait_until_gone([worker, *children], seconds=5)


def test_a_worker_whose_child_holds_its_socket_is_dropped_when_it_dies(
    make_controller: Make, children_record: Path
) -> None:
    crew = make_controller(workers=1, crashes_max=1)
    task = crew.push(tasks.child_holds_the_connection_and_crash, str(children_record))
    # Its connection stays open: only the launcher's polls can tell that the worker is gone.
    result = task.result(timeout=30)
    assert result.status == "crash" and "killed by SIGKILL" in (result.error or "")
    wait_until_gone([int(children_record.read_text())])
    assert crew.push(tasks.square, 3).result(timeout=30).value == 9
