"""batchcrew: run many long Python tasks on auto-scaled workers, local or on AWS Batch.

Names load on first use, so a worker process (`python -m batchcrew.worker`) imports only what
it runs.

`batchcrew.aws` (AWS Batch) and `batchcrew.localbatch` (a local AWS Batch for dry runs) load
the same way, on first use.

Example:
    >>> import batchcrew as bc
    >>> with bc.Controller(workers=2) as crew:
    ...     crew.map(pow, [2, 3], [10, 2]).values()
    [1024, 9]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import batchcrew.joblib_hook  # noqa: F401 (importing it registers the joblib backend)
from batchcrew.lazy import lazy_exports
from batchcrew.version import __version__

if TYPE_CHECKING:
    from batchcrew import aws, localbatch
    from batchcrew.controller import Controller
    from batchcrew.errors import (
        AWSError,
        BatchcrewError,
        CertificateMismatch,
        ConnectionRefused,
        LaunchError,
        ProtocolError,
        TaskError,
        TerminatedError,
    )
    from batchcrew.executor import ControllerExecutor, TaskFuture
    from batchcrew.launchers.base import (
        ErrorRecord,
        Launcher,
        LaunchHandle,
        LaunchRequest,
        WorkerStatus,
    )
    from batchcrew.launchers.local import LocalLauncher
    from batchcrew.results import Result, Results
    from batchcrew.task import Task
    from batchcrew.tls import TLS

_HOMES = {
    "aws": "batchcrew.aws",
    "localbatch": "batchcrew.localbatch",
    "Controller": "batchcrew.controller",
    "ControllerExecutor": "batchcrew.executor",
    "TaskFuture": "batchcrew.executor",
    "AWSError": "batchcrew.errors",
    "BatchcrewError": "batchcrew.errors",
    "CertificateMismatch": "batchcrew.errors",
    "ConnectionRefused": "batchcrew.errors",
    "LaunchError": "batchcrew.errors",
    "ProtocolError": "batchcrew.errors",
    "TaskError": "batchcrew.errors",
    "TerminatedError": "batchcrew.errors",
    "ErrorRecord": "batchcrew.launchers.base",
    "Launcher": "batchcrew.launchers.base",
    "LaunchHandle": "batchcrew.launchers.base",
    "LaunchRequest": "batchcrew.launchers.base",
    "WorkerStatus": "batchcrew.launchers.base",
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
    "CertificateMismatch",
    "ConnectionRefused",
    "Controller",
    "ControllerExecutor",
    "ErrorRecord",
    "LaunchError",
    "LaunchHandle",
    "LaunchRequest",
    "Launcher",
    "LocalLauncher",
    "ProtocolError",
    "Result",
    "Results",
    "Task",
    "TaskError",
    "TaskFuture",
    "TerminatedError",
    "WorkerStatus",
    "__version__",
    "aws",
    "localbatch",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
