"""`bc.aws.controller()`: a Controller wired to a BatchLauncher (aws.batch_controller)."""

from __future__ import annotations

import ipaddress

import pytest

import batchcrew as bc
from batchcrew.aws.config import AWSConfig

AWS = AWSConfig(
    region="us-east-1", credentials={"aws_access_key_id": "k", "aws_secret_access_key": "s"}
)


def test_the_controller_launches_batch_jobs_with_the_options_given() -> None:
    options = bc.aws.Options("defn", "queue", memory=[4, 8, 16])
    crew = bc.aws.controller(
        name="my_workflow", workers=16, port=5000, processes=None, options=options, aws=AWS
    )
    assert isinstance(crew, bc.Controller)
    assert isinstance(crew.launcher, bc.aws.BatchLauncher)
    assert crew.launcher.options is options
    assert crew.launcher.aws is AWS
    assert crew.launcher.processes is None
    assert crew.launcher.levels == 3
    assert (crew.name, crew.workers, crew.port) == ("my_workflow", 16, 5000)


def test_the_controller_listens_on_this_machines_own_address_unless_told() -> None:
    options = bc.aws.Options("defn", "queue")
    crew = bc.aws.controller(options=options, aws=AWS)
    assert not ipaddress.ip_address(crew.host).is_loopback
    assert bc.aws.controller(host="10.0.0.5", options=options, aws=AWS).host == "10.0.0.5"


def test_options_are_required_and_must_be_options() -> None:
    with pytest.raises(TypeError, match="options"):
        bc.aws.controller(aws=AWS)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"batchcrew\.aws\.Options"):
        bc.aws.controller(options={"job_queue": "q"}, aws=AWS)  # type: ignore[arg-type]


def test_the_function_stays_the_packages_name_when_its_module_is_imported() -> None:
    import batchcrew.aws.batch_controller

    assert bc.aws.controller is batchcrew.aws.batch_controller.controller
    assert bc.aws.Options is bc.aws.options.Options
