"""What a job process sees in its environment when the local engine runs it.

Owns the rule for which host variables pass through and how a container's `Env` is adapted to a
process on the host. It must not start processes or read anything but the mappings it is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

HOST_VARIABLES = ("PATH", "HOME", "LANG")
"""Host variables every job process gets (unless its container `Env` sets them)."""

HOST_VARIABLE_PREFIXES = ("PYTHON",)
"""Prefixes of host variables passed through so a job's Python sees the same packages."""

JOB_AWS_SETTINGS = {
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}
"""What every job sees of AWS: no file of the host's and fake keys, as a job on AWS Batch sees
only its role's credentials. With `AWS_ENDPOINT_URL` (set from moto's endpoint) boto3 in a job
reaches the local Batch, never AWS."""

HOST_GATEWAY_NAME = "host.docker.internal"
"""The name a container uses for its host; a process already on the host uses loopback."""

LOOPBACK_ADDRESS = "127.0.0.1"


def host_environment(source: Mapping[str, str], python: str) -> dict[str, str]:
    """Return the part of the host environment that job processes inherit.

    Only PATH, HOME, LANG, the `PYTHON*` variables and `VIRTUAL_ENV` pass through; nothing else
    (credentials, tokens, the caller's AWS settings) reaches a job, and `JOB_AWS_SETTINGS` keep
    boto3 in a job away from the host's AWS files. PATH starts with the directory of `python`,
    so a job whose command is plain `python` runs that same interpreter.

    Example:
        >>> env = host_environment({"PATH": "/usr/bin", "SECRET": "x"}, "/venv/bin/python")
        >>> env["PATH"], "SECRET" in env, env["AWS_CONFIG_FILE"] == os.devnull
        ('/venv/bin:/usr/bin', False, True)
    """
    environment = {
        name: value
        for name, value in source.items()
        if name in HOST_VARIABLES
        or name == "VIRTUAL_ENV"
        or name.startswith(HOST_VARIABLE_PREFIXES)
    }
    python_directory = os.path.dirname(os.path.abspath(python))
    rest = [
        entry
        for entry in environment.get("PATH", os.defpath).split(os.pathsep)
        if entry and entry != python_directory
    ]
    environment["PATH"] = os.pathsep.join([python_directory, *rest])
    environment.update(JOB_AWS_SETTINGS)
    return environment


def parse_container_env(entries: Iterable[str]) -> dict[str, str]:
    """Turn a container's `Env` list (`"NAME=value"`) into a mapping.

    An entry without `=` names a variable to leave unset, as Docker reads it; it is skipped.

    Example:
        >>> parse_container_env(["A=1", "B=x=y", "C"])
        {'A': '1', 'B': 'x=y'}
    """
    parsed: dict[str, str] = {}
    for entry in entries:
        name, separator, value = entry.partition("=")
        if separator and name:
            parsed[name] = value
    return parsed


def job_environment(base: Mapping[str, str], container_env: Iterable[str]) -> dict[str, str]:
    """Build the environment of one job process: `base` overlaid with the container's `Env`.

    Two adaptations make a process on the host see what a container on AWS Batch would see:
    `host.docker.internal` (how a container reaches its host, e.g. in moto's `MOTO_HOST`)
    becomes 127.0.0.1, and an array child (`AWS_BATCH_JOB_ID` ending in `:<index>`) gets
    `AWS_BATCH_JOB_ARRAY_INDEX`, which AWS sets and moto does not. A job of moto's also gets
    `AWS_ENDPOINT_URL` set to moto's endpoint, so boto3 in it reaches the local Batch.

    Example:
        >>> env = job_environment({"PATH": "/bin"}, ["AWS_BATCH_JOB_ID=ab12:3"])
        >>> env["AWS_BATCH_JOB_ARRAY_INDEX"], env["PATH"]
        ('3', '/bin')
    """
    environment = dict(base)
    for name, value in parse_container_env(container_env).items():
        environment[name] = value.replace(HOST_GATEWAY_NAME, LOOPBACK_ADDRESS)
    moto_endpoint = environment.get("MOTO_HTTP_ENDPOINT")
    if moto_endpoint:
        environment.setdefault("AWS_ENDPOINT_URL", moto_endpoint)
    job_id = environment.get("AWS_BATCH_JOB_ID", "")
    _, separator, index = job_id.rpartition(":")
    if separator and index.isdigit() and "AWS_BATCH_JOB_ARRAY_INDEX" not in environment:
        environment["AWS_BATCH_JOB_ARRAY_INDEX"] = index
    return environment
