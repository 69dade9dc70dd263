"""Job definition requests and answers, with botocore Stubber (batchcrew.aws.definition)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.definition import JobDefinition
from batchcrew.errors import AWSError

REGION = "eu-west-1"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
JOB_ROLE = "arn:aws:iam::123456789012:role/batch-job"
EXECUTION_ROLE = "arn:aws:iam::123456789012:role/ecs-execution"


def arn(revision: int) -> str:
    return f"arn:aws:batch:{REGION}:123456789012:job-definition/defn:{revision}"


def revision_record(revision: int, status: str = "ACTIVE", **extra: Any) -> dict[str, Any]:
    return {
        "jobDefinitionName": "defn",
        "jobDefinitionArn": arn(revision),
        "revision": revision,
        "status": status,
        "type": "container",
        "containerProperties": {"image": "python:3.11-slim"},
        "platformCapabilities": ["EC2"],
        **extra,
    }


@pytest.fixture(autouse=True)
def no_machine_aws_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(scope="module")
def aws() -> Iterator[AWSConfig]:
    """One configuration (and so one client) for the module: clients are slow to make."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.delenv("AWS_PROFILE", raising=False)
        config = AWSConfig(region=REGION, credentials=KEYS)
        config.client("batch")
        yield config


@pytest.fixture
def definition(aws: AWSConfig) -> JobDefinition:
    return JobDefinition("defn", "q1", log_group="/team/batch", aws=aws)


@pytest.fixture
def batch(definition: JobDefinition) -> Iterator[Stubber]:
    with Stubber(definition.aws.client("batch")) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def registered(revision: int) -> dict[str, Any]:
    return {"jobDefinitionName": "defn", "jobDefinitionArn": arn(revision), "revision": revision}


def describe_page(records: list[dict[str, Any]], following: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"jobDefinitions": records}
    if following is not None:
        page["nextToken"] = following
    return page


# Register --------------------------------------------------------------------------------------


def test_register_on_ec2_sends_everything_including_both_roles(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response(
        "register_job_definition",
        registered(4),
        {
            "jobDefinitionName": "defn",
            "type": "container",
            "platformCapabilities": ["EC2"],
            "containerProperties": {
                "image": "python:3.11-slim",
                "resourceRequirements": [
                    {"type": "VCPU", "value": "2"},
                    {"type": "MEMORY", "value": "7630"},
                    {"type": "GPU", "value": "1"},
                ],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": "/team/batch",
                        "awslogs-region": REGION,
                        "awslogs-stream-prefix": "defn",
                    },
                },
                "jobRoleArn": JOB_ROLE,
                "executionRoleArn": EXECUTION_ROLE,
                "environment": [{"name": "STAGE", "value": "test"}],
            },
            "timeout": {"attemptDurationSeconds": 3600},
            "schedulingPriority": 3,
            "tags": {"team": "models"},
            "propagateTags": True,
            "parameters": {"input": "s3://bucket/key"},
        },
    )
    frame = definition.register(
        image="python:3.11-slim",
        memory=8,
        cpus=2,
        gpus=1,
        seconds_timeout=3600,
        scheduling_priority=3,
        tags={"team": "models"},
        propagate_tags=True,
        parameters={"input": "s3://bucket/key"},
        job_role_arn=JOB_ROLE,
        execution_role_arn=EXECUTION_ROLE,
        environment={"STAGE": "test"},
    )
    assert frame.to_dict(orient="records") == [{"name": "defn", "revision": 4, "arn": arn(4)}]
    assert str(frame["revision"].dtype) == "int64"


def test_a_minimal_registration_sends_only_what_was_given(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response(
        "register_job_definition",
        registered(1),
        {
            "jobDefinitionName": "defn",
            "type": "container",
            "platformCapabilities": ["EC2"],
            "containerProperties": {"image": "alpine", "logConfiguration": ANY},
        },
    )
    definition.register(image="alpine")


def test_register_on_fargate_sends_execution_role_and_public_ip(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response(
        "register_job_definition",
        registered(2),
        {
            "jobDefinitionName": "defn",
            "type": "container",
            "platformCapabilities": ["FARGATE"],
            "containerProperties": {
                "image": "python:3.11-slim",
                "resourceRequirements": [
                    {"type": "VCPU", "value": "0.25"},
                    {"type": "MEMORY", "value": "512"},
                ],
                "logConfiguration": ANY,
                "executionRoleArn": EXECUTION_ROLE,
                "networkConfiguration": {"assignPublicIp": "ENABLED"},
            },
        },
    )
    definition.register(
        image="python:3.11-slim",
        platform_capabilities="fargate",
        cpus=0.25,
        memory=0.5,
        memory_units="GiB",
        execution_role_arn=EXECUTION_ROLE,
        assign_public_ip=True,
    )


@pytest.mark.parametrize(
    ("keywords", "error", "message"),
    [
        ({"platform_capabilities": "EKS"}, ValueError, "must be one of EC2, FARGATE, not 'EKS'"),
        (
            {"platform_capabilities": "FARGATE", "cpus": 1, "memory": 2, "memory_units": "GiB"},
            ValueError,
            "execution_role_arn: Fargate needs an execution role",
        ),
        (
            {
                "platform_capabilities": "FARGATE",
                "cpus": 1,
                "memory": 16,
                "memory_units": "GiB",
                "execution_role_arn": EXECUTION_ROLE,
            },
            ValueError,
            "does not fit cpus=1 on Fargate",
        ),
        (
            {"platform_capabilities": "FARGATE", "gpus": 1, "execution_role_arn": EXECUTION_ROLE},
            ValueError,
            "Fargate does not support GPUs",
        ),
        ({"cpus": 1.5}, ValueError, "cpus must be a whole number on EC2"),
        ({"assign_public_ip": True}, ValueError, "assign_public_ip applies to Fargate only"),
        ({"memory": 0}, ValueError, "memory must be a positive"),
        ({"memory": -1, "memory_units": "MiB"}, ValueError, "memory must be a positive"),
        ({"job_role_arn": "my-role"}, ValueError, "job_role_arn must be an IAM role ARN"),
        ({"seconds_timeout": 10}, ValueError, "seconds_timeout must be at least 60"),
        ({"scheduling_priority": -1}, ValueError, "scheduling_priority must be at least 0"),
        ({"tags": {"a": 1}}, TypeError, r"tags\['a'\] must be a string"),
        ({"image": ""}, ValueError, "image must be a non-empty string"),
    ],
)
def test_bad_registrations_are_refused_before_any_call(
    definition: JobDefinition,
    batch: Stubber,
    keywords: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    arguments: dict[str, Any] = {"image": "alpine", **keywords}
    with pytest.raises(error, match=message):
        definition.register(**arguments)


def test_a_refused_registration_names_the_definition_and_region(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_client_error("register_job_definition", "ClientException", "bad image", 400)
    with pytest.raises(
        AWSError, match=r"RegisterJobDefinition in eu-west-1 on job definition defn"
    ):
        definition.register(image="alpine")


# Describe --------------------------------------------------------------------------------------


def test_describe_pages_through_every_revision_highest_first(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(1, "INACTIVE"), revision_record(2)], following="t1"),
        {"jobDefinitionName": "defn"},
    )
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(3, schedulingPriority=7, propagateTags=False)]),
        {"jobDefinitionName": "defn", "nextToken": "t1"},
    )
    frame = definition.describe()
    assert frame["revision"].tolist() == [3, 2, 1]
    assert frame["status"].tolist() == ["active", "active", "inactive"]
    assert list(frame.columns) == [
        "name", "arn", "revision", "status", "type", "scheduling_priority", "parameters",
        "retry_strategy", "container_properties", "timeout", "node_properties", "tags",
        "propagate_tags", "platform_capabilities", "eks_properties",
        "container_orchestration_type",
    ]  # fmt: skip
    first = frame.iloc[0]
    assert first["scheduling_priority"] == 7
    assert not first["propagate_tags"]
    assert first["platform_capabilities"] == "EC2"
    assert first["container_properties"] == {"image": "python:3.11-slim"}
    assert frame["scheduling_priority"].isna().tolist() == [False, True, True]


def test_describe_active_asks_aws_for_active_revisions(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(2), revision_record(5)]),
        {"jobDefinitionName": "defn", "status": "ACTIVE"},
    )
    assert definition.describe(active=True)["revision"].tolist() == [5, 2]


def test_describe_one_revision(definition: JobDefinition, batch: Stubber) -> None:
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(1), revision_record(2)]),
        {"jobDefinitionName": "defn"},
    )
    assert definition.describe(revision=2)["arn"].tolist() == [arn(2)]


def test_an_unknown_definition_describes_as_an_empty_frame(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response("describe_job_definitions", describe_page([]), {"jobDefinitionName": "defn"})
    frame = definition.describe()
    assert frame.empty
    assert "container_properties" in frame.columns


def test_describe_arguments_are_checked(definition: JobDefinition, batch: Stubber) -> None:
    with pytest.raises(ValueError, match="revision must be at least 1"):
        definition.describe(revision=0)
    with pytest.raises(TypeError, match="active must be True or False"):
        definition.describe(active="yes")  # type: ignore[arg-type]


# Deregister ------------------------------------------------------------------------------------


def test_deregister_defaults_to_the_highest_active_revision(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(2), revision_record(3)]),
        {"jobDefinitionName": "defn", "status": "ACTIVE"},
    )
    batch.add_response("deregister_job_definition", {}, {"jobDefinition": "defn:3"})
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(2), revision_record(3, "INACTIVE")]),
        {"jobDefinitionName": "defn"},
    )
    frame = definition.deregister()
    assert frame[["revision", "status"]].values.tolist() == [[3, "inactive"]]


def test_deregister_a_given_revision(definition: JobDefinition, batch: Stubber) -> None:
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(1)]),
        {"jobDefinitionName": "defn"},
    )
    batch.add_response("deregister_job_definition", {}, {"jobDefinition": "defn:1"})
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(1, "INACTIVE")]),
        {"jobDefinitionName": "defn"},
    )
    assert definition.deregister(revision=1)["status"].tolist() == ["inactive"]


def test_deregistering_an_unknown_revision_is_an_error(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response(
        "describe_job_definitions",
        describe_page([revision_record(1)]),
        {"jobDefinitionName": "defn"},
    )
    with pytest.raises(AWSError) as caught:
        definition.deregister(revision=9)
    assert str(caught.value) == (
        "DeregisterJobDefinition in eu-west-1 on job definition defn:9 failed: no such revision"
    )


def test_deregistering_without_an_active_revision_is_an_error(
    definition: JobDefinition, batch: Stubber
) -> None:
    batch.add_response(
        "describe_job_definitions",
        describe_page([]),
        {"jobDefinitionName": "defn", "status": "ACTIVE"},
    )
    with pytest.raises(AWSError, match="it has no active revision"):
        definition.deregister()


# Submit and construction -----------------------------------------------------------------------


def test_submit_uses_this_definition_and_queue(definition: JobDefinition, batch: Stubber) -> None:
    batch.add_response(
        "submit_job",
        {"jobName": "try-1", "jobId": "id-1", "jobArn": "arn:aws:batch:eu-west-1:1:job/id-1"},
        {
            "jobName": "try-1",
            "jobQueue": "q1",
            "jobDefinition": "defn",
            "containerOverrides": {
                "command": ["sleep", "300"],
                "resourceRequirements": [{"type": "MEMORY", "value": "2048"}],
            },
        },
    )
    frame = definition.submit(["sleep", "300"], name="try-1", memory=2, memory_units="GiB")
    assert frame["id"].tolist() == ["id-1"]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (("defn:3", "q"), ValueError, "job_definition must have 1 to 128"),
        (("defn", ""), ValueError, "job_queue must be a non-empty string"),
        (("defn", "q", ""), ValueError, "log_group must be a non-empty string"),
    ],
)
def test_constructor_checks_its_arguments(
    aws: AWSConfig, arguments: tuple[str, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        JobDefinition(*arguments, aws=aws)  # type: ignore[misc]


def test_without_a_region_the_constructor_says_how_to_set_one() -> None:
    with pytest.raises(ValueError, match="AWS_REGION"):
        JobDefinition("defn", "q")
