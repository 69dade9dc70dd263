"""Corrections to moto's Batch where it differs from what AWS Batch documents.

Owns the patches `install()` makes to moto's Batch backend in the LocalBatch's own child process
(`backend.py`), before moto serves its first request: array parents that follow their children,
array children kept out of queue listings, job definitions resolved as AWS resolves them, and
the fields AWS returns that moto leaves out. It patches moto for the whole interpreter, so only
that child may call `install()`; library code never does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

__all__ = ["array_parent_status", "install"]

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""AWS's rule for job names: 1 to 128 letters, digits, `-` or `_`, starting alphanumeric."""

FINISHED = ("SUCCEEDED", "FAILED")
WAITING_FOR_RESOURCES = ("RUNNABLE", "STARTING", "RUNNING", *FINISHED)
"""A child in one of these states has passed RUNNABLE, which makes its array parent PENDING."""

NEVER = datetime(1970, 1, 1)
"""moto's start and stop time of a job that never started or stopped."""


def array_parent_status(children: Sequence[str | None]) -> str:
    """The status AWS Batch gives an array parent whose children are in `children`.

    AWS documents that a parent is only ever SUBMITTED, PENDING, SUCCEEDED or FAILED: PENDING
    once any child reaches RUNNABLE, SUCCEEDED when every child succeeded, FAILED when every
    child has finished and one of them failed.

    Example:
        >>> array_parent_status(["SUBMITTED", "PENDING"])
        'SUBMITTED'
        >>> array_parent_status(["RUNNING", "FAILED", "SUBMITTED"])
        'PENDING'
        >>> array_parent_status(["SUCCEEDED", "SUCCEEDED"])
        'SUCCEEDED'
        >>> array_parent_status(["SUCCEEDED", "FAILED"])
        'FAILED'
    """
    if all(status in FINISHED for status in children):
        return "FAILED" if "FAILED" in children else "SUCCEEDED"
    if any(status in WAITING_FOR_RESOURCES for status in children):
        return "PENDING"
    return "SUBMITTED"


def install() -> None:
    """Patch moto's Batch backend so that it answers as AWS Batch documents.

    Example (not run as a test: it would patch moto in the test process too):
        >>> install()  # doctest: +SKIP
    """
    from moto.batch import models as typed_models
    from moto.batch.exceptions import ClientException

    models: Any = typed_models  # patched where its types would not allow it
    job_class: Any = models.Job
    backend_class: Any = models.BatchBackend
    own_status = job_class.status

    # AWS allows 1-character names; moto asks for 2.
    models.JOB_NAME_REGEX = JOB_NAME
    # moto stamps a job's log events with float milliseconds; AWS's are integers.
    float_milliseconds = models.unix_time_millis
    models.unix_time_millis = lambda moment=None: int(float_milliseconds(moment))

    def status(job: Any) -> str | None:
        children = getattr(job, "_child_jobs", None)
        if children:
            return array_parent_status([child.status for child in children])
        result: str | None = own_status.fget(job)
        return result

    job_class.status = property(status, own_status.fset)
    job_class.describe_short = _wrap(job_class.describe_short, _corrected_summary)
    job_class.describe = _wrap(job_class.describe, _corrected_description)
    job_class._stop_attempt = _wrap(job_class._stop_attempt, _attempt_with_exit_code)

    list_jobs = backend_class.list_jobs

    def listed_jobs(
        backend: Any,
        job_queue_name: str | None,
        array_job_id: str | None,
        job_status: str | None = None,
        filters: list[dict[str, Any]] | None = None,
    ) -> list[Any]:
        if array_job_id:  # the children of one array job, whatever queue is named
            return list(list_jobs(backend, None, array_job_id, job_status, filters))
        if job_status is None and filters is None:
            job_status = "RUNNING"  # AWS lists RUNNING jobs when no status is asked
        jobs = list_jobs(backend, job_queue_name, None, job_status, filters)
        return [job for job in jobs if not _is_array_child(job)]

    backend_class.list_jobs = listed_jobs

    submit_job = backend_class.submit_job

    def submitted_job(
        backend: Any, job_name: str, job_def_id: str, *args: Any, **kwargs: Any
    ) -> tuple[str, str, str]:
        definition = _definition_to_run(backend, job_def_id, ClientException)
        result: tuple[str, str, str] = submit_job(
            backend, job_name, definition.arn, *args, **kwargs
        )
        return result

    backend_class.submit_job = submitted_job

    def registered_definition(
        backend: Any,
        def_name: str,
        parameters: dict[str, Any] | None,
        _type: str,
        tags: dict[str, str] | None,
        retry_strategy: dict[str, Any] | None,
        container_properties: dict[str, Any] | None,
        node_properties: dict[str, Any] | None,
        eks_properties: dict[str, Any] | None,
        timeout: dict[str, int] | None,
        platform_capabilities: list[str] | None,
        propagate_tags: bool | None,
    ) -> Any:
        # moto copies the previous revision's platform and fills in its other fields; on AWS
        # every revision is exactly what was registered.
        if def_name is None:
            raise ClientException("jobDefinitionName must be provided")
        for strategy in (retry_strategy or {}).get("evaluateOnExit", []):
            if "action" in strategy:
                strategy["action"] = strategy["action"].lower()
        latest = max(
            (each.revision for each in backend._job_definitions.values() if each.name == def_name),
            default=0,
        )
        definition = models.JobDefinition(
            def_name,
            parameters,
            _type,
            container_properties,
            node_properties=node_properties,
            eks_properties=eks_properties,
            tags=tags or {},
            retry_strategy=retry_strategy,
            timeout=timeout,
            backend=backend,
            platform_capabilities=platform_capabilities,
            propagate_tags=propagate_tags,
            revision=latest,
        )
        backend._job_definitions[definition.arn] = definition
        return definition

    backend_class.register_job_definition = registered_definition
    backend_class.cancel_job = _with_children(backend_class.cancel_job)
    backend_class.terminate_job = _with_children(backend_class.terminate_job)


def _wrap(original: Callable[..., Any], correct: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """`original`, with `correct(job, result)` applied to what it returns."""

    def corrected(job: Any) -> Any:
        return correct(job, original(job))

    return corrected


def _with_children(original: Callable[..., None]) -> Callable[..., None]:
    """CancelJob or TerminateJob that, on an array parent, acts on every child too (as AWS)."""

    def act(backend: Any, job_id: str, reason: str) -> None:
        original(backend, job_id, reason)
        job = backend.get_job_by_id(job_id)
        for child in getattr(job, "_child_jobs", None) or []:
            original(backend, child.job_id, reason)

    return act


def _is_array_child(job: Any) -> bool:
    return "index" in (job.array_properties or {})


def _corrected_summary(job: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """A ListJobs summary (and the start of a description) as AWS writes it."""
    from moto.batch.models import datetime2int_milliseconds

    if job.job_started_at == NEVER:
        summary.pop("startedAt", None)  # moto writes 0 for a job that never started
    children = getattr(job, "_child_jobs", None)
    if children:
        # A parent runs nothing itself: it started when its first child did.
        started = [child.describe_short().get("startedAt") for child in children]
        if any(moment is not None for moment in started):
            summary["startedAt"] = min(moment for moment in started if moment is not None)
        if summary["status"] in FINISHED:
            last = max(child.job_stopped_at for child in children)
            summary["stoppedAt"] = datetime2int_milliseconds(last)
        summary["arrayProperties"] = {"size": len(children)}
    elif _is_array_child(job):
        summary["arrayProperties"] = {"index": job.array_properties["index"]}
    return summary


def _corrected_description(job: Any, description: dict[str, Any]) -> dict[str, Any]:
    """A DescribeJobs entry with the container's exit code, which moto leaves out."""
    if job.exit_code is not None and isinstance(description.get("container"), dict):
        description["container"]["exitCode"] = job.exit_code
    return description


def _attempt_with_exit_code(job: Any, result: None) -> None:
    """Each attempt's container records the exit code, as AWS's `attempts` do."""
    if job.latest_attempt is not None and job.exit_code is not None:
        job.latest_attempt["container"]["exitCode"] = job.exit_code
    return result


def _definition_to_run(backend: Any, identifier: str, refusal: type[Exception]) -> Any:
    """The revision SubmitJob runs: the one named, or the latest ACTIVE one of a bare name.

    An explicitly named revision that is INACTIVE is refused, as AWS refuses it.
    """
    definition = backend.get_job_definition_by_arn(identifier)
    # A name, `name:revision`, or an ARN with or without the revision.
    base, _, revision = identifier.rpartition("job-definition/")[2].partition(":")
    if definition is None and revision:
        definition = next(
            (
                each
                for each in backend._job_definitions.values()
                if each.name == base and str(each.revision) == revision
            ),
            None,
        )
    if definition is None and not revision:
        active = [
            each
            for each in backend._job_definitions.values()
            if each.name == base and each.status == "ACTIVE"
        ]
        definition = max(active, key=lambda each: each.revision, default=None)
    if definition is None:
        raise refusal(f"Job definition {identifier} does not exist")
    if definition.status != "ACTIVE":
        raise refusal(f"Job definition {identifier} is {definition.status}; it cannot run jobs")
    return definition
