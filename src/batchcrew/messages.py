"""The two values a task becomes inside the controller: `TaskSpec` on its way to a worker and
`Outcome` on its way back. Plain frozen data: no I/O, no pickling, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["success", "error", "crash", "cancel", "timeout"]
"""How a task ended."""

Body = bytes | memoryview
"""A pickle as it arrived: a large one is a view of the buffer it was received into, never
copied out of it."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task ready to send: its name, its function (cache key and pickle), its pickled
    arguments (and the large buffers they refer to, sent after them as they are), its seed,
    its timeout, and the setup its worker must have run first (an executor's initializer:
    cache key and pickle).

    Example:
        >>> TaskSpec("t1", "key", b"fn", b"args", seed=7).name
        't1'
    """

    name: str
    function: str
    function_data: bytes
    arguments: bytes
    seed: int
    seconds_timeout: float | None = None
    setup: str | None = None
    setup_data: bytes = b""
    argument_buffers: tuple[memoryview, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a task: what its worker reported, or what the controller decided.

    `body` is the pickled value of a successful task (or the pickled exception of a failed one,
    when it could be pickled), followed by the large buffers the value refers to, of lengths
    `buffers`; it is unpickled in the thread of whoever takes the result, never on the
    controller's event loop.

    Example:
        >>> Outcome("success", body=b"...").ok
        True
    """

    status: Status
    body: Body = b""
    error: str | None = None
    traceback: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    buffers: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        return self.status == "success"
