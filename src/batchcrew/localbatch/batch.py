"""`LocalBatch`: moto's server and the local engine as one local AWS Batch, for tests and dry runs.

Owns what people use: start, reset and stop, and the addresses, clients and settings that aim
boto3, batchcrew and the AWS CLI at it. The child process is `backend_process`'s and the Batch
environment built in it `provisioning`'s. It must never reach AWS: every client it makes has
fake credentials, a loopback endpoint and no shared AWS configuration.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from batchcrew.errors import BatchcrewError
from batchcrew.localbatch.backend_process import BackendProcess
from batchcrew.localbatch.provisioning import (
    FAKE_CREDENTIALS,
    BatchEnvironment,
    active_job_ids,
    moto_client,
)

if TYPE_CHECKING:
    from batchcrew.aws.config import AWSConfig

logger = logging.getLogger("batchcrew.localbatch.batch")

INSTALL_HINT = "pip install 'batchcrew[local]'"

SECONDS_START = 60.0
SECONDS_RESET = 30.0
SECONDS_POLL = 0.05


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
        self._environment = BatchEnvironment(region, job_queue, job_definition)
        if seconds_start <= 0:
            raise ValueError(f"seconds_start must be positive, not {seconds_start}")
        self.region = region
        self.job_queue = job_queue
        self.job_definition = job_definition
        self.compute_environment = self._environment.compute_environment
        self.workdir = os.path.abspath(os.fspath(workdir) if workdir is not None else os.getcwd())
        if not os.path.isdir(self.workdir):
            raise ValueError(f"workdir must be an existing directory, not {self.workdir!r}")
        self._log_path_requested = None if log_path is None else os.fspath(log_path)
        self.seconds_start = seconds_start
        self._lock = threading.RLock()
        self._backend: BackendProcess | None = None
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
            if self._backend is not None:
                return self
            require_local_extra()
            backend = self._backend = BackendProcess(self.workdir, self._log_path_requested)
            self.log_path = backend.log_path
            started = time.monotonic()
            try:
                backend.start(self.seconds_start)
                ready = time.monotonic()
                self._environment.build(self._client)
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
            backend, self._backend = self._backend, None
            self._clients.clear()
            if backend is not None:
                backend.stop()

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
            backend = self._running_backend()
            started = time.monotonic()
            # Default (quick) state transitions first, so that jobs in flight finish promptly.
            backend.moto_api("state-manager/unset-transition", {"model_name": "batch::job"})
            backend.moto_api("config", {"batch": {"use_docker": True}})
            self._quiesce(backend)
            backend.moto_api("reset")
            self._environment.build(self._client)
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
        where = self.endpoint_url if self._backend is not None else "stopped"
        return f"LocalBatch(region={self.region!r}, {where})"

    # What clients need.

    @property
    def running(self) -> bool:
        """Whether the child process hosting moto and the engine is alive.

        Example:
            >>> LocalBatch().running
            False
        """
        backend = self._backend
        return backend is not None and backend.running

    @property
    def endpoint_url(self) -> str:
        """moto's address, for boto3's `endpoint_url`.

        Example:
            >>> local.endpoint_url.startswith("http://127.0.0.1:")
            True
        """
        return self._running_backend().endpoint_url

    @property
    def docker_host(self) -> str:
        """The local engine's address in `DOCKER_HOST` form.

        Example:
            >>> local.docker_host.startswith("tcp://127.0.0.1:")
            True
        """
        return self._running_backend().docker_host

    @property
    def pid(self) -> int:
        """The process id of the child hosting moto and the engine.

        Example:
            >>> local.pid > 0
            True
        """
        return self._running_backend().pid

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
        return self._running_backend().job_pids()

    # Internals.

    def _running_backend(self) -> BackendProcess:
        if self._backend is None:
            raise BatchcrewError("LocalBatch is not running: call start() or use it in `with`")
        return self._backend

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            backend = self._running_backend()
            client = self._clients[service] = moto_client(
                service, self.region, backend.endpoint_url, backend.directory
            )
        return client

    def _quiesce(self, backend: BackendProcess) -> None:
        batch = self._client("batch")
        terminated: set[str] = set()
        deadline = time.monotonic() + SECONDS_RESET
        while True:
            active = active_job_ids(batch)
            for job_id in active - terminated:
                batch.terminate_job(jobId=job_id, reason="LocalBatch reset")
                terminated.add(job_id)
            running = backend.kill_containers()
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
