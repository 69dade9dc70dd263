"""Fixtures for tests with real worker processes: every controller is terminated at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import batchcrew as bc


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
