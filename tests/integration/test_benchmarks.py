"""The benchmark suite runs end to end at its quick sizes: every measure of batchcrew and of the
process pool, a peer without an environment skipped with a message, the swarm with 10 simulated
workers. It checks the results' shape, never their speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _positive_cell(cell: dict[str, Any]) -> None:
    assert cell["errors"] == []
    assert len(cell["values"]) == len(cell["loads"]) == len(cell["others"]) == 1
    assert 0 < cell["min"] <= cell["median"] <= cell["max"]
    assert isinstance(cell["busy"], bool)


def test_quick_suite_writes_json_and_markdown(tmp_path: Path) -> None:
    systems = ["batchcrew", "process_pool", "dask"]
    command = [sys.executable, str(BENCHMARKS / "suite.py"), "--quick", "--systems", *systems]
    command += ["--output", str(tmp_path), "--environments", str(tmp_path / "none")]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=110, check=False)

    assert completed.returncode == 0, completed.stderr
    assert "skipping dask: no environment in" in completed.stdout
    results = json.loads((tmp_path / "latest.json").read_text())
    assert [system["name"] for system in results["systems"]] == systems
    assert results["systems"][2]["missing"] and results["systems"][2]["version"] is None
    assert results["repeat"] == 1 and results["quick"] is True
    keys = ["tasks", "round_trip", "startup", "memory", "sleep", "payload", "wide"]
    assert [measure["key"] for measure in results["measures"]] == keys
    for measure in results["measures"]:
        cells = measure["cells"]
        assert set(cells) == {"batchcrew", "process_pool"}
        for cell in cells.values():
            _positive_cell(cell)
        assert cells["batchcrew"]["ratio"] is None
        assert cells["process_pool"]["ratio"] > 0
    [row] = results["swarm"]["rows"]
    assert row["workers"] == 10
    for key in ("cpu_microseconds_per_task", "kilobytes_per_worker", "admission_seconds"):
        _positive_cell(row[key])
    table = (tmp_path / "latest.md").read_text()
    assert "| measure | batchcrew (TLS)" in table
    assert "| simulated workers" in table
    assert results["command"] in table
