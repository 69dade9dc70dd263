"""Every test, docstring examples included, runs with boto3 kept away from this machine's AWS
configuration: no AWS_* variable, no config or credentials file, no instance metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.hermetic import hermetic_aws_environment


@pytest.fixture(autouse=True)
def _no_aws_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    hermetic_aws_environment(monkeypatch, Path("/nonexistent-batchcrew-aws"))
