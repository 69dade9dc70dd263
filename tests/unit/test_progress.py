"""The map progress bar shows done of total and how many failed (progress)."""

from __future__ import annotations

import io

from rich.console import Console

from batchcrew.progress import TaskProgress, wait_for_group
from batchcrew.taskbook import TaskGroup


def test_the_bar_shows_done_of_total_and_failures() -> None:
    screen = io.StringIO()
    with TaskProgress(40, console=Console(file=screen, width=120, force_terminal=True)) as bar:
        bar.update(12, failed=3)
    text = screen.getvalue()
    assert "12/40" in text and "3 failed" in text


def test_waiting_for_a_group_checks_between_looks() -> None:
    group = TaskGroup()
    group.add(2)
    checks: list[int] = []

    def check() -> None:
        checks.append(group.remaining)
        group.resolved_one(ok=len(checks) > 1)

    wait_for_group(group, show=False, check=check)
    assert group.remaining == 0 and group.failed == 1
