"""The AWS Batch launcher on the local Batch: real jobs whose workers run as local processes.

Workers that dial a loopback port where nobody listens give up within seconds (exit code 3);
workers that dial a port that listens but never answers keep waiting until terminated
(aws.launcher).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from batchcrew.aws.launcher import TERMINATE_REASON, BatchLaunch, BatchLauncher
from batchcrew.aws.options import WORKER_COMMAND, Options
from batchcrew.launchers.base import LaunchRequest, WorkerKey, WorkerStatus
from batchcrew.localbatch import LocalBatch
from tests.support.batch_jobs import clients, log_messages
from tests.support.job_states import seconds_per_job_state
from tests.support.polling import wait_until
from tests.support.processes import alive, memory_limit, wait_until_gone

SECONDS_JOBS = 60.0


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield reserved.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that takes connections and never says a word: workers wait on it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield silent.getsockname()[1]


@pytest.fixture
def launcher(local_batch: LocalBatch) -> Iterator[BatchLauncher]:
    options = Options(
        local_batch.job_definition, local_batch.job_queue, memory=[256, 512], memory_units="MiB"
    )
    made = BatchLauncher(options, aws=local_batch.aws_config(), processes=None)
    yield made
    made.close()


def request(
    port: int, count: int, seconds_timeout: float, level: int = 0, launch: str = "a1b2"
) -> LaunchRequest:
    environment = {
        "BATCHCREW_HOST": "127.0.0.1",
        "BATCHCREW_PORT": str(port),
        "BATCHCREW_TOKEN": "t" * 43,
        "BATCHCREW_LAUNCH": launch,
        "BATCHCREW_SECONDS_TIMEOUT": str(seconds_timeout),
    }
    return LaunchRequest(launch, count, level, environment, name="crew", controller="c0ffee")


def poll_until(
    launcher: BatchLauncher,
    launches: list[BatchLaunch],
    wanted: Callable[[WorkerStatus], bool],
) -> dict[WorkerKey, WorkerStatus]:
    """Poll the launches' workers until each has a status that is `wanted`."""
    workers = {launch: range(launch.count) for launch in launches}
    total = sum(launch.count for launch in launches)

    def all_wanted() -> dict[WorkerKey, WorkerStatus]:
        statuses = launcher.poll(workers)
        done = len(statuses) == total and all(wanted(each) for each in statuses.values())
        return statuses if done else {}

    found: dict[WorkerKey, WorkerStatus] = wait_until(all_wanted, SECONDS_JOBS, every=0.2)
    return found


def running_pids(local: LocalBatch, launch: BatchLaunch) -> dict[int, int]:
    """The pid of each worker of `launch`, once every one of them runs as a process."""
    ids = {launch.job_id(index): index for index in range(launch.count)}

    def all_running() -> dict[int, int]:
        pids = {ids[job]: pid for job, pid in local.job_pids().items() if job in ids}
        return pids if len(pids) == launch.count else {}

    found: dict[int, int] = wait_until(all_running, SECONDS_JOBS)
    return found


def test_workers_that_cannot_connect_end_and_their_launches_are_read_together(
    local_batch: LocalBatch, launcher: BatchLauncher, refused_port: int
) -> None:
    # A long timeout: where nothing listens, the controller is gone, and workers leave within
    # seconds all the same (an orphaned job costs little).
    array = launcher.launch(request(refused_port, count=3, seconds_timeout=600))
    single = launcher.launch(request(refused_port, count=1, seconds_timeout=600, launch="c3d4"))
    assert (array.count, single.count, single.job_id(0)) == (3, 1, single.external_id)
    statuses = poll_until(launcher, [array, single], lambda status: status.ended)
    assert set(statuses) == {("a1b2", 0), ("a1b2", 1), ("a1b2", 2), ("c3d4", 0)}
    # The worker gave up (exit code 3); moto gives no statusReason for it.
    assert set(statuses.values()) == {WorkerStatus("ended", None, 3, "other")}

    batch, logs = clients(local_batch)
    jobs = {job["jobId"]: job for job in batch.describe_jobs(jobs=[array.external_id])["jobs"]}
    parent = jobs[array.external_id]
    assert parent["jobName"] == array.job_name == "batchcrew-crew-a1b2"
    assert parent["arrayProperties"]["size"] == 3
    assert parent["tags"] == {"batchcrew:controller": "crew", "batchcrew:controller-id": "c0ffee"}
    child = batch.describe_jobs(jobs=[array.job_id(2)])["jobs"][0]
    assert child["container"]["command"] == list(WORKER_COMMAND)
    assert "batchcrew worker:" in " ".join(log_messages(logs, child))


def test_running_workers_have_their_levels_memory_and_are_ended_together(
    local_batch: LocalBatch, launcher: BatchLauncher, silent_port: int
) -> None:
    launch = launcher.launch(request(silent_port, count=3, seconds_timeout=120, level=1))
    statuses = poll_until(launcher, [launch], lambda status: status.phase == "running")
    assert set(statuses.values()) == {WorkerStatus("running")}
    pids = running_pids(local_batch, launch)
    limits = {index: wait_until(lambda pid=pid: memory_limit(pid)) for index, pid in pids.items()}
    assert set(limits.values()) == {512 * 2**20}  # level 1 of memory=[256, 512] MiB

    launcher.terminate(launch)
    ended = poll_until(launcher, [launch], lambda status: status.ended)
    assert set(ended.values()) == {WorkerStatus("ended", TERMINATE_REASON, 137, "other")}
    wait_until_gone(pids.values())
    batch, _ = clients(local_batch)
    children = [launch.job_id(index) for index in range(3)]
    described = batch.describe_jobs(jobs=[launch.external_id, *children])["jobs"]
    assert {job["jobId"]: job["status"] for job in described if job["jobId"] in children} == {
        child: "FAILED" for child in children
    }


def test_some_workers_of_a_launch_are_ended_and_the_others_run_on(
    local_batch: LocalBatch, launcher: BatchLauncher, silent_port: int
) -> None:
    launch = launcher.launch(request(silent_port, count=3, seconds_timeout=120))
    poll_until(launcher, [launch], lambda status: status.phase == "running")
    pids = running_pids(local_batch, launch)
    launcher.terminate(launch, [1])
    wait_until_gone([pids[1]])

    def child_1_ended() -> dict[WorkerKey, WorkerStatus]:
        statuses = launcher.poll({launch: [0, 1, 2]})
        return statuses if statuses[("a1b2", 1)].ended else {}

    statuses = wait_until(child_1_ended, SECONDS_JOBS)
    assert statuses[("a1b2", 1)] == WorkerStatus("ended", TERMINATE_REASON, 137, "other")
    assert statuses[("a1b2", 0)].phase == statuses[("a1b2", 2)].phase == "running"
    assert alive([pids[0], pids[2]]) == {pids[0], pids[2]}
    launcher.terminate(launch)
    wait_until_gone([pids[0], pids[2]])


def test_queued_workers_are_ended_before_they_start(
    local_batch: LocalBatch, launcher: BatchLauncher, silent_port: int
) -> None:
    # Jobs stay a second in each state before RUNNING: end them while they wait.
    seconds_per_job_state(local_batch, 1)
    launch = launcher.launch(request(silent_port, count=2, seconds_timeout=120))
    statuses = launcher.poll({launch: [0, 1]})
    assert {status.phase for status in statuses.values()} == {"queued"}
    launcher.terminate(launch)
    ended = poll_until(launcher, [launch], lambda status: status.ended)
    assert {status.reason for status in ended.values()} == {TERMINATE_REASON}
