"""The tree -> a WHERE clause over the store's `tasks` table (docs/architecture.md), values bound as `?`.

NULLs: every comparison on a NULL column is unknown in SQL; inside AND/OR an unknown behaves as false in
a WHERE, so only NOT needs care: `NOT IFNULL((x), 0)` makes `-label:x` match NULL labels, exactly as
`predicate` does.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..model import to_epoch
from .ast import TIME_FIELDS, And, Cmp, Node, Not, Or, Text, True_
from .errors import QueryError
from .matching import ascii_lower, prefix_upper
from .predicate import STATE_SETS

__all__ = ["to_sql", "install_sql_functions"]

_COLUMNS = {
    "msg_id", "state", "engine_id", "engine_uuid", "queue", "label", "client", "ename", "evalue",
    "resubmitted", "submitted", "started", "completed", "received",
}
_NOT_NULL = {"msg_id", "state"}
_ORDER = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_TEXT_COLUMNS = ("ename", "evalue", "label")


def to_sql(tree: Node, now: datetime | None = None, *, regexp: bool = True) -> tuple[str, list[Any]]:
    """(where_sql, params) for `SELECT … FROM tasks WHERE <where_sql>`. `now` is unused (see parse).

    `$regex` compiles to `col REGEXP ?`, which SQLite only runs after `install_sql_functions(conn)`
    (TaskStore does it). For a connection without it pass `regexp=False`: a `$regex` query is then a
    QueryError here rather than an OperationalError at execution time.
    """
    if not regexp and _has_regex(tree):
        raise QueryError(
            "'$regex' is not available on the task list (SQLite has no REGEXP); use '$glob' or label:pattern*"
        )
    sql, params, _ = _render(tree)
    return sql, params


def _has_regex(node: Node) -> bool:
    if isinstance(node, Cmp):
        return node.op == "regex"
    if isinstance(node, (And, Or)):
        return any(_has_regex(i) for i in node.items)
    if isinstance(node, Not):
        return _has_regex(node.item)
    return False


def install_sql_functions(conn: sqlite3.Connection) -> None:
    """Register REGEXP (used by `$regex` queries) on a connection; SQLite has none built in."""
    conn.create_function("regexp", 2, _regexp, deterministic=True)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regexp(pattern: str | None, value: Any) -> int | None:
    if pattern is None or value is None:
        return None
    return 1 if _compiled(pattern).search(str(value)) else 0


def _param(field: str, value: Any) -> Any:
    if field in TIME_FIELDS:
        if not isinstance(value, datetime):
            raise QueryError(f"'{field}' needs a date, not {value!r}")
        return to_epoch(value)
    return value


def _render(node: Node) -> tuple[str, list[Any], bool]:
    """-> (sql, params, may_be_null)."""
    if isinstance(node, True_):
        return "1", [], False
    if isinstance(node, (And, Or)):
        parts = [_render(i) for i in node.items]
        joiner = " AND " if isinstance(node, And) else " OR "
        sql = "(" + joiner.join(p[0] for p in parts) + ")"
        return sql, [x for p in parts for x in p[1]], any(p[2] for p in parts)
    if isinstance(node, Not):
        sql, params, nullable = _render(node.item)
        return (f"NOT IFNULL({sql}, 0)" if nullable else f"NOT {sql}"), params, False
    if isinstance(node, Text):
        term = ascii_lower(node.term)
        sql = "(" + " OR ".join(f"instr(lower({c}), ?) > 0" for c in _TEXT_COLUMNS) + ")"
        return sql, [term] * len(_TEXT_COLUMNS), True
    if isinstance(node, Cmp):
        return _cmp(node)
    raise QueryError(f"not a query node: {node!r}")


def _cmp(c: Cmp) -> tuple[str, list[Any], bool]:
    field, op, value = c.field, c.op, c.value
    if field not in _COLUMNS:
        raise QueryError(f"unknown field '{field}'")
    if field == "state":
        states = (value,) if op == "eq" else value
        if op not in ("eq", "in"):
            raise QueryError(f"operator {op} does not apply to state")
        concrete = sorted(set().union(*(STATE_SETS[s] for s in states)))
        parts: list[str] = []
        params: list[Any] = []
        if concrete:
            parts.append(f"state IN ({', '.join('?' * len(concrete))})")
            params.extend(concrete)
        if "resubmitted" in states:
            parts.append("resubmitted IS NOT NULL")
        sql = parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
        return sql, params, False
    nullable = field not in _NOT_NULL
    if op == "eq":
        if value is None:
            return f"{field} IS NULL", [], False
        return f"{field} = ?", [_param(field, value)], nullable
    if op == "in":
        return f"{field} IN ({', '.join('?' * len(value))})", [_param(field, v) for v in value], nullable
    if op in _ORDER:
        return f"{field} {_ORDER[op]} ?", [_param(field, value)], nullable
    if op == "glob":
        return f"{field} GLOB ?", [value], nullable
    if op == "prefix":
        upper = prefix_upper(value)
        if upper is None:
            return f"{field} >= ?", [value], nullable
        return f"({field} >= ? AND {field} < ?)", [value, upper], nullable
    if op == "regex":
        return f"{field} REGEXP ?", [value], nullable
    raise QueryError(f"unknown operator {op!r}")
