"""The tree as a Python function over TaskRecord (watch, post-filtering of superset queries, tests)."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable

from ..model import State, TaskRecord
from .ast import And, Cmp, Node, Not, Or, Text, True_
from .errors import QueryError
from .matching import ascii_lower, glob_match

__all__ = ["predicate", "STATE_SETS"]

Pred = Callable[[TaskRecord], bool]

# state qualifier value -> the concrete State values it means ('resubmitted' is separate)
STATE_SETS: dict[str, frozenset[str]] = {
    "pending": frozenset({"pending", "queued", "running"}),
    "queued": frozenset({"pending", "queued"}),  # not known to be running (the Queued pane)
    "running": frozenset({"running"}),
    "succeeded": frozenset({"succeeded"}),
    "failed": frozenset({"failed"}),
    "aborted": frozenset({"aborted"}),
    "done": frozenset({"succeeded", "failed", "aborted"}),
    "resubmitted": frozenset(),
}


def predicate(tree: Node, now: datetime | None = None) -> Pred:
    """A function TaskRecord -> bool that agrees with `to_sql` on every record.

    `now` is accepted for symmetry with `parse`; relative times are already absolute in the tree.
    """
    return _compile(tree)


def _compile(node: Node) -> Pred:
    if isinstance(node, True_):
        return lambda r: True
    if isinstance(node, And):
        parts = [_compile(i) for i in node.items]
        return lambda r: all(p(r) for p in parts)
    if isinstance(node, Or):
        parts = [_compile(i) for i in node.items]
        return lambda r: any(p(r) for p in parts)
    if isinstance(node, Not):
        inner = _compile(node.item)
        return lambda r: not inner(r)
    if isinstance(node, Text):
        term = ascii_lower(node.term)
        return lambda r: any(v is not None and term in ascii_lower(v) for v in (r.ename, r.evalue, r.label))
    if isinstance(node, Cmp):
        return _cmp(node)
    raise QueryError(f"not a query node: {node!r}")


def _state_value(r: TaskRecord) -> str:
    return r.state.value if isinstance(r.state, State) else str(r.state)


def _state_match(states: frozenset[str] | tuple) -> Pred:
    concrete: set[str] = set()
    for s in states:
        concrete |= STATE_SETS[s]
    resub = "resubmitted" in states
    return lambda r: _state_value(r) in concrete or (resub and r.resubmitted is not None)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _cmp(c: Cmp) -> Pred:
    field, op, value = c.field, c.op, c.value
    if field == "state":
        if op == "eq":
            return _state_match((value,))
        if op == "in":
            return _state_match(value)
        raise QueryError(f"operator {op} does not apply to state")

    def get(r: TaskRecord) -> Any:
        return getattr(r, field)

    if op == "eq":
        if value is None:
            return lambda r: get(r) is None
        return lambda r: (v := get(r)) is not None and v == value
    if op == "in":
        allowed = frozenset(value)
        return lambda r: (v := get(r)) is not None and v in allowed
    if op in ("lt", "le", "gt", "ge"):
        test = {
            "lt": lambda a: a < value,
            "le": lambda a: a <= value,
            "gt": lambda a: a > value,
            "ge": lambda a: a >= value,
        }[op]
        return lambda r: (v := get(r)) is not None and test(v)
    if op == "glob":
        return lambda r: (v := get(r)) is not None and glob_match(value, v)
    if op == "prefix":
        return lambda r: (v := get(r)) is not None and v.startswith(value)
    if op == "regex":
        rx = _regex(value)
        return lambda r: (v := get(r)) is not None and rx.search(v) is not None
    raise QueryError(f"unknown operator {op!r}")
