"""The `batchcrew` command line: a thin layer over the public API.

Each group of subcommands lives beside the code it drives and registers itself here; this
module only builds the parser and turns failures into a one-line reason and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from batchcrew.errors import BatchcrewError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the full `batchcrew` argument parser.

    Example:
        >>> parser = build_parser()
        >>> parser.prog
        'batchcrew'
    """
    from batchcrew.aws.commands import add_commands as add_aws_commands
    from batchcrew.localbatch.command import add_command as add_local_batch_command
    from batchcrew.worker import add_command as add_worker_command

    parser = argparse.ArgumentParser(
        prog="batchcrew",
        description="Run Python tasks on auto-scaled workers: local processes or AWS Batch.",
    )
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
    add_worker_command(subparsers)
    add_aws_commands(subparsers)
    add_local_batch_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Example:
        >>> main(["worker", "--help"])  # doctest: +SKIP
    """
    parser = build_parser()
    arguments = parser.parse_args(argv)
    handler: Handler = arguments.handler
    try:
        return handler(arguments)
    except (BatchcrewError, ValueError, TypeError) as error:
        print(f"batchcrew {arguments.subcommand}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
