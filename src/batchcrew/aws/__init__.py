"""AWS Batch support: configuration, job definitions, the monitor and (later) the launcher.

Names are imported on first use, so that importing the package (the command line does, and so
does the worker through it) loads neither boto3 nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchcrew.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
