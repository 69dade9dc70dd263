"""When `backend="batchcrew"` becomes known to joblib: at once if joblib is already imported,
otherwise right after joblib is first imported (joblib offers no plugin hook of its own, so an
after-import hook, `imports.when_imported`, does it). Importing this module, as `import
batchcrew` does, sets that up.

It must import neither joblib nor the rest of batchcrew: every process that imports batchcrew,
workers included, runs it, and joblib is an optional dependency.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any

from batchcrew.imports import when_imported

if TYPE_CHECKING:
    from batchcrew.joblib_backend import BatchcrewBackend

logger = logging.getLogger("batchcrew.joblib_hook")

BACKEND_NAME = "batchcrew"

_installed = False


def install() -> None:
    """Make `backend="batchcrew"` known to joblib, now or when joblib is imported (idempotent).

    Example:
        >>> install()
        >>> import joblib.parallel
        >>> type(joblib.parallel.BACKENDS["batchcrew"]()).__name__
        'BatchcrewBackend'
    """
    global _installed
    if not _installed:
        _installed = True
        when_imported("joblib", _register)


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


def _register(joblib: ModuleType) -> None:
    try:
        from joblib.parallel import register_parallel_backend

        register_parallel_backend(BACKEND_NAME, make_backend)
    except Exception:  # neither joblib nor batchcrew may fail to import because of this
        logger.exception("the joblib backend %r could not be registered", BACKEND_NAME)


install()
