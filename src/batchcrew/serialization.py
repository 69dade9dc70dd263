"""Pickling tasks and results: cloudpickle where it is needed, the C pickler where it is not.

cloudpickle ships functions and classes defined in `__main__` or a notebook by value; plain
values and importable functions pickle to the same bytes much faster with `pickle` itself.
"""

from __future__ import annotations

import pickle
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
    data: bytes = cloudpickle.dumps(fn, protocol=PICKLE_PROTOCOL)
    return data


def _registered_by_value(module: str) -> bool:
    registered = cloudpickle.list_registry_pickle_by_value()
    return any(module == name or module.startswith(name + ".") for name in registered)
