"""Keeping boto3 in the test process away from this machine's AWS profiles, files and endpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def hermetic_aws_environment(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Drop every AWS_* variable; point the AWS config and credentials files at nothing."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(directory / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(directory / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
