"""AWS Batch support: configuration, job definitions, the monitor and (later) the launcher.

Names are imported on first use, so that importing the package (the command line does, and so
does the worker through it) loads neither boto3 nor pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchcrew.aws.config import AWSConfig
    from batchcrew.aws.definition import JobDefinition
    from batchcrew.aws.monitor import Monitor

__all__ = ["AWSConfig", "JobDefinition", "Monitor"]

_EXPORTS = {
    "AWSConfig": "batchcrew.aws.config",
    "JobDefinition": "batchcrew.aws.definition",
    "Monitor": "batchcrew.aws.monitor",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batchcrew.aws' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
