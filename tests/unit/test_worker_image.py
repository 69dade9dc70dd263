"""The example worker image (examples/aws/Dockerfile) installs this package and runs its worker
with the command the AWS launcher sends."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from batchcrew.aws.options import WORKER_COMMAND

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "examples" / "aws" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of every Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def build_arguments() -> dict[str, str]:
    pairs = (
        arguments.partition("=")
        for instruction, arguments in instructions()
        if instruction == "ARG"
    )
    return {name: default for name, _, default in pairs}


def test_the_install_line_names_this_package_at_its_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installs = [
        arguments for instruction, arguments in instructions() if "pip install" in arguments
    ]
    assert len(installs) == 1
    assert f'"{project["name"]}==${{BATCHCREW_VERSION}}"' in installs[0]
    assert build_arguments()["BATCHCREW_VERSION"] == project["version"]
    # The controller refuses a worker whose cloudpickle differs from its own: pinned too.
    assert '"cloudpickle==${CLOUDPICKLE_VERSION}"' in installs[0]


def test_the_image_runs_the_command_the_launcher_sends_and_lets_it_replace_it() -> None:
    commands = [arguments for instruction, arguments in instructions() if instruction == "CMD"]
    assert [tuple(json.loads(command)) for command in commands] == [WORKER_COMMAND]
    assert "ENTRYPOINT" not in {instruction for instruction, _ in instructions()}


def test_the_python_of_the_image_is_a_build_argument() -> None:
    (base,) = [arguments for instruction, arguments in instructions() if instruction == "FROM"]
    assert base == "python:${PYTHON_VERSION}-slim"
    assert re.fullmatch(r"3\.\d+", build_arguments()["PYTHON_VERSION"])
