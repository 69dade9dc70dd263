"""The top-level command line: version, help, and errors that name the options typed
(batchcrew.cli)."""

from __future__ import annotations

import pytest

from batchcrew.aws.commands import OPTION_NAMES
from batchcrew.cli import main, with_options
from batchcrew.version import __version__


def test_version_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"batchcrew {__version__}\n"


@pytest.mark.parametrize("action", ["register", "describe", "deregister"])
def test_definitions_actions_describe_themselves(
    action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["definitions", action, "--help"]) == 0
    usage, description = capsys.readouterr().out.split("\n\n")[:2]
    assert usage.startswith(f"usage: batchcrew definitions {action}")
    assert "revision" in description


def test_a_usage_error_exits_2() -> None:
    assert main(["no-such-command"]) == 2


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("seconds_timeout must be at least 60, not 30", "--timeout must be at least 60, not 30"),
        (
            "memory=4096 MiB does not fit cpus=1 on Fargate",
            "--memory=4096 MiB does not fit --cpus=1 on Fargate",
        ),
        ("environment: 'AWS_BATCH_X' is reserved", "--env: 'AWS_BATCH_X' is reserved"),
        ("command must not hold empty strings", "CMD must not hold empty strings"),
        ("profile: no AWS profile named 'x'", "--profile: no AWS profile named 'x'"),
        (
            "no AWS region found: pass region='us-east-1'",
            "no AWS region found: pass --region='us-east-1'",
        ),
        ("a job name is needed", "a job name is needed"),
    ],
)
def test_python_argument_names_become_options(message: str, expected: str) -> None:
    assert with_options(ValueError(message), OPTION_NAMES) == expected


def test_every_option_named_in_errors_exists(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (
        ["submit"],
        ["logs"],
        ["terminate"],
        ["definitions", "register"],
        ["definitions", "describe"],
    ):
        assert main([*command, "--help"]) == 0
    helps = capsys.readouterr().out
    assert {option for option in OPTION_NAMES.values() if option not in helps} == set()
