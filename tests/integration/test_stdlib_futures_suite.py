"""CPython's own `concurrent.futures` tests, run against `Controller.executor()`.

The standard library's test_concurrent_futures holds tests written for any executor (submit,
map, wait, as_completed, shutdown, initializer) beside tests of its own pools' internals. The
generic ones run here unchanged, each against an executor whose tasks go to a controller's local
workers over TLS. The module is the interpreter's own when it ships its test suite, else the one
in Debian's libpython3.X-testsuite, which `make test` fetches into the virtual environment
(`apt-get download`, no root needed). It is loaded under a name of its own from a temporary
directory that the workers also import from (they unpickle its functions by reference); nothing
of it is kept in this repository.

Where batchcrew differs from the standard pools on purpose (README, "Where the executor differs
from ProcessPoolExecutor"), what checks the standard behaviour is left out, with the reason:
the tests in `LEFT_OUT`, and the failing-initializer tests, which expect the pool to break
(here the task fails with the initializer's exception and the next task tries it again, as
test_executor.py checks).
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import batchcrew as bc
from batchcrew.executor import ControllerExecutor

MODULE = "cpython_test_concurrent_futures"
"""The name the tests' module is loaded under, here and on the workers."""

LEFT_OUT = {
    "test_interpreter_shutdown": "it runs a script that imports its executor class from "
    "concurrent.futures; the same behaviour is tested in test_executor.py "
    "(test_pending_work_finishes_before_the_interpreter_exits)",
    "test_submit_after_interpreter_shutdown": "it runs a script that imports its executor class "
    "from concurrent.futures; see test_executor.py::test_submit_after_interpreter_shutdown_raises",
    "test_hang_gh83386": "it runs a script that imports its executor class from "
    "concurrent.futures; workers' output is tested in test_executor.py",
    "test_max_workers_negative": "it checks the message of a max_workers constructor argument; "
    "the executor comes from Controller.executor(), and the controller's workers= is checked in "
    "tests/unit/test_controller_arguments.py",
}
"""Generic tests not run here, and why."""


def _version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _source() -> Path | None:
    """CPython's test_concurrent_futures.py for this interpreter's version, if installed."""
    candidates = [
        Path(sys.prefix) / "cpython-tests" / f"usr/lib/python{_version()}/test"
        "/test_concurrent_futures.py",
        Path(f"/usr/lib/python{_version()}/test/test_concurrent_futures.py"),
    ]
    try:
        import test  # the interpreter's test package (often without most of its tests)
    except ImportError:
        pass
    else:
        candidates.insert(0, Path(test.__file__).parent / "test_concurrent_futures.py")
    return next((path for path in candidates if path.is_file()), None)


def _load() -> tuple[ModuleType | None, Path | None, str]:
    """The tests' module (loaded from a temporary directory), that directory, or why not."""
    source = _source()
    if source is None:
        package = f"libpython{_version()}-testsuite"
        why = f"CPython's test_concurrent_futures.py is not installed (Debian: {package}, which "
        return None, None, why + "`make test` fetches with apt-get download)"
    directory = Path(tempfile.mkdtemp(prefix="cpython-futures-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    shutil.copyfile(source, directory / f"{MODULE}.py")
    sys.path.append(str(directory))
    try:
        return importlib.import_module(MODULE), directory, ""
    except Exception as error:  # noqa: BLE001 (a module that cannot load here is a skip, saying why)
        return None, directory, f"CPython's tests could not be loaded here: {error!r}"


cpython, directory, why_not = _load()
controllers: dict[int, bc.Controller] = {}


def _executor(
    max_workers: int, initializer: Any = None, initargs: tuple[Any, ...] = ()
) -> ControllerExecutor:
    """An executor on a controller with `max_workers` local workers (one per size, shared)."""
    crew = controllers.get(max_workers)
    if crew is None:
        path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
        launcher = bc.LocalLauncher(env={"PYTHONPATH": path})
        crew = bc.Controller(launcher, workers=max_workers, seconds_idle=600, seconds_launch=120)
        controllers[max_workers] = crew
        # Ready for work before the tests start, as CPython's later versions of these tests make
        # their pools (`_prime_executor`): a controller no worker has reached yet cancels every
        # task at shutdown(cancel_futures=True), where test_cancel_futures expects one to finish.
        crew.map(abs, range(max_workers))
    return crew.executor(initializer, initargs)


def setup_module() -> None:
    # Some of these tests collect garbage again and again; what earlier tests of the session
    # left alive is set aside, so each collection looks only at what these tests make.
    gc.freeze()


def teardown_module() -> None:
    gc.unfreeze()
    for crew in controllers.values():
        crew.terminate()
    if directory is not None:
        sys.path.remove(str(directory))
        sys.modules.pop(MODULE, None)


if cpython is None:

    def test_cpython_tests_are_available() -> None:
        pytest.skip(why_not)

else:

    class _OnWorkers(cpython.ExecutorMixin):  # type: ignore[name-defined,misc]
        executor_type = staticmethod(_executor)

    for generic in (
        cpython.ExecutorTest,
        cpython.WaitTests,
        cpython.AsCompletedTests,
        cpython.ExecutorShutdownTest,
        cpython.InitializerMixin,
    ):
        name = f"TestBatchcrew{generic.__name__.removesuffix('Mixin')}"
        members = {
            test: unittest.skip(reason)(getattr(generic, test))
            for test, reason in LEFT_OUT.items()
            if hasattr(generic, test)
        }
        globals()[name] = type(name, (generic, _OnWorkers, unittest.TestCase), members)
    del generic, name, members
