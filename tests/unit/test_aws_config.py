"""Region, profile, credentials, clients, retries and error translation (batchcrew.aws.config)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber

from batchcrew.aws.config import AWSConfig, error_code
from batchcrew.errors import AWSError

KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(autouse=True)
def no_aws_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No region, profile or config file from the machine: each test writes its own."""
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    config_file = tmp_path / "aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    yield config_file


def write_profiles(config_file: Path) -> None:
    config_file.write_text(
        "[default]\nregion = ap-south-1\n\n[profile work]\nregion = eu-west-2\n\n"
        "[profile bare]\noutput = json\n"
    )


def test_region_argument_wins(no_aws_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_profiles(no_aws_settings)
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert AWSConfig(region="ca-central-1", profile="work").region == "ca-central-1"


def test_a_named_profile_region_comes_before_the_environment(
    no_aws_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(no_aws_settings)
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    config = AWSConfig(profile="work")
    assert config.region == "eu-west-2"
    assert config.profile == "work"


def test_a_profile_without_region_falls_back_to_the_environment(
    no_aws_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(no_aws_settings)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    assert AWSConfig(profile="bare").region == "sa-east-1"


def test_aws_region_comes_before_aws_default_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    assert AWSConfig().region == "us-west-2"
    monkeypatch.delenv("AWS_REGION")
    assert AWSConfig().region == "us-east-2"


def test_without_a_named_profile_the_environment_beats_the_default_profile(
    no_aws_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(no_aws_settings)
    assert AWSConfig().region == "ap-south-1"
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert AWSConfig().region == "us-west-2"


def test_no_region_anywhere_says_how_to_set_one() -> None:
    with pytest.raises(ValueError, match="no AWS region found") as caught:
        AWSConfig()
    message = str(caught.value)
    assert "region=" in message
    assert "AWS_REGION" in message
    assert "AWS_DEFAULT_REGION" in message


def test_an_unknown_profile_is_named(no_aws_settings: Path) -> None:
    write_profiles(no_aws_settings)
    with pytest.raises(ValueError, match="no AWS profile named 'nope'"):
        AWSConfig(region="us-east-1", profile="nope")


@pytest.mark.parametrize(
    ("keywords", "error", "message"),
    [
        ({"region": ""}, ValueError, "region must not be empty"),
        ({"region": "US East"}, ValueError, "region must look like"),
        ({"region": 1}, TypeError, "region must be a string"),
        ({"endpoint_url": "localhost:5000"}, ValueError, "endpoint_url must start with http"),
        ({"max_attempts": 0}, ValueError, "max_attempts must be at least 1"),
        ({"max_attempts": True}, TypeError, "max_attempts must be an int"),
        ({"seconds_timeout": 0}, ValueError, "seconds_timeout must be positive and finite"),
        ({"seconds_timeout": float("inf")}, ValueError, "seconds_timeout must be positive"),
        ({"seconds_timeout": "5"}, TypeError, "seconds_timeout must be a number"),
        ({"credentials": {"aws_access_key_id": "a"}}, ValueError, "aws_secret_access_key"),
        ({"credentials": {**KEYS, "token": "t"}}, ValueError, "unknown keys"),
        ({"credentials": {**KEYS, "aws_session_token": ""}}, ValueError, "non-empty"),
        ({"credentials": "key:secret"}, TypeError, "credentials must be a mapping"),
    ],
)
def test_bad_arguments_are_refused_with_their_name(
    keywords: dict[str, object], error: type[Exception], message: str
) -> None:
    arguments: dict[str, object] = {"region": "us-east-1", **keywords}
    with pytest.raises(error, match=message):
        AWSConfig(**arguments)  # type: ignore[arg-type]


def test_clients_are_cached_configured_and_shared_between_threads() -> None:
    config = AWSConfig(
        region="eu-central-1",
        endpoint_url="http://127.0.0.1:9",
        max_attempts=4,
        credentials=KEYS,
    )
    seen = []

    def grab() -> None:
        seen.append(config.client("batch"))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batch = config.client("batch")
    assert all(client is batch for client in seen)
    assert config.client("logs") is not batch
    assert batch.meta.region_name == "eu-central-1"
    assert batch.meta.endpoint_url == "http://127.0.0.1:9"
    assert batch.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert (batch.meta.config.connect_timeout, batch.meta.config.read_timeout) == (60.0, 60.0)


def test_one_attempt_waits_seconds_timeout_to_connect_and_to_read() -> None:
    config = AWSConfig(region="us-east-1", seconds_timeout=2.5)
    batch = config.client("batch")
    assert config.seconds_timeout == 2.5
    assert (batch.meta.config.connect_timeout, batch.meta.config.read_timeout) == (2.5, 2.5)
    assert repr(config).endswith("max_attempts=10, seconds_timeout=2.5)")


def test_the_configuration_is_read_only() -> None:
    config = AWSConfig(region="us-east-1")
    with pytest.raises(AttributeError, match="read-only"):
        config._region = "eu-west-1"  # type: ignore[misc]
    assert config.region == "us-east-1"
    assert "us-east-1" in repr(config)
    assert "testing" not in repr(AWSConfig(region="us-east-1", credentials=KEYS))


def test_a_client_error_names_operation_region_and_resource() -> None:
    config = AWSConfig(region="us-east-1", credentials=KEYS)
    batch = config.client("batch")
    with Stubber(batch) as stubber:
        stubber.add_client_error(
            "submit_job",
            service_error_code="ClientException",
            service_message="Job queue q1 does not exist",
            http_status_code=400,
        )
        with pytest.raises(AWSError) as caught:
            config.call(
                "SubmitJob",
                "job queue q1",
                batch.submit_job,
                jobName="j",
                jobQueue="q1",
                jobDefinition="d",
            )
    error = caught.value
    assert (error.operation, error.region) == ("SubmitJob", "us-east-1")
    assert error.resource == "job queue q1"
    assert error.reason == "ClientException: Job queue q1 does not exist"
    assert str(error) == (
        "SubmitJob in us-east-1 on job queue q1 failed: "
        "ClientException: Job queue q1 does not exist"
    )
    assert error_code(error) == "ClientException"


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [
        (429, "TooManyRequestsException", True),
        (400, "ThrottlingException", True),
        (500, "ServerException", True),
        (503, "ServiceUnavailable", True),
        (400, "ClientException", False),
        (403, "AccessDeniedException", False),
    ],
)
def test_errors_that_may_pass_are_transient(status: int, code: str, transient: bool) -> None:
    config = AWSConfig(region="us-east-1", credentials=KEYS, max_attempts=1)
    batch = config.client("batch")
    with Stubber(batch) as stubber:
        stubber.add_client_error(
            "list_jobs", service_error_code=code, service_message="no", http_status_code=status
        )
        with pytest.raises(AWSError) as caught:
            config.call("ListJobs", "job queue q", batch.list_jobs, jobQueue="q")
    assert caught.value.transient is transient


def test_missing_credentials_get_a_hint() -> None:
    config = AWSConfig(region="us-east-1")

    def no_keys() -> None:
        raise NoCredentialsError()

    with pytest.raises(AWSError, match="AWS_ACCESS_KEY_ID") as caught:
        config.call("ListJobs", "job queue q", no_keys)
    assert error_code(caught.value) is None


def test_connection_failures_become_aws_errors() -> None:
    config = AWSConfig(region="us-east-1")

    def unreachable() -> None:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/v1/listjobs")

    with pytest.raises(
        AWSError, match=r"ListJobs in us-east-1 on job queue q failed: Endpoint"
    ) as caught:
        config.call("ListJobs", "job queue q", unreachable)
    assert caught.value.transient  # an endpoint out of reach may come back


def test_a_missing_credential_is_not_transient() -> None:
    def no_keys() -> None:
        raise NoCredentialsError()

    with pytest.raises(AWSError) as caught:
        AWSConfig(region="us-east-1").call("ListJobs", "job queue q", no_keys)
    assert not caught.value.transient


def test_call_passes_arguments_and_returns_the_result() -> None:
    config = AWSConfig(region="us-east-1")
    assert config.call("Add", "numbers", lambda a, b: a + b, 2, b=3) == 5


def test_credentials_that_cannot_be_obtained_are_an_aws_error(no_aws_settings: Path) -> None:
    no_aws_settings.write_text("[default]\nregion = us-east-1\ncredential_process = /bin/false\n")
    aws = AWSConfig()
    with pytest.raises(
        AWSError, match="creating a batch client in us-east-1 on the AWS credentials"
    ):
        aws.client("batch").describe_job_queues()


def test_a_config_file_that_does_not_parse_is_named(no_aws_settings: Path) -> None:
    no_aws_settings.write_text("[default\nregion = us-east-1\n")
    with pytest.raises(ValueError, match="the AWS config files cannot be read"):
        AWSConfig(region="us-east-1")


def test_a_mistyped_region_names_the_close_ones() -> None:
    with pytest.raises(
        ValueError, match="region must be a region of AWS Batch, not 'us-eats-1'"
    ) as caught:
        AWSConfig(region="us-eats-1")
    assert "did you mean 'us-east-1'" in str(caught.value)
    with pytest.raises(ValueError, match=r"AWS Batch regions: af-south-1, .*, us-west-2"):
        AWSConfig(region="moon-1")
    assert AWSConfig(region="cn-north-1").region == "cn-north-1"  # every partition counts


def test_any_region_name_is_taken_with_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AWSConfig(region="moon-1", endpoint_url="http://127.0.0.1:5000").region == "moon-1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5001")
    assert AWSConfig(region="moon-1").region == "moon-1"


def test_the_endpoint_shown_is_the_one_botocore_uses(
    monkeypatch: pytest.MonkeyPatch, no_aws_settings: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5001")
    aws = AWSConfig(region="us-east-1")
    assert aws.endpoint_url == "http://127.0.0.1:5001"
    assert "endpoint_url='http://127.0.0.1:5001'" in repr(aws)
    assert aws.client("batch").meta.endpoint_url == "http://127.0.0.1:5001"

    monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", "http://127.0.0.1:5002")
    aws = AWSConfig(region="us-east-1")
    assert repr(aws) == (
        "AWSConfig(region='us-east-1', profile=None, endpoint_url='http://127.0.0.1:5002', "
        "logs_endpoint_url='http://127.0.0.1:5001', max_attempts=10, seconds_timeout=60.0)"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5009")  # changed afterwards
    assert aws.client("batch").meta.endpoint_url == "http://127.0.0.1:5002"
    assert aws.client("logs").meta.endpoint_url == "http://127.0.0.1:5001"

    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_BATCH")
    no_aws_settings.write_text(
        "[profile local]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:5003\n"
    )
    assert AWSConfig(profile="local").endpoint_url == "http://127.0.0.1:5003"
    assert AWSConfig(region="us-east-1").endpoint_url is None
