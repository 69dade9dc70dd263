"""Job definitions against a LocalBatch: moto's Batch API, jobs run as local processes.

Revisions are registered, described and deregistered through moto; a revision's jobs really run
(batchcrew.aws.definition).
"""

from __future__ import annotations

import io
import json

import boto3
import pytest

from batchcrew.aws.definition import JobDefinition
from batchcrew.aws.monitor import Monitor
from batchcrew.errors import AWSError
from batchcrew.localbatch import LocalBatch
from tests.support.polling import wait_until

ECS_TASKS_MAY_ASSUME = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def definition_for(local_batch: LocalBatch, name: str = "defn") -> JobDefinition:
    return JobDefinition(name, local_batch.job_queue, aws=local_batch.aws_config())


def new_role(local_batch: LocalBatch, name: str) -> str:
    """An IAM role that ECS tasks may assume, created on the LocalBatch; returns its ARN."""
    iam = boto3.client("iam", **local_batch.client_kwargs())  # type: ignore[call-overload]
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(ECS_TASKS_MAY_ASSUME))
    arn: str = role["Role"]["Arn"]
    return arn


def test_three_revisions_are_registered_described_and_deregistered(
    local_batch: LocalBatch,
) -> None:
    job_role = new_role(local_batch, "defn-job")
    execution_role = new_role(local_batch, "defn-execution")
    definition = definition_for(local_batch)
    registered = [
        definition.register(
            image="python:3.11-slim",
            memory=memory,
            memory_units="GiB",
            cpus=2,
            seconds_timeout=600,
            tags={"revision": str(n)},
            job_role_arn=job_role,
            execution_role_arn=execution_role,
            environment={"STAGE": "test"},
        )
        for n, memory in enumerate((1, 2, 4), start=1)
    ]
    assert [frame["revision"].iloc[0] for frame in registered] == [1, 2, 3]
    assert registered[2]["arn"].iloc[0].endswith(":job-definition/defn:3")
    assert list(registered[0].columns) == ["name", "revision", "arn"]

    every = definition.describe()
    assert every["revision"].tolist() == [3, 2, 1]
    assert every["status"].tolist() == ["active"] * 3
    first = every.set_index("revision").loc[1]
    properties = first["container_properties"]
    assert properties["image"] == "python:3.11-slim"
    assert {"type": "MEMORY", "value": "1024"} in properties["resourceRequirements"]
    assert {"type": "VCPU", "value": "2"} in properties["resourceRequirements"]
    assert properties["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": "/aws/batch/job",
            "awslogs-region": local_batch.region,
            "awslogs-stream-prefix": "defn",
        },
    }
    # Unlike the R original, both roles really reach AWS, each in its own place.
    assert properties["jobRoleArn"] == job_role
    assert properties["executionRoleArn"] == execution_role
    assert properties["environment"] == [{"name": "STAGE", "value": "test"}]
    assert first["timeout"] == {"attemptDurationSeconds": 600}
    assert first["tags"] == {"revision": "1"}
    assert first["platform_capabilities"] == "EC2"
    assert first["type"] == "container"

    assert definition.describe(active=True)["revision"].tolist() == [3, 2, 1]

    dropped = definition.deregister()
    assert dropped[["revision", "status"]].values.tolist() == [[3, "inactive"]]
    assert definition.describe(active=True)["revision"].tolist() == [2, 1]

    dropped = definition.deregister(revision=1)
    assert dropped[["revision", "status"]].values.tolist() == [[1, "inactive"]]
    assert definition.describe(active=True)["revision"].tolist() == [2]

    every = definition.describe()
    assert every[["revision", "status"]].values.tolist() == [
        [3, "inactive"],
        [2, "active"],
        [1, "inactive"],
    ]
    assert definition.describe(revision=2)["status"].tolist() == ["active"]


def test_a_fargate_revision_is_registered_with_its_execution_role(
    local_batch: LocalBatch,
) -> None:
    execution_role = new_role(local_batch, "on-fargate-execution")
    definition = definition_for(local_batch, "on-fargate")
    definition.register(
        image="python:3.11-slim",
        platform_capabilities="FARGATE",
        cpus=0.5,
        memory=1024,
        memory_units="MiB",
        execution_role_arn=execution_role,
        assign_public_ip=True,
    )
    row = definition.describe().iloc[0]
    assert row["platform_capabilities"] == "FARGATE"
    properties = row["container_properties"]
    assert properties["executionRoleArn"] == execution_role
    assert {"type": "VCPU", "value": "0.5"} in properties["resourceRequirements"]
    assert properties["networkConfiguration"] == {"assignPublicIp": "ENABLED"}


def test_unknown_definitions_and_revisions(local_batch: LocalBatch) -> None:
    unknown = definition_for(local_batch, "never-registered")
    assert unknown.describe().empty
    with pytest.raises(AWSError) as caught:
        unknown.deregister()
    assert str(caught.value) == (
        "DeregisterJobDefinition in us-east-1 on job definition never-registered failed: "
        "it has no active revision"
    )
    with pytest.raises(AWSError) as caught:
        unknown.submit(["true"])
    assert caught.value.operation == "SubmitJob"
    assert caught.value.region == "us-east-1"
    assert "never-registered" in str(caught.value)

    known = definition_for(local_batch)
    known.register(image="alpine", cpus=1, memory=512, memory_units="MiB")
    with pytest.raises(AWSError, match="job definition defn:7 failed: no such revision"):
        known.deregister(revision=7)


def test_submit_from_a_definition_runs_a_job_the_monitor_sees(local_batch: LocalBatch) -> None:
    definition = definition_for(local_batch)
    definition.register(
        image="python:3.11-slim",
        cpus=1,
        memory=0.5,
        memory_units="GiB",
        environment={"STAGE": "test"},
    )
    command = ["python", "-c", "import os; print('hello from', os.environ['STAGE'])"]
    submitted = definition.submit(command, memory=1, memory_units="GiB")
    assert submitted["name"].iloc[0].startswith("batchcrew-job-")
    job_id = submitted["id"].iloc[0]
    monitor = Monitor("defn", local_batch.job_queue, aws=local_batch.aws_config())
    details = monitor.status(job_id)["details"].iloc[0]
    assert details["container"]["command"] == command
    assert job_id in set(monitor.jobs()["id"])

    # The job really runs, with the revision's environment, and its output reaches CloudWatch.
    wait_until(lambda: job_id in set(monitor.succeeded()["id"]), seconds=30)
    frame = monitor.log(job_id, file=io.StringIO())
    assert frame["message"].tolist() == ["hello from test"]


def test_bad_input_is_refused_before_reaching_aws(local_batch: LocalBatch) -> None:
    definition = definition_for(local_batch)
    with pytest.raises(ValueError, match="platform_capabilities must be one of EC2, FARGATE"):
        definition.register(image="alpine", platform_capabilities="LAMBDA")
    with pytest.raises(ValueError, match="memory must be a positive"):
        definition.register(image="alpine", memory=0)
    assert definition.describe().empty  # nothing was registered
