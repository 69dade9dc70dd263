"""Memory units, vCPU/GPU values and Fargate sizes for AWS Batch (batchcrew.aws.resources)."""

from __future__ import annotations

import math

import pytest

from batchcrew.aws.resources import (
    FARGATE_MEMORY_MIB,
    MEMORY_UNITS,
    check_fargate_resources,
    memory_mebibytes,
    resource_requirements,
)


@pytest.mark.parametrize(
    ("memory", "units", "expected"),
    [
        (4, "gigabytes", 3815),  # 4e9 / 2^20 = 3814.697...
        (4, "GB", 3815),
        (1, "gibibytes", 1024),
        (4, "GiB", 4096),
        (1000, "megabytes", 954),  # 1e9 / 2^20 = 953.67...
        (1, "MB", 1),  # 0.95 MiB rounds up to 1
        (512, "mebibytes", 512),
        (2048, "MiB", 2048),
        (0.5, "GiB", 512),
        (1.1, "GiB", 1127),  # 1126.4 rounds up
    ],
)
def test_memory_is_converted_to_whole_mebibytes_rounding_up(
    memory: float, units: str, expected: int
) -> None:
    assert memory_mebibytes(memory, units) == expected


def test_gigabytes_are_decimal_as_in_the_r_original() -> None:
    assert memory_mebibytes(8) == math.ceil(8 * 10**9 / 2**20)


def test_float_noise_does_not_add_a_mebibyte() -> None:
    # 1064.30464 MB is exactly 1015 MiB, but the float product is 1015.0000000000001.
    assert 1015 * 1.048576 * 10**6 / 2**20 > 1015
    assert memory_mebibytes(1015 * 1.048576, "MB") == 1015


@pytest.mark.parametrize("memory", [0, -1, -0.5, math.nan, math.inf])
def test_non_positive_or_non_finite_memory_is_refused(memory: float) -> None:
    with pytest.raises(ValueError, match="memory must be a positive finite number"):
        memory_mebibytes(memory, "GiB")


@pytest.mark.parametrize("memory", ["4", True, None, [4]])
def test_memory_that_is_not_a_number_is_a_type_error(memory: object) -> None:
    with pytest.raises(TypeError, match="memory must be a number"):
        memory_mebibytes(memory, "GiB")  # type: ignore[arg-type]


def test_unknown_memory_unit_names_the_allowed_units() -> None:
    with pytest.raises(ValueError, match="memory_units must be one of") as caught:
        memory_mebibytes(4, "terabytes")
    for unit in MEMORY_UNITS:
        assert unit in str(caught.value)


def test_unit_names_are_case_sensitive_like_their_symbols() -> None:
    with pytest.raises(ValueError, match="memory_units"):
        memory_mebibytes(4, "gib")


def test_resource_requirements_in_aws_shape_with_strings() -> None:
    requirements = resource_requirements(cpus=2, gpus=1, memory=4, memory_units="GiB")
    assert requirements == [
        {"type": "VCPU", "value": "2"},
        {"type": "MEMORY", "value": "4096"},
        {"type": "GPU", "value": "1"},
    ]


def test_fractional_cpus_are_written_as_aws_expects() -> None:
    assert resource_requirements(cpus=0.25) == [{"type": "VCPU", "value": "0.25"}]
    assert resource_requirements(cpus=2.0) == [{"type": "VCPU", "value": "2"}]


def test_nothing_given_means_no_requirements_and_zero_gpus_means_none() -> None:
    assert resource_requirements() == []
    assert resource_requirements(gpus=0) == []


def test_bad_memory_units_are_refused_even_without_memory() -> None:
    with pytest.raises(ValueError, match="memory_units"):
        resource_requirements(cpus=1, memory_units="bytes")


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"cpus": 0}, "cpus must be a positive"),
        ({"cpus": -2}, "cpus must be a positive"),
        ({"gpus": 1.5}, "gpus must be a whole number"),
        ({"gpus": -1}, "gpus must be a whole number"),
        ({"memory": 0}, "memory must be a positive"),
    ],
)
def test_bad_resources_name_the_argument(keywords: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resource_requirements(**keywords)  # type: ignore[arg-type]


def test_every_fargate_pair_of_the_aws_table_is_accepted() -> None:
    for cpus, sizes in FARGATE_MEMORY_MIB.items():
        for size in sizes:
            requirements = resource_requirements(cpus=cpus, memory=size, memory_units="MiB")
            check_fargate_resources(requirements)


def test_fargate_table_matches_the_aws_documentation_edges() -> None:
    assert FARGATE_MEMORY_MIB[0.25] == (512, 1024, 2048)
    assert FARGATE_MEMORY_MIB[0.5] == (1024, 2048, 3072, 4096)
    assert FARGATE_MEMORY_MIB[4.0][-1] == 30720
    assert FARGATE_MEMORY_MIB[8.0][:2] == (16384, 20480)
    assert FARGATE_MEMORY_MIB[16.0][-1] == 122880


def test_fargate_refuses_a_memory_that_does_not_fit_the_cpus() -> None:
    requirements = resource_requirements(cpus=1, memory=16, memory_units="GiB")
    with pytest.raises(ValueError, match=r"memory=16384 MiB does not fit cpus=1 on Fargate"):
        check_fargate_resources(requirements)


def test_fargate_refuses_odd_cpus_and_gpus() -> None:
    with pytest.raises(ValueError, match=r"cpus=3 is not a Fargate size"):
        check_fargate_resources(resource_requirements(cpus=3))
    with pytest.raises(ValueError, match="Fargate does not support GPUs"):
        check_fargate_resources(resource_requirements(gpus=1))


def test_fargate_memory_alone_must_be_some_fargate_size() -> None:
    check_fargate_resources(resource_requirements(memory=512, memory_units="MiB"))
    with pytest.raises(ValueError, match="not a Fargate size"):
        # 4 gigabytes are 3815 MiB, which no Fargate size is: MiB units give exact sizes.
        check_fargate_resources(resource_requirements(memory=4, memory_units="gigabytes"))
