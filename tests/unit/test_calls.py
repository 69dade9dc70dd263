"""Turning calls into tasks: names, pickling, lengths (calls)."""

from __future__ import annotations

import threading

import pytest

from batchcrew.calls import pickle_function, prepare, prepare_map


def test_iterables_of_different_lengths_are_refused_naming_the_lengths() -> None:
    power = pickle_function(pow)
    with pytest.raises(ValueError, match=r"different lengths \(3, 2\).*strict=False"):
        prepare_map(power, [[1, 2, 3], [10, 20]], None, strict=True)
    shortest = prepare_map(power, [[1, 2, 3], [10, 20]], None, strict=False)
    assert [call.command for call in shortest] == ["pow(1, 10)", "pow(2, 20)"]


def test_names_are_checked_before_anything_goes_out() -> None:
    power = pickle_function(pow)
    with pytest.raises(ValueError, match="names must be unique"):
        prepare_map(power, [[1, 2], [1, 1]], ["a", "a"], strict=True)
    with pytest.raises(ValueError, match="names has 1 elements but there are 2 tasks"):
        prepare_map(power, [[1, 2], [1, 1]], ["a"], strict=True)
    with pytest.raises(TypeError, match="not one string"):
        prepare_map(power, [[1, 2], [1, 1]], "ab", strict=True)
    with pytest.raises(ValueError, match="non-empty string"):
        prepare(power, (1, 2), {}, "")


def test_unpicklable_functions_and_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="fn must be callable"):
        pickle_function(3)
    with pytest.raises(TypeError, match="cannot be pickled"):
        prepare(pickle_function(print), (threading.Lock(),), {}, None)
