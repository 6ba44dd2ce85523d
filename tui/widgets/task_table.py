"""The task table: a line-API ScrollView over the store, never more rows in memory than the screen shows.

`virtual_size` is (columns width, 1 header line + store.count(where)); `render_line(y)` draws the header
on line 0 and row `scroll_y + y - 1` below it, from a small cached window fetched with `store.page()`.
The cursor is a msg_id first and an index second: after every store change the index is recomputed with
`store.position()`, so rows arriving above the cursor never move it (the view shifts with it instead).
Another filter, sort or pane keeps the cursor's task only when it lands within the first KEEP_DEPTH rows of
the new order; deeper (or gone), the cursor goes to the top. Finding a task's row costs an index walk as
long as its depth (~75 ms, plus as much again to read the rows there, at row 1M): a re-sort must not.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

from datasource.model import TaskRecord
from datasource.store import Filter, TaskStore, combine, view_ranges

from .. import format as fmt
from ..messages import SortRequested, TaskChosen, TaskHighlighted
from .virtual_size import set_virtual_size

__all__ = ["Column", "COLUMNS", "TaskTable"]


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # the store column it sorts by
    title: str
    width: int  # minimum width for the flexible (last) column
    align: str = "left"


COLUMNS: tuple[Column, ...] = (
    Column("msg_id", "task", 18),
    Column("state", "state", 11),
    Column("engine_id", "engine", 6, "right"),
    Column("label", "label", 14),
    Column("submitted", "submitted", 12, "right"),
    Column("duration", "duration", 11, "right"),
    Column("ename", "error", 20),
)
_GUTTER = 2  # mark sign + space
_GAP = 1  # between columns
_UNPAINTED = ("unpainted",)
_STATE_CLASSES = {
    "pending": "task-table--pending",
    "queued": "task-table--pending",
    "running": "task-table--running",
    "succeeded": "task-table--succeeded",
    "failed": "task-table--failed",
    "aborted": "task-table--aborted",
}


def _fit(text: str, width: int, align: str) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 0 else ""
    return text.rjust(width) if align == "right" else text.ljust(width)


class TaskTable(ScrollView, can_focus=True):
    """Tasks of the current view, sorted, paged from the store on demand."""

    DEFAULT_CSS = """
    TaskTable {
        background: $surface;
        color: $foreground;
        overflow-y: scroll;  /* always shown: no re-layout of the screen when a burst's rows bring a scrollbar */
        & > .task-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .task-table--header-sorted { text-style: bold underline; background: $panel; color: $accent; }
        & > .task-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .task-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .task-table--marked { background: $accent-muted; color: $text-accent; }
        & > .task-table--mark-sign { color: $accent; text-style: bold; }
        & > .task-table--pending { color: $warning; }
        & > .task-table--running { color: $primary; text-style: bold; }
        & > .task-table--succeeded { color: $success; }
        & > .task-table--failed { color: $error; text-style: bold; }
        & > .task-table--aborted { color: $text-muted; }
        & > .task-table--error-text { color: $error; }
        & > .task-table--dim { color: $text-muted; }
        & > .task-table--empty { color: $text-muted; text-style: italic; }
    }
    """

    COMPONENT_CLASSES = {
        "task-table--header",
        "task-table--header-sorted",
        "task-table--cursor",
        "task-table--marked",
        "task-table--mark-sign",
        "task-table--pending",
        "task-table--running",
        "task-table--succeeded",
        "task-table--failed",
        "task-table--aborted",
        "task-table--error-text",
        "task-table--dim",
        "task-table--empty",
    }

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("pageup", "page_up", "Page up", show=False, id="table.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="table.page_down"),
        Binding("home,g", "first", "First", show=False, id="table.first"),
        Binding("end,G", "last", "Last", show=False, id="table.last"),
        Binding("space", "toggle_mark", "Mark", id="table.mark"),
        Binding("enter", "choose", "Detail", id="table.detail"),
    ]

    cursor_row: var[int] = var(0, init=False)
    SYNC_ROWS = 50_000  # stores up to this many tasks are re-read on the UI thread; bigger ones in a worker
    KEEP_DEPTH = 10_000  # a new view keeps the cursor's task if it is within this many rows of the top
    HOLD = 0.15  # s: the screen waits at most this long for a new view's rows read in a worker (see reload)

    class ViewLoaded(Message):
        """A re-read done in a worker (internal)."""

        def __init__(self, token: int, request: tuple, result: dict) -> None:
            super().__init__()
            self.token, self.request, self.result = token, request, result

    class QueryFailed(Message):
        """The store could not run the view's filter (e.g. a function SQLite lacks): one line."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(
        self,
        store: TaskStore,
        *,
        now: Callable[[], datetime] | None = None,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.store = store
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.where: Filter | None = None
        self.sort = "submitted"
        self.descending = True
        self.marks: set[str] = set()
        self.cursor_id: str | None = None
        self.empty_text = "no tasks"
        self._target: tuple = (None, "submitted", True)  # (where, sort, descending) asked for
        self._asked: tuple | None = None  # (store version, target) of the last read started
        self._scroll_home = False
        self._pending: int | None = None  # token of the re-read running in a worker
        self._token = 0
        self.row_count = 0
        self._window_start = 0
        self._window: list[TaskRecord] = []
        self._window_valid = False
        self._widths: list[int] = [c.width for c in COLUMNS]
        self._base_style: Style | None = None
        self.fetches = 0  # pages read from the store (tests check that it stays small)
        # Called right after rows read in a worker are installed (the app counts only then: see
        # HubtopApp.refresh_views). A call, not a message: a message reaches the app after the screen has
        # painted the rows, and the counts cost a frame of their own (two per poll of a busy cluster).
        self.after_load: Callable[[], None] | None = None
        self._ages: tuple[tuple[str, str], ...] = ()  # (msg_id, "N min ago") of the rows last painted or looked at
        self._ages_at: datetime | None = None  # when that was
        self._painted: dict[int, tuple | None] = {}  # screen line -> the _line_key it was last drawn from
        self._installing = False
        self._held: tuple[AbstractContextManager, Timer] | None = None  # (App.batch_update() entered, its time limit)

    # -- data ---------------------------------------------------------------------------------

    def set_view(
        self,
        where: Filter | None,
        *,
        sort: str | None = None,
        descending: bool | None = None,
        cursor_id: str | None | bool = False,
    ) -> None:
        """Show another filter/sort. cursor_id: keep the current task (False) or go to this one (a pane's
        remembered task), either if it is within KEEP_DEPTH rows of the top of the new view, else the top;
        or the top (None). `move_to` finds a task at any depth (a jump the user asked for)."""
        self._target = (where, sort or self._target[1], self._target[2] if descending is None else descending)
        self._scroll_home = cursor_id is None
        if cursor_id is not False:
            self.cursor_id = cursor_id  # type: ignore[assignment]
            if cursor_id is None:
                self.cursor_row = 0
        self.reload(force=True)

    @property
    def requested_sort(self) -> tuple[str, bool]:
        """(column, descending) last asked for (the rows may still show the previous one while it loads)."""
        return self._target[1], self._target[2]

    @property
    def loading(self) -> bool:
        """A re-read runs in a worker (big stores): the rows shown are the previous ones until it lands."""
        return self._pending is not None

    def reload(self, *, force: bool = False) -> bool:
        """Re-read count, cursor position and visible rows if the store (or the view) changed.

        Small stores are re-read here (< 20 ms); above SYNC_ROWS tasks in a thread worker, so a filter
        that scans a million rows never blocks the keys: the previous rows stay until the new ones land.
        True if a re-read happened or started (not again for a store version and view already asked for)."""
        version = self.store.version
        query = self._target
        if not force and (version, query) == self._asked:
            return False
        self._asked = (version, query)  # read before the store is: a change during the read shows next time
        same_view = query == (self.where, self.sort, self.descending)
        request = (query, self.cursor_id, self.cursor_row, self._page_size(), self._scroll_home, same_view)
        self._scroll_home = False
        if self.row_count <= self.SYNC_ROWS and self.store.total <= self.SYNC_ROWS:
            self._pending = None
            try:
                self._install(request, self._read(request))
            finally:
                self._release_frames()  # a hold asked for ahead of this view (the filter bar) ends with it
        else:
            self._token += 1
            self._pending = self._token
            token = self._token
            if not same_view:
                self.hold_frames()
            self.run_worker(lambda: self._read_in_thread(token, request), thread=True, exclusive=True,
                            group="task-table", exit_on_error=False, description="read the task table")
        return True

    def _page_size(self) -> int:
        return max(self.scrollable_content_region.height, 10)

    def _read(self, request: tuple) -> dict:
        """count, cursor row and the window of rows around it (any thread: the store serialises)."""
        (where, sort, descending), cursor_id, old_row, page, _, same_view = request
        within = None if same_view else self.KEEP_DEPTH
        try:
            count = self.store.count(where)
            row = None
            if cursor_id:
                row = self.store.position(cursor_id, where, sort=sort, descending=descending, within=within)
            lost = row is None
            if lost:  # the task left this view (or there was none): same place in the same view, else the top
                row = min(old_row, max(0, count - 1)) if same_view else 0
            start = max(0, row - page * 2)
            window = self.store.page(where, sort=sort, descending=descending, offset=start, limit=page * 5, matches=count)
        except sqlite3.Error as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        if lost:
            cursor_id = window[row - start].msg_id if start <= row < start + len(window) else None
        return {"count": count, "row": row, "cursor_id": cursor_id, "start": start, "window": window}

    def hold_frames(self) -> None:
        """No frame until the next view's rows land (at most HOLD): a pane switch or a filter then shows its
        tabs, filter bar and rows in one frame, not the new tab over the old rows first (a whole extra frame,
        and a screen layout for the filter bar, ~15-35 ms each at 160x48 on a slow machine). Called by a
        view change read in a worker, and by whoever is about to ask for one (the filter bar)."""
        if self._held is not None:
            return  # the first request's time limit stands: a burst of keys never holds the screen longer
        batch = self.app.batch_update()
        batch.__enter__()
        self._held = (batch, self.set_timer(self.HOLD, self._release_frames, name="task-table hold"))

    def _release_frames(self) -> None:
        if self._held is not None:
            batch, timer = self._held
            self._held = None
            timer.stop()
            batch.__exit__(None, None, None)

    def on_unmount(self) -> None:
        self._release_frames()

    def _read_in_thread(self, token: int, request: tuple) -> None:
        self.post_message(self.ViewLoaded(token, request, self._read(request)))

    def on_task_table_view_loaded(self, message: "TaskTable.ViewLoaded") -> None:
        message.stop()
        if message.token != self._pending:
            return  # superseded by a newer request
        self._pending = None
        try:
            self._install(message.request, message.result)
            if self.after_load is not None:
                self.after_load()
        finally:
            self._release_frames()

    def _shape(self) -> tuple:
        """What every line of a repaint depends on: the view, the header, the geometry (not the vertical
        scroll: rows arriving above the cursor scroll the view with them, and every line draws what it drew)."""
        return (self.where, self.sort, self.descending, int(self.scroll_x), self.size, tuple(self._widths))

    def _line_key(self, y: int) -> tuple | None:
        """What screen line y (> 0) draws from, its "N s ago" cell aside (see repaint_ages)."""
        row = int(self.scroll_y) + y - 1
        if row >= self.row_count:
            return ("empty", self.empty_text) if self.row_count == 0 and y == 1 else None
        record = self._record(row)
        return (record, row == self.cursor_row, record is not None and record.msg_id in self.marks)

    def _repaint_changed_lines(self, shape: tuple) -> None:
        """Repaint what a re-read changed on screen. A busy cluster changes the count every poll (the scrollbar)
        and some of the rows; the lines that draw the same rows as before are not repainted (a full repaint of
        the table is most of a frame: ~45 lines of 7 cells each)."""
        height = self.scrollable_content_region.height
        if self._shape() == shape:
            changed = [y for y in range(1, height) if self._painted.get(y, _UNPAINTED) != self._line_key(y)]
            if len(changed) <= height // 2:
                for y in changed:
                    self.refresh(Region(0, y, self.size.width, 1))
                return
        self.refresh()
        self._ages_at = self.now()
        self._ages = self._visible_ages(self._ages_at)

    def _install(self, request: tuple, result: dict) -> None:
        query, _, _, _, scroll_home, _ = request
        if "error" in result:
            self._target = (self.where, self.sort, self.descending)
            self._asked = None
            self.post_message(self.QueryFailed(result["error"]))
            return
        old_row, old_scroll = self.cursor_row, int(self.scroll_y)
        shape = self._shape()
        same_view = query == (self.where, self.sort, self.descending)
        old_id = self.cursor_id
        self._installing = True  # the scrolls below repaint no line: _repaint_changed_lines does
        try:
            self.where, self.sort, self.descending = query
            self.row_count = result["count"]
            self._update_virtual_size(repaint=False)
            self._window_start, self._window, self._window_valid = result["start"], result["window"], True
            self.fetches += 1
            self.cursor_id = result["cursor_id"]
            row = result["row"]
            if scroll_home:
                self._scroll_y_to(0)
            elif same_view and row != old_row and self._row_visible(old_row, old_scroll):
                # Keep the cursor on the same screen line while rows arrive above it.
                self._scroll_y_to(old_scroll + (row - old_row))
            self.cursor_row = row
            self._scroll_cursor_visible()
        finally:
            self._installing = False
        self._repaint_changed_lines(shape)
        if self.cursor_id != old_id:
            self.post_message(TaskHighlighted(self.cursor_id))

    def _record(self, index: int) -> TaskRecord | None:
        if index < 0 or index >= self.row_count:
            return None
        start = self._window_start
        if not self._window_valid or not (start <= index < start + len(self._window)):
            page = max(self.scrollable_content_region.height, 10)
            start = max(0, index - page * 2)
            self._window = self._fetch(start, page * 5)
            self._window_start = start
            self._window_valid = True
            self.fetches += 1
            if not (start <= index < start + len(self._window)):
                return None  # the store shrank under us; the next reload() fixes the count
        return self._window[index - start]

    def _fetch(self, start: int, limit: int) -> list[TaskRecord]:
        """Rows [start, start+limit) of the view. Deep in a big view (`end` at a million rows) SQLite's
        OFFSET walks every row before `start`, so read from the far end in the mirrored order instead, range
        by range (the store's view_ranges: rows with a value, then the NULLs, which sort last both ways)."""
        where, sort, descending = self.where, self.sort, self.descending
        n = self.row_count
        if start <= 5_000 or n - start - limit >= start:
            return self.store.page(where, sort=sort, descending=descending, offset=start, limit=limit, matches=n)
        rows: list[TaskRecord] = []
        first = 0  # the view's row where the range begins
        sizes = self.store.range_sizes(where, sort, n)
        for (part, column), size in zip(view_ranges(sort), sizes):
            lo, hi = max(start, first) - first, min(start + limit, first + size) - first
            if lo < hi:
                mirrored = self.store.range_page(combine(where, part), column, not descending, offset=size - hi,
                                                 limit=hi - lo)
                rows += [record for _, record in reversed(mirrored)]
            first += size
        return rows

    def repaint_ages(self, every: float = 0.0) -> bool:
        """Repaint if a visible "N min ago" cell reads differently now (time moves on with no row changing);
        True if it did. Rows days old, or a few minutes old between two minute marks, repaint nothing; nor
        do rows painted or looked at less than `every` seconds ago (a busy cluster's rows are repainted at
        its polls, which keeps their ages that fresh: a repaint of its own would be one more frame)."""
        now = self.now()
        if self._ages_at is not None and 0 <= (now - self._ages_at).total_seconds() < every:
            return False  # (a wall clock stepped back looks again at once)
        self._ages_at = now
        ages = self._visible_ages(now)
        if ages == self._ages:
            return False
        self._ages = ages
        self.refresh()
        return True

    def _visible_ages(self, now: datetime) -> tuple[tuple[str, str], ...]:
        return tuple((r.msg_id, fmt.ago(r.submitted, now)) for r in self.visible_records())

    def visible_records(self) -> list[TaskRecord]:
        top = int(self.scroll_y)
        out = []
        for i in range(top, min(self.row_count, top + self._page_height())):
            rec = self._record(i)
            if rec is not None:
                out.append(rec)
        return out

    # -- geometry -----------------------------------------------------------------------------

    def _page_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _row_visible(self, row: int, scroll: int) -> bool:
        return scroll <= row < scroll + self._page_height()

    def _update_virtual_size(self, repaint: bool = True) -> None:
        set_virtual_size(self, Size(self._total_width(), self.row_count + 1), repaint=repaint)

    def _total_width(self) -> int:
        return _GUTTER + sum(self._widths) + _GAP * (len(self._widths) - 1)

    def _layout_columns(self) -> None:
        width = self.scrollable_content_region.width
        fixed = _GUTTER + sum(c.width for c in COLUMNS[:-1]) + _GAP * (len(COLUMNS) - 1)
        self._widths = [c.width for c in COLUMNS[:-1]] + [max(COLUMNS[-1].width, width - fixed)]
        self._update_virtual_size()

    def on_resize(self, event: events.Resize) -> None:
        # The window of records stays valid (rows by index; _record() reads what a taller view lacks). The
        # filter bar opening shrinks the table: re-reading here would hit the store on the UI thread while
        # the filter's own read holds its lock (1M: a 130 ms stall).
        self._layout_columns()
        self._scroll_cursor_visible()

    # -- cursor -------------------------------------------------------------------------------

    def _set_cursor_row(self, row: int, *, scroll_home: bool = False) -> None:
        row = max(0, min(row, self.row_count - 1)) if self.row_count else 0
        record = self._record(row)
        self.cursor_id = record.msg_id if record else None
        changed = row != self.cursor_row
        self.cursor_row = row
        if scroll_home:
            self._scroll_y_to(0)
        self._scroll_cursor_visible()
        if changed or scroll_home:
            self.post_message(TaskHighlighted(self.cursor_id))

    def _scroll_y_to(self, y: int) -> None:
        # now, not after the next frame (Textual's default): a frame of rows painted at the old scroll
        # position, then all of them again, is a flicker and a frame too many
        self.scroll_to(y=y, animate=False, force=True, immediate=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        if not self._installing:
            super().watch_scroll_y(old_value, new_value)  # the scrollbar, and every line repainted
        elif self.show_vertical_scrollbar:
            self.vertical_scrollbar.position = new_value  # _install repaints the lines that changed

    def _scroll_cursor_visible(self) -> None:
        top = int(self.scroll_y)
        page = self._page_height()
        if self.cursor_row < top:
            self._scroll_y_to(self.cursor_row)
        elif self.cursor_row >= top + page:
            self._scroll_y_to(self.cursor_row - page + 1)

    def move_to(self, msg_id: str) -> bool:
        """Put the cursor on this task if it is in the view."""
        row = self.store.position(msg_id, self.where, sort=self.sort, descending=self.descending)
        if row is None:
            return False
        self.cursor_id = msg_id
        self.cursor_row = row
        page = self._page_height()
        if not self._row_visible(row, int(self.scroll_y)):
            self._scroll_y_to(max(0, row - page // 2))
        self.refresh()
        self.post_message(TaskHighlighted(msg_id))
        return True

    def action_cursor_up(self) -> None:
        self._set_cursor_row(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self._set_cursor_row(self.cursor_row + 1)

    def action_page_up(self) -> None:
        page = self._page_height()
        self._scroll_y_to(max(0, int(self.scroll_y) - page))
        self._set_cursor_row(self.cursor_row - page)

    def action_page_down(self) -> None:
        page = self._page_height()
        self._scroll_y_to(int(self.scroll_y) + page)
        self._set_cursor_row(self.cursor_row + page)

    def action_first(self) -> None:
        self._set_cursor_row(0)

    def action_last(self) -> None:
        self._set_cursor_row(self.row_count - 1)

    def action_toggle_mark(self) -> None:
        if self.cursor_id is None:
            return
        if self.cursor_id in self.marks:
            self.marks.discard(self.cursor_id)
        else:
            self.marks.add(self.cursor_id)
        self._set_cursor_row(self.cursor_row + 1)
        self.refresh()

    def action_choose(self) -> None:
        if self.cursor_id is not None:
            self.post_message(TaskChosen(self.cursor_id))

    # -- mouse --------------------------------------------------------------------------------

    def _column_at(self, x: int) -> Column | None:
        left = _GUTTER
        for column, width in zip(COLUMNS, self._widths):
            if left <= x < left + width + _GAP:
                return column
            left += width + _GAP
        return None

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        event.stop()
        if offset.y == 0:
            column = self._column_at(offset.x + int(self.scroll_x))
            if column is not None:
                self.post_message(SortRequested(column.key))
            return
        row = int(self.scroll_y) + offset.y - 1
        if row >= self.row_count:
            return
        if row == self.cursor_row and self.has_focus:
            self.action_choose()  # like DataTable: a click on the highlighted row opens it
            return
        self._set_cursor_row(row)

    # -- rendering ----------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        self._base_style = self.rich_style  # walks the DOM: once per repaint, not once per line
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x = self.scroll_offset.x
        width = self.scrollable_content_region.width
        base = self._base_style if self._base_style is not None else self.rich_style
        if y == 0:
            strip = self._header_strip(base)
        else:
            key = self._painted[y] = self._line_key(y)
            if key is None:
                strip = Strip.blank(0, base)
            elif key[0] == "empty":
                strip = self._empty_strip(base)
            else:
                record, is_cursor, _ = key
                strip = self._row_strip(record, is_cursor, base) if record else Strip.blank(0, base)
        total = max(width, self._total_width())
        return strip.adjust_cell_length(total, base).crop(scroll_x, scroll_x + width)

    def _header_strip(self, base: Style) -> Strip:
        header = self.get_component_rich_style("task-table--header")
        sorted_style = self.get_component_rich_style("task-table--header-sorted")
        segments = [Segment(" " * _GUTTER, header)]
        for i, (column, width) in enumerate(zip(COLUMNS, self._widths)):
            title = column.title
            style = header
            if column.key == self.sort:
                title = f"{title} {'▼' if self.descending else '▲'}"
                style = sorted_style
            segments.append(Segment(_fit(title, width, column.align), style))
            if i < len(COLUMNS) - 1:
                segments.append(Segment(" " * _GAP, header))
        return Strip(segments).adjust_cell_length(max(self._total_width(), self.size.width), header)

    def _empty_strip(self, base: Style) -> Strip:
        return Strip([Segment("  " + self.empty_text, base + self.get_component_rich_style("task-table--empty", partial=True))])

    def _cells(self, r: TaskRecord) -> list[str]:
        state = r.state.value + (" ↻" if r.resubmitted else "")
        engine = "" if r.engine_id is None else str(r.engine_id)
        return [
            fmt.short_id(r.msg_id, self._widths[0]),
            state,
            engine,
            r.label or "",
            fmt.ago(r.submitted, self.now()),
            fmt.duration(r.duration),
            fmt.error_text(r.ename, r.evalue),
        ]

    def _row_strip(self, r: TaskRecord, is_cursor: bool, base: Style) -> Strip:
        partial = self.get_component_rich_style
        marked = r.msg_id in self.marks
        row_style = base
        if marked:
            row_style = base + partial("task-table--marked", partial=True)
        if is_cursor:
            row_style = row_style + partial("task-table--cursor", partial=True)
        sign = Segment("● " if marked else "  ", row_style + partial("task-table--mark-sign", partial=True))
        segments = [sign]
        cells = self._cells(r)
        last = len(COLUMNS) - 1
        for i, (column, width, text) in enumerate(zip(COLUMNS, self._widths, cells)):
            style = row_style
            if not is_cursor:
                if column.key == "state":
                    style = row_style + partial(_STATE_CLASSES.get(r.state.value, "task-table--dim"), partial=True)
                elif column.key == "ename" and text:
                    style = row_style + partial("task-table--error-text", partial=True)
                elif column.key in ("submitted", "engine_id"):
                    style = row_style + partial("task-table--dim", partial=True)
            segments.append(Segment(_fit(text, width, column.align), style))
            if i < last:
                segments.append(Segment(" " * _GAP, row_style))
        return Strip(segments)

    def watch_cursor_row(self, old: int, new: int) -> None:
        # the cursor's old and new lines; a scroll that comes with the move repaints the rest (ScrollView)
        if self._installing:
            return  # _install compares every line
        top = int(self.scroll_y)
        for row in (old, new):
            if self._row_visible(row, top):
                self.refresh(Region(0, row - top + 1, self.size.width, 1))
