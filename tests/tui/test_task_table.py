"""The line-API task table on its own (a tiny app over a real TaskStore), and the cell formatting."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone

import pytest
from fakes import T0, FakeSource, make_record

from datasource.model import State
from datasource.sources.base import Delta
from datasource.store import TaskStore, pane_filter
from textual.app import App, ComposeResult
from tui import format as fmt
from tui.messages import SortRequested, TaskChosen
from tui.widgets.task_table import TaskTable

NOW = T0 + timedelta(hours=1)


def loaded_store(n: int) -> tuple[TaskStore, FakeSource]:
    store, source = TaskStore(), FakeSource(n, chunk=50_000)
    for delta in source.sync():
        store.apply(delta)
    return store, source


class TableApp(App[None]):
    def __init__(self, store: TaskStore) -> None:
        super().__init__()
        self.store = store
        self.messages: list[object] = []

    def compose(self) -> ComposeResult:
        yield TaskTable(self.store, now=lambda: NOW, id="t")

    def on_mount(self) -> None:
        table = self.query_one(TaskTable)
        table.set_view(None, cursor_id=None)
        table.focus()

    def on_sort_requested(self, message: SortRequested) -> None:
        self.messages.append(message)

    def on_task_chosen(self, message: TaskChosen) -> None:
        self.messages.append(message)


def line_text(table: TaskTable, y: int) -> str:
    table._base_style = table.rich_style
    return table.render_line(y).text


async def test_header_and_rows_render_humanized_cells() -> None:
    store, source = loaded_store(50)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        header = line_text(table, 0)
        for title in ("task", "state", "engine", "label", "submitted ▼", "duration", "error"):
            assert title in header
        newest = make_record(49)  # failed? no: 49 % 20 == 9 -> succeeded
        first = line_text(table, 1)
        assert fmt.short_id(newest.msg_id, 18) in first
        assert "succeeded" in first and "59 min ago" in first and fmt.duration(newest.duration) in first
        failed = next(r for r in store.page(pane_filter("failed"), limit=1))
        table.set_view(pane_filter("failed"), cursor_id=None)
        await pilot.pause()
        assert f"{failed.ename}: {failed.evalue}" in line_text(table, 1)


async def test_rows_added_above_keep_cursor_and_screen_line() -> None:
    store, source = loaded_store(300)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        await pilot.press("pagedown", "down", "down")
        cursor, row, line = table.cursor_id, table.cursor_row, table.cursor_row - int(table.scroll_y)
        store.apply(Delta(upserts=[make_record(i) for i in range(300, 340)]))
        assert table.reload()
        assert table.cursor_id == cursor and table.cursor_row == row + 40
        assert table.cursor_row - int(table.scroll_y) == line
        assert not table.reload()  # same store version: nothing re-read


async def test_header_click_asks_to_sort_and_click_on_cursor_row_opens_it() -> None:
    store, _ = loaded_store(30)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        await pilot.click(TaskTable, offset=(2 + 18 + 1 + 2, 0))  # the "state" header
        await pilot.pause()
        assert [m.column for m in app.messages if isinstance(m, SortRequested)] == ["state"]
        await pilot.click(TaskTable, offset=(5, 3))  # third row: moves the cursor
        await pilot.pause()
        assert table.cursor_row == 2
        await pilot.click(TaskTable, offset=(5, 3))  # again: opens it
        await pilot.pause()
        assert [m.msg_id for m in app.messages if isinstance(m, TaskChosen)] == [table.cursor_id]


async def test_marks_are_msg_ids_and_survive_sorting() -> None:
    store, _ = loaded_store(60)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        await pilot.press("space", "space")
        marked = set(table.marks)
        assert len(marked) == 2 and table.cursor_row == 2
        assert line_text(table, 1).startswith("● ")
        table.set_view(None, sort="label", descending=False)
        await pilot.pause()
        assert table.marks == marked


async def test_100k_rows_hold_only_a_window_of_records() -> None:
    store, _ = loaded_store(100_000)
    app = TableApp(store)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        assert table.row_count == 100_000
        assert table.virtual_size.height == 100_001
        page = table._page_height()
        start = time.perf_counter()
        for _ in range(50):
            await pilot.press("pagedown")
        await pilot.press("end")
        await pilot.pause()
        assert time.perf_counter() - start < 10
        assert table.cursor_row == 99_999
        assert len(table._window) <= 5 * (page + 1)
        assert table.fetches < 30
        for sort in ("duration", "label", "engine_id", "msg_id", "state"):
            table.set_view(None, sort=sort, descending=True)
            assert table.loading  # 100k rows: re-read in a worker, the old rows stay meanwhile
            while table.loading:
                await pilot.pause(0.02)
            assert table.sort == sort
            await pilot.press("end")
            await pilot.pause()
            assert table.cursor_row == 99_999


@pytest.mark.parametrize(
    "seconds, text",
    [(0.0123, "12 ms"), (3.456, "3.46 s"), (42.0, "42.0 s"), (75, "1 min 15 s"), (7300, "2 h 1 min"), (None, "")],
)
def test_duration(seconds, text) -> None:
    assert fmt.duration(seconds) == text


def test_ago_thousands_size_short_id() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    assert fmt.ago(now - timedelta(seconds=0.5), now) == "just now"
    assert fmt.ago(now - timedelta(seconds=42), now) == "42 s ago"
    assert fmt.ago(now - timedelta(minutes=3, seconds=5), now) == "3 min ago"
    assert fmt.ago(now - timedelta(hours=5), now) == "5 h ago"
    assert fmt.ago(now - timedelta(days=2), now) == "2 d ago"
    assert fmt.ago(now + timedelta(minutes=3), now) == "in 3 min"
    assert fmt.thousands(1234567) == "1,234,567"
    assert fmt.size(1536) == "1.5 KiB" and fmt.size(12) == "12 B"
    assert fmt.short_id("5deda029-43d49071a4a325876b0699f2_20037_0", 16) == "5deda029…20037_0"
    assert fmt.short_id("short_1_2", 16) == "short_1_2"
    assert fmt.error_text("ValueError", "bad\nvalue") == "ValueError: bad"
    assert fmt.error_text("ValueError", "bad\nvalue", whole=True) == "ValueError: bad\nvalue"
    assert fmt.error_text("TaskTimeout", "") == "TaskTimeout" and fmt.error_text(None, "lost") == "lost"
    assert fmt.age_seconds(0.42) == "<1 s" and fmt.age_seconds(4.9) == "4 s" and fmt.age_seconds(130) == "2 min"


@pytest.mark.parametrize("sort", ["submitted", "duration", "label", "msg_id", "state", "engine_id", "ename", "completed"])
@pytest.mark.parametrize("descending", [True, False])
async def test_deep_rows_read_from_the_other_end_are_the_same_rows(sort: str, descending: bool) -> None:
    store, _ = loaded_store(12_000)  # duration/label/engine_id have NULLs (pending tasks): the OFFSET path
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        table.set_view(None, sort=sort, descending=descending)
        await pilot.pause()
        for start in (0, 6_000, 10_780, 11_900, 11_990):  # 10,780: across the NULL durations (pending)
            got = [r.msg_id for r in table._fetch(start, 60)]
            want = [r.msg_id for r in store.page(None, sort=sort, descending=descending, offset=start, limit=60)]
            assert got == want, (sort, descending, start)
        done = ("state IN (?, ?, ?)", ("succeeded", "failed", "aborted"))  # no NULL durations: the mirror path
        table.set_view(done, sort="duration", descending=descending)
        await pilot.pause()
        n = store.count(done)
        got = [r.msg_id for r in table._fetch(n - 50, 60)]
        assert got == [r.msg_id for r in store.page(done, sort="duration", descending=descending, offset=n - 50, limit=60)]


async def test_new_sort_keeps_a_task_near_the_top_and_sends_a_deep_cursor_home() -> None:
    store, _ = loaded_store(400)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        table.KEEP_DEPTH = 200
        await pilot.press("down", "down", "down")
        deep = store.position(table.cursor_id, None, sort="submitted", descending=False)
        assert deep == 396
        table.set_view(None, sort="submitted", descending=False)  # oldest first: the cursor's task lands deep
        await pilot.pause()
        assert table.sort == "submitted" and table.cursor_row == 0 and int(table.scroll_y) == 0
        assert table.cursor_id == store.page(None, sort="submitted", descending=False, limit=1)[0].msg_id
        await pilot.press(*["down"] * 5)
        kept = table.cursor_id
        near = store.position(kept, None, sort="msg_id", descending=False)
        assert near == 345
        table.KEEP_DEPTH = 400
        table.set_view(None, sort="msg_id", descending=False)
        await pilot.pause()
        assert table.cursor_id == kept and table.cursor_row == near
        # a pane's remembered task: the same rule
        table.KEEP_DEPTH = 200
        newest = store.page(None, sort="submitted", descending=True, limit=1)[0].msg_id
        table.set_view(None, sort="submitted", descending=False, cursor_id=newest)
        await pilot.pause()
        assert table.cursor_row == 0 and table.cursor_id != newest
        # a jump the user asked for (the detail screen's lineage, `select_task`): found at any depth
        assert table.move_to(newest)
        await pilot.pause()
        assert table.cursor_id == newest and table.cursor_row == 399


async def test_a_filter_hiding_the_cursor_task_starts_at_the_top_and_polls_keep_the_place() -> None:
    store, _ = loaded_store(400)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        await pilot.press(*["down"] * 30)
        assert table.cursor_row == 30
        reads = table.fetches
        table.set_view(pane_filter("failed"))  # the cursor's task (succeeded) is not in it
        await pilot.pause()
        assert table.cursor_row == 0 and table.fetches == reads + 1
        assert table.reload() is False  # the same view at the same store version: not read twice
        await pilot.press(*["down"] * 7)
        gone = table.cursor_id
        store.apply(Delta(removed=[gone]))
        assert table.reload() is True
        await pilot.pause()
        assert table.cursor_row == 7 and table.cursor_id != gone  # same view: the same place


async def test_a_reload_repaints_only_the_lines_whose_rows_changed(painted_lines) -> None:
    """A busy cluster's poll moves the engines' counts (the store's version), the count (rows out of view)
    and some visible rows: only the lines that draw another row than before are repainted."""
    from datasource.model import Engine

    store, _ = loaded_store(50)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        painted = painted_lines(TaskTable)
        version = store.version
        store.apply(Delta(engines=[Engine(uuid="e-new", id=99, alive=True, completed=1)]))
        assert store.version > version and table.reload() is True
        await pilot.pause()
        assert painted == []  # re-read, nothing drawn changed
        third = table.visible_records()[2]
        old = dataclasses.replace(make_record(60), submitted=T0 - timedelta(hours=1))  # sorts last: out of view
        done = dataclasses.replace(third, state=State.ABORTED)
        store.apply(Delta(upserts=[old, done]))
        assert table.reload() is True
        await pilot.pause()
        assert table.row_count == 51 and painted == [3]  # row 2 is drawn on line 3 (line 0: the header)
        assert "aborted" in line_text(table, 3)
        painted.clear()
        await pilot.press("down")  # the cursor moves: its old and new lines
        assert sorted(painted) == [1, 2]
        painted.clear()
        newest = dataclasses.replace(make_record(70), state=State.PENDING)
        store.apply(Delta(upserts=[newest]))  # a new row above the cursor: the view scrolls with the cursor...
        table.reload()
        await pilot.pause()
        assert (table.cursor_row, int(table.scroll_y)) == (2, 1)
        assert painted == []  # ...and every line draws the row it drew
        await pilot.press("home")
        assert newest.msg_id[-7:] in line_text(table, 1) and len(painted) >= 18


async def test_a_reload_that_repaints_the_rows_puts_off_the_age_repaint(painted_lines) -> None:
    """Rows a reload repaints show their ages as of then: `repaint_ages(every=...)` waits that long after it,
    so the table of a busy cluster (repainted at its polls) is not painted once more for its ages."""
    store, _ = loaded_store(50)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        clock = [T0 + timedelta(seconds=60)]  # the newest rows are seconds old: their ages move every second
        table.now = lambda: clock[0]
        shown = table.visible_records()  # a poll that changes every row on screen: all are repainted
        store.apply(Delta(upserts=[dataclasses.replace(r, state=State.ABORTED) for r in shown]))
        assert table.reload()
        await pilot.pause()
        assert "11 s ago" in line_text(table, 1)  # the top row (_49)
        painted = painted_lines(TaskTable)
        clock[0] += timedelta(seconds=2)
        assert table.repaint_ages(every=5.0) is False
        await pilot.pause()
        assert painted == []
        clock[0] += timedelta(seconds=3)
        assert table.repaint_ages(every=5.0) is True
        await pilot.pause()
        assert painted and "16 s ago" in line_text(table, 1)
        clock[0] -= timedelta(minutes=1)  # the wall clock stepped back: "in 44 s" now, shown at once
        assert table.repaint_ages(every=5.0) is True


async def test_ages_repaint_only_when_one_reads_differently(painted_lines) -> None:
    """Every AGE_REPAINT the app asks the table to repaint its "N min ago" cells: a table of rows whose ages
    read the same as on screen repaints nothing (an hour-old history, or days old, most of the time)."""
    store, _ = loaded_store(50)
    app = TableApp(store)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(TaskTable)
        clock = [NOW]
        table.now = lambda: clock[0]
        table.repaint_ages()
        await pilot.pause()
        painted = painted_lines(TaskTable)
        shown = [r.submitted for r in table.visible_records()]
        clock[0] = NOW + timedelta(seconds=1)
        assert [fmt.ago(t, NOW) for t in shown] == [fmt.ago(t, clock[0]) for t in shown]
        assert table.repaint_ages() is False
        await pilot.pause()
        assert painted == []
        clock[0] = NOW + timedelta(hours=1)  # "59 min ago" -> "1 h ago"
        assert table.repaint_ages() is True
        await pilot.pause()
        assert painted and "1 h ago" in line_text(table, 1)
