"""The systems the suite compares, one driver module each.

A driver has `LABEL`, `ENVIRONMENT` (None: the project's interpreter; otherwise the folder under
`.bench/venvs` that `make bench` fills from `<module>.txt` beside it), `missing()` (why it cannot
run here, or None), `version()` (which imports the system, so that no clock counts the import)
and `run(key, size)`, which takes one measure once. A peer is
one module here and its name in `NAMES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("batchcrew", "process_pool", "dask", "parsl", "mirai", "crew")
"""Every system, in the table's column order; batchcrew first (the ratios' numerator)."""


def load(name: str) -> ModuleType:
    """The driver module of a system (it imports its package only when it runs)."""
    if name not in NAMES:
        raise ValueError(f"unknown system {name!r}; choose from {', '.join(NAMES)}")
    return importlib.import_module(f"systems.{name}")
