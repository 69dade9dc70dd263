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


def test_worker_import_path_is_light() -> None:
    probe = (
        "import sys, batchcrew.worker; "
        "print(','.join(m for m in ('pandas', 'boto3', 'botocore', 'cryptography', 'rich') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
