"""SVG snapshots of the screens on the real HubtopApp: fixed 140x40, fake data, injected clocks, no autopoll.

Update after a deliberate visual change: `pytest tests/tui/test_snapshots_screens.py --snapshot-update`,
look at the report, and run twice to prove the snapshots are stable.
"""

from __future__ import annotations

import time
from datetime import timedelta

from datasource.model import TaskDetail
from datasource.store import pane_filter
from tests.fakes import T0, FakeSource
from tui.app import make_app
from tui.screens import DetailScreen, HelpScreen, PreviewScreen, TriageScreen

SIZE = (140, 40)
NOW = T0 + timedelta(hours=1)


def _app(source: FakeSource):
    return make_app(source, autopoll=False, clock=lambda: 1000.0, now=lambda: NOW)


async def _until(pilot, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out preparing the snapshot")
        await pilot.pause(0.02)


async def _started(pilot) -> None:
    app = pilot.app
    await _until(pilot, lambda: app.poller is not None)
    await app.poll_once()
    await pilot.pause()


def test_detail_of_a_failed_resubmitted_task(snap_compare):
    source = FakeSource(200)
    failed = sorted(m for m, r in source.records.items() if r.state.value == "failed")[0]
    source.resubmit([failed])
    rec = source.records[failed]
    source.details[failed] = TaskDetail(
        record=rec,
        stdout="".join(f"step {i}: loss={1 / (i + 1):.4f}\n" for i in range(6)),
        stderr="warning: slow engine\n",
        traceback=[
            "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
            "\x1b[0;31mKeyError\x1b[0m                                  Traceback (most recent call last)",
            "Cell \x1b[0;32mIn[3], line 5\x1b[0m, in \x1b[0;36mwork\x1b[0;34m(i)\x1b[0m",
            "\x1b[1;32m      4\x1b[0m \x1b[38;5;28;01mdef\x1b[39;00m \x1b[38;5;21mwork\x1b[39m(i):",
            "\x1b[0;32m----> 5\x1b[0m     \x1b[38;5;28;01mreturn\x1b[39;00m table[\x1b[38;5;124m'k2'\x1b[39m]",
            "\x1b[0;31mKeyError\x1b[0m: 'k2'",
        ],
        code=None,
        result_content={"status": "error", "ename": "KeyError", "evalue": "'k2'"},
        metadata={"after": [], "follow": [], "retries": 0, "timeout": 0.0},
        msg_type="apply_request",
    )
    app = _app(source)

    async def run_before(pilot) -> None:
        await _started(pilot)
        app.push_screen(DetailScreen(failed))
        await _until(pilot, lambda: isinstance(app.screen, DetailScreen) and not app.screen.loading_detail)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_detail_with_truncated_output_and_search(snap_compare):
    source = FakeSource(40)
    ok = sorted(m for m, r in source.records.items() if r.state.value == "succeeded")[0]
    big = "".join(f"{i:06d} epoch done, needle={i % 7}\n" for i in range(20_000))
    source.details[ok] = TaskDetail(record=source.records[ok], stdout=big, msg_type="apply_request")
    app = _app(source)

    async def run_before(pilot) -> None:
        await _started(pilot)
        app.push_screen(DetailScreen(ok))
        await _until(pilot, lambda: isinstance(app.screen, DetailScreen) and not app.screen.loading_detail)
        screen = app.screen
        await pilot.press("slash", *"needle=6", "enter")
        await _until(pilot, lambda: screen.view.matches)
        await pilot.press("n", "n")
        marker = next(i for i, line in enumerate(screen.view.document.lines)
                      if not isinstance(line, str) and "press a to show all" in line.plain)
        screen.view.scroll_to(y=marker - 20, animate=False, immediate=True)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_triage(snap_compare):
    app = _app(FakeSource(400))

    async def run_before(pilot) -> None:
        await _started(pilot)
        await pilot.press("f")
        await _until(pilot, lambda: isinstance(app.screen, TriageScreen))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_purge_preview_leaves_out_pending(snap_compare):
    source = FakeSource(200)
    app = _app(source)

    async def run_before(pilot) -> None:
        await _started(pilot)
        pending = app.store.ids(pane_filter("pending"))[:2]
        done = app.store.ids(pane_filter("succeeded"))[:4]
        await pilot.press("6")  # the All pane
        for msg_id in pending + done:
            app.select_task(msg_id)
            await pilot.press("space")
        await _until(pilot, lambda: sorted(app.marked_ids()) == sorted(pending + done))
        await pilot.press("p")
        from tui.screens import ScopeScreen

        await _until(pilot, lambda: isinstance(app.screen, ScopeScreen))
        await pilot.press("down", "enter")  # the marked rows
        await _until(pilot, lambda: isinstance(app.screen, PreviewScreen))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help(snap_compare):
    app = _app(FakeSource(50))

    async def run_before(pilot) -> None:
        await _started(pilot)
        await pilot.press("question_mark")
        await _until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
