"""Holding LocalBatch jobs in a state: moto's job state machine slowed down, real jobs running.

Owns the state-manager calls for `batch::job` (LocalBatch.reset() undoes them) and the wait for
a job whose process really runs. Every request goes to the LocalBatch's loopback endpoint.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from batchcrew.localbatch import LocalBatch
from tests.support.batch_jobs import wait_for_status
from tests.support.polling import wait_until


def sleeping_command(seconds: int = 60) -> list[str]:
    """A job command that runs, in RUNNING, until it is terminated (or `seconds` pass)."""
    return ["python", "-c", f"import time; time.sleep({seconds})"]


def seconds_per_job_state(local: LocalBatch, seconds: float) -> None:
    """Make every job stay `seconds` in each of SUBMITTED, PENDING, RUNNABLE and STARTING."""
    transition = {"progression": "time", "seconds": seconds}
    _moto_api(
        local,
        "state-manager/set-transition",
        {"model_name": "batch::job", "transition": transition},
    )


def job_states_at_full_speed(local: LocalBatch) -> None:
    """Undo `seconds_per_job_state`: jobs go through their states at once again."""
    _moto_api(local, "state-manager/unset-transition", {"model_name": "batch::job"})


def wait_until_running(batch: Any, local: LocalBatch, job_id: str, seconds: float = 30.0) -> int:
    """Wait until the job is RUNNING and its process runs; return the pid leading its group."""
    pid: int = wait_until(lambda: local.job_pids().get(job_id, 0), seconds)
    wait_for_status(batch, job_id, ("RUNNING",), seconds)
    return pid


def _moto_api(local: LocalBatch, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{local.endpoint_url}/moto-api/{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
