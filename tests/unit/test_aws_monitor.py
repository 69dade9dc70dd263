"""The monitor against AWS's documented contract, with botocore Stubber (batchcrew.aws.monitor).

moto does not paginate ListJobs, ignores its JOB_DEFINITION filter and accepts more than 100 ids
in DescribeJobs; these tests pin down what AWS really does and what the monitor does about it.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from botocore.stub import Stubber

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.jobs import DESCRIBE_JOBS_MAX_IDS
from batchcrew.aws.monitor import LogEvent, Monitor, Termination
from batchcrew.aws.validation import JOB_STATUSES
from batchcrew.errors import AWSError

REGION = "us-east-1"
ACCOUNT = "123456789012"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/q1"


def definition_arn(name: str = "defn", revision: int = 1) -> str:
    return f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{name}:{revision}"


def summary(
    job_id: str,
    status: str = "RUNNING",
    definition: str = "defn",
    revision: int = 1,
    created: int = 1_700_000_000_000,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "jobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}",
        "jobId": job_id,
        "jobName": f"name-{job_id}",
        "createdAt": created,
        "status": status,
        "jobDefinition": definition_arn(definition, revision),
        **extra,
    }


def detail(job_id: str, status: str = "RUNNING", **extra: Any) -> dict[str, Any]:
    return {
        "jobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}",
        "jobName": f"name-{job_id}",
        "jobId": job_id,
        "jobQueue": QUEUE_ARN,
        "status": status,
        "startedAt": 1_700_000_001_000,
        "createdAt": 1_700_000_000_000,
        "jobDefinition": definition_arn(),
        **extra,
    }


class Stubbed:
    """A monitor whose Batch and Logs clients answer from queued responses only."""

    def __init__(self, aws: AWSConfig, job_definition: str = "defn", job_queue: Any = "q1") -> None:
        self.aws = aws
        self.monitor = Monitor(job_definition, job_queue, aws=self.aws)
        self.batch = Stubber(self.aws.client("batch"))
        self.logs = Stubber(self.aws.client("logs"))

    def list_jobs(
        self,
        queue: str,
        status: str,
        jobs: list[dict[str, Any]],
        sent: str | None = None,
        following: str | None = None,
    ) -> None:
        expected: dict[str, Any] = {"jobQueue": queue, "jobStatus": status}
        if sent is not None:
            expected["nextToken"] = sent
        response: dict[str, Any] = {"jobSummaryList": jobs}
        if following is not None:
            response["nextToken"] = following
        self.batch.add_response("list_jobs", response, expected)

    def list_every_status(self, queue: str, by_status: dict[str, list[dict[str, Any]]]) -> None:
        for status in JOB_STATUSES:
            self.list_jobs(queue, status.upper(), by_status.get(status.upper(), []))

    def describe(self, ids: list[str], jobs: list[dict[str, Any]]) -> None:
        self.batch.add_response("describe_jobs", {"jobs": jobs}, {"jobs": ids})

    def log_page(
        self,
        group: str,
        stream: str,
        messages: list[str],
        following: str,
        sent: str | None = None,
        start_from_head: bool = True,
    ) -> None:
        expected: dict[str, Any] = {
            "logGroupName": group,
            "logStreamName": stream,
            "startFromHead": start_from_head,
        }
        if sent is not None:
            expected["nextToken"] = sent
        events = [
            {
                "timestamp": 1_700_000_000_000 + i,
                "message": message,
                "ingestionTime": 1_700_000_000_500,
            }
            for i, message in enumerate(messages)
        ]
        self.logs.add_response(
            "get_log_events",
            {"events": events, "nextForwardToken": following, "nextBackwardToken": "b/0"},
            expected,
        )


@pytest.fixture(scope="module")
def aws() -> Iterator[AWSConfig]:
    """One configuration (and so one pair of clients) for the module: clients are slow to make."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
            patch.delenv(variable, raising=False)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        config = AWSConfig(region=REGION, credentials=KEYS)
        config.client("batch")
        config.client("logs")
        yield config


@pytest.fixture
def stubbed(aws: AWSConfig) -> Iterator[Stubbed]:
    made = Stubbed(aws)
    with made.batch, made.logs:
        yield made
    made.batch.assert_no_pending_responses()
    made.logs.assert_no_pending_responses()


# Listing ---------------------------------------------------------------------------------------


def test_listing_follows_next_tokens_over_three_pages_and_keeps_only_this_definition(
    stubbed: Stubbed,
) -> None:
    ours = [summary(f"job-{i:03d}", created=1_700_000_000_000 + i) for i in range(250)]
    others = [summary(f"other-{i}", definition="someone-else") for i in range(30)]
    near_miss = [summary("near", definition="defn-2")]  # a prefix is not the same name
    pages = [ours[:100] + others[:10], ours[100:200] + others[10:], ours[200:] + near_miss]
    stubbed.list_jobs("q1", "RUNNING", pages[0], following="token-1")
    stubbed.list_jobs("q1", "RUNNING", pages[1], sent="token-1", following="token-2")
    stubbed.list_jobs("q1", "RUNNING", pages[2], sent="token-2")

    frame = stubbed.monitor.running()

    assert len(frame) == 250
    assert set(frame["id"]) == {job["jobId"] for job in ours}
    assert set(frame["status"]) == {"running"}
    assert frame["id"].iloc[0] == "job-249"  # newest first
    assert frame["created"].is_monotonic_decreasing


def test_every_status_is_asked_one_by_one_never_without_a_status(stubbed: Stubbed) -> None:
    # Without jobStatus AWS answers with RUNNING jobs only, and a JOB_DEFINITION filter would
    # make it ignore jobStatus: so the monitor asks each state and filters by definition itself.
    stubbed.list_every_status(
        "q1",
        {
            "SUBMITTED": [summary("a", "SUBMITTED", created=1)],
            "RUNNABLE": [summary("b", "RUNNABLE", created=2)],
            "SUCCEEDED": [summary("c", "SUCCEEDED", created=3, stoppedAt=10)],
            "FAILED": [
                summary("d", "FAILED", created=4, statusReason="Essential container exited")
            ],
        },
    )
    frame = stubbed.monitor.jobs()
    assert list(frame.columns) == [
        "name",
        "id",
        "arn",
        "queue",
        "status",
        "reason",
        "created",
        "started",
        "stopped",
    ]
    assert frame["id"].tolist() == ["d", "c", "b", "a"]
    assert frame["status"].tolist() == ["failed", "succeeded", "runnable", "submitted"]
    assert frame["reason"].tolist() == ["Essential container exited", None, None, None]
    assert frame["queue"].unique().tolist() == ["q1"]
    assert str(frame["created"].dtype).startswith("datetime64")
    assert frame["stopped"].isna().tolist() == [True, False, True, True]
    assert frame.loc[1, "stopped"] == pd.Timestamp(10, unit="ms", tz="UTC")


def test_a_job_seen_in_two_states_is_listed_once_with_the_later_state(stubbed: Stubbed) -> None:
    stubbed.list_jobs("q1", "RUNNABLE", [summary("moving", "RUNNABLE")])
    stubbed.list_jobs("q1", "RUNNING", [summary("moving", "RUNNING")])
    frame = stubbed.monitor.jobs(["running", "runnable"])
    assert frame[["id", "status"]].values.tolist() == [["moving", "running"]]


def test_active_and_inactive_ask_their_states(stubbed: Stubbed) -> None:
    for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"):
        stubbed.list_jobs("q1", status, [summary(status.lower(), status)])
    assert sorted(stubbed.monitor.active()["status"]) == sorted(
        ["submitted", "pending", "runnable", "starting", "running"]
    )
    stubbed.list_jobs("q1", "SUCCEEDED", [])
    stubbed.list_jobs("q1", "FAILED", [summary("x", "FAILED")])
    assert stubbed.monitor.inactive()["id"].tolist() == ["x"]


@pytest.mark.parametrize(
    ("job_definition", "expected"),
    [
        ("defn", {"r1", "r2"}),
        ("defn:2", {"r2"}),
        (definition_arn("defn", 1), {"r1"}),
    ],
)
def test_definition_matching_by_name_revision_or_arn(
    aws: AWSConfig, job_definition: str, expected: set[str]
) -> None:
    made = Stubbed(aws, job_definition=job_definition)
    with made.batch:
        made.list_jobs(
            "q1",
            "FAILED",
            [
                summary("r1", "FAILED", revision=1),
                summary("r2", "FAILED", revision=2),
                summary("other", "FAILED", definition="defn2", revision=1),
                {"jobId": "no-definition", "jobName": "x", "status": "FAILED"},
            ],
        )
        assert set(made.monitor.failed()["id"]) == expected


def test_several_queues_are_each_listed_and_named(aws: AWSConfig) -> None:
    made = Stubbed(aws, job_queue=["q1", "q2", "q1"])
    assert made.monitor.job_queues == ("q1", "q2")
    with made.batch:
        made.list_jobs("q1", "RUNNING", [summary("a")])
        made.list_jobs("q2", "RUNNING", [summary("b")])
        frame = made.monitor.running()
    assert dict(zip(frame["id"], frame["queue"], strict=True)) == {"a": "q1", "b": "q2"}


def test_no_jobs_gives_an_empty_frame_with_the_same_columns_and_types(stubbed: Stubbed) -> None:
    stubbed.list_jobs("q1", "PENDING", [])
    frame = stubbed.monitor.pending()
    assert frame.empty
    assert list(frame.columns) == [
        "name",
        "id",
        "arn",
        "queue",
        "status",
        "reason",
        "created",
        "started",
        "stopped",
    ]
    assert str(frame["created"].dtype).startswith("datetime64")


def test_unknown_status_is_refused_before_any_call(stubbed: Stubbed) -> None:
    with pytest.raises(ValueError, match="status must be one of submitted"):
        stubbed.monitor.jobs("done")


def test_a_listing_failure_names_the_queue_and_region(stubbed: Stubbed) -> None:
    stubbed.batch.add_client_error(
        "list_jobs", "ClientException", "jobQueue nope does not exist", 400
    )
    with pytest.raises(AWSError, match=r"ListJobs in us-east-1 on job queue q1 failed"):
        stubbed.monitor.running()


# Status ----------------------------------------------------------------------------------------


def test_many_ids_are_described_at_most_100_at_a_time(stubbed: Stubbed) -> None:
    ids = [f"id-{i:03d}" for i in range(250)]
    assert DESCRIBE_JOBS_MAX_IDS == 100
    for start in (0, 100, 200):
        chunk = ids[start : start + 100]
        # AWS may answer in any order; rows still follow the order asked.
        stubbed.describe(chunk, [detail(each) for each in reversed(chunk)])
    frame = stubbed.monitor.status(ids)
    assert frame["id"].tolist() == ids


def test_status_row_has_exit_code_log_stream_and_the_raw_description(stubbed: Stubbed) -> None:
    job = detail(
        "j1",
        "FAILED",
        statusReason="OutOfMemoryError: Container killed due to memory usage",
        stoppedAt=1_700_000_009_000,
        container={"exitCode": 137, "logStreamName": "defn/default/abc"},
    )
    stubbed.describe(["j1"], [job])
    frame = stubbed.monitor.status("j1")
    row = frame.iloc[0]
    assert list(frame.columns)[-3:] == ["exit_code", "log_stream", "details"]
    assert (row["name"], row["queue"], row["status"]) == ("name-j1", "q1", "failed")
    assert row["reason"].startswith("OutOfMemoryError")
    assert row["exit_code"] == 137
    assert row["log_stream"] == "defn/default/abc"
    assert row["details"]["jobQueue"] == QUEUE_ARN
    assert row["started"] == pd.Timestamp(1_700_000_001_000, unit="ms", tz="UTC")


def test_exit_code_and_stream_fall_back_to_the_last_attempt(stubbed: Stubbed) -> None:
    job = detail(
        "j1",
        "FAILED",
        attempts=[
            {"container": {"exitCode": 1, "logStreamName": "old"}},
            {"container": {"exitCode": 2, "logStreamName": "new"}},
        ],
    )
    stubbed.describe(["j1"], [job])
    row = stubbed.monitor.status("j1").iloc[0]
    assert (row["exit_code"], row["log_stream"]) == (2, "new")


def test_a_running_job_has_no_exit_code_yet(stubbed: Stubbed) -> None:
    stubbed.describe(["j1"], [detail("j1")])
    frame = stubbed.monitor.status("j1")
    assert frame["exit_code"].isna().all()
    assert str(frame["exit_code"].dtype) == "Int64"


def test_an_unknown_job_id_is_an_error_naming_it(stubbed: Stubbed) -> None:
    stubbed.describe(["known", "ghost"], [detail("known")])
    with pytest.raises(AWSError) as caught:
        stubbed.monitor.status(["known", "ghost"])
    assert caught.value.operation == "DescribeJobs"
    assert caught.value.region == REGION
    assert caught.value.resource == "job ghost"
    assert "no such job" in caught.value.reason


# Submit ----------------------------------------------------------------------------------------


def test_submit_sends_command_environment_and_resources_as_overrides(stubbed: Stubbed) -> None:
    stubbed.batch.add_response(
        "submit_job",
        {"jobName": "fit-1", "jobId": "id-1", "jobArn": "arn:aws:batch:us-east-1:1:job/id-1"},
        {
            "jobName": "fit-1",
            "jobQueue": "q1",
            "jobDefinition": "defn",
            "containerOverrides": {
                "command": ["python", "-c", "print(1)"],
                "environment": [{"name": "STAGE", "value": "test"}],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "2"},
                    {"type": "MEMORY", "value": "7630"},
                    {"type": "GPU", "value": "1"},
                ],
            },
            "timeout": {"attemptDurationSeconds": 600},
            "tags": {"project": "x"},
            "propagateTags": True,
            "schedulingPriorityOverride": 5,
            "shareIdentifier": "blue",
            "parameters": {"p": "v"},
        },
    )
    frame = stubbed.monitor.submit(
        ["python", "-c", "print(1)"],
        "fit-1",
        cpus=2,
        gpus=1,
        memory=8,  # gigabytes: 8e9 bytes = 7629.4 MiB, rounded up
        environment={"STAGE": "test"},
        seconds_timeout=600,
        tags={"project": "x"},
        propagate_tags=True,
        scheduling_priority_override=5,
        share_identifier="blue",
        parameters={"p": "v"},
    )
    assert frame.to_dict(orient="records") == [
        {"name": "fit-1", "id": "id-1", "arn": "arn:aws:batch:us-east-1:1:job/id-1"}
    ]


def test_submit_without_a_name_makes_one(stubbed: Stubbed) -> None:
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    events = stubbed.aws.client("batch").meta.events
    events.register("before-parameter-build.batch.SubmitJob", record)
    stubbed.batch.add_response("submit_job", {"jobName": "made", "jobId": "id-1"})
    try:
        stubbed.monitor.submit(["true"])
    finally:
        events.unregister("before-parameter-build.batch.SubmitJob", record)
    assert re.fullmatch(r"batchcrew-job-[0-9a-f]{8}", sent[0]["jobName"])


def test_submit_can_choose_another_queue(stubbed: Stubbed) -> None:
    stubbed.batch.add_response(
        "submit_job",
        {"jobName": "a", "jobId": "id-1"},
        {
            "jobName": "a",
            "jobQueue": "q9",
            "jobDefinition": "defn",
            "containerOverrides": {"command": ["true"]},
        },
    )
    assert stubbed.monitor.submit(["true"], name="a", job_queue="q9")["id"].tolist() == ["id-1"]


@pytest.mark.parametrize(
    ("keywords", "error", "message"),
    [
        ({"name": "bad name"}, ValueError, "name must have 1 to 128"),
        ({"command": "echo hi"}, TypeError, "command must be a list"),
        ({"memory": 0}, ValueError, "memory must be a positive"),
        ({"memory": -4}, ValueError, "memory must be a positive"),
        ({"memory": 4, "memory_units": "TB"}, ValueError, "memory_units must be one of"),
        ({"cpus": 0}, ValueError, "cpus must be a positive"),
        ({"environment": {"AWS_BATCH_X": "1"}}, ValueError, "reserved"),
        ({"seconds_timeout": 30}, ValueError, "seconds_timeout must be at least 60"),
        ({"scheduling_priority_override": 10000}, ValueError, "at most 9999"),
        ({"command": ["x" * 9000]}, ValueError, "AWS Batch allows 8,192"),
    ],
)
def test_bad_submissions_are_refused_before_any_call(
    stubbed: Stubbed, keywords: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"name": "ok", "command": ["true"], **keywords}
    with pytest.raises(error, match=message):
        stubbed.monitor.submit(**arguments)


def test_submit_to_an_unknown_definition_names_definition_queue_and_region(
    stubbed: Stubbed,
) -> None:
    stubbed.batch.add_client_error(
        "submit_job", "ClientException", "Job definition defn does not exist", 400
    )
    with pytest.raises(AWSError) as caught:
        stubbed.monitor.submit(["true"], name="a")
    assert str(caught.value) == (
        "SubmitJob in us-east-1 on job definition defn on job queue q1 failed: "
        "ClientException: Job definition defn does not exist"
    )


# Terminate -------------------------------------------------------------------------------------


def test_terminate_cancels_and_terminates_each_job_and_reports_progress(stubbed: Stubbed) -> None:
    stubbed.describe(["a", "b"], [detail("b", "RUNNABLE"), detail("a")])
    for job_id in ("a", "b"):
        stubbed.batch.add_response("cancel_job", {}, {"jobId": job_id, "reason": "done here"})
        stubbed.batch.add_response("terminate_job", {}, {"jobId": job_id, "reason": "done here"})
    progress: list[tuple[int, int]] = []
    ended = stubbed.monitor.terminate(
        ["a", "b", "a"],
        reason="done here",
        progress=lambda done, total: progress.append((done, total)),
    )
    assert ended == Termination(ended=("a", "b"), finished=(), unknown=())
    assert progress == [(1, 2), (2, 2)]


def test_terminate_reports_unknown_ids_and_finished_jobs_without_acting_on_them(
    stubbed: Stubbed,
) -> None:
    # AWS accepts CancelJob and TerminateJob for ids it does not know, so they are looked up.
    stubbed.describe(
        ["ghost", "done", "broke", "live"],
        [detail("done", "SUCCEEDED"), detail("broke", "FAILED"), detail("live", "STARTING")],
    )
    for operation in ("cancel_job", "terminate_job"):
        stubbed.batch.add_response(
            operation,
            {},
            {"jobId": "live", "reason": "cancelled/terminated by the batchcrew monitor"},
        )
    assert stubbed.monitor.terminate(["ghost", "done", "broke", "live"]) == Termination(
        ended=("live",), finished=("done", "broke"), unknown=("ghost",)
    )


def test_terminate_all_ends_every_active_job_of_this_definition(stubbed: Stubbed) -> None:
    stubbed.list_jobs("q1", "SUBMITTED", [summary("s", "SUBMITTED")])
    stubbed.list_jobs("q1", "PENDING", [])
    stubbed.list_jobs(
        "q1", "RUNNABLE", [summary("r", "RUNNABLE"), summary("x", "RUNNABLE", definition="other")]
    )
    stubbed.list_jobs("q1", "STARTING", [])
    stubbed.list_jobs("q1", "RUNNING", [summary("n", "RUNNING", created=1_800_000_000_000)])
    for job_id in ("n", "s", "r"):
        for operation in ("cancel_job", "terminate_job"):
            stubbed.batch.add_response(
                operation,
                {},
                {"jobId": job_id, "reason": "cancelled/terminated by the batchcrew monitor"},
            )
    assert stubbed.monitor.terminate(all=True).ended == ("n", "s", "r")


def test_one_failure_does_not_stop_the_others_and_all_failures_are_reported(
    stubbed: Stubbed,
) -> None:
    stubbed.describe(["a", "b", "c"], [detail("a"), detail("b"), detail("c")])
    stubbed.batch.add_client_error("cancel_job", "ServerException", "boom a", 500)
    stubbed.batch.add_response("cancel_job", {})
    stubbed.batch.add_response("terminate_job", {})
    stubbed.batch.add_response("cancel_job", {})
    stubbed.batch.add_client_error("terminate_job", "ClientException", "boom c", 400)
    with pytest.raises(AWSError) as caught:
        stubbed.monitor.terminate(["a", "b", "c"])
    message = str(caught.value)
    assert "2 of 3 jobs" in message
    assert "job a: ServerException: boom a" in message
    assert "job c: ClientException: boom c" in message


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({}, "give the ids of the jobs to end, or all=True"),
        ({"ids": ["a"], "all": True}, "not both"),
        ({"ids": ["a"], "reason": ""}, "reason must be a non-empty"),
        ({"ids": ["a"], "reason": "x" * 1025}, "at most 1024"),
    ],
)
def test_terminate_refuses_unclear_requests(
    stubbed: Stubbed, keywords: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        stubbed.monitor.terminate(**keywords)


# Logs ------------------------------------------------------------------------------------------


def job_with_stream(
    status: str = "SUCCEEDED", group: str | None = "/custom/group"
) -> dict[str, Any]:
    container: dict[str, Any] = {"logStreamName": "defn/default/abc"}
    if group is not None:
        container["logConfiguration"] = {
            "logDriver": "awslogs",
            "options": {"awslogs-group": group, "awslogs-region": REGION},
        }
    return detail("j1", status, container=container)


def test_log_reads_forward_until_the_token_repeats_from_the_jobs_own_group(
    stubbed: Stubbed,
) -> None:
    stubbed.describe(["j1"], [job_with_stream()])
    stream = "defn/default/abc"
    stubbed.log_page("/custom/group", stream, ["hello", "world"], following="f/1")
    # An empty page is not the end: only a repeated token is.
    stubbed.log_page("/custom/group", stream, [], following="f/2", sent="f/1")
    stubbed.log_page("/custom/group", stream, ["again"], following="f/3", sent="f/2")
    stubbed.log_page("/custom/group", stream, [], following="f/3", sent="f/3")
    output = io.StringIO()
    frame = stubbed.monitor.log("j1", file=output)
    assert output.getvalue() == "hello\nworld\nagain\n"
    assert frame["message"].tolist() == ["hello", "world", "again"]
    assert list(frame.columns) == ["message", "timestamp", "ingestion_time"]
    assert frame["timestamp"].iloc[0] == pd.Timestamp(1_700_000_000_000, unit="ms", tz="UTC")


def test_log_uses_the_monitors_group_without_an_awslogs_configuration(stubbed: Stubbed) -> None:
    stubbed.describe(["j1"], [job_with_stream(group=None)])
    stubbed.log_page("/aws/batch/job", "defn/default/abc", ["x"], following="f/1")
    stubbed.log_page("/aws/batch/job", "defn/default/abc", [], following="f/1", sent="f/1")
    assert stubbed.monitor.log("j1", file=io.StringIO())["message"].tolist() == ["x"]


def test_reading_from_the_tail_starts_at_the_latest_page(stubbed: Stubbed) -> None:
    stubbed.describe(["j1"], [job_with_stream()])
    stubbed.log_page(
        "/custom/group", "defn/default/abc", ["last"], following="f/9", start_from_head=False
    )
    # AWS requires startFromHead=true whenever a forward token is sent.
    stubbed.log_page("/custom/group", "defn/default/abc", [], following="f/9", sent="f/9")
    frame = stubbed.monitor.log("j1", file=io.StringIO(), start_from_head=False)
    assert frame["message"].tolist() == ["last"]


def test_a_job_without_a_stream_gives_an_empty_frame_and_says_why(
    stubbed: Stubbed, caplog: pytest.LogCaptureFixture
) -> None:
    stubbed.describe(
        ["j1"], [detail("j1", "RUNNABLE", statusReason="CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY")]
    )
    output = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="batchcrew.aws.logs"):
        frame = stubbed.monitor.log("j1", file=output)
    assert frame.empty
    assert list(frame.columns) == ["message", "timestamp", "ingestion_time"]
    assert output.getvalue() == ""
    assert "job j1 is runnable and has no log stream yet" in caplog.text
    assert "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY" in caplog.text


def test_a_finished_job_without_a_stream_says_it_has_no_log(
    stubbed: Stubbed, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "CannotPullContainerError: pull image manifest has been retried 5 time(s)"
    stubbed.describe(["j1"], [detail("j1", "FAILED", statusReason=reason)])
    with caplog.at_level(logging.WARNING, logger="batchcrew.aws.logs"):
        assert stubbed.monitor.log("j1", file=io.StringIO()).empty
    assert f"job j1 is failed and has no log stream, so there is no log to read: {reason}" in (
        caplog.text
    )
    assert "yet" not in caplog.text


def test_a_missing_log_group_or_stream_is_reported_not_raised(
    stubbed: Stubbed, caplog: pytest.LogCaptureFixture
) -> None:
    stubbed.describe(["j1"], [job_with_stream("FAILED")])
    stubbed.logs.add_client_error(
        "get_log_events",
        "ResourceNotFoundException",
        "The specified log group does not exist.",
        400,
    )
    with caplog.at_level(logging.WARNING, logger="batchcrew.aws.logs"):
        frame = stubbed.monitor.log("j1", file=io.StringIO())
    assert frame.empty
    assert "job j1 is failed" in caplog.text
    assert "/custom/group" in caplog.text


def test_other_log_errors_are_raised_with_the_stream_named(stubbed: Stubbed) -> None:
    stubbed.describe(["j1"], [job_with_stream()])
    stubbed.logs.add_client_error("get_log_events", "AccessDeniedException", "not allowed", 400)
    with pytest.raises(AWSError, match="GetLogEvents in us-east-1 on log stream defn/default/abc"):
        stubbed.monitor.log("j1", file=io.StringIO())


def test_log_of_an_unknown_job_is_an_error(stubbed: Stubbed) -> None:
    stubbed.describe(["ghost"], [])
    with pytest.raises(
        AWSError, match="DescribeJobs in us-east-1 on job ghost failed: no such job"
    ):
        stubbed.monitor.log("ghost", file=io.StringIO())


def test_following_waits_for_the_stream_and_stops_after_the_job_ends(stubbed: Stubbed) -> None:
    stream = "defn/default/abc"
    stubbed.describe(["j1"], [detail("j1", "RUNNABLE")])
    stubbed.describe(["j1"], [job_with_stream("RUNNING")])
    stubbed.log_page("/custom/group", stream, ["one"], following="f/1")
    stubbed.log_page("/custom/group", stream, [], following="f/1", sent="f/1")
    stubbed.describe(["j1"], [job_with_stream("SUCCEEDED")])
    stubbed.log_page("/custom/group", stream, ["two"], following="f/2", sent="f/1")
    stubbed.log_page("/custom/group", stream, [], following="f/2", sent="f/2")
    events = list(stubbed.monitor.events("j1", follow=True, seconds_interval=0))
    assert [event.message for event in events] == ["one", "two"]
    assert all(isinstance(event, LogEvent) for event in events)
    assert events[0].logged_at.year == 2023


def test_event_arguments_are_checked(stubbed: Stubbed) -> None:
    with pytest.raises(ValueError, match="seconds_interval"):
        next(stubbed.monitor.events("j1", seconds_interval=-1))


def test_monitor_arguments_are_checked(aws: AWSConfig) -> None:
    with pytest.raises(TypeError, match="job_queue must be"):
        Monitor("defn", [], aws=aws)
    with pytest.raises(ValueError, match="job_definition"):
        Monitor("", "q", aws=aws)
    with pytest.raises(ValueError, match="job_definition must be a name of 1 to 128 letters"):
        Monitor("my definition", "q", aws=aws)
    with pytest.raises(ValueError, match="job_queue must be a name of 1 to 128 letters"):
        Monitor("defn", ["q1", "my queue"], aws=aws)
    with pytest.raises(TypeError, match="aws must be an AWSConfig"):
        Monitor("defn", "q", aws="us-east-1")  # type: ignore[arg-type]


def test_a_definition_arn_without_revision_means_every_revision() -> None:
    aws = AWSConfig(region=REGION, credentials=KEYS)
    unversioned = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/defn"
    matches = Monitor(unversioned, "q1", aws=aws)._matches_definition
    assert matches(definition_arn("defn", 3)) and matches(definition_arn("defn", 1))
    assert not matches(definition_arn("other", 3))
    only_three = Monitor(definition_arn("defn", 3), "q1", aws=aws)._matches_definition
    assert only_three(definition_arn("defn", 3)) and not only_three(definition_arn("defn", 1))
