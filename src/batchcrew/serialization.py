"""Pickling tasks and results: cloudpickle where it is needed, the C pickler where it is not,
and large buffers beside the pickle rather than in it.

cloudpickle ships functions and classes defined in `__main__` or a notebook by value; plain
values and importable functions pickle to the same bytes much faster with `pickle` itself.
With pickle protocol 5, a large buffer (a bytes object, a numpy array's data) is handed over
as it is and sent after the pickle, never copied into it.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

PICKLE_PROTOCOL = 5

OUT_OF_BAND_BYTES = 1 << 16
"""A buffer this large travels beside the pickle instead of inside it."""

_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
_CONTAINERS = frozenset({tuple, list, frozenset, set})
_NOT_PLAIN, _PLAIN, _PLAIN_WITH_LARGE_BYTES = 0, 1, 2


def _plain(value: Any, depth: int = 3) -> int:
    """Whether the C pickler alone can pickle `value` (and whether it holds large bytes)."""
    kind = type(value)
    if kind in _SCALARS:
        large = kind is bytes and len(value) >= OUT_OF_BAND_BYTES
        return _PLAIN_WITH_LARGE_BYTES if large else _PLAIN
    if depth == 0:
        return _NOT_PLAIN
    if kind in _CONTAINERS:
        items = [_plain(item, depth - 1) for item in value]
    elif kind is dict:
        items = [min(_plain(k, 0), _PLAIN) for k in value]
        items += [_plain(v, depth - 1) for v in value.values()]
    else:
        return _NOT_PLAIN
    if _NOT_PLAIN in items:
        return _NOT_PLAIN
    return _PLAIN_WITH_LARGE_BYTES if _PLAIN_WITH_LARGE_BYTES in items else _PLAIN


@dataclass(frozen=True, slots=True)
class Pickled:
    """A value pickled with its large buffers apart: `data` refers to `buffers`, which are sent
    after it as they are.

    Example:
        >>> pickled = pickle_value([b"x" * 100_000, 1])
        >>> len(pickled.data) < 100, [len(buffer) for buffer in pickled.buffers]
        (True, [100000])
        >>> load_value(pickled.data + bytes(pickled.buffers[0]), [100_000])[1]
        1
    """

    data: bytes
    buffers: tuple[memoryview, ...] = ()

    @property
    def size(self) -> int:
        """Bytes of the pickle and its buffers together."""
        return len(self.data) + sum(buffer.nbytes for buffer in self.buffers)

    @property
    def lengths(self) -> list[int]:
        """The length of each buffer, as the receiver needs them."""
        return [buffer.nbytes for buffer in self.buffers]


class _ApartBytes:
    """A large bytes object that pickles as a buffer beside the pickle (loaded back as bytes),
    instead of being copied into it."""

    __slots__ = ("buffer",)

    def __init__(self, data: bytes) -> None:
        self.buffer = pickle.PickleBuffer(data)

    def __reduce_ex__(self, protocol: Any) -> tuple[type[bytes], tuple[pickle.PickleBuffer]]:
        return bytes, (self.buffer,)


def _set_apart(value: Any, depth: int = 3) -> Any:
    """`value` with each large bytes object (in tuples, lists and dicts) set apart."""
    kind = type(value)
    if kind is bytes:
        return _ApartBytes(value) if len(value) >= OUT_OF_BAND_BYTES else value
    if depth == 0:
        return value
    if kind is tuple:
        return tuple(_set_apart(item, depth - 1) for item in value)
    if kind is list:
        return [_set_apart(item, depth - 1) for item in value]
    if kind is dict:
        return {key: _set_apart(item, depth - 1) for key, item in value.items()}
    return value


def pickle_value(value: Any) -> Pickled:
    """Pickle a value (arguments or a result), its large buffers apart.

    Example:
        >>> load_value(pickle_value({"x": [1, 2.5, "a"]}).data)
        {'x': [1, 2.5, 'a']}
    """
    buffers: list[memoryview] = []

    def keep_apart(buffer: pickle.PickleBuffer) -> bool:
        """Out of band (False) when large and contiguous, in the pickle (True) otherwise."""
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: only a copy can travel
            return True
        if view.nbytes < OUT_OF_BAND_BYTES:
            return True
        buffers.append(view)
        return False

    plain = _plain(value)
    if plain == _PLAIN:
        return Pickled(pickle.dumps(value, protocol=PICKLE_PROTOCOL))
    if plain == _PLAIN_WITH_LARGE_BYTES:
        apart = _set_apart(value)
        data = pickle.dumps(apart, protocol=PICKLE_PROTOCOL, buffer_callback=keep_apart)
        return Pickled(data, tuple(buffers))
    data = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL, buffer_callback=keep_apart)
    return Pickled(data, tuple(buffers))


def load_value(body: bytes | memoryview, lengths: Sequence[int] = ()) -> Any:
    """Load what `pickle_value` made, as received: the pickle, then its buffers' bytes.

    Example:
        >>> load_value(pickle_value(("a", 1)).data)
        ('a', 1)
    """
    if not lengths:
        return pickle.loads(body)
    view = memoryview(body)
    start = len(view) - sum(lengths)
    buffers = []
    for length in lengths:
        buffers.append(view[start : start + length])
        start += length
    return pickle.loads(view[: len(view) - sum(lengths)], buffers=buffers)


def dumps_value(value: Any) -> bytes:
    """Pickle a value (arguments or a result) so that another interpreter can load it.

    Example:
        >>> import pickle
        >>> pickle.loads(dumps_value({"x": [1, 2.5, "a"]}))
        {'x': [1, 2.5, 'a']}
    """
    if _plain(value):
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    data: bytes = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
    return data


def dumps_function(fn: Callable[..., Any]) -> bytes:
    """Pickle a function: by reference when its module is importable, else by value.

    Example:
        >>> import operator, pickle
        >>> pickle.loads(dumps_function(operator.neg))(3)
        -3
    """
    by_reference = dumps_by_reference(fn)
    if by_reference is not None:
        return by_reference
    shipped: Any = fn
    if isinstance(fn, types.FunctionType) and not fn.__code__.co_filename.startswith("<"):
        shipped = _Located(fn)  # tracebacks on the worker name its file, not "<dynamic-code>"
    data: bytes = cloudpickle.dumps(shipped, protocol=PICKLE_PROTOCOL)
    return data


class _Located:
    """A function shipped by value that keeps the name of the file it was written in."""

    __slots__ = ("fn",)

    def __init__(self, fn: types.FunctionType) -> None:
        self.fn = fn

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[types.FunctionType, str]]:
        return (located, (self.fn, self.fn.__code__.co_filename))


def located(fn: types.FunctionType, filename: str) -> types.FunctionType:
    """Give a function unpickled by value (and the code nested in it) its file name back.

    Example:
        >>> def f(): return 1
        >>> located(f, "analysis.py").__code__.co_filename
        'analysis.py'
    """
    fn.__code__ = _renamed(fn.__code__, filename)
    return fn


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(
        _renamed(const, filename) if isinstance(const, types.CodeType) else const
        for const in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def dumps_by_reference(fn: Callable[..., Any]) -> bytes | None:
    """`fn` pickled by reference (its module and name), or None when it must travel by value
    (defined in `__main__`, a lambda, a nested function, a module registered by value).

    Example:
        >>> import operator
        >>> dumps_by_reference(operator.neg) is not None, dumps_by_reference(lambda: 1)
        (True, None)
    """
    module = getattr(fn, "__module__", None)
    if not module or module == "__main__" or _registered_by_value(module):
        return None
    try:
        return pickle.dumps(fn, protocol=PICKLE_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None  # a lambda, a nested function, a shadowed name: cloudpickle knows how


def _registered_by_value(module: str) -> bool:
    registered = cloudpickle.list_registry_pickle_by_value()
    return any(module == name or module.startswith(name + ".") for name in registered)
