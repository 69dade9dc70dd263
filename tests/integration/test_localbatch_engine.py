"""The local engine over real HTTP: docker-py's calls, Docker's shapes, groups, bad requests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from batchcrew.localbatch.environment import JOB_AWS_SETTINGS
from tests.support.engine import EngineProcess, parse_frames, wait_for_output
from tests.support.processes import group_members, wait_until_gone

SECRET = "must-not-reach-a-job"
SLEEP = "import time; time.sleep(60)"
SLEEP_WITH_CHILD = (
    "import subprocess, sys, time; "
    f"child = subprocess.Popen([sys.executable, '-c', {SLEEP!r}]); "
    "print(child.pid, flush=True); time.sleep(60)"
)
STATE_KEYS = {
    "Status",
    "Running",
    "Paused",
    "Restarting",
    "OOMKilled",
    "Dead",
    "Pid",
    "ExitCode",
    "Error",
    "StartedAt",
    "FinishedAt",
}


@pytest.fixture(scope="module")
def engine_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    environment = dict(os.environ, BATCHCREW_TEST_SECRET=SECRET, AWS_SECRET_ACCESS_KEY=SECRET)
    workdir = str(tmp_path_factory.mktemp("engine-jobs"))
    with EngineProcess(environment, workdir) as engine:
        yield engine
        assert engine.alive(), engine.log()
    assert engine.process is not None and engine.process.returncode == 0, engine.log()


@pytest.fixture
def engine(engine_process: EngineProcess) -> Iterator[EngineProcess]:
    """The module's engine; every container a test leaves is force-removed, its group checked."""
    yield engine_process
    assert engine_process.alive(), engine_process.log()
    client = engine_process.client()
    pids = set()
    for container in client.containers.list(all=True):
        pid = container.attrs["State"]["Pid"]
        if pid:
            pids |= group_members(pid) | {pid}
        container.remove(force=True)
    client.close()
    wait_until_gone(pids)


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[docker.DockerClient]:
    made = engine.client()
    yield made
    made.close()


def run(client: docker.DockerClient, code: str, **options: Any) -> Any:
    return client.containers.run("python:any", [sys.executable, "-c", code], detach=True, **options)


def test_ping_and_version_answer_as_docker_does(
    engine: EngineProcess, client: docker.DockerClient
) -> None:
    ping = engine.request("GET", "/_ping")
    assert (ping.status, ping.body, ping.headers["Api-Version"]) == (200, b"OK", "1.45")
    assert engine.request("HEAD", "/_ping").status == 200
    assert client.ping()
    assert client.version()["ApiVersion"] == "1.45"
    assert engine.request("GET", "/v1.24/version").json()["MinAPIVersion"] == "1.24"


def test_a_container_is_a_process_whose_exit_code_is_reported(
    engine: EngineProcess, client: docker.DockerClient
) -> None:
    container = run(client, "import sys; print('out'); sys.exit(3)", name="exits-3")
    waited = engine.request("POST", f"/containers/{container.id}/wait")
    assert waited.json() == {"StatusCode": 3, "Error": None}
    container.reload()
    state = container.attrs["State"]
    assert set(state) == STATE_KEYS
    assert (state["Status"], state["Running"], state["Pid"], state["ExitCode"]) == (
        "exited",
        False,
        0,
        3,
    )
    assert state["StartedAt"].endswith("Z") and state["FinishedAt"] >= state["StartedAt"]
    assert container.name == "exits-3"
    assert container.attrs["Config"]["Tty"] is False
    assert container.attrs["HostConfig"]["LogConfig"]["Type"] == "json-file"


def test_wait_answers_its_status_line_at_once_and_the_exit_code_at_exit(
    engine: EngineProcess, client: docker.DockerClient
) -> None:
    container = run(client, SLEEP)
    connection = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=30)
    try:
        connection.request("POST", f"/containers/{container.id}/wait?condition=not-running")
        answer = connection.getresponse()  # returns once the status line and headers are in
        assert answer.status == 200
        container.reload()
        assert container.status == "running"
        container.kill()
        assert json.loads(answer.read()) == {"StatusCode": 137, "Error": None}
    finally:
        connection.close()


def test_a_running_container_reports_its_pid(client: docker.DockerClient) -> None:
    container = run(client, SLEEP)
    container.reload()
    assert container.status == "running"
    pid = container.attrs["State"]["Pid"]
    assert pid in group_members(pid)
    assert os.getpgid(pid) == pid


def test_logs_are_multiplexed_frames_with_timestamps(
    engine: EngineProcess, client: docker.DockerClient
) -> None:
    code = "import sys; print('one'); print('two', file=sys.stderr, flush=True); print('three')"
    container = run(client, code)
    assert container.wait()["StatusCode"] == 0
    path = f"/containers/{container.id}/logs?stdout=1&stderr=1&timestamps=1"
    answer = engine.request("GET", path)
    assert answer.status == 200
    frames = parse_frames(answer.body)
    streams = {payload.split(b" ", 1)[1]: stream for stream, payload in frames}
    assert streams == {b"one\n": 1, b"two\n": 2, b"three\n": 1}
    for _, payload in frames:
        stamp = payload.split(b" ", 1)[0].decode()
        assert len(stamp) == len("2026-01-01T00:00:00.000000000Z") and stamp.endswith("Z")
    only_stderr = parse_frames(engine.request("GET", path.replace("stdout=1", "stdout=0")).body)
    assert [stream for stream, _ in only_stderr] == [2]
    assert container.logs(stdout=True, stderr=False) == b"one\nthree\n"
    assert container.logs(stdout=True, stderr=False, tail=1) == b"three\n"
    assert container.logs(since=2**31) == b""


def test_followed_logs_stream_until_the_container_exits(client: docker.DockerClient) -> None:
    code = "import time\nfor n in range(3):\n    print(n, flush=True)\n    time.sleep(0.1)"
    container = run(client, code)
    streamed = b"".join(container.logs(stream=True, follow=True))
    assert streamed == b"0\n1\n2\n"


def test_run_without_detach_returns_the_output(client: docker.DockerClient) -> None:
    output = client.containers.run("python:any", [sys.executable, "-c", "print('hi')"])
    assert output == b"hi\n"


@pytest.mark.parametrize(("signal_name", "exit_code"), [(None, 137), ("SIGTERM", 143), ("2", 130)])
def test_kill_signals_the_whole_group_and_reports_128_plus_signal(
    client: docker.DockerClient, signal_name: str | None, exit_code: int
) -> None:
    container = run(client, SLEEP_WITH_CHILD)
    child = int(wait_for_output(container, "\n"))
    container.reload()
    pid = container.attrs["State"]["Pid"]
    assert group_members(pid) == {pid, child}
    if signal_name is None:
        container.kill()
    else:
        container.kill(signal=signal_name)
    assert container.wait()["StatusCode"] == exit_code
    wait_until_gone({pid, child})


def test_when_the_main_process_ends_the_rest_of_its_group_is_killed(
    client: docker.DockerClient,
) -> None:
    code = (
        "import subprocess, sys; "
        f"child = subprocess.Popen([sys.executable, '-c', {SLEEP!r}]); print(child.pid)"
    )
    container = run(client, code)
    assert container.wait()["StatusCode"] == 0
    wait_until_gone({int(container.logs())}, seconds=5)


def test_stop_sends_sigterm_then_sigkill_after_the_grace_period(
    client: docker.DockerClient,
) -> None:
    polite = run(client, SLEEP)
    polite.stop(timeout=5)
    assert polite.wait()["StatusCode"] == 143
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    stubborn = run(client, code)
    wait_for_output(stubborn, "ready")
    stubborn.stop(timeout=1)
    assert stubborn.wait()["StatusCode"] == 137


def test_jobs_get_only_path_home_lang_and_python_variables_from_the_host(
    client: docker.DockerClient,
) -> None:
    code = "import json, os, sys; print(json.dumps(dict(os.environ)))"
    environment = {
        "BATCHCREW_URL": "http://host.docker.internal:5000/x",
        "AWS_BATCH_JOB_ID": "5e1f3c:4",
    }
    container = run(client, code, environment=environment)
    assert container.wait()["StatusCode"] == 0
    seen = json.loads(container.logs())
    allowed = {"PATH", "HOME", "LANG", "VIRTUAL_ENV", *environment, "AWS_BATCH_JOB_ARRAY_INDEX"}
    allowed |= set(JOB_AWS_SETTINGS)
    assert {name for name in seen if not name.startswith("PYTHON")} <= allowed
    assert SECRET not in seen.values()
    assert seen["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert seen["BATCHCREW_URL"] == "http://127.0.0.1:5000/x"
    assert seen["AWS_BATCH_JOB_ARRAY_INDEX"] == "4"


def test_plain_python_is_the_engines_interpreter_and_jobs_run_in_its_workdir(
    engine: EngineProcess, client: docker.DockerClient
) -> None:
    code = "import os, sys, batchcrew; print(sys.prefix); print(os.getcwd())"
    container = client.containers.run("python:any", ["python", "-c", code], detach=True)
    assert container.wait()["StatusCode"] == 0
    prefix, cwd = container.logs().decode().split()
    assert prefix == sys.prefix
    assert cwd == engine.workdir


def test_images_exist_and_pull_succeeds(client: docker.DockerClient) -> None:
    image = client.images.pull("python", tag="3.11")
    assert image.tags == ["python:3.11"]
    assert client.images.get("docker.io/library/alpine:latest").id.startswith("sha256:")


def test_listing_shows_running_containers_or_all(client: docker.DockerClient) -> None:
    running = run(client, SLEEP, name="listed-running")
    finished = run(client, "pass", name="listed-finished")
    finished.wait()
    assert [c.name for c in client.containers.list()] == ["listed-running"]
    assert {c.name for c in client.containers.list(all=True)} == {
        "listed-running",
        "listed-finished",
    }
    running.kill()


def test_a_missing_executable_is_a_docker_style_start_error(
    engine: EngineProcess, client: docker.DockerClient
) -> None:
    with pytest.raises(docker.errors.APIError) as raised:
        client.containers.run("any", ["no-such-program-here"], detach=True, name="missing")
    assert raised.value.status_code == 400
    assert "no-such-program-here" in str(raised.value.explanation)
    state = engine.request("GET", "/containers/missing/json").json()["State"]
    assert (state["Status"], state["ExitCode"]) == ("created", 127)


VALID = b'{"Image": "any", "Cmd": ["true"]}'
JSON_TYPE = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [
        ("GET", "/containers/nope/json", None, {}, 404, "No such container: nope"),
        ("POST", "/v1.45/containers/nope/start", None, {}, 404, "No such container: nope"),
        ("GET", "/containers/nope/logs?stdout=1", None, {}, 404, "No such container: nope"),
        ("POST", "/containers/nope/wait", None, {}, 404, "No such container: nope"),
        ("POST", "/containers/nope/kill", None, {}, 404, "No such container: nope"),
        ("POST", "/containers/nope/stop", None, {}, 404, "No such container: nope"),
        ("DELETE", "/containers/nope", None, {}, 404, "No such container: nope"),
        ("POST", "/containers/create", b"{not json", JSON_TYPE, 400, "invalid JSON"),
        ("POST", "/containers/create", b"\xff\xfe", JSON_TYPE, 400, "invalid JSON"),
        ("POST", "/containers/create", b"[1, 2]", JSON_TYPE, 400, "expected an object"),
        ("POST", "/containers/create", b"", JSON_TYPE, 400, "config cannot be empty"),
        ("POST", "/containers/create", b'{"Image": "x"}', JSON_TYPE, 400, "No command"),
        ("POST", "/containers/create", b'{"Cmd": ["x"], "Env": [1]}', JSON_TYPE, 400, "Env"),
        ("POST", "/containers/create", b'{"Cmd": 7}', JSON_TYPE, 400, "Cmd"),
        ("POST", "/containers/create", VALID, {"Content-Type": "text/plain"}, 400, "Content-Type"),
        ("POST", "/containers/create?name=a%20b", VALID, JSON_TYPE, 400, "Invalid container name"),
        ("POST", "/images/create", None, {}, 400, "fromImage"),
        ("GET", "/no/such/route", None, {}, 404, "page not found"),
        ("GET", "/v1.99/version", None, {}, 400, "too new"),
        ("GET", "/v1.12/version", None, {}, 400, "too old"),
        ("PATCH", "/containers/json", None, {}, 501, "Unsupported method"),
        ("POST", "/containers/create", None, {"Content-Length": "x"}, 400, "Content-Length"),
        ("POST", "/containers/create", None, {"Content-Length": "99999999"}, 400, "Content"),
    ],
)
def test_bad_requests_get_docker_style_errors(
    engine: EngineProcess,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    answer = engine.request(method, path, body, headers)
    assert answer.status == status
    assert answer.headers["Content-Type"] == "application/json"
    assert message in answer.json()["message"]
    assert engine.request("GET", "/_ping").status == 200


def test_requests_that_do_not_fit_the_container_state_get_docker_answers(
    engine: EngineProcess, client: docker.DockerClient
) -> None:
    running = run(client, SLEEP, name="stateful")
    base = f"/containers/{running.id}"
    assert engine.post_json("/containers/create?name=stateful", {"Cmd": ["true"]}).status == 409
    assert engine.request("POST", f"{base}/start").status == 304
    assert engine.request("POST", f"{base}/kill?signal=SIGNOPE").json() == {
        "message": "Invalid signal: SIGNOPE"
    }
    assert engine.request("GET", f"{base}/logs").status == 400
    assert engine.request("GET", f"{base}/logs?stdout=1&tail=x").status == 400
    assert engine.request("GET", f"{base}/logs?stdout=1&since=yesterday").status == 400
    assert engine.request("POST", f"{base}/wait?condition=soon").status == 400
    refused = engine.request("DELETE", base)
    assert refused.status == 409 and "container is running" in refused.json()["message"]
    short = running.id[:12]
    assert engine.request("POST", f"/containers/{short}/kill").status == 204
    assert running.wait()["StatusCode"] == 137
    not_running = engine.request("POST", f"{base}/kill")
    assert not_running.status == 409 and "is not running" in not_running.json()["message"]
    assert engine.request("POST", f"{base}/stop").status == 304
    assert engine.request("DELETE", "/containers/stateful").status == 204
    assert engine.request("GET", f"{base}/json").status == 404


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"GET /_ping BOGUS/1.1\r\n\r\n", None),  # no status line: read as HTTP/0.9
        (b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", b"501"),
        (b"\x00\x01 garbage\r\n\r\n", None),
        (b"POST /containers/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    ],
)
def test_garbage_on_the_socket_gets_an_error_and_the_server_lives_on(
    engine: EngineProcess, garbage: bytes, status: bytes | None
) -> None:
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as connection:
        connection.sendall(garbage)
        answer = b""
        while chunk := connection.recv(4096):  # the engine closes the connection after it
            answer += chunk
    assert b'"message"' in answer
    if status is not None:
        assert answer.split(b"\r\n", 1)[0].split()[1] == status
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10):
        pass  # a client that connects and leaves at once
    assert engine.request("GET", "/_ping").status == 200


def test_the_engine_listens_on_loopback_only(engine: EngineProcess) -> None:
    listening = []
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, _, state = line.split()[1:4]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) == engine.port:
                listening.append(address)
    assert listening == ["0100007F"]
    if os.path.exists("/proc/net/tcp6"):
        with open("/proc/net/tcp6") as table:
            ports = [int(line.split()[1].split(":")[1], 16) for line in table.readlines()[1:]]
        assert engine.port not in ports


def test_sigterm_to_the_engine_kills_every_container_group(tmp_path: Any) -> None:
    with EngineProcess(workdir=str(tmp_path)) as engine:
        client = engine.client()
        container = run(client, SLEEP_WITH_CHILD)
        child = int(wait_for_output(container, "\n"))
        container.reload()
        pid = container.attrs["State"]["Pid"]
        client.close()
        assert engine.stop() == 0
    wait_until_gone({pid, child}, seconds=5)


def test_many_containers_at_once(client: docker.DockerClient) -> None:
    containers = [run(client, f"print({n})") for n in range(8)]
    assert [c.wait()["StatusCode"] for c in containers] == [0] * 8
    assert [int(c.logs()) for c in containers] == list(range(8))
    for container in containers:
        container.remove()
    assert client.containers.list(all=True) == []


def test_sigint_to_the_engine_stops_it_too(tmp_path: Any) -> None:
    with EngineProcess(workdir=str(tmp_path)) as engine:
        assert engine.process is not None
        engine.process.send_signal(signal.SIGINT)
        assert engine.process.wait(15) == 0
