"""AWS Batch support: configuration, job definitions, the monitor, and workers as Batch jobs.

Names are imported on first use, so that importing the package (the command line does, and so
does the worker through it) loads neither boto3 nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchcrew.lazy import lazy_exports

if TYPE_CHECKING:
    from batchcrew.aws.batch_controller import controller
    from batchcrew.aws.config import AWSConfig
    from batchcrew.aws.definition import JobDefinition
    from batchcrew.aws.launcher import BatchLauncher
    from batchcrew.aws.monitor import Monitor
    from batchcrew.aws.options import Options

__all__ = ["AWSConfig", "BatchLauncher", "JobDefinition", "Monitor", "Options", "controller"]

_EXPORTS = {
    "AWSConfig": "batchcrew.aws.config",
    "BatchLauncher": "batchcrew.aws.launcher",
    "JobDefinition": "batchcrew.aws.definition",
    "Monitor": "batchcrew.aws.monitor",
    "Options": "batchcrew.aws.options",
    "controller": "batchcrew.aws.batch_controller",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
