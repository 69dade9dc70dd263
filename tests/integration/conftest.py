"""Fixtures for tests with real worker processes: every controller is terminated at the end,
and whatever task children a failed test left running are killed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import batchcrew as bc
from tests.support.processes import kill_leftovers


@pytest.fixture
def make_controller() -> Iterator[Callable[..., bc.Controller]]:
    """Build controllers with test-friendly defaults; all are terminated after the test."""
    made: list[bc.Controller] = []

    def make(*args: Any, **kwargs: Any) -> bc.Controller:
        kwargs.setdefault("seconds_idle", 30)
        controller = bc.Controller(*args, **kwargs)
        made.append(controller)
        return controller

    yield make
    for controller in made:
        controller.terminate()


@pytest.fixture
def children_record(tmp_path: Path) -> Iterator[Path]:
    """Where a task writes the pids of the children it starts; any still alive after the test
    are killed (they should be gone already: the test says so)."""
    record = tmp_path / "children"
    yield record
    if record.exists():
        kill_leftovers(int(pid) for pid in record.read_text().split())
