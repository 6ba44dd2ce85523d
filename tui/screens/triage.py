"""Failure triage (`f`): failed tasks grouped by signature; act on a whole group at once.

A signature is the exception name plus its message with numbers and quoted parts masked
(`datasource.store.failure_signature`), so "ValueError: bad value 7" and "… 9" are one group.
The groups follow the main view's filter (query and engine selection) and refresh when the store moves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from datasource.model import from_epoch
from datasource.store import FailureGroup, combine, pane_filter

from ..format import ago, error_text, short_id
from ..widgets.footer import Footer
from .actions import Scope, start_action
from .detail import DetailScreen, state_text

__all__ = ["TriageScreen", "GroupTasksScreen", "group_scopes"]

_REFRESH = 1.0  # seconds between checks of store.version


def _ago(epoch: float | None, now: datetime) -> str:
    dt = from_epoch(epoch)
    return "—" if dt is None else ago(dt, now)


def group_scopes(app: Any, signature: str, action: str, *, cursor: str | None = None) -> list[Scope]:
    """Scopes for acting on a failure group (and the highlighted task of it, when given)."""
    from datasource import actions

    store = app.store
    where = combine(app.view_filter(), store.signature_filter(signature), pane_filter("failed"))
    n_all = store.count(where)
    scopes: list[Scope] = []
    if cursor:
        scopes.append(Scope("task", f"the highlighted task ({short_id(cursor)})", [cursor]))
    if action == "resubmit":
        fresh = combine(where, ("resubmitted IS NULL", ()))
        n_fresh = store.count(fresh)
        if n_fresh and n_fresh != n_all:
            scopes.append(Scope("group", f"{actions.count_tasks(n_fresh)} of group {signature} not resubmitted yet",
                                where=fresh, count=n_fresh))
    if n_all:
        scopes.append(Scope("group", f"{actions.count_tasks(n_all)} of group {signature}", where=where, count=n_all))
    return scopes


class _GroupTableScreen(Screen[None]):
    """A full screen around one DataTable of store rows: re-read when the store moves, enter opens the
    highlighted row, escape goes back, ? shows the keys."""

    _version = -1

    def reload(self) -> None:
        raise NotImplementedError

    def open_row(self, key: str) -> None:
        raise NotImplementedError

    def current_key(self) -> str | None:
        """The row key (a signature, a msg_id) under the cursor."""
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return key.value if key is not None else None

    def _maybe_reload(self) -> None:
        if self.app.store.version != self._version and self.app.screen is self:
            self.reload()

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        key = self.current_key()
        if key is not None:
            self.open_row(key)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_help(self) -> None:
        from .help import HelpScreen

        self.app.push_screen(HelpScreen())


class TriageScreen(_GroupTableScreen):
    """Failure groups: count, signature, engines, newest. enter: the group's tasks; r / p: the whole group."""

    DEFAULT_CSS = """
    TriageScreen #triage-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    TriageScreen DataTable { height: 1fr; }
    TriageScreen #triage-empty { padding: 1 2; color: $text-muted; display: none; }
    """

    BINDINGS = [
        Binding("escape,q", "back", "Back", id="triage.back"),
        Binding("enter", "open_group", "Tasks", id="triage.open_group"),
        Binding("r", "resubmit", "Resubmit group", id="triage.resubmit"),
        Binding("p", "purge", "Purge group", id="triage.purge"),
        Binding("c", "copy_signature", "Copy signature", show=False, id="triage.copy_signature"),
        Binding("question_mark", "help", "Help", show=False, id="triage.help"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[FailureGroup] = []
        self._version = -1

    def compose(self) -> ComposeResult:
        yield Static("Failure triage", id="triage-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="triage-table")
        yield Static("No failed tasks in the current view.", id="triage-empty")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("count", key="count", width=8)
        table.add_column("signature", key="signature", width=70)
        table.add_column("engines", key="engines", width=8)
        table.add_column("newest", key="newest", width=16)
        table.add_column("example", key="example", width=24)
        self.reload()
        self.set_interval(_REFRESH, self._maybe_reload)
        table.focus()

    def reload(self) -> None:
        store = self.app.store
        self._version = store.version
        self.groups = store.failure_groups(self.app.view_filter())
        table = self.query_one(DataTable)
        keep = self.current_signature()
        now = self.app.now()
        with self.app.batch_update():
            table.clear()
            for g in self.groups:
                table.add_row(
                    Text(f"{g.count:,}", justify="right", style="bold red"),
                    Text(g.signature, no_wrap=True, overflow="ellipsis"),
                    Text(str(g.engines), justify="right"),
                    Text(_ago(g.newest, now)),
                    Text(short_id(g.example_id), style="dim"),
                    key=g.signature,
                )
            if keep is not None and keep in table.rows:
                table.move_cursor(row=table.get_row_index(keep), animate=False)
        total = sum(g.count for g in self.groups)
        self.query_one("#triage-title", Static).update(Text.assemble(
            ("Failure triage", "bold"),
            f"  {total:,} failed task{'s' if total != 1 else ''} in {len(self.groups):,} "
            f"group{'s' if len(self.groups) != 1 else ''}",
            ("   enter: tasks  r: resubmit group  p: purge group  escape: back", "dim"),
        ))
        self.query_one("#triage-empty").display = not self.groups

    def current_signature(self) -> str | None:
        return self.current_key()

    def open_row(self, key: str) -> None:
        self.app.push_screen(GroupTasksScreen(key))

    def action_open_group(self) -> None:
        self.action_open()

    def _act(self, action: str) -> None:
        sig = self.current_signature()
        if sig is None:
            self.notify("no failure group here", severity="warning", timeout=3)
            return
        start_action(self.app, action, scopes=group_scopes(self.app, sig, action))

    def action_resubmit(self) -> None:
        self._act("resubmit")

    def action_purge(self) -> None:
        self._act("purge")

    def action_copy_signature(self) -> None:
        sig = self.current_signature()
        if sig is not None:
            self.app.copy_to_clipboard(sig)
            self.notify(f"copied {sig}", timeout=3)


class GroupTasksScreen(_GroupTableScreen):
    """The tasks of one failure group. enter: detail; r / p: this task or the whole group."""

    DEFAULT_CSS = """
    GroupTasksScreen #group-title { height: 1; padding: 0 1; background: $panel; }
    GroupTasksScreen DataTable { height: 1fr; }
    """

    BINDINGS = [
        Binding("escape,q", "back", "Back", id="group.back"),
        Binding("enter", "detail", "Detail", id="group.detail"),
        Binding("r", "resubmit", "Resubmit", id="group.resubmit"),
        Binding("p", "purge", "Purge", id="group.purge"),
        Binding("question_mark", "help", "Help", show=False, id="group.help"),
    ]

    LIMIT = 1_000  # rows listed (newest first); the actions still take the whole group

    def __init__(self, signature: str) -> None:
        super().__init__()
        self.signature = signature
        self._version = -1

    def compose(self) -> ComposeResult:
        yield Static(Text(self.signature), id="group-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="group-table")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("msg_id", key="msg_id", width=44)
        table.add_column("state", key="state", width=12)
        table.add_column("engine", key="engine", width=6)
        table.add_column("completed", key="completed", width=16)
        table.add_column("error", key="error", width=40)
        table.add_column("resubmitted as", key="resubmitted", width=16)
        self.reload()
        self.set_interval(_REFRESH, self._maybe_reload)
        table.focus()

    def _where(self) -> Any:
        return combine(self.app.view_filter(), self.app.store.signature_filter(self.signature))

    def reload(self) -> None:
        store = self.app.store
        self._version = store.version
        total = store.count(self._where())
        records = store.page(self._where(), sort="completed", descending=True, limit=self.LIMIT)
        table = self.query_one(DataTable)
        keep = self.current_id()
        now = self.app.now()
        with self.app.batch_update():
            table.clear()
            for r in records:
                table.add_row(
                    Text(r.msg_id, no_wrap=True, overflow="ellipsis"),
                    state_text(r.state),
                    Text("—" if r.engine_id is None else str(r.engine_id), justify="right"),
                    Text("—" if r.completed is None else ago(r.completed, now)),
                    Text(error_text(r.ename, r.evalue), style="red", no_wrap=True, overflow="ellipsis"),
                    Text(short_id(r.resubmitted) if r.resubmitted else "", style="cyan"),
                    key=r.msg_id,
                )
            if keep is not None and keep in table.rows:
                table.move_cursor(row=table.get_row_index(keep), animate=False)
        shown = f" (first {len(records):,} listed)" if total > len(records) else ""
        self.query_one("#group-title", Static).update(Text.assemble(
            (self.signature, "bold red"), f"  {total:,} task{'s' if total != 1 else ''}{shown}",
            ("   enter: detail  r/p: resubmit/purge  escape: back", "dim"),
        ))

    def current_id(self) -> str | None:
        return self.current_key()

    def open_row(self, key: str) -> None:
        self.app.push_screen(DetailScreen(key))

    def action_detail(self) -> None:
        self.action_open()

    def action_resubmit(self) -> None:
        start_action(self.app, "resubmit", scopes=group_scopes(self.app, self.signature, "resubmit",
                                                              cursor=self.current_id()))

    def action_purge(self) -> None:
        start_action(self.app, "purge", scopes=group_scopes(self.app, self.signature, "purge",
                                                           cursor=self.current_id()))
