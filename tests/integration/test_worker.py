"""The worker process: how it leaves when refused or orphaned, what its task children hold, and
tasks that attack the worker itself (real processes over real TLS on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import batchcrew as bc
from tests.integration import tasks
from tests.support.certificates import ca_signed_chain
from tests.support.polling import wait_until
from tests.support.processes import alive, kill_leftovers, wait_until_gone, wait_with_cpu

Make = Callable[..., bc.Controller]


def _run_worker(crew: bc.Controller, fingerprint: str) -> tuple[int, float, str]:
    """Run `python -m batchcrew.worker` with a token no launch gave; return its exit code, the
    CPU seconds it used and what it wrote to stderr."""
    environment = {
        **os.environ,
        "BATCHCREW_HOST": "127.0.0.1",
        "BATCHCREW_PORT": str(crew.port),
        "BATCHCREW_TOKEN": "not-a-token",
        "BATCHCREW_LAUNCH": "not-a-launch",
        "BATCHCREW_FINGERPRINT": fingerprint,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "batchcrew.worker"], env=environment, stderr=subprocess.PIPE
    )
    try:
        code, cpu = wait_with_cpu(worker, seconds=15)
        assert worker.stderr is not None
        return code, cpu, worker.stderr.read().decode()
    finally:
        if worker.returncode is None:
            worker.kill()
            worker.wait()
        if worker.stderr is not None:
            worker.stderr.close()


def test_a_refused_worker_exits_at_once_without_spinning(make_controller: Make) -> None:
    tls = bc.TLS.automatic()
    crew = make_controller(workers=1, tls=tls)
    crew.start()
    # The controller answers REFUSE and closes: frame and TLS close_notify arrive together.
    code, cpu, stderr = _run_worker(crew, tls.fingerprint())
    assert code == 3
    assert "refused by the controller: authentication failed" in stderr
    assert cpu < 2.0  # the interpreter's start and the handshake, no busy loop
    wait_until(lambda: crew.connections_refused.refused == 1)


def test_a_worker_without_fingerprint_warns_and_a_tls_controller_refuses_it(
    make_controller: Make,
) -> None:
    crew = make_controller(workers=1)
    crew.start()
    code, _, stderr = _run_worker(crew, fingerprint="")
    assert code == 3
    assert "no BATCHCREW_FINGERPRINT: connecting WITHOUT TLS" in stderr
    wait_until(lambda: crew.connections_refused.handshake_failures == 1)


def test_a_worker_pins_the_controllers_certificate_from_a_ca_signed_chain(
    make_controller: Make, tmp_path: Path
) -> None:
    chain, key, _ = ca_signed_chain(tmp_path)
    crew = make_controller(workers=1, tls=bc.TLS.custom(chain, key))
    assert crew.push(tasks.square, 3).result(timeout=30).value == 9


def _sockets_of(pid: int) -> set[str]:
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            held.add(target)
    return held


def test_a_forked_task_child_lets_go_of_the_connection(
    make_controller: Make, children_record: Path
) -> None:
    crew = make_controller(workers=1)
    result = crew.push(tasks.start_children, str(children_record)).result(timeout=30)
    spawned, forked = result.value
    worker = int(crew.summary()["pid"][0])
    assert _sockets_of(worker)  # the worker holds its connection...
    assert not _sockets_of(worker) & _sockets_of(forked)  # ...and its forked child does not
    assert not _sockets_of(spawned)  # nor a child started by exec (close-on-exec)


def test_a_crash_is_noticed_when_the_task_forked(
    make_controller: Make, children_record: Path
) -> None:
    crew = make_controller(workers=1, crashes_max=1)
    started = time.monotonic()
    result = crew.push(tasks.start_children_and_crash, str(children_record)).result(timeout=30)
    assert result.status == "crash" and "killed by SIGKILL" in (result.error or "")
    assert time.monotonic() - started < 10
    wait_until_gone(int(pid) for pid in children_record.read_text().split())
    assert crew.push(tasks.square, 3).result(timeout=30).value == 9


def test_a_result_over_the_limit_is_an_error_that_says_what_to_do(make_controller: Make) -> None:
    crew = make_controller(workers=1, tasks_max=1)  # the lowered limit leaves with its worker
    result = crew.push(tasks.result_over_the_limit, 1_000).result(timeout=30)
    assert result.status == "error" and result.attempts == 1
    assert result.error is not None
    assert "over the 1,000-byte limit; write it to storage and return a path" in result.error
    assert crew.push(tasks.square, 3).result(timeout=30).value == 9


def test_a_task_writing_100_mb_to_stdout_resolves(make_controller: Make, tmp_path: Path) -> None:
    crew = make_controller(bc.LocalLauncher(log_directory=tmp_path), workers=1)
    result = crew.push(tasks.print_megabytes, 100).result(timeout=60)
    assert result.value == 100
    (log,) = tmp_path.glob("*.log")
    assert log.stat().st_size >= 100 * 1024 * 1024
    assert crew.push(tasks.square, 3).result(timeout=30).value == 9


def test_a_task_closing_every_fd_resolves_once_as_a_crash(make_controller: Make) -> None:
    crew = make_controller(workers=1, crashes_max=2)
    result = crew.push(tasks.close_every_fd, name="blind").result(timeout=60)
    assert result.status == "crash" and result.attempts == 2
    assert crew.push(tasks.square, 3).result(timeout=30).value == 9
    assert [popped.name for popped in crew.collect()].count("blind") == 1


CONTROLLER = """
import json, sys, time
from pathlib import Path
import batchcrew as bc
from tests.integration import tasks
from tests.support.certificates import ca_signed_chain

busy, folder = sys.argv[1] == "busy", Path(sys.argv[2])
crew = bc.Controller(workers=2, seconds_idle=300)
records = [str(folder / f"pids-{index}") for index in range(2)]
if busy:
    crew.walk(tasks.start_children_and_sleep, records)
    while not all(Path(record).exists() for record in records):
        time.sleep(0.02)
else:
    crew.map(tasks.start_children, records)
children = [int(pid) for record in records for pid in Path(record).read_text().split()]
print(json.dumps({"workers": [int(pid) for pid in crew.summary()["pid"]], "children": children}))
sys.stdout.flush()
time.sleep(600)
"""


@pytest.mark.parametrize("state", ["busy", "idle"])
def test_a_killed_controller_leaves_no_worker_and_no_task_child(state: str, tmp_path: Path) -> None:
    controller = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CONTROLLER), state, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    everyone: list[int] = []
    try:
        assert controller.stdout is not None
        wait_until(lambda: select.select([controller.stdout], [], [], 0)[0], seconds=60)
        pids = json.loads(controller.stdout.readline())
        everyone = pids["workers"] + pids["children"]
        assert len(pids["children"]) == 4 and alive(everyone) == set(everyone)
        controller.send_signal(signal.SIGKILL)
        controller.wait(timeout=10)
        # Its sockets close with it: workers leave at once, mid-task or idle, with their groups.
        wait_until_gone(everyone, seconds=5)
    finally:
        controller.kill()
        kill_leftovers(everyone)
        controller.wait()
        if controller.stdout is not None:
            controller.stdout.close()
