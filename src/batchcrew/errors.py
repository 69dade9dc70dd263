"""The one exception hierarchy of batchcrew.

Every error the library raises on purpose derives from `BatchcrewError`; argument errors are
plain `ValueError`/`TypeError` so they read as what they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from batchcrew.results import Result, Results


class BatchcrewError(Exception):
    """Base class of the errors batchcrew raises.

    Example:
        >>> try:
        ...     raise BatchcrewError("something went wrong")
        ... except BatchcrewError as error:
        ...     str(error)
        'something went wrong'
    """


class TaskError(BatchcrewError):
    """One or more tasks did not succeed; `.results` holds every result (`Results`, so
    `.failed()`, `.values()` and `.to_frame()` work on them).

    Example:
        >>> error = TaskError("1 of 1 tasks failed", [Result("a", "f()", "error")])
        >>> len(error.results.failed())
        1
    """

    def __init__(self, message: str, results: Sequence[Result]) -> None:
        super().__init__(message)
        self.results = Results(results)


class TerminatedError(BatchcrewError, RuntimeError):
    """The controller was terminated; it takes no more tasks.

    A `RuntimeError` too, as `concurrent.futures` executors raise after shutdown.

    Example:
        >>> isinstance(TerminatedError("controller crew-1 was terminated"), RuntimeError)
        True
    """


class ProtocolError(BatchcrewError):
    """A peer sent something that is not a valid batchcrew frame.

    Example:
        >>> str(ProtocolError("frame of 9 GB is over the limit"))
        'frame of 9 GB is over the limit'
    """


class ConnectionRefused(BatchcrewError):
    """A peer may not join the controller (wrong token, unknown launch, versions that differ).

    `reply` is what the peer is told: an unauthenticated peer learns nothing of why.

    Example:
        >>> refusal = ConnectionRefused("unknown launch 'L9'", reply="authentication failed")
        >>> str(refusal), refusal.reply
        ("unknown launch 'L9'", 'authentication failed')
    """

    def __init__(self, message: str, reply: str | None = None) -> None:
        super().__init__(message)
        self.reply = message if reply is None else reply


class CertificateMismatch(BatchcrewError, ConnectionError):
    """The controller's certificate does not match the fingerprint the worker pinned: the
    worker is talking to someone else, and trying again will not help.

    Example:
        >>> isinstance(CertificateMismatch("pin differs"), ConnectionError)
        True
    """


class LaunchError(BatchcrewError):
    """A launcher could not start or stop workers.

    Example:
        >>> str(LaunchError("python not found"))
        'python not found'
    """


class AWSError(BatchcrewError):
    """An AWS call failed; the message names the operation, the region and the resource.

    `transient` says whether trying again later may help.

    Example:
        >>> error = AWSError("SubmitJob", "us-east-1", "queue q1", "ClientException: no queue")
        >>> str(error)
        'SubmitJob in us-east-1 on queue q1 failed: ClientException: no queue'
    """

    def __init__(
        self, operation: str, region: str, resource: str, reason: str, *, transient: bool = False
    ) -> None:
        super().__init__(f"{operation} in {region} on {resource} failed: {reason}")
        self.operation = operation
        self.region = region
        self.resource = resource
        self.reason = reason
        self.transient = transient
        """AWS was busy or out of reach (throttling, a server error, a connection that failed or
        timed out): the same call may well succeed later."""
