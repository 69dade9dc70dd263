"""The `batchcrew local-batch` command: a local AWS Batch in the foreground, for dry runs.

Owns the subcommand's arguments, what it prints, and its clean stop on Ctrl-C or SIGTERM. It must
import nothing heavy until the command runs: `batchcrew worker` builds the same parser.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchcrew.localbatch.batch import LocalBatch


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `local-batch` to the top-level `batchcrew` parser.

    Example:
        >>> parser = argparse.ArgumentParser(prog="batchcrew")
        >>> add_command(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["local-batch", "--region", "eu-west-1"]).region
        'eu-west-1'
    """
    parser = subparsers.add_parser(
        "local-batch",
        help="run a local AWS Batch (moto + local processes) for dry runs",
        description=(
            "Run a local AWS Batch in the foreground: moto's Batch API on 127.0.0.1, whose jobs "
            "run as processes on this machine with this Python. Point a pipeline at the printed "
            "endpoint to dry-run it before using AWS. Stop with Ctrl-C."
        ),
    )
    parser.add_argument("--region", default="us-east-1", help="AWS region to emulate")
    parser.add_argument(
        "--job-queue", default="batchcrew-local-queue", help="name of the job queue to create"
    )
    parser.add_argument(
        "--job-definition", default="batchcrew-local", help="name of the job definition to create"
    )
    parser.add_argument(
        "--workdir", default=None, help="directory the jobs run in (default: the current one)"
    )
    parser.add_argument(
        "--log-file", default=None, help="where moto and the engine log (default: a temporary file)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the settings as one JSON line, for scripts"
    )
    parser.set_defaults(handler=run_local_batch)


def run_local_batch(arguments: argparse.Namespace) -> int:
    """Start a `LocalBatch`, print how to use it, and serve until Ctrl-C or SIGTERM.

    Example (not run as a test: it serves until Ctrl-C):
        >>> run_local_batch(argparse.Namespace(region="us-east-1", ...))  # doctest: +SKIP
        0
    """
    from batchcrew.localbatch.batch import LocalBatch, require_local_extra

    require_local_extra()
    stopping = threading.Event()

    def request_stop(number: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {
        number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        local = LocalBatch(
            arguments.region,
            job_queue=arguments.job_queue,
            job_definition=arguments.job_definition,
            workdir=arguments.workdir,
            log_path=arguments.log_file,
        )
        with local:
            _print_settings(local, as_json=arguments.json)
            stopping.wait()
            print("Stopping the local AWS Batch...", file=sys.stderr, flush=True)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0


def _print_settings(local: LocalBatch, as_json: bool) -> None:
    environment = local.environment_variables()
    if as_json:
        settings = {
            "endpoint_url": local.endpoint_url,
            "region": local.region,
            "job_queue": local.job_queue,
            "job_definition": local.job_definition,
            "docker_host": local.docker_host,
            "log_path": local.log_path,
            "environment": environment,
        }
        print(json.dumps(settings), flush=True)
        return
    lines = [
        "Local AWS Batch is running: moto's Batch API, jobs run as local processes.",
        f"  endpoint        {local.endpoint_url}",
        f"  region          {local.region}",
        f"  job queue       {local.job_queue}",
        f"  job definition  {local.job_definition}",
        f"  engine          {local.docker_host}",
        f"  log             {local.log_path}",
        "Point boto3, the AWS CLI and batchcrew at it from another shell:",
        *(f"  export {name}={shlex.quote(value)}" for name, value in environment.items()),
        "Press Ctrl-C to stop; every job process is killed.",
    ]
    print("\n".join(lines), flush=True)
