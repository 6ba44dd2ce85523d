"""The app's custom messages: workers hand plain data to the UI thread through these."""

from __future__ import annotations

from textual.message import Message

from datasource.poller import PollOutcome

__all__ = ["AggregatesReady", "LoadShowable", "PollFinished", "TaskHighlighted", "TaskChosen", "SortRequested"]


class PollFinished(Message):
    """A poll step ended (successfully or not); posted by the poll worker thread."""

    def __init__(self, outcome: PollOutcome) -> None:
        super().__init__()
        self.outcome = outcome


class LoadShowable(Message):
    """A load's first rows, or its pane counts, are in the store: show them now, not at the next UI tick
    (posted by the poll thread while the poll goes on)."""


class TaskHighlighted(Message):
    """The task table's cursor moved to another task (msg_id None: the view is empty)."""

    def __init__(self, msg_id: str | None) -> None:
        super().__init__()
        self.msg_id = msg_id


class TaskChosen(Message):
    """A task was opened (enter, or a click on the row under the cursor)."""

    def __init__(self, msg_id: str) -> None:
        super().__init__()
        self.msg_id = msg_id


class SortRequested(Message):
    """A column header was clicked: sort by it (again: reverse)."""

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column


class AggregatesReady(Message):
    """Pane counts and per-engine counts of one view, computed off the UI thread (key says of what)."""

    def __init__(
        self,
        key: tuple,
        counts: dict[str, int] | None,
        engine_counts: dict[str | None, dict[str, int]] | None,
        *,
        error: str | None = None,
    ) -> None:
        super().__init__()
        self.key = key
        self.counts = counts
        self.engine_counts = engine_counts
        self.error = error
