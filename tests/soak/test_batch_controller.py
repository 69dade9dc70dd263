"""Chaos on the local Batch: an AWS controller runs thousands of tasks while worker jobs are
ended at random with TerminateJob. Every task resolves exactly once with its value, the
controller's memory and descriptors come back to where they were, and after `terminate()` no
job is active and no job process is left. Run with `make soak`."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import batchcrew as bc
from batchcrew.aws import Monitor
from batchcrew.localbatch import LocalBatch
from tests.integration import tasks
from tests.support.batch_jobs import job_options
from tests.support.polling import wait_until
from tests.support.processes import Footprint, group_members, trimmed_footprint, wait_until_gone

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1200)]

Record = Callable[[str, object], None]

TASKS = 2_000
SECONDS_TASK = 0.05
MEGABYTES_KEPT_MAX = 20
"""How much more memory the controller may hold once the run is over than before it began
(the allocator keeps some of what 2,000 results, dozens of TLS connections and AWS clients
took; the Python objects themselves are counted below)."""
OBJECTS_KEPT_MAX = 2_000
"""How many more Python objects may be alive once the run is over: a few per kill (the log
records pytest keeps for its report), far fewer than one per task."""


def _controller(local: LocalBatch, workers: int) -> bc.Controller:
    return bc.aws.controller(
        workers=workers,
        options=job_options(local),
        aws=local.aws_config(),
        seconds_launch=120,
        seconds_idle=60,
        crashes_max=1_000,
    )


@dataclass(frozen=True)
class Baseline:
    """What the run is measured against, and the test's own tools, made before the count."""

    footprint: Footprint
    objects: int
    """Python objects the garbage collector tracks."""
    monitor: Monitor
    """Lists the jobs straight from the local Batch."""
    batch: Any
    """The killer's boto3 client, straight to the local Batch."""


@pytest.fixture
def baseline(local_batch: LocalBatch) -> Baseline:
    """This process's footprint once a first AWS controller has come and gone: what stays for
    good (boto3's models, pandas) is counted in."""
    crew = _controller(local_batch, workers=2)
    with crew:
        crew.map(tasks.square, range(10))
        crew.summary()
    del crew
    monitor = Monitor(
        local_batch.job_definition, local_batch.job_queue, aws=local_batch.aws_config()
    )
    wait_until(lambda: monitor.active().empty and not local_batch.job_pids(), seconds=30)
    batch = local_batch.aws_config().client("batch")
    batch.describe_job_queues()
    gc.collect()
    return Baseline(trimmed_footprint(), len(gc.get_objects()), monitor, batch)


def test_chaos_every_task_resolves_once_while_worker_jobs_are_terminated(
    local_batch: LocalBatch, baseline: Baseline, record_property: Record
) -> None:
    kills: list[str] = []
    seen: set[int] = set()
    done = threading.Event()
    draws = random.Random(11)

    def killer(batch: Any) -> None:  # TerminateJob on a random running worker job every 1-2 s
        while not done.wait(draws.uniform(1.0, 2.0)):
            running = local_batch.job_pids()
            for pid in running.values():
                seen.update(group_members(pid) | {pid})
            if running:
                victim = draws.choice(sorted(running))
                batch.terminate_job(jobId=victim, reason="chaos")
                kills.append(victim)

    crew = _controller(local_batch, workers=4)
    started = time.monotonic()
    with crew:
        thread = threading.Thread(target=killer, args=(baseline.batch,), daemon=True)
        thread.start()
        try:
            results = crew.map(tasks.square_after, range(TASKS), [SECONDS_TASK] * TASKS)
        finally:
            done.set()
            thread.join()
        seconds = time.monotonic() - started
        assert results.values() == [x * x for x in range(TASKS)]
        assert len({result.name for result in results}) == TASKS
        assert {result.status for result in results} == {"success"}
        assert crew.collect() == [] and len(crew) == 0
        retried = sum(result.attempts - 1 for result in results)
        launches = {result.launch for result in results}
        errors = len(crew.launcher.errors())
        for pid in local_batch.job_pids().values():
            seen.update(group_members(pid) | {pid})
    ended = time.monotonic()
    wait_until(lambda: baseline.monitor.active().empty, seconds=30, every=0.1)
    seconds_jobs_ended = time.monotonic() - ended
    wait_until_gone(seen, seconds=30)
    assert not local_batch.job_pids()
    record_property("tasks", TASKS)
    record_property("seconds", round(seconds, 1))
    record_property("kills", len(kills))
    record_property("tasks_retried", retried)
    record_property("launches_that_ran_tasks", len(launches))
    record_property("launcher_errors", errors)
    record_property("seconds_until_no_job_active", round(seconds_jobs_ended, 2))
    record_property("job_processes_seen", len(seen))
    assert len(kills) >= 5 and retried >= 1
    del crew, results
    gc.collect()
    after, objects = trimmed_footprint(), len(gc.get_objects())
    before = baseline.footprint
    record_property("footprint", after.grown_since(before))
    record_property("python_objects", f"{baseline.objects} -> {objects}")
    assert after.fds <= before.fds and after.threads <= before.threads, after.grown_since(before)
    assert after.megabytes < before.megabytes + MEGABYTES_KEPT_MAX, after.grown_since(before)
    # Nothing of the run is held: the log records the run left for the report aside.
    assert objects < baseline.objects + OBJECTS_KEPT_MAX, f"{baseline.objects} -> {objects}"
