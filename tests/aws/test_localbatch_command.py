"""`batchcrew local-batch` as a real process: what it prints, that it serves, that it stops."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from batchcrew.cli import main
from tests.support.polling import wait_until
from tests.support.processes import children_of, group_members, wait_until_gone


def command_environment(directory: Path) -> dict[str, str]:
    """This environment without AWS settings, and with AWS files that do not exist."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    environment["AWS_CONFIG_FILE"] = str(directory / "no-aws-config")
    environment["AWS_SHARED_CREDENTIALS_FILE"] = str(directory / "no-aws-credentials")
    return environment


def start(directory: Path, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchcrew", "local-batch", "--workdir", str(directory), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=command_environment(directory),
    )


def read_until(process: subprocess.Popen[bytes], last: str, seconds: float = 60.0) -> list[str]:
    """Lines the command prints, up to the first that contains `last`."""
    assert process.stdout is not None
    printed = b""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while last.encode() not in printed or not printed.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {last!r} within {seconds} s; printed {printed!r}"
            if selector.select(remaining):
                chunk = os.read(process.stdout.fileno(), 4096)
                assert chunk, f"the command exited; printed {printed!r}"
                printed += chunk
    return printed.decode().splitlines()


def stop(process: subprocess.Popen[bytes], signal_number: int) -> str:
    """Send the signal; return stderr once the command has exited 0."""
    process.send_signal(signal_number)
    _, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors
    return errors.decode()


def test_it_prints_the_settings_runs_jobs_and_stops_on_sigterm(tmp_path: Path) -> None:
    command = start(tmp_path)
    pids: set[int] = set()
    try:
        lines = read_until(command, "Ctrl-C")
        variables = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in lines
            if line.strip().startswith("export ")
        )
        settings = dict(line.split(maxsplit=1) for line in lines[1:7])
        assert variables["AWS_ENDPOINT_URL"] == settings["endpoint"]
        assert settings["endpoint"].startswith("http://127.0.0.1:")
        assert variables["BATCHCREW_QUEUE"] == "batchcrew-local-queue"
        (backend,) = children_of(command.pid)
        pids.add(backend)

        batch = boto3.client(
            "batch",
            endpoint_url=variables["AWS_ENDPOINT_URL"],
            region_name=variables["AWS_DEFAULT_REGION"],
            aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
        )
        pid_file = tmp_path / "job.pid"
        code = (
            f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
            "time.sleep(120)"
        )
        batch.submit_job(
            jobName="dry-run",
            jobQueue=variables["BATCHCREW_QUEUE"],
            jobDefinition=variables["BATCHCREW_DEFINITION"],
            containerOverrides={"command": ["python", "-c", code]},
        )
        job_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30))
        pids |= group_members(job_pid) | {job_pid}
    finally:
        errors = stop(command, signal.SIGTERM)
    assert "Stopping" in errors
    wait_until_gone(pids)


def test_json_output_custom_names_and_ctrl_c(tmp_path: Path) -> None:
    command = start(tmp_path, "--json", "--job-queue", "dry-run-queue", "--region", "eu-west-1")
    try:
        (line,) = read_until(command, "{")
        settings = json.loads(line)
        assert (settings["job_queue"], settings["region"]) == ("dry-run-queue", "eu-west-1")
        assert settings["environment"]["BATCHCREW_ENDPOINT_URL"] == settings["endpoint_url"]
        batch = boto3.client(
            "batch",
            endpoint_url=settings["endpoint_url"],
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        queues = batch.describe_job_queues()["jobQueues"]
        assert [queue["jobQueueName"] for queue in queues] == ["dry-run-queue"]
        (backend,) = children_of(command.pid)
    finally:
        stop(command, signal.SIGINT)
    wait_until_gone({backend})


def test_without_moto_it_fails_with_a_one_line_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "moto", None)
    assert main(["local-batch"]) == 1
    errors = capsys.readouterr().err
    assert errors.count("\n") == 1
    assert "pip install 'batchcrew[local]'" in errors


def test_the_command_module_imports_nothing_heavy() -> None:
    probe = (
        "import sys, batchcrew.localbatch, batchcrew.localbatch.command; "
        "print(','.join(m for m in ('moto', 'docker', 'boto3', 'botocore', 'werkzeug') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
