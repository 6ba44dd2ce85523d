"""Export a filtered, sorted view of the store to CSV or JSON, streamed page by page.

Used by the dashboard's export key and by `hubtop query --format csv|json`. Only one page of
TaskRecords exists at a time, and the store's lock is taken per page (the poller keeps writing in
between), so a million rows export without building a million objects or freezing the UI.

Pages are fetched by keyset (the sort value and msg_id of the previous page's last row), not by
OFFSET, so the output stays consistent and every page costs about the same.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

from .model import TaskRecord, to_epoch
from .store import COLUMNS, SORT_COLUMNS, Filter, TaskStore, combine, tiebreak, view_ranges

__all__ = ["export_view", "iter_view", "record_row", "record_values", "FIELDS", "DEFAULT_FIELDS", "FORMATS", "ExportError"]

# Every field a row can have, in output order: the store's columns.
FIELDS: tuple[str, ...] = COLUMNS
DEFAULT_FIELDS = FIELDS
FORMATS = ("csv", "json")
_TIMES = frozenset({"submitted", "started", "completed", "received"})
PAGE = 5_000


class ExportError(ValueError):
    """Bad export arguments (unknown field, format or sort column): one line."""


def check_fields(fields: Sequence[str] | None) -> tuple[str, ...]:
    if not fields:
        return DEFAULT_FIELDS
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise ExportError(f"unknown field {unknown[0]!r}; fields are: {', '.join(FIELDS)}")
    return tuple(fields)


def _getter(name: str) -> Callable[[TaskRecord], Any]:
    if name == "state":
        return lambda r: r.state.value
    if name == "duration":
        return lambda r: r.duration
    if name in _TIMES:
        return lambda r: None if (v := getattr(r, name)) is None else v.isoformat()
    return lambda r: getattr(r, name)


def record_values(fields: Sequence[str]) -> Callable[[TaskRecord], list[Any]]:
    """A function: record -> its plain values for `fields` (times ISO-8601 UTC, the state as its name)."""
    getters = [_getter(f) for f in fields]
    return lambda rec: [g(rec) for g in getters]


def record_row(rec: TaskRecord, fields: Sequence[str]) -> dict[str, Any]:
    """One record as a dict of plain values: times as ISO-8601 UTC strings, the state as its name."""
    return dict(zip(fields, record_values(fields)(rec)))


def _sort_value(rec: TaskRecord, sort: str) -> Any:
    """The value the store sorts `rec` by (epoch seconds for times)."""
    if sort == "duration":  # exactly as the store computes it, so ties compare equal
        started, completed = to_epoch(rec.started), to_epoch(rec.completed)
        return max(0.0, completed - started) if started is not None and completed is not None else None
    if sort == "state":
        return rec.state.value
    value = getattr(rec, sort)
    return to_epoch(value) if sort in _TIMES else value


def iter_view(
    store: TaskStore,
    where: Filter | None = None,
    *,
    sort: str = "submitted",
    descending: bool = True,
    limit: int | None = None,
    page: int = PAGE,
) -> Iterator[TaskRecord]:
    """The filtered view in the store's order (NULLs last), one page in memory at a time: a keyset walk of
    each of the store's view_ranges (rows with a value, then rows without one by the store's tiebreak)."""
    if sort not in SORT_COLUMNS:
        raise ExportError(f"cannot sort by {sort!r}; sort columns are: {', '.join(SORT_COLUMNS)}")
    op = "<" if descending else ">"
    left = limit
    for part, column in view_ranges(sort):
        base = combine(where, part)
        after: Filter | None = None
        while left is None or left > 0:
            size = page if left is None else min(page, left)
            rows = store.range_page(combine(base, after), column, descending, limit=size)
            yield from (record for _, record in rows)
            if left is not None:
                left -= len(rows)
            if len(rows) < size:
                break
            key, last = rows[-1]
            if column in ("msg_id", "rowid"):  # unique: its own tiebreak
                after = (f"{column} {op} ?", (key,))
            else:
                after = (f"({column}, {tiebreak(column)}) {op} (?, ?)", (_sort_value(last, column), key))


@contextmanager
def _open(path: str | os.PathLike | TextIO) -> Iterator[TextIO]:
    if hasattr(path, "write"):
        yield path  # type: ignore[misc]
        return
    if str(path) == "-":
        yield sys.stdout
        return
    target = Path(path).expanduser()
    tmp = target.with_name(f".{target.name}.part")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        try:
            yield fh
        except BaseException:
            fh.close()
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, target)  # readers never see a half-written export


def export_view(
    store: TaskStore,
    where: Filter | None = None,
    sort: str = "submitted",
    descending: bool = True,
    path: str | os.PathLike | TextIO | None = None,
    fmt: str = "csv",
    fields: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    page: int = PAGE,
) -> int:
    """Write the view (`where`, sorted) to `path` ("-" or a text stream: stdout); return the row count.

    CSV: a header row, empty cells for missing values. JSON: one array of objects, written as it goes.
    The file is written to a temporary name and renamed at the end. Raises ExportError for bad
    arguments and OSError when the file cannot be written.
    """
    if path is None:
        raise ExportError("export_view needs a path ('-' for standard output)")
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    cols = check_fields(fields)
    rows = iter_view(store, where, sort=sort, descending=descending, limit=limit, page=page)
    n = 0
    with _open(path) as out:
        values = record_values(cols)
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(cols)
            for rec in rows:
                writer.writerow(values(rec))
                n += 1
        else:
            buf = io.StringIO()
            dumps = json.JSONEncoder(ensure_ascii=False).encode
            out.write("[")
            for rec in rows:
                buf.write(",\n" if n else "\n")
                buf.write(dumps(dict(zip(cols, values(rec)))))
                n += 1
                if buf.tell() > 1 << 16:
                    out.write(buf.getvalue())
                    buf.seek(0)
                    buf.truncate()
            out.write(buf.getvalue())
            out.write("\n]\n" if n else "]\n")
        out.flush()
    return n
