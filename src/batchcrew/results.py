"""What a task gives back: `Result` (one task) and `Results` (a list of them).

Pure values: no I/O, no pandas until a user asks for a table.
"""

from __future__ import annotations

import builtins
import reprlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from batchcrew.messages import Status

if TYPE_CHECKING:
    import pandas

_COMMAND_LENGTH = 80
RESULTS_SHOWN = 3
"""Results a `Results` repr shows (the rest are counted)."""


class _ShortRepr(reprlib.Repr):
    """`reprlib.Repr` that never builds the whole text of a large value first: bytes are cut
    before they are shown, huge integers and long containers of other kinds are named."""

    def repr_bytes(self, value: bytes, level: int) -> str:
        return self._cut(builtins.repr(value[: self.maxstring]), len(value))

    def repr_bytearray(self, value: bytearray, level: int) -> str:
        return self._cut(builtins.repr(value[: self.maxstring]), len(value))

    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 128:  # its decimal text alone would take long (or be refused)
            return f"<int of {value.bit_length()} bits>"
        return super().repr_int(value, level)

    def repr_instance(self, value: Any, level: int) -> str:
        try:
            length = len(value)
        except Exception:  # noqa: BLE001 (most objects have no length)
            length = 0
        if length > LENGTH_SHOWN_WHOLE:
            return f"<{type(value).__name__} of length {length:,}>"
        return super().repr_instance(value, level)

    def _cut(self, text: str, length: int) -> str:
        return text if length <= self.maxstring else f"{text[:-1]}...{text[-1]}"


LENGTH_SHOWN_WHOLE = 1000
"""A value of another kind than the built-in ones this long is named, not shown."""

_argument_repr = _ShortRepr()
_argument_repr.maxstring = 24
_argument_repr.maxother = 24
_argument_repr.maxlist = 4
_argument_repr.maxtuple = 4
_argument_repr.maxdict = 3
_field_repr = _ShortRepr()
_field_repr.maxstring = 80
_field_repr.maxother = 80


def describe_call(fn: Callable[..., Any], args: Iterable[Any], kwargs: Mapping[str, Any]) -> str:
    """Return a short text of a call, as `Result.command` shows it.

    Example:
        >>> def fit(x, alpha=1.0): ...
        >>> describe_call(fit, (3,), {"alpha": 0.1})
        'fit(3, alpha=0.1)'
        >>> describe_call(fit, (b"x" * 2**20, 10**1000), {})
        "fit(b'xxxxxxxxxxxxxxxxxxxxxxxx...', <int of 3322 bits>)"
    """
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    parts = [_argument_repr.repr(value) for value in args]
    parts += [f"{key}={_argument_repr.repr(value)}" for key, value in kwargs.items()]
    text = f"{name}({', '.join(parts)})"
    if len(text) > _COMMAND_LENGTH:
        text = text[: _COMMAND_LENGTH - 4] + "...)"
    return text


@dataclass(frozen=True)
class Result:
    """The outcome of one task.

    `attempts` counts the workers that started the task (1 when it never crashed); `worker` and
    `launch` say where it ran last (`launch` is the AWS job id on AWS Batch). `exception` is the
    exception a failed task raised, when it could travel back (pickled on the worker, unpickled
    here).

    Example:
        >>> result = Result(name="fit-3", command="fit(3)", status="success", value=9)
        >>> result.ok, result.value
        (True, 9)
    """

    name: str
    command: str
    status: Status
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    seed: int | None = None
    attempts: int = 0
    worker: str | None = None
    launch: str | None = None
    exception: BaseException | None = None

    def __repr__(self) -> str:
        """The fields that tell what happened, in one line (all fields: `dataclasses.asdict`).

        Example:
            >>> Result("fit-3", "fit(3)", "success", value=9, seconds=1.23456, attempts=1)
            Result(name='fit-3', status='success', value=9, seconds=1.23, attempts=1)
        """
        parts = [f"name={self.name!r}", f"status={self.status!r}"]
        if self.ok:
            parts.append(f"value={_field_repr.repr(self.value)}")
        else:
            parts.append(f"error={_field_repr.repr(self.error)}")
        parts += [f"seconds={self.seconds:.3g}", f"attempts={self.attempts}"]
        if self.worker is not None:
            parts.append(f"worker={self.worker!r}")
        return f"Result({', '.join(parts)})"

    @property
    def ok(self) -> bool:
        """True when the task succeeded.

        Example:
            >>> Result(name="a", command="f()", status="error").ok
            False
        """
        return self.status == "success"


class Results(list[Result]):
    """A list of `Result` with helpers for values and tables.

    Example:
        >>> results = Results([Result(name="a", command="f(1)", status="success", value=1)])
        >>> results.values()
        [1]
    """

    def __repr__(self) -> str:
        """How many results of each status, and the first few.

        Example:
            >>> Results([Result(str(i), "f()", "success", value=i) for i in range(5)])
            Results(5 results: 5 success; Result(name='0', status='success', value=0, ...), ...)
        """
        statuses = Counter(result.status for result in self)
        counts = ", ".join(f"{count} {status}" for status, count in statuses.most_common())
        shown = [repr(result) for result in self[:RESULTS_SHOWN]]
        if len(self) > RESULTS_SHOWN:
            shown.append("...")
        body = "; ".join(filter(None, [counts, ", ".join(shown)]))
        return f"Results({len(self)} results{': ' if body else ''}{body})"

    def values(self) -> list[Any]:
        """The value of each result, in order (None where a task did not succeed).

        Example:
            >>> Results([]).values()
            []
        """
        return [result.value for result in self]

    def failed(self) -> Results:
        """The results whose status is not `success`.

        Example:
            >>> len(Results([Result(name="a", command="f()", status="crash")]).failed())
            1
        """
        return Results(result for result in self if not result.ok)

    def to_frame(self) -> pandas.DataFrame:
        """One row per result, one column per field (pandas).

        Example:
            >>> Results([Result(name="a", command="f()", status="success")]).to_frame().shape
            (1, 13)
        """
        import pandas

        columns = [item.name for item in fields(Result)]
        rows = [[getattr(result, column) for column in columns] for result in self]
        frame: pandas.DataFrame = pandas.DataFrame(rows, columns=columns)
        return frame
