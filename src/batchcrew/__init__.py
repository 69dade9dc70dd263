"""batchcrew: run many long Python tasks on auto-scaled workers, local or on AWS Batch.

Names load on first use, so a worker process (`python -m batchcrew.worker`) imports only what
it runs.

Example:
    >>> import batchcrew as bc
    >>> with bc.Controller(workers=2) as crew:  # doctest: +SKIP
    ...     crew.map(pow, [2, 3], [10, 2]).values()
    [1024, 9]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchcrew.lazy import lazy_exports
from batchcrew.version import __version__

if TYPE_CHECKING:
    from batchcrew import aws, localbatch
    from batchcrew.controller import Controller
    from batchcrew.errors import (
        AWSError,
        BatchcrewError,
        LaunchError,
        ProtocolError,
        TaskError,
        TerminatedError,
    )
    from batchcrew.executor import ControllerExecutor
    from batchcrew.launchers.base import Launcher, LaunchRequest
    from batchcrew.launchers.local import LocalLauncher
    from batchcrew.results import Result, Results
    from batchcrew.task import Task
    from batchcrew.tls import TLS

_HOMES = {
    "aws": "batchcrew.aws",
    "localbatch": "batchcrew.localbatch",
    "Controller": "batchcrew.controller",
    "ControllerExecutor": "batchcrew.executor",
    "AWSError": "batchcrew.errors",
    "BatchcrewError": "batchcrew.errors",
    "LaunchError": "batchcrew.errors",
    "ProtocolError": "batchcrew.errors",
    "TaskError": "batchcrew.errors",
    "TerminatedError": "batchcrew.errors",
    "Launcher": "batchcrew.launchers.base",
    "LaunchRequest": "batchcrew.launchers.base",
    "LocalLauncher": "batchcrew.launchers.local",
    "Result": "batchcrew.results",
    "Results": "batchcrew.results",
    "Task": "batchcrew.task",
    "TLS": "batchcrew.tls",
}

__all__ = [
    "TLS",
    "AWSError",
    "BatchcrewError",
    "Controller",
    "ControllerExecutor",
    "LaunchError",
    "LaunchRequest",
    "Launcher",
    "LocalLauncher",
    "ProtocolError",
    "Result",
    "Results",
    "Task",
    "TaskError",
    "TerminatedError",
    "__version__",
    "aws",
    "localbatch",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
