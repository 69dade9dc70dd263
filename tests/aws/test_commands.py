"""The AWS subcommands through the real entry point, `python -m batchcrew`, against moto.

Each command runs as a subprocess with fake keys, no AWS config files and the moto endpoint
in BATCHCREW_ENDPOINT_URL, exactly as a user's shell would run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from batchcrew.aws.definition import JobDefinition
from batchcrew.aws.monitor import Monitor
from tests.aws.controlplane_fixtures import (  # noqa: F401 (fixtures are used by name)
    BatchEnvironment,
    batch_env_fixture,
    controlplane_moto_server_fixture,
)
from tests.polling import wait_until


def batchcrew(
    batch_env: BatchEnvironment, *arguments: str, **environment: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m batchcrew ARGUMENTS`; keyword arguments set environment variables."""
    variables = batch_env.cli_environment()
    variables["COLUMNS"] = "200"  # tables as wide as a roomy terminal, not folded at 80
    for name, value in environment.items():
        if value:
            variables[name] = value
        else:
            variables.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "batchcrew", *arguments],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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


def register(batch_env: BatchEnvironment) -> None:
    definition = JobDefinition("defn", batch_env.job_queue, aws=batch_env.aws_config())
    definition.register(image="alpine", cpus=1, memory=512, memory_units="MiB")


def test_definitions_register_describe_and_deregister(batch_env: BatchEnvironment) -> None:
    register_first = (
        "definitions register --definition defn --image python:3.11-slim --cpus 2 --memory 4 "
        "--memory-units GiB --tag team=models --env STAGE=test --json"
    )
    first = json_of(batchcrew(batch_env, *register_first.split()))
    assert [(row["name"], row["revision"]) for row in first] == [("defn", 1)]

    register_second = "definitions register --image alpine --cpus 1 --memory 512 --memory-units MiB"
    human = batchcrew(batch_env, *register_second.split(), BATCHCREW_DEFINITION="defn")
    assert human.returncode == 0, human.stderr
    assert "Registered" in human.stdout
    assert "defn" in human.stdout

    described = json_of(
        batchcrew(batch_env, "definitions", "describe", "--definition", "defn", "--json")
    )
    assert [row["revision"] for row in described] == [2, 1]
    oldest = described[1]["container_properties"]
    assert {"type": "MEMORY", "value": "4096"} in oldest["resourceRequirements"]
    assert oldest["environment"] == [{"name": "STAGE", "value": "test"}]
    assert described[1]["tags"] == {"team": "models"}

    table = batchcrew(batch_env, "definitions", "describe", "--definition", "defn", "--active")
    assert table.returncode == 0, table.stderr
    assert "python:3.11-slim" in table.stdout
    assert "4096 MiB" in table.stdout

    dropped = json_of(
        batchcrew(batch_env, "definitions", "deregister", "--definition", "defn", "--json")
    )
    assert [(row["revision"], row["status"]) for row in dropped] == [(2, "inactive")]

    failure = one_line_failure(
        batchcrew(
            batch_env, "definitions", "deregister", "--definition", "defn", "--revision", "9"
        ),
        "definitions",
    )
    assert failure.endswith(
        "DeregisterJobDefinition in us-east-1 on job definition defn:9 failed: no such revision"
    )


def test_submit_list_status_and_terminate(batch_env: BatchEnvironment) -> None:
    register(batch_env)
    batch_env.seconds_per_job_state(1.0)  # jobs stay active while the commands run
    submit = "submit --definition defn --name first --cpus 1 --memory 1 --memory-units GiB"
    command = ["python", "-c", "print('hello')"]
    submitted = json_of(
        batchcrew(batch_env, *submit.split(), "--env", "A=1", "--json", "--", *command)
    )
    first = submitted[0]["id"]
    assert submitted[0]["name"] == "first"
    monitor = Monitor("defn", batch_env.job_queue, aws=batch_env.aws_config())
    second = monitor.submit("second", ["true"])["id"].iloc[0]
    details = monitor.status(first)["details"].iloc[0]
    assert details["container"]["command"] == command

    listed = json_of(batchcrew(batch_env, "jobs", "--json", BATCHCREW_DEFINITION="defn"))
    assert {row["id"] for row in listed} == {first, second}
    assert all(row["status"] in ("submitted", "pending", "runnable") for row in listed)
    assert all(row["created"].endswith("+00:00") for row in listed)

    table = batchcrew(batch_env, "jobs", "--status", "active", BATCHCREW_DEFINITION="defn")
    assert table.returncode == 0, table.stderr
    assert "first" in table.stdout and "second" in table.stdout

    ended = batchcrew(batch_env, "terminate", first, second)
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.startswith("asked AWS Batch to end 2 job(s)")
    assert "Ending jobs" in ended.stderr  # the progress bar
    batch_env.job_states_at_full_speed()
    wait_until(lambda: set(monitor.status([first, second])["status"]) == {"failed"}, seconds=20)

    status = json_of(batchcrew(batch_env, "status", first, "--json"))
    assert status[0]["status"] == "failed"
    assert status[0]["reason"] == "cancelled/terminated by the batchcrew monitor"
    assert status[0]["details"]["jobId"] == first

    failed = json_of(
        batchcrew(batch_env, "jobs", "--status", "failed", "--definition", "defn", "--json")
    )
    assert {row["id"] for row in failed} == {first, second}

    unknown = one_line_failure(batchcrew(batch_env, "status", "no-such-job"), "status")
    assert "DescribeJobs in us-east-1 on job no-such-job failed: no such job" in unknown


def test_terminate_all_reports_as_json(batch_env: BatchEnvironment) -> None:
    register(batch_env)
    batch_env.seconds_per_job_state(1.0)
    monitor = Monitor("defn", batch_env.job_queue, aws=batch_env.aws_config())
    ids = {monitor.submit(f"job-{n}", ["true"])["id"].iloc[0] for n in range(3)}
    end_all = ["terminate", "--all", "--reason", "cleanup", "--json"]
    result = json_of(batchcrew(batch_env, *end_all, BATCHCREW_DEFINITION="defn"))
    assert set(result["terminated"]) == ids
    batch_env.job_states_at_full_speed()
    wait_until(lambda: set(monitor.status(sorted(ids))["reason"]) == {"cleanup"}, seconds=20)


def test_logs_print_messages_or_say_why_there_are_none(batch_env: BatchEnvironment) -> None:
    register(batch_env)
    monitor = Monitor("defn", batch_env.job_queue, aws=batch_env.aws_config())
    never_ran = monitor.submit("never-ran", ["true"])["id"].iloc[0]
    wait_until(lambda: monitor.status(never_ran)["status"].iloc[0] == "failed", seconds=15)
    quiet = batchcrew(batch_env, "logs", never_ran)
    assert quiet.returncode == 0
    assert quiet.stdout == ""
    assert quiet.stderr.strip() == (
        f"batchcrew: job {never_ran} is failed and has no log stream yet: AWS gives no reason"
    )

    batch_env.jobs_succeed_at_submit()
    logged = monitor.submit("logged", ["true"])["id"].iloc[0]
    stream = f"defn/default/{logged}"
    logs = batch_env.client("logs")
    logs.create_log_group(logGroupName="/aws/batch/job")
    logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName="/aws/batch/job",
        logStreamName=stream,
        logEvents=[
            {"timestamp": now, "message": "hello"},
            {"timestamp": now + 1, "message": "world"},
        ],
    )
    text = batchcrew(batch_env, "logs", logged, "--follow", "--interval", "0")
    assert text.returncode == 0, text.stderr
    assert text.stdout == "hello\nworld\n"
    lines = batchcrew(batch_env, "logs", logged, "--json").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["message"] for record in records] == ["hello", "world"]
    assert records[0]["timestamp"].endswith("+00:00")


def test_bad_settings_and_arguments_fail_with_one_clear_line(batch_env: BatchEnvironment) -> None:
    no_region = one_line_failure(
        batchcrew(batch_env, "jobs", "--definition", "defn", BATCHCREW_REGION=""), "jobs"
    )
    assert "no AWS region found" in no_region
    assert "AWS_REGION" in no_region

    no_definition = one_line_failure(batchcrew(batch_env, "jobs"), "jobs")
    assert "pass --definition NAME or set BATCHCREW_DEFINITION" in no_definition

    bad_memory = one_line_failure(
        batchcrew(batch_env, "submit", "--definition", "defn", "--memory", "0", "--", "true"),
        "submit",
    )
    assert "memory must be a positive finite number, not 0" in bad_memory

    unknown_definition = one_line_failure(
        batchcrew(batch_env, "submit", "--definition", "nope", "--", "true"), "submit"
    )
    assert (
        "SubmitJob in us-east-1 on job definition nope on job queue test-queue"
        in unknown_definition
    )

    fargate_register = (
        "definitions register --definition defn --image alpine --platform fargate --cpus 1 "
        "--memory 2 --memory-units GiB"
    )
    fargate = one_line_failure(batchcrew(batch_env, *fargate_register.split()), "definitions")
    assert "execution_role_arn: Fargate needs an execution role" in fargate

    lambda_register = "definitions register --definition defn --image alpine --platform lambda"
    platform = batchcrew(batch_env, *lambda_register.split())
    assert platform.returncode == 2
    assert "invalid choice: 'LAMBDA'" in platform.stderr

    both = one_line_failure(batchcrew(batch_env, "terminate", "some-id", "--all"), "terminate")
    assert "give job ids or --all, not both" in both


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
