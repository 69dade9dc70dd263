"""The AWS Batch subcommands of `batchcrew`: jobs, status, logs, terminate, submit, definitions.

Owns argument parsing and output (rich tables for people, `--json` for scripts) over `Monitor`
and `JobDefinition`. boto3, pandas and rich are imported inside the handlers only, so that
`batchcrew worker`, built by the same parser, starts without them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from batchcrew.aws.resources import MEMORY_UNITS
from batchcrew.aws.tables import Column, fitted_table, natural_width
from batchcrew.aws.validation import (
    ACTIVE_STATUSES,
    INACTIVE_STATUSES,
    JOB_STATUSES,
    PLATFORM_CAPABILITIES,
)

if TYPE_CHECKING:
    import pandas as pd

    from batchcrew.aws.config import AWSConfig
    from batchcrew.aws.definition import JobDefinition
    from batchcrew.aws.monitor import Monitor

__all__ = ["ENVIRONMENT_VARIABLES", "OPTION_NAMES", "add_commands"]

ENVIRONMENT_VARIABLES = {
    "queue": "BATCHCREW_QUEUE",
    "definition": "BATCHCREW_DEFINITION",
    "region": "BATCHCREW_REGION",
    "profile": "BATCHCREW_PROFILE",
    "endpoint_url": "BATCHCREW_ENDPOINT_URL",
    "log_group": "BATCHCREW_LOG_GROUP",
}
"""The environment variable that gives each shared option its default."""

OPTION_NAMES = {
    "job_definition": "--definition",
    "job_queue": "--queue",
    "region": "--region",
    "profile": "--profile",
    "endpoint_url": "--endpoint-url",
    "log_group": "--log-group",
    "name": "--name",
    "command": "CMD",
    "job_id": "ID",
    "ids": "ID",
    "reason": "--reason",
    "seconds_interval": "--interval",
    "cpus": "--cpus",
    "gpus": "--gpus",
    "memory": "--memory",
    "memory_units": "--memory-units",
    "environment": "--env",
    "seconds_timeout": "--timeout",
    "image": "--image",
    "platform_capabilities": "--platform",
    "scheduling_priority": "--scheduling-priority",
    "tags": "--tag",
    "parameters": "--parameter",
    "propagate_tags": "--propagate-tags",
    "job_role_arn": "--job-role-arn",
    "execution_role_arn": "--execution-role-arn",
    "assign_public_ip": "--assign-public-ip",
    "revision": "--revision",
}
"""The option of these commands that gives each argument of the Python API, for error messages."""

# `status` and `logs` find jobs by id and `definitions` works by name; neither reads the queue
# (nor, for the first two, the definition), so a stand-in is used when none is configured.
_NOT_USED = "not-used"


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `jobs`, `status`, `logs`, `terminate`, `submit` and `definitions` to `subparsers`.

    Example:
        >>> parser = argparse.ArgumentParser(prog="batchcrew")
        >>> add_commands(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["jobs", "--status", "running"]).status
        ['running']
    """
    common = _common_options()

    jobs = subparsers.add_parser(
        "jobs",
        parents=[common],
        help="list the jobs of a job definition",
        description="List the jobs of a job definition on one or more queues, newest first.",
    )
    jobs.add_argument(
        "--status",
        action="append",
        choices=[*JOB_STATUSES, "active", "inactive"],
        help="only jobs in this state (repeat for several); default: every state",
    )
    jobs.set_defaults(handler=_jobs)

    status = subparsers.add_parser(
        "status",
        parents=[common],
        help="show the status of jobs by id",
        description="Show status, reason, exit code and log stream of jobs.",
    )
    status.add_argument("ids", nargs="+", metavar="ID", help="job id")
    status.set_defaults(handler=_status)

    logs = subparsers.add_parser(
        "logs",
        parents=[common],
        help="print the CloudWatch log of a job",
        description="Print a job's CloudWatch log messages (JSON lines with --json).",
    )
    logs.add_argument("id", metavar="ID", help="job id")
    logs.add_argument(
        "--follow", action="store_true", help="keep printing new messages until the job ends"
    )
    logs.add_argument(
        "--tail", action="store_true", help="start at the latest page of messages, not the first"
    )
    logs.add_argument(
        "--interval",
        type=_non_negative_number,
        default=5.0,
        metavar="SECONDS",
        help="seconds between polls with --follow (default: 5)",
    )
    logs.set_defaults(handler=_logs)

    terminate = subparsers.add_parser(
        "terminate",
        parents=[common],
        help="cancel and terminate jobs",
        description="Cancel (not yet started) and terminate (started) jobs: by id, or --all.",
    )
    terminate.add_argument("ids", nargs="*", metavar="ID", help="job id")
    terminate.add_argument(
        "--all",
        action="store_true",
        help="every active job of the definition on the queues",
    )
    terminate.add_argument("--reason", help="reason recorded with the jobs")
    terminate.set_defaults(handler=_terminate)

    submit = subparsers.add_parser(
        "submit",
        parents=[common],
        help="submit one job running a command",
        description="Submit one job of the definition: batchcrew submit [options] -- CMD...",
    )
    submit.add_argument("--name", help="job name (default: batchcrew-job-<random>)")
    _add_resource_options(submit)
    submit.add_argument(
        "--env",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the container (repeatable)",
    )
    submit.add_argument("--timeout", type=int, metavar="SECONDS", help="attempt time limit (>= 60)")
    # Not `command`: the top-level parser keeps the subcommand's name there.
    submit.add_argument("container_command", nargs="+", metavar="CMD", help="the container command")
    submit.set_defaults(handler=_submit)

    definitions = subparsers.add_parser(
        "definitions",
        help="register, describe or deregister job definitions",
        description="Manage the revisions of a job definition.",
    )
    actions = definitions.add_subparsers(dest="action", metavar="ACTION", required=True)

    register = actions.add_parser(
        "register",
        parents=[common],
        help="register a new container revision",
        description=(
            "Register a new revision of the job definition: a container job that logs to "
            "CloudWatch (the log group, with the definition name as stream prefix)."
        ),
    )
    register.add_argument("--image", required=True, help="Docker Hub name or ECR image URI")
    register.add_argument(
        "--platform",
        type=str.upper,
        choices=PLATFORM_CAPABILITIES,
        default="EC2",
        help="EC2 (default) or FARGATE",
    )
    _add_resource_options(register)
    register.add_argument(
        "--timeout", type=int, metavar="SECONDS", help="attempt time limit (>= 60)"
    )
    register.add_argument("--scheduling-priority", type=int, metavar="N", help="0 to 9999")
    for option, meaning in (
        ("--env", "environment variable for the container"),
        ("--tag", "tag of the job definition"),
        ("--parameter", "default for a Ref:: parameter of the command"),
    ):
        register.add_argument(
            option,
            action="append",
            type=_key_value,
            default=[],
            metavar="KEY=VALUE",
            help=f"{meaning} (repeatable)",
        )
    register.add_argument(
        "--propagate-tags",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy tags to the ECS tasks of the jobs",
    )
    register.add_argument("--job-role-arn", metavar="ARN", help="role the job's code acts as")
    register.add_argument(
        "--execution-role-arn",
        metavar="ARN",
        help="role the agent pulls the image and writes logs with (required on Fargate)",
    )
    register.add_argument(
        "--assign-public-ip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give Fargate jobs a public IP (to reach public registries without NAT)",
    )
    register.set_defaults(handler=_register)

    describe = actions.add_parser(
        "describe",
        parents=[common],
        help="show the revisions",
        description="Show the revisions of the job definition, highest first.",
    )
    describe.add_argument("--revision", type=int, metavar="N", help="only this revision")
    describe.add_argument("--active", action="store_true", help="only active revisions")
    describe.set_defaults(handler=_describe)

    deregister = actions.add_parser(
        "deregister",
        parents=[common],
        help="deregister a revision (default: highest active)",
        description=(
            "Deregister one revision of the job definition (default: the highest active one); "
            "AWS keeps it visible as inactive, and it can run no new jobs."
        ),
    )
    deregister.add_argument("--revision", type=int, metavar="N", help="the revision")
    deregister.set_defaults(handler=_deregister)


# Handlers -------------------------------------------------------------------------------------


def _jobs(arguments: argparse.Namespace) -> int:
    monitor = _monitor(arguments, need_definition=True, need_queue=True)
    frame = monitor.jobs(_expand_statuses(arguments.status))
    columns = [
        Column("name", rank=1),
        Column("id", whole=True),
        Column("status", whole=True),
        Column("reason", rank=4),
        Column("created", whole=True, rank=3),
        Column("started", whole=True, rank=5),
        Column("stopped", whole=True, rank=6),
    ]
    if len(monitor.job_queues) > 1:
        columns.insert(2, Column("queue", whole=True, rank=2))
    if not arguments.json and frame.empty:
        _say(f"no jobs of {monitor.job_definition} on {', '.join(monitor.job_queues)}")
        return 0
    _show(arguments, frame, columns, title=f"Jobs of {monitor.job_definition}")
    return 0


def _status(arguments: argparse.Namespace) -> int:
    monitor = _monitor(arguments, need_definition=False, need_queue=False)
    frame = monitor.status(arguments.ids)
    columns = [
        Column("name", rank=1),
        Column("id", whole=True),
        Column("queue", whole=True, rank=3),
        Column("status", whole=True),
        Column("reason", rank=4),
        Column("exit_code", whole=True, rank=2),
        Column("log_stream", rank=5),
        Column("created", whole=True, rank=6),
        Column("started", whole=True, rank=7),
        Column("stopped", whole=True, rank=8),
    ]
    _show(arguments, frame, columns, title="Job status")
    return 0


def _logs(arguments: argparse.Namespace) -> int:
    monitor = _monitor(arguments, need_definition=False, need_queue=False)
    events = monitor.events(
        arguments.id,
        start_from_head=not arguments.tail,
        follow=arguments.follow,
        seconds_interval=arguments.interval,
    )
    for event in events:
        if arguments.json:
            record = {
                "message": event.message,
                "timestamp": event.logged_at.isoformat(),
                "ingestion_time": _iso_milliseconds(event.ingestion_time),
            }
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            sys.stdout.write(event.message.rstrip("\n") + "\n")
        sys.stdout.flush()
    return 0


def _terminate(arguments: argparse.Namespace) -> int:
    if arguments.all and arguments.ids:
        raise ValueError("give job ids or --all, not both")
    if not arguments.all and not arguments.ids:
        raise ValueError("give the ids of the jobs to end, or --all")
    monitor = _monitor(arguments, need_definition=arguments.all, need_queue=arguments.all)
    keywords: dict[str, Any] = {}
    if arguments.reason is not None:
        keywords["reason"] = arguments.reason
    progress = _ProgressBar("Ending jobs") if sys.stderr.isatty() and not arguments.json else None
    try:
        if progress is not None:
            keywords["progress"] = progress.update
        if arguments.all:
            done = monitor.terminate(all=True, **keywords)
        else:
            done = monitor.terminate(ids=arguments.ids, **keywords)
    finally:
        if progress is not None:
            progress.close()
    if arguments.json:
        report = {"terminated": done.ended, "finished": done.finished, "unknown": done.unknown}
        sys.stdout.write(json.dumps(report) + "\n")
    elif done.ended:
        count = len(done.ended)
        sys.stdout.write(f"asked AWS Batch to end {count} job(s): {', '.join(done.ended)}\n")
    elif arguments.all:
        _say("no active jobs to end")
    if not arguments.json and done.finished:
        _say(f"already finished, nothing to end: {', '.join(done.finished)}")
    if not arguments.json and done.unknown:
        _say(f"no such job in {monitor.aws.region}: {', '.join(done.unknown)}")
    return 1 if done.unknown and not done.ended else 0


def _submit(arguments: argparse.Namespace) -> int:
    monitor = _monitor(arguments, need_definition=True, need_queue=True)
    frame = monitor.submit(
        arguments.container_command,
        arguments.name,
        cpus=arguments.cpus,
        gpus=arguments.gpus,
        memory=arguments.memory,
        memory_units=arguments.memory_units,
        environment=dict(arguments.env) or None,
        seconds_timeout=arguments.timeout,
    )
    columns = [Column("name", rank=1), Column("id", whole=True), Column("arn", whole=True, rank=2)]
    _show(arguments, frame, columns, title="Submitted")
    return 0


def _register(arguments: argparse.Namespace) -> int:
    definition = _definition(arguments)
    frame = definition.register(
        image=arguments.image,
        platform_capabilities=arguments.platform,
        memory=arguments.memory,
        memory_units=arguments.memory_units,
        cpus=arguments.cpus,
        gpus=arguments.gpus,
        seconds_timeout=arguments.timeout,
        scheduling_priority=arguments.scheduling_priority,
        tags=dict(arguments.tag) or None,
        propagate_tags=arguments.propagate_tags,
        parameters=dict(arguments.parameter) or None,
        job_role_arn=arguments.job_role_arn,
        execution_role_arn=arguments.execution_role_arn,
        environment=dict(arguments.env) or None,
        assign_public_ip=arguments.assign_public_ip,
    )
    columns = [
        Column("name", whole=True),
        Column("revision", whole=True),
        Column("arn", whole=True, rank=1),
    ]
    _show(arguments, frame, columns, title="Registered")
    return 0


def _describe(arguments: argparse.Namespace) -> int:
    definition = _definition(arguments)
    frame = definition.describe(revision=arguments.revision, active=arguments.active)
    if not arguments.json and frame.empty:
        _say(f"no revisions of job definition {definition.job_definition} match")
        return 0
    _show_definitions(arguments, frame, title=f"Job definition {definition.job_definition}")
    return 0


def _deregister(arguments: argparse.Namespace) -> int:
    definition = _definition(arguments)
    frame = definition.deregister(revision=arguments.revision)
    _show_definitions(arguments, frame, title="Deregistered")
    return 0


# Settings -------------------------------------------------------------------------------------


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.set_defaults(option_names=OPTION_NAMES)
    group = common.add_argument_group(
        "AWS settings (each also read from the BATCHCREW_* variable named in its help)"
    )
    group.add_argument(
        "--queue",
        action="append",
        metavar="QUEUE",
        help="job queue name or ARN, repeatable [BATCHCREW_QUEUE, comma-separated]",
    )
    group.add_argument(
        "--definition", metavar="NAME", help="job definition name [BATCHCREW_DEFINITION]"
    )
    group.add_argument("--region", help="AWS region [BATCHCREW_REGION, then AWS_REGION]")
    group.add_argument("--profile", help="AWS profile [BATCHCREW_PROFILE]")
    group.add_argument(
        "--endpoint-url", metavar="URL", help="AWS endpoint override [BATCHCREW_ENDPOINT_URL]"
    )
    group.add_argument(
        "--log-group", metavar="GROUP", help="CloudWatch log group [BATCHCREW_LOG_GROUP]"
    )
    output = common.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print JSON for scripts")
    output.add_argument(
        "--verbose", action="store_true", help="log each AWS retry and action on stderr"
    )
    return common


def _setting(arguments: argparse.Namespace, name: str) -> str | None:
    given = getattr(arguments, name, None)
    if given:
        return str(given)
    return os.environ.get(ENVIRONMENT_VARIABLES[name]) or None


def _aws_config(arguments: argparse.Namespace) -> AWSConfig:
    _configure_logging(arguments.verbose)
    from batchcrew.aws.config import AWSConfig

    return AWSConfig(
        region=_setting(arguments, "region"),
        profile=_setting(arguments, "profile"),
        endpoint_url=_setting(arguments, "endpoint_url"),
    )


def _queues(arguments: argparse.Namespace, required: bool) -> list[str]:
    given: list[str] = arguments.queue or []
    if not given:
        given = [os.environ.get(ENVIRONMENT_VARIABLES["queue"], "")]
    queues = [queue.strip() for item in given for queue in item.split(",") if queue.strip()]
    if not queues:
        if required:
            raise ValueError("no job queue: pass --queue NAME or set BATCHCREW_QUEUE")
        return [_NOT_USED]
    return queues


def _definition_name(arguments: argparse.Namespace, required: bool) -> str:
    name = _setting(arguments, "definition")
    if name is None:
        if required:
            raise ValueError(
                "no job definition: pass --definition NAME or set BATCHCREW_DEFINITION"
            )
        return _NOT_USED
    return name


def _log_group(arguments: argparse.Namespace) -> str:
    from batchcrew.aws.logs import DEFAULT_LOG_GROUP

    return _setting(arguments, "log_group") or DEFAULT_LOG_GROUP


def _monitor(arguments: argparse.Namespace, need_definition: bool, need_queue: bool) -> Monitor:
    from batchcrew.aws.monitor import Monitor

    definition = _definition_name(arguments, need_definition)
    queues = _queues(arguments, need_queue)
    return Monitor(definition, queues, _log_group(arguments), _aws_config(arguments))


def _definition(arguments: argparse.Namespace) -> JobDefinition:
    from batchcrew.aws.definition import JobDefinition

    name = _definition_name(arguments, required=True)
    queue = _queues(arguments, required=False)[0]
    return JobDefinition(name, queue, _log_group(arguments), _aws_config(arguments))


def _expand_statuses(asked: Sequence[str] | None) -> list[str] | None:
    if not asked:
        return None
    groups = {"active": ACTIVE_STATUSES, "inactive": INACTIVE_STATUSES}
    expanded = [state for each in asked for state in groups.get(each, (each,))]
    return list(dict.fromkeys(expanded))


def _configure_logging(verbose: bool) -> None:
    """Show batchcrew's warnings (and, with --verbose, its info) as one line each on stderr."""
    package_logger = logging.getLogger("batchcrew")
    package_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    if not package_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("batchcrew: %(message)s"))
        package_logger.addHandler(handler)
        package_logger.propagate = False


# Argument types -------------------------------------------------------------------------------


def _add_resource_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpus", type=float, metavar="N", help="vCPUs")
    parser.add_argument("--gpus", type=int, metavar="N", help="GPUs")
    parser.add_argument("--memory", type=float, metavar="AMOUNT", help="memory in --memory-units")
    parser.add_argument(
        "--memory-units",
        choices=list(MEMORY_UNITS),
        default="gigabytes",
        help="unit of --memory (default: gigabytes, 10^9 bytes)",
    )


def _key_value(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def _non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, not {text!r}")
    return value


# Output ---------------------------------------------------------------------------------------


def _show(
    arguments: argparse.Namespace, frame: pd.DataFrame, columns: list[Column], title: str
) -> None:
    """Print `frame` as JSON (all columns) or as a table of `columns`: fitted to a terminal,
    never wrapped in a file or a pipe."""
    if arguments.json:
        sys.stdout.write(json.dumps(_records(frame), indent=2) + "\n")
        return
    from rich.console import Console

    rows = [[_cell(row[column.name]) for column in columns] for _, row in frame.iterrows()]
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    table = fitted_table(title, columns, rows, width)
    Console(width=width or natural_width(columns, rows)).print(table)


def _show_definitions(arguments: argparse.Namespace, frame: pd.DataFrame, title: str) -> None:
    shown = frame.copy()
    properties = [each if isinstance(each, dict) else {} for each in shown["container_properties"]]
    shown["image"] = [each.get("image") for each in properties]
    shown["resources"] = [_resources_text(each) for each in properties]
    columns = [
        Column("name", rank=1),
        Column("revision", whole=True),
        Column("status", whole=True),
        Column("platform_capabilities", whole=True, rank=2),
        Column("image", rank=3),
        Column("resources", rank=4),
    ]
    _show(arguments, frame if arguments.json else shown, columns, title)


def _resources_text(container_properties: dict[str, Any]) -> str:
    units = {"VCPU": "vCPU", "MEMORY": "MiB", "GPU": "GPU"}
    parts = [
        f"{entry.get('value')} {units.get(str(entry.get('type')), entry.get('type'))}"
        for entry in container_properties.get("resourceRequirements") or []
    ]
    return ", ".join(parts)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(column): _json_value(value) for column, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, datetime):
        return None if _is_missing(value) else value.isoformat()
    if isinstance(value, (str, bool)):
        return value
    if _is_missing(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _cell(value: Any) -> str:
    if value is None or _is_missing(value):
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _is_missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _iso_milliseconds(value: int | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC).isoformat()


def _say(message: str) -> None:
    sys.stderr.write(f"{message}\n")


class _ProgressBar:
    """A rich progress bar on stderr (made only when stderr is a terminal), shown once there is
    more than one job."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._progress: Any = None
        self._task: Any = None

    def update(self, done: int, total: int) -> None:
        if total <= 1:
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import Progress

            self._progress = Progress(console=Console(stderr=True))
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=total)
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
