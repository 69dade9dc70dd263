"""Every controller argument is checked at construction, with a message naming it."""

from __future__ import annotations

from typing import Any

import pytest

import batchcrew as bc


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be an integer >= 1"),
        ({"workers": 1.5}, TypeError, "workers must be an integer"),
        ({"workers": True}, TypeError, "workers must be an integer"),
        ({"port": 70000}, ValueError, "port must be an integer from 0 to 65535"),
        ({"port": -1}, ValueError, "port must be an integer >= 0"),
        ({"tls": "manual"}, ValueError, "tls must be 'automatic'"),
        ({"seconds_idle": 0}, ValueError, "seconds_idle must be a number > 0"),
        ({"seconds_idle": "5"}, TypeError, "seconds_idle must be a number"),
        ({"seconds_launch": -1}, ValueError, "seconds_launch must be a number > 0"),
        ({"seconds_wall": float("nan")}, ValueError, "seconds_wall must be a number > 0 or None"),
        ({"seconds_interval": 0}, ValueError, "seconds_interval must be a number > 0"),
        ({"tasks_max": 0}, ValueError, "tasks_max must be an integer >= 1 or None"),
        ({"crashes_max": 0}, ValueError, "crashes_max must be an integer >= 1"),
        ({"seed": 1.5}, TypeError, "seed must be an integer or None"),
        ({"name": ""}, ValueError, "name must be a non-empty string"),
        ({"host": ""}, ValueError, "host must be a non-empty address"),
    ],
)
def test_bad_arguments(arguments: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        bc.Controller(**arguments)


def test_bad_launcher() -> None:
    with pytest.raises(TypeError, match=r"launcher must be a batchcrew\.Launcher"):
        bc.Controller("local")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"log_directory": 3}, TypeError, "log_directory must be a path"),
        ({"python": ""}, TypeError, "python must be the path"),
        ({"env": {"A": 1}}, TypeError, "env must be a mapping of strings"),
    ],
)
def test_bad_local_launcher(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        bc.LocalLauncher(**arguments)


def test_push_checks_before_anything_runs() -> None:
    crew = bc.Controller()
    try:
        with pytest.raises(TypeError, match="fn must be callable, not int"):
            crew.push(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="cannot be pickled"):
            crew.push(print, _Unpicklable())
        with pytest.raises(ValueError, match="seconds_timeout must be a number > 0"):
            crew.push(print, 1, seconds_timeout=0)
        with pytest.raises(ValueError, match="a task name must be a non-empty string"):
            crew.push(print, 1, name="")
        with pytest.raises(ValueError, match="error must be 'raise', 'warn' or 'ignore'"):
            crew.map(print, [1], error="loud")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="names has 1 elements but there are 2 tasks"):
            crew.map(print, [1, 2], names=["a"])
        with pytest.raises(ValueError, match="names must be unique"):
            crew.map(print, [1, 2], names=["a", "a"])
        with pytest.raises(ValueError, match="mode must be 'all' or 'one'"):
            crew.wait(mode="some")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="names must be a list"):
            crew.cancel("task-1")
        with pytest.raises(ValueError, match="give at least one iterable"):
            crew.map(print)
        with pytest.raises(TypeError, match="names must be an iterable of task names"):
            crew.walk(print, [1], names="a")
        with pytest.raises(TypeError, match="progress must be True, False or None"):
            crew.map(print, [1], progress="yes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be a number >= 0"):
            crew.pop(timeout=-1)
        with pytest.raises(TypeError, match="timeout must be a number"):
            crew.wait(timeout="soon")  # type: ignore[arg-type]
        assert len(crew) == 0
    finally:
        crew.terminate()


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise RuntimeError("no pickling")
