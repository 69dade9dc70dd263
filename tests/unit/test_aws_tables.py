"""Tables fitted to a terminal: ids and statuses never wrap, the rest shrinks or goes
(batchcrew.aws.tables)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from batchcrew.aws.tables import Column, fitted_table, natural_width

JOB_ID = "6f1c0a5e-4a86-4371-9994-6ea8882f5726"
COLUMNS = [
    Column("name", rank=1),
    Column("id", whole=True),
    Column("status", whole=True),
    Column("reason", rank=4),
    Column("created", whole=True, rank=3),
    Column("started", whole=True, rank=5),
    Column("stopped", whole=True, rank=6),
]
ROWS = [
    [
        "a-job-with-a-name-long-enough-to-wrap",
        JOB_ID,
        "succeeded",
        "Essential container in task exited",
        "2025-01-30 16:29:00 UTC",
        "2025-01-30 16:29:01 UTC",
        "2025-01-30 16:29:02 UTC",
    ]
]


def rendered(width: int | None) -> list[str]:
    table = fitted_table("Jobs", COLUMNS, ROWS, width)
    output = io.StringIO()
    Console(file=output, width=width or natural_width(COLUMNS, ROWS)).print(table)
    return output.getvalue().splitlines()


@pytest.mark.parametrize("width", [56, 80, 100, 160])
def test_ids_and_statuses_stay_whole_and_the_table_fits(width: int) -> None:
    lines = rendered(width)
    assert all(len(line.rstrip()) <= width for line in lines)
    (line,) = [line for line in lines if JOB_ID in line]
    assert "succeeded" in line


def test_narrow_terminals_drop_the_least_important_columns_first() -> None:
    headings = {width: rendered(width)[2] for width in (56, 80, 120, 160, 220)}
    assert ("name" not in headings[56], "id" in headings[56]) == (True, True)
    assert "name" in headings[80] and "created" not in headings[80]
    assert "created" in headings[120] and "started" not in headings[120]
    assert "started" in headings[160] and "stopped" in headings[220]


def test_without_a_width_nothing_is_dropped_or_wrapped() -> None:
    lines = rendered(None)
    (line,) = [line for line in lines if JOB_ID in line]
    assert all(cell in line for cell in ROWS[0])
    assert len(line) == natural_width(COLUMNS, ROWS)
