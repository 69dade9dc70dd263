"""The AWS subcommands through the real entry point, `python -m batchcrew`, against a LocalBatch.

Each command runs as a subprocess with the variables `batchcrew local-batch` prints (its
endpoint, region, queue, definition and fake keys) and no AWS config files, exactly as a user's
shell would run it. The jobs it submits really run as local processes.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from typing import IO, Any

from batchcrew.aws.monitor import Monitor
from batchcrew.localbatch import LocalBatch
from tests.support.batch_jobs import clients
from tests.support.job_states import (
    job_states_at_full_speed,
    seconds_per_job_state,
    sleeping_command,
    wait_until_running,
)
from tests.support.polling import wait_until
from tests.support.processes import group_members, wait_until_gone


def batchcrew(
    local_batch: LocalBatch, *arguments: str, stderr: IO[bytes] | None = None, **environment: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m batchcrew ARGUMENTS`; keyword arguments set (or, if empty, drop) variables.

    Standard output is a pipe, as in a script; so is standard error unless `stderr` is given.
    """
    variables = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "BATCHCREW_"))
    }
    variables.update(local_batch.environment_variables())
    variables.update(
        {
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    for name, value in environment.items():
        if value:
            variables[name] = value
        else:
            variables.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "batchcrew", *arguments],
        env=variables,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=True,
        timeout=60,
        check=False,
    )


def batchcrew_with_terminal_stderr(local_batch: LocalBatch, *arguments: str) -> str:
    """Run `python -m batchcrew ARGUMENTS` with standard error on a pseudo-terminal; return it."""
    controller, terminal = pty.openpty()
    try:
        with open(terminal, "wb", closefd=False) as stderr:
            result = batchcrew(local_batch, *arguments, stderr=stderr)
        assert result.returncode == 0
        os.close(terminal)
        terminal = -1
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed and everything was read
                break
            if not chunk:
                break
            output += chunk
        return output.decode(errors="replace")
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_failure(result: subprocess.CompletedProcess[str], command: str) -> str:
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"batchcrew {command}: ")
    return lines[0]


def monitor_for(local_batch: LocalBatch) -> Monitor:
    """A monitor of the LocalBatch's own job definition, which the commands use by default."""
    return Monitor(local_batch.job_definition, local_batch.job_queue, aws=local_batch.aws_config())


def statuses_of(monitor: Monitor, ids: list[str]) -> set[str]:
    return {str(status) for status in monitor.status(ids)["status"]}


def test_definitions_register_describe_and_deregister(local_batch: LocalBatch) -> None:
    register_first = (
        "definitions register --definition defn --image python:3.11-slim --cpus 2 --memory 4 "
        "--memory-units GiB --tag team=models --env STAGE=test --json"
    )
    first = json_of(batchcrew(local_batch, *register_first.split()))
    assert [(row["name"], row["revision"]) for row in first] == [("defn", 1)]

    register_second = "definitions register --image alpine --cpus 1 --memory 512 --memory-units MiB"
    human = batchcrew(local_batch, *register_second.split(), BATCHCREW_DEFINITION="defn")
    assert human.returncode == 0, human.stderr
    assert "Registered" in human.stdout
    assert "defn" in human.stdout

    described = json_of(
        batchcrew(local_batch, "definitions", "describe", "--definition", "defn", "--json")
    )
    assert [row["revision"] for row in described] == [2, 1]
    oldest = described[1]["container_properties"]
    assert {"type": "MEMORY", "value": "4096"} in oldest["resourceRequirements"]
    assert oldest["environment"] == [{"name": "STAGE", "value": "test"}]
    assert described[1]["tags"] == {"team": "models"}

    table = batchcrew(local_batch, "definitions", "describe", "--definition", "defn", "--active")
    assert table.returncode == 0, table.stderr
    assert "python:3.11-slim" in table.stdout
    assert "4096 MiB" in table.stdout

    dropped = json_of(
        batchcrew(local_batch, "definitions", "deregister", "--definition", "defn", "--json")
    )
    assert [(row["revision"], row["status"]) for row in dropped] == [(2, "inactive")]

    failure = one_line_failure(
        batchcrew(
            local_batch, "definitions", "deregister", "--definition", "defn", "--revision", "9"
        ),
        "definitions",
    )
    assert failure.endswith(
        "DeregisterJobDefinition in us-east-1 on job definition defn:9 failed: no such revision"
    )


def test_submit_list_status_and_terminate(local_batch: LocalBatch) -> None:
    batch, _ = clients(local_batch)
    submit = "submit --name first --cpus 1 --memory 1 --memory-units GiB --env A=1 --json"
    command = sleeping_command()
    submitted = json_of(batchcrew(local_batch, *submit.split(), "--", *command))
    first = submitted[0]["id"]
    assert submitted[0]["name"] == "first"
    pid = wait_until_running(batch, local_batch, first)
    members = group_members(pid) | {pid}

    seconds_per_job_state(local_batch, 60.0)  # jobs submitted from now on wait in SUBMITTED
    monitor = monitor_for(local_batch)
    second = monitor.submit(sleeping_command(), name="second")["id"].iloc[0]
    details = monitor.status(first)["details"].iloc[0]
    assert details["container"]["command"] == command
    assert {"name": "A", "value": "1"} in details["container"]["environment"]

    listed = {row["id"]: row for row in json_of(batchcrew(local_batch, "jobs", "--json"))}
    assert {job_id: row["status"] for job_id, row in listed.items()} == {
        first: "running",
        second: "submitted",
    }
    assert all(row["created"].endswith("+00:00") for row in listed.values())
    assert listed[first]["started"].endswith("+00:00")

    table = batchcrew(local_batch, "jobs", "--status", "active")
    assert table.returncode == 0, table.stderr
    assert "first" in table.stdout and "second" in table.stdout

    ended = batchcrew(local_batch, "terminate", first, second)
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.startswith("asked AWS Batch to end 2 job(s)")
    assert ended.stderr == ""  # no progress bar: standard error is not a terminal
    job_states_at_full_speed(local_batch)
    wait_until(lambda: statuses_of(monitor, [first, second]) == {"failed"}, seconds=20)
    wait_until_gone(members)  # the running job's processes were killed

    status = json_of(batchcrew(local_batch, "status", first, "--json"))
    assert status[0]["status"] == "failed"
    assert status[0]["reason"] == "cancelled/terminated by the batchcrew monitor"
    assert status[0]["details"]["jobId"] == first

    failed = json_of(batchcrew(local_batch, "jobs", "--status", "failed", "--json"))
    assert {row["id"] for row in failed} == {first, second}

    unknown = one_line_failure(batchcrew(local_batch, "status", "no-such-job"), "status")
    assert "DescribeJobs in us-east-1 on job no-such-job failed: no such job" in unknown


def test_terminate_all_reports_as_json(local_batch: LocalBatch) -> None:
    seconds_per_job_state(local_batch, 60.0)  # the jobs wait in SUBMITTED
    monitor = monitor_for(local_batch)
    ids = {monitor.submit(sleeping_command(), name=f"job-{n}")["id"].iloc[0] for n in range(3)}
    end_all = ["terminate", "--all", "--reason", "cleanup", "--json"]
    result = json_of(batchcrew(local_batch, *end_all))
    assert set(result["terminated"]) == ids
    job_states_at_full_speed(local_batch)
    wait_until(lambda: statuses_of(monitor, sorted(ids)) == {"failed"}, seconds=20)
    assert set(monitor.status(sorted(ids))["reason"]) == {"cleanup"}


def test_logs_print_messages_or_say_why_there_are_none(local_batch: LocalBatch) -> None:
    monitor = monitor_for(local_batch)
    # The container cannot start, so the job fails without ever writing a log.
    never_ran = monitor.submit(["batchcrew-test-no-such-program"], name="never-ran")["id"].iloc[0]
    wait_until(lambda: statuses_of(monitor, [never_ran]) == {"failed"}, seconds=15)
    quiet = batchcrew(local_batch, "logs", never_ran)
    assert quiet.returncode == 0
    assert quiet.stdout == ""
    assert quiet.stderr.strip() == (
        f"batchcrew: job {never_ran} is failed and has no log stream, so there is no log to "
        "read: AWS gives no reason"
    )

    code = "import os; print(os.environ['GREETING']); print('world')"
    submit = ["submit", "--name", "logged", "--env", "GREETING=hello", "--json"]
    logged = json_of(batchcrew(local_batch, *submit, "--", "python", "-c", code))[0]["id"]
    wait_until(lambda: statuses_of(monitor, [logged]) == {"succeeded"}, seconds=30)
    text = batchcrew(local_batch, "logs", logged, "--follow", "--interval", "0")
    assert text.returncode == 0, text.stderr
    assert text.stdout == "hello\nworld\n"
    lines = batchcrew(local_batch, "logs", logged, "--json").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["message"] for record in records] == ["hello", "world"]
    assert records[0]["timestamp"].endswith("+00:00")


def test_bad_settings_and_arguments_fail_with_one_clear_line(local_batch: LocalBatch) -> None:
    no_region = one_line_failure(
        batchcrew(
            local_batch,
            *("jobs", "--definition", "defn"),
            BATCHCREW_REGION="",
            AWS_DEFAULT_REGION="",
        ),
        "jobs",
    )
    assert "no AWS region found" in no_region
    assert "AWS_REGION" in no_region

    no_definition = one_line_failure(
        batchcrew(local_batch, "jobs", BATCHCREW_DEFINITION=""), "jobs"
    )
    assert "pass --definition NAME or set BATCHCREW_DEFINITION" in no_definition

    bad_memory = one_line_failure(
        batchcrew(local_batch, "submit", "--definition", "defn", "--memory", "0", "--", "true"),
        "submit",
    )
    assert "memory must be a positive finite number, not 0" in bad_memory

    unknown_definition = one_line_failure(
        batchcrew(local_batch, "submit", "--definition", "nope", "--", "true"), "submit"
    )
    assert (
        f"SubmitJob in us-east-1 on job definition nope on job queue {local_batch.job_queue}"
        in unknown_definition
    )

    fargate_register = (
        "definitions register --definition defn --image alpine --platform fargate --cpus 1 "
        "--memory 2 --memory-units GiB"
    )
    fargate = one_line_failure(batchcrew(local_batch, *fargate_register.split()), "definitions")
    assert "--execution-role-arn: Fargate needs an execution role" in fargate

    lambda_register = "definitions register --definition defn --image alpine --platform lambda"
    platform = batchcrew(local_batch, *lambda_register.split())
    assert platform.returncode == 2
    assert "invalid choice: 'LAMBDA'" in platform.stderr

    both = one_line_failure(batchcrew(local_batch, "terminate", "some-id", "--all"), "terminate")
    assert "give job ids or --all, not both" in both


def test_errors_name_the_options_the_user_typed(local_batch: LocalBatch) -> None:
    short = one_line_failure(
        batchcrew(local_batch, "submit", "--timeout", "30", "--", "true"), "submit"
    )
    assert short.endswith("--timeout must be at least 60, not 30")

    spaced = one_line_failure(
        batchcrew(local_batch, "jobs", "--definition", "my definition"), "jobs"
    )
    assert "--definition must be a name of 1 to 128 letters" in spaced
    assert "not 'my definition'" in spaced

    fargate = one_line_failure(
        batchcrew(
            local_batch,
            *("definitions", "register", "--image", "a", "--platform", "fargate", "--cpus", "3"),
        ),
        "definitions",
    )
    assert "--cpus=3 is not a Fargate size" in fargate

    # With no endpoint set, the region must be one of AWS Batch's.
    mistyped = one_line_failure(
        batchcrew(
            local_batch,
            *("jobs", "--region", "us-eats-1"),
            BATCHCREW_ENDPOINT_URL="",
            AWS_ENDPOINT_URL="",
        ),
        "jobs",
    )
    assert "--region must be a region of AWS Batch, not 'us-eats-1'; did you mean 'us-east-1'" in (
        mistyped
    )


def test_terminate_reports_unknown_ids_and_fails_when_it_ends_nothing(
    local_batch: LocalBatch,
) -> None:
    unknown = batchcrew(local_batch, "terminate", "no-such-job")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr == "no such job in us-east-1: no-such-job\n"

    seconds_per_job_state(local_batch, 60.0)  # the job waits in SUBMITTED
    waiting = monitor_for(local_batch).submit(sleeping_command())["id"].iloc[0]
    mixed = batchcrew(local_batch, "terminate", waiting, "no-such-job", "--json")
    assert json_of(mixed) == {"terminated": [waiting], "finished": [], "unknown": ["no-such-job"]}
    job_states_at_full_speed(local_batch)
    monitor = monitor_for(local_batch)
    wait_until(lambda: statuses_of(monitor, [waiting]) == {"failed"}, seconds=20)

    again = batchcrew(local_batch, "terminate", waiting)
    assert again.returncode == 0
    assert again.stdout == ""
    assert again.stderr == f"already finished, nothing to end: {waiting}\n"


def test_the_progress_bar_is_drawn_on_a_terminal_only(local_batch: LocalBatch) -> None:
    seconds_per_job_state(local_batch, 60.0)  # the jobs wait in SUBMITTED
    monitor = monitor_for(local_batch)
    ids = [monitor.submit(sleeping_command())["id"].iloc[0] for _ in range(4)]
    on_terminal = batchcrew_with_terminal_stderr(local_batch, "terminate", *ids[:2])
    assert "Ending jobs" in on_terminal
    as_json = batchcrew_with_terminal_stderr(local_batch, "terminate", *ids[2:], "--json")
    assert "Ending jobs" not in as_json


def test_piped_tables_keep_every_id_and_status_on_one_line(local_batch: LocalBatch) -> None:
    monitor = monitor_for(local_batch)
    name = "a-job-name-that-is-long-enough-to-need-wrapping-on-any-narrow-terminal"
    job_id = monitor.submit(["python", "-c", "pass"], name=name)["id"].iloc[0]
    wait_until(lambda: statuses_of(monitor, [job_id]) == {"succeeded"}, seconds=30)
    for command in (["jobs"], ["status", job_id]):
        table = batchcrew(local_batch, *command, COLUMNS="40")
        assert table.returncode == 0, table.stderr
        (line,) = [line for line in table.stdout.splitlines() if job_id in line]
        assert "succeeded" in line and name in line


def test_the_command_line_stays_light_for_the_worker() -> None:
    probe = (
        "import sys\n"
        "from batchcrew.aws import commands\n"
        "import argparse\n"
        "parser = argparse.ArgumentParser()\n"
        "commands.add_commands(parser.add_subparsers())\n"
        "heavy = [m for m in ('boto3', 'botocore', 'pandas', 'rich') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
