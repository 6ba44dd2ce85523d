"""The resubmit / purge flow (scope -> preview -> execute) and the export dialog.

`start_action(app, "resubmit" | "purge")` runs the whole flow as one async worker on the app:
1. choose a scope (only non-empty scopes are offered; a single scope skips the question),
2. a preview built by `datasource.actions.preview` — nothing is sent before `y`,
3. `datasource.actions.execute` in a thread; the result comes back as a notification, then the marks
   are cleared (when the marks were the scope) and the app polls as soon as it can.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from datasource.actions import COMPLETED

from datasource.store import PANES, Filter, combine, pane_filter

from ..format import short_id

__all__ = [
    "Scope",
    "ScopeScreen",
    "EngineScreen",
    "PreviewScreen",
    "ExportScreen",
    "start_action",
    "start_export",
    "default_scopes",
    "refusal",
]

ACTIONS = ("resubmit", "purge")
_ID_PREVIEW = 8  # ids listed in the preview
_CHROME = 12  # rows of the preview dialog around its details: border, padding, title, buttons, hint


@dataclass
class Scope:
    """One answer to "which tasks?": a list of ids, or a store filter whose ids are read (in a thread) only
    once chosen — counting is cheap at a million rows, listing is not. Neither: ask which engine."""

    key: str  # cursor | marked | pane | filter | engine | task | group
    label: str
    ids: list[str] | None = None
    where: Filter | None = None
    count: int = 0  # tasks under `where`

    @property
    def size(self) -> int:
        return len(self.ids) if self.ids is not None else self.count

    @property
    def asks_engine(self) -> bool:
        return self.ids is None and self.where is None

    def resolve(self, store: Any) -> list[str]:
        """The ids (blocking for a filter: call it in a thread)."""
        if self.ids is not None:
            return list(self.ids)
        return store.ids(self.where) if self.where is not None else []


def _short(msg_id: str) -> str:
    return short_id(msg_id)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def refusal(app: Any, action: str) -> str | None:
    """Why `action` cannot run at all on this app (read-only, capabilities), or None."""
    caps = app.caps
    if action == "resubmit" and not caps.can_resubmit:
        return caps.resubmit_reason or f"{getattr(app.source, 'name', 'this source')} cannot resubmit tasks"
    if action == "purge" and not caps.can_purge:
        return caps.purge_reason or f"{getattr(app.source, 'name', 'this source')} cannot purge tasks"
    if getattr(app, "read_only", False):
        return f"--read-only is on: {action} is disabled"
    return None


def default_scopes(app: Any, action: str) -> list[Scope]:
    """The scopes of the main screen that are not empty: cursor row, marked rows, all matching the filter."""
    from datasource import actions

    store = app.store
    scopes: list[Scope] = []
    cursor = app.cursor_id()
    if cursor:
        scopes.append(Scope("cursor", f"{actions.scope_cursor()} ({_short(cursor)})", [cursor]))
    marked = list(app.marked_ids())
    if marked:
        scopes.append(Scope("marked", actions.scope_marked(len(marked)), marked))
    where = app.view_filter()
    query = getattr(app, "filter_text", "") or ""
    pane = getattr(app, "current_pane", "all") or "all"
    purge = action == "purge"
    what = "completed task" if purge else "task"
    n_pane = 0
    if pane != "all" and pane in PANES:
        pane_where = combine(pane_filter(pane), where, COMPLETED if purge else None)
        n_pane = store.count(pane_where)
        if n_pane:
            scopes.append(Scope("pane", f"the {_plural(n_pane, what)} of the {pane.capitalize()} pane"
                                        + (f" matching {query}" if query else ""), where=pane_where, count=n_pane))
    every = combine(where, COMPLETED if purge else None)
    n_every = store.count(every)
    if n_every and n_every != n_pane:
        label = f"{_plural(n_every, what)} matching {query}" if query else f"all {_plural(n_every, what)}"
        scopes.append(Scope("filter", label + (" (every pane)" if pane != "all" else ""), where=every, count=n_every))
    if purge and store.ids(combine(COMPLETED, ("engine_uuid IS NOT NULL", ())), limit=1):
        scopes.append(Scope("engine", "one engine's completed tasks…"))
    return scopes


def _engine_order(engine: Any) -> tuple[int, str]:
    if engine is None or engine.id is None:
        return (1 << 30, "")
    return (engine.id, engine.uuid)


def _engine_done_counts(store: Any) -> dict[str, int]:
    """Completed tasks per engine uuid (engines with none are left out)."""
    out: dict[str, int] = {}
    for uuid, states in store.engine_counts(COMPLETED).items():
        n = sum(states.values())
        if n and uuid is not None:
            out[uuid] = n
    return out


# -- the modals ----------------------------------------------------------------------------------


class _Dialog(ModalScreen):
    DEFAULT_CSS = """
    _Dialog { align: center middle; }
    _Dialog > Vertical {
        width: 84; max-width: 95%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 1 2;
        overflow-y: auto;  /* a long preview scrolls instead of hiding its buttons on a small terminal */
    }
    _Dialog .title { text-style: bold; margin-bottom: 1; }
    _Dialog .hint { color: $text-muted; margin-top: 1; }
    _Dialog OptionList { height: auto; max-height: 16; }
    """


class ScopeScreen(_Dialog):
    """Which tasks should the action touch? Dismisses with a Scope, or None (escape)."""

    BINDINGS = [Binding("escape,n,q", "cancel", "Cancel", id="scope.cancel")]

    def __init__(self, action: str, scopes: Sequence[Scope]) -> None:
        super().__init__()
        self.action_name = action
        self.scopes = list(scopes)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.action_name.capitalize()} which tasks?", classes="title")
            yield OptionList(*[Option(s.label, id=str(i)) for i, s in enumerate(self.scopes)], id="scopes")
            yield Label("enter: choose   escape: cancel   (a preview comes next; nothing is sent yet)",
                        classes="hint")

    def on_mount(self) -> None:
        self.query_one(OptionList).highlighted = 0

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.scopes[int(event.option.id or 0)])

    def action_cancel(self) -> None:
        self.dismiss(None)


class EngineScreen(_Dialog):
    """Pick one engine (for "purge one engine's completed tasks"). Dismisses with its uuid or None."""

    BINDINGS = [Binding("escape,n,q", "cancel", "Cancel", id="engine_pick.cancel")]

    def __init__(self, rows: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = list(rows)  # (uuid, label)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Purge the completed tasks of which engine?", classes="title")
            yield OptionList(*[Option(label, id=uuid) for uuid, label in self.rows], id="engines")
            yield Label("enter: choose   escape: cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one(OptionList).highlighted = 0

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return len(value)


def _engines_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    items = ["none" if v is None else str(v) for v in value]
    if not items:
        return "none"
    if len(items) <= 12:
        return ", ".join(items)
    return f"{len(items)} engines ({', '.join(items[:12])}, …)"


class PreviewScreen(_Dialog):
    """What the action would do. `y` dismisses True (go), `n` / `escape` False. Nothing is sent here."""

    BINDINGS = [
        Binding("y", "confirm", "Confirm", id="preview.confirm"),
        Binding("n,escape,q", "cancel", "Cancel", id="preview.cancel"),
    ]

    def __init__(self, action: str, preview: Any, scope_label: str, sample: Sequence[Any] = ()) -> None:
        super().__init__()
        self.action_name = action
        self.preview = preview
        self.scope_label = scope_label
        self.sample = list(sample)  # TaskRecords of the first ids sent

    def compose(self) -> ComposeResult:
        p = self.preview
        n_send = _count(p.send)
        n_pending = _count(p.pending)
        verb = self.action_name.capitalize()
        with Vertical():
            yield Label(f"{verb} {_plural(n_send, 'task')}?", classes="title", id="preview-title")
            scroll = VerticalScroll(id="preview-scroll")
            scroll.can_focus = False
            with scroll:
                yield from self._details(p, n_send, n_pending)
            with Horizontal(classes="buttons"):
                if p.allowed and n_send:
                    yield Button(f"{verb} {n_send:,} (y)", variant="error" if self.action_name == "purge" else "primary",
                                 id="confirm")
                yield Button("Cancel (n)", id="cancel")  # focused: enter alone never sends
            yield Label("y: confirm   n / escape: cancel", classes="hint")

    def _details(self, p: Any, n_send: int, n_pending: int) -> ComposeResult:
        summary = Text(p.summary())
        summary.highlight_regex(r"(?m)^  ! .*$", "yellow")
        summary.highlight_regex(r"(?m)^  not possible: .*$", "bold red")
        yield Static(summary, id="preview-summary")
        body = Text()
        body.append(f"\n{n_send:,} to send", style="bold")
        body.append(f"  ·  {n_pending:,} pending", style="bold yellow" if n_pending else "")
        if n_pending:
            twice = ", it runs twice" if n_pending == 1 else ", they run twice"
            body.append(", left out" if self.action_name == "purge" else twice, style="yellow")
        n_engines = _count(p.engines)
        body.append(f"  ·  engine{'' if n_engines == 1 else 's'} {_engines_text(p.engines)}\n")
        if self.sample:
            body.append("\n")
            width = max(len(rec.msg_id) for rec in self.sample)
            for rec in self.sample:
                body.append(f"  {rec.msg_id:<{width}}  ")
                body.append(rec.state.value, style=_state_style(rec.state.value))
                if rec.ename:
                    body.append(f"  {rec.ename}", style="red")
                body.append("\n")
            if n_send > len(self.sample):
                body.append(f"  … and {n_send - len(self.sample):,} more\n", style="dim")
        yield Static(body, id="preview-body")

    DEFAULT_CSS = """
    PreviewScreen #preview-scroll { height: auto; }
    PreviewScreen .buttons { height: auto; margin-top: 1; }
    PreviewScreen Button { margin-right: 2; }
    """

    def on_mount(self) -> None:
        self._fit()
        self.query_one("#cancel", Button).focus()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        # CSS has no calc(): the details scroll within what the title, buttons and hint leave of 90% height.
        self.query_one("#preview-scroll").styles.max_height = max(4, int(self.size.height * 0.9) - _CHROME)

    @on(Button.Pressed, "#confirm")
    def _confirm_button(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#cancel")
    def _cancel_button(self) -> None:
        self.action_cancel()

    def action_confirm(self) -> None:
        if self.preview.allowed and _count(self.preview.send):
            self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


def _state_style(value: str) -> str:
    from .detail import STATE_STYLES

    return STATE_STYLES.get(value, "")


# -- the flow ------------------------------------------------------------------------------------


def start_action(app: App, action: str, *, scopes: Sequence[Scope] | None = None) -> None:
    """Resubmit or purge, from any screen: scope -> preview -> execute. Returns at once (runs in a worker)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    reason = refusal(app, action)
    if reason:
        app.notify(reason, title=action.capitalize(), severity="error", timeout=6)
        return
    chosen = [s for s in (scopes if scopes is not None else default_scopes(app, action)) if s.asks_engine or s.size]
    if not chosen:
        app.notify(f"nothing to {action}: no row under the cursor, no marks, no matching rows",
                   title=action.capitalize(), severity="warning")
        return
    app.run_worker(_flow(app, action, chosen), group="hubtop-action", exclusive=True, exit_on_error=False,
                   description=f"{action} flow")


async def _flow(app: App, action: str, scopes: list[Scope]) -> None:
    from datasource import actions

    if len(scopes) == 1 and not scopes[0].asks_engine:
        scope: Scope | None = scopes[0]
    else:
        scope = await app.push_screen_wait(ScopeScreen(action, scopes))
    if scope is None:
        return
    if scope.asks_engine:  # one engine's completed tasks
        counts = await asyncio.to_thread(_engine_done_counts, app.store)
        engines = {e.uuid: e for e in app.store.engines()}
        rows = []
        for uuid, n in counts.items():
            e = engines.get(uuid)
            eid = "?" if e is None or e.id is None else e.id
            alive = "" if e is None else ("alive" if e.alive else "dead")
            rows.append((uuid, f"engine {eid:<4} {_plural(n, 'completed task'):<22} {alive:<6} {uuid}"))
        rows.sort(key=lambda row: _engine_order(engines.get(row[0])))
        uuid = await app.push_screen_wait(EngineScreen(rows))
        if uuid is None:
            return
        ids = await asyncio.to_thread(actions.engine_completed_ids, app.store, uuid)
        e = engines.get(uuid)
        scope = Scope("engine", actions.scope_engine(len(ids), "?" if e is None or e.id is None else str(e.id)), ids)
    if scope.size > 20_000:
        app.notify(f"preparing the preview of {scope.size:,} tasks…", timeout=3)
    ids = await asyncio.to_thread(scope.resolve, app.store)
    try:
        preview = await asyncio.to_thread(
            actions.preview, action, ids, app.store, app.caps, scope=scope.label, read_only=app.read_only
        )
    except Exception as exc:
        app.notify(f"cannot preview: {exc}", title=action.capitalize(), severity="error")
        return
    sample = await asyncio.to_thread(app.store.get_many, list(preview.send)[:_ID_PREVIEW]) if preview.send else []
    if not preview.allowed and not _count(preview.send):
        app.notify(preview.reason or f"nothing to {action}", title=action.capitalize(), severity="error", timeout=6)
        return
    confirmed = await app.push_screen_wait(PreviewScreen(action, preview, scope.label, sample))
    if not confirmed:
        app.notify(f"{action} cancelled: nothing was sent", timeout=3)
        return
    if _count(preview.send) > 100:
        app.notify(f"{action}: sending {_count(preview.send):,} tasks…", timeout=3)
    try:
        result = await asyncio.to_thread(actions.execute, preview, app.source, store=app.store)
    except Exception as exc:  # execute reports refusals in the result; anything else is one line too
        app.notify(f"{action} failed: {exc}", title=action.capitalize(), severity="error", timeout=8)
        app.refresh_now()
        return
    message = result.message
    if result.resubmitted:
        pairs = [f"{_short(old)} → {_short(new)}" for old, new in list(result.resubmitted.items())[:3]]
        message += ": " + ", ".join(pairs) + (" …" if len(result.resubmitted) > 3 else "")
    app.notify(message, title=action.capitalize(), severity="information" if result.ok else "error",
               timeout=6 if result.ok else 10)
    if result.ok and scope.key == "marked":
        app.clear_marks()
    app.refresh_now()


# -- export --------------------------------------------------------------------------------------


class ExportScreen(_Dialog):
    """Where to export the current view. Dismisses with (path, fmt) or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="export.cancel")]

    def __init__(self, now: datetime | None = None, directory: str | Path | None = None) -> None:
        super().__init__()
        self.stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        self.directory = Path(directory) if directory is not None else Path.cwd()
        self.fmt = "csv"

    def _default(self, fmt: str) -> str:
        return str(self.directory / f"hubtop-export-{self.stamp}.{fmt}")

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Export the rows of the current view", classes="title")
            with RadioSet(id="export-format"):
                yield RadioButton("CSV", value=True, id="fmt-csv")
                yield RadioButton("JSON", id="fmt-json")
            yield Input(self._default("csv"), id="export-path")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export-go")
                yield Button("Cancel", id="export-cancel")
            yield Label("enter: export   escape: cancel", classes="hint")

    DEFAULT_CSS = """
    ExportScreen RadioSet { layout: horizontal; height: auto; width: auto; margin-bottom: 1; }
    ExportScreen RadioSet > RadioButton { width: auto; margin-right: 4; }
    ExportScreen .buttons { height: auto; margin-top: 1; }
    ExportScreen Button { margin-right: 2; }
    """

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()

    @on(RadioSet.Changed)
    def _format(self, event: RadioSet.Changed) -> None:
        fmt = "json" if event.pressed.id == "fmt-json" else "csv"
        path = self.query_one("#export-path", Input)
        if path.value == self._default(self.fmt):
            path.value = self._default(fmt)
        elif path.value.endswith(f".{self.fmt}"):
            path.value = path.value[: -len(self.fmt)] + fmt
        self.fmt = fmt

    @on(Input.Submitted, "#export-path")
    @on(Button.Pressed, "#export-go")
    def _go(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        if not path:
            self.notify("give a file path", severity="warning")
            return
        self.dismiss((str(Path(path).expanduser()), self.fmt))

    @on(Button.Pressed, "#export-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def start_export(app: App, *, sort: str = "submitted", descending: bool = True) -> None:
    """`x`: ask where, then `datasource.export.export_view` in a thread; a notification says how many rows."""

    async def flow() -> None:
        now = app.now() if hasattr(app, "now") else None
        answer = await app.push_screen_wait(ExportScreen(now.astimezone() if now else None))
        if answer is None:
            return
        path, fmt = answer
        try:
            from datasource.export import export_view
        except ImportError:
            app.notify("export is not available in this build", severity="error")
            return
        try:
            n = await asyncio.to_thread(export_view, app.store, app.view_filter(), sort, descending, path, fmt)
        except Exception as exc:
            app.notify(f"export failed: {exc}", severity="error", timeout=8)
            return
        app.notify(f"exported {_plural(n, 'row')} to {path}", title="Export", timeout=6)

    app.run_worker(flow(), group="hubtop-export", exclusive=True, exit_on_error=False, description="export")
