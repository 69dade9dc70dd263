"""AWS Batch job definitions by name: register a container revision, describe, deregister.

Owns RegisterJobDefinition, DescribeJobDefinitions and DeregisterJobDefinition. Submitting and
watching jobs belongs to `monitor`; this module only hands `submit` over to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.frames import ColumnKind, table
from batchcrew.aws.logs import DEFAULT_LOG_GROUP
from batchcrew.aws.monitor import Monitor
from batchcrew.aws.resources import check_fargate_resources, resource_requirements
from batchcrew.aws.validation import (
    check_int,
    check_optional_bool,
    check_platform,
    check_priority,
    check_queue_reference,
    check_resource_name,
    check_role_arn,
    check_text,
    environment_list,
    shared_request_fields,
)
from batchcrew.errors import AWSError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["JobDefinition"]

logger = logging.getLogger("batchcrew.aws.definition")


REGISTER_COLUMNS: dict[str, ColumnKind] = {"name": "text", "revision": "integer", "arn": "text"}
DESCRIBE_COLUMNS: dict[str, ColumnKind] = {
    "name": "text",
    "arn": "text",
    "revision": "integer",
    "status": "text",
    "type": "text",
    "scheduling_priority": "nullable_integer",
    "parameters": "object",
    "retry_strategy": "object",
    "container_properties": "object",
    "timeout": "object",
    "node_properties": "object",
    "tags": "object",
    "propagate_tags": "boolean",
    "platform_capabilities": "text",
    "eks_properties": "object",
    "container_orchestration_type": "text",
}


class JobDefinition:
    """Register, describe and deregister revisions of one AWS Batch job definition.

    The definition need not exist yet. `job_queue` is where `submit` sends test jobs and
    `log_group` is the CloudWatch group `register` writes into the `awslogs` configuration.

    Example:
        >>> definition = JobDefinition("fit-models", local.job_queue, aws=local.aws_config())
        >>> registered = definition.register(image="python:3.12", memory=4, memory_units="GiB",
        ...                                  cpus=2)
        >>> revision = registered["revision"].iloc[0]
        >>> definition.describe(revision=revision)[["name", "status"]].values.tolist()
        [['fit-models', 'active']]
        >>> definition.deregister(revision=revision)["status"].tolist()
        ['inactive']
    """

    def __init__(
        self,
        job_definition: str,
        job_queue: str,
        log_group: str = DEFAULT_LOG_GROUP,
        aws: AWSConfig | None = None,
    ) -> None:
        self._job_definition = check_resource_name("job_definition", job_definition)
        self._job_queue = check_queue_reference(job_queue)
        self._log_group = check_text("log_group", log_group)
        self._aws = AWSConfig.given_or_default(aws)

    @property
    def job_definition(self) -> str:
        """The job definition's name."""
        return self._job_definition

    @property
    def job_queue(self) -> str:
        """The job queue `submit` uses."""
        return self._job_queue

    @property
    def log_group(self) -> str:
        """The CloudWatch log group new revisions log to."""
        return self._log_group

    @property
    def aws(self) -> AWSConfig:
        """The AWS configuration (region, endpoint, clients)."""
        return self._aws

    def __repr__(self) -> str:
        return (
            f"JobDefinition(job_definition={self._job_definition!r}, "
            f"job_queue={self._job_queue!r}, region={self._aws.region!r})"
        )

    def register(
        self,
        image: str,
        platform_capabilities: str = "EC2",
        memory: float | None = None,
        memory_units: str = "gigabytes",
        cpus: float | None = None,
        gpus: int | None = None,
        seconds_timeout: int | None = None,
        scheduling_priority: int | None = None,
        tags: Mapping[str, str] | None = None,
        propagate_tags: bool | None = None,
        parameters: Mapping[str, str] | None = None,
        job_role_arn: str | None = None,
        execution_role_arn: str | None = None,
        environment: Mapping[str, str] | None = None,
        assign_public_ip: bool | None = None,
    ) -> pd.DataFrame:
        """Register a new container revision that logs to CloudWatch; returns `name, revision, arn`.

        `image` is a Docker Hub name or an ECR URI. `platform_capabilities` is `EC2` (whole
        vCPUs, GPUs allowed) or `FARGATE` (vCPU/memory pairs from AWS's Fargate table, no GPUs,
        `execution_role_arn` required, `assign_public_ip` to reach public registries).
        `job_role_arn` is what the job's code may do on AWS; `execution_role_arn` is what the
        agent needs to pull the image and write logs. Logs go to `log_group` with the
        definition name as stream prefix.

        Example:
            >>> registered = definition.register(
            ...     image="python:3.11-slim", platform_capabilities="FARGATE",
            ...     cpus=1, memory=2, memory_units="GiB", assign_public_ip=True,
            ...     execution_role_arn="arn:aws:iam::123456789012:role/ecsTaskExecution",
            ... )
            >>> list(registered.columns)
            ['name', 'revision', 'arn']
        """
        image = check_text("image", image)
        platform = check_platform(platform_capabilities)
        requirements = resource_requirements(cpus, gpus, memory, memory_units)
        public_ip = check_optional_bool("assign_public_ip", assign_public_ip)
        job_role = check_role_arn("job_role_arn", job_role_arn)
        execution_role = check_role_arn("execution_role_arn", execution_role_arn)
        if platform == "FARGATE":
            check_fargate_resources(requirements)
            if execution_role is None:
                raise ValueError(
                    "execution_role_arn: Fargate needs an execution role that lets the agent "
                    "pull the image and write logs"
                )
        else:
            if cpus is not None and float(cpus) != int(cpus):
                raise ValueError(f"cpus must be a whole number on EC2, not {cpus}")
            if public_ip is not None:
                raise ValueError("assign_public_ip applies to Fargate only; leave it None on EC2")
        container: dict[str, Any] = {
            "image": image,
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": self._log_group,
                    "awslogs-region": self._aws.region,
                    "awslogs-stream-prefix": self._job_definition,
                },
            },
        }
        if requirements:
            container["resourceRequirements"] = requirements
        if job_role is not None:
            container["jobRoleArn"] = job_role
        if execution_role is not None:
            container["executionRoleArn"] = execution_role
        variables = environment_list(environment)
        if variables:
            container["environment"] = variables
        if public_ip is not None:
            container["networkConfiguration"] = {
                "assignPublicIp": "ENABLED" if public_ip else "DISABLED"
            }
        request: dict[str, Any] = {
            "jobDefinitionName": self._job_definition,
            "type": "container",
            "containerProperties": container,
            "platformCapabilities": [platform],
        }
        priority = check_priority("scheduling_priority", scheduling_priority)
        if priority is not None:
            request["schedulingPriority"] = priority
        request.update(shared_request_fields(seconds_timeout, tags, propagate_tags, parameters))
        batch = self._aws.client("batch")
        response = self._aws.call(
            "RegisterJobDefinition",
            f"job definition {self._job_definition}",
            batch.register_job_definition,
            **request,
        )
        logger.info(
            "registered job definition %s revision %d",
            response["jobDefinitionName"],
            response["revision"],
        )
        row = {
            "name": response["jobDefinitionName"],
            "revision": response["revision"],
            "arn": response["jobDefinitionArn"],
        }
        return table([row], REGISTER_COLUMNS)

    def describe(self, revision: int | None = None, active: bool = False) -> pd.DataFrame:
        """One row per revision, highest first; only `revision`, or only active ones if asked.

        Columns: `name, arn, revision, status, type, scheduling_priority, parameters,
        retry_strategy, container_properties, timeout, node_properties, tags, propagate_tags,
        platform_capabilities, eks_properties, container_orchestration_type`. A definition
        that does not exist gives an empty frame.

        Example:
            >>> registered = definition.register(image="python:3.12", cpus=1, memory=1)
            >>> revision = registered["revision"].iloc[0]
            >>> set(definition.describe(active=True)["status"])
            {'active'}
            >>> revision in set(definition.describe(active=True)["revision"])
            True
        """
        if revision is not None:
            revision = check_int("revision", revision, minimum=1)
        if not isinstance(active, bool):
            raise TypeError(f"active must be True or False, not {type(active).__name__}")
        batch = self._aws.client("batch")
        paginator = batch.get_paginator("describe_job_definitions")
        request: dict[str, Any] = {"jobDefinitionName": self._job_definition}
        if active:
            request["status"] = "ACTIVE"

        def every_page() -> list[Mapping[str, Any]]:
            found: list[Mapping[str, Any]] = []
            for page in paginator.paginate(**request):
                found.extend(page.get("jobDefinitions", []))
            return found

        found = self._aws.call(
            "DescribeJobDefinitions", f"job definition {self._job_definition}", every_page
        )
        rows = [
            _definition_row(each)
            for each in found
            if each.get("jobDefinitionName") == self._job_definition
            and (revision is None or each.get("revision") == revision)
            and (not active or each.get("status") == "ACTIVE")
        ]
        rows.sort(key=lambda row: row["revision"], reverse=True)
        return table(rows, DESCRIBE_COLUMNS)

    def deregister(self, revision: int | None = None) -> pd.DataFrame:
        """Deregister `revision` (default: the highest active one); returns its row afterwards.

        A revision that does not exist, or no active revision when `revision` is None, is an
        `AWSError` naming the definition and the region.

        Example:
            >>> registered = definition.register(image="python:3.12", cpus=1, memory=1)
            >>> revision = registered["revision"].iloc[0]
            >>> definition.deregister()[["revision", "status"]].values.tolist() == [
            ...     [revision, "inactive"]]
            True
        """
        if revision is None:
            current = self.describe(active=True)
            if current.empty:
                raise AWSError(
                    "DeregisterJobDefinition",
                    self._aws.region,
                    f"job definition {self._job_definition}",
                    "it has no active revision",
                )
            revision = int(current["revision"].max())
        else:
            revision = check_int("revision", revision, minimum=1)
            if self.describe(revision=revision).empty:
                raise AWSError(
                    "DeregisterJobDefinition",
                    self._aws.region,
                    f"job definition {self._job_definition}:{revision}",
                    "no such revision",
                )
        identifier = f"{self._job_definition}:{revision}"
        batch = self._aws.client("batch")
        self._aws.call(
            "DeregisterJobDefinition",
            f"job definition {identifier}",
            batch.deregister_job_definition,
            jobDefinition=identifier,
        )
        logger.info("deregistered job definition %s", identifier)
        return self.describe(revision=revision)

    def submit(
        self,
        command: Sequence[str],
        name: str | None = None,
        cpus: float | None = None,
        gpus: int | None = None,
        memory: float | None = None,
        memory_units: str = "gigabytes",
        environment: Mapping[str, str] | None = None,
        *,
        seconds_timeout: int | None = None,
        share_identifier: str | None = None,
        scheduling_priority_override: int | None = None,
        tags: Mapping[str, str] | None = None,
        propagate_tags: bool | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        """Submit a job of this definition to the queue, to try the environment; `name, id, arn`.

        `name` defaults to `batchcrew-job-` and eight random hex digits. Other arguments are
        those of `Monitor.submit`.

        Example:
            >>> definition.register(image="python:3.12", cpus=1, memory=1, memory_units="GiB")
            ...     # doctest: +ELLIPSIS
                        name  revision                                                arn
            0  my-definition  ...
            >>> job = definition.submit(["python", "-c", "print('it works')"], memory=2)
            >>> job["name"].str.startswith("batchcrew-job-").tolist()
            [True]
        """
        monitor = Monitor(self._job_definition, self._job_queue, self._log_group, self._aws)
        return monitor.submit(
            command,
            name,
            cpus=cpus,
            gpus=gpus,
            memory=memory,
            memory_units=memory_units,
            environment=environment,
            seconds_timeout=seconds_timeout,
            share_identifier=share_identifier,
            scheduling_priority_override=scheduling_priority_override,
            tags=tags,
            propagate_tags=propagate_tags,
            parameters=parameters,
        )


def _definition_row(found: Mapping[str, Any]) -> dict[str, Any]:
    platforms: Sequence[str] = found.get("platformCapabilities") or []
    return {
        "name": found.get("jobDefinitionName"),
        "arn": found.get("jobDefinitionArn"),
        "revision": found.get("revision"),
        "status": str(found.get("status", "")).lower() or None,
        "type": found.get("type"),
        "scheduling_priority": found.get("schedulingPriority"),
        "parameters": found.get("parameters"),
        "retry_strategy": found.get("retryStrategy"),
        "container_properties": found.get("containerProperties"),
        "timeout": found.get("timeout"),
        "node_properties": found.get("nodeProperties"),
        "tags": found.get("tags"),
        "propagate_tags": found.get("propagateTags"),
        "platform_capabilities": ", ".join(platforms) or None,
        "eks_properties": found.get("eksProperties"),
        "container_orchestration_type": found.get("containerOrchestrationType"),
    }
