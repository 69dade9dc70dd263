"""The design's layers, checked over every module of the package: a pure core, a light worker,
no AWS in the core, no class too long to follow, no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "batchcrew"
IO_MODULES = {
    "asyncio",
    "boto3",
    "botocore",
    "concurrent",
    "http",
    "os",
    "select",
    "selectors",
    "shutil",
    "signal",
    "socket",
    "ssl",
    "subprocess",
    "tempfile",
    "threading",
    "time",
    "urllib",
}
PURE = {
    "autoscale.py",
    "launches.py",
    "messages.py",
    "records.py",
    "report.py",
    "results.py",
    "scheduler.py",
    "seeds.py",
}
"""Decisions and values: events in, actions out, time passed in."""

CLASS_LINES_MAX = 300


def _modules() -> Iterator[Path]:
    yield from sorted(SOURCE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules imported by a file (absolute names); with `top_level_only`, only those imported
    when the module loads (not in functions, not under TYPE_CHECKING)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return
        if (
            top_level_only
            and isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_do_no_io(module: str) -> None:
    imported = {name.split(".")[0] for name in _imports(SOURCE / module)}
    assert not imported & IO_MODULES, f"{module} imports {imported & IO_MODULES}"


def test_pure_modules_import_only_pure_batchcrew_modules() -> None:
    pure_names = {f"batchcrew.{module[:-3]}" for module in PURE} | {
        "batchcrew.errors",
        "batchcrew.launchers.base",
    }
    for module in PURE:
        ours = {name for name in _imports(SOURCE / module) if name.startswith("batchcrew.")}
        modules = {
            name for name in ours if (SOURCE.parent / (name.replace(".", "/") + ".py")).exists()
        }
        assert modules <= pure_names, f"{module} imports {modules - pure_names}"


def test_core_imports_nothing_from_aws_or_local_batch() -> None:
    for path in _modules():
        name = _name(path)
        if name.startswith(("batchcrew.aws", "batchcrew.localbatch")) or name in {
            "batchcrew",
            "batchcrew.cli",
        }:
            continue
        imported = _imports(path)
        assert not any(n.startswith(("batchcrew.aws", "batchcrew.localbatch")) for n in imported), (
            name
        )


def test_no_class_is_too_long_to_follow() -> None:
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                assert length <= CLASS_LINES_MAX, f"{_name(path)}.{node.name}: {length} lines"


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    names = {_name(path): path for path in _modules()}
    for name, path in names.items():
        graph[name] = {
            imported
            for imported in _imports(path, top_level_only=True)
            if imported in names and imported != name
        }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, "import cycle: " + " -> ".join([*visiting, name])
        visiting.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


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


def test_aws_gateways_and_the_launcher_load_no_pandas() -> None:
    statement = "import batchcrew.aws.jobs, batchcrew.aws.logs, batchcrew.aws.launcher"
    assert "pandas" not in _heavy_modules_loaded_by(statement)
