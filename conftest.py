"""Every test, docstring examples included, runs with boto3 kept away from this machine's AWS
configuration: no AWS_* variable, no config or credentials file, no instance metadata.

Docstring examples get `crew`: a running controller with two local workers, shared by the
examples of one module and emptied between them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.hermetic import hermetic_aws_environment


@pytest.fixture(autouse=True)
def _no_aws_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    hermetic_aws_environment(monkeypatch, Path("/nonexistent-batchcrew-aws"))


@pytest.fixture(scope="session")
def _doctest_controller() -> Iterator[Any]:
    import batchcrew as bc

    with bc.Controller(workers=2, seconds_idle=30, seed=1) as crew:
        yield crew


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    """Give a docstring example that speaks of `crew` the shared controller, emptied."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    test = request.node.dtest
    if test is None or not any(re.search(r"\bcrew\b", e.source) for e in test.examples):
        return
    crew = request.getfixturevalue("_doctest_controller")
    crew.cancel()
    crew.wait(timeout=60)
    crew.collect()
    doctest_namespace["crew"] = crew
