"""When `backend="batchcrew"` becomes known to joblib: at once if joblib is already imported,
otherwise right after joblib is first imported (a finder on `sys.meta_path` wraps joblib's
loader, since joblib offers no plugin hook of its own). Importing this module, as `import
batchcrew` does, sets that up.

It must import neither joblib nor the rest of batchcrew: every process that imports batchcrew,
workers included, runs it, and joblib is an optional dependency.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    from batchcrew.joblib_backend import BatchcrewBackend

logger = logging.getLogger("batchcrew.joblib_hook")

BACKEND_NAME = "batchcrew"


def install() -> None:
    """Make `backend="batchcrew"` known to joblib, now or when joblib is imported (idempotent).

    Example:
        >>> install()
        >>> import joblib.parallel
        >>> type(joblib.parallel.BACKENDS["batchcrew"]()).__name__
        'BatchcrewBackend'
    """
    if "joblib" in sys.modules:
        _register()
    elif not any(isinstance(finder, _JoblibFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _JoblibFinder())


def make_backend(**parameters: Any) -> BatchcrewBackend:
    """A new backend (what joblib registers), its module imported only when first used: the
    registration runs while joblib loads, perhaps inside an unfinished import of
    `batchcrew.joblib_backend`, which imports joblib.

    Example:
        >>> make_backend(controller=None).controller is None
        True
    """
    from batchcrew.joblib_backend import BatchcrewBackend

    return BatchcrewBackend(**parameters)


def _register() -> None:
    try:
        from joblib.parallel import register_parallel_backend

        register_parallel_backend(BACKEND_NAME, make_backend)
    except Exception:  # neither joblib nor batchcrew may fail to import because of this
        logger.exception("the joblib backend %r could not be registered", BACKEND_NAME)


class _JoblibFinder:
    """Finds nothing itself: asked for joblib, it asks the other finders and wraps the loader
    they found, so that the backend is registered once joblib has loaded.

    It stays in place: a later look-up of joblib (a reload, which empties joblib's registry)
    registers the backend again.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "joblib":
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec: ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = cast("Loader", _RegisteringLoader(spec.loader))
                return spec
        return None


class _RegisteringLoader:
    """joblib's own loader, followed by the registration."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # joblib keeps its own loader: inspect and importlib.resources look at it.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _register()


install()
