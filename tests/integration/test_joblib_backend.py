"""joblib's backend "batchcrew" with real local workers over TLS, and its registration.

Task functions are the standard library's or defined inside the tests (cloudpickle ships those
by value), so that workers never import this module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import joblib
import pytest
from joblib import Parallel, delayed, parallel_config

import batchcrew as bc
from batchcrew.executor import RemoteTraceback
from tests.support.processes import wait_until_gone


@pytest.fixture(scope="module")
def crew() -> Iterator[bc.Controller]:
    with bc.Controller(workers=2, seconds_idle=60) as controller:
        yield controller


def _python(code: str) -> str:
    """What `code` prints in a fresh interpreter (which must say nothing on stderr)."""
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stderr == ""
    return ran.stdout.strip()


def test_registered_when_joblib_is_imported_after_batchcrew() -> None:
    printed = _python(
        "import sys, batchcrew, batchcrew.worker\n"
        "print('joblib' in sys.modules, 'batchcrew.joblib_backend' in sys.modules)\n"
        "import joblib\n"
        "print(type(joblib.parallel.BACKENDS['batchcrew']()).__name__,"
        " type(joblib.__loader__).__name__)"
    )
    assert printed.splitlines() == ["False False", "BatchcrewBackend SourceFileLoader"]


def test_registered_when_the_backend_module_imports_joblib_first() -> None:
    printed = _python(
        "from batchcrew.joblib_backend import BatchcrewBackend\n"
        "import joblib\n"
        "print(type(joblib.parallel.BACKENDS['batchcrew']()) is BatchcrewBackend)"
    )
    assert printed == "True"


def test_registered_when_joblib_was_imported_before_batchcrew() -> None:
    printed = _python(
        "import joblib, batchcrew\nprint(type(joblib.parallel.BACKENDS['batchcrew']()).__name__)"
    )
    assert printed == "BatchcrewBackend"


def test_parallel_gives_the_serial_results_in_order(crew: bc.Controller) -> None:
    with parallel_config(backend="batchcrew", controller=crew):
        squares = Parallel(n_jobs=-1)(delayed(pow)(x, 2) for x in range(100))
        pids = Parallel(n_jobs=-1)(delayed(os.getpid)() for _ in range(6))
    assert squares == [pow(x, 2) for x in range(100)]
    assert os.getpid() not in pids


def test_an_exception_keeps_its_type_and_the_backend_goes_on(crew: bc.Controller) -> None:
    with parallel_config(backend="batchcrew", controller=crew):
        with pytest.raises(ZeroDivisionError) as raised:
            Parallel(n_jobs=-1)(delayed(divmod)(1, x) for x in (1, 2, 0, 3))
        assert Parallel(n_jobs=-1)(delayed(divmod)(7, x) for x in (1, 2)) == [(7, 0), (3, 1)]
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "ZeroDivisionError" in cause.traceback


def test_a_failure_cancels_the_batches_in_flight(crew: bc.Controller) -> None:
    calls = [delayed(time.sleep)(60), delayed(divmod)(1, 0), delayed(time.sleep)(60)]
    with parallel_config(backend="batchcrew", controller=crew):
        with pytest.raises(ZeroDivisionError):
            Parallel(n_jobs=-1)(calls)
        # Had the sleeps not been cancelled, they would hold both workers for a minute.
        assert crew.wait(timeout=20)
        assert Parallel(n_jobs=-1)(delayed(abs)(-x) for x in range(9)) == list(range(9))


def test_n_jobs_is_the_number_of_batches_at_once() -> None:
    def span(seconds: float) -> tuple[float, float]:
        start = time.monotonic()  # one clock for every process on the machine
        time.sleep(seconds)
        return start, time.monotonic()

    with (
        bc.Controller(workers=3, seconds_idle=60) as three,
        parallel_config(backend="batchcrew", controller=three),
    ):
        # None is scikit-learn's default n_jobs: under this backend, every worker.
        assert [joblib.effective_n_jobs(n) for n in (None, -1, -2, 2, 10)] == [3, 3, 2, 2, 3]
        spans = Parallel(n_jobs=2, batch_size=1)(delayed(span)(0.3) for _ in range(6))
    at_once = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert at_once == 2


def test_without_a_controller_a_local_one_lives_for_the_call() -> None:
    with parallel_config(backend="batchcrew"):
        pids = Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(20))
    assert os.getpid() not in pids
    assert len(set(pids)) <= 2
    wait_until_gone(set(pids))


def test_nested_calls_run_one_after_another_on_the_worker(crew: bc.Controller) -> None:
    def nested(count: int) -> tuple[int, str, list[int]]:
        from joblib.parallel import get_active_backend

        backend, _ = get_active_backend()
        inner = Parallel(n_jobs=-1)(delayed(os.getpid)() for _ in range(count))
        return os.getpid(), type(backend).__name__, inner

    with parallel_config(backend="batchcrew", controller=crew):
        outcomes = Parallel(n_jobs=-1)(delayed(nested)(3) for _ in range(3))
    for pid, backend, inner in outcomes:
        assert pid != os.getpid()
        assert backend == "SequentialBackend"
        assert inner == [pid] * 3


def test_grid_search_scores_equal_the_serial_run(crew: bc.Controller) -> None:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    features, labels = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1.0, 10.0], "kernel": ["linear", "rbf"]}
    serial = GridSearchCV(SVC(), grid, cv=3).fit(features, labels)
    tasks_before = int(crew.summary().tasks.sum())
    with parallel_config(backend="batchcrew", controller=crew):
        spread = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1).fit(features, labels)
    assert int(crew.summary().tasks.sum()) > tasks_before
    assert list(spread.cv_results_["mean_test_score"]) == list(
        serial.cv_results_["mean_test_score"]
    )
    assert spread.best_params_ == serial.best_params_
