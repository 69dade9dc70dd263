"""The local engine's memory limits for real: a memory cgroup per container where this machine
allows one (a kill reported as Docker reports it), else RLIMIT_AS (localbatch.memory)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from batchcrew.localbatch.engine import Engine
from batchcrew.localbatch.memory import AddressSpaceLimits, detect_memory_limits
from tests.support.engine import EngineProcess, wait_for_output
from tests.support.polling import wait_until
from tests.support.processes import (
    memory_cgroup,
    memory_cgroups_allowed,
    memory_limit,
    process_alive,
    wait_until_gone,
)

MEBIBYTE = 2**20
SLEEP = "import time; time.sleep(60)"
ESCAPE = (
    "import subprocess, sys, time; "
    f"child = subprocess.Popen([sys.executable, '-c', {SLEEP!r}], start_new_session=True); "
    "print('child', child.pid, flush=True); time.sleep(60)"
)


def touch(megabytes: int) -> str:
    """Python that writes every byte of `megabytes` MB, then says so."""
    return (
        f"data = b'x' * ({megabytes} * 2**20); "
        "print('touched', len(data) // 2**20, 'MB', flush=True)"
    )


needs_cgroups = pytest.mark.skipif(
    not memory_cgroups_allowed(), reason="this machine lets no memory cgroup be made"
)


@pytest.fixture(scope="module")
def engine_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    with EngineProcess(dict(os.environ), str(tmp_path_factory.mktemp("jobs"))) as engine:
        yield engine
        assert engine.alive(), engine.log()


@pytest.fixture
def client(engine_process: EngineProcess) -> Iterator[docker.DockerClient]:
    made = engine_process.client()
    yield made
    for container in made.containers.list(all=True):
        container.remove(force=True)
    made.close()


def run(client: docker.DockerClient, code: str, **options: Any) -> Any:
    return client.containers.run("python:any", [sys.executable, "-c", code], detach=True, **options)


def container_cgroup(pid: int, engine_pid: int) -> Path | None:
    """The memory cgroup of process `pid` once it is below the engine's.

    The shell in front of the command moves itself there first, so it may not be there yet.
    """
    cgroup = memory_cgroup(pid)
    engine_cgroup = f"batchcrew-engine-{engine_pid}"
    return cgroup if cgroup is not None and cgroup.parent.name == engine_cgroup else None


@needs_cgroups
def test_a_container_over_its_limit_is_killed_and_reported_as_docker_does(
    client: docker.DockerClient,
) -> None:
    container = run(client, touch(600), mem_limit="256m")
    assert container.wait(timeout=60)["StatusCode"] == 137
    container.reload()
    state = container.attrs["State"]
    assert (state["OOMKilled"], state["ExitCode"], state["Status"]) == (True, 137, "exited")
    assert container.attrs["HostConfig"]["Memory"] == 256 * MEBIBYTE
    assert "touched" not in container.logs().decode()


@needs_cgroups
def test_the_same_container_with_enough_memory_succeeds(client: docker.DockerClient) -> None:
    container = run(client, touch(600), mem_limit="1g")
    assert container.wait(timeout=60)["StatusCode"] == 0
    container.reload()
    assert container.attrs["State"]["OOMKilled"] is False
    assert container.logs().decode().strip() == "touched 600 MB"


@needs_cgroups
def test_each_run_has_its_own_cgroup_of_its_size_removed_at_exit(
    engine_process: EngineProcess, client: docker.DockerClient
) -> None:
    container = run(client, SLEEP, mem_limit="512m")
    container.reload()
    pid = container.attrs["State"]["Pid"]
    cgroup = wait_until(lambda: container_cgroup(pid, engine_process.pid))
    assert cgroup.name == container.id[:16]
    assert memory_limit(pid) == 512 * MEBIBYTE
    container.kill()
    assert container.wait(timeout=30)["StatusCode"] == 137
    container.reload()
    assert container.attrs["State"]["OOMKilled"] is False  # killed, but not for memory
    wait_until(lambda: not cgroup.exists())


@needs_cgroups
def test_a_process_that_left_the_group_still_dies_with_its_container(
    client: docker.DockerClient,
) -> None:
    container = run(client, ESCAPE, mem_limit="512m")
    child = int(wait_for_output(container, "child").split()[1])
    assert process_alive(child) and os.getpgid(child) == child  # outside the container's group
    container.kill()
    wait_until_gone([child])


@needs_cgroups
def test_the_engines_cgroups_are_removed_when_it_stops(tmp_path: Path) -> None:
    with EngineProcess(dict(os.environ), str(tmp_path)) as engine:
        client = engine.client()
        container = run(client, SLEEP, mem_limit="64m")
        container.reload()
        pid = container.attrs["State"]["Pid"]
        parent = wait_until(lambda: container_cgroup(pid, engine.pid)).parent
        assert parent.is_dir()
        client.close()
        assert engine.stop() == 0
    assert not parent.exists()


def test_limits_smaller_than_dockers_minimum_are_refused(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.APIError, match="Minimum memory limit allowed is 6MB"):
        run(client, "pass", mem_limit="1m")


def test_a_missing_program_with_a_limit_is_still_a_start_error(
    client: docker.DockerClient,
) -> None:
    with pytest.raises(docker.errors.APIError, match='exec: "no-such-program"'):
        client.containers.run("any", ["no-such-program"], detach=True, mem_limit="64m")
    (container,) = client.containers.list(all=True)
    assert container.attrs["State"]["ExitCode"] == 127


def test_without_cgroups_address_space_is_limited_instead(tmp_path: Path) -> None:
    with Engine(workdir=tmp_path, memory_limits=AddressSpaceLimits()) as engine:
        client = docker.DockerClient(base_url=engine.docker_host, timeout=30)
        try:
            refused = run(client, touch(600), mem_limit="256m")
            assert refused.wait(timeout=60)["StatusCode"] == 1
            assert "MemoryError" in refused.logs().decode()
            refused.reload()
            assert refused.attrs["State"]["OOMKilled"] is False
            enough = run(client, touch(600), mem_limit="1g")
            assert enough.wait(timeout=60)["StatusCode"] == 0
        finally:
            client.close()


def test_where_no_cgroup_can_be_made_the_log_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "mountinfo").write_text("")
    with caplog.at_level(logging.WARNING, logger="batchcrew.localbatch.memory"):
        limits = detect_memory_limits(str(tmp_path))
    assert limits.kind == "RLIMIT_AS"
    (warning,) = caplog.messages
    assert "no memory cgroup can be made here" in warning
    assert "cgroup v1: this process is in no memory cgroup" in warning
    assert "cgroup v2: no mounted cgroup v2 hierarchy" in warning
