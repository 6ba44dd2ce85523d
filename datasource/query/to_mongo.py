"""The tree -> a Mongo-style query for MongoDB itself ("mongo") or for any Hub backend ("hub").

When a tree cannot be expressed exactly, the query returned is a SUPERSET and `exact` is False: the
caller filters the records it gets back with `predicate(tree)`. A superset is never allowed to lose a
matching record; under a negation an inexact part therefore becomes "match everything".

Dialects:
- "mongo": native MongoDB on raw TaskRecord documents (dotted `result_content.status`, `$regex`, `$or`,
  `$nor`). Dates as aware datetimes, rounded to the millisecond the way BSON stores them.
- "hub": the portable set every Hub backend (DictDB, SQLiteDB, MongoDB) answers the same way
  (spec §9): explicit `$eq`, `$ne`, `$lt`, `$lte`, `$gte`, `$in`/`$nin` (1..500 values, no None),
  `$glob`; no `$gt` (DictDB inverts it), no `{}` (SQLite fails), no nested keys, no `$or`; comparisons
  guarded by `$ne: None` (DictDB raises TypeError comparing None). Dates as ISO UTC strings "…Z".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from .ast import TIME_FIELDS, And, Cmp, Node, Not, Or, Text, True_, format_time
from .errors import QueryError
from .matching import ci_regex, glob_escape, glob_match, glob_regex
from .predicate import STATE_SETS

__all__ = ["MongoPlan", "to_mongo", "HUB_MATCH_ALL", "HUB_IN_LIMIT"]

HUB_MATCH_ALL: dict[str, Any] = {"msg_id": {"$ne": ""}}
HUB_IN_LIMIT = 500

_RAW_KEY = {"client": "client_uuid"}
_ORDER = {"lt": "$lt", "le": "$lte", "gt": "$gt", "ge": "$gte"}
_PENDING = STATE_SETS["pending"]
_DONE = STATE_SETS["done"]
_EMPTY = [None, ""]  # what the model turns into None for a string key


@dataclass(frozen=True, slots=True)
class MongoPlan:
    query: dict
    exact: bool  # False: `query` matches a superset; filter the results with predicate(tree)


def to_mongo(
    tree: Node,
    dialect: str = "mongo",
    engine_uuids: Mapping[int, str] | None = None,
    now: datetime | None = None,
) -> MongoPlan:
    """Compile for `dialect` "mongo" or "hub". `engine_uuids` maps engine ids to uuids."""
    uuids = dict(engine_uuids or {})
    if dialect == "mongo":
        q, exact = _Mongo(uuids).node(tree)
        return MongoPlan(q if q is not None else {}, exact)
    if dialect == "hub":
        return _hub(tree)
    raise QueryError(f"unknown query dialect '{dialect}' (expected 'mongo' or 'hub')")


def _key(field: str) -> str:
    return _RAW_KEY.get(field, field)


def _floor_ms(dt: datetime) -> datetime:
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _ceil_ms(dt: datetime) -> datetime:
    floor = _floor_ms(dt)
    return floor if floor == dt else floor + timedelta(milliseconds=1)


def _concrete(states: tuple) -> tuple[frozenset[str], bool]:
    concrete: set[str] = set()
    for s in states:
        concrete |= STATE_SETS[s]
    return frozenset(concrete), "resubmitted" in states


def _states_of(c: Cmp) -> tuple:
    if c.op == "eq":
        return (c.value,)
    if c.op == "in":
        return tuple(c.value)
    raise QueryError(f"operator {c.op} does not apply to state")


# ---------------------------------------------------------------- mongo

_NEVER = {"_id": {"$exists": False}}
_COMPLETED = {"completed": {"$ne": None}}
_STATUS = "result_content.status"
_NO_ENAME = {"result_content.ename": {"$in": _EMPTY}}
# model._state_of, written as Mongo conditions on raw documents (error/result_content are sub-documents)
_MONGO_STATE: dict[str, dict] = {
    "pending": {"completed": None},
    "succeeded": {
        "$and": [
            _COMPLETED,
            {
                "$or": [
                    {_STATUS: "ok"},
                    {"$and": [{_STATUS: {"$nin": ["ok", "aborted", "error"]}}, {"error": None}, _NO_ENAME]},
                ]
            },
        ]
    },
    "aborted": {"$and": [_COMPLETED, {_STATUS: "aborted"}]},
    "failed": {
        "$and": [
            _COMPLETED,
            {_STATUS: {"$nin": ["ok", "aborted"]}},
            {
                "$or": [
                    {_STATUS: "error"},
                    {"error": {"$ne": None}},
                    {"result_content.ename": {"$nin": _EMPTY}},
                ]
            },
        ]
    },
    "done": _COMPLETED,
    "resubmitted": {"resubmitted": {"$nin": _EMPTY}},
}


def _or(parts: list[dict]) -> dict:
    return parts[0] if len(parts) == 1 else {"$or": parts}


class _Mongo:
    def __init__(self, uuids: dict[int, str]) -> None:
        self.uuids = uuids

    def node(self, node: Node) -> tuple[dict | None, bool]:
        """-> (query or None for "everything", exact)."""
        if isinstance(node, True_):
            return None, True
        if isinstance(node, (And, Or)):
            parts = [self.node(i) for i in node.items]
            exact = all(e for _, e in parts)
            queries = [q for q, _ in parts if q is not None]
            if isinstance(node, Or):
                if len(queries) < len(parts):
                    return None, exact
                return {"$or": queries}, exact
            if not queries:
                return None, exact
            return (queries[0] if len(queries) == 1 else {"$and": queries}), exact
        if isinstance(node, Not):
            q, exact = self.node(node.item)
            if not exact:
                return None, False
            return (_NEVER if q is None else {"$nor": [q]}), True
        if isinstance(node, Text):
            rx = ci_regex(node.term)
            keys = ["label", "result_content.ename", "error.ename", "result_content.evalue", "error.evalue"]
            parts = [{k: {"$regex": rx}} for k in keys]
            # evalue is compared after ANSI stripping: keep every record whose evalue has escapes
            parts += [{k: {"$regex": "\x1b"}} for k in ("result_content.evalue", "error.evalue")]
            return {"$or": parts}, False
        if isinstance(node, Cmp):
            return self.cmp(node)
        raise QueryError(f"not a query node: {node!r}")

    def cmp(self, c: Cmp) -> tuple[dict | None, bool]:
        field, op, value = c.field, c.op, c.value
        if field == "state":
            states = _states_of(c)
            exact = not any(s in ("queued", "running") for s in states)  # the DB cannot tell them apart
            parts = []
            for s in states:
                s = "pending" if s in ("queued", "running") else s
                cond = _MONGO_STATE[s]
                if cond not in parts:
                    parts.append(cond)
            return _or(parts), exact
        if field == "engine_id":
            ids = [value] if op == "eq" else list(value) if op == "in" else None
            if ids is None:
                return None, False
            known = [self.uuids[i] for i in ids if i in self.uuids]
            parts = [{"result_content.engine_info.engine_id": {"$in": ids}}]
            if known:
                parts.insert(0, {"engine_uuid": {"$in": known}})
            return _or(parts), False
        if field in ("ename", "evalue"):
            cond = self._str_cond(op, value)
            if cond is None or value is None:
                return None, False
            parts = [{f"result_content.{field}": cond}, {f"error.{field}": cond}]
            if field == "evalue":
                parts += [{f"{k}.evalue": {"$regex": "\x1b"}} for k in ("result_content", "error")]
            return {"$or": parts}, False
        key = _key(field)
        if field in TIME_FIELDS:
            return self._time(key, op, value)
        if op == "eq" and value is None:
            return {key: {"$in": _EMPTY}}, True
        cond = self._str_cond(op, value)
        if cond is None:
            return None, False
        if op in ("lt", "le", "gt", "ge", "glob", "regex"):
            cond = {**cond, "$nin": _EMPTY}  # raw "" is None once normalized
        return {key: cond}, True

    @staticmethod
    def _str_cond(op: str, value: Any) -> dict | None:
        if op == "eq":
            return {"$eq": value}
        if op == "in":
            return {"$in": list(value)}
        if op in _ORDER:
            return {_ORDER[op]: value}
        if op == "glob":
            return {"$regex": glob_regex(value)}
        if op == "prefix":
            return {"$regex": "^" + re.escape(value)}
        if op == "regex":
            return {"$regex": value}
        return None

    @staticmethod
    def _time(key: str, op: str, value: Any) -> tuple[dict | None, bool]:
        if op == "eq" and value is None:
            return {key: None}, True
        if op == "eq":
            if _floor_ms(value) == value:
                return {key: {"$eq": value}}, True
            return {key: {"$gte": _floor_ms(value), "$lte": _ceil_ms(value)}}, False
        if op == "in":
            return {key: {"$in": sorted({_floor_ms(v) for v in value} | {_ceil_ms(v) for v in value})}}, all(
                _floor_ms(v) == v for v in value
            )
        # BSON dates have whole milliseconds: round the bound so that ms-precise values compare exactly
        bound = {"ge": _ceil_ms, "gt": _floor_ms, "lt": _ceil_ms, "le": _floor_ms}.get(op)
        if bound is None:
            return None, False
        return {key: {_ORDER[op]: bound(value)}}, True


# ---------------------------------------------------------------- hub

# Keys whose raw value is never None nor "" in records ipyparallel writes: `$ne`/`$nin` are exact.
_HUB_NOT_NULL = {"msg_id", "client"}
Atom = tuple[str, dict]  # (key, operators applied together)


def _hub(tree: Node) -> MongoPlan:
    atoms, exact = _hub_node(tree)
    query: dict[str, dict] = {}
    for key, ops in atoms:
        current = query.setdefault(key, {})
        if any(op in current and current[op] != v for op, v in ops.items()):
            exact = False  # a second bound on the same operator: keep the first (a superset)
            continue
        current.update(ops)
    query = {k: v for k, v in query.items() if v}
    return MongoPlan(query or dict(HUB_MATCH_ALL), exact)


def _hub_node(node: Node) -> tuple[list[Atom], bool]:
    if isinstance(node, True_):
        return [], True
    if isinstance(node, And):
        atoms: list[Atom] = []
        exact = True
        for item in node.items:
            a, e = _hub_node(item)
            atoms += a
            exact = exact and e
        return atoms, exact
    if isinstance(node, Or):
        return _hub_or(node)
    if isinstance(node, Not):
        return _hub_not(node.item)
    if isinstance(node, Cmp):
        return _hub_cmp(node)
    return [], False  # Text: ename/evalue are not top-level keys


def _hub_or(node: Or) -> tuple[list[Atom], bool]:
    fields = {i.field for i in node.items if isinstance(i, Cmp)}
    if len(fields) == 1 and all(isinstance(i, Cmp) and i.op in ("eq", "in") for i in node.items):
        field = fields.pop()
        values: list = []
        for i in node.items:
            assert isinstance(i, Cmp)
            for v in (i.value,) if i.op == "eq" else i.value:
                if v not in values:
                    values.append(v)
        if field == "state":
            return _hub_cmp(Cmp("state", "in", tuple(values)))
        if None not in values and len(values) >= 2:
            return _hub_cmp(Cmp(field, "in", tuple(values)))
    return [], False


def _hub_time(value: datetime, rounder: Any) -> tuple[str, bool]:
    rounded = rounder(value)
    return format_time(rounded), rounded == value


def _hub_cmp(c: Cmp) -> tuple[list[Atom], bool]:
    field, op, value = c.field, c.op, c.value
    if field == "state":
        concrete, resub = _concrete(_states_of(c))
        if resub and concrete:
            return [], False
        if resub:
            return [("resubmitted", {"$ne": None})], True
        if concrete <= _PENDING:
            return [("completed", {"$eq": None})], concrete == _PENDING
        if concrete <= _DONE:
            return [("completed", {"$ne": None})], concrete == _DONE
        return [], False
    if field in ("engine_id", "ename", "evalue"):
        return [], False  # not a top-level key of a raw record
    key = _key(field)
    if field in TIME_FIELDS:
        if op == "eq" and value is None:
            return [(key, {"$eq": None})], True
        if op == "eq":
            if _floor_ms(value) != value:
                return [], False
            return [(key, {"$eq": format_time(value)})], True
        if op in ("ge", "gt"):
            text, exact = _hub_time(value, _floor_ms)
            return [(key, {"$ne": None, "$gte": text})], exact and op == "ge"
        if op in ("lt", "le"):
            text, exact = _hub_time(value, _ceil_ms)
            return [(key, {"$ne": None, "$lt" if exact and op == "lt" else "$lte": text})], exact
        return [], False
    if op == "eq":
        if value is None:
            return [], False  # raw None or "": not expressible without $in [None, ...]
        return [(key, {"$eq": value})], True
    if op == "in":
        if len(value) > HUB_IN_LIMIT:
            return [], False
        return [(key, {"$in": list(value)})], True
    if op == "prefix":
        return [(key, {"$glob": glob_escape(value) + "*"})], True
    if op == "glob":
        if "[" in value:  # SQLite GLOB and fnmatch read sets differently: use the literal prefix
            literal = re.split(r"[*?\[]", value, maxsplit=1)[0]
            return [(key, {"$glob": glob_escape(literal) + "*"})], False
        return [(key, {"$glob": value})], not glob_match(value, "")
    if op in ("lt", "le", "ge", "gt"):
        hub_op = "$gte" if op == "gt" else _ORDER[op]
        return [(key, {"$ne": None, hub_op: value})], False  # raw "" sorts first: superset
    return [], False  # regex


def _hub_not(item: Node) -> tuple[list[Atom], bool]:
    if not isinstance(item, Cmp):
        return [], False
    field, op, value = item.field, item.op, item.value
    if field == "state":
        concrete, resub = _concrete(_states_of(item))
        if resub and not concrete:
            return [("resubmitted", {"$eq": None})], True
        if not resub and concrete == _PENDING:
            return [("completed", {"$ne": None})], True
        if not resub and concrete == _DONE:
            return [("completed", {"$eq": None})], True
        return [], False
    key = _key(field)
    if field in TIME_FIELDS and op == "eq" and value is None:
        return [(key, {"$ne": None})], True
    if field in _HUB_NOT_NULL and op == "eq" and value is not None:
        return [(key, {"$ne": value})], True
    if field in _HUB_NOT_NULL and op == "in" and len(value) <= HUB_IN_LIMIT:
        return [(key, {"$nin": list(value)})], True
    return [], False
