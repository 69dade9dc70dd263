"""Container resources for AWS Batch: memory units to whole MiB, vCPUs, GPUs, Fargate sizes.

Owns validation and the `resourceRequirements` shape AWS expects. Pure code: it makes no AWS
call and must not import boto3.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "FARGATE_MEMORY_MIB",
    "MEMORY_UNITS",
    "MEMORY_UNIT_SYMBOLS",
    "check_fargate_resources",
    "memory_mebibytes",
    "number_text",
    "resource_requirements",
]

MEBIBYTE = 2**20

MEMORY_UNITS: dict[str, int] = {
    "gigabytes": 10**9,
    "GB": 10**9,
    "gibibytes": 2**30,
    "GiB": 2**30,
    "megabytes": 10**6,
    "MB": 10**6,
    "mebibytes": 2**20,
    "MiB": 2**20,
}
"""Bytes per unit for every memory unit name batchcrew accepts."""

MEMORY_UNIT_SYMBOLS: dict[str, str] = {
    "gigabytes": "GB",
    "GB": "GB",
    "gibibytes": "GiB",
    "GiB": "GiB",
    "megabytes": "MB",
    "MB": "MB",
    "mebibytes": "MiB",
    "MiB": "MiB",
}
"""The short symbol of every memory unit name: `gigabytes` and `GB` are both `GB`."""


def _steps(first: int, last: int, step: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1, step))


FARGATE_MEMORY_MIB: dict[float, tuple[int, ...]] = {
    0.25: (512, 1024, 2048),
    0.5: _steps(1024, 4096, 1024),
    1.0: _steps(2048, 8192, 1024),
    2.0: _steps(4096, 16384, 1024),
    4.0: _steps(8192, 30720, 1024),
    8.0: _steps(16384, 61440, 4096),
    16.0: _steps(32768, 122880, 8192),
}
"""The memory sizes (MiB) AWS Batch on Fargate allows for each vCPU count."""


def memory_mebibytes(memory: float, memory_units: str = "gigabytes") -> int:
    """Convert `memory` in `memory_units` to whole MiB, rounding up, as AWS Batch wants it.

    `gigabytes` and `megabytes` are decimal (10^9 and 10^6 bytes); `gibibytes` and
    `mebibytes` are binary (2^30 and 2^20 bytes); `GB`, `MB`, `GiB` and `MiB` are the same.

    Example:
        >>> memory_mebibytes(4, "GiB")
        4096
        >>> memory_mebibytes(4)  # 4 gigabytes = 3814.7 MiB, rounded up
        3815
    """
    bytes_per_unit = _bytes_per_unit(memory_units)
    value = _positive_number("memory", memory)
    mebibytes = value * bytes_per_unit / MEBIBYTE
    # A tiny allowance so that float noise (4096.0000000001) does not round up a whole MiB.
    return max(1, math.ceil(mebibytes - 1e-6))


def resource_requirements(
    cpus: float | None = None,
    gpus: float | None = None,
    memory: float | None = None,
    memory_units: str = "gigabytes",
) -> list[dict[str, str]]:
    """The `resourceRequirements` list for a job definition or a submission; None is left out.

    `cpus` is a positive number of vCPUs, `gpus` a whole number of GPUs (0 means none; 2.0
    counts as 2) and `memory` a positive amount in `memory_units`.

    Example:
        >>> resource_requirements(cpus=2, memory=512, memory_units="MiB")
        [{'type': 'VCPU', 'value': '2'}, {'type': 'MEMORY', 'value': '512'}]
    """
    _bytes_per_unit(memory_units)  # a wrong unit is an error even when memory is None
    requirements: list[dict[str, str]] = []
    if cpus is not None:
        requirements.append({"type": "VCPU", "value": number_text(_positive_number("cpus", cpus))})
    if memory is not None:
        mebibytes = memory_mebibytes(memory, memory_units)
        requirements.append({"type": "MEMORY", "value": str(mebibytes)})
    if gpus is not None:
        count = _whole_number("gpus", gpus)
        if count > 0:
            requirements.append({"type": "GPU", "value": str(count)})
    return requirements


def check_fargate_resources(requirements: list[dict[str, str]]) -> None:
    """Raise `ValueError` unless the vCPU and memory in `requirements` suit Fargate.

    Fargate takes no GPUs and only certain pairs of vCPUs and memory (`FARGATE_MEMORY_MIB`).
    When only one of the two is given, it must be a value some pair allows.

    Example:
        >>> check_fargate_resources(resource_requirements(cpus=1, memory=2, memory_units="GiB"))
        >>> check_fargate_resources(resource_requirements(cpus=3))
        Traceback (most recent call last):
        ...
        ValueError: cpus=3 is not a Fargate size; Fargate allows 0.25, 0.5, 1, 2, 4, 8, 16 vCPUs
    """
    values = {entry["type"]: entry["value"] for entry in requirements}
    if "GPU" in values:
        raise ValueError("gpus: Fargate does not support GPUs; use platform_capabilities='EC2'")
    cpus = float(values["VCPU"]) if "VCPU" in values else None
    memory = int(values["MEMORY"]) if "MEMORY" in values else None
    allowed_cpus = ", ".join(number_text(value) for value in FARGATE_MEMORY_MIB)
    if cpus is not None and cpus not in FARGATE_MEMORY_MIB:
        raise ValueError(
            f"cpus={number_text(cpus)} is not a Fargate size; Fargate allows {allowed_cpus} vCPUs"
        )
    if memory is None:
        return
    if cpus is None:
        if not any(memory in sizes for sizes in FARGATE_MEMORY_MIB.values()):
            raise ValueError(
                f"memory={memory} MiB is not a Fargate size; Fargate allows 512, 1024, 2048, "
                "... MiB depending on cpus (set memory_units='MiB' to give exact sizes)"
            )
        return
    sizes = FARGATE_MEMORY_MIB[cpus]
    if memory not in sizes:
        raise ValueError(
            f"memory={memory} MiB does not fit cpus={number_text(cpus)} on Fargate; allowed: "
            f"{_describe_sizes(sizes)} MiB (set memory_units='MiB' to give exact sizes)"
        )


def _describe_sizes(sizes: tuple[int, ...]) -> str:
    if len(sizes) <= 4:
        return ", ".join(str(size) for size in sizes)
    return f"{sizes[0]} to {sizes[-1]} in steps of {sizes[1] - sizes[0]}"


def _bytes_per_unit(memory_units: object) -> int:
    if not isinstance(memory_units, str):
        raise TypeError(f"memory_units must be a string, not {type(memory_units).__name__}")
    try:
        return MEMORY_UNITS[memory_units]
    except KeyError:
        allowed = ", ".join(MEMORY_UNITS)
        raise ValueError(f"memory_units must be one of {allowed}, not {memory_units!r}") from None


def _positive_number(argument: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{argument} must be a positive finite number, not {value}")
    return float(value)


def _whole_number(argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a whole number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise ValueError(f"{argument} must be a whole number of at least 0, not {value}")
    return int(value)


def number_text(value: float) -> str:
    """A number the way AWS writes resource values: no trailing `.0`.

    Example:
        >>> number_text(2.0), number_text(0.25)
        ('2', '0.25')
    """
    if value == int(value):
        return str(int(value))
    return repr(value)
