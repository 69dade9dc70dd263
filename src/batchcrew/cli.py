"""The `batchcrew` command line: a thin layer over the public API.

Each group of subcommands lives beside the code it drives and registers itself here; this
module only builds the parser and turns failures into a one-line reason, naming the options the
user typed, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping, Sequence

from batchcrew.errors import BatchcrewError
from batchcrew.version import __version__

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
    parser.add_argument("--version", action="version", version=f"batchcrew {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
    add_worker_command(subparsers)
    add_aws_commands(subparsers)
    add_local_batch_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Example:
        >>> main(["--version"])  # doctest: +ELLIPSIS
        batchcrew ...
        0
    """
    parser = build_parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version and usage errors end here
        return exit.code if isinstance(exit.code, int) else 2
    handler: Handler = arguments.handler
    try:
        return handler(arguments)
    except (ValueError, TypeError) as error:
        options: Mapping[str, str] = getattr(arguments, "option_names", {})
        print(f"batchcrew {arguments.subcommand}: {with_options(error, options)}", file=sys.stderr)
        return 1
    except BatchcrewError as error:
        print(f"batchcrew {arguments.subcommand}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def with_options(error: Exception, options: Mapping[str, str]) -> str:
    """The message of an argument error with the Python names in it replaced by `options`.

    Library errors name the argument first (`seconds_timeout must be ...`) or as `name=value`;
    on the command line the user typed an option, so that is what the message names.

    Example:
        >>> with_options(ValueError("seconds_timeout must be at least 60, not 30"),
        ...              {"seconds_timeout": "--timeout"})
        '--timeout must be at least 60, not 30'
    """
    message = str(error)
    if not options:
        return message
    names = "|".join(re.escape(name) for name in sorted(options, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w-])({names})(?=( must| applies|:|=))")
    return pattern.sub(lambda match: options[match.group(1)], message)


if __name__ == "__main__":
    sys.exit(main())
