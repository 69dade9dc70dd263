"""Turning a Python call into a task: check its name, pickle its function and arguments, and
describe it in a line. Runs in the user's thread and touches no shared state.
"""

from __future__ import annotations

import reprlib
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchcrew.protocol import BODY_BYTES_MAX, function_key
from batchcrew.results import describe_call
from batchcrew.serialization import Pickled, dumps_by_reference, dumps_function, pickle_value

NAME_LENGTH_MAX = 1024
"""The longest task name (names travel in frame headers)."""


@dataclass(frozen=True, slots=True)
class PickledFunction:
    """A function ready to ship: its cache key, its pickle, and the function itself.

    Example:
        >>> pickle_function(abs).fn is abs
        True
    """

    key: str
    data: bytes
    fn: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a function, pickled: its name (None: one is made up), text and arguments
    (their large buffers apart).

    Example:
        >>> prepare(pickle_function(pow), (2, 3), {}, None).command
        'pow(2, 3)'
    """

    name: str | None
    command: str
    arguments: Pickled


def pickle_function(fn: Callable[..., Any]) -> PickledFunction:
    """Pickle `fn` once for all its calls; raise `TypeError` if it is not callable or picklable.

    Example:
        >>> pickle_function(42)
        Traceback (most recent call last):
        ...
        TypeError: fn must be callable, not int
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    plain_function = type(fn) in (types.FunctionType, types.BuiltinFunctionType)
    if plain_function:
        known = _by_reference.get(fn)
        if known is not None:
            return known
    try:
        data = dumps_function(fn)
    except Exception as error:
        raise TypeError(f"fn {fn!r} cannot be pickled: {error}") from error
    pickled = PickledFunction(function_key(data), data, fn)
    # Only what travels by reference is kept: a function shipped by value carries the values
    # of its globals, which may have changed by its next push.
    if plain_function and data == dumps_by_reference(fn):
        if len(_by_reference) >= FUNCTIONS_KEPT:
            _by_reference.clear()
        _by_reference[fn] = pickled
    return pickled


FUNCTIONS_KEPT = 256
"""Functions pickled by reference kept for their next push."""

_by_reference: dict[Callable[..., Any], PickledFunction] = {}


def check_name(name: object) -> None:
    """Raise `ValueError` unless `name` is a non-empty string of at most `NAME_LENGTH_MAX`.

    Example:
        >>> check_name("")
        Traceback (most recent call last):
        ...
        ValueError: a task name must be a non-empty string of at most 1024 characters, not ''
    """
    if not isinstance(name, str) or not name or len(name) > NAME_LENGTH_MAX:
        raise ValueError(
            f"a task name must be a non-empty string of at most {NAME_LENGTH_MAX} "
            f"characters, not {reprlib.repr(name)}"
        )


def prepare(
    function: PickledFunction, args: Sequence[Any], kwargs: Mapping[str, Any], name: str | None
) -> Call:
    """Check the name and pickle the arguments of one call of `function`."""
    if name is not None:
        check_name(name)
    command = describe_call(function.fn, args, kwargs)
    try:
        packed = pickle_value((tuple(args), dict(kwargs)))
    except Exception as error:
        raise TypeError(f"the arguments of {command} cannot be pickled: {error}") from error
    if len(function.data) + packed.size > BODY_BYTES_MAX:
        raise ValueError(
            f"{command} pickles to {len(function.data) + packed.size:,} bytes, over the "
            f"{BODY_BYTES_MAX:,}-byte limit of a task; pass a path instead"
        )
    return Call(name, command, packed)


def prepare_map(
    function: PickledFunction,
    iterables: Sequence[Iterable[Any]],
    names: Iterable[str] | None,
    strict: bool,
) -> list[Call]:
    """The calls of `fn` over zipped iterables, every one checked and pickled (all or nothing).

    With `strict`, iterables of different lengths are a `ValueError` naming the lengths.

    Example:
        >>> power = pickle_function(pow)
        >>> [call.command for call in prepare_map(power, [[2, 3], [5, 2]], None, True)]
        ['pow(2, 5)', 'pow(3, 2)']
        >>> prepare_map(power, [[1, 2, 3], [10, 20]], None, True)
        Traceback (most recent call last):
        ...
        ValueError: the iterables have different lengths (3, 2); make them equal, or pass ...
    """
    if not iterables:
        raise ValueError("give at least one iterable of arguments")
    lists = [list(iterable) for iterable in iterables]
    if strict and len({len(items) for items in lists}) > 1:
        shown = ", ".join(str(len(items)) for items in lists)
        raise ValueError(
            f"the iterables have different lengths ({shown}); make them equal, or pass "
            "strict=False to stop at the shortest"
        )
    arguments = list(zip(*lists, strict=False))
    chosen: list[str | None] = [None] * len(arguments)
    if names is not None:
        if isinstance(names, str):
            raise TypeError("names must be an iterable of task names, not one string")
        chosen = list(names)
        if len(chosen) != len(arguments):
            raise ValueError(
                f"names has {len(chosen)} elements but there are {len(arguments)} tasks"
            )
        for name in chosen:
            check_name(name)
        if len(set(chosen)) != len(chosen):
            raise ValueError("names must be unique")
    return [prepare(function, args, {}, name) for args, name in zip(arguments, chosen, strict=True)]
