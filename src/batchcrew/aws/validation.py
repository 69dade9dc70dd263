"""Checks of the arguments batchcrew sends to AWS Batch, made before any call.

Owns the rules AWS documents for names, ids, tags, environments, commands and timeouts, and
turns valid values into request shapes. Pure code: no AWS calls, no boto3.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ACTIVE_STATUSES",
    "INACTIVE_STATUSES",
    "JOB_STATUSES",
    "PLATFORM_CAPABILITIES",
    "check_command",
    "check_definition_reference",
    "check_int",
    "check_job_ids",
    "check_job_name",
    "check_optional_bool",
    "check_platform",
    "check_priority",
    "check_queue_reference",
    "check_resource_name",
    "check_role_arn",
    "check_statuses",
    "check_string_map",
    "check_text",
    "environment_list",
    "extra_container_overrides",
    "retry_strategy_request",
    "shared_request_fields",
    "timeout_request",
]

JOB_STATUSES = ("submitted", "pending", "runnable", "starting", "running", "succeeded", "failed")
"""AWS Batch job states in lifecycle order, as batchcrew writes them (lower case)."""
ACTIVE_STATUSES = JOB_STATUSES[:5]
INACTIVE_STATUSES = JOB_STATUSES[5:]
PLATFORM_CAPABILITIES = ("EC2", "FARGATE")
"""The platforms a container job definition can target."""

_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_RESOURCE_NAME = r"[A-Za-z0-9_-]{1,128}"
_RESOURCE_NAME_ONLY = re.compile(rf"^{_RESOURCE_NAME}$")
_BATCH_ARN = r"arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}"
_DEFINITION_REFERENCE = re.compile(
    rf"^(?:{_BATCH_ARN}:job-definition/)?{_RESOURCE_NAME}(?::[1-9]\d*)?$"
)
_QUEUE_REFERENCE = re.compile(rf"^(?:{_BATCH_ARN}:job-queue/)?{_RESOURCE_NAME}$")
_NAME_RULE = "1 to 128 letters, digits, '-' or '_'"
_ROLE_ARN = re.compile(r"^arn:[a-z0-9-]+:iam::\d{12}:role/\S+$")
_SECONDS_TIMEOUT_MIN = 60
_RESERVED_ENVIRONMENT_PREFIX = "AWS_BATCH"
_RETRY_ATTEMPTS_MAX = 10
_EVALUATE_ON_EXIT_MAX = 5
_EVALUATE_ON_EXIT_KEYS = ("action", "onStatusReason", "onReason", "onExitCode")
_EVALUATE_ON_EXIT_TEXT_MAX = 512
_RETRY_ACTIONS = ("RETRY", "EXIT")
_OVERRIDES_SET_BY_BATCHCREW = {
    "command": "the worker command is batchcrew's",
    "environment": "give variables with environment=",
    "resourceRequirements": "give resources with cpus=, gpus= and memory=",
    "vcpus": "give resources with cpus=",
    "memory": "give resources with memory=",
}
_OVERRIDES_PASSED_ON = ("instanceType",)


def check_text(argument: str, value: object) -> str:
    """`value` if it is a non-empty string without surrounding spaces; else an error.

    Example:
        >>> check_text("job_queue", "my-queue")
        'my-queue'
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string, not {type(value).__name__}")
    if not value or value != value.strip():
        raise ValueError(f"{argument} must be a non-empty string without surrounding spaces")
    return value


def check_job_name(value: object) -> str:
    """A valid AWS Batch job name: 1-128 letters, digits, `-` or `_`, starting alphanumeric.

    Example:
        >>> check_job_name("fit-model_3")
        'fit-model_3'
    """
    rule = "1 to 128 letters, digits, '-' or '_' and start with a letter or digit"
    return _check_name("name", value, _JOB_NAME, rule)


def check_resource_name(argument: str, value: object) -> str:
    """A job queue or job definition name: 1-128 letters, digits, `-` or `_`.

    Example:
        >>> check_resource_name("job_definition", "my-definition")
        'my-definition'
    """
    return _check_name(argument, value, _RESOURCE_NAME_ONLY, _NAME_RULE)


def check_definition_reference(value: object, argument: str = "job_definition") -> str:
    """A job definition as SubmitJob takes it: a name, `name:revision`, or an ARN (with or
    without the revision); the name follows `check_resource_name`'s rule.

    Example:
        >>> check_definition_reference("my-definition:3")
        'my-definition:3'
        >>> check_definition_reference("my definition")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: job_definition must be a name of ... ARN, not 'my definition'
    """
    rule = f"be a name of {_NAME_RULE} (with ':revision' if you like) or a job definition ARN"
    return _check_reference(argument, value, _DEFINITION_REFERENCE, rule)


def check_queue_reference(value: object, argument: str = "job_queue") -> str:
    """A job queue by name (1-128 letters, digits, `-` or `_`) or by ARN.

    Example:
        >>> check_queue_reference("arn:aws:batch:us-east-1:123456789012:job-queue/my-queue")
        'arn:aws:batch:us-east-1:123456789012:job-queue/my-queue'
    """
    rule = f"be a name of {_NAME_RULE} or a job queue ARN"
    return _check_reference(argument, value, _QUEUE_REFERENCE, rule)


def _check_reference(argument: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    reference = check_text(argument, value)
    if not pattern.match(reference):
        raise ValueError(f"{argument} must {rule}, not {reference!r}")
    return reference


def _check_name(argument: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    name = check_text(argument, value)
    if not pattern.match(name):
        raise ValueError(f"{argument} must have {rule}, not {name!r}")
    return name


def check_job_ids(value: object, argument: str = "ids") -> list[str]:
    """One job id or a sequence of them, as a list without repeats (order kept).

    Example:
        >>> check_job_ids(["a", "b", "a"])
        ['a', 'b']
    """
    if isinstance(value, str):
        return [check_text(argument, value)]
    if not isinstance(value, Sequence):
        raise TypeError(f"{argument} must be a job id or a list of job ids")
    ids = [check_text(argument, item) for item in value]
    return list(dict.fromkeys(ids))


def check_command(value: object) -> list[str]:
    """A container command: a non-empty list of strings (not one string, which would be one word).

    Example:
        >>> check_command(["echo", "hello"])
        ['echo', 'hello']
    """
    if isinstance(value, str):
        raise TypeError(
            f"command must be a list of strings such as ['echo', 'hello'], not the string {value!r}"
        )
    if not isinstance(value, Sequence) or not value:
        raise ValueError("command must be a non-empty list of strings")
    for word in value:
        if not isinstance(word, str):
            raise TypeError(f"command must hold only strings, not {type(word).__name__}")
        if not word:
            raise ValueError("command must not hold empty strings (AWS Batch refuses them)")
    return list(value)


def check_string_map(argument: str, value: object) -> dict[str, str] | None:
    """None, or a mapping of non-empty string keys to string values, as a dict.

    Example:
        >>> check_string_map("tags", {"project": "fit"})
        {'project': 'fit'}
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{argument} must be a mapping of strings to strings")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{argument} keys must be non-empty strings, not {key!r}")
        if not isinstance(item, str):
            raise TypeError(f"{argument}[{key!r}] must be a string, not {type(item).__name__}")
        result[key] = item
    return result


def environment_list(value: object) -> list[dict[str, str]] | None:
    """The AWS `environment` list for a mapping of variables; names may not start `AWS_BATCH`.

    Example:
        >>> environment_list({"STAGE": "test"})
        [{'name': 'STAGE', 'value': 'test'}]
    """
    variables = check_string_map("environment", value)
    if variables is None:
        return None
    for name in variables:
        if name.startswith(_RESERVED_ENVIRONMENT_PREFIX):
            raise ValueError(
                f"environment: {name!r} is reserved; AWS Batch sets variables starting with "
                f"{_RESERVED_ENVIRONMENT_PREFIX}"
            )
    return [{"name": name, "value": item} for name, item in variables.items()]


def check_int(argument: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """`value` as an int if it is a whole number from `minimum` to `maximum`; else an error naming
    the range. numpy integers (a revision read from a DataFrame) count.

    Example:
        >>> check_int("revision", 3, minimum=1)
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument} must be an int, not {type(value).__name__}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"{argument} must be at least {minimum}{upper}, not {value}")
    return value


def check_optional_bool(argument: str, value: object) -> bool | None:
    """None or a bool; anything else is an error.

    Example:
        >>> check_optional_bool("propagate_tags", True)
        True
    """
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(f"{argument} must be True, False or None, not {type(value).__name__}")


def check_role_arn(argument: str, value: object) -> str | None:
    """None or an IAM role ARN such as `arn:aws:iam::123456789012:role/name`.

    Example:
        >>> check_role_arn("job_role_arn", "arn:aws:iam::123456789012:role/batch-job")
        'arn:aws:iam::123456789012:role/batch-job'
    """
    if value is None:
        return None
    arn = check_text(argument, value)
    if not _ROLE_ARN.match(arn):
        raise ValueError(
            f"{argument} must be an IAM role ARN such as "
            f"'arn:aws:iam::123456789012:role/name', not {arn!r}"
        )
    return arn


def shared_request_fields(
    seconds_timeout: object, tags: object, propagate_tags: object, parameters: object
) -> dict[str, Any]:
    """`timeout`, `tags`, `propagateTags` and `parameters`, as RegisterJobDefinition and SubmitJob
    take them; arguments left None are left out.

    Example:
        >>> shared_request_fields(600, None, True, None)
        {'timeout': {'attemptDurationSeconds': 600}, 'propagateTags': True}
    """
    fields = {
        "timeout": timeout_request(seconds_timeout),
        "tags": check_string_map("tags", tags),
        "propagateTags": check_optional_bool("propagate_tags", propagate_tags),
        "parameters": check_string_map("parameters", parameters),
    }
    return {key: value for key, value in fields.items() if value is not None}


def check_priority(argument: str, value: object) -> int | None:
    """None or a scheduling priority from 0 to 9999.

    Example:
        >>> check_priority("scheduling_priority", 50)
        50
    """
    return None if value is None else check_int(argument, value, 0, 9999)


def timeout_request(seconds_timeout: object) -> dict[str, Any] | None:
    """The AWS `timeout` shape; AWS Batch's minimum attempt duration is 60 seconds.

    Example:
        >>> timeout_request(600)
        {'attemptDurationSeconds': 600}
    """
    if seconds_timeout is None:
        return None
    seconds = check_int("seconds_timeout", seconds_timeout, minimum=_SECONDS_TIMEOUT_MIN)
    return {"attemptDurationSeconds": seconds}


def check_statuses(status: str | Sequence[str] | None) -> list[str]:
    """Job states asked for, lower case, in lifecycle order; None means all of them.

    Example:
        >>> check_statuses(["RUNNING", "runnable"])
        ['runnable', 'running']
    """
    if status is None:
        return list(JOB_STATUSES)
    asked = [status] if isinstance(status, str) else list(status)
    if not asked:
        raise ValueError(f"status must name at least one of {', '.join(JOB_STATUSES)}")
    for each in asked:
        if not isinstance(each, str) or each.lower() not in JOB_STATUSES:
            raise ValueError(f"status must be one of {', '.join(JOB_STATUSES)}, not {each!r}")
    wanted = {each.lower() for each in asked}
    return [each for each in JOB_STATUSES if each in wanted]


def check_platform(value: object) -> str:
    """`EC2` or `FARGATE` (any case), upper case.

    Example:
        >>> check_platform("fargate")
        'FARGATE'
    """
    if not isinstance(value, str):
        raise TypeError(f"platform_capabilities must be a string, not {type(value).__name__}")
    platform = value.upper()
    if platform not in PLATFORM_CAPABILITIES:
        raise ValueError(
            f"platform_capabilities must be one of {', '.join(PLATFORM_CAPABILITIES)}, "
            f"not {value!r}"
        )
    return platform


def retry_strategy_request(value: object) -> dict[str, Any] | None:
    """None, or AWS's `retryStrategy` shape checked against its documented limits.

    `attempts` is 1 to 10; `evaluateOnExit` holds up to 5 conditions, each with an `action`
    (`RETRY` or `EXIT`, any case) and optional `onStatusReason`, `onReason` and `onExitCode`
    patterns of at most 512 characters.

    Example:
        >>> retry_strategy_request({"attempts": 2, "evaluateOnExit": [
        ...     {"action": "retry", "onStatusReason": "Host EC2*"}]})
        {'attempts': 2, 'evaluateOnExit': [{'action': 'RETRY', 'onStatusReason': 'Host EC2*'}]}
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            "retry_strategy must be a mapping such as {'attempts': 2}, "
            f"not {type(value).__name__}"
        )
    _check_keys("retry_strategy", value, ("attempts", "evaluateOnExit"))
    strategy: dict[str, Any] = {}
    if "attempts" in value:
        strategy["attempts"] = check_int(
            "retry_strategy['attempts']", value["attempts"], 1, _RETRY_ATTEMPTS_MAX
        )
    if "evaluateOnExit" in value:
        conditions = value["evaluateOnExit"]
        if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Sequence):
            raise TypeError("retry_strategy['evaluateOnExit'] must be a list of mappings")
        if len(conditions) > _EVALUATE_ON_EXIT_MAX:
            raise ValueError(
                f"retry_strategy['evaluateOnExit'] may hold at most {_EVALUATE_ON_EXIT_MAX} "
                f"conditions, not {len(conditions)}"
            )
        strategy["evaluateOnExit"] = [_evaluate_on_exit(condition) for condition in conditions]
    return strategy


def _evaluate_on_exit(condition: object) -> dict[str, str]:
    argument = "retry_strategy['evaluateOnExit']"
    if not isinstance(condition, Mapping):
        raise TypeError(f"{argument} must hold mappings, not {type(condition).__name__}")
    _check_keys(argument, condition, _EVALUATE_ON_EXIT_KEYS)
    action = condition.get("action")
    if not isinstance(action, str) or action.upper() not in _RETRY_ACTIONS:
        raise ValueError(f"{argument}: action must be RETRY or EXIT, not {action!r}")
    checked = {"action": action.upper()}
    for key in _EVALUATE_ON_EXIT_KEYS[1:]:
        if key in condition:
            pattern = check_text(f"{argument}[{key!r}]", condition[key])
            if len(pattern) > _EVALUATE_ON_EXIT_TEXT_MAX:
                raise ValueError(
                    f"{argument}[{key!r}] must have at most {_EVALUATE_ON_EXIT_TEXT_MAX} characters"
                )
            checked[key] = pattern
    return checked


def extra_container_overrides(value: object) -> dict[str, Any] | None:
    """None, or the `containerOverrides` members batchcrew passes on as they are.

    batchcrew writes the command, the environment and the resources of its jobs itself, so
    those members are refused with a pointer to the argument that sets them; of the others,
    `instanceType` (for multi-node jobs) is passed on.

    Example:
        >>> extra_container_overrides({"instanceType": "c5.xlarge"})
        {'instanceType': 'c5.xlarge'}
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"container_overrides must be a mapping, not {type(value).__name__}")
    for key in value:
        if key in _OVERRIDES_SET_BY_BATCHCREW:
            raise ValueError(
                f"container_overrides must not set {key!r}: {_OVERRIDES_SET_BY_BATCHCREW[key]}"
            )
    _check_keys("container_overrides", value, _OVERRIDES_PASSED_ON)
    return {key: check_text(f"container_overrides[{key!r}]", item) for key, item in value.items()}


def _check_keys(argument: str, value: Mapping[Any, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(map(str, set(value) - set(allowed)))
    if unknown:
        raise ValueError(
            f"{argument} has unknown keys {unknown}; allowed keys: {', '.join(allowed)}"
        )
