"""Fixtures for the whole suite, docstring examples included.

Every test runs with boto3 kept away from this machine's AWS configuration: no AWS_* variable,
no config or credentials file, no instance metadata. One LocalBatch serves the session (its jobs
really run as local processes); `local_batch` hands it to a test and rebuilds it afterwards, and
the examples of the AWS and local Batch modules find it in their namespace, with a monitor and a
job definition aimed at it and its child process. Examples that speak of `crew` get a running
controller with two local workers, shared by the session and emptied between examples.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.doctest import DoctestItem
from tests.support.hermetic import hermetic_aws_environment
from tests.support.processes import group_members, process_alive, wait_until_gone

from batchcrew.localbatch import LocalBatch

EXAMPLES_ON_LOCAL_BATCH = (
    "batchcrew.aws.batch_controller.",
    "batchcrew.aws.config.",
    "batchcrew.aws.copies.",
    "batchcrew.aws.definition.",
    "batchcrew.aws.jobs.",
    "batchcrew.aws.launcher.",
    "batchcrew.aws.listing.",
    "batchcrew.aws.logs.",
    "batchcrew.aws.monitor.",
    "batchcrew.localbatch.backend_process.",
    "batchcrew.localbatch.batch.",
    "batchcrew.localbatch.provisioning.",
)
"""Modules whose docstring examples run against the session's LocalBatch."""


@pytest.fixture(autouse=True)
def _no_aws_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    hermetic_aws_environment(monkeypatch, Path("/nonexistent-batchcrew-aws"))


@pytest.fixture(scope="session")
def local_batch_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBatch]:
    """One LocalBatch for the session; at the end, its processes and all its jobs are gone."""
    local = LocalBatch(workdir=tmp_path_factory.mktemp("local-batch-jobs")).start()
    try:
        yield local
    finally:
        pids = {local.pid} if local.running else set()
        if local.running:
            for pid in local.job_pids().values():
                pids |= group_members(pid) | {pid}
        local.stop()
        wait_until_gone(pids)


@pytest.fixture
def local_batch(
    local_batch_session: LocalBatch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[LocalBatch]:
    """The session's LocalBatch, fresh: every job of the test is killed and the state rebuilt."""
    if not process_alive(local_batch_session.pid):
        pytest.fail(f"the session's LocalBatch has died; see {local_batch_session.log_path}")
    hermetic_aws_environment(monkeypatch, tmp_path)
    yield local_batch_session
    local_batch_session.reset()


@pytest.fixture(autouse=True)
def _examples_find_a_local_batch(
    request: pytest.FixtureRequest, doctest_namespace: dict[str, object]
) -> None:
    """`local`, `monitor`, `definition` and `backend` (the child process of `local`) for the
    examples of the AWS and local Batch modules.

    The examples share the session's LocalBatch without a reset between them, so each one makes
    what it needs (jobs, revisions) and never counts what others left behind.
    """
    item = request.node
    if not isinstance(item, DoctestItem) or not f"{item.name}.".startswith(EXAMPLES_ON_LOCAL_BATCH):
        return
    from batchcrew.aws import JobDefinition, Monitor

    local: LocalBatch = request.getfixturevalue("local_batch_session")
    aws = local.aws_config()
    doctest_namespace.update(
        local=local,
        monitor=Monitor(local.job_definition, local.job_queue, aws=aws),
        definition=JobDefinition("my-definition", local.job_queue, aws=aws),
        backend=local._backend,
    )


@pytest.fixture(scope="session")
def _doctest_controller() -> Iterator[Any]:
    import batchcrew as bc

    with bc.Controller(workers=2, seconds_idle=30, seed=1) as crew:
        yield crew


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    """Give a docstring example that speaks of `crew` the shared controller, emptied."""
    if not isinstance(request.node, DoctestItem):
        return
    test = request.node.dtest
    if test is None or not any(re.search(r"\bcrew\b", e.source) for e in test.examples):
        return
    crew = request.getfixturevalue("_doctest_controller")
    crew.cancel()
    crew.wait(timeout=60)
    crew.collect()
    doctest_namespace["crew"] = crew
