"""A moto server on 127.0.0.1 with a ready AWS Batch environment, for the control-plane tests.

Nothing here reaches AWS: every client has fake keys and the local endpoint. Import the fixtures
into a test module with `from tests.aws.controlplane_fixtures import ...  # noqa: F401`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from batchcrew.aws.config import AWSConfig

REGION = "us-east-1"
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
JOB_QUEUE = "test-queue"


class SilentDockerEngine:
    """Listens where moto looks for Docker and never answers.

    By default every connection is closed at once, so a moto job fails as soon as it reaches
    RUNNING. With `hold = True` connections stay open, so jobs wait in RUNNING until `release()`.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.hold = False
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self.hold:
                    self._held.append(connection)
                else:
                    connection.close()

    def release(self) -> None:
        """Stop holding: close every held connection, so waiting jobs fail."""
        with self._lock:
            self.hold = False
            held, self._held = self._held, []
        for connection in held:
            connection.close()

    def close(self) -> None:
        self.release()
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()


@dataclass(frozen=True)
class BatchEnvironment:
    """The moto endpoint and the names of the compute environment and job queue made on it."""

    endpoint_url: str
    region: str
    job_queue: str
    job_queue_arn: str
    role_arn: str
    docker: SilentDockerEngine | None = None

    def aws_config(self, **keywords: Any) -> AWSConfig:
        """An `AWSConfig` for the moto server, with fake keys."""
        return AWSConfig(
            region=self.region,
            endpoint_url=self.endpoint_url,
            credentials=FAKE_CREDENTIALS,
            **keywords,
        )

    def client(self, service_name: str) -> Any:
        """A plain boto3 client for the moto server, for setting things up."""
        return boto3.client(
            service_name,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            **FAKE_CREDENTIALS,
        )

    def seconds_per_job_state(self, seconds: float) -> None:
        """Make moto jobs stay `seconds` in each state instead of walking through at once."""
        _post(
            self.endpoint_url,
            "/moto-api/state-manager/set-transition",
            {"model_name": "batch::job", "transition": {"progression": "time", "seconds": seconds}},
        )

    def job_states_at_full_speed(self) -> None:
        """Undo `seconds_per_job_state`: moto jobs walk through their states at once again."""
        _post(
            self.endpoint_url,
            "/moto-api/state-manager/unset-transition",
            {"model_name": "batch::job"},
        )

    def jobs_succeed_at_submit(self, enabled: bool = True) -> None:
        """moto's Docker-less Batch: a job is SUCCEEDED (with a log stream name) once submitted."""
        _post(self.endpoint_url, "/moto-api/config", {"batch": {"use_docker": not enabled}})

    def cli_environment(self) -> dict[str, str]:
        """Environment for a `batchcrew` subprocess: this server, fake keys, no AWS files."""
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "BATCHCREW_"))
        }
        environment.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
                "BATCHCREW_ENDPOINT_URL": self.endpoint_url,
                "BATCHCREW_REGION": self.region,
                "BATCHCREW_QUEUE": self.job_queue,
            }
        )
        return environment


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _post(endpoint_url: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        endpoint_url + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture(scope="session", name="controlplane_moto_server")
def controlplane_moto_server_fixture() -> Iterator[str]:
    """A threaded moto server on a free port of 127.0.0.1; yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(name="batch_env")
def batch_env_fixture(
    controlplane_moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BatchEnvironment]:
    """A fresh moto state with IAM role, VPC, subnet, security group, compute env and queue.

    Docker is pointed at a `SilentDockerEngine`, so moto's jobs walk the states and then fail
    quickly (or wait in RUNNING while it holds) instead of looking for a real engine.
    """
    docker = SilentDockerEngine()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{docker.port}")
    for variable in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    endpoint_url = controlplane_moto_server
    _post(endpoint_url, "/moto-api/reset", {})
    try:
        yield _build(endpoint_url, docker)
    finally:
        docker.close()
        _post(
            endpoint_url, "/moto-api/state-manager/unset-transition", {"model_name": "batch::job"}
        )
        _post(endpoint_url, "/moto-api/config", {"batch": {"use_docker": True}})
        _post(endpoint_url, "/moto-api/reset", {})


def _build(endpoint_url: str, docker: SilentDockerEngine) -> BatchEnvironment:
    bare = BatchEnvironment(endpoint_url, REGION, JOB_QUEUE, "", "")
    iam, ec2, batch = bare.client("iam"), bare.client("ec2"), bare.client("batch")
    role_arn = iam.create_role(RoleName="batch-test-role", AssumeRolePolicyDocument="{}")["Role"][
        "Arn"
    ]
    profile_arn = iam.create_instance_profile(InstanceProfileName="batch-test-profile")[
        "InstanceProfile"
    ]["Arn"]
    iam.add_role_to_instance_profile(
        InstanceProfileName="batch-test-profile", RoleName="batch-test-role"
    )
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="batch-test", Description="test", VpcId=vpc)[
        "GroupId"
    ]
    compute = batch.create_compute_environment(
        computeEnvironmentName="test-compute",
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 4,
            "desiredvCpus": 0,
            "instanceTypes": ["optimal"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile_arn,
        },
        serviceRole=role_arn,
    )["computeEnvironmentArn"]
    queue_arn = batch.create_job_queue(
        jobQueueName=JOB_QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": compute}],
    )["jobQueueArn"]
    return BatchEnvironment(endpoint_url, REGION, JOB_QUEUE, queue_arn, role_arn, docker)
