"""Tables for people: AWS Batch records as pandas DataFrames with fixed columns and types.

Owns column typing (text, times, nullable integers, raw objects), so an empty answer has the
same columns and dtypes as a full one. No AWS calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pandas as pd

__all__ = ["ColumnKind", "milliseconds_to_times", "table"]

ColumnKind = Literal["text", "time", "integer", "nullable_integer", "boolean", "object"]

_DTYPES: dict[str, Any] = {"integer": "int64", "nullable_integer": "Int64", "boolean": "boolean"}


def table(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, ColumnKind]) -> pd.DataFrame:
    """A DataFrame of `rows` with exactly `columns`, each converted to its kind.

    `text` and `object` columns keep None for missing values, `time` columns take epoch
    milliseconds and become UTC datetimes (NaT when missing), `nullable_integer` and `boolean`
    use pandas' nullable dtypes.

    Example:
        >>> frame = table([{"id": "a", "created": 0}], {"id": "text", "created": "time"})
        >>> str(frame["created"][0])
        '1970-01-01 00:00:00+00:00'
    """
    records = list(rows)
    data: dict[str, pd.Series[Any]] = {}
    for column, kind in columns.items():
        values = [record.get(column) for record in records]
        data[column] = _series(values, kind)
    frame: pd.DataFrame = pd.DataFrame(data, columns=list(columns))
    return frame


def milliseconds_to_times(values: Iterable[object]) -> pd.Series[Any]:
    """Epoch milliseconds (None for missing) as UTC datetimes (NaT for missing).

    Example:
        >>> milliseconds_to_times([1000, None]).tolist()[0]
        Timestamp('1970-01-01 00:00:01+0000', tz='UTC')
    """
    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    return pd.to_datetime(numbers, unit="ms", utc=True)


def _series(values: list[Any], kind: ColumnKind) -> pd.Series[Any]:
    if kind == "time":
        return milliseconds_to_times(values)
    dtype = _DTYPES.get(kind, object)
    series: pd.Series[Any] = pd.Series(values, dtype=dtype)
    return series
