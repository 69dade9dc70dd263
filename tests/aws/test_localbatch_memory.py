"""Local Batch jobs run within the memory they asked for, and a kill for memory reads as on AWS:
FAILED, exit code 137, `OutOfMemoryError: Container killed due to memory usage`."""

from __future__ import annotations

from typing import Any

import pytest

from batchcrew.localbatch import LocalBatch
from batchcrew.localbatch.motojobs import OUT_OF_MEMORY_REASON
from tests.support.batch_jobs import clients, log_messages, submit_python, summary, wait_for_status
from tests.support.processes import memory_cgroups_allowed

TOUCH_600_MB = "data = b'x' * (600 * 2**20); print('touched', len(data) // 2**20, 'MB')"
OWN_LIMIT = (
    "from pathlib import Path; "
    "line = [l for l in Path('/proc/self/cgroup').read_text().splitlines() "
    "if 'memory' in l.split(':')[1].split(',') or l.startswith('0::')][0]; "
    "path = line.split(':', 2)[2].lstrip('/'); "
    "v1 = Path('/sys/fs/cgroup/memory', path, 'memory.limit_in_bytes'); "
    "v2 = Path('/sys/fs/cgroup', path, 'memory.max'); "
    "print('limit', (v1 if v1.exists() else v2).read_text().strip())"
)


pytestmark = pytest.mark.skipif(
    not memory_cgroups_allowed(), reason="this machine lets no memory cgroup be made"
)


def memory(mebibytes: int) -> dict[str, Any]:
    return {"resourceRequirements": [{"type": "MEMORY", "value": str(mebibytes)}]}


def test_a_job_over_its_memory_is_killed_and_fails_as_on_aws(local_batch: LocalBatch) -> None:
    batch, _ = clients(local_batch)
    job_id = submit_python(batch, local_batch, TOUCH_600_MB, containerOverrides=memory(256))
    job = wait_for_status(batch, job_id, seconds=60)
    assert job["status"] == "FAILED"
    assert summary(batch, local_batch, job_id, "FAILED")["container"]["exitCode"] == 137
    assert job["attempts"][-1]["container"]["exitCode"] == 137
    assert job["attempts"][-1]["container"]["reason"] == OUT_OF_MEMORY_REASON


def test_the_same_job_with_enough_memory_succeeds(local_batch: LocalBatch) -> None:
    batch, logs = clients(local_batch)
    job_id = submit_python(batch, local_batch, TOUCH_600_MB, containerOverrides=memory(1024))
    job = wait_for_status(batch, job_id, seconds=60)
    assert job["status"] == "SUCCEEDED"
    assert job["attempts"][-1]["container"]["exitCode"] == 0
    assert "reason" not in job["attempts"][-1]["container"]
    assert log_messages(logs, job) == ["touched 600 MB"]


def test_each_array_child_gets_the_overrides_memory_else_the_definitions(
    local_batch: LocalBatch,
) -> None:
    batch, logs = clients(local_batch)
    overridden = submit_python(
        batch,
        local_batch,
        OWN_LIMIT,
        containerOverrides=memory(300),
        arrayProperties={"size": 2},
    )
    plain = submit_python(batch, local_batch, OWN_LIMIT)  # the definition's 2048 MiB
    for job_id, mebibytes in ((f"{overridden}:0", 300), (f"{overridden}:1", 300), (plain, 2048)):
        job = wait_for_status(batch, job_id, seconds=60)
        assert job["status"] == "SUCCEEDED", job
        assert log_messages(logs, job) == [f"limit {mebibytes * 2**20}"]
