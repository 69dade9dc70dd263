"""What every worker job of an AWS Batch controller is submitted with: `Options`.

Owns the checks of those settings, made once at construction, the resource levels that
`memory`, `cpus` and `gpus` lists make, and the SubmitJob request of one launch. It makes no
AWS call and decides nothing about how many workers to launch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from batchcrew.aws.jobs import Submission, check_overrides_size
from batchcrew.aws.resources import MEMORY_UNIT_SYMBOLS, number_text, resource_requirements
from batchcrew.aws.validation import (
    check_int,
    check_optional_bool,
    check_priority,
    check_string_map,
    check_text,
    environment_list,
    extra_container_overrides,
    retry_strategy_request,
    timeout_request,
)

__all__ = ["TAGS_SET_BY_BATCHCREW", "WORKER_COMMAND", "Options"]

WORKER_COMMAND = ("python", "-m", "batchcrew.worker")
"""The command of every worker job: the image's `python` runs the worker module."""

WORKER_ENVIRONMENT_CHARACTERS = 1024
"""Room kept in the container overrides for the variables each launch adds (controller address,
one-use token, certificate fingerprint) when the options' own part is checked at construction."""

TAGS_SET_BY_BATCHCREW = ("batchcrew:controller", "batchcrew:controller-id")
"""The tags every worker job gets: the controller's name and its unique id."""

TAGS_MAX = 50
"""The most tags AWS Batch takes on one job."""

TAG_KEY_CHARACTERS = 128
TAG_VALUE_CHARACTERS = 256
RESOURCE_ARGUMENTS = ("memory", "cpus", "gpus")


@dataclass(frozen=True)
class Options:
    """The AWS Batch settings of a controller's worker jobs, checked at construction.

    `job_definition` is a name, `name:revision` or ARN whose image has Python and batchcrew;
    `job_queue` a queue name or ARN. `cpus` (vCPUs), `gpus` and `memory` (in `memory_units`:
    `gigabytes`, `gibibytes`, `megabytes`, `mebibytes` or `GB`, `GiB`, `MB`, `MiB`) override the
    job definition's resources; None keeps the definition's. AWS gets memory in whole MiB,
    rounded up, so a job never gets less than it asked for.

    **Resource levels.** Each of `memory`, `cpus` and `gpus` takes a number or a list. Lists
    make levels: there are as many levels as the longest list has values, level 0 first; a
    number applies to every level, and a shorter list repeats its last value. Values must not
    decrease from one level to the next. With `memory=[4, 8, 16]`, workers start with 4 GB; a
    task whose worker was killed for using too much memory runs next on an 8 GB worker, then on
    16 GB.

    `environment` adds variables to every worker (a launch's own `BATCHCREW_*` variables win
    over them); `tags` are added to batchcrew's own two (the controller's name and id).
    `share_identifier`, `scheduling_priority_override`, `parameters`, `retry_strategy` (AWS's
    `retryStrategy` shape), `propagate_tags` and `seconds_timeout` (the attempt duration, 60 s
    at least) go to SubmitJob as they are; `container_overrides` may add `instanceType`.

    Example:
        >>> options = Options("defn", "queue", cpus=2, memory=[4, 8, 16], memory_units="GiB")
        >>> options.levels
        3
        >>> options.describe_level(1)
        '8 GiB memory, 2 vCPUs'
        >>> options.resource_requirements(2)
        [{'type': 'VCPU', 'value': '2'}, {'type': 'MEMORY', 'value': '16384'}]
    """

    job_definition: str
    job_queue: str
    cpus: float | Sequence[float] | None = None
    gpus: int | Sequence[int] | None = None
    memory: float | Sequence[float] | None = None
    memory_units: str = "gigabytes"
    environment: Mapping[str, str] | None = None
    share_identifier: str | None = None
    scheduling_priority_override: int | None = None
    parameters: Mapping[str, str] | None = None
    retry_strategy: Mapping[str, Any] | None = None
    propagate_tags: bool | None = None
    seconds_timeout: int | None = None
    tags: Mapping[str, str] | None = None
    container_overrides: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_text("job_definition", self.job_definition)
        check_text("job_queue", self.job_queue)
        if self.share_identifier is not None:
            check_text("share_identifier", self.share_identifier)
        check_priority("scheduling_priority_override", self.scheduling_priority_override)
        check_optional_bool("propagate_tags", self.propagate_tags)
        timeout_request(self.seconds_timeout)
        environment_list(self.environment)
        self._set("environment", _frozen(check_string_map("environment", self.environment)))
        self._set("parameters", _frozen(check_string_map("parameters", self.parameters)))
        self._set("retry_strategy", _frozen(retry_strategy_request(self.retry_strategy)))
        self._set("tags", _frozen(_check_tags(self.tags)))
        overrides = extra_container_overrides(self.container_overrides)
        self._set("container_overrides", _frozen(overrides))
        for argument in RESOURCE_ARGUMENTS:
            self._set(argument, _check_amounts(argument, getattr(self, argument)))
        for level in range(self.levels):  # every value checked, and the units too
            self.resource_requirements(level)
        # The biggest request of any launch, less the launch's own variables, must fit too.
        check_overrides_size(
            self.submission("check", {}, level=self.levels - 1).overrides(),
            what="the command, environment and resources of the options",
            kept=WORKER_ENVIRONMENT_CHARACTERS,
        )

    def _set(self, argument: str, value: object) -> None:
        object.__setattr__(self, argument, value)

    @property
    def levels(self) -> int:
        """How many resource levels the `memory`, `cpus` and `gpus` lists make (1 for none).

        Example:
            >>> Options("defn", "queue", memory=[1, 2], cpus=[1, 2, 4]).levels
            3
        """
        lengths = [len(value) for value in self._amounts() if isinstance(value, tuple)]
        return max(lengths, default=1)

    def resource_requirements(self, level: int = 0) -> list[dict[str, str]]:
        """AWS's `resourceRequirements` for workers of `level`: MEMORY in MiB, VCPU, GPU.

        Example:
            >>> Options("defn", "queue", memory=[0.25, 1], cpus=1).resource_requirements(0)
            [{'type': 'VCPU', 'value': '1'}, {'type': 'MEMORY', 'value': '239'}]
        """
        memory, cpus, gpus = self._level_amounts(level)
        return resource_requirements(cpus, gpus, memory, self.memory_units)

    def describe_level(self, level: int) -> str:
        """What workers of `level` get, in the units they were asked in.

        Example:
            >>> Options("defn", "queue", memory=[4, 8], gpus=1).describe_level(0)
            '4 GB memory, 1 GPU'
        """
        memory, cpus, gpus = self._level_amounts(level)
        parts = []
        if memory is not None:
            parts.append(f"{number_text(memory)} {MEMORY_UNIT_SYMBOLS[self.memory_units]} memory")
        if cpus is not None:
            parts.append(f"{number_text(cpus)} vCPU{'s' if cpus > 1 else ''}")
        if gpus:
            parts.append(f"{number_text(gpus)} GPU{'s' if gpus > 1 else ''}")
        return ", ".join(parts) or "the job definition's resources"

    def submission(
        self,
        name: str,
        environment: Mapping[str, str],
        level: int = 0,
        array_size: int = 1,
        tags: Mapping[str, str] | None = None,
    ) -> Submission:
        """The SubmitJob request of one launch: `array_size` workers of `level`.

        `environment` is the launch's own (it wins over the options' variables); `tags` are
        batchcrew's own, added to the options' tags.

        Example:
            >>> options = Options("defn", "queue", memory=[4, 8], environment={"STAGE": "dev"})
            >>> request = options.submission("crew-a1", {"BATCHCREW_LAUNCH": "a1"}, 1, 3).request()
            >>> request["arrayProperties"]
            {'size': 3}
            >>> [variable["name"] for variable in request["containerOverrides"]["environment"]]
            ['STAGE', 'BATCHCREW_LAUNCH']
        """
        return Submission(
            name=name,
            job_queue=self.job_queue,
            job_definition=self.job_definition,
            command=WORKER_COMMAND,
            environment={**(self.environment or {}), **environment},
            resource_requirements=self.resource_requirements(level),
            array_size=array_size,
            share_identifier=self.share_identifier,
            scheduling_priority_override=self.scheduling_priority_override,
            parameters=self.parameters,
            retry_strategy=self.retry_strategy,
            propagate_tags=self.propagate_tags,
            seconds_timeout=self.seconds_timeout,
            tags={**(self.tags or {}), **(tags or {})} or None,
            container_overrides=self.container_overrides,
        )

    def _amounts(self) -> tuple[Any, ...]:
        return tuple(getattr(self, argument) for argument in RESOURCE_ARGUMENTS)

    def _level_amounts(self, level: int) -> tuple[float | None, ...]:
        check_int("level", level, 0, self.levels - 1)
        return tuple(_at_level(value, level) for value in self._amounts())


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if value is None else MappingProxyType(dict(value))


def _check_amounts(argument: str, value: object) -> float | tuple[float, ...] | None:
    """A number or None as it is; a list as a tuple that does not decrease."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{argument} must be a number, a list of numbers (one per level) or None, "
            f"not {type(value).__name__}"
        )
    amounts = tuple(value)
    if not amounts:
        raise ValueError(f"{argument} must hold at least one value when it is a list")
    for amount in amounts:
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise TypeError(f"{argument} must hold numbers, not {type(amount).__name__}")
    if list(amounts) != sorted(amounts):
        raise ValueError(
            f"{argument} levels must not decrease (each level is a retry with more), "
            f"not {list(amounts)}"
        )
    return amounts


def _at_level(value: float | tuple[float, ...] | None, level: int) -> float | None:
    if isinstance(value, tuple):
        return value[min(level, len(value) - 1)]
    return value


def _check_tags(value: object) -> dict[str, str] | None:
    tags = check_string_map("tags", value)
    if tags is None:
        return None
    allowed = TAGS_MAX - len(TAGS_SET_BY_BATCHCREW)
    if len(tags) > allowed:
        raise ValueError(
            f"tags may hold at most {allowed} tags (AWS takes {TAGS_MAX}, batchcrew sets "
            f"{len(TAGS_SET_BY_BATCHCREW)}), not {len(tags)}"
        )
    for key, item in tags.items():
        if key in TAGS_SET_BY_BATCHCREW:
            raise ValueError(f"tags must not set {key!r}: batchcrew sets it")
        if key.lower().startswith("aws:"):
            raise ValueError(f"tags must not start with 'aws:' (AWS reserves it), not {key!r}")
        if len(key) > TAG_KEY_CHARACTERS or len(item) > TAG_VALUE_CHARACTERS:
            raise ValueError(
                f"tags: keys may have {TAG_KEY_CHARACTERS} characters and values "
                f"{TAG_VALUE_CHARACTERS}; {key!r} is longer"
            )
    return tags
