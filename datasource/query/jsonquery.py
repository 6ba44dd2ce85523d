"""Raw Mongo-style JSON queries (`{"completed": null}`) -> the query tree, with an operator allowlist."""

from __future__ import annotations

import json
import re
from typing import Any

from ..model import parse_time
from .ast import FIELDS, STATES, Cmp, Node, and_, not_, or_
from .errors import QueryError, suggest

__all__ = ["MONGO_OPERATORS", "JSON_KEYS", "json_to_tree"]

MONGO_OPERATORS: frozenset[str] = frozenset(
    "$eq $ne $lt $lte $gt $gte $in $nin $glob $regex $exists $and $or $nor $not".split()
)

# JSON key -> tree field. TaskRecord keys first, then the normalized names the renderer uses.
JSON_KEYS: dict[str, str] = {
    "msg_id": "msg_id",
    "submitted": "submitted",
    "started": "started",
    "completed": "completed",
    "received": "received",
    "engine_uuid": "engine_uuid",
    "client_uuid": "client",
    "queue": "queue",
    "label": "label",
    "resubmitted": "resubmitted",
    "result_content.status": "state",
    "result_content.ename": "ename",
    "result_content.evalue": "evalue",
    "state": "state",
    "engine_id": "engine_id",
    "ename": "ename",
    "evalue": "evalue",
}
# result_content.status values -> state
_STATUS_STATE = {"ok": "succeeded", "error": "failed", "aborted": "aborted"}
_ORDER_OPS = {"$lt": "lt", "$lte": "le", "$gt": "gt", "$gte": "ge"}
_PATTERN_KINDS = ("str",)


def json_to_tree(obj: Any, text: str, start: int, end: int) -> Node:
    """`obj` was decoded from text[start:end]; positions in errors point into `text`."""
    return _Converter(text, start, end).query(obj)


class _Converter:
    def __init__(self, text: str, start: int, end: int) -> None:
        self.text, self.start, self.end = text, start, end

    def pos(self, key: str) -> int:
        """1-based column of `key` (as JSON) inside the object, or of the object itself."""
        found = self.text.find(json.dumps(key, ensure_ascii=False), self.start, self.end)
        return (found if found >= 0 else self.start) + 1

    def fail(self, message: str, key: str, hint: str = "") -> QueryError:
        at = self.pos(key)
        return QueryError(f"{message} at {at}{hint}", at)

    def query(self, obj: Any, key: str = "{") -> Node:
        if not isinstance(obj, dict):
            raise self.fail("expected a JSON object", key)
        items: list[Node] = []
        for k, v in obj.items():
            if k in ("$and", "$or", "$nor"):
                if not isinstance(v, list) or not v:
                    raise self.fail(f"'{k}' needs a non-empty list of objects", k)
                subs = [self.query(sub, k) for sub in v]
                node = and_(*subs) if k == "$and" else or_(*subs)
                items.append(not_(node) if k == "$nor" else node)
            elif k == "$not":
                items.append(not_(self.query(v, k)))
            elif k.startswith("$"):
                raise self._refused(k)
            else:
                items.append(self.field(k, v))
        return and_(*items)

    def _refused(self, op: str) -> QueryError:
        allowed = ", ".join(sorted(MONGO_OPERATORS))
        if op in MONGO_OPERATORS:
            return self.fail(f"operator '{op}' is not allowed here", op)
        return self.fail(f"operator '{op}' is not allowed (allowed: {allowed})", op)

    def field(self, key: str, value: Any) -> Node:
        field = JSON_KEYS.get(key)
        if field is None:
            raise self.fail(f"unknown key '{key}'", key, suggest(key, JSON_KEYS))
        if isinstance(value, dict):
            if not value or not all(isinstance(k, str) and k.startswith("$") for k in value):
                raise self.fail(f"'{key}' needs a value or an object of $operators", key)
            return and_(*(self.op(key, field, op, arg) for op, arg in value.items()))
        return self.eq(key, field, value)

    def op(self, key: str, field: str, op: str, arg: Any) -> Node:
        if op not in MONGO_OPERATORS:
            raise self._refused(op)
        if op == "$eq":
            return self.eq(key, field, arg)
        if op == "$ne":
            return not_(self.eq(key, field, arg))
        if op in _ORDER_OPS:
            if FIELDS[field] == "state":
                raise self.fail(f"'{op}' does not apply to '{key}'", op)
            if arg is None:
                raise self.fail(f"'{op}' needs a value, not null", op)
            return Cmp(field, _ORDER_OPS[op], self.value(key, field, arg, op))
        if op in ("$in", "$nin"):
            if not isinstance(arg, list) or not arg:
                raise self.fail(f"'{op}' needs a non-empty list", op)
            node = self._in(key, field, arg)
            return not_(node) if op == "$nin" else node
        if op in ("$glob", "$regex"):
            if FIELDS[field] not in _PATTERN_KINDS:
                raise self.fail(f"'{op}' does not apply to '{key}'", op)
            if not isinstance(arg, str) or not arg:
                raise self.fail(f"'{op}' needs a non-empty string", op)
            if op == "$regex":
                try:
                    re.compile(arg)
                except (re.error, RecursionError, OverflowError) as exc:
                    raise self.fail(f"bad regular expression ({exc})", op) from None
                return Cmp(field, "regex", arg)
            return Cmp(field, "glob", arg)
        if op == "$exists":
            if not isinstance(arg, bool):
                raise self.fail("'$exists' needs true or false", op)
            is_none = Cmp(field, "eq", None)
            return is_none if not arg else not_(is_none)
        if op == "$not":
            if not isinstance(arg, dict):
                raise self.fail("'$not' needs an object of $operators", op)
            return not_(self.field(key, arg))
        raise self._refused(op)  # $and/$or/$nor inside a field

    def _in(self, key: str, field: str, values: list) -> Node:
        seen: list = []
        has_none = False
        for v in values:
            if v is None or (isinstance(v, str) and v == "" and FIELDS[field] == "str"):
                has_none = True
                continue
            coerced = self.value(key, field, v, "$in")
            if coerced not in seen:
                seen.append(coerced)
        nodes: list[Node] = []
        if has_none:
            nodes.append(self.eq(key, field, None))
        if len(seen) == 1:
            nodes.append(Cmp(field, "eq", seen[0]))
        elif seen:
            nodes.append(Cmp(field, "in", tuple(seen)))
        return or_(*nodes)

    def eq(self, key: str, field: str, value: Any) -> Node:
        if value is None or (value == "" and FIELDS[field] == "str"):
            if FIELDS[field] == "state":
                raise self.fail(f"'{key}' cannot be null", key)
            return Cmp(field, "eq", None)  # the model turns '' into None
        return Cmp(field, "eq", self.value(key, field, value, key))

    def value(self, key: str, field: str, value: Any, where: str) -> Any:
        kind = FIELDS[field]
        if kind == "time":
            dt = parse_time(value) if isinstance(value, str) else None
            if dt is None:
                raise self.fail(f"bad date {json.dumps(value)} for '{key}'", where, ": use ISO, e.g. 2026-11-20T10:00Z")
            return dt
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise self.fail(f"bad number {json.dumps(value)} for '{key}'", where)
            return value
        if kind == "state":
            if not isinstance(value, str):
                raise self.fail(f"bad state {json.dumps(value)} for '{key}'", where)
            if key == "result_content.status":
                known: Any = _STATUS_STATE
                state = _STATUS_STATE.get(value)
            else:
                known = STATES
                state = value if value in STATES else None
            if state is None:
                raise self.fail(f"unknown state '{value}' for '{key}'", where, suggest(value, known))
            return state
        if not isinstance(value, str):
            raise self.fail(f"'{key}' needs a string, not {json.dumps(value)}", where)
        return value

