"""The peer suite: every measure of every system, each repetition in a fresh process.

Repetitions are interleaved (all cells once, then all again) so that a slow spell of the
machine touches every system alike. Each system runs in its own interpreter: batchcrew and the
process pool in the project's, each peer in `.bench/venvs/<name>` (made by `make bench`).
Writes `benchmarks/results/latest.json` and `latest.md` and prints the table.

    .venv/bin/python benchmarks/suite.py [--quick] [--repeat 3] [--systems ...] [--measures ...]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import report
import systems
from machine import busy_seconds, cores, load_average
from measures import MEASURES, Measure

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
VENVS = ROOT / ".bench" / "venvs"
SECONDS_CELL_MAX = 1800.0
"""A repetition that takes longer than this is stopped and recorded as failed."""
SECONDS_TEARDOWN = 30.0
"""How long a repetition may take to shut down once it has answered (dask with 100,000 tasks
queued takes minutes); after that its process group is stopped."""
SECONDS_ORPHANS_END = 10.0
"""How long the processes a repetition orphaned have to end by themselves."""

BUSY_SHARE = 0.5
"""A cell is marked busy when other processes kept more than this share of the cores busy."""

SWARM = "swarm"
SWARM_WORKERS = (10, 100, 1000)
SWARM_TASKS = {"full": 20_000, "quick": 300}


@dataclass
class Cell:
    """The repetitions of one measure of one system (or of one swarm size).

    `loads`: the 1-minute load average when each repetition started; `others`: the cores
    other processes kept busy meanwhile (the machine's busy time less this suite's own).
    """

    values: list[dict[str, float]] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class System:
    """A system the suite can run: where, which version, or why not."""

    name: str
    label: str
    python: str
    version: str | None
    missing: str | None


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print the table; write the JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--repeat", type=int, help="repetitions of each cell (default 3)")
    parser.add_argument("--systems", nargs="+", choices=systems.NAMES, default=systems.NAMES)
    choices = [*MEASURES, SWARM]
    parser.add_argument("--measures", nargs="+", choices=choices, default=choices)
    parser.add_argument(
        "--swarm-workers", nargs="+", type=int, help="simulated worker counts (default 10 100 1000)"
    )
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "results")
    parser.add_argument(
        "--environments", type=Path, default=VENVS, help="where the peers' environments are"
    )
    arguments = parser.parse_args(argv)
    repeat = arguments.repeat or (1 if arguments.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    mode = "quick" if arguments.quick else "full"
    measures = [MEASURES[key] for key in arguments.measures if key in MEASURES]
    swarm_workers = arguments.swarm_workers or ([10] if arguments.quick else list(SWARM_WORKERS))
    if SWARM not in arguments.measures:
        swarm_workers = []
    if "batchcrew" not in arguments.systems and swarm_workers:
        parser.error("the swarm measures batchcrew: add it to --systems or leave out swarm")

    load_before = load_average()
    print(f"load average before starting: {load_before:.2f} ({cores()} cores)", flush=True)
    _adopt_orphans()
    names = [name for name in systems.NAMES if name in arguments.systems]  # batchcrew first
    chosen = [_check(name, arguments.environments) for name in names]
    for system in chosen:
        if system.missing:
            print(f"skipping {system.name}: {system.missing}", flush=True)
    ready = [system for system in chosen if not system.missing]
    cells = {measure.key: {system.name: Cell() for system in ready} for measure in measures}
    swarm_cells = {workers: Cell() for workers in swarm_workers}
    for repetition in range(repeat):
        progress = f"[{repetition + 1}/{repeat}]"
        for measure in measures:
            size = json.dumps(measure.quick if arguments.quick else measure.full)
            for system in ready:
                print(f"{progress} {measure.key} · {system.name}", flush=True)
                command = [system.python, "cell.py", system.name, measure.key, size]
                _repetition(cells[measure.key][system.name], command, "value")
        for workers, cell in swarm_cells.items():
            print(f"{progress} swarm · {workers} workers", flush=True)
            swarm = [f"--workers={workers}", f"--tasks={SWARM_TASKS[mode]}"]
            _repetition(cell, [sys.executable, "swarm.py", *swarm], None)

    results = {
        "command": shlex.join(["python", "benchmarks/suite.py", *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": cores(),
            "python": platform.python_version(),
            "load_before": round(load_before, 2),
            "busy_threshold": BUSY_SHARE * cores(),
        },
        "repeat": repeat,
        "quick": arguments.quick,
        "systems": [{**asdict(system), "python": _shown(system.python)} for system in chosen],
        "measures": [_measure_results(measure, mode, cells[measure.key]) for measure in measures],
        "swarm": {"tasks": SWARM_TASKS[mode], "rows": _swarm_results(swarm_cells)},
    }
    arguments.output.mkdir(parents=True, exist_ok=True)
    (arguments.output / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    table = report.markdown(results)
    (arguments.output / "latest.md").write_text(table)
    print(table)
    return 0


def _measure_results(measure: Measure, mode: str, cells: dict[str, Cell]) -> dict[str, Any]:
    """One measure's row of the JSON: its title and scoring, and a summary per system."""
    return {
        "key": measure.key,
        "label": measure.label(measure.quick if mode == "quick" else measure.full),
        "unit": measure.unit,
        "better": measure.better,
        "digits": measure.digits,
        "cells": {
            name: _summary(cell, "value", cells.get("batchcrew")) for name, cell in cells.items()
        },
    }


def _swarm_results(swarm_cells: dict[int, Cell]) -> list[dict[str, Any]]:
    """The swarm's rows of the JSON: a summary per column and worker count."""
    return [
        {"workers": workers, **{key: _summary(cell, key, None) for key in report.SWARM_COLUMNS}}
        for workers, cell in swarm_cells.items()
    ]


def _shown(path: str) -> str:
    """A path as the results show it: relative to the project when it is inside."""
    return str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT) else path


def _check(name: str, environments: Path) -> System:
    """Ask the system's own interpreter whether it can run, and which version it runs."""
    driver = systems.load(name)
    python = sys.executable
    if driver.ENVIRONMENT is not None:
        python = str(environments / driver.ENVIRONMENT / "bin" / "python")
        if not Path(python).exists():
            folder = _shown(str(environments / driver.ENVIRONMENT))
            reason = f"no environment in {folder} (make bench makes it)"
            return System(name, driver.LABEL, python, None, reason)
    completed = subprocess.run(
        [python, "cell.py", name, "check"],
        cwd=BENCHMARKS,
        env=_environment(python),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if completed.returncode != 0:
        reason = f"its check failed: {_last_line(completed.stderr)}"
        return System(name, driver.LABEL, python, None, reason)
    answer = json.loads(_last_line(completed.stdout))
    return System(name, driver.LABEL, python, answer["version"], answer["missing"])


def _environment(python: str) -> dict[str, str]:
    """The environment of a cell: our modules importable (workers too), its venv's tools first
    on PATH (parsl starts its interchange by name)."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(BENCHMARKS), environment.get("PYTHONPATH")])
    )
    environment["PATH"] = os.pathsep.join([str(Path(python).parent), environment["PATH"]])
    return environment


def _repetition(cell: Cell, command: list[str], key: str | None) -> None:
    """Run one repetition in a fresh process group and a scratch folder; record it in `cell`.

    The cell's answer is the first JSON line it prints; once it has answered, its teardown
    (not measured) may take `SECONDS_TEARDOWN` before the group is stopped. `key`: the field
    of the answer that holds the value (None: every field).
    """
    cell.loads.append(round(load_average(), 2))
    busy, own, started = busy_seconds(), _children_cpu_seconds(), time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="batchcrew-bench-") as scratch,
        open(Path(scratch, "stderr"), "w+") as stderr,
    ):
        process = subprocess.Popen(
            [command[0], str(BENCHMARKS / command[1]), *command[2:]],
            cwd=scratch,
            env=_environment(command[0]),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        overdue = threading.Timer(SECONDS_CELL_MAX, _stop_group, [process.pid])
        overdue.start()
        try:
            assert process.stdout is not None
            answer = next((line for line in process.stdout if line.startswith("{")), None)
            try:
                process.wait(timeout=SECONDS_TEARDOWN)
            except subprocess.TimeoutExpired:
                _stop_group(process.pid)
                process.wait()
        finally:
            overdue.cancel()
            _stop_group(process.pid)  # whatever the cell left behind
            _reap_orphans()
        stderr.seek(0)
        error = _last_line(stderr.read())
    elapsed = time.monotonic() - started
    others = busy_seconds() - busy - (_children_cpu_seconds() - own)
    cell.others.append(round(max(0.0, others / elapsed), 2))
    if answer is None:
        if elapsed >= SECONDS_CELL_MAX:
            error = f"stopped after {SECONDS_CELL_MAX:.0f} s"
        cell.errors.append(error)
        print(f"    failed: {error}", flush=True)
        return
    values: dict[str, float] = json.loads(answer)
    cell.values.append(values if key is None else {key: values[key]})


def _stop_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _adopt_orphans() -> None:
    """Become the reaper of orphaned descendants (parsl's worker blocks detach themselves), so
    that their CPU time counts as the suite's own, not as other processes' load."""
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("cannot adopt orphans: the busy marks may count peers' own workers", flush=True)


def _reap_orphans() -> None:
    """Wait for the orphans a cell left to end (a few seconds), then stop the rest by pid."""
    deadline = time.monotonic() + SECONDS_ORPHANS_END
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no child left
        if pid:
            continue
        if time.monotonic() > deadline:
            for orphan in _children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(orphan, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)


def _children() -> list[int]:
    """Pids of this process's children, from /proc."""
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                if stat.read().rsplit(")", 1)[-1].split()[1] == me:
                    found.append(int(entry))
    return found


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _summary(cell: Cell, key: str, reference: Cell | None) -> dict[str, Any]:
    """Median, range, load and busy mark of a cell; its ratio to `reference` (batchcrew)."""
    values = [value[key] for value in cell.values]
    summary: dict[str, Any] = {
        "values": values,
        "median": statistics.median(values) if values else None,
        "min": min(values, default=None),
        "max": max(values, default=None),
        "loads": cell.loads,
        "others": cell.others,
        "busy": any(others > BUSY_SHARE * cores() for others in cell.others),
        "errors": cell.errors,
        "ratio": None,
    }
    if reference is not None and reference is not cell and reference.values and values:
        ours = statistics.median(value[key] for value in reference.values)
        summary["ratio"] = ours / summary["median"] if summary["median"] else None
    return summary


if __name__ == "__main__":
    sys.exit(main())
