"""Names a package exports but imports only when first used (PEP 562), so that a worker
process, which imports the package, loads none of what only the controller needs."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, loading each name from its home module (a
    name whose home is `package.name` is that subpackage itself).

    A name whose home is the package's own submodule of that name is the submodule itself.

    Example:
        >>> get, names = lazy_exports("batchcrew", {"TLS": "batchcrew.tls"})
        >>> get("TLS").__name__, "TLS" in names()
        ('TLS', True)
        >>> lazy_exports("batchcrew", {"aws": "batchcrew.aws"})[0]("aws").__name__
        'batchcrew.aws'
    """

    def get(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home)
        value = module if home == f"{package}.{name}" else getattr(module, name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def names() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return get, names
