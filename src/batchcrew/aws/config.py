"""How batchcrew reaches AWS: one boto3 session, cached clients, adaptive retries, clear errors.

Owns region/profile/endpoint resolution and the one helper that turns botocore failures into
`AWSError`. It makes no Batch or Logs calls of its own and knows nothing about jobs.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

import boto3
import botocore.config
import botocore.session
from botocore.configprovider import ConfiguredEndpointProvider
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from batchcrew.errors import AWSError

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from mypy_boto3_batch.client import BatchClient
    from mypy_boto3_logs.client import CloudWatchLogsClient

__all__ = ["AWSConfig", "FailedAttempt", "error_code", "failed_attempts"]

logger = logging.getLogger("batchcrew.aws.config")

P = ParamSpec("P")
T = TypeVar("T")

CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
_REQUIRED_CREDENTIAL_KEYS = CREDENTIAL_KEYS[:2]
_REGION_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
_LAST_ERROR_KEY = "batchcrew_last_error"
_SERVICES_SHOWN = ("batch", "logs")
_THROTTLING_CODES = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}
)
_watching = threading.local()
"""The lists `failed_attempts()` fills in each thread."""


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """One attempt of an AWS call that failed: the operation, what went wrong, and whether AWS
    may have carried the call out all the same (a server error, a connection cut after the
    request went out, an answer that never came), as opposed to refusing it (throttling, a
    client error) or never receiving it (no connection).

    Example:
        >>> FailedAttempt("SubmitJob", "HTTP 429 TooManyRequestsException", False).carried_out
        False
    """

    operation: str
    problem: str
    carried_out: bool
    """AWS may have carried the call out: a retry may do it a second time."""

    def __str__(self) -> str:
        return f"{self.operation}: {self.problem}"


class AWSConfig:
    """Where and how to call AWS: region, profile, endpoint, retries, and the clients themselves.

    The region comes from `region`, then from the named `profile`, then from the `AWS_REGION`
    and `AWS_DEFAULT_REGION` environment variables, then from the default profile
    (`AWS_PROFILE` or `default`) in the AWS config file; it must be a region botocore knows
    AWS Batch in, unless an endpoint is set. The endpoint is `endpoint_url`, else the one
    botocore reads from `AWS_ENDPOINT_URL_BATCH` (`AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` for Logs),
    `AWS_ENDPOINT_URL` or the AWS config file, else AWS's own. Credentials follow boto3's usual
    chain unless `credentials` gives them explicitly (handy for a local test server). Every client
    retries throttling (HTTP 429 `TooManyRequestsException`) and server errors in botocore's
    adaptive mode, up to `max_attempts` attempts in total; one attempt waits at most
    `seconds_timeout` to connect, then as long again for each part of the answer, so a call to
    an endpoint that does not answer ends after about `max_attempts * seconds_timeout` seconds
    (plus the back-off between attempts). Clients are created once per service and shared;
    `client()` is safe to call from many threads.

    Example:
        >>> aws = AWSConfig(
        ...     region="us-east-1",
        ...     endpoint_url="http://127.0.0.1:5000",
        ...     credentials={"aws_access_key_id": "testing", "aws_secret_access_key": "testing"},
        ... )
        >>> aws
        AWSConfig(region='us-east-1', profile=None, endpoint_url='http://127.0.0.1:5000', \
max_attempts=10, seconds_timeout=60.0)
        >>> batch = aws.client("batch")  # the same object on every call
    """

    __slots__ = (
        "_botocore_config",
        "_clients",
        "_endpoint_url",
        "_endpoints",
        "_lock",
        "_max_attempts",
        "_profile",
        "_region",
        "_seconds_timeout",
        "_session",
    )

    def __init__(
        self,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = 10,
        *,
        credentials: Mapping[str, str] | None = None,
        seconds_timeout: float = 60.0,
    ) -> None:
        _check_optional_string("region", region)
        _check_optional_string("profile", profile)
        _check_optional_string("endpoint_url", endpoint_url)
        if endpoint_url is not None and not endpoint_url.startswith(("http://", "https://")):
            raise ValueError(
                f"endpoint_url must start with http:// or https://, not {endpoint_url!r}"
            )
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise TypeError(f"max_attempts must be an int, not {type(max_attempts).__name__}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        if isinstance(seconds_timeout, bool) or not isinstance(seconds_timeout, int | float):
            raise TypeError(
                f"seconds_timeout must be a number, not {type(seconds_timeout).__name__}"
            )
        if not 0 < seconds_timeout < float("inf"):
            raise ValueError(f"seconds_timeout must be positive and finite, not {seconds_timeout}")
        keys = _check_credentials(credentials)

        core = botocore.session.Session(profile=profile)
        try:
            profile_settings: Mapping[str, Any] = core.get_scoped_config()
        except ProfileNotFound as error:
            origin = "" if profile is not None else " (named by AWS_PROFILE)"
            raise ValueError(
                f"profile: no AWS profile named {core.profile!r}{origin} in the AWS config files"
            ) from error
        except BotoCoreError as error:  # e.g. a config file that does not parse
            raise ValueError(f"the AWS config files cannot be read: {error}") from error
        resolved = _resolve_region(region, profile, profile_settings)
        if not _REGION_PATTERN.match(resolved):
            raise ValueError(f"region must look like 'us-east-1', not {resolved!r}")
        endpoints = {
            service: endpoint_url or _configured_endpoint(core, service)
            for service in _SERVICES_SHOWN
        }
        if endpoints["batch"] is None:
            _check_known_region(core, resolved)

        self._region = resolved
        self._profile = profile
        self._endpoint_url = endpoint_url
        self._endpoints: dict[str, str | None] = endpoints
        self._max_attempts = max_attempts
        self._seconds_timeout = float(seconds_timeout)
        self._session = boto3.session.Session(botocore_session=core, region_name=resolved, **keys)
        self._botocore_config = botocore.config.Config(
            region_name=resolved,
            retries={"mode": "adaptive", "total_max_attempts": max_attempts},
            connect_timeout=self._seconds_timeout,
            read_timeout=self._seconds_timeout,
        )
        self._clients: dict[str, BaseClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def given_or_default(cls, aws: AWSConfig | None) -> AWSConfig:
        """`aws` itself, or `AWSConfig()` (region and keys from the environment) when None.

        Example:
            >>> config = AWSConfig(region="us-east-1")
            >>> AWSConfig.given_or_default(config) is config
            True
        """
        if aws is None:
            return cls()
        if not isinstance(aws, AWSConfig):
            raise TypeError(f"aws must be an AWSConfig or None, not {type(aws).__name__}")
        return aws

    @property
    def region(self) -> str:
        """The AWS region every client of this configuration talks to.

        Example:
            >>> AWSConfig(region="eu-west-1").region
            'eu-west-1'
        """
        return self._region

    @property
    def profile(self) -> str | None:
        """The AWS profile given at construction, or None.

        Example:
            >>> AWSConfig(region="eu-west-1").profile is None
            True
        """
        return self._profile

    @property
    def endpoint_url(self) -> str | None:
        """Where Batch calls go: the endpoint given, else the one set in the environment or the
        AWS config file (a local test server, a VPC endpoint); None for AWS itself.

        Example:
            >>> AWSConfig(region="eu-west-1").endpoint_url is None
            True
        """
        return self._endpoints["batch"]

    @property
    def max_attempts(self) -> int:
        """The total number of attempts botocore makes for one call, first try included.

        Example:
            >>> AWSConfig(region="eu-west-1", max_attempts=3).max_attempts
            3
        """
        return self._max_attempts

    @property
    def seconds_timeout(self) -> float:
        """How long one attempt waits to connect, and then for each part of the answer.

        Example:
            >>> AWSConfig(region="eu-west-1", seconds_timeout=10).seconds_timeout
            10.0
        """
        return self._seconds_timeout

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_lock"):
            raise AttributeError(f"AWSConfig is read-only; make a new one to change {name!r}")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        batch, logs = (self._endpoints[service] for service in _SERVICES_SHOWN)
        elsewhere = "" if logs == batch else f", logs_endpoint_url={logs!r}"
        return (
            f"AWSConfig(region={self._region!r}, profile={self._profile!r}, "
            f"endpoint_url={batch!r}{elsewhere}, max_attempts={self._max_attempts}, "
            f"seconds_timeout={self._seconds_timeout})"
        )

    @overload
    def client(self, service_name: Literal["batch"]) -> BatchClient: ...
    @overload
    def client(self, service_name: Literal["logs"]) -> CloudWatchLogsClient: ...
    @overload
    def client(self, service_name: str) -> BaseClient: ...

    def client(self, service_name: str) -> Any:
        """The shared boto3 client for `service_name`, created on first use.

        Example:
            >>> aws = AWSConfig(region="us-east-1")
            >>> aws.client("batch") is aws.client("batch")
            True
        """
        with self._lock:
            existing = self._clients.get(service_name)
            if existing is not None:
                return existing
            try:
                # The endpoints shown by repr() are the ones used, even if the environment
                # changes after this configuration was made.
                endpoint = self._endpoints.get(service_name, self._endpoint_url)
                created = self._session.client(
                    service_name,  # type: ignore[call-overload]
                    endpoint_url=endpoint,
                    config=self._botocore_config,
                )
            except BotoCoreError as error:  # credentials that cannot be found or obtained
                raise AWSError(
                    f"creating a {service_name} client",
                    self._region,
                    "the AWS credentials",
                    str(error),
                ) from error
            _watch_retries(created, self._region, self._max_attempts)
            self._clients[service_name] = created
            return created

    def call(
        self,
        operation: str,
        resource: str,
        function: Callable[P, T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `function(*args, **kwargs)`; a botocore failure becomes an `AWSError`.

        The error names `operation` (the AWS API name, such as `SubmitJob`), this region and
        `resource` (what was acted on, such as `job queue my-queue`), and keeps the original
        exception as its `__cause__`.

        Example:
            >>> aws = local.aws_config()
            >>> batch = aws.client("batch")
            >>> aws.call("ListJobs", "job queue q", batch.list_jobs, jobQueue="q")
            Traceback (most recent call last):
            ...
            batchcrew.errors.AWSError: ListJobs in us-east-1 on job queue q failed: \
ClientException: Job queue q does not exist
        """
        try:
            return function(*args, **kwargs)
        except ClientError as error:
            details = error.response.get("Error", {})
            code = details.get("Code") or "ClientError"
            message = details.get("Message") or str(error)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            transient = status == 429 or status >= 500 or code in _THROTTLING_CODES
            raise AWSError(
                operation, self._region, resource, f"{code}: {message}", transient=transient
            ) from error
        except NoCredentialsError as error:
            reason = (
                f"{error} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "give a profile, or run on a machine with an IAM role)"
            )
            raise AWSError(operation, self._region, resource, reason) from error
        except BotoCoreError as error:
            reason = f"{type(error).__name__}: {error}"
            transient = isinstance(error, BotoConnectionError | HTTPClientError)
            raise AWSError(
                operation, self._region, resource, reason, transient=transient
            ) from error


@contextlib.contextmanager
def failed_attempts() -> Iterator[list[FailedAttempt]]:
    """Collect the failed attempts of the calls this thread makes in the block: those
    botocore retried, and the last one of a call that failed.

    Example:
        >>> aws = AWSConfig(region="us-east-1", endpoint_url="http://127.0.0.1:1",
        ...                 max_attempts=2, credentials={"aws_access_key_id": "k",
        ...                                              "aws_secret_access_key": "s"})
        >>> with failed_attempts() as failed:
        ...     try:
        ...         aws.call("ListJobs", "job queue q", aws.client("batch").list_jobs,
        ...                  jobQueue="q")
        ...     except AWSError as error:
        ...         error.transient
        True
        >>> [(attempt.operation, attempt.carried_out) for attempt in failed]
        [('ListJobs', False), ('ListJobs', False)]
    """
    failed: list[FailedAttempt] = []
    stack: list[list[FailedAttempt]] | None = getattr(_watching, "lists", None)
    if stack is None:
        stack = _watching.lists = []
    stack.append(failed)
    try:
        yield failed
    finally:
        stack.pop()  # this block's list: blocks in one thread end in the reverse order


def _watch_retries(client: BaseClient, region: str, max_attempts: int) -> None:
    """Log every retry botocore makes, with the error that caused it."""
    service = client.meta.service_model.service_id.hyphenize()

    def remember_error(
        response: tuple[Any, Mapping[str, Any]] | None,
        caught_exception: BaseException | None,
        request_dict: dict[str, Any],
        operation: Any = None,
        **_: Any,
    ) -> None:
        if caught_exception is not None:
            problem = f"{type(caught_exception).__name__}: {caught_exception}"
            # Refused connections and connect timeouts never delivered the request.
            carried_out = not isinstance(
                caught_exception, EndpointConnectionError | ConnectTimeoutError
            )
        elif response is not None and response[0].status_code >= 400:
            code = response[1].get("Error", {}).get("Code", "")
            problem = f"HTTP {response[0].status_code} {code}".rstrip()
            # AWS carried out nothing it answered with a throttle or a client error.
            carried_out = response[0].status_code >= 500 and code not in _THROTTLING_CODES
        else:
            return
        request_dict["context"][_LAST_ERROR_KEY] = problem
        name = getattr(operation, "name", None) or "an AWS call"
        for failed in getattr(_watching, "lists", ()):
            failed.append(FailedAttempt(name, problem, carried_out))

    def log_retry(request: Any, operation_name: str, **_: Any) -> None:
        retries = request.context.get("retries", {})
        attempt = retries.get("attempt", 1)
        if attempt > 1:
            logger.info(
                "retrying %s in %s (attempt %d of %s) after %s",
                operation_name,
                region,
                attempt,
                retries.get("max", max_attempts),
                request.context.get(_LAST_ERROR_KEY, "an error"),
            )

    client.meta.events.register(f"needs-retry.{service}", remember_error)
    client.meta.events.register(f"request-created.{service}", log_retry)


def error_code(error: AWSError) -> str | None:
    """The AWS error code behind an `AWSError` (such as `ResourceNotFoundException`), if any.

    Example:
        >>> error_code(AWSError("GetLogEvents", "us-east-1", "log stream s", "gone")) is None
        True
    """
    cause = error.__cause__
    if isinstance(cause, ClientError):
        code = cause.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def _check_optional_string(argument: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string or None, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{argument} must not be empty")


def _check_credentials(credentials: Mapping[str, str] | None) -> dict[str, str]:
    if credentials is None:
        return {}
    if not isinstance(credentials, Mapping):
        raise TypeError(f"credentials must be a mapping, not {type(credentials).__name__}")
    unknown = sorted(set(credentials) - set(CREDENTIAL_KEYS))
    if unknown:
        raise ValueError(
            f"credentials has unknown keys {unknown}; allowed keys: {', '.join(CREDENTIAL_KEYS)}"
        )
    missing = [key for key in _REQUIRED_CREDENTIAL_KEYS if key not in credentials]
    if missing:
        raise ValueError(f"credentials must have the keys {', '.join(missing)}")
    for key, value in credentials.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"credentials[{key!r}] must be a non-empty string")
    return dict(credentials)


def _configured_endpoint(core: botocore.session.Session, service: str) -> str | None:
    """The endpoint botocore would read for `service` from the environment or config file."""
    if core.get_config_variable("ignore_configured_endpoint_urls"):
        return None
    provider = ConfiguredEndpointProvider(
        full_config=core.full_config, scoped_config=core.get_scoped_config(), client_name=service
    )
    found = provider.provide()
    return str(found) if found else None


def _check_known_region(core: botocore.session.Session, region: str) -> None:
    """Refuse a region botocore knows no AWS Batch endpoint in, naming the close ones."""
    known = sorted(
        {
            name
            for partition in core.get_available_partitions()
            for name in core.get_available_regions("batch", partition_name=partition)
        }
    )
    if region in known:
        return
    close = difflib.get_close_matches(region, known, n=3)
    hint = (
        f"did you mean {' or '.join(repr(name) for name in close)}?"
        if close
        else f"AWS Batch regions: {', '.join(known)}"
    )
    raise ValueError(
        f"region must be a region of AWS Batch, not {region!r}; {hint} (any name is taken "
        "when an endpoint_url is set)"
    )


def _resolve_region(
    region: str | None, profile: str | None, profile_settings: Mapping[str, Any]
) -> str:
    profile_region = profile_settings.get("region") or None
    environment_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if profile is not None:
        candidates = (region, profile_region, environment_region)
    else:
        candidates = (region, environment_region, profile_region)
    for candidate in candidates:
        if candidate:
            return str(candidate).strip()
    raise ValueError(
        "no AWS region found: pass region='us-east-1', set AWS_REGION or "
        "AWS_DEFAULT_REGION, or use a profile whose config has a region"
    )
