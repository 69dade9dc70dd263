"""The same demo with workers as AWS Batch jobs, on a local AWS Batch (nothing reaches AWS).

A LocalBatch starts moto's Batch API and an engine that runs each job as a local process in
its own memory limit; `bc.aws.controller()` launches the workers as array jobs there, exactly
as it would on AWS, and the monitor lists the jobs afterwards.
"""

from __future__ import annotations

import time

from demo import run
from rich.console import Console

import batchcrew as bc


def main() -> None:
    console = Console()
    with bc.localbatch.LocalBatch() as local:
        console.print(f"local AWS Batch at {local.endpoint_url}, queue {local.job_queue}")
        aws = local.aws_config()
        options = bc.aws.Options(
            local.job_definition, local.job_queue, memory=[1, 2], memory_units="GiB"
        )
        run(bc.aws.controller(workers=4, options=options, aws=aws, seconds_idle=10, seed=2024))
        monitor = bc.aws.Monitor(local.job_definition, local.job_queue, aws=aws)
        deadline = time.monotonic() + 30
        while not monitor.active().empty and time.monotonic() < deadline:
            time.sleep(0.5)  # the workers' jobs finish once their workers have left
        jobs = monitor.jobs()
        console.print(f"{len(jobs)} Batch job(s) ran the workers:")
        console.print(jobs[["name", "id", "status"]].to_string(index=False))


if __name__ == "__main__":
    main()
