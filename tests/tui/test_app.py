"""The main screen driven by Pilot over FakeSource + a real TaskStore (deterministic clocks, polls by hand)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from fakes import ENGINE_UUIDS, FakeSource, make_record

from datasource.model import State
from datasource.sources.base import Delta
from datasource.store import pane_filter
from tui.app import failure_summary
from tui.widgets.engine_list import NO_ENGINE, EngineList
from tui.widgets.filter_bar import FilterBar
from tui.widgets.pane_tabs import PaneTabs
from tui.widgets.status_bar import StatusBar
from tui.widgets.task_table import TaskTable

from .conftest import SIZE


def tab_label(app, pane: str) -> str:
    return app.screen_main().query_one(PaneTabs).get_tab(f"pane-{pane}").label.plain


def status(app) -> str:
    return app.screen_main().query_one(StatusBar).text


def table(app) -> TaskTable:
    return app.screen_main().query_one(TaskTable)


async def started(app, pilot) -> None:
    await app.poll_once()
    await pilot.pause()


async def settled(app, pilot) -> None:
    """Let key handlers run, then wait for the counts computed off the UI thread."""
    await pilot.pause()
    await app.settle()
    await pilot.pause()


def count_layouts(monkeypatch) -> list[str]:
    """The widgets that ask for a re-layout of the screen from now on (their class names)."""
    from textual.widget import Widget

    layouts: list[str] = []
    refresh = Widget.refresh

    def counting(self, *args, layout: bool = False, **kwargs):
        if layout:
            layouts.append(type(self).__name__)
        return refresh(self, *args, layout=layout, **kwargs)

    monkeypatch.setattr(Widget, "refresh", counting)
    return layouts


def add_records(source: FakeSource, start: int, count: int) -> list[str]:
    """New tasks submitted after every existing one (they sort above the cursor, newest first)."""
    ids = []
    for i in range(start, start + count):
        rec = make_record(i)
        source.records[rec.msg_id] = rec
        ids.append(rec.msg_id)
    return ids


async def test_tab_labels_show_counts_with_thousands_separators(make_test_app) -> None:
    app, source = make_test_app(n=2_400)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        counts = app.store.counts()
        assert counts["all"] == 2_400
        assert tab_label(app, "all") == "6 All 2,400"
        assert tab_label(app, "failed") == f"3 Failed {counts['failed']:,}"
        assert tab_label(app, "pending") == f"1 Pending {counts['pending']:,}"
        assert tab_label(app, "succeeded") == f"2 Succeeded {counts['succeeded']:,}"
        assert "2,400 tasks" in status(app)
        assert app.title == "hubtop · fake · Hub DB sqlite · engines 4/4"
        assert app.sub_title == "fake source"


async def test_digits_switch_panes_and_the_table_follows(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert app.current_pane == "pending"
        await pilot.press("3")
        await pilot.pause()
        assert app.current_pane == "failed"
        rows = table(app).visible_records()
        assert rows and all(r.state is State.FAILED for r in rows)
        assert table(app).row_count == app.store.count(pane_filter("failed"))
        await pilot.press("6")
        await pilot.pause()
        assert app.current_pane == "all"
        assert table(app).row_count == 200
        # each pane remembers its cursor
        await pilot.press("down", "down")
        kept = app.cursor_id()
        await pilot.press("3", "6")
        await pilot.pause()
        assert app.cursor_id() == kept


async def test_sort_keys_and_header_clicks(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("6")
        t = table(app)
        assert (t.sort, t.descending) == ("submitted", True)
        times = [r.submitted for r in t.visible_records()]
        assert times == sorted(times, reverse=True)
        await pilot.press("s")  # next column after submitted: duration (descending by default)
        await pilot.pause()
        assert (t.sort, t.descending) == ("duration", True)
        await pilot.press("S")
        await pilot.pause()
        assert t.descending is False
        durations = [r.duration for r in t.visible_records() if r.duration is not None]
        assert durations == sorted(durations)
        # click the "label" header: sort by label ascending; click again: descending
        x = t.region.x + 2 + 18 + 1 + 11 + 1 + 6 + 1 + 2  # gutter, task, state, engine columns
        await pilot.click(offset=(x, t.region.y))
        await pilot.pause()
        assert (t.sort, t.descending) == ("label", False)
        labels = [r.label for r in t.visible_records() if r.label is not None]
        assert labels == sorted(labels)
        await pilot.click(offset=(x, t.region.y))
        await pilot.pause()
        assert (t.sort, t.descending) == ("label", True)


async def test_cursor_and_marks_survive_rows_added_above(make_test_app) -> None:
    app, source = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("6", "down", "down", "space", "space", "down")
        await pilot.pause()
        t = table(app)
        cursor, row, screen_line = app.cursor_id(), t.cursor_row, t.cursor_row - int(t.scroll_y)
        marked = app.marked_ids()
        assert len(marked) == 2 and cursor not in marked
        add_records(source, 200, 15)  # newer than everything: above the cursor
        await started(app, pilot)
        assert t.row_count == 215
        assert app.cursor_id() == cursor
        assert t.cursor_row == row + 15
        assert t.cursor_row - int(t.scroll_y) == screen_line  # the view moved with the cursor
        assert app.marked_ids() == marked
        assert "2 marked" in status(app)
        # a task that changes state (moves to another pane) keeps its mark
        first = marked[0]
        source.records[first] = replace(source.records[first], state=State.ABORTED)
        await started(app, pilot)
        assert first in app.marked_ids()
        app.clear_marks()
        assert app.marked_ids() == []


async def test_a_polls_counts_show_with_its_rows_and_a_scanning_filter_counts_in_a_thread(make_test_app) -> None:
    """Counts the store's aggregate answers are shown by the poll's own handling (the same frame as the rows);
    a filter that scans the store is counted in a worker, so the keys never wait for it."""
    import asyncio

    app, source = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        workers: list[tuple] = []
        real = app._aggregates_worker
        app._aggregates_worker = lambda *a: (workers.append(a), real(*a))  # type: ignore[method-assign]
        add_records(source, 200, 15)
        outcome = await asyncio.wrap_future(app.poller.submit())
        app._after_poll(outcome)
        assert tab_label(app, "all") == "6 All 215"
        assert workers == []
        app.set_filter("label:fit-model")
        await settled(app, pilot)
        assert len(workers) == 1 and tab_label(app, "all").startswith("6 All ")


async def test_leaving_a_filter_stops_its_count_scan(make_test_app, monkeypatch) -> None:
    """A filter's count scan holds the store (1M tasks: 45 ms to 2 s); a new filter stops it, so the new
    view's rows and counts do not wait for counts nobody will see. The scan stands in for one: it holds
    the store's lock until told to stop (or 10 s)."""
    from datasource.store import ScanCancelled

    app, source = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        store = app.store
        real = store.counts
        scanning, stopped = threading.Event(), threading.Event()

        def slow_counts(where=None, cancelled=None):
            if "fit-2" in where[1]:
                with store._lock:
                    scanning.set()
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        if cancelled is not None and cancelled():
                            stopped.set()
                            raise ScanCancelled("stopped")
                        time.sleep(0.002)
            return real(where, cancelled)

        monkeypatch.setattr(store, "counts", slow_counts)
        app.set_filter("label:fit-2")
        await pilot.pause()
        deadline = time.monotonic() + 5
        while not scanning.is_set() and time.monotonic() < deadline:
            await pilot.pause(0.01)
        assert scanning.is_set()
        start = time.monotonic()
        app.set_filter("label:fit-1")
        await settled(app, pilot)
        assert stopped.is_set() and time.monotonic() - start < 5
        fit1 = sum(r.label == "fit-1" for r in source.records.values())
        assert tab_label(app, "all") == f"6 All {fit1}"


async def test_a_filter_counted_slower_than_the_polls_still_shows_its_counts(make_test_app, monkeypatch) -> None:
    """Counting a filter at 1M tasks can take longer than the poll interval: a count under way for the same
    view is let finish and shown, then the view is counted again at the store's new version. (Restarted at
    every poll, the counts never landed.) Each count here lasts until the next poll has changed the store."""
    import asyncio

    app, source = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        store = app.store
        real = store.counts
        slow = [True]
        counted: list[int] = []

        def slower_than_a_poll(where=None, cancelled=None):
            version = store.version
            deadline = time.monotonic() + 10
            while slow[0] and store.version == version and time.monotonic() < deadline:
                time.sleep(0.002)
            counted.append(version)
            return real(where, cancelled)

        monkeypatch.setattr(store, "counts", slower_than_a_poll)
        app.set_filter("label:fit-1")
        await pilot.pause()
        shown: list[str] = []
        for i in range(3):
            add_records(source, 200 + 4 * i, 4)  # one fit-1 task each poll (200, 204, 208: labelled)
            outcome = await asyncio.wrap_future(app.poller.submit())
            app._after_poll(outcome)
            for _ in range(50):
                await pilot.pause(0.01)
            shown.append(tab_label(app, "all"))
        fit1 = sum(r.label == "fit-1" for r in source.records.values())
        assert shown[0].startswith("6 All ") and shown[0] != "6 All 200", shown  # the filter's counts landed
        slow[0] = False
        await settled(app, pilot)
        assert tab_label(app, "all") == f"6 All {fit1}"
        assert len(counted) <= 5, counted  # not one scan per poll piling up behind the store's lock


async def test_rows_read_in_a_worker_and_their_counts_land_together(make_test_app, monkeypatch) -> None:
    """A big store's rows are read in a worker; the counts are shown as those rows are installed, in the same
    handling (not by a message that arrives after the screen painted the rows)."""
    import asyncio

    monkeypatch.setattr(TaskTable, "SYNC_ROWS", 0)  # every re-read in a worker
    app, source = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        t = table(app)
        seen: list[tuple[int, str]] = []
        after_load = t.after_load
        assert after_load is not None

        def installed() -> None:
            after_load()
            seen.append((t.row_count, tab_label(app, "all")))

        t.after_load = installed
        add_records(source, 200, 15)
        outcome = await asyncio.wrap_future(app.poller.submit())
        app._after_poll(outcome)
        assert t.loading  # the rows are being read in a worker
        await settled(app, pilot)
        assert seen and seen[-1][1] == "6 All 215"  # counted when the rows were installed


async def test_cursor_stays_when_its_task_leaves_the_pane(make_test_app) -> None:
    app, source = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("down", "down")  # pending pane
        t = table(app)
        row, gone = t.cursor_row, app.cursor_id()
        rec = source.records[gone]
        source.records[gone] = replace(rec, state=State.SUCCEEDED, started=rec.submitted, completed=rec.submitted + timedelta(seconds=1))
        await started(app, pilot)
        assert app.cursor_id() != gone
        assert t.cursor_row == row  # same place, next task


async def test_engine_selection_filters_every_pane(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        engines = app.screen_main().query_one(EngineList)
        await pilot.press("e")
        assert engines.has_focus
        await pilot.press("down", "down", "space")  # engine 2
        await settled(app, pilot)
        uuid = engines.rows[2].uuid
        assert engines.selected == {uuid}
        await pilot.press("6")
        await pilot.pause()
        rows = table(app).visible_records()
        assert rows and all(r.engine_uuid == uuid for r in rows)
        expected = app.store.counts(("engine_uuid = ?", (uuid,)))
        assert tab_label(app, "all") == f"6 All {expected['all']:,}"
        assert tab_label(app, "failed") == f"3 Failed {expected['failed']:,}"
        assert f"{expected['all']} of 200 tasks match" in status(app)
        await pilot.press("e")
        assert table(app).has_focus
        await pilot.press("escape")  # no filter: escape clears the engine selection
        await settled(app, pilot)
        assert engines.selected == set()
        assert tab_label(app, "all") == "6 All 200"


async def test_filter_bar_valid_query_applies_on_enter(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        bar = app.screen_main().query_one(FilterBar)
        await pilot.press("slash")
        assert bar.input.has_focus
        await pilot.press(*"label:fit-1", "enter")
        await settled(app, pilot)
        assert app.filter_text == "label:fit-1"
        assert table(app).has_focus
        expected = app.store.counts(("label = ?", ("fit-1",)))
        assert tab_label(app, "all") == f"6 All {expected['all']:,}"
        await pilot.press("6")
        await pilot.pause()
        assert {r.label for r in table(app).visible_records()} == {"fit-1"}
        await pilot.press("escape")  # clears the filter
        await settled(app, pilot)
        assert app.filter_text == ""
        assert tab_label(app, "all") == "6 All 200"


async def test_filter_bar_invalid_query_shows_the_error_inline(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        bar = app.screen_main().query_one(FilterBar)
        await pilot.press("slash", *"state:bogus")
        await pilot.pause()
        assert bar.error is not None and "bogus" in bar.error
        error_line = str(bar.query_one("#filter-error").render())
        assert error_line.startswith(" " * 6 + "^ ")  # the caret under the bad value (column 7)
        await pilot.press("enter")  # refused: stays in the bar, nothing applied
        await pilot.pause()
        assert bar.input.has_focus
        assert app.filter_text == ""
        assert tab_label(app, "all") == "6 All 200"
        await pilot.press("escape")
        await pilot.pause()
        assert not bar.has_class("-active")


async def test_filter_applies_live_after_a_pause_in_typing(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("slash", *"state:failed")
        await pilot.pause(0.5)
        await settled(app, pilot)
        assert app.filter_text == "state:failed"
        assert tab_label(app, "all") == "6 All 20"


async def test_status_line_goes_stale_while_retrying_then_reconnects(make_test_app, clock) -> None:
    app, source = make_test_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await started(app, pilot)
        assert status(app).startswith("● connected")
        clock.advance(3)
        source.fail_next = 2
        await started(app, pilot)
        text = status(app)
        assert "retrying in 2 s" in text and "stale" in text and "updated 3 s ago" in text
        assert tab_label(app, "all") == "6 All 200"  # the last data stays
        assert app.notices[-1][0] == "error" and app.notices[-1][1].startswith("connection lost")
        clock.advance(2)
        await started(app, pilot)  # fails again: no second toast
        assert "retrying in 4 s" in status(app)
        assert sum(1 for _, m in app.notices if m.startswith("connection lost")) == 1
        clock.advance(4)
        await started(app, pilot)
        assert status(app).startswith("● connected")
        assert app.notices[-1] == ("information", "reconnected")


async def test_a_burst_of_failures_raises_one_notification(make_test_app, clock) -> None:
    app, source = make_test_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await started(app, pilot)
        before = len(app.notices)
        pending = [r for r in source.records.values() if r.state is State.PENDING][:12]
        for i, rec in enumerate(pending):
            ename = "ValueError" if i < 9 else "KeyError"
            source.records[rec.msg_id] = replace(rec, state=State.FAILED, ename=ename, evalue="boom",
                                                 started=rec.submitted, completed=rec.submitted + timedelta(seconds=2))
        await started(app, pilot)
        new = app.notices[before:]
        assert new == [("warning", "12 new failures: ValueError ×9, KeyError ×3")]
        assert len(app._notifications) >= 1
        # a trickle right after: gathered quietly, reported once when the quiet period is over
        for burst in range(3):
            rec = [r for r in source.records.values() if r.state is State.PENDING][0]
            source.records[rec.msg_id] = replace(rec, state=State.FAILED, ename="OSError", evalue="disk",
                                                 started=rec.submitted, completed=rec.submitted + timedelta(seconds=1))
            clock.advance(1)
            await started(app, pilot)
        assert app.notices[before + 1:] == []
        clock.advance(10)
        await started(app, pilot)
        assert app.notices[before + 1:] == [("warning", "3 new failures: OSError ×3")]


def test_failure_summary_names_the_three_most_common() -> None:
    text = failure_summary(["A"] * 3 + ["B"] * 2 + ["C", "D", None], 8)
    assert text == "8 new failures: A ×3, B ×2, C ×1, …"
    assert failure_summary(["KeyError"], 1) == "1 new failure: KeyError ×1"


async def test_first_paint_before_any_data_and_loading_progress(make_test_app) -> None:
    app, source = make_test_app(n=30_000)
    source.chunk = 10_000
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "loading tasks" in table(app).empty_text
        assert tab_label(app, "all") == "6 All 0"
        # apply the first chunk by hand, as the poll thread would, and let the UI tick pick it up
        gen = source.sync()
        app.store.apply(next(gen))
        app.poller._loading_progress()
        await pilot.pause(0.4)
        await settled(app, pilot)
        assert "loading 10,000 / 30,000" in status(app)
        assert tab_label(app, "all") == "6 All 10,000"
        for delta in gen:
            app.store.apply(delta)


async def test_interval_pause_and_refresh_keys(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("plus")
        assert app.interval == 2.0
        await pilot.press("minus", "minus")
        assert app.interval == 0.5
        assert "every 0.5 s" in status(app)
        await pilot.press("P")
        assert app.poller.paused and "paused" in status(app)
        await pilot.press("P")
        assert not app.poller.paused


async def test_autopoll_never_overlaps_and_keeps_polling(make_test_app) -> None:
    app, source = make_test_app(autopoll=True, poll_interval=0.05, clock=time.monotonic)
    running = 0
    overlaps = 0
    original = source.sync

    def slow_sync():
        nonlocal running, overlaps
        running += 1
        overlaps += running > 1
        time.sleep(0.03)
        try:
            yield from original()
        finally:
            running -= 1

    source.sync = slow_sync  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + 5
        while app.polls < 4 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert app.polls >= 4
        assert overlaps == 0
        assert tab_label(app, "all") == "6 All 200"


async def test_select_task_switches_to_all_when_needed(make_test_app) -> None:
    app, source = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        target = next(r.msg_id for r in source.records.values() if r.state is State.SUCCEEDED)
        app.select_task(target)
        await pilot.pause()
        assert app.current_pane == "all"
        assert app.cursor_id() == target
        t = table(app)
        assert int(t.scroll_y) <= t.cursor_row < int(t.scroll_y) + t.size.height - 1


async def test_command_palette_lists_the_apps_actions(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Pane: Failed", "Filter tasks", "Failure triage", "Resubmit tasks", "Pause polling", "Sort by duration"):
            assert title in titles
        # run one: it switches the pane
        command = next(c for c in app.get_system_commands(app.screen) if c.title == "Pane: Failed")
        command.callback()
        await pilot.pause()
        assert app.current_pane == "failed"


async def test_keymap_remaps_a_binding(make_test_app) -> None:
    app, _ = make_test_app(keymap={"main.triage": "t"})
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("6", "s")
        assert table(app).sort == "duration"


async def test_records_removed_show_a_warning(make_test_app) -> None:
    app, source = make_test_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await started(app, pilot)
        for msg_id in [r.msg_id for r in source.records.values() if r.state is State.SUCCEEDED][:5]:
            del source.records[msg_id]
        await started(app, pilot)
        assert "5 records disappeared since the last poll" in status(app)
        assert ("warning", "5 records disappeared since the last poll") in app.notices
        assert tab_label(app, "all") == "6 All 195"


@pytest.mark.parametrize("n", [100_000])
async def test_100k_rows_first_paint_and_paging_stay_small(make_test_app, n: int) -> None:
    app, source = make_test_app(n=n)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("6")
        await pilot.pause()
        t = table(app)
        assert t.row_count == n
        assert len(app.screen.query("*")) < 60  # widgets do not grow with the rows
        fetches = t.fetches
        start = time.perf_counter()
        for _ in range(20):
            await pilot.press("pagedown")
        await pilot.pause()
        elapsed = time.perf_counter() - start
        page = t._page_height()
        assert page == t.size.height - 1  # no horizontal scrollbar at 140 columns
        assert t.cursor_row == 20 * page
        assert t.fetches - fetches <= 12  # windows of 5 pages, not one query per row
        assert elapsed < 5
        await pilot.press("end")
        await pilot.pause()
        assert t.cursor_row == n - 1
        assert t.visible_records()[-1].msg_id == app.cursor_id()
        assert app.cursor_id() == make_record(0).msg_id  # oldest task last
        await pilot.press("home")
        assert t.cursor_row == 0 and app.cursor_id() == make_record(n - 1).msg_id


async def test_panes_split_into_queued_and_running_when_the_source_learns_it(make_test_app) -> None:
    from datasource.sources.base import Capabilities

    source = FakeSource(100)
    app, _ = make_test_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert app.panes[0] == "pending"
        source._caps = Capabilities(kind="hub", backend="sqlite", knows_running=True, has_engines=True)
        for rec in [r for r in source.records.values() if r.state is State.PENDING][:4]:
            source.records[rec.msg_id] = replace(rec, state=State.RUNNING)
        await started(app, pilot)
        await settled(app, pilot)
        assert app.panes[:2] == ["queued", "running"]
        assert app.current_pane == "queued"
        assert tab_label(app, "running") == "2 Running 4"
        # the others are not known to be running: they are the Queued pane (the source says `pending`)
        waiting = [r for r in source.records.values() if r.state is State.PENDING]
        assert tab_label(app, "queued") == f"1 Queued {len(waiting)}" and len(waiting) > 4
        assert {r.state for r in table(app).visible_records()} == {State.PENDING}
        await pilot.press("2")
        await pilot.pause()
        assert app.current_pane == "running"
        assert {r.state for r in table(app).visible_records()} == {State.RUNNING}


@pytest.mark.cluster
async def test_real_cluster_counts_and_engine_filter(cluster_sqlite) -> None:
    """The app over a real HubSource: pane counts are the store's, the workload's failures are there,
    and selecting an engine filters the table and the counts."""
    from datasource.sources.open import open_source

    from tui.app import make_app

    workload = cluster_sqlite.workload
    source = open_source(str(cluster_sqlite.connection_file))
    app = make_app(source, autopoll=False, poll_interval=60)
    async with app.run_test(size=SIZE) as pilot:
        # tasks.db is committed by the Hub every 2 s: poll until the workload's results are in (or 60 s)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            outcome = await app.poll_once()
            counts = app.store.counts()
            if outcome.status.state == "connected" and counts["all"] >= len(workload.all) \
                    and counts["failed"] >= len(workload.failed) and counts["succeeded"] >= len(workload.done_ok):
                break
            await pilot.pause(0.5)
        await pilot.pause()
        assert status(app).startswith("● connected"), status(app)
        counts = app.store.counts()
        assert counts["all"] >= len(workload.all)
        assert counts["failed"] >= len(workload.failed)
        for i, pane in enumerate(app.panes):
            assert tab_label(app, pane).endswith(f" {counts[pane]:,}"), (pane, tab_label(app, pane), counts)
        assert app.store.get(workload.value_errors[0]).ename == "ValueError"
        await pilot.press(str(app.panes.index("failed") + 1))
        await pilot.pause()
        assert {r.msg_id for r in table(app).visible_records()} >= set(workload.failed)
        # engine filter: the first engine
        engines = app.screen_main().query_one(EngineList)
        assert sum(1 for r in engines.rows if r.alive) == 2
        await pilot.press("e", "space", "e", str(app.panes.index("all") + 1))
        await settled(app, pilot)
        uuid = engines.rows[0].uuid
        rows = table(app).visible_records()
        assert rows and all(r.engine_uuid == uuid for r in rows)
        expected = app.store.counts(("engine_uuid = ?", (uuid,)))
        assert tab_label(app, "all").endswith(f" {expected['all']:,}")
        assert expected["all"] < counts["all"]
        direct = app.store.get(workload.direct[0])
        if direct.engine_uuid == uuid:
            assert direct.msg_id in {r.msg_id for r in rows}


class HeldLoad(FakeSource):
    """A load that starts when the test says so, then stops after its first rows and its pane counts until
    the test lets it go on."""

    def __init__(self, n: int) -> None:
        super().__init__(n, chunk=n // 4)
        self.begin = threading.Event()
        self.go_on = threading.Event()
        self.opened = threading.Event()

    def open(self) -> None:
        self.opened.set()

    def sync(self):
        assert self.begin.wait(10), "the test never let the load begin"
        for delta in super().sync():
            yield delta
            if delta.reset and delta.loading:
                yield Delta(loading=True, done=delta.done, total=delta.total, counts={"pending": 0, "succeeded": 0, "failed": 0, "aborted": 0, "resubmitted": 0, "all": len(self.records)})
                assert self.go_on.wait(10), "the test never let the load go on"


async def test_a_loads_first_rows_and_counts_show_while_the_load_goes_on(make_test_app, monkeypatch) -> None:
    import tui.app as app_mod

    monkeypatch.setattr(app_mod, "UI_TICK", 3600.0)  # no UI tick: only the load itself can ask for the frame
    source = HeldLoad(400)
    app, _ = make_test_app(source=source, autopoll=True, poll_interval=60, clock=time.monotonic)
    async with app.run_test(size=SIZE) as pilot:
        try:
            await pilot.pause(0.2)
            assert not table(app).visible_records()
            source.begin.set()  # the screen is up and has shown the empty store: rows come now
            deadline = time.monotonic() + 5
            while not table(app).visible_records() and time.monotonic() < deadline:
                await pilot.pause(0.05)
            await pilot.pause()
            assert app.store.loading and app.polls == 0  # the poll is still held inside the load
            assert len(table(app).visible_records()) > 0
            assert tab_label(app, "all") == "6 All 400"  # the announced count, not the 100 rows loaded so far
        finally:
            source.go_on.set()
        deadline = time.monotonic() + 5
        while app.polls < 1 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert not app.store.loading


async def test_the_first_poll_starts_while_the_screen_is_built(make_test_app, monkeypatch) -> None:
    from tui.app import HubtopApp

    source = HeldLoad(40)
    source.begin.set()
    source.go_on.set()
    seen: list[bool] = []
    mounted = HubtopApp.main_mounted

    def main_mounted(self) -> None:
        seen.append(source.opened.wait(5))  # before this method arms any poll
        mounted(self)

    monkeypatch.setattr(HubtopApp, "main_mounted", main_mounted)
    app, _ = make_test_app(source=source, autopoll=True, poll_interval=60, clock=time.monotonic)
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + 5
        while app.polls < 1 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert seen == [True]
        assert app.polls == 1 and app.store.total == 40  # that poll was the first load, and it landed
        assert tab_label(app, "all") == "6 All 40"


async def test_q_quits(make_test_app) -> None:
    app, _ = make_test_app(autopoll=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await pilot.press("q")
        await pilot.pause(0.3)
        assert not app.is_running


async def test_a_filter_the_store_cannot_run_is_reported_and_dropped(make_test_app) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        bar = app.screen_main().query_one(FilterBar)
        app.set_filter('{"label": {"$regex": "fit"}}')  # REGEXP: a function the store's SQLite may lack
        await settled(app, pilot)
        if app.filter_text:  # the store registers REGEXP: the filter simply works
            assert {r.label for r in table(app).visible_records()} <= {"fit-0", "fit-1", "fit-2"}
        else:
            assert bar.error is not None and "cannot run this filter" in bar.error
            assert tab_label(app, "all") == "6 All 200"


async def test_big_store_rereads_in_a_worker_and_keys_keep_working(make_test_app) -> None:
    app, _ = make_test_app(n=60_000)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("6")
        await settled(app, pilot)
        t = table(app)
        assert t.row_count == 60_000 and t.SYNC_ROWS < 60_000
        app.set_filter("ValueError")
        await pilot.pause()
        assert t.loading or t.row_count < 60_000
        await pilot.press("down", "down")  # served from the rows on screen meanwhile
        await settled(app, pilot)
        assert not t.loading
        assert t.row_count == app.store.count(("ename = ?", ("ValueError",)))
        assert all(r.ename == "ValueError" for r in t.visible_records())
        assert tab_label(app, "all") == f"6 All {t.row_count:,}"


async def test_a_view_change_read_in_a_worker_shows_in_one_frame(make_test_app, monkeypatch) -> None:
    """A pane switch or a filter on a big store: no frame shows the new tab (or the filter bar) over the
    previous view's rows while they are read; unless the read takes longer than TaskTable.HOLD, then the
    screen moves on without them."""
    from textual.screen import Screen

    monkeypatch.setattr(TaskTable, "SYNC_ROWS", 100)  # re-read in a worker, as above 50k tasks
    app, _ = make_test_app(n=400)
    frames: list[tuple[str, object, bool]] = []
    refresh = Screen._compositor_refresh

    def painted(self) -> None:
        if self is app.screen_main():
            frames.append((app._tabs().active, table(app).where, app._filter_bar().has_class("-active")))
        refresh(self)

    monkeypatch.setattr(Screen, "_compositor_refresh", painted)
    read = TaskTable._read
    delay = [0.05]

    def slow_read(self, request):
        time.sleep(delay[0])
        return read(self, request)

    monkeypatch.setattr(TaskTable, "_read", slow_read)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        failed = app.store.count(pane_filter("failed"))
        for key, pane in (("3", "failed"), ("6", "all")):
            frames.clear()
            await pilot.press(key)
            await settled(app, pilot)
            await pilot.pause(0.1)
            assert table(app).row_count == (failed if pane == "failed" else 400)
            new_tab = [f for f in frames if f[0] == f"pane-{pane}"]
            assert new_tab and all(f[1] == table(app).where for f in new_tab), frames
        for text, shown in (("state:failed", True), ("", False)):
            frames.clear()
            if text:
                app.set_filter(text)
            else:
                await pilot.press("escape")
            await settled(app, pilot)
            await pilot.pause(0.1)
            assert app._filter_bar().has_class("-active") is shown
            assert frames and all(f[1] == table(app).where for f in frames if f[2] is shown), frames
        delay[0] = 8 * TaskTable.HOLD  # a slow read: the screen is not held that long
        frames.clear()
        await pilot.press("3")
        await pilot.pause(2 * TaskTable.HOLD)
        assert table(app).loading
        assert any(f[0] == "pane-failed" for f in frames), frames
        await settled(app, pilot)


async def test_the_status_line_moving_on_never_relays_out_the_screen(make_test_app, clock, monkeypatch) -> None:
    """The status line's age changes 4 times a second: repainting one line, not re-laying out the whole
    screen (a full reflow + repaint is ~10-20 ms of CPU, which an idle dashboard must not spend)."""
    app, _ = make_test_app(n=300)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        layouts = count_layouts(monkeypatch)
        before = status(app)
        for _ in range(4):
            clock.advance(3.0)
            app._tick()
            await pilot.pause()
        assert status(app) != before  # the age moved on screen
        assert layouts == []


async def test_a_poll_that_moves_one_engines_counts_repaints_that_line_only(make_test_app, painted_lines) -> None:
    """A busy cluster changes a few engines' counts every poll: the engine list repaints those lines, not all."""
    app, source = make_test_app(n=300)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        engines = app.screen_main().query_one(EngineList)
        pending = next(r for r in source.records.values() if r.state.is_pending and r.engine_uuid)
        index = next(i for i, row in enumerate(engines.rows) if row.uuid == pending.engine_uuid)
        done_before = engines.rows[index].done
        painted = painted_lines(EngineList)
        source.records[pending.msg_id] = replace(pending, state=State.SUCCEEDED, started=pending.submitted,
                                                 completed=pending.submitted + timedelta(seconds=1))
        await started(app, pilot)
        await settled(app, pilot)
        assert engines.rows[index].done == done_before + 1
        assert painted and set(painted) == {index + 1 - int(engines.scroll_y)}  # its line, under the header


async def test_the_unassigned_row_coming_and_going_does_not_relay_out_the_screen(make_test_app, monkeypatch) -> None:
    """Tasks without an engine (queued, not yet assigned) come and go with every burst of a busy cluster, and
    the engine list's row for them with them: while the list fits, that repaints the list, not the screen."""
    app, source = make_test_app(n=300)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        engines = app.screen_main().query_one(EngineList)
        unassigned = [r for r in source.records.values() if r.engine_uuid is None]
        assert unassigned and engines.rows[-1].uuid is None
        n = len(engines.rows)
        layouts = count_layouts(monkeypatch)
        for rec in unassigned:  # assigned and done: the row goes
            source.records[rec.msg_id] = replace(rec, state=State.SUCCEEDED, engine_uuid=ENGINE_UUIDS[0], engine_id=0,
                                                 started=rec.submitted, completed=rec.submitted + timedelta(seconds=1))
        await started(app, pilot)
        await settled(app, pilot)
        assert len(engines.rows) == n - 1 and engines.virtual_size.height == n
        add_records(source, 300, 2)  # task 301 is queued without an engine: the row is back
        await started(app, pilot)
        await settled(app, pilot)
        assert len(engines.rows) == n and engines.rows[-1].uuid is None and engines.virtual_size.height == n + 1
        assert "EngineList" not in layouts
        lines = [strip.text for strip in app.screen._compositor.render_strips()[engines.region.y:engines.region.bottom]]
        assert any(NO_ENGINE in line for line in lines)  # painted, under the last engine


def test_the_status_line_shows_a_fill_under_way() -> None:
    from tui.widgets.status_bar import StatusInfo

    info = StatusInfo("connected", "connected", 1.0, 0.2, 100_000, filling=(34_000, 99_995))
    assert "100,000 tasks · times 34,000 / 99,995 · every 1 s" in StatusBar.render_info(info).plain
    assert "times" not in StatusBar.render_info(StatusInfo("connected", "connected", 1.0, 0.2, 10)).plain


def test_the_status_line_says_when_a_busy_cluster_spaces_the_polls_out() -> None:
    from tui.widgets.status_bar import StatusInfo

    busy = StatusInfo("connected", "connected", 4.0, 3.5, 10, busy_rate=437.2)
    assert "10 tasks · every 4 s: 440 changes/s" in StatusBar.render_info(busy).plain
    assert "updated" not in StatusBar.render_info(busy).plain  # 3.5 s is what 4 s polls explain
    assert "every 1 s" in StatusBar.render_info(StatusInfo("connected", "connected", 1.0, 0.2, 10)).plain


async def test_a_busy_cluster_spaces_the_polls_out_and_the_status_line_says_so(make_test_app, clock) -> None:
    app, source = make_test_app(n=300)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        clock.advance(1.0)
        add_records(source, 300, 2_000)  # 2,000 new tasks in a second: the first poll that sees them is busy
        await started(app, pilot)
        await settled(app, pilot)
        bar = app.screen_main().query_one(StatusBar)
        assert "every 4 s: 1,000 changes/s" in bar.text
        app.autopoll = True
        app._arm_poll()  # the next poll is armed as after any poll: 4 s away
        assert app._poll_timer is not None and app._poll_timer._interval == 4.0
        app.autopoll = False
        app._poll_timer.stop()
        clock.advance(4.0)
        await started(app, pilot)  # nothing new in 4 s: calm, back to the chosen interval
        await settled(app, pilot)
        assert "every 1 s" in bar.text and "changes/s" not in bar.text


def test_the_status_line_shows_the_age_only_once_the_polling_does_not_explain_it() -> None:
    from tui.widgets.status_bar import FRESH_SLACK, StatusInfo

    def line(state: str, age: float, interval: float = 1.0) -> str:
        return StatusBar.render_info(StatusInfo(state, state, interval, age, 10)).plain

    assert "updated" not in line("connected", 0.4) and "updated" not in line("connected", 1.0 + FRESH_SLACK)
    assert "updated 3 s ago" in line("connected", 3.5)
    assert "updated" not in line("connected", 11.0, interval=10.0)
    assert "updated 1 s ago" in line("paused", 1.2)  # frozen on purpose: how old is what is shown
    assert "stale: updated 1 s ago" in line("retrying", 1.2)


async def test_a_tick_that_only_moves_a_fresh_age_does_not_repaint_the_status_line(make_test_app, clock) -> None:
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        bar = app.screen_main().query_one(StatusBar)
        before = bar.text
        updates = []
        bar.update = lambda *a, **k: updates.append(a)  # type: ignore[method-assign]
        for _ in range(3):
            clock.advance(0.9)
            app._tick()
        assert updates == [] and bar.text == before


async def test_long_lived_objects_are_frozen_after_the_first_load_and_released_at_exit(make_test_app) -> None:
    import gc

    app, _ = make_test_app(n=300)
    async with app.run_test(size=SIZE) as pilot:
        assert gc.get_freeze_count() == 0
        await started(app, pilot)
        assert gc.get_freeze_count() > 1000  # full collections skip them from now on
    assert gc.get_freeze_count() == 0


async def test_a_busy_poll_repaints_counts_and_rows_without_relaying_out_the_screen(make_test_app, monkeypatch) -> None:
    """New tasks every poll move the tab counts within their digits and the table's row count: the tabs and
    the table repaint, the screen is not re-laid out (a reflow + full repaint each poll of a busy cluster)."""
    app, source = make_test_app(n=300)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("6")  # the All pane: every new task is a new row
        await settled(app, pilot)
        before = {p: tab_label(app, p) for p in app.panes}
        layouts = count_layouts(monkeypatch)
        add_records(source, 300, 5)
        await started(app, pilot)
        await settled(app, pilot)
        after = {p: tab_label(app, p) for p in app.panes}
        assert after["all"] == "6 All 305" and before["all"] == "6 All 300"
        assert table(app).row_count == 305 and table(app).virtual_size.height == 306
        assert layouts == []
        # a count that gains a digit changes the tab's width: then the layout is redone
        add_records(source, 305, 700)
        await started(app, pilot)
        await settled(app, pilot)
        assert tab_label(app, "all") == "6 All 1,005" and "Tab" in layouts
