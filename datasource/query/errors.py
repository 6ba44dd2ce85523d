"""The one exception of the query language."""

from __future__ import annotations

import difflib
from typing import Iterable

from ..sources.base import SourceError

__all__ = ["QueryError", "suggest"]


class QueryError(SourceError):
    """A query that cannot be parsed or compiled. `position` is the 1-based column of the problem."""

    def __init__(self, message: str, position: int = 1) -> None:
        super().__init__(message)
        self.position = position


def suggest(word: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' when `word` is close to one of `known`, else ''."""
    close = difflib.get_close_matches(word.lower(), list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
