"""The suite's results as Markdown: one table of measures by system, one of the swarm.

Reads the JSON the suite writes (plain dicts), so a saved result can be rendered again:
`python benchmarks/report.py benchmarks/results/latest.json` prints its Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SWARM_COLUMNS = {
    "cpu_microseconds_per_task": ("controller CPU per task, µs", 0),
    "kilobytes_per_worker": ("controller memory per connected worker, KB", 0),
    "admission_seconds": ("burst admitted (TLS, HELLO, first task answered), s", 2),
}


def markdown(results: dict[str, Any]) -> str:
    """The Markdown of a suite run: tables, then how they were made."""
    tables = []
    if results["measures"]:
        tables.append("\n".join(_measures_table(results)))
    if results["swarm"]["rows"]:
        tables.append("\n".join(_swarm_table(results)))
    return "\n\n".join([*tables, *_notes(results)]) + "\n"


def _measures_table(results: dict[str, Any]) -> list[str]:
    ran = [system for system in results["systems"] if not system["missing"]]
    titles = [f"{system['label']} {system['version']}" for system in ran]
    lines = [_row(["measure", *titles]), _row(["---"] * (len(ran) + 1))]
    for measure in results["measures"]:
        arrow = "↑" if measure["better"] == "higher" else "↓"
        cells = [_cell(measure["cells"][system["name"]], measure["digits"]) for system in ran]
        lines.append(_row([f"{measure['label']} {arrow}", *cells]))
    return lines


def _swarm_table(results: dict[str, Any]) -> list[str]:
    titles = [title for title, _ in SWARM_COLUMNS.values()]
    lines = [
        _row(["simulated workers (batchcrew, TLS)", *titles, "load (1 min)"]),
        _row(["---"] * (len(titles) + 2)),
    ]
    for row in results["swarm"]["rows"]:
        cells = [_cell(row[key], digits, load=False) for key, (_, digits) in SWARM_COLUMNS.items()]
        first = row[next(iter(SWARM_COLUMNS))]
        lines.append(_row([f"{row['workers']:,}", *cells, _load(first)]))
    return lines


def _notes(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    runs = "one run" if results["repeat"] == 1 else f"{results['repeat']} runs"
    notes = [
        f"Made by `{results['command']}` on {results['date']}: {machine['cores']} cores, "
        f"Python {machine['python']}, 1-minute load average {machine['load_before']:.2f} "
        "before the suite started.",
        f"Each cell: median [min–max] of {runs}, each in a fresh process, interleaved; "
        "× is batchcrew / that system (↑: higher is better, so above 1× batchcrew leads; "
        "↓: lower is better, so below 1× batchcrew leads); load: the highest 1-minute load "
        "average when a run of the cell started; * marks a cell during which other processes "
        f"kept more than half of the {machine['cores']} cores busy.",
    ]
    for system in results["systems"]:
        if system["missing"]:
            notes.append(f"{system['label']}: skipped, {system['missing']}.")
    failures = {
        f"{measure['key']} · {name}: {error}"
        for measure in results["measures"]
        for name, cell in measure["cells"].items()
        for error in cell["errors"]
    }
    return notes + [f"Failed: {failure}" for failure in sorted(failures)]


def _cell(cell: dict[str, Any], digits: int, load: bool = True) -> str:
    if cell["median"] is None:
        return "failed"
    text = f"{cell['median']:,.{digits}f} [{cell['min']:,.{digits}f}–{cell['max']:,.{digits}f}]"
    if cell["ratio"] is not None:
        text += f" · {cell['ratio']:.2f}×"
    if load:
        text += f" · load {_load(cell)}"
    return text


def _load(cell: dict[str, Any]) -> str:
    return f"{max(cell['loads'], default=0):.2f}" + ("*" if cell["busy"] else "")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())), end="")
