"""String matching shared by the back ends, written to agree with SQLite exactly.

- `glob_regex`: SQLite's GLOB (case-sensitive; `*`, `?`, `[...]`/`[^...]` sets with ranges, `]` first
  is literal, an unterminated set never matches) as a regex usable by Python `re` and MongoDB (PCRE).
- `ascii_lower`: SQLite's built-in lower() folds ASCII letters only; the predicate does the same.
- `prefix_upper`: the smallest string above every string that starts with a prefix (index range scans).
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["glob_regex", "glob_match", "ascii_lower", "prefix_upper", "ci_regex", "glob_escape"]

_ANY = r"[\s\S]"
_END = r"(?![\s\S])"  # true end of string in Python re and PCRE alike ('$' allows a final newline)
_NEVER = r"(?!)"
_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def ascii_lower(text: str) -> str:
    return text.translate(_LOWER)


def _class_char(ch: str) -> str:
    return "\\" + ch if ch in "\\]^-[" else ch


def glob_regex(pattern: str) -> str:
    """The anchored regex equivalent of SQLite `x GLOB pattern`."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(_ANY + "*")
            i += 1
        elif c == "?":
            out.append(_ANY)
            i += 1
        elif c == "[":
            # follows sqlite3 func.c patternCompare (matchSet branch)
            j = i + 1
            invert = False
            if j < n and pattern[j] == "^":
                invert, j = True, j + 1
            parts: list[str] = []
            if j < n and pattern[j] == "]":
                parts.append(_class_char("]"))
                j += 1
            prior: str | None = None
            while j < n and pattern[j] != "]":
                c2 = pattern[j]
                if c2 == "-" and j + 1 < n and pattern[j + 1] != "]" and prior is not None:
                    hi = pattern[j + 1]
                    if prior <= hi:
                        parts.append(f"{_class_char(prior)}-{_class_char(hi)}")
                    prior = None
                    j += 2
                else:
                    parts.append(_class_char(c2))
                    prior = c2
                    j += 1
            if j >= n:  # unterminated set: SQLite never matches
                return _NEVER
            if parts:
                out.append(("[^" if invert else "[") + "".join(parts) + "]")
            else:
                out.append(_ANY if invert else _NEVER)
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    out.append(_END)
    return "".join(out)


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(glob_regex(pattern))


def glob_match(pattern: str, value: str) -> bool:
    return _compiled(pattern).search(value) is not None


def glob_escape(text: str) -> str:
    """Literal text inside a glob (SQLite GLOB and fnmatch agree on `[*]`, `[?]`, `[[]`)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def ci_regex(term: str) -> str:
    """Unanchored regex matching `term` with ASCII letters case-insensitive (as SQLite lower())."""
    out = []
    for ch in term:
        if ch.isascii() and ch.isalpha():
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def prefix_upper(prefix: str) -> str | None:
    """Smallest string greater than every string starting with `prefix` (None: no upper bound)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # skip surrogates: they are never stored
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None
