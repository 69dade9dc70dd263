"""Fixtures for the AWS tests: one LocalBatch for the whole session, reset between tests.

`local_batch` yields a LocalBatch whose jobs really run as local processes; after each test every
job is killed and moto's state rebuilt. Nothing reaches AWS: fake keys, loopback endpoints, and
no AWS config or credentials file is read while a test runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchcrew.localbatch import LocalBatch
from tests.support.hermetic import hermetic_aws_environment
from tests.support.processes import group_members, process_alive, wait_until_gone


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
