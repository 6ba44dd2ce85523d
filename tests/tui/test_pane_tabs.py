"""The pane tabs on real terminals sizes: every tab's digit key and count on screen, titles as wide as fit.

The tab bar is read from the rendered screen (the compositor's strips), as a user sees it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from fakes import FakeSource, make_record

from datasource.model import State
from datasource.sources.base import Capabilities
from tui.widgets.pane_tabs import HOLD_SECONDS, PANE_TITLES, QUEUE_PANES, PaneTabs, compact_count, panes_for, tab_text

from .test_app import count_layouts, settled, started

# The counts of a big cluster seen through the Hub (Queued + Running): 7 tabs, full labels 116 columns wide.
BIG = {"queued": 12, "running": 2, "succeeded": 70_123, "failed": 10_001, "aborted": 5_000, "resubmitted": 5_000,
       "all": 100_000}


def knows_running(n: int) -> FakeSource:
    """A source that tells Queued from Running; a third of its unfinished tasks run."""
    source = FakeSource(n, caps=Capabilities(kind="hub", backend="sqlite", knows_running=True, has_engines=True))
    for i, rec in enumerate(r for r in list(source.records.values()) if r.state is State.PENDING):
        if i % 3 == 0:
            source.records[rec.msg_id] = replace(rec, state=State.RUNNING, started=rec.submitted + timedelta(seconds=1))
    return source


def tabs_of(app) -> PaneTabs:
    return app.screen_main().query_one(PaneTabs)


def bar_strip(app):
    tabs = tabs_of(app)
    line = app.screen._compositor.render_strips()[tabs.region.y]
    return line.crop(tabs.region.x, tabs.region.right)


def shown(app) -> list[str]:
    """The tab bar as on screen, one string per tab (their paddings leave two spaces between them)."""
    return [part.strip() for part in bar_strip(app).text.split("  ") if part.strip()]


def assert_every_key_and_count(labels: list[str], panes: list[str], counts: dict[str, int]) -> None:
    assert len(labels) == len(panes), labels
    for i, (label, pane) in enumerate(zip(labels, panes)):
        assert label.startswith(f"{i + 1} ") and label.endswith(f" {counts[pane]:,}"), (label, labels)


async def ready(app, pilot) -> PaneTabs:
    await started(app, pilot)
    await settled(app, pilot)
    return tabs_of(app)


def room_widths(app, tabs: PaneTabs, room: int | None = None) -> list[int]:
    """The tabs' widths (with their padding) when the bar has the room: the Queued and Running labels with `room`
    (the largest count if None) in them, the others' own."""
    counts = tabs._counts
    room = max(counts.values()) if room is None else room

    def text(i: int, pane: str, count: int) -> str:
        return tab_text(i, pane, count, tabs.form, active=tabs.active == f"pane-{pane}")

    return [max(len(text(i, pane, counts[pane])), len(text(i, pane, room)) if pane in QUEUE_PANES else 0) + 2
            for i, pane in enumerate(app.panes)]


async def show(app, pilot, counts: dict[str, int]) -> None:
    tabs_of(app).set_counts(counts)
    await pilot.pause()
    await pilot.pause()


@pytest.mark.parametrize("size, labels", [
    ((160, 45), ["1 Queued 12", "2 Running 2", "3 Succeeded 70,123", "4 Failed 10,001", "5 Aborted 5,000",
                 "6 Resubmitted 5,000", "7 All 100,000"]),
    ((100, 30), ["1 Queue 12", "2 Run 2", "3 Succ 70,123", "4 Fail 10,001", "5 Abort 5,000", "6 Resub 5,000",
                 "7 All 100,000"]),
    ((80, 24), ["1 Queue 12", "2 2", "3 70,123", "4 10,001", "5 5,000", "6 5,000", "7 100,000"]),
])
async def test_every_tab_keeps_its_key_and_count_on_screen(make_test_app, size, labels) -> None:
    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=size) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        await show(app, pilot, BIG)
        assert shown(app) == labels
        assert_every_key_and_count(shown(app), app.panes, BIG)
        tabs = tabs_of(app)
        assert all(tabs.region.contains_region(tab.region) for tab in tabs.query("Tab"))  # none cut off
        # the API keeps the full label whatever the screen shows (benchmarks/probe.py compares with it)
        assert tabs._labels["succeeded"] == PaneTabs.label_for(2, "succeeded", 70_123) == "3 Succeeded 70,123"


async def test_the_tab_bar_follows_resizes_over_real_store_counts(make_test_app) -> None:
    app, _ = make_test_app(source=knows_running(20_000))
    async with app.run_test(size=(160, 45)) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        counts = app.store.counts()
        assert counts["all"] == 20_000 and counts["queued"] > 1_000 and counts["running"] > 600
        full = shown(app)
        assert full == [tab_text(i, pane, counts[pane]) for i, pane in enumerate(app.panes)]
        assert [label.split(" ")[1] for label in full] == [PANE_TITLES[p] for p in app.panes]
        # (110: the engine sidebar comes back and leaves the tabs 75 columns)
        for size, form in [((80, 24), "active"), ((100, 30), "short"), ((110, 30), "active"), ((160, 45), "full")]:
            await pilot.resize_terminal(*size)
            await pilot.pause()
            await pilot.pause()
            assert tabs_of(app).form == form, size
            assert_every_key_and_count(shown(app), app.panes, counts)
            assert sum(len(label) + 2 for label in shown(app)) <= tabs_of(app).size.width
        assert shown(app) == full


async def test_growing_counts_shorten_the_labels_and_keep_them_on_screen(make_test_app) -> None:
    source = knows_running(300)
    app, _ = make_test_app(source=source)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        assert tabs_of(app).form == "full"
        assert_every_key_and_count(shown(app), app.panes, app.store.counts())
        for i in range(300, 20_300):
            rec = make_record(i)
            source.records[rec.msg_id] = rec
        await started(app, pilot)
        await settled(app, pilot)
        await pilot.pause()
        counts = app.store.counts()
        assert counts["all"] == 20_300
        assert tabs_of(app).form == "short"
        assert_every_key_and_count(shown(app), app.panes, counts)


async def test_the_active_tab_keeps_its_title_when_only_counts_fit(make_test_app) -> None:
    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=(80, 24)) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        await show(app, pilot, BIG)
        assert shown(app)[:3] == ["1 Queue 12", "2 2", "3 70,123"]
        await pilot.press("3")
        await settled(app, pilot)
        assert app.current_pane == "succeeded"
        assert shown(app)[:3] == ["1 12", "2 2", "3 Succ 70,123"]
        # the digit is bold: it reads as the key, apart from the count beside it
        bold = {seg.text for seg in bar_strip(app) if seg.style is not None and seg.style.bold}
        assert {"1", "2", "3", "4", "5", "6", "7"} <= bold


async def test_counts_too_wide_for_exact_numbers_are_rounded(make_test_app) -> None:
    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=(80, 24)) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        huge = {"queued": 1_250_000, "running": 1_000, "succeeded": 7_012_345, "failed": 1_000_001,
                "aborted": 500_000, "resubmitted": 500_000, "all": 10_263_346}
        await show(app, pilot, huge)
        assert tabs_of(app).form == "compact"
        assert shown(app) == ["1 1.25M", "2 1k", "3 7.01M", "4 1M", "5 500k", "6 500k", "7 10.3M"]


async def test_same_width_counts_repaint_the_tabs_without_relayout_in_a_short_form(make_test_app, monkeypatch) -> None:
    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=(80, 24)) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        await show(app, pilot, BIG)
        assert tabs_of(app).form == "active"
        layouts = count_layouts(monkeypatch)
        await show(app, pilot, {**BIG, "queued": 13, "succeeded": 70_124, "all": 100_001})
        assert shown(app) == ["1 Queue 13", "2 2", "3 70,124", "4 10,001", "5 5,000", "6 5,000", "7 100,001"]
        assert layouts == []
        await show(app, pilot, {**BIG, "all": 1_000_000})  # a digit more: the tab widens, the layout is redone
        assert shown(app)[-1] == "7 1,000,000" and "Tab" in layouts


async def test_pending_tabs_at_80_columns_and_the_switch_to_queued_and_running(make_test_app) -> None:
    source = FakeSource(20_000)
    app, _ = make_test_app(source=source)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        assert app.panes == panes_for(False)
        assert_every_key_and_count(shown(app), app.panes, app.store.counts())
        source._caps = Capabilities(kind="hub", backend="sqlite", knows_running=True, has_engines=True)
        for rec in [r for r in source.records.values() if r.state is State.PENDING][:40]:
            source.records[rec.msg_id] = replace(rec, state=State.RUNNING)
        await started(app, pilot)
        await settled(app, pilot)
        await pilot.pause()
        assert app.panes == panes_for(True)
        assert_every_key_and_count(shown(app), app.panes, app.store.counts())


def test_label_forms() -> None:
    assert tab_text(2, "succeeded", 70_123) == "3 Succeeded 70,123"
    assert tab_text(2, "succeeded", 70_123, "short") == "3 Succ 70,123"
    assert tab_text(2, "succeeded", 70_123, "active") == "3 70,123"
    assert tab_text(2, "succeeded", 70_123, "active", active=True) == "3 Succ 70,123"
    assert tab_text(2, "succeeded", 70_123, "counts", active=True) == "3 70,123"
    assert tab_text(2, "succeeded", 70_123, "compact") == "3 70.1k"
    assert tab_text(0, "queued", None) == "1 Queued"  # no count yet
    assert tab_text(0, "queued", None, "counts") == "1 Queue"


@pytest.mark.parametrize("n, text", [(0, "0"), (999, "999"), (1_000, "1k"), (5_000, "5k"), (70_123, "70.1k"),
                                     (999_499, "999k"), (999_500, "1M"), (1_234_567, "1.23M"), (5_000_000_000, "5G")])
def test_compact_count(n, text) -> None:
    assert compact_count(n) == text


async def test_a_count_gaining_a_digit_moves_the_underline_at_once(make_test_app, monkeypatch) -> None:
    """The underline jumps with the active tab when a tab before it widens: Tabs' 0.3 s slide, meant for a
    change of tab, repainted the whole screen ~20 times at each count that gained or lost a digit."""
    from textual.widgets._tabs import Underline

    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=(160, 45)) as pilot:
        await started(app, pilot)
        await settled(app, pilot)
        await show(app, pilot, BIG)
        await pilot.press("3")
        await settled(app, pilot)
        slides = []
        monkeypatch.setattr(Underline, "animate", lambda self, attribute, *a, **k: slides.append(attribute))
        await show(app, pilot, {**BIG, "queued": 12_345})  # the first tab widens: the active one moves right
        await pilot.pause(0.1)
        assert slides == []
        underline = tabs_of(app).query_one(Underline)
        active = tabs_of(app).active_tab
        span = active.virtual_region.shrink(active.styles.gutter).column_span
        assert (underline.highlight_start, underline.highlight_end) == span
        assert shown(app)[:3] == ["1 Queued 12,345", "2 Running 2", "3 Succeeded 70,123"]


async def test_a_count_losing_digits_keeps_its_tab_width_until_the_hold_ends(make_test_app, monkeypatch) -> None:
    """A draining queue crosses a digit boundary every few polls, and each change of a tab's width re-lays out
    and repaints the whole screen: a tab narrowed below the widest count it showed keeps that width until
    HOLD_SECONDS after the last widening. (Here the bar has the room for 4-digit queues, not for 200,000.)"""
    app, _ = make_test_app(source=knows_running(300))
    many = {**BIG, "all": 1_000_000}
    async with app.run_test(size=(160, 45)) as pilot:
        tabs = await ready(app, pilot)
        now = [1_000.0]
        tabs.clock = lambda: now[0]
        await show(app, pilot, {**many, "queued": 200_000})
        queued = tabs.get_tab("pane-queued")
        wide = queued.region.width
        assert wide == len("1 Queued 200,000") + 2
        layouts = count_layouts(monkeypatch)
        for n in (165_000, 98_000, 3_500, 0):
            await show(app, pilot, {**many, "queued": n})
            assert shown(app)[0] == f"1 Queued {n:,}"
            assert queued.region.width == wide
        assert layouts == []
        now[0] += HOLD_SECONDS - 1
        tabs._release_when_due()
        await pilot.pause()
        assert layouts == [] and queued.region.width == wide
        now[0] += 1
        tabs._release_when_due()
        await pilot.pause()
        await pilot.pause()
        assert "Tab" in layouts
        assert [tab.region.width for tab in tabs.query("Tab")] == room_widths(app, tabs, 9_999)
        assert queued.region.width == len("1 Queued 9,999") + 2
        assert shown(app) == [tab_text(i, pane, {**many, "queued": 0}[pane]) for i, pane in enumerate(app.panes)]


async def test_held_widths_that_no_longer_fit_the_bar_are_let_go(make_test_app) -> None:
    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=(80, 24)) as pilot:
        tabs = await ready(app, pilot)
        first = {**BIG, "queued": 1_234_567}
        await show(app, pilot, first)
        form = tabs.form
        first_width = tabs.get_tab("pane-queued").region.width
        # the wide count moves to another tab: the texts fit in the same form, the old width held beside them not
        second = {**BIG, "queued": 12, "aborted": 1_234_567, "resubmitted": 1_234_567, "all": 10_234_567}
        await show(app, pilot, second)
        assert tabs.form == form
        assert_every_key_and_count(shown(app), app.panes, second)
        assert all(tabs.region.contains_region(tab.region) for tab in tabs.query("Tab"))
        assert tabs.get_tab("pane-queued").region.width < first_width


async def test_counts_of_another_filter_let_go_of_the_held_widths(make_test_app) -> None:
    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=(160, 45)) as pilot:
        tabs = await ready(app, pilot)
        many = {**BIG, "all": 1_000_000}  # room for 4-digit queues (see above), not for 200,000
        await show(app, pilot, {**many, "queued": 200_000})
        await show(app, pilot, {**many, "queued": 0})
        assert tabs.get_tab("pane-queued").region.width == len("1 Queued 200,000") + 2  # held
        await pilot.press("e", "down", "space", "e")  # select an engine: its counts, laid out anew
        await settled(app, pilot)
        await pilot.pause()
        assert app._engine_list().selected
        labels = shown(app)
        assert_every_key_and_count(labels, app.panes, app._counts)
        assert [tab.region.width for tab in tabs.query("Tab")] == room_widths(app, tabs)


# The counts of a smaller cluster: with the largest count in every label, the tabs still fit 160 columns.
SMALL = {"queued": 0, "running": 0, "succeeded": 7_012, "failed": 1_001, "aborted": 500, "resubmitted": 500,
         "all": 10_000}


async def test_a_burst_through_the_queue_keeps_the_screen_laid_out(make_test_app, monkeypatch) -> None:
    """With the room, every tab is as wide as its label with the bar's largest count: Queued going 0 -> 1,494 -> 0
    with a burst repaints the tab alone. Each change of a tab's width re-lays out the screen and repaints all of
    it (a burst's frames on a freshly started app: ~2x the CPU of a steady one)."""
    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=(160, 45)) as pilot:
        tabs = await ready(app, pilot)
        await show(app, pilot, SMALL)
        widths = [tab.region.width for tab in tabs.query("Tab")]
        assert widths == room_widths(app, tabs)
        assert widths[0] == len("1 Queued 10,000") + 2 and widths[-1] == len("7 All 10,000") + 2
        layouts = count_layouts(monkeypatch)
        for n in (1_494, 120, 0, 2_500):
            counts = {**SMALL, "queued": n, "succeeded": SMALL["succeeded"] + n}
            await show(app, pilot, counts)
            assert shown(app)[0] == f"1 Queued {n:,}"
            assert_every_key_and_count(shown(app), app.panes, counts)
            assert [tab.region.width for tab in tabs.query("Tab")] == widths
        assert layouts == []
        await show(app, pilot, {**SMALL, "all": 100_000})  # All gains a digit: the queue's tabs make room for one more
        assert "Tab" in layouts
        assert [tab.region.width for tab in tabs.query("Tab")] == [w + 1 for w in widths[:2]] + widths[2:-1] + [widths[-1] + 1]


async def test_the_queue_gets_the_room_the_bar_has_left(make_test_app) -> None:
    """At 100 columns the labels take their short form; the Queued and Running tabs get room for as many digits
    as the bar has left, not for 100,000."""
    app, _ = make_test_app(source=knows_running(300))
    async with app.run_test(size=(100, 30)) as pilot:
        tabs = await ready(app, pilot)
        await show(app, pilot, BIG)
        labels = shown(app)
        assert labels[0] == "1 Queue 12"
        assert_every_key_and_count(labels, app.panes, BIG)
        widths = [tab.region.width for tab in tabs.query("Tab")]
        assert widths[2:] == [len(label) + 2 for label in labels[2:]]
        assert widths[:2] == room_widths(app, tabs, 999)[:2]  # "1 Queue 999", "2 Run 999"
        assert sum(widths) <= tabs.size.width < sum(room_widths(app, tabs, 9_999))
