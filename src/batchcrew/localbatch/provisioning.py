"""The AWS Batch environment a `LocalBatch` builds in moto, and the clients it builds it with.

Owns the names and settings of a fresh local Batch (IAM role and instance profile, VPC, subnet,
security group, managed compute environment, job queue, job definition), clients aimed at moto
with fake credentials and none of this machine's AWS configuration, and the listing of the jobs
still active. It starts no process and must never reach AWS.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchcrew.aws.validation import check_resource_name

__all__ = ["FAKE_CREDENTIALS", "BatchEnvironment", "active_job_ids", "moto_client"]

FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
"""The credentials every client of a LocalBatch uses; moto accepts any."""

ACTIVE_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
REGION_PATTERN = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")


@dataclass(frozen=True)
class BatchEnvironment:
    """The region and names of a local Batch, and the calls that create its resources.

    Example:
        >>> environment = BatchEnvironment("eu-west-1", "dry-run-queue", "dry-run")
        >>> environment.compute_environment
        'dry-run-queue-compute'
        >>> BatchEnvironment("Europe", "dry-run-queue", "dry-run")
        Traceback (most recent call last):
        ...
        ValueError: region must look like 'us-east-1', not 'Europe'
    """

    region: str
    job_queue: str
    job_definition: str

    def __post_init__(self) -> None:
        if not REGION_PATTERN.fullmatch(self.region):
            raise ValueError(f"region must look like 'us-east-1', not {self.region!r}")
        check_resource_name("job_queue", self.job_queue)
        check_resource_name("job_definition", self.job_definition)

    @property
    def compute_environment(self) -> str:
        """The name of the managed compute environment behind the job queue."""
        return f"{self.job_queue}-compute"

    def build(self, client: Callable[[str], Any]) -> None:
        """Create every resource in moto through `client(service)` (iam, ec2 and batch).

        Example:
            >>> from unittest import mock
            >>> client = mock.MagicMock()
            >>> BatchEnvironment("us-east-1", "dry-run-queue", "dry-run").build(lambda _: client)
            >>> client.create_job_queue.call_args.kwargs["jobQueueName"]
            'dry-run-queue'
        """
        iam = client("iam")
        ec2 = client("ec2")
        batch = client("batch")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
                for service in ("batch.amazonaws.com", "ec2.amazonaws.com")
            ],
        }
        role = iam.create_role(
            RoleName="batchcrew-local-batch-service",
            AssumeRolePolicyDocument=json.dumps(trust),
        )["Role"]
        profile = iam.create_instance_profile(InstanceProfileName="batchcrew-local-batch-instance")
        iam.add_role_to_instance_profile(
            InstanceProfileName="batchcrew-local-batch-instance", RoleName=role["RoleName"]
        )
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(
            GroupName="batchcrew-local-batch", Description="batchcrew local Batch", VpcId=vpc
        )["GroupId"]
        environment = batch.create_compute_environment(
            computeEnvironmentName=self.compute_environment,
            type="MANAGED",
            state="ENABLED",
            computeResources={
                "type": "EC2",
                "minvCpus": 0,
                "maxvCpus": 256,
                "desiredvCpus": 0,
                "instanceTypes": ["optimal"],
                "instanceRole": profile["InstanceProfile"]["Arn"],
                "subnets": [subnet],
                "securityGroupIds": [group],
            },
            serviceRole=role["Arn"],
        )["computeEnvironmentArn"]
        batch.create_job_queue(
            jobQueueName=self.job_queue,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )
        batch.register_job_definition(
            jobDefinitionName=self.job_definition,
            type="container",
            platformCapabilities=["EC2"],
            containerProperties={
                "image": "batchcrew-local",
                "command": [sys.executable, "-m", "batchcrew.worker"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "2048"},
                ],
            },
        )


def moto_client(service: str, region: str, endpoint_url: str, directory: str) -> Any:
    """A botocore client of `service` aimed at moto, reading no AWS profile or file.

    `directory` is where it looks for AWS configuration files, which must not exist there.

    Example:
        >>> batch = moto_client("batch", "us-east-1", "http://127.0.0.1:5000", "/nonexistent")
        >>> batch.meta.endpoint_url
        'http://127.0.0.1:5000'
    """
    import botocore.session

    missing = os.path.join(directory, "no-aws-config")
    session = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, missing, None),
            "credentials_file": (None, None, missing, None),
        }
    )
    return session.create_client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=FAKE_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=FAKE_CREDENTIALS["aws_secret_access_key"],
    )


def active_job_ids(batch: Any) -> set[str]:
    """Ids of the jobs not yet finished on every queue; ending an array parent ends its children.

    Example:
        >>> isinstance(active_job_ids(local.aws_config().client("batch")), set)
        True
    """
    job_ids: set[str] = set()
    for page in batch.get_paginator("describe_job_queues").paginate():
        for queue in page["jobQueues"]:
            for status in ACTIVE_STATUSES:
                pages = batch.get_paginator("list_jobs").paginate(
                    jobQueue=queue["jobQueueArn"], jobStatus=status
                )
                for listing in pages:
                    job_ids.update(job["jobId"] for job in listing["jobSummaryList"])
    return job_ids
