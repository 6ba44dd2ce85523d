"""`?`: every key of the app and of each screen, read from the live bindings (with the user's keymap).

The screen the user came from is listed first, from its *active* bindings (focused widget, screen, app:
exactly what the keys do right now); the other screens follow, from their BINDINGS with the keymap applied.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding, BindingsMap, BindingType, Keymap
from textual.containers import Grid, Vertical, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

__all__ = ["HelpScreen", "binding_rows", "class_bindings", "screen_classes"]


def screen_classes() -> list[tuple[str, type, tuple[type, ...]]]:
    """The screens whose keys the help lists besides the current one (title, screen class, widget classes
    whose keys work on that screen)."""
    from .actions import EngineScreen, ExportScreen, PreviewScreen, ScopeScreen
    from .detail import DetailScreen
    from .picker import PickerScreen
    from .triage import GroupTasksScreen, TriageScreen

    from .detail import DocumentView

    return [
        ("Task detail", DetailScreen, (DocumentView,)),
        ("Failure triage", TriageScreen, ()),
        ("Tasks of a failure group", GroupTasksScreen, ()),
        ("Action: choose the tasks", ScopeScreen, ()),
        ("Action: choose an engine", EngineScreen, ()),
        ("Action: preview", PreviewScreen, ()),
        ("Export", ExportScreen, ()),
        ("Cluster picker", PickerScreen, ()),
        ("Help", HelpScreen, ()),
    ]


def class_bindings(cls: type[DOMNode], keymap: Keymap | None = None, *, inherited: bool = True) -> list[Binding]:
    """A class's bindings with a keymap applied; `inherited=False` leaves out Textual's own base classes
    (tab / shift+tab / copy, listed once under "Every screen")."""
    merged: list[BindingType] = []
    for base in reversed(cls.__mro__):
        if not inherited and base is not cls and base.__module__.startswith("textual."):
            continue
        merged.extend(base.__dict__.get("BINDINGS", []))
    bindings = BindingsMap(merged)
    if keymap:
        bindings.apply_keymap(keymap)
    return [binding for _key, binding in bindings]


def binding_rows(app: Any, bindings: Iterable[Binding]) -> list[tuple[str, str]]:
    """(keys, description) rows: one per action, all its keys together, in binding order."""
    order: list[tuple[str, str]] = []
    keys: dict[tuple[str, str], list[str]] = {}
    for binding in bindings:
        if binding.action in ("noop", ""):
            continue
        description = binding.description or binding.tooltip or binding.action.rsplit(".", 1)[-1].replace("_", " ")
        ident = (binding.action, description)
        display = app.get_key_display(binding)
        if ident not in keys:
            keys[ident] = []
            order.append(ident)
        if display not in keys[ident]:
            keys[ident].append(display)
    return [(" ".join(keys[ident]), ident[1]) for ident in order]


def _node_title(node: DOMNode, app: Any, screen: Any) -> str:
    if node is app:
        return "Everywhere"
    if node is screen:
        return f"This screen ({type(screen).__name__.removesuffix('Screen') or 'main'})"
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", type(node).__name__)
    return f"{words[:1]}{words[1:].lower()} (focused)"


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=Text(title, style="bold"), title_justify="left", show_header=False, box=None,
                  padding=(0, 2, 0, 1), expand=False)
    table.add_column("keys", style="bold cyan", no_wrap=True, min_width=14)
    table.add_column("does")
    for keys, description in rows:
        table.add_row(keys, description)
    return table


class HelpScreen(ModalScreen[None]):
    """Every key, grouped: the screen you came from first (live bindings), then every other screen."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 132; max-width: 98%; height: 94%;
        border: thick $primary; background: $surface;
    }
    HelpScreen #help-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    HelpScreen VerticalScroll { padding: 0 1; }
    HelpScreen #help-grid { grid-size: 2; grid-rows: auto; grid-gutter: 1 2; height: auto; margin-top: 1; }
    HelpScreen .help-group { height: auto; }
    """

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close", id="help.close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("hubtop keys  (escape: close; the keys follow your keymap)", id="help-title")
            with VerticalScroll(id="help-body"):
                with Grid(id="help-grid"):
                    for title, rows in self.groups():
                        yield Static(_table(title, rows), classes="help-group")

    def groups(self) -> list[tuple[str, list[tuple[str, str]]]]:
        app = self.app
        stack = app.screen_stack
        below = stack[-2] if len(stack) >= 2 and stack[-1] is self else (stack[-1] if stack and stack[-1] is not self else None)
        out: list[tuple[str, list[tuple[str, str]]]] = []
        shown: set[type] = set()
        if below is not None:
            by_node: dict[int, tuple[DOMNode, list[Binding]]] = {}
            for active in below.active_bindings.values():
                assert isinstance(active, ActiveBinding)
                by_node.setdefault(id(active.node), (active.node, []))[1].append(active.binding)
            # The screen first, then the focused widget and its parents, the app's global keys last.
            nodes = sorted(by_node.values(), key=lambda nb: (nb[0] is app, nb[0] is not below))
            common = {b.action for b in class_bindings(Screen)}
            for node, bindings in nodes:
                if node is below:
                    bindings = [b for b in bindings if b.action not in common]
                rows = binding_rows(app, bindings)
                if rows:
                    out.append((_node_title(node, app, below), rows))
            shown.add(type(below))
        keymap: Keymap = getattr(app, "_keymap", {})  # the keymap App.set_keymap installed (no public getter)
        for title, cls, widgets in screen_classes():
            if cls in shown:
                continue
            bindings = class_bindings(cls, keymap, inherited=False)
            for widget in widgets:
                bindings += class_bindings(widget, keymap)
            rows = binding_rows(app, bindings)
            if rows:
                out.append((title, rows))
        rows = binding_rows(app, class_bindings(Screen, keymap))
        if rows:
            out.append(("Every screen", rows))
        return out

    def action_close(self) -> None:
        self.dismiss(None)
