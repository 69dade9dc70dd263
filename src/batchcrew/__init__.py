"""batchcrew: run many long Python tasks on auto-scaled workers, local or on AWS Batch.

Example:
    >>> import batchcrew as bc
    >>> with bc.Controller(workers=2) as crew:  # doctest: +SKIP
    ...     crew.map(pow, [2, 3], [10, 2]).values()
    [1024, 9]
"""

from batchcrew.controller import Controller
from batchcrew.errors import AWSError, BatchcrewError, LaunchError, ProtocolError, TaskError
from batchcrew.executor import ControllerExecutor
from batchcrew.launchers import Launcher, LaunchRequest, LocalLauncher
from batchcrew.results import Result, Results
from batchcrew.task import Task
from batchcrew.tls import TLS
from batchcrew.version import __version__

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
    "__version__",
]
