"""The filter bar (`/`): a query in hubtop's query language, checked while typing, applied on enter.

A valid query is also applied live after a short pause in typing; an invalid one shows its error under the
input with a caret at the position, and the last valid filter stays in force.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

from datasource.store import Filter

__all__ = ["FilterBar", "compile_query"]

DEBOUNCE = 0.3


def compile_query(text: str, now: datetime | None = None) -> Filter | None:
    """Query text -> store filter (None for an empty query). Raises QueryError (with .position)."""
    from datasource.query import parse, to_sql

    if not text.strip():
        return None
    sql, params = to_sql(parse(text, now=now), now=now)
    return (sql, tuple(params))


class FilterBar(Vertical):
    DEFAULT_CSS = """
    FilterBar {
        height: auto;
        display: none;
        background: $panel;
        &.-active { display: block; }
        & > Input { border: none; height: 1; padding: 0 1; background: $panel; }
        & > Input:focus { border: none; background: $boost; }
        & > #filter-error { color: $error; height: auto; padding: 0 1; display: none; }
        &.-invalid > #filter-error { display: block; }
    }
    """
    BINDINGS = [Binding("escape", "clear", "Clear filter", id="filter.clear")]

    class Applied(Message):
        """A new filter is in force (filter None: no filter)."""

        def __init__(self, text: str, filter: Filter | None) -> None:
            super().__init__()
            self.text = text
            self.filter = filter

    class Closed(Message):
        """The user left the filter bar (enter or escape): focus goes back to the table."""

    def __init__(self, *, now: Callable[[], datetime] | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.now = now
        self.applied_text = ""
        self.error: str | None = None
        self._timer: Timer | None = None
        # Apply valid queries while typing. The app turns it off when applying a filter is slow (a
        # million tasks): then a query is applied on enter only, not on every pause in typing.
        self.live = True
        # Called when a change of filter is about to be posted (Applied), in the same call as the bar's own
        # change (shown, hidden, its text): the app holds the screen there, so the bar and the rows of the new
        # view show in one frame.
        self.before_apply: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="state:failed engine:3 label:fit* since:10m err:MemoryError -label:x", id="filter-input")
        yield Static("", id="filter-error", markup=False)

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    def open(self) -> None:
        self.add_class("-active")
        self.input.focus()

    def _check(self, text: str) -> Filter | None | bool:
        """The filter, or False when the text does not parse (the error is shown)."""
        try:
            result = compile_query(text, self.now() if self.now else None)
        except Exception as exc:  # QueryError and its kin: one line, never a traceback
            self._show_error(text, exc)
            return False
        self._show_error(text, None)
        return result

    def show_error(self, text: str, exc: Exception | None) -> None:
        """Show (or clear, exc None) an error under the input; the app uses it for errors found on apply."""
        self._show_error(text, exc)
        if exc is not None:
            self.add_class("-active")

    def _show_error(self, text: str, exc: Exception | None) -> None:
        error_line = self.query_one("#filter-error", Static)
        if exc is None:
            self.error = None
            self.remove_class("-invalid")
            error_line.update("")
            return
        position = getattr(exc, "position", None)  # QueryError: 1-based column
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(position, int) and 1 <= position <= len(text) + 1:
            error_line.update(Content(" " * (position - 1) + "^ " + message))
        else:
            error_line.update(Content(message))
        self.error = message
        self.add_class("-invalid")

    @on(Input.Changed, "#filter-input")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        result = self._check(event.value)
        if result is not False and self.live:
            self._timer = self.set_timer(DEBOUNCE, lambda: self._apply(event.value))

    @on(Input.Submitted, "#filter-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        if self._check(event.value) is False:
            return  # stay in the bar with the error shown
        self._apply(event.value)
        if not event.value.strip():
            self.remove_class("-active")
        self.post_message(self.Closed())

    def _apply(self, text: str) -> None:
        result = self._check(text)
        if result is False or text == self.applied_text:
            return
        self._post_applied(text, result)  # type: ignore[arg-type]

    def _post_applied(self, text: str, filter: Filter | None) -> None:
        self.applied_text = text
        if self.before_apply is not None:
            self.before_apply()
        self.post_message(self.Applied(text, filter))

    def action_clear(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.input.value = ""
        self._show_error("", None)
        self.remove_class("-active")
        if self.applied_text:
            self._post_applied("", None)
        self.post_message(self.Closed())

    def set_text(self, text: str) -> None:
        """Apply a query from outside (the CLI's --query, the command palette)."""
        self.add_class("-active")
        self.input.value = text
        self._apply(text)
