"""What `Controller.summary()` shows: one row per worker, from the scheduler's records.

Pure: reads the scheduler's connected workers, its bounded history of departed ones and the
totals of those that left the history; builds plain rows (pandas is the caller's business).
"""

from __future__ import annotations

from typing import Any

from batchcrew.records import WorkerState
from batchcrew.scheduler import Scheduler

SUMMARY_COLUMNS = [
    "worker",
    "host",
    "pid",
    "launch",
    "level",
    "status",
    "tasks",
    "seconds_busy",
    "errors",
    "crashes",
    "ending",
]


def summary_rows(scheduler: Scheduler) -> list[dict[str, Any]]:
    """Rows of departed workers (oldest first, earlier ones added up in one row) and then of
    connected ones.

    Example:
        >>> from batchcrew.scheduler import Limits
        >>> summary_rows(Scheduler(Limits()))
        []
    """
    rows: list[dict[str, Any]] = []
    earlier = scheduler.departures.earlier
    if earlier.workers:
        rows.append(
            {
                "worker": f"({earlier.workers} earlier workers)",
                "host": None,
                "pid": None,
                "launch": None,
                "level": None,
                "status": "departed",
                "tasks": earlier.tasks,
                "seconds_busy": earlier.seconds_busy,
                "errors": earlier.errors,
                "crashes": earlier.crashes,
                "ending": None,
            }
        )
    rows += [_row(state) for state in scheduler.history]
    rows += [_row(state) for state in scheduler.workers.values()]
    return rows


def _row(state: WorkerState) -> dict[str, Any]:
    return {
        "worker": state.label,
        "host": state.host,
        "pid": state.pid,
        "launch": state.launch_label,
        "level": state.level,
        "status": state.status,
        "tasks": state.tasks,
        "seconds_busy": state.seconds_busy,
        "errors": state.errors,
        "crashes": int(state.status == "crashed"),
        "ending": state.ending,
    }
