"""Tables for a terminal: AWS Batch records as rich tables whose ids can be copied.

Owns which columns stay whole, shrink or go when a terminal is narrow, and that a table sent to
a file or a pipe is never wrapped. It formats cells it is given; it prints nothing and makes no
AWS calls. rich is imported only when a table is made, so the command line starts light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["Column", "fitted_table", "natural_width"]

SHRUNK_WIDTH = 12
"""The narrowest a column that may shrink is made before columns are dropped instead."""
CELL_PADDING = 2
"""rich's default padding: one space each side of a cell."""


@dataclass(frozen=True)
class Column:
    """One column of a table: its heading, whether it must stay whole, and when it is dropped.

    A `whole` column (ids, statuses, times, numbers) is never wrapped or cut; the others fold
    over several lines when space is short. On a narrow terminal, columns are dropped from the
    highest `rank` down until the rest fit; rank 0 is never dropped.

    Example:
        >>> Column("id", whole=True).rank
        0
    """

    name: str
    whole: bool = False
    rank: int = 0


def natural_width(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> int:
    """The width of the table with every cell on one line, borders included.

    Example:
        >>> natural_width([Column("id", whole=True)], [["abc"]])
        7
    """
    return (
        sum(
            _content_width(index, column, rows) + CELL_PADDING + 1
            for index, column in enumerate(columns)
        )
        + 1
    )


def fitted_table(
    title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None
) -> Table:
    """A rich table of `rows` for a terminal `width` columns wide, or None for no limit.

    With a width, columns are dropped (highest rank first) until the whole columns and a
    shrunk version of the others fit; whole columns never wrap. Without one (a file or a pipe)
    every column stays and nothing wraps.

    Example:
        >>> columns = [Column("name", rank=1), Column("id", whole=True)]
        >>> table = fitted_table("Jobs", columns, [["fit-model", "6f1c0a5e"]], width=20)
        >>> [column.header for column in table.columns]
        ['id']
    """
    from rich.table import Table

    kept = list(range(len(columns)))
    if width is not None:
        while len(kept) > 1 and _least_width(columns, rows, kept) > width:
            droppable = [index for index in kept if columns[index].rank > 0]
            if not droppable:
                break
            kept.remove(max(droppable, key=lambda index: (columns[index].rank, index)))
    table = Table(title=title, title_justify="left")
    for index in kept:
        column = columns[index]
        whole = width is None or column.whole
        table.add_column(
            column.name,
            no_wrap=whole,
            overflow="ignore" if whole else "fold",
            min_width=_content_width(index, column, rows) if whole else None,
        )
    for row in rows:
        table.add_row(*(row[index] for index in kept))
    return table


def _content_width(index: int, column: Column, rows: Sequence[Sequence[str]]) -> int:
    from rich.cells import cell_len

    return max([cell_len(column.name), *(cell_len(row[index]) for row in rows)])


def _least_width(columns: Sequence[Column], rows: Sequence[Sequence[str]], kept: list[int]) -> int:
    """The narrowest the kept columns can be: whole ones at full width, others shrunk."""
    total = 1
    for index in kept:
        content = _content_width(index, columns[index], rows)
        if not columns[index].whole:
            content = min(content, SHRUNK_WIDTH)
        total += content + CELL_PADDING + 1
    return total
