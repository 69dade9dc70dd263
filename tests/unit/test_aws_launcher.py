"""The AWS Batch launcher against AWS's documented contract, with botocore Stubber.

What goes to AWS for plain and array launches, job names, tags, the overrides' size limit,
DescribeJobs across launches 100 ids a call, AWS's verdict on why a worker ended (with the
strings AWS documents) and how workers are ended (aws.launcher).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.launcher import TERMINATE_REASON, BatchLaunch, BatchLauncher, job_name
from batchcrew.aws.options import WORKER_COMMAND, Options
from batchcrew.errors import AWSError
from batchcrew.launchers.base import LaunchHandle, LaunchRequest, WorkerStatus

REGION = "us-east-1"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
WORKER_ENVIRONMENT = {
    "BATCHCREW_HOST": "10.0.3.17",
    "BATCHCREW_PORT": "5000",
    "BATCHCREW_TOKEN": "k" * 43,
    "BATCHCREW_LAUNCH": "a1b2c3d4",
    "BATCHCREW_FINGERPRINT": "f" * 64,
}
OUT_OF_MEMORY = "OutOfMemoryError: Container killed due to memory usage"
ESSENTIAL_EXITED = "Essential container in task exited"


def make_launcher(processes: int | None = None, **options: Any) -> BatchLauncher:
    settings = {"job_definition": "defn", "job_queue": "queue", **options}
    aws = AWSConfig(region=REGION, credentials=KEYS)
    return BatchLauncher(Options(**settings), aws=aws, processes=processes)


@pytest.fixture
def launcher() -> Iterator[BatchLauncher]:
    made = make_launcher(memory=[4, 8, 16], memory_units="GiB", cpus=2)
    yield made
    made.close()


@pytest.fixture
def stub(launcher: BatchLauncher) -> Iterator[Stubber]:
    with Stubber(launcher.aws.client("batch")) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def request(count: int = 1, level: int = 0, **changes: Any) -> LaunchRequest:
    fields: dict[str, Any] = {
        "launch": "a1b2c3d4",
        "count": count,
        "level": level,
        "environment": WORKER_ENVIRONMENT,
        "name": "crew",
        "controller": "c0ffee00",
        **changes,
    }
    return LaunchRequest(**fields)


def launch(job_id: str, count: int, name: str = "l") -> BatchLaunch:
    return BatchLaunch(name, count, job_id, job_name=f"batchcrew-{name}", level=0)


def detail(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "jobName": "batchcrew-crew-a1",
        "jobId": job_id,
        "jobQueue": "queue",
        "status": status,
        "startedAt": 1_700_000_000_000,
        "jobDefinition": "defn",
        **extra,
    }


def environment_list(variables: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in variables.items()]


def test_one_worker_is_one_plain_job_with_the_command_environment_level_and_tags() -> None:
    launcher = make_launcher(
        memory=[4, 8], memory_units="GiB", environment={"STAGE": "dev"}, tags={"team": "fit"}
    )
    expected = {
        "jobName": "batchcrew-crew-a1b2c3d4",
        "jobQueue": "queue",
        "jobDefinition": "defn",
        "containerOverrides": {
            "command": list(WORKER_COMMAND),
            "environment": environment_list({"STAGE": "dev", **WORKER_ENVIRONMENT}),
            "resourceRequirements": [{"type": "MEMORY", "value": "4096"}],
        },
        "tags": {
            "team": "fit",
            "batchcrew:controller": "crew",
            "batchcrew:controller-id": "c0ffee00",
        },
    }
    with Stubber(launcher.aws.client("batch")) as stub:
        stub.add_response(
            "submit_job",
            {"jobName": expected["jobName"], "jobId": "job-1", "jobArn": "arn:job-1"},
            expected,
        )
        handle = launcher.launch(request())
    assert isinstance(handle, BatchLaunch)
    assert (handle.launch, handle.count, handle.external_id) == ("a1b2c3d4", 1, "job-1")
    assert (handle.job_name, handle.level, handle.job_id(0)) == (
        "batchcrew-crew-a1b2c3d4",
        0,
        "job-1",
    )


def test_many_workers_are_one_array_job_at_the_level_asked(
    launcher: BatchLauncher, stub: Stubber
) -> None:
    expected = {
        "jobName": "batchcrew-crew-a1b2c3d4",
        "jobQueue": "queue",
        "jobDefinition": "defn",
        "arrayProperties": {"size": 1000},
        "containerOverrides": {
            "command": list(WORKER_COMMAND),
            "environment": environment_list(WORKER_ENVIRONMENT),
            "resourceRequirements": [
                {"type": "VCPU", "value": "2"},
                {"type": "MEMORY", "value": "16384"},
            ],
        },
        "tags": {"batchcrew:controller": "crew", "batchcrew:controller-id": "c0ffee00"},
    }
    stub.add_response(
        "submit_job", {"jobName": "batchcrew-crew-a1b2c3d4", "jobId": "arr-1"}, expected
    )
    handle = launcher.launch(request(count=1000, level=2))
    assert [handle.job_id(index) for index in (0, 999)] == ["arr-1:0", "arr-1:999"]
    assert handle.worker_label(7) == "arr-1:7"


def test_job_names_are_valid_for_aws_and_keep_the_launch_id() -> None:
    assert job_name("my_workflow", "a1b2") == "batchcrew-my_workflow-a1b2"
    assert job_name("", "a1b2") == "batchcrew-a1b2"
    long_name = "Überprüfung der Modelle, Lauf 7 / " * 10
    name = job_name(long_name, "5f0c1e9a2b")
    assert JOB_NAME.match(name) and len(name) == 128
    assert name.startswith("batchcrew--berpr-fung-der-Modelle--Lauf-7")
    assert name.endswith("-5f0c1e9a2b")
    assert JOB_NAME.match(job_name("x", "l" * 200)) and len(job_name("x", "l" * 200)) == 128


def test_the_largest_launch_stays_far_below_the_overrides_limit(
    launcher: BatchLauncher, stub: Stubber
) -> None:
    largest = {
        **WORKER_ENVIRONMENT,
        "BATCHCREW_HOST": "fd12:3456:789a:1:ffff:ffff:ffff:ffff",
        "BATCHCREW_PORT": "65535",
        "BATCHCREW_FINGERPRINT": ":".join(["AB"] * 32),  # 95 characters
        "BATCHCREW_LAUNCH": "f" * 32,
        "BATCHCREW_SECONDS_TIMEOUT": "86400.0",
    }
    captured: list[dict[str, Any]] = []
    launcher.aws.client("batch").meta.events.register(
        "provide-client-params.batch.SubmitJob", lambda params, **_: captured.append(params)
    )
    stub.add_response("submit_job", {"jobName": "n", "jobId": "j"})
    launcher.launch(request(count=10_000, level=2, name="n" * 500, environment=largest))
    overrides = captured[0]["containerOverrides"]
    size = len(json.dumps(overrides, separators=(",", ":")))
    assert size < 1500, size  # AWS's limit is 8,192 characters
    assert len(captured[0]["jobName"]) == 128
    assert len(captured[0]["tags"]["batchcrew:controller"]) == 256


def test_an_environment_too_big_is_refused_before_aws_is_called(
    launcher: BatchLauncher, stub: Stubber
) -> None:
    # Each variable fits, and the options are fine: only this launch's environment is too big.
    many = {**WORKER_ENVIRONMENT, **{f"BATCHCREW_EXTRA_{n:03d}": "v" * 80 for n in range(80)}}
    with pytest.raises(ValueError, match="AWS Batch allows 8,192 in containerOverrides"):
        launcher.launch(request(environment=many))
    # No response was stubbed: a SubmitJob call would have failed with a stub error instead.


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"count": 0}, ValueError, "count must be at least 1 and at most 10000"),
        ({"count": 10_001}, ValueError, "count must be at least 1 and at most 10000"),
        ({"level": 3}, ValueError, "level must be at least 0 and at most 2"),
        ({"environment": {"AWS_BATCH_JOB_ID": "x"}}, ValueError, "reserved"),
    ],
)
def test_bad_launch_requests_are_refused_before_any_call(
    launcher: BatchLauncher, stub: Stubber, changes: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        launcher.launch(request(**changes))


def test_only_launch_requests_and_batch_launches_cross_the_seam(launcher: BatchLauncher) -> None:
    with pytest.raises(TypeError, match="LaunchRequest"):
        launcher.launch({"count": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="BatchLaunch"):
        launcher.poll({LaunchHandle("l", 1, "j"): [0]})
    with pytest.raises(TypeError, match="BatchLaunch"):
        launcher.terminate(LaunchHandle("l", 1, "j"))
    with pytest.raises(TypeError, match=r"batchcrew\.aws\.Options"):
        BatchLauncher({"job_queue": "q"})  # type: ignore[arg-type]


def test_aws_refusing_a_launch_is_an_aws_error_in_the_future_or_at_once() -> None:
    for processes in (None, 2):
        launcher = make_launcher(processes=processes)
        with Stubber(launcher.aws.client("batch")) as stub:
            stub.add_client_error(
                "submit_job", service_error_code="ClientException", service_message="no queue"
            )
            future = launcher.submit(launcher.launch, request())
            with pytest.raises(AWSError, match=r"SubmitJob in us-east-1 .*queue queue.*no queue"):
                future.result(timeout=10)
        launcher.close()


def test_250_pending_workers_of_3_launches_are_read_in_3_calls_of_at_most_100(
    launcher: BatchLauncher, stub: Stubber
) -> None:
    launches = [launch("A", 120, "a"), launch("B", 80, "b"), launch("C", 50, "c")]
    ids = [handle.job_id(index) for handle in launches for index in range(handle.count)]
    for start in (0, 100, 200):
        chunk = ids[start : start + 100]
        jobs = [detail(job_id, "PENDING") for job_id in chunk]
        stub.add_response("describe_jobs", {"jobs": jobs}, {"jobs": chunk})
    statuses = launcher.poll({handle: range(handle.count) for handle in launches})
    assert len(statuses) == 250
    assert statuses[("b", 79)] == WorkerStatus("queued")
    assert {status.phase for status in statuses.values()} == {"queued"}


def test_polling_nothing_calls_nothing_and_unknown_jobs_are_left_out(
    launcher: BatchLauncher, stub: Stubber
) -> None:
    assert launcher.poll({}) == {}
    assert launcher.poll({launch("A", 3): []}) == {}
    stub.add_response(
        "describe_jobs", {"jobs": [detail("A:1", "RUNNING")]}, {"jobs": ["A:0", "A:1"]}
    )
    assert launcher.poll({launch("A", 3): [0, 1]}) == {("l", 1): WorkerStatus("running")}
    with pytest.raises(ValueError, match="index must be at least 0 and at most 2"):
        launcher.poll({launch("A", 3): [3]})


HOST_GONE = "Host EC2 (instance i-0123456789abcdef0) terminated."


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        # AWS's words for a container killed for memory: the container's reason, exit 137.
        (
            {
                "status": "FAILED",
                "statusReason": ESSENTIAL_EXITED,
                "container": {"exitCode": 137, "reason": OUT_OF_MEMORY},
            },
            WorkerStatus("ended", f"{ESSENTIAL_EXITED}; {OUT_OF_MEMORY}", 137, "memory"),
        ),
        # ... or only in the last attempt, as for a job retried by AWS.
        (
            {
                "status": "FAILED",
                "statusReason": ESSENTIAL_EXITED,
                "attempts": [
                    {"container": {"exitCode": 1, "reason": "other"}},
                    {"container": {"exitCode": 137, "reason": OUT_OF_MEMORY}},
                ],
            },
            WorkerStatus("ended", f"{ESSENTIAL_EXITED}; {OUT_OF_MEMORY}", 137, "memory"),
        ),
        # A host gone: AWS's own retry pattern for it is onStatusReason "Host EC2*".
        (
            {"status": "FAILED", "statusReason": HOST_GONE, "container": {"exitCode": 143}},
            WorkerStatus("ended", HOST_GONE, 143, "host"),
        ),
        (
            {"status": "FAILED", "attempts": [{"statusReason": HOST_GONE, "container": {}}]},
            WorkerStatus("ended", None, None, "host"),
        ),
        (
            {"status": "FAILED", "statusReason": "Your Spot Task was interrupted."},
            WorkerStatus("ended", "Your Spot Task was interrupted.", None, "host"),
        ),
        # Anything else: a worker that failed, an image that cannot be pulled, our own kill.
        (
            {"status": "FAILED", "statusReason": ESSENTIAL_EXITED, "container": {"exitCode": 1}},
            WorkerStatus("ended", ESSENTIAL_EXITED, 1, "other"),
        ),
        (
            {
                "status": "FAILED",
                "statusReason": "Task failed to start",
                "container": {"reason": "CannotPullContainerError: pull image manifest failed"},
            },
            WorkerStatus(
                "ended",
                "Task failed to start; CannotPullContainerError: pull image manifest failed",
                None,
                "other",
            ),
        ),
        (
            {"status": "FAILED", "statusReason": TERMINATE_REASON, "container": {"exitCode": 137}},
            WorkerStatus("ended", TERMINATE_REASON, 137, "other"),
        ),
        (
            {"status": "SUCCEEDED", "statusReason": ESSENTIAL_EXITED, "container": {"exitCode": 0}},
            WorkerStatus("ended", ESSENTIAL_EXITED, 0, "other"),
        ),
        # Not ended: no cause yet, AWS's reason kept.
        ({"status": "RUNNING"}, WorkerStatus("running")),
        ({"status": "STARTING"}, WorkerStatus("starting")),
        ({"status": "SUBMITTED"}, WorkerStatus("queued")),
        ({"status": "PENDING"}, WorkerStatus("queued")),
        (
            {"status": "RUNNABLE", "statusReason": "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"},
            WorkerStatus("queued", "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"),
        ),
    ],
)
def test_why_a_worker_ended_is_read_from_awss_documented_words(
    launcher: BatchLauncher, stub: Stubber, job: dict[str, Any], expected: WorkerStatus
) -> None:
    stub.add_response("describe_jobs", {"jobs": [detail("J", **job)]}, {"jobs": ["J"]})
    assert launcher.poll({launch("J", 1): [0]}) == {("l", 0): expected}


def test_a_whole_launch_is_ended_through_its_own_job_id(
    launcher: BatchLauncher, stub: Stubber
) -> None:
    for indices in (None, [4, 3, 2, 1, 0]):
        for operation in ("cancel_job", "terminate_job"):
            stub.add_response(operation, {}, {"jobId": "A", "reason": TERMINATE_REASON})
        launcher.terminate(launch("A", 5), indices)
    for operation in ("cancel_job", "terminate_job"):
        stub.add_response(operation, {}, {"jobId": "P", "reason": TERMINATE_REASON})
    launcher.terminate(launch("P", 1), [0])


def test_some_workers_are_ended_through_their_childrens_ids(
    launcher: BatchLauncher, stub: Stubber
) -> None:
    for child in ("A:1", "A:3"):
        for operation in ("cancel_job", "terminate_job"):
            stub.add_response(operation, {}, {"jobId": child, "reason": TERMINATE_REASON})
    launcher.terminate(launch("A", 5), [3, 1])
    launcher.terminate(launch("A", 5), [])  # nothing to end, no call
    with pytest.raises(ValueError, match="index"):
        launcher.terminate(launch("A", 5), [5])


def test_a_failed_termination_is_raised_after_every_job_was_tried(
    launcher: BatchLauncher, stub: Stubber
) -> None:
    stub.add_client_error("cancel_job", service_error_code="ServerException", http_status_code=500)
    stub.add_response("cancel_job", {}, {"jobId": "A:2", "reason": TERMINATE_REASON})
    stub.add_response("terminate_job", {}, {"jobId": "A:2", "reason": TERMINATE_REASON})
    with pytest.raises(AWSError, match="CancelJob in us-east-1 on job A:1"):
        launcher.terminate(launch("A", 5), [1, 2])


def test_the_default_host_is_this_machines_own_address(launcher: BatchLauncher) -> None:
    address = ipaddress.ip_address(launcher.default_host())
    assert not address.is_loopback and not address.is_unspecified


def test_levels_come_from_the_options(launcher: BatchLauncher) -> None:
    assert launcher.levels == 3
    assert [launcher.describe_level(level) for level in range(3)] == [
        "4 GiB memory, 2 vCPUs",
        "8 GiB memory, 2 vCPUs",
        "16 GiB memory, 2 vCPUs",
    ]
    assert launcher.launch_size_max == 10_000
