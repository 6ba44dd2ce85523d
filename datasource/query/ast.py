"""The query tree: immutable nodes, normalizing constructors, canonical text rendering.

Semantics shared by every back end (see docs/query-language.md): two-valued logic. A comparison on a
field that is None is simply false (except `eq None`), so `Not` is the exact complement: `-label:x`
matches tasks whose label is None.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Union

__all__ = [
    "Node",
    "And",
    "Or",
    "Not",
    "Cmp",
    "Text",
    "True_",
    "and_",
    "or_",
    "not_",
    "FIELDS",
    "TIME_FIELDS",
    "OPS",
    "STATES",
    "format_time",
]

# Field name (store column / TaskRecord attribute) -> value kind.
FIELDS: dict[str, str] = {
    "msg_id": "str",
    "state": "state",
    "engine_id": "int",
    "engine_uuid": "str",
    "queue": "str",
    "label": "str",
    "client": "str",
    "ename": "str",
    "evalue": "str",
    "resubmitted": "str",
    "submitted": "time",
    "started": "time",
    "completed": "time",
    "received": "time",
}
TIME_FIELDS = frozenset(k for k, v in FIELDS.items() if v == "time")
# eq (value may be None = "is None"), in (tuple of >= 2 non-None values), ordering, glob (SQLite GLOB
# semantics, case-sensitive), prefix (str.startswith), regex (re.search).
OPS = ("eq", "in", "lt", "le", "gt", "ge", "glob", "prefix", "regex")
# The values `state:` accepts; pending/done/resubmitted are expanded by each back end.
STATES = ("pending", "queued", "running", "succeeded", "failed", "aborted", "resubmitted", "done")

Scalar = Union[str, int, datetime, None]


@dataclass(frozen=True, slots=True)
class True_:
    """Matches every task (the empty query)."""

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Cmp:
    field: str
    op: str
    value: Any  # a Scalar, or a tuple of Scalars for "in"

    def __str__(self) -> str:
        return _render_cmp(self)


@dataclass(frozen=True, slots=True)
class Text:
    """Case-insensitive (ASCII) substring of ename, evalue or label."""

    term: str

    def __str__(self) -> str:
        return _render_text(self.term)


@dataclass(frozen=True, slots=True)
class Not:
    item: "Node"

    def __str__(self) -> str:
        inner = self.item
        if isinstance(inner, True_):
            return "-{}"
        if isinstance(inner, (And, Or)):
            return f"-({inner})"
        return f"-{inner}"


@dataclass(frozen=True, slots=True)
class And:
    items: tuple["Node", ...]

    def __str__(self) -> str:
        return " ".join(f"({i})" if isinstance(i, Or) else str(i) for i in self.items)


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple["Node", ...]

    def __str__(self) -> str:
        return " or ".join(f"({i})" if isinstance(i, Or) else str(i) for i in self.items)


Node = Union[And, Or, Not, Cmp, Text, True_]


def and_(*items: Node) -> Node:
    """Flatten nested Ands, drop True_; one item -> itself; none -> True_."""
    out: list[Node] = []
    for item in items:
        if isinstance(item, True_):
            continue
        out.extend(item.items if isinstance(item, And) else (item,))
    if not out:
        return True_()
    return out[0] if len(out) == 1 else And(tuple(out))


def or_(*items: Node) -> Node:
    """Flatten nested Ors; anything OR True_ is True_; one item -> itself."""
    out: list[Node] = []
    for item in items:
        if isinstance(item, True_):
            return True_()
        out.extend(item.items if isinstance(item, Or) else (item,))
    if not out:
        raise ValueError("or_() needs at least one item")
    return out[0] if len(out) == 1 else Or(tuple(out))


def not_(item: Node) -> Node:
    return item.item if isinstance(item, Not) else Not(item)


# ---------------------------------------------------------------- rendering

def format_time(dt: datetime) -> str:
    """Aware datetime -> canonical ISO UTC text ('…Z'), microseconds only when non-zero."""
    text = dt.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    return text + "Z"


_BARE_VALUE = re.compile(r'[^\s,()|"]+')
_QUALIFIER_LIKE = re.compile(r"^[A-Za-z_]+:")
_KEYWORDS = {"or", "and", "not"}


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_value(value: str) -> str:
    if _BARE_VALUE.fullmatch(value):
        return value
    return quote(value)


def _render_text(term: str) -> str:
    if (
        _BARE_VALUE.fullmatch(term)
        and term[0] not in "-!{"
        and term.lower() not in _KEYWORDS
        and not _QUALIFIER_LIKE.match(term)
    ):
        return term
    return quote(term)


_GLOB_CHARS = re.compile(r"[*?\[]")
# field -> the qualifier that renders it, per op
_QUALIFIER_OF = {
    ("state", "eq"): "state",
    ("state", "in"): "state",
    ("engine_id", "eq"): "engine",
    ("engine_id", "in"): "engine",
    ("engine_uuid", "prefix"): "engine",
    ("msg_id", "prefix"): "id",
    ("client", "prefix"): "client",
    ("queue", "eq"): "queue",
    ("queue", "in"): "queue",
    ("label", "glob"): "label",
    ("ename", "glob"): "ename",
    ("submitted", "ge"): "since",
    ("submitted", "lt"): "before",
}
_JSON_KEY = {"client": "client_uuid"}
_JSON_OP = {"lt": "$lt", "le": "$lte", "gt": "$gt", "ge": "$gte", "glob": "$glob", "regex": "$regex"}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value


def _render_cmp(cmp: Cmp) -> str:
    field, op, value = cmp.field, cmp.op, cmp.value
    qualifier = _QUALIFIER_OF.get((field, op))
    if qualifier is None and op == "eq" and field in ("label", "ename") and isinstance(value, str):
        # an equality renders as a glob without wildcards (the parser reads it back as eq)
        if not _GLOB_CHARS.search(value):
            qualifier = field
    if field == "queue" and not set(value if op == "in" else (value,)) <= {"task", "mux"}:
        qualifier = None
    if field == "engine_uuid" and not re.fullmatch(r"[0-9a-f][0-9a-f-]*", value or ""):
        qualifier = None
    if qualifier is not None and op != "glob" or (op == "glob" and _GLOB_CHARS.search(value)):
        if qualifier is not None:
            values = value if op == "in" else (value,)
            if field == "engine_uuid" and value.isdigit():
                return f"engine:{value}*"
            rendered = ",".join(
                format_time(v) if isinstance(v, datetime) else _render_value(str(v)) for v in values
            )
            return f"{qualifier}:{rendered}"
    key = _JSON_KEY.get(field, field)
    if op == "eq":
        body: Any = _json_value(value)
    elif op == "in":
        body = {"$in": _json_value(value)}
    elif op in _JSON_OP:
        body = {_JSON_OP[op]: _json_value(value)}
    else:  # prefix on a field without a qualifier: not produced by the parser
        body = {"$regex": "^" + re.escape(value)}
    return json.dumps({key: body}, ensure_ascii=False)
