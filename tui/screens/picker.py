"""`hubtop` with no SOURCE and several clusters: pick one. Dismisses with the connection-file path or None."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from ..format import ago
from ..widgets.footer import Footer

__all__ = ["PickerScreen", "Choice", "as_choice"]

Choice = tuple[str, "str | None", Path, float]  # (profile, cluster id, connection file, mtime)


def as_choice(item: Any) -> Choice:
    """A discovered cluster as (profile, cluster_id, path, mtime); tuples or objects with those attributes."""
    if isinstance(item, (tuple, list)):
        profile, cluster_id, path, mtime = item
    else:
        profile, cluster_id = getattr(item, "profile"), getattr(item, "cluster_id", None)
        path, mtime = getattr(item, "path"), getattr(item, "mtime", 0.0)
    return str(profile), (str(cluster_id) if cluster_id else None), Path(path), float(mtime or 0.0)


class PickerScreen(Screen["str | None"]):
    """One row per connection file: profile, cluster id, path, age (of the file)."""

    DEFAULT_CSS = """
    PickerScreen #picker-title { height: auto; padding: 1 2; }
    PickerScreen DataTable { height: 1fr; margin: 0 1; }
    """

    BINDINGS = [
        Binding("enter", "choose", "Open", id="picker.choose"),
        Binding("escape,q", "cancel", "Quit", id="picker.cancel"),
    ]

    def __init__(self, choices: Sequence[Any], *, now: datetime | None = None) -> None:
        super().__init__()
        self.choices = [as_choice(c) for c in choices]
        self._now = now

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(
            ("Several ipyparallel clusters found", "bold"),
            f" ({len(self.choices)}) — pick one with enter, escape quits.\n",
            ("Tip: `hubtop --profile NAME` or `hubtop PATH` opens one directly.", "dim"),
        ), id="picker-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="picker-table")
        yield Footer()

    def on_mount(self) -> None:
        now = self._now
        if now is None:
            clock = getattr(self.app, "now", None)
            now = clock() if callable(clock) else datetime.now(timezone.utc)
        table = self.query_one(DataTable)
        table.add_column("profile", key="profile")
        table.add_column("cluster id", key="cluster")
        table.add_column("connection file", key="path")
        table.add_column("age", key="age")
        for i, (profile, cluster_id, path, mtime) in enumerate(self.choices):
            age = ago(datetime.fromtimestamp(mtime, timezone.utc), now) if mtime else "—"
            table.add_row(Text(profile, style="bold"), Text(cluster_id or "—"), Text(str(path)), Text(age), key=str(i))
        table.focus()

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(str(self.choices[int(event.row_key.value or 0)][2]))

    def action_choose(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            self.dismiss(str(self.choices[table.cursor_row][2]))

    def action_cancel(self) -> None:
        self.dismiss(None)
