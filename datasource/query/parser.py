"""Query text -> tree: a scanner for terms (qualifiers, free text, embedded JSON) and a recursive-descent
parser for negation, implicit AND, `or`/`|` and parentheses."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from ..model import parse_time
from .ast import STATES, Cmp, Node, Text, True_, and_, not_, or_
from .errors import QueryError, suggest
from .jsonquery import json_to_tree

__all__ = ["parse", "compile_filter", "QUALIFIERS", "ALIASES"]

QUALIFIERS = (
    "state", "engine", "label", "ename", "evalue", "client", "queue", "since", "before", "id", "text",
)
ALIASES: dict[str, str] = {
    "status": "state",
    "is": "state",
    "err": "ename",
    "error": "ename",
    "exception": "ename",
    "after": "since",
    "until": "before",
    "eng": "engine",
    "session": "client",
    "msg": "id",
    "msg_id": "id",
    "tag": "label",
    "q": "queue",
}
STATE_ALIASES: dict[str, str] = {
    "ok": "succeeded",
    "success": "succeeded",
    "succeed": "succeeded",
    "error": "failed",
    "fail": "failed",
    "failure": "failed",
    "abort": "aborted",
    "cancelled": "aborted",
    "canceled": "aborted",
    "completed": "done",
    "finished": "done",
    "waiting": "pending",
}
QUEUES: dict[str, str] = {"task": "task", "mux": "mux", "lb": "task", "balanced": "task", "direct": "mux"}

_QUALIFIER = re.compile(r"([A-Za-z_]+):")
_BARE_STOP = set(" \t\r\n\f\v,()|\"")
_TEXT_STOP = set(" \t\r\n\f\v()|\"")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UUID_PREFIX = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]*")


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "term" | "(" | ")" | "or" | "and" | "not"
    pos: int  # 1-based column
    node: Node | None = None


def parse(text: str, now: datetime | None = None) -> Node:
    """Parse query text into a tree. Blank text -> True_ (matches all). Raises QueryError."""
    if not isinstance(text, str):
        raise QueryError("a query must be text", 1)
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff" or ch == "\x00":
            raise QueryError(f"invalid character at {i + 1}", i + 1)
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    tokens = _Scanner(text, now).scan()
    if not tokens:
        return True_()
    return _Parser(tokens, len(text)).parse()


def compile_filter(text: str, now: datetime | None = None) -> Node:
    """The tree of a filter-bar / CLI query (same as `parse`)."""
    return parse(text, now)


# ---------------------------------------------------------------- scanner

class _Scanner:
    def __init__(self, text: str, now: datetime) -> None:
        self.text, self.now, self.i = text, now, 0
        self.tokens: list[_Tok] = []

    def error(self, message: str, index: int, hint: str = "") -> QueryError:
        return QueryError(f"{message} at {index + 1}{hint}", index + 1)

    def scan(self) -> list[_Tok]:
        text = self.text
        while self.i < len(text):
            ch = text[self.i]
            if ch.isspace():
                self.i += 1
            elif ch in "()|":
                self.tokens.append(_Tok("or" if ch == "|" else ch, self.i + 1))
                self.i += 1
            elif ch in "-!":
                nxt = text[self.i + 1] if self.i + 1 < len(text) else ""
                if not nxt or nxt.isspace() or nxt in ")|":
                    raise self.error(f"nothing to negate after '{ch}'", self.i)
                self.tokens.append(_Tok("not", self.i + 1))
                self.i += 1
            elif ch == '"':
                start = self.i
                term = self.quoted()
                if not term:
                    raise self.error("empty quoted text", start)
                self.tokens.append(_Tok("term", start + 1, Text(term)))
            elif ch == "{":
                self.json()
            else:
                self.word()
        return self.tokens

    def quoted(self) -> str:
        """A "..." string starting at self.i (backslash escapes \\" and \\\\)."""
        text, start = self.text, self.i
        out: list[str] = []
        i = start + 1
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
            elif ch == '"':
                self.i = i + 1
                return "".join(out)
            else:
                out.append(ch)
                i += 1
        raise self.error("unterminated quote", start)

    def json(self) -> None:
        start = self.i
        try:
            obj, end = json.JSONDecoder(parse_constant=_no_constant).raw_decode(self.text, start)
        except json.JSONDecodeError as exc:
            raise QueryError(f"invalid JSON at column {exc.pos + 1}: {exc.msg}", exc.pos + 1) from None
        except ValueError as exc:  # NaN / Infinity
            raise self.error(f"invalid JSON ({exc})", start) from None
        except RecursionError:
            raise self.error("invalid JSON (nested too deeply)", start) from None
        try:
            node = json_to_tree(obj, self.text, start, end)
        except RecursionError:
            raise self.error("JSON query nested too deeply", start) from None
        self.tokens.append(_Tok("term", start + 1, node))
        self.i = end

    def word(self) -> None:
        text, start = self.text, self.i
        m = _QUALIFIER.match(text, start)
        if m:
            name = m.group(1).lower()
            self.i = m.end()
            values = self.values(name, start)
            self.tokens.append(_Tok("term", start + 1, self.qualifier(name, values, start)))
            return
        i = start
        while i < len(text) and text[i] not in _TEXT_STOP and not text[i].isspace():
            i += 1
        word = text[start:i]
        self.i = i
        if word.lower() in ("or", "and", "not"):
            self.tokens.append(_Tok(word.lower(), start + 1))
        else:
            self.tokens.append(_Tok("term", start + 1, Text(word)))

    def values(self, name: str, qstart: int) -> list[tuple[str, int]]:
        """The comma list after `name:`: [(value, index)], quoted or bare items."""
        text = self.text
        out: list[tuple[str, int]] = []
        while True:
            start = self.i
            quoted = start < len(text) and text[start] == '"'
            if quoted:
                value = self.quoted()
            else:
                i = start
                while i < len(text) and text[i] not in _BARE_STOP and not text[i].isspace():
                    i += 1
                value, self.i = text[start:i], i
            if not value:
                raise self.error(f"empty value for '{name}'", start if out or quoted else qstart)
            out.append((value, start))
            if self.i < len(text) and text[self.i] == ",":
                self.i += 1
                continue
            return out

    # -------------------------------------------------------- qualifiers -> nodes

    def qualifier(self, name: str, values: list[tuple[str, int]], start: int) -> Node:
        canonical = ALIASES.get(name, name)
        handler: Callable[[list[tuple[str, int]]], Node] | None = getattr(self, f"q_{canonical}", None)
        if canonical not in QUALIFIERS or handler is None:
            known = list(QUALIFIERS) + list(ALIASES)
            raise self.error(f"unknown qualifier '{name}'", start, suggest(name, known))
        return handler(values)

    def q_state(self, values: list[tuple[str, int]]) -> Node:
        states: list[str] = []
        for value, i in values:
            v = value.lower()
            v = STATE_ALIASES.get(v, v)
            if v not in STATES:
                raise self.error(f"unknown state '{value}'", i, suggest(v, STATES))
            if v not in states:
                states.append(v)
        return _eq_or_in("state", states)

    def q_engine(self, values: list[tuple[str, int]]) -> Node:
        ids: list[int] = []
        prefixes: list[Node] = []
        for value, i in values:
            if value.isdigit() and value.isascii():
                n = int(value)
                if n >= 2**31:
                    raise self.error(f"bad engine id '{value}'", i, ": too large")
                if n not in ids:
                    ids.append(n)
            elif _UUID_PREFIX.fullmatch(value.removesuffix("*")):
                # `engine:1e0d*` also reads as a prefix; needed for an all-digit uuid prefix
                prefixes.append(Cmp("engine_uuid", "prefix", value.removesuffix("*").lower()))
            else:
                raise self.error(f"bad engine id '{value}'", i, ": expected an integer id or a uuid prefix")
        nodes = ([_eq_or_in("engine_id", ids)] if ids else []) + prefixes
        return or_(*nodes)

    def _pattern(self, field: str, values: list[tuple[str, int]]) -> Node:
        return or_(*(Cmp(field, "glob" if re.search(r"[*?\[]", v) else "eq", v) for v, _ in values))

    def q_label(self, values: list[tuple[str, int]]) -> Node:
        return self._pattern("label", values)

    def q_ename(self, values: list[tuple[str, int]]) -> Node:
        return self._pattern("ename", values)

    def q_evalue(self, values: list[tuple[str, int]]) -> Node:
        return self._pattern("evalue", values)

    def q_client(self, values: list[tuple[str, int]]) -> Node:
        return or_(*(Cmp("client", "prefix", v) for v, _ in values))

    def q_id(self, values: list[tuple[str, int]]) -> Node:
        return or_(*(Cmp("msg_id", "prefix", v) for v, _ in values))

    def q_text(self, values: list[tuple[str, int]]) -> Node:
        return or_(*(Text(v) for v, _ in values))

    def q_queue(self, values: list[tuple[str, int]]) -> Node:
        queues: list[str] = []
        for value, i in values:
            q = QUEUES.get(value.lower())
            if q is None:
                raise self.error(f"unknown queue '{value}'", i, suggest(value, QUEUES))
            if q not in queues:
                queues.append(q)
        return _eq_or_in("queue", queues)

    def q_since(self, values: list[tuple[str, int]]) -> Node:
        return or_(*(Cmp("submitted", "ge", self.when(v, i)) for v, i in values))

    def q_before(self, values: list[tuple[str, int]]) -> Node:
        return or_(*(Cmp("submitted", "lt", self.when(v, i)) for v, i in values))

    def when(self, value: str, i: int) -> datetime:
        """A duration (10m, 1h30m: that long before `now`) or an ISO date/datetime (naive = UTC)."""
        v = value.lower()
        if _DURATION.fullmatch(v):
            seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(v))
            try:
                dt = self.now - timedelta(seconds=seconds)
            except OverflowError:
                raise self.error(f"duration '{value}' is too long", i) from None
            # whole milliseconds: exact on MongoDB too (BSON dates have ms precision)
            return dt.replace(microsecond=dt.microsecond // 1000 * 1000)
        dt = parse_time(value) if re.match(r"\d{4}-\d{2}-\d{2}", value) else None
        if dt is None:
            raise self.error(
                f"bad duration or date '{value}'", i, ": expected e.g. 10m, 2h, 1d, 1w or 2026-11-20T10:00"
            )
        return dt


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _eq_or_in(field: str, values: list) -> Node:
    return Cmp(field, "eq", values[0]) if len(values) == 1 else Cmp(field, "in", tuple(values))


# ---------------------------------------------------------------- parser

class _Parser:
    def __init__(self, tokens: list[_Tok], length: int) -> None:
        self.tokens, self.k, self.length = tokens, 0, length

    def peek(self) -> _Tok | None:
        return self.tokens[self.k] if self.k < len(self.tokens) else None

    def parse(self) -> Node:
        node = self.or_expr()
        tok = self.peek()
        if tok is not None:  # only ")" can stop or_expr early
            raise QueryError(f"unbalanced ')' at {tok.pos}", tok.pos)
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while (tok := self.peek()) is not None and tok.kind == "or":
            self.k += 1
            nxt = self.peek()
            if nxt is None or nxt.kind in ("or", ")"):
                raise QueryError(f"'or' needs a term on both sides at {tok.pos}", tok.pos)
            items.append(self.and_expr())
        return or_(*items)

    def and_expr(self) -> Node:
        items: list[Node] = []
        while (tok := self.peek()) is not None and tok.kind not in ("or", ")"):
            if tok.kind == "and":
                self.k += 1
                nxt = self.peek()
                if not items or nxt is None or nxt.kind in ("or", ")", "and"):
                    raise QueryError(f"'and' needs a term on both sides at {tok.pos}", tok.pos)
                continue
            items.append(self.unary())
        if not items:
            tok = self.peek()
            pos = tok.pos if tok is not None else self.length + 1
            what = "'or'" if tok is not None and tok.kind == "or" else "a term"
            raise QueryError(f"expected a term before {what} at {pos}", pos)
        return and_(*items)

    def unary(self) -> Node:
        tok = self.peek()
        assert tok is not None
        if tok.kind == "not":
            self.k += 1
            nxt = self.peek()
            if nxt is None or nxt.kind in ("or", ")", "and"):
                raise QueryError(f"nothing to negate at {tok.pos}", tok.pos)
            return not_(self.unary())
        if tok.kind == "(":
            self.k += 1
            nxt = self.peek()
            if nxt is not None and nxt.kind == ")":
                raise QueryError(f"empty parentheses at {tok.pos}", tok.pos)
            node = self.or_expr()
            close = self.peek()
            if close is None or close.kind != ")":
                raise QueryError(f"unbalanced '(' at {tok.pos}", tok.pos)
            self.k += 1
            return node
        self.k += 1
        assert tok.node is not None
        return tok.node
