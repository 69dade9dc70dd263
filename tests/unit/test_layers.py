"""The design's layers, checked: a pure core, a light worker, no AWS in the core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "batchcrew"
IO_MODULES = {"asyncio", "socket", "ssl", "threading", "subprocess", "time", "selectors", "boto3"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", ["scheduler.py", "autoscale.py", "results.py", "seeds.py"])
def test_core_does_no_io(module: str) -> None:
    imported = {name.split(".")[0] for name in _imports(SOURCE / module)}
    assert not imported & IO_MODULES


def test_core_imports_nothing_from_aws() -> None:
    for path in SOURCE.glob("*.py"):
        if path.name == "cli.py":
            continue
        assert not any(name.startswith("batchcrew.aws") for name in _imports(path)), path.name


def _heavy_modules_loaded_by(statement: str) -> list[str]:
    """The heavy packages a fresh interpreter has loaded after running `statement`."""
    heavy = ("pandas", "boto3", "botocore", "cryptography", "rich", "moto")
    probe = f"import sys; {statement}; print(*(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return loaded.split()


def test_worker_import_path_is_light() -> None:
    assert _heavy_modules_loaded_by("import batchcrew.worker") == []


def test_subpackages_load_on_first_use_and_lightly() -> None:
    statement = "import batchcrew as bc; bc.aws.__name__; bc.localbatch.__name__"
    assert _heavy_modules_loaded_by(statement) == []
