"""The engine sidebar: one line per engine (alive/dead, queued, running, done, failed); select engines to filter."""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from datasource.model import Engine
from datasource.store import Filter, TaskStore

from .virtual_size import set_virtual_size

__all__ = ["EngineRow", "EngineList"]

NO_ENGINE = "∅"  # label of the pseudo engine holding tasks without one (unassigned, scheduler failures)


@dataclass(slots=True)
class EngineRow:
    uuid: str | None
    id: int | None
    alive: bool
    queued: int | None
    running: int | None
    done: int
    failed: int


def _n(value: int | None) -> str:
    if value is None:
        return "–"
    if value >= 100_000:
        return f"{value // 1000}k"
    return f"{value:,}"


class EngineList(ScrollView, can_focus=True):
    """Engines of the cluster. space/enter toggles an engine in the selection; the selection filters every pane."""

    DEFAULT_CSS = """
    EngineList {
        background: $surface;
        color: $foreground;
        scrollbar-gutter: stable;
        & > .engine-list--header { text-style: bold; background: $panel; }
        & > .engine-list--cursor { }
        &:focus > .engine-list--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .engine-list--alive { color: $success; }
        & > .engine-list--dead { color: $text-muted; }
        & > .engine-list--selected { color: $accent; text-style: bold; }
        & > .engine-list--failed { color: $error; }
    }
    """
    COMPONENT_CLASSES = {
        "engine-list--header",
        "engine-list--cursor",
        "engine-list--alive",
        "engine-list--dead",
        "engine-list--selected",
        "engine-list--failed",
    }
    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False, id="engines.up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="engines.down"),
        Binding("space,enter", "toggle", "Select engine", id="engines.toggle"),
        Binding("backspace", "clear_selection", "All engines", id="engines.clear"),
    ]

    class SelectionChanged(Message):
        """The set of selected engines changed (empty: no engine filter)."""

        def __init__(self, selected: frozenset[str | None]) -> None:
            super().__init__()
            self.selected = selected

    def __init__(self, store: TaskStore, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.store = store
        self.rows: list[EngineRow] = []
        self.selected: set[str | None] = set()
        self.cursor = 0
        self.knows_running = False
        self._base_style: Style | None = None

    def update_rows(
        self,
        where: Filter | None,
        *,
        knows_running: bool,
        counts: dict[str | None, dict[str, int]] | None = None,
    ) -> None:
        """Re-read engines and their counts under the query filter (without the engine selection).

        `counts` (store.engine_counts(where)) may be computed elsewhere, off the UI thread."""
        self.knows_running = knows_running
        engines: list[Engine] = self.store.engines()
        if counts is None:
            counts = self.store.engine_counts(where)
        queue = self.store.queue
        queued_by_id = {eid: e.queue + e.tasks for eid, e in queue.engines.items()} if queue else {}
        rows = []
        for e in engines:
            per = counts.get(e.uuid, {})
            rows.append(self._row(e.uuid, e.id, e.alive, per, queued_by_id.get(e.id, e.queue + e.tasks) if e.alive else 0))
        if None in counts:
            rows.append(self._row(None, None, False, counts[None], queue.unassigned if queue else None))
        old, self.rows = self.rows, rows
        self.cursor = min(self.cursor, max(0, len(rows) - 1))
        if len(old) == len(rows):
            # A busy cluster moves a few engines' counts each poll: repaint those lines, not the list (a full
            # repaint of 50 lines and the containers beneath it cost ~3 ms per poll).
            for i, (before, now) in enumerate(zip(old, rows)):
                if before != now:
                    self.refresh_line(i + 1)  # line 0 is the header
            return
        # the unassigned row comes and goes with every burst of a busy cluster: no re-layout while the list fits
        set_virtual_size(self, Size(self.size.width, len(rows) + 1))

    def _row(self, uuid: str | None, eid: int | None, alive: bool, per: dict[str, int], queued: int | None) -> EngineRow:
        done = per.get("succeeded", 0) + per.get("failed", 0) + per.get("aborted", 0)
        running = per.get("running", 0) if self.knows_running else None
        return EngineRow(uuid, eid, alive, queued, running, done, per.get("failed", 0))

    def filter(self) -> Filter | None:
        from datasource.store import engine_filter

        return engine_filter(sorted(self.selected, key=lambda u: u or "")) if self.selected else None

    def summary(self) -> str:
        """'engines 0, 3' for the status line ('' when no engine is selected)."""
        if not self.selected:
            return ""
        names = [NO_ENGINE if r.uuid is None else str(r.id if r.id is not None else r.uuid[:8]) for r in self.rows if r.uuid in self.selected]
        return "engines " + ", ".join(names)

    # -- actions ------------------------------------------------------------------------------

    def _move(self, row: int) -> None:
        if not self.rows:
            return
        self.cursor = max(0, min(row, len(self.rows) - 1))
        top = int(self.scroll_y)
        page = max(1, self.scrollable_content_region.height - 1)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, force=True)
        elif self.cursor >= top + page:
            self.scroll_to(y=self.cursor - page + 1, animate=False, force=True)
        self.refresh()

    def action_cursor_up(self) -> None:
        self._move(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self.cursor + 1)

    def action_toggle(self) -> None:
        if not self.rows:
            return
        uuid = self.rows[self.cursor].uuid
        if uuid in self.selected:
            self.selected.discard(uuid)
        else:
            self.selected.add(uuid)
        self.refresh()
        self.post_message(self.SelectionChanged(frozenset(self.selected)))

    def action_clear_selection(self) -> None:
        if self.selected:
            self.selected.clear()
            self.refresh()
            self.post_message(self.SelectionChanged(frozenset()))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        row = int(self.scroll_y) + offset.y - 1
        if row < len(self.rows):
            self.cursor = row
            self.action_toggle()

    # -- rendering ----------------------------------------------------------------------------

    _LAYOUT = ((" eng", 5), ("queue", 6), ("run", 5), ("done", 7), ("fail", 6))

    def render_lines(self, crop: Region) -> list[Strip]:
        self._base_style = self.rich_style  # walks the DOM: once per repaint, not once per line
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self._base_style if self._base_style is not None else self.rich_style
        style = self.get_component_rich_style
        if y == 0:
            header = style("engine-list--header")
            text = "  " + "".join(t.rjust(w) if i else t.ljust(w) for i, (t, w) in enumerate(self._LAYOUT))
            return Strip([Segment(text, header)]).adjust_cell_length(width, header)
        index = int(self.scroll_y) + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, base)
        r = self.rows[index]
        on_cursor = index == self.cursor and self.has_focus  # no cursor while the task table has the keys
        row_style = base + style("engine-list--cursor", partial=True) if on_cursor else base
        selected = r.uuid in self.selected
        sign = Segment("▶ " if selected else "  ", row_style + style("engine-list--selected", partial=True))
        dot_style = row_style + style("engine-list--alive" if r.alive else "engine-list--dead", partial=True)
        name = NO_ENGINE if r.uuid is None else (str(r.id) if r.id is not None else r.uuid[:4])
        name_style = row_style + style("engine-list--selected", partial=True) if selected else row_style
        (_, w_id), (_, w_q), (_, w_r), (_, w_d), (_, w_f) = self._LAYOUT
        dot = "●" if r.alive else ("○" if r.uuid is not None else " ")
        fail_style = row_style + style("engine-list--failed", partial=True) if r.failed else row_style
        segments = [
            sign,
            Segment(dot, dot_style),
            Segment(f" {name}".ljust(w_id - 1), name_style),
            Segment(_n(r.queued).rjust(w_q), row_style),
            Segment(_n(r.running).rjust(w_r), row_style),
            Segment(_n(r.done).rjust(w_d), row_style),
            Segment(_n(r.failed).rjust(w_f), fail_style),
        ]
        return Strip(segments).adjust_cell_length(width, row_style)

    def on_focus(self, event: events.Focus) -> None:
        self.refresh()

    def on_blur(self, event: events.Blur) -> None:
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self.size.width, len(self.rows) + 1)
