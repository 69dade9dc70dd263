"""Results, call descriptions and seeds."""

from __future__ import annotations

from batchcrew.results import Result, Results, describe_call
from batchcrew.seeds import controller_seed, task_seed


def fit(x: object, alpha: float = 1.0) -> None: ...


def test_describe_call_is_short() -> None:
    assert describe_call(fit, (3,), {"alpha": 0.1}) == "fit(3, alpha=0.1)"
    assert describe_call(fit, ("x" * 500,), {}) == "fit('xxxxxxxxx...xxxxxxxxxx')"
    long = describe_call(fit, tuple(range(100)), {"alpha": 2})
    assert len(long) == 80 and long.endswith("...)")


def test_results_helpers() -> None:
    results = Results(
        [
            Result("a", "f(1)", "success", value=1, seed=5, attempts=1),
            Result("b", "f(2)", "crash", error="boom", attempts=5),
        ]
    )
    assert results.values() == [1, None]
    assert [result.name for result in results.failed()] == ["b"]
    frame = results.to_frame()
    assert list(frame.columns)[:4] == ["name", "command", "status", "value"]
    assert list(frame["attempts"]) == [1, 5]


def test_task_seeds_are_reproducible_and_distinct() -> None:
    seeds = [task_seed(2024, index) for index in range(10_000)]
    assert seeds == [task_seed(2024, index) for index in range(10_000)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= seed < 2**63 for seed in seeds)
    assert task_seed(2025, 0) != task_seed(2024, 0)
    assert task_seed(-1, 0) >= 0
    assert controller_seed(7) == 7
    assert controller_seed(None) != controller_seed(None)


def test_a_result_shows_what_happened_in_one_short_line() -> None:
    ok = Result("fit-3", "fit(3)", "success", value=9, seconds=1.234567, attempts=1, worker="w")
    assert (
        repr(ok)
        == "Result(name='fit-3', status='success', value=9, seconds=1.23, attempts=1, worker='w')"
    )
    failed = Result("b", "f()", "error", error="ValueError: " + "x" * 500, traceback="t" * 5000)
    assert "traceback" not in repr(failed) and len(repr(failed)) < 200


def test_results_show_counts_and_a_few_not_all() -> None:
    results = Results(
        [Result(str(i), "f()", "success", value=i) for i in range(10_000)]
        + [Result("bad", "f()", "crash", error="boom")]
    )
    text = repr(results)
    assert text.startswith("Results(10001 results: 10000 success, 1 crash; Result(name='0'")
    assert len(text) < 500
    assert repr(Results([])) == "Results(0 results)"


def test_a_task_error_carries_results_with_their_helpers() -> None:
    from batchcrew.errors import TaskError

    error = TaskError(
        "1 of 2 failed", [Result("a", "f()", "success", value=1), Result("b", "f()", "error")]
    )
    assert isinstance(error.results, Results)
    assert [result.name for result in error.results.failed()] == ["b"]
    assert error.results.values() == [1, None]
    assert error.results.to_frame().shape[0] == 2
