"""SVG snapshots of the main screen (pytest-textual-snapshot), 140x40, fake data, injected clocks.

Update after a deliberate visual change: `pytest tests/tui/test_snapshots_main.py --snapshot-update`,
look at the SVGs, then run twice more to prove they are stable.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from fakes import FakeSource

from datasource.model import State
from tui.widgets.filter_bar import FilterBar

from .conftest import SIZE


async def _first_poll(pilot) -> None:
    await pilot.app.poll_once()
    await pilot.pause()


def test_main_screen_after_first_poll(snap_compare, make_test_app) -> None:
    app, _ = make_test_app(n=2_400)
    assert snap_compare(app, terminal_size=SIZE, run_before=_first_poll)


def test_failed_pane_sorted_with_marks(snap_compare, make_test_app) -> None:
    app, _ = make_test_app(n=400)

    async def run_before(pilot) -> None:
        await _first_poll(pilot)
        await pilot.press("3", "s", "down", "space", "space", "down")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_filter_bar_with_an_error(snap_compare, make_test_app) -> None:
    app, _ = make_test_app(n=400)

    async def run_before(pilot) -> None:
        await _first_poll(pilot)
        await pilot.press("6", "slash")
        bar = pilot.app.screen.query_one(FilterBar)
        bar.input.cursor_blink = False
        # one edit, not 23 keys: a loaded machine could let the live-apply debounce fire mid-typing
        bar.input.value = "label:fit-1 state:bogus"
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_engine_selected_and_stale_data(snap_compare, make_test_app, clock) -> None:
    source = FakeSource(400)
    app, _ = make_test_app(source=source)

    async def run_before(pilot) -> None:
        await _first_poll(pilot)
        await pilot.press("e", "down", "space", "down", "down", "space", "e", "6")
        clock.advance(7.5)
        source.fail_next = 1
        await _first_poll(pilot)
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_queued_and_running_panes_when_the_source_knows_running(snap_compare, make_test_app) -> None:
    from datasource.sources.base import Capabilities

    source = FakeSource(300, caps=Capabilities(kind="hub", backend="dictdb", knows_running=True, has_engines=True,
                                               warnings=("DictDB keeps 1,024 records and culls the oldest 10%",)))
    for i, rec in enumerate(r for r in list(source.records.values()) if r.state is State.PENDING):
        source.records[rec.msg_id] = replace(rec, state=State.RUNNING if i % 3 == 0 else State.QUEUED,
                                             started=rec.submitted + timedelta(seconds=1) if i % 3 == 0 else None)
    app, _ = make_test_app(source=source)
    assert snap_compare(app, terminal_size=SIZE, run_before=_first_poll)


def test_narrow_terminal_hides_the_engine_sidebar(snap_compare, make_test_app) -> None:
    app, _ = make_test_app(n=400)
    assert snap_compare(app, terminal_size=(90, 24), run_before=_first_poll)
