"""Pickling: the fast paths give loadable bytes, and the rest goes through cloudpickle."""

from __future__ import annotations

import operator
import pickle
import subprocess
import sys

import pytest

from batchcrew.serialization import dumps_function, dumps_value


@pytest.mark.parametrize(
    "value",
    [1, 2.5, "text", b"bytes", None, True, (1, "a"), [1, [2, [3]]], {"k": (1, 2)}, {1, 2}],
)
def test_plain_values_round_trip(value: object) -> None:
    assert pickle.loads(dumps_value(value)) == value


def test_values_needing_cloudpickle() -> None:
    square = lambda x: x * x  # noqa: E731 (a lambda is the point)
    assert pickle.loads(dumps_value([square]))[0](4) == 16
    assert pickle.loads(dumps_value({"deep": [[[[square]]]]}))["deep"][0][0][0][0](3) == 9


def test_functions_by_reference_and_by_value() -> None:
    assert dumps_function(operator.neg) == pickle.dumps(operator.neg, protocol=5)

    def local(x: int) -> int:
        return x + 1

    assert pickle.loads(dumps_function(local))(1) == 2


def test_main_functions_travel_by_value() -> None:
    script = (
        "import pickle, sys\n"
        "from batchcrew.serialization import dumps_function\n"
        "def triple(x):\n    return 3 * x\n"
        "sys.stdout.buffer.write(dumps_function(triple))\n"
    )
    data = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    assert pickle.loads(data)(2) == 6  # this interpreter has no __main__.triple
