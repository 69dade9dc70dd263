"""`batchcrew.aws.controller()`: a controller whose workers are AWS Batch jobs.

Owns only the defaults that suit AWS (a long launch window, workers kept idle for minutes) and
the wiring of `Options` into a `BatchLauncher`; the controller itself is the one of
`batchcrew.Controller`, used exactly as the local one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from batchcrew.aws.config import AWSConfig
from batchcrew.aws.launcher import BatchLauncher
from batchcrew.aws.options import Options
from batchcrew.controller import Controller

if TYPE_CHECKING:
    from batchcrew.tls import TLS

__all__ = ["controller"]


def controller(
    name: str | None = None,
    workers: int = 1,
    *,
    host: str | None = None,
    port: int = 0,
    tls: TLS | Literal["automatic"] | None = "automatic",
    seconds_launch: float = 1800.0,
    seconds_idle: float = 300.0,
    seconds_wall: float | None = None,
    tasks_max: int | None = None,
    crashes_max: int = 5,
    processes: int | None = 4,
    options: Options,
    aws: AWSConfig | None = None,
    seed: int | None = None,
) -> Controller:
    """A `batchcrew.Controller` that launches up to `workers` workers as AWS Batch jobs.

    `options` (an `Options`) says which job definition and queue the workers run on, with what
    resources (lists of them make the memory levels a task climbs after an out-of-memory kill).
    `aws` is the region, profile or endpoint (default: `AWSConfig()`); `processes` threads make
    the AWS calls (None: in the calling thread, so that errors show at once). The controller
    listens on `host` (default: this machine's own address in its network, which jobs in the
    same VPC reach) and `port` (0: any free port; fix it for a security group that opens only
    one). A launch that has not connected after `seconds_launch` is written off and ended; the
    other arguments are `batchcrew.Controller`'s.

    Example (on a local Batch, `local`; on AWS, your own job definition and queue, and
    `aws=bc.aws.AWSConfig(region=...)` or none):

        >>> import batchcrew as bc
        >>> options = bc.aws.Options(
        ...     local.job_definition, local.job_queue, cpus=1, memory=[1, 2], memory_units="GiB"
        ... )
        >>> crew = bc.aws.controller(
        ...     name="my_workflow", workers=2, tasks_max=2, seconds_launch=600, seconds_idle=60,
        ...     options=options, aws=local.aws_config(),
        ... )
        >>> with crew:
        ...     crew.map(pow, [2, 3], [10, 2]).values()
        [1024, 9]
    """
    return Controller(
        BatchLauncher(options, aws, processes),
        name=name,
        workers=workers,
        host=host,
        port=port,
        tls=tls,
        seconds_launch=seconds_launch,
        seconds_idle=seconds_idle,
        seconds_wall=seconds_wall,
        tasks_max=tasks_max,
        crashes_max=crashes_max,
        seed=seed,
    )
