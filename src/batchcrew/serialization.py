"""Pickling tasks and results: cloudpickle where it is needed, the C pickler where it is not.

cloudpickle ships functions and classes defined in `__main__` or a notebook by value; plain
values and importable functions pickle to the same bytes much faster with `pickle` itself.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

PICKLE_PROTOCOL = 5

_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
_CONTAINERS = frozenset({tuple, list, frozenset, set})


def _plain(value: Any, depth: int = 3) -> bool:
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth == 0:
        return False
    if kind in _CONTAINERS:
        return all(_plain(item, depth - 1) for item in value)
    if kind is dict:
        return all(_plain(k, 0) and _plain(v, depth - 1) for k, v in value.items())
    return False


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
    module = getattr(fn, "__module__", None)
    if module and module != "__main__" and not _registered_by_value(module):
        try:
            return pickle.dumps(fn, protocol=PICKLE_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            pass  # a lambda, a nested function, a shadowed name: cloudpickle knows how
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


def _registered_by_value(module: str) -> bool:
    registered = cloudpickle.list_registry_pickle_by_value()
    return any(module == name or module.startswith(name + ".") for name in registered)
