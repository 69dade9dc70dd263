"""After-import hooks: run a callback once a module has loaded (at once, if it already has),
without importing the module, and again if it is loaded anew.

One finder on `sys.meta_path` finds nothing itself: asked for a watched module, it asks the
other finders and wraps the loader they found. It must import nothing heavy: every process
that imports batchcrew, workers included, loads it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

logger = logging.getLogger("batchcrew.imports")

Callback = Callable[["ModuleType"], None]

_callbacks: dict[str, list[Callback]] = {}


def when_imported(name: str, callback: Callback) -> None:
    """Call `callback(module)` once the module `name` has loaded: now if it already has, else
    right after it loads (and after each reload).

    Example:
        >>> loaded = []
        >>> when_imported("colorsys", lambda module: loaded.append(module.__name__))
        >>> import colorsys
        >>> loaded
        ['colorsys']
    """
    _callbacks.setdefault(name, []).append(callback)
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    module = sys.modules.get(name)
    if module is not None:
        _call(callback, module)


def _call(callback: Callback, module: ModuleType) -> None:
    try:
        callback(module)
    except Exception:  # a hook must never break the import it follows
        logger.exception("a hook on the import of %s failed", module.__name__)


class _Finder:
    """Asked for a watched module, it wraps the loader the other finders find."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in _callbacks:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec: ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = cast("Loader", _HookedLoader(spec.loader))
                return spec
        return None


class _HookedLoader:
    """The module's own loader, followed by the callbacks."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its own loader: inspect and importlib.resources look at it.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        for callback in _callbacks.get(module.__name__, []):
            _call(callback, module)
