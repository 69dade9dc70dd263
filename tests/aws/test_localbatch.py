"""LocalBatch: moto's Batch API whose jobs are real local processes, checked by pid and by logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import batchcrew
from batchcrew.errors import BatchcrewError
from batchcrew.localbatch import LocalBatch
from batchcrew.localbatch.environment import JOB_AWS_SETTINGS
from tests.support.batch_jobs import (
    clients,
    log_messages,
    submit_python,
    summary,
    wait_for_status,
)
from tests.support.hermetic import hermetic_aws_environment
from tests.support.polling import wait_until
from tests.support.processes import group_members, process_alive, wait_until_gone

SLEEP = "import time; time.sleep(120)"
SLEEP_WITH_CHILD = (
    "import subprocess, sys, time; "
    f"subprocess.Popen([sys.executable, '-c', {SLEEP!r}]); time.sleep(120)"
)


def running_group(local: LocalBatch, job_id: str, size: int = 1) -> set[int]:
    """Wait until the job's process group has `size` live members; return them."""
    pid = wait_until(lambda: local.job_pids().get(job_id, 0), 30)

    def grown() -> set[int]:
        members = group_members(pid)
        return members if pid in members and len(members) >= size else set()

    found: set[int] = wait_until(grown, 30)
    return found


def test_a_job_succeeds_and_its_output_is_in_cloudwatch_logs(local_batch: LocalBatch) -> None:
    batch, logs = clients(local_batch)
    code = "import sys; print('hello from a job'); print('and from stderr', file=sys.stderr)"
    job_id = submit_python(batch, local_batch, code, name="hello")
    job = wait_for_status(batch, job_id)
    assert job["status"] == "SUCCEEDED"
    assert summary(batch, local_batch, job_id, "SUCCEEDED")["container"]["exitCode"] == 0
    messages = log_messages(logs, job)
    assert sorted(messages) == ["and from stderr", "hello from a job"]


def test_a_job_exiting_3_fails_with_exit_code_3(local_batch: LocalBatch) -> None:
    batch, _ = clients(local_batch)
    job_id = submit_python(batch, local_batch, "raise SystemExit(3)", name="exits-3")
    assert wait_for_status(batch, job_id)["status"] == "FAILED"
    assert summary(batch, local_batch, job_id, "FAILED")["container"]["exitCode"] == 3


def test_jobs_run_this_python_see_their_environment_and_reach_moto(
    local_batch: LocalBatch,
) -> None:
    batch, logs = clients(local_batch)
    code = (
        "import json, os, sys, urllib.request, batchcrew; "
        "reply = urllib.request.urlopen(os.environ['MOTO_HTTP_ENDPOINT'] + '/moto-api/config'); "
        "print(json.dumps({'prefix': sys.prefix, 'batchcrew': batchcrew.__file__, "
        "'moto': reply.status, 'environment': dict(os.environ)}))"
    )
    overrides = {
        "environment": [
            {"name": "BATCHCREW_HOST", "value": "127.0.0.1"},
            {"name": "BATCHCREW_TOKEN", "value": "a-token"},
        ]
    }
    job_id = submit_python(batch, local_batch, code, name="env", containerOverrides=overrides)
    job = wait_for_status(batch, job_id)
    assert job["status"] == "SUCCEEDED", log_messages(logs, job)
    (line,) = log_messages(logs, job)
    seen = json.loads(line)
    assert seen["prefix"] == sys.prefix
    assert Path(seen["batchcrew"]).resolve() == Path(batchcrew.__file__).resolve()
    assert seen["moto"] in (200, 201)
    environment = seen["environment"]
    assert environment["BATCHCREW_TOKEN"] == "a-token"
    assert environment["AWS_BATCH_JOB_ID"] == job_id
    assert environment["MOTO_HTTP_ENDPOINT"] == local_batch.endpoint_url
    assert environment["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    aws = {name: value for name, value in environment.items() if name.startswith("AWS_")}
    # Only what moto sets and the settings that keep boto3 in the job off the host's AWS files.
    assert aws == {
        "AWS_BATCH_JOB_ID": job_id,
        **JOB_AWS_SETTINGS,
        "AWS_ENDPOINT_URL": local_batch.endpoint_url,
    }


def test_terminate_kills_the_running_process_group_and_the_job_fails(
    local_batch: LocalBatch,
) -> None:
    batch, _ = clients(local_batch)
    job_id = submit_python(batch, local_batch, SLEEP_WITH_CHILD, name="terminated")
    members = running_group(local_batch, job_id, size=2)
    assert wait_for_status(batch, job_id, ("RUNNING",))["status"] == "RUNNING"
    batch.terminate_job(jobId=job_id, reason="stopped by the test")
    job = wait_for_status(batch, job_id)
    assert (job["status"], job["statusReason"]) == ("FAILED", "stopped by the test")
    wait_until_gone(members)
    assert summary(batch, local_batch, job_id, "FAILED")["container"]["exitCode"] == 137


def test_an_attempt_duration_timeout_kills_the_process(local_batch: LocalBatch) -> None:
    batch, _ = clients(local_batch)
    job_id = submit_python(
        batch, local_batch, SLEEP, name="too-slow", timeout={"attemptDurationSeconds": 1}
    )
    members = running_group(local_batch, job_id)
    assert wait_for_status(batch, job_id)["status"] == "FAILED"
    wait_until_gone(members)


def test_an_array_job_of_five_runs_five_processes_each_with_its_index(
    local_batch: LocalBatch,
) -> None:
    batch, logs = clients(local_batch)
    code = "import os; print(os.environ['AWS_BATCH_JOB_ARRAY_INDEX'], os.getpid())"
    parent = submit_python(batch, local_batch, code, name="array", arrayProperties={"size": 5})
    children = [wait_for_status(batch, f"{parent}:{index}") for index in range(5)]
    assert [child["status"] for child in children] == ["SUCCEEDED"] * 5
    seen = [log_messages(logs, child)[0].split() for child in children]
    assert [int(index) for index, _ in seen] == [0, 1, 2, 3, 4]
    assert len({pid for _, pid in seen}) == 5
    assert batch.describe_jobs(jobs=[parent])["jobs"][0]["status"] == "SUCCEEDED"


def test_reset_kills_jobs_and_rebuilds_a_fresh_environment(local_batch: LocalBatch) -> None:
    batch, logs = clients(local_batch)
    running = submit_python(batch, local_batch, SLEEP_WITH_CHILD, name="before-reset")
    members = running_group(local_batch, running, size=2)
    # A job that would take 9 s in each state: reset must not wait for it, nor let it run later.
    transition = {"model_name": "batch::job", "transition": {"progression": "time", "seconds": 9}}
    _post(local_batch, "/moto-api/state-manager/set-transition", transition)
    stuck = submit_python(batch, local_batch, SLEEP, name="just-submitted")
    assert batch.describe_jobs(jobs=[stuck])["jobs"][0]["status"] == "SUBMITTED"

    local_batch.reset()

    wait_until_gone(members)
    assert local_batch.job_pids() == {}
    assert batch.list_jobs(jobQueue=local_batch.job_queue)["jobSummaryList"] == []
    assert logs.describe_log_groups()["logGroups"] == []
    queues = batch.describe_job_queues(jobQueues=[local_batch.job_queue])["jobQueues"]
    assert [queue["state"] for queue in queues] == ["ENABLED"]
    job_id = submit_python(batch, local_batch, "print('after reset')", name="after-reset")
    assert wait_for_status(batch, job_id, seconds=10)["status"] == "SUCCEEDED"


def test_clients_and_aws_config_point_at_the_local_endpoint(local_batch: LocalBatch) -> None:
    arguments = local_batch.client_kwargs()
    assert arguments["endpoint_url"].startswith("http://127.0.0.1:")
    assert (arguments["aws_access_key_id"], arguments["region_name"]) == ("testing", "us-east-1")
    pytest.importorskip("batchcrew.aws.config")
    aws = local_batch.aws_config()
    assert (aws.region, aws.endpoint_url) == (local_batch.region, local_batch.endpoint_url)
    queues = aws.client("batch").describe_job_queues()["jobQueues"]
    assert [queue["jobQueueName"] for queue in queues] == [local_batch.job_queue]
    definitions = aws.client("batch").describe_job_definitions(
        jobDefinitionName=local_batch.job_definition
    )["jobDefinitions"]
    assert definitions[0]["containerProperties"]["command"][0] == sys.executable
    variables = local_batch.environment_variables()
    assert variables["AWS_ENDPOINT_URL"] == variables["BATCHCREW_ENDPOINT_URL"]
    assert variables["BATCHCREW_QUEUE"] == local_batch.job_queue


def test_stopping_leaves_no_process_behind_even_with_jobs_running(tmp_path: Path) -> None:
    local = LocalBatch(workdir=tmp_path).start()
    try:
        batch, _ = clients(local)
        jobs = [submit_python(batch, local, SLEEP_WITH_CHILD, name=f"j{n}") for n in range(2)]
        members = set().union(*(running_group(local, job_id, size=2) for job_id in jobs))
        backend = local.pid
    finally:
        local.stop()
    assert not local.running
    wait_until_gone(members | {backend}, seconds=5)
    local.stop()  # a second stop is harmless
    with pytest.raises(BatchcrewError, match="not running"):
        local.endpoint_url  # noqa: B018


def test_when_the_owning_process_dies_its_jobs_die_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hermetic_aws_environment(monkeypatch, tmp_path)
    script = f"""
import json, time, boto3
from batchcrew.localbatch import LocalBatch
local = LocalBatch(workdir={str(tmp_path)!r}).start()
batch = boto3.client("batch", **local.client_kwargs())
job = batch.submit_job(
    jobName="orphan", jobQueue=local.job_queue, jobDefinition=local.job_definition,
    containerOverrides={{"command": ["python", "-c", {SLEEP!r}]}},
)["jobId"]
deadline = time.monotonic() + 30
while job not in local.job_pids() and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({{
    "backend": local.pid, "job": local.job_pids()[job], "log": local.log_path,
}}), flush=True)
time.sleep(120)
"""
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        assert process_alive(pids["backend"]) and process_alive(pids["job"])
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    wait_until_gone({pids["backend"], pids["job"]}, seconds=10)
    # The temporary directory the dead owner could not remove is gone too.
    wait_until(lambda: not Path(pids["log"]).parent.exists(), 5)


def test_arguments_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="region"):
        LocalBatch("moon-1")
    with pytest.raises(ValueError, match="job_queue"):
        LocalBatch(job_queue="no spaces")
    with pytest.raises(ValueError, match="workdir"):
        LocalBatch(workdir="/no/such/directory")


def _post(local: LocalBatch, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        local.endpoint_url + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
