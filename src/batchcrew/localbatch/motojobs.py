"""Where moto's Batch falls short of AWS's for batchcrew's workers, the local Batch makes up.

moto creates a job's container without its memory and reads back only the exit status: this
module reads a job's memory from moto's in-process record of it (by `AWS_BATCH_JOB_ID`), and
records on the job's last attempt what AWS records there, the container's exit code and, after
a kill for memory, AWS's reason. Only the process that hosts moto's server uses this module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("batchcrew.localbatch.motojobs")

__all__ = ["OUT_OF_MEMORY_REASON", "MotoJobs"]

OUT_OF_MEMORY_REASON = "OutOfMemoryError: Container killed due to memory usage"
"""AWS's `container.reason` for a container killed for using more memory than it had."""

MEBIBYTE = 2**20


class MotoJobs:
    """The `BatchJobs` of an engine whose containers run the jobs of moto in this process.

    Example:
        >>> MotoJobs().memory_bytes({})  # a container of no Batch job
        0
    """

    def memory_bytes(self, environment: Mapping[str, str]) -> int:
        """The job's memory in bytes: its overrides' MEMORY, else its job definition's."""
        job = _job(environment)
        if job is None:
            return 0
        overrides = job.container_overrides or {}
        properties = job.job_definition.container_properties or {}
        for source in (overrides, properties):
            mebibytes = _memory_mebibytes(source)
            if mebibytes:
                return mebibytes * MEBIBYTE
        return 0

    def container_exited(
        self, environment: Mapping[str, str], exit_code: int, oom_killed: bool
    ) -> None:
        """Write the exit code, and AWS's reason after a kill for memory, on the last attempt."""
        job = _job(environment)
        attempt = None if job is None else job.latest_attempt
        if not attempt:
            logger.warning("no attempt of job %s to record its exit on", _job_id(environment))
            return
        container = attempt.setdefault("container", {})
        container["exitCode"] = exit_code
        if oom_killed:
            container["reason"] = OUT_OF_MEMORY_REASON


def _job_id(environment: Mapping[str, str]) -> str:
    return environment.get("AWS_BATCH_JOB_ID", "")


def _job(environment: Mapping[str, str]) -> Any:
    """moto's record of the job whose container has `environment`, or None."""
    job_id = _job_id(environment)
    if not job_id:
        return None
    from moto.batch.models import batch_backends

    for account in list(batch_backends.values()):
        for backend in list(account.values()):
            job = backend.get_job_by_id(job_id)
            if job is not None:
                return job
    return None


def _memory_mebibytes(container: Mapping[str, Any]) -> int:
    """MEMORY of a `resourceRequirements` list, else the older `memory` member; 0 for none."""
    for requirement in container.get("resourceRequirements") or []:
        if str(requirement.get("type", "")).upper() == "MEMORY":
            return int(float(requirement["value"]))
    return int(float(container.get("memory") or 0))
