"""Worker-job settings for AWS Batch: levels, resources, checks, requests (aws.options)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from batchcrew.aws.jobs import CONTAINER_OVERRIDES_MAX_CHARACTERS
from batchcrew.aws.options import TAGS_SET_BY_BATCHCREW, WORKER_COMMAND, Options


def memory_of(options: Options, level: int) -> str:
    (value,) = [
        each["value"] for each in options.resource_requirements(level) if each["type"] == "MEMORY"
    ]
    return value


def test_numbers_make_one_level_with_the_definitions_resources_overridden() -> None:
    options = Options("defn", "queue", cpus=2, gpus=1, memory=4, memory_units="GiB")
    assert options.levels == 1
    assert options.resource_requirements(0) == [
        {"type": "VCPU", "value": "2"},
        {"type": "MEMORY", "value": "4096"},
        {"type": "GPU", "value": "1"},
    ]
    assert options.describe_level(0) == "4 GiB memory, 2 vCPUs, 1 GPU"


def test_no_resources_keep_the_job_definitions() -> None:
    options = Options("defn", "queue")
    assert options.levels == 1
    assert options.resource_requirements(0) == []
    assert options.describe_level(0) == "the job definition's resources"


def test_the_longest_list_makes_the_levels_and_shorter_lists_repeat_their_last_value() -> None:
    options = Options("defn", "queue", memory=[4, 8, 16], cpus=[1, 2], gpus=0, memory_units="GiB")
    assert options.levels == 3
    assert [memory_of(options, level) for level in range(3)] == ["4096", "8192", "16384"]
    assert [options.describe_level(level) for level in range(3)] == [
        "4 GiB memory, 1 vCPU",
        "8 GiB memory, 2 vCPUs",
        "16 GiB memory, 2 vCPUs",
    ]


def test_memory_is_rounded_up_to_whole_mebibytes_so_a_job_never_gets_less() -> None:
    options = Options("defn", "queue", memory=[0.25, 1, 4])  # gigabytes, as in crew.aws.batch
    assert [memory_of(options, level) for level in range(3)] == ["239", "954", "3815"]
    assert options.describe_level(0) == "0.25 GB memory"
    assert Options("defn", "queue", memory=1.5, memory_units="mebibytes").describe_level(0) == (
        "1.5 MiB memory"
    )
    assert memory_of(Options("defn", "queue", memory=1.5, memory_units="MiB"), 0) == "2"


def test_fractional_vcpus_and_whole_gpus() -> None:
    options = Options("defn", "queue", cpus=0.5, gpus=[1, 2.0])
    assert options.describe_level(0) == "0.5 vCPU, 1 GPU"
    assert options.resource_requirements(1) == [
        {"type": "VCPU", "value": "0.5"},
        {"type": "GPU", "value": "2"},
    ]
    assert options.describe_level(1) == "0.5 vCPU, 2 GPUs"


@pytest.mark.parametrize("level", [-1, 3, 1.0, "0"])
def test_a_level_outside_the_levels_is_refused(level: Any) -> None:
    options = Options("defn", "queue", memory=[1, 2, 3])
    with pytest.raises((ValueError, TypeError), match="level"):
        options.describe_level(level)
    with pytest.raises((ValueError, TypeError), match="level"):
        options.resource_requirements(level)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"job_definition": ""}, ValueError, "job_definition"),
        ({"job_queue": 3}, TypeError, "job_queue must be a string"),
        ({"memory": -1}, ValueError, "memory must be a positive"),
        ({"memory": []}, ValueError, "memory must hold at least one value"),
        ({"memory": [8, 4]}, ValueError, r"memory levels must not decrease.*\[8, 4\]"),
        ({"memory": "4GB"}, TypeError, "memory must be a number, a list"),
        ({"memory": [4, "8"]}, TypeError, "memory must hold numbers"),
        ({"memory": [4, True]}, TypeError, "memory must hold numbers"),
        ({"memory": 4, "memory_units": "gb"}, ValueError, "memory_units must be one of gigabytes"),
        ({"memory_units": "tb"}, ValueError, "memory_units must be one of"),
        ({"cpus": 0}, ValueError, "cpus must be a positive"),
        ({"cpus": [2, 1]}, ValueError, "cpus levels must not decrease"),
        ({"gpus": 1.5}, ValueError, "gpus must be a whole number"),
        ({"gpus": [0, -1]}, ValueError, "gpus levels must not decrease"),
        ({"environment": {"AWS_BATCH_JOB_ID": "x"}}, ValueError, "reserved"),
        ({"environment": {"STAGE": 1}}, TypeError, r"environment\['STAGE'\] must be a string"),
        ({"environment": ["STAGE=1"]}, TypeError, "environment must be a mapping"),
        ({"share_identifier": ""}, ValueError, "share_identifier"),
        ({"scheduling_priority_override": 10_000}, ValueError, "at most 9999"),
        ({"parameters": {"a": 1}}, TypeError, "parameters"),
        ({"propagate_tags": "yes"}, TypeError, "propagate_tags must be True, False or None"),
        ({"seconds_timeout": 30}, ValueError, "seconds_timeout must be at least 60"),
        ({"tags": {"batchcrew:controller": "x"}}, ValueError, "batchcrew sets it"),
        ({"tags": {"aws:owner": "x"}}, ValueError, "aws:"),
        ({"tags": {"k" * 129: "x"}}, ValueError, "keys may have 128"),
        ({"tags": {"k": "v" * 257}}, ValueError, "values 256"),
        ({"tags": {f"t{n}": "x" for n in range(49)}}, ValueError, "at most 48 tags"),
        ({"retry_strategy": {"attempts": 11}}, ValueError, "at most 10"),
        ({"retry_strategy": {"tries": 2}}, ValueError, "allowed keys: attempts, evaluateOnExit"),
        ({"retry_strategy": 3}, TypeError, "retry_strategy must be a mapping"),
        (
            {"retry_strategy": {"attempts": 2, "evaluateOnExit": [{"action": "again"}]}},
            ValueError,
            "action must be RETRY or EXIT",
        ),
        (
            {"retry_strategy": {"attempts": 2, "evaluateOnExit": [{"action": "EXIT"}] * 6}},
            ValueError,
            "at most 5 conditions",
        ),
        ({"container_overrides": {"command": ["x"]}}, ValueError, "worker command is batchcrew's"),
        ({"container_overrides": {"environment": []}}, ValueError, "environment="),
        ({"container_overrides": {"memory": 4}}, ValueError, "memory="),
        ({"container_overrides": {"gpu": 1}}, ValueError, "allowed keys: instanceType"),
        ({"container_overrides": "x"}, TypeError, "container_overrides must be a mapping"),
    ],
)
def test_bad_settings_are_refused_at_construction_naming_the_argument(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    settings = {"job_definition": "defn", "job_queue": "queue", **arguments}
    with pytest.raises(error, match=message):
        Options(**settings)


def test_options_are_frozen_and_keep_no_reference_to_the_callers_mappings() -> None:
    environment = {"STAGE": "dev"}
    memory = [1, 2]
    options = Options("defn", "queue", memory=memory, environment=environment)
    environment["STAGE"] = "prod"
    memory.append(4)
    assert options.environment == {"STAGE": "dev"}
    assert options.memory == (1, 2)
    assert options.levels == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.memory = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        options.environment["STAGE"] = "prod"  # type: ignore[index]


def test_a_launch_request_carries_the_worker_command_the_level_and_every_setting() -> None:
    options = Options(
        "defn:3",
        "queue",
        memory=[2, 4],
        cpus=1,
        memory_units="GiB",
        environment={"STAGE": "dev", "BATCHCREW_PORT": "1"},
        share_identifier="team-a",
        scheduling_priority_override=5,
        parameters={"input": "s3://bucket/x"},
        retry_strategy={
            "attempts": 2,
            "evaluateOnExit": [{"action": "retry", "onStatusReason": "Host EC2*"}],
        },
        propagate_tags=True,
        seconds_timeout=3600,
        tags={"project": "fit"},
        container_overrides={"instanceType": "c5.xlarge"},
    )
    launch_environment = {"BATCHCREW_PORT": "5000", "BATCHCREW_TOKEN": "t"}
    request = options.submission(
        "batchcrew-crew-a1",
        launch_environment,
        level=1,
        array_size=3,
        tags={"batchcrew:controller": "crew"},
    ).request()
    assert request == {
        "jobName": "batchcrew-crew-a1",
        "jobQueue": "queue",
        "jobDefinition": "defn:3",
        "arrayProperties": {"size": 3},
        "containerOverrides": {
            "command": list(WORKER_COMMAND),
            "environment": [
                {"name": "STAGE", "value": "dev"},
                {"name": "BATCHCREW_PORT", "value": "5000"},  # the launch's own value wins
                {"name": "BATCHCREW_TOKEN", "value": "t"},
            ],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "4096"},
            ],
            "instanceType": "c5.xlarge",
        },
        "shareIdentifier": "team-a",
        "schedulingPriorityOverride": 5,
        "retryStrategy": {
            "attempts": 2,
            "evaluateOnExit": [{"action": "RETRY", "onStatusReason": "Host EC2*"}],
        },
        "timeout": {"attemptDurationSeconds": 3600},
        "tags": {"project": "fit", "batchcrew:controller": "crew"},
        "propagateTags": True,
        "parameters": {"input": "s3://bucket/x"},
    }


def test_a_plain_request_has_only_what_was_given() -> None:
    request = (
        Options("defn", "queue").submission("batchcrew-a1", {"BATCHCREW_LAUNCH": "a1"}).request()
    )
    assert request == {
        "jobName": "batchcrew-a1",
        "jobQueue": "queue",
        "jobDefinition": "defn",
        "containerOverrides": {
            "command": list(WORKER_COMMAND),
            "environment": [{"name": "BATCHCREW_LAUNCH", "value": "a1"}],
        },
    }


def test_an_environment_too_big_for_the_overrides_is_refused_at_construction() -> None:
    # Each variable takes its name, its value and 22 characters of JSON around them.
    fits = {f"V{n:03d}": "x" * 40 for n in range(80)}  # about 5,600 characters
    Options("defn", "queue", environment=fits)
    too_big = {f"V{n:03d}": "x" * 40 for n in range(120)}  # about 8,400 characters
    with pytest.raises(
        ValueError, match=r"take [\d,]+ characters; AWS Batch allows 8,192"
    ) as caught:
        Options("defn", "queue", environment=too_big)
    assert "shorten the environment" in str(caught.value)
    assert CONTAINER_OVERRIDES_MAX_CHARACTERS == 8192


def test_batchcrew_tags_are_the_controllers_name_and_id() -> None:
    assert TAGS_SET_BY_BATCHCREW == ("batchcrew:controller", "batchcrew:controller-id")
    Options("defn", "queue", tags={f"t{n}": "x" for n in range(48)})  # 48 + batchcrew's 2 = 50
