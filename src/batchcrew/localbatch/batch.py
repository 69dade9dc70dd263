"""`LocalBatch`: moto's server and the local engine as one local AWS Batch, for tests and dry runs.

Owns the child process that hosts both, the Batch environment built in it (role, network,
compute environment, queue, job definition), reset and stop. It must never reach AWS: every
client it makes has fake credentials, a loopback endpoint and no shared AWS configuration.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from batchcrew.aws.validation import check_resource_name
from batchcrew.errors import BatchcrewError

if TYPE_CHECKING:
    from batchcrew.aws.config import AWSConfig

logger = logging.getLogger("batchcrew.localbatch.batch")

FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
"""The credentials every client of a LocalBatch uses; moto accepts any."""

INSTALL_HINT = "pip install 'batchcrew[local]'"
BACKEND_COMMAND = (sys.executable, "-m", "batchcrew.localbatch.backend")

SECONDS_START = 60.0
SECONDS_STOP = 15.0
SECONDS_RESET = 30.0
SECONDS_HTTP = 10.0
SECONDS_POLL = 0.05

ACTIVE_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
REGION_PATTERN = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")


def require_local_extra() -> None:
    """Raise `BatchcrewError` with the install hint unless moto and docker-py are importable.

    Example:
        >>> require_local_extra()  # moto and docker-py are installed: nothing happens
    """
    missing = [name for name in ("moto", "docker") if not _importable(name)]
    if missing:
        raise BatchcrewError(f"the local AWS Batch needs {' and '.join(missing)}: {INSTALL_HINT}")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules
        return False


class LocalBatch:
    """A local AWS Batch: moto's Batch API whose jobs run as processes on this machine.

    `start()` (or `with`) launches one child process hosting moto's server and the local engine
    on free loopback ports, then creates an IAM service role, a VPC, a subnet, a security group,
    a managed compute environment, the job queue `job_queue` and the job definition
    `job_definition`, whose command runs this Python (`sys.executable -m batchcrew.worker`).
    Jobs see `python` on their PATH as this same interpreter, run in `workdir`, and get only
    PATH, HOME, LANG, VIRTUAL_ENV and the `PYTHON*` variables from this environment. `stop()`
    kills every job process; if this process dies, the child notices and does the same.

    Example:
        >>> import boto3
        >>> batch = boto3.client("batch", **local.client_kwargs())
        >>> job = batch.submit_job(
        ...     jobName="hello", jobQueue=local.job_queue, jobDefinition=local.job_definition,
        ...     containerOverrides={"command": ["python", "-c", "print('hello')"]},
        ... )
        >>> job["jobName"]
        'hello'
    """

    def __init__(
        self,
        region: str = "us-east-1",
        *,
        job_queue: str = "batchcrew-local-queue",
        job_definition: str = "batchcrew-local",
        workdir: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        seconds_start: float = SECONDS_START,
    ) -> None:
        if not REGION_PATTERN.fullmatch(region):
            raise ValueError(f"region must look like 'us-east-1', not {region!r}")
        check_resource_name("job_queue", job_queue)
        check_resource_name("job_definition", job_definition)
        if seconds_start <= 0:
            raise ValueError(f"seconds_start must be positive, not {seconds_start}")
        self.region = region
        self.job_queue = job_queue
        self.job_definition = job_definition
        self.compute_environment = f"{job_queue}-compute"
        self.workdir = os.path.abspath(os.fspath(workdir) if workdir is not None else os.getcwd())
        if not os.path.isdir(self.workdir):
            raise ValueError(f"workdir must be an existing directory, not {self.workdir!r}")
        self._log_path_requested = None if log_path is None else os.fspath(log_path)
        self.seconds_start = seconds_start
        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None
        self._temporary: str | None = None
        self._log_file: IO[bytes] | None = None
        self._moto_port = 0
        self._engine_port = 0
        self._clients: dict[str, Any] = {}
        self.log_path = ""

    # Life cycle.

    def start(self) -> LocalBatch:
        """Start moto and the engine, build the Batch environment; returns `self`.

        Raises `BatchcrewError` when moto or docker-py is missing or the child does not come up
        within `seconds_start` (the message then carries the end of its log).

        Example:
            >>> local.start() is local  # already started: nothing more to do
            True
        """
        with self._lock:
            if self._process is not None:
                return self
            require_local_extra()
            self._temporary = tempfile.mkdtemp(prefix="batchcrew-local-batch-")
            self.log_path = self._log_path_requested or os.path.join(
                self._temporary, "local-batch.log"
            )
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop)
            started = time.monotonic()
            try:
                self._process = subprocess.Popen(
                    [
                        *BACKEND_COMMAND,
                        *("--workdir", self.workdir, "--log-level", "INFO"),
                        *("--parent-directory", self._temporary),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=self._log_file,
                    env=self._child_environment(),
                    cwd=self.workdir,
                    start_new_session=True,
                )
                ports = self._read_ports(self._process)
                self._moto_port = int(ports["moto_port"])
                self._engine_port = int(ports["engine_port"])
                ready = time.monotonic()
                self._build()
            except BaseException:
                self.stop()
                raise
            logger.info(
                "local AWS Batch at %s (engine %s) ready in %.2f s (servers %.2f s, set-up %.2f s)",
                self.endpoint_url,
                self.docker_host,
                time.monotonic() - started,
                ready - started,
                time.monotonic() - ready,
            )
            return self

    def stop(self) -> None:
        """Kill every job process, stop moto and the engine; safe to call more than once.

        Example:
            >>> never_started = LocalBatch()
            >>> never_started.stop()
            >>> never_started
            LocalBatch(region='us-east-1', stopped)
        """
        with self._lock:
            process, self._process = self._process, None
            self._clients.clear()
            if process is not None:
                self._stop_child(process)
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)
                self._temporary = None

    def reset(self) -> None:
        """Kill every job, wipe moto's state and build the Batch environment again.

        Jobs still in flight are terminated and waited for, so no job of before the reset can
        start a process or write a log afterwards; moto's state-manager transition for Batch
        jobs and its `batch.use_docker` setting go back to their defaults.

        Example:
            >>> local.reset()
            >>> batch = local.aws_config().client("batch")
            >>> [queue["jobQueueName"] for queue in batch.describe_job_queues()["jobQueues"]]
            ['batchcrew-local-queue']
        """
        with self._lock:
            self._require_running()
            started = time.monotonic()
            # Default (quick) state transitions first, so that jobs in flight finish promptly.
            self._moto_api("state-manager/unset-transition", {"model_name": "batch::job"})
            self._moto_api("config", {"batch": {"use_docker": True}})
            self._quiesce()
            self._moto_api("reset")
            self._build()
            logger.info("reset in %.2f s", time.monotonic() - started)

    def __enter__(self) -> LocalBatch:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.endpoint_url if self._process is not None else "stopped"
        return f"LocalBatch(region={self.region!r}, {where})"

    # What clients need.

    @property
    def running(self) -> bool:
        """Whether the child process hosting moto and the engine is alive.

        Example:
            >>> LocalBatch().running
            False
        """
        process = self._process
        return process is not None and process.poll() is None

    @property
    def endpoint_url(self) -> str:
        """moto's address, for boto3's `endpoint_url`.

        Example:
            >>> local.endpoint_url.startswith("http://127.0.0.1:")
            True
        """
        self._require_running()
        return f"http://127.0.0.1:{self._moto_port}"

    @property
    def docker_host(self) -> str:
        """The local engine's address in `DOCKER_HOST` form.

        Example:
            >>> local.docker_host.startswith("tcp://127.0.0.1:")
            True
        """
        self._require_running()
        return f"tcp://127.0.0.1:{self._engine_port}"

    @property
    def pid(self) -> int:
        """The process id of the child hosting moto and the engine.

        Example:
            >>> local.pid > 0
            True
        """
        self._require_running()
        assert self._process is not None
        return self._process.pid

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for `boto3.client(service, **kwargs)` aimed at this LocalBatch.

        Example:
            >>> sorted(local.client_kwargs())
            ['aws_access_key_id', 'aws_secret_access_key', 'endpoint_url', 'region_name']
        """
        return {"endpoint_url": self.endpoint_url, "region_name": self.region, **FAKE_CREDENTIALS}

    def aws_config(self) -> AWSConfig:
        """An `AWSConfig` for batchcrew's AWS layer, pointed at this LocalBatch.

        Example:
            >>> import batchcrew as bc
            >>> monitor = bc.aws.Monitor(local.job_definition, local.job_queue,
            ...                          aws=local.aws_config())
            >>> monitor.aws.endpoint_url == local.endpoint_url
            True
        """
        from batchcrew.aws.config import AWSConfig

        return AWSConfig(
            region=self.region,
            endpoint_url=self.endpoint_url,
            credentials=dict(FAKE_CREDENTIALS),
        )

    def environment_variables(self) -> dict[str, str]:
        """Variables that point batchcrew's commands, boto3 and the AWS CLI at this LocalBatch.

        The `BATCHCREW_*` ones are read by `batchcrew jobs`, `submit`, `logs` and the others;
        `AWS_ENDPOINT_URL` and the fake keys serve boto3 and the AWS CLI in another shell.

        Example:
            >>> local.environment_variables()["BATCHCREW_QUEUE"]
            'batchcrew-local-queue'
        """
        from batchcrew.aws.commands import ENVIRONMENT_VARIABLES

        return {
            ENVIRONMENT_VARIABLES["endpoint_url"]: self.endpoint_url,
            ENVIRONMENT_VARIABLES["region"]: self.region,
            ENVIRONMENT_VARIABLES["queue"]: self.job_queue,
            ENVIRONMENT_VARIABLES["definition"]: self.job_definition,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
        }

    def job_pids(self) -> dict[str, int]:
        """Process ids of the running job processes, by Batch job id.

        Each pid leads the process group of its job. A container that does not come from a
        Batch job is listed under its container name.

        Example:
            >>> import boto3, time
            >>> batch = boto3.client("batch", **local.client_kwargs())
            >>> job_id = batch.submit_job(
            ...     jobName="sleeper", jobQueue=local.job_queue, jobDefinition=local.job_definition,
            ...     containerOverrides={"command": ["sleep", "60"]},
            ... )["jobId"]
            >>> while job_id not in local.job_pids():
            ...     time.sleep(0.1)
            >>> local.job_pids()[job_id] > 0
            True
            >>> _ = batch.terminate_job(jobId=job_id, reason="example over")
        """
        self._require_running()
        return self._job_pids()

    def _job_pids(self) -> dict[str, int]:
        pids: dict[str, int] = {}
        for summary in self._engine("GET", "/containers/json"):
            try:
                details = self._engine("GET", f"/containers/{summary['Id']}/json")
            except BatchcrewError:
                continue  # removed between the two calls
            pid = int(details["State"]["Pid"])
            if not pid:
                continue
            env = dict(entry.partition("=")[::2] for entry in details["Config"].get("Env") or [])
            pids[env.get("AWS_BATCH_JOB_ID") or details["Name"].lstrip("/")] = pid
        return pids

    # Internals.

    def _require_running(self) -> None:
        if self._process is None:
            raise BatchcrewError("LocalBatch is not running: call start() or use it in `with`")

    def _child_environment(self) -> dict[str, str]:
        assert self._temporary is not None
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AWS_", "DOCKER_", "MOTO_", "TEST_SERVER_MODE"))
        }
        # moto must never read this machine's AWS configuration: point it at files that do
        # not exist.
        environment["AWS_CONFIG_FILE"] = os.path.join(self._temporary, "no-aws-config")
        environment["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(
            self._temporary, "no-aws-credentials"
        )
        environment["PYTHONUNBUFFERED"] = "1"
        return environment

    def _read_ports(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        assert process.stdout is not None
        deadline = time.monotonic() + self.seconds_start
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BatchcrewError(
                        f"LocalBatch did not start within {self.seconds_start:g} s"
                        f"{self._log_tail()}"
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    raise BatchcrewError(f"LocalBatch's process exited at start{self._log_tail()}")
                buffer += chunk
        process.stdout.close()
        try:
            ports: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
            return {"moto_port": int(ports["moto_port"]), "engine_port": int(ports["engine_port"])}
        except (ValueError, KeyError, TypeError):
            raise BatchcrewError(
                f"LocalBatch's process announced {buffer!r}, not its ports{self._log_tail()}"
            ) from None

    def _log_tail(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            text = Path(self.log_path).read_bytes()[-2000:].decode(errors="replace").strip()
        except OSError:
            return ""
        return f"; its log ({self.log_path}) ends with:\n{text}" if text else ""

    def _stop_child(self, process: subprocess.Popen[bytes]) -> None:
        pids: dict[str, int] = {}
        if process.poll() is None and self._engine_port:
            try:
                pids = self._job_pids()
            except (OSError, ValueError, KeyError, BatchcrewError) as error:
                logger.warning("could not list job processes before stopping: %s", error)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(SECONDS_STOP)
        except subprocess.TimeoutExpired:
            logger.error("LocalBatch's process did not stop in %g s; killing it", SECONDS_STOP)
            process.kill()
            process.wait()
            for pid in pids.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            client = self._clients[service] = self._new_client(service)
        return client

    def _new_client(self, service: str) -> Any:
        import botocore.session

        # A session of its own that reads no AWS profile, config or credentials file.
        missing = os.path.join(self._temporary or tempfile.gettempdir(), "no-aws-config")
        session = botocore.session.Session(
            session_vars={
                "profile": (None, None, None, None),
                "config_file": (None, None, missing, None),
                "credentials_file": (None, None, missing, None),
            }
        )
        return session.create_client(
            service,
            region_name=self.region,
            endpoint_url=f"http://127.0.0.1:{self._moto_port}",
            aws_access_key_id=FAKE_CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=FAKE_CREDENTIALS["aws_secret_access_key"],
        )

    def _build(self) -> None:
        iam = self._client("iam")
        ec2 = self._client("ec2")
        batch = self._client("batch")
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

    def _quiesce(self) -> None:
        batch = self._client("batch")
        terminated: set[str] = set()
        deadline = time.monotonic() + SECONDS_RESET
        while True:
            active = self._active_jobs(batch)
            for job_id in active - terminated:
                batch.terminate_job(jobId=job_id, reason="LocalBatch reset")
                terminated.add(job_id)
            running = self._engine("GET", "/containers/json")
            for summary in running:
                with contextlib.suppress(BatchcrewError):
                    self._engine("POST", f"/containers/{summary['Id']}/kill")
            if not active and not running:
                return
            if time.monotonic() > deadline:
                logger.warning(
                    "reset: %d jobs still active after %g s; resetting anyway",
                    len(active),
                    SECONDS_RESET,
                )
                return
            time.sleep(SECONDS_POLL)

    def _active_jobs(self, batch: Any) -> set[str]:
        """Ids of the jobs not yet finished; ending an array parent ends its children too."""
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

    def _moto_api(self, path: str, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._moto_port}/moto-api/{path}", data=data, method="POST"
        )
        with urllib.request.urlopen(request, timeout=SECONDS_HTTP) as response:
            response.read()

    def _engine(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._engine_port}{path}", method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=SECONDS_HTTP) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise BatchcrewError(f"engine {method} {path}: {error.code} {error.read()!r}") from None
        return json.loads(body) if body else None
