"""Pilot tests of the screens (detail, actions flow, triage, help, picker, export) on the real HubtopApp.

The app runs over FakeSource + a real TaskStore with `autopoll=False` and injected clocks: tests poll
by hand (`await app.poll_once()`), so nothing changes under them. The end-to-end test at the bottom
drives the same app, polling for real, on a real ipyparallel cluster.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Callable

import pytest

from datasource.model import TaskDetail
from datasource.sources.base import Capabilities
from datasource.store import combine, pane_filter
from tests.fakes import T0, FakeSource
from tui.app import HubtopApp, make_app
from tui.screens import (
    DetailScreen,
    EngineScreen,
    ExportScreen,
    GroupTasksScreen,
    HelpScreen,
    PickerScreen,
    PreviewScreen,
    ScopeScreen,
    TriageScreen,
)
from tui.screens.detail import DocumentView, build_document, find_matches

NOW = T0 + timedelta(hours=1)
SIZE = (140, 40)


def make(source: FakeSource | None = None, **kwargs) -> HubtopApp:
    """The real app over a fake source, deterministic; `app.notes` records every notification."""
    kwargs.setdefault("autopoll", False)
    kwargs.setdefault("clock", lambda: 1000.0)
    kwargs.setdefault("now", lambda: NOW)
    app = make_app(source if source is not None else FakeSource(100), **kwargs)
    app.notes = []  # type: ignore[attr-defined]
    notify = app.notify

    def record(message: str, **kw) -> None:
        app.notes.append(message)  # type: ignore[attr-defined]
        notify(message, **kw)

    app.notify = record  # type: ignore[method-assign]
    return app


async def wait_for(pilot, condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll `condition` with pilot.pause until it is truthy or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await pilot.pause(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def started(pilot) -> HubtopApp:
    """The app has its source open and one poll applied."""
    app = pilot.app
    await wait_for(pilot, lambda: app.poller is not None, what="the poller")
    await app.poll_once()
    await pilot.pause()
    return app


async def goto(pilot, msg_id: str) -> None:
    """Put the main table's cursor on a task, as the user would find it."""
    pilot.app.select_task(msg_id)
    await pilot.pause()
    assert pilot.app.cursor_id() == msg_id


async def mark(pilot, msg_ids: list[str]) -> None:
    for msg_id in msg_ids:
        await goto(pilot, msg_id)
        await pilot.press("space")
    await wait_for(pilot, lambda: sorted(pilot.app.marked_ids()) == sorted(msg_ids), what="marks")


def visible_text(view: DocumentView) -> str:
    """What the document view draws right now, as text (what a person sees)."""
    return "\n".join(view.render_line(y).text for y in range(view.size.height))


def failed_ids(app: HubtopApp) -> list[str]:
    return app.store.ids(pane_filter("failed"))


def fake_failed(source: FakeSource) -> list[str]:
    return sorted(m for m, r in source.records.items() if r.state.value == "failed")


async def open_detail(pilot, app: HubtopApp, msg_id: str) -> DetailScreen:
    await goto(pilot, msg_id)
    await pilot.press("enter")
    screen = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, what="detail screen")
    await wait_for(pilot, lambda: not screen.loading_detail, what="detail loaded")
    await pilot.pause()
    return screen


# -- detail --------------------------------------------------------------------------------------


async def test_detail_shows_traceback_without_ansi_and_stdout():
    source = FakeSource(100)
    app = make(source)
    failed = fake_failed(source)[0]
    rec = source.records[failed]
    ok = next(r for r in source.records.values() if r.state.value == "succeeded" and r.stdout_size)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        screen = await open_detail(pilot, app, failed)
        doc = screen.view.document
        plain = "\n".join(line if isinstance(line, str) else line.plain for line in doc.lines)
        assert f"{rec.ename}: {rec.evalue}" in plain
        assert "Traceback (most recent call last)" in plain
        screen.view.scroll_to(y=doc.sections["Traceback"], animate=False, immediate=True)
        await pilot.pause()
        seen = visible_text(screen.view)
        assert "Traceback (most recent call last)" in seen
        assert "\x1b" not in seen and "[31m" not in seen
        assert f"{rec.ename}: {rec.evalue}" in seen
        # the traceback keeps its colours: the ename is drawn in ANSI red
        tb_line = next(line for line in doc.lines[doc.sections["Traceback"]:] if not isinstance(line, str)
                       and line.plain.startswith(rec.ename))
        assert any(span.style.color and span.style.color.number == 1 for span in tb_line.spans)
        # fields are humanized: absolute + relative times, engine id + uuid
        assert "2026-11-20 10:0" in plain and "UTC" in plain and "min ago" in plain
        assert rec.engine_uuid in plain
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DetailScreen))
        screen = await open_detail(pilot, app, ok.msg_id)
        doc = screen.view.document
        start = doc.sections[next(k for k in doc.sections if k.startswith("Stdout"))]
        assert doc.lines[start + 1] == "hello stdout"


async def test_detail_error_without_a_message_has_no_colon_and_the_title_keeps_one_line():
    # the scheduler's TaskTimeout carries no message; a raised error's message may run over several lines
    source = FakeSource(40)
    timeout, multi = fake_failed(source)[:2]
    source.records[timeout].ename, source.records[timeout].evalue = "TaskTimeout", ""
    source.records[multi].ename, source.records[multi].evalue = "ValueError", "first line\nsecond line"
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        screen = await open_detail(pilot, app, timeout)
        title = str(screen.query_one("#detail-title").render())
        assert "TaskTimeout" in title and "TaskTimeout:" not in title
        plain = "\n".join(l if isinstance(l, str) else l.plain for l in screen.view.document.lines)
        error_field = next(line for line in plain.splitlines() if line.strip().startswith("error"))
        assert error_field.rstrip().endswith("TaskTimeout")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DetailScreen))
        screen = await open_detail(pilot, app, multi)
        title = str(screen.query_one("#detail-title").render())
        assert "ValueError: first line" in title and "second line" not in title
        plain = "\n".join(l if isinstance(l, str) else l.plain for l in screen.view.document.lines)
        assert "ValueError: first line\nsecond line" in plain  # the field keeps the whole message


async def test_detail_error_is_one_line():
    app = make(FakeSource(20))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        app.push_screen(DetailScreen("no-such-task"))
        screen = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen)
        await wait_for(pilot, lambda: screen.error is not None, what="error")
        assert screen.error == "no task no-such-task"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DetailScreen))


async def test_escape_returns_to_the_same_place_and_copy_keys():
    source = FakeSource(40)
    app = make(source)
    msg_id = fake_failed(source)[1]
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await open_detail(pilot, app, msg_id)
        await pilot.press("c")
        assert app.clipboard == msg_id
        await pilot.press("y")
        snippet = app.clipboard
        assert f"rc.get_result('{msg_id}')" in snippet
        assert f"rc.resubmit(['{msg_id}'])" in snippet
        assert f"rc.db_query({{'msg_id': '{msg_id}'}})" in snippet
        compile(snippet, "<snippet>", "exec")
        assert any("copied msg_id" in n for n in app.notes) and any("snippet" in n for n in app.notes)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DetailScreen))
        assert app.cursor_id() == msg_id  # back on the same row


async def test_lineage_jump_to_original_and_latest():
    source = FakeSource(40)
    original = fake_failed(source)[0]
    first = source.resubmit([original])[original]
    second = source.resubmit([first])[first]
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert app.store.lineage(first) == [original, first, second]
        screen = await open_detail(pilot, app, first)
        plain = "\n".join(l if isinstance(l, str) else l.plain for l in screen.view.document.lines)
        assert "Lineage (3 attempts)" in plain and "◀ this task" in plain
        await pilot.press("o")
        await wait_for(pilot, lambda: screen.msg_id == original and not screen.loading_detail)
        assert screen.detail.record.msg_id == original
        await pilot.press("l")
        await wait_for(pilot, lambda: screen.msg_id == second and not screen.loading_detail)
        assert screen.detail.record.msg_id == second
        assert screen.detail.resubmitted_from == first


async def test_detail_follows_the_task_and_says_when_it_is_gone():
    source = FakeSource(40)
    pending = sorted(m for m, r in source.records.items() if r.state.value == "pending")[0]
    source.records[pending].stdout_size = 1000  # the fake's detail then has 100 lines of stdout
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        screen = await open_detail(pilot, app, pending)
        assert screen.detail.record.state.value == "pending"
        screen.view.scroll_to(y=5, animate=False, immediate=True)
        await pilot.pause()
        assert screen.view.scroll_offset.y == 5
        rec = source.records[pending]
        source.records[pending] = type(rec)(**{**{f: getattr(rec, f) for f in rec.__slots__},
                                               "state": rec.state.__class__("succeeded"),
                                               "started": T0, "completed": T0 + timedelta(seconds=2)})
        await app.poll_once()
        await wait_for(pilot, lambda: screen.detail is not None and screen.detail.record.state.value == "succeeded",
                       timeout=5, what="the detail reloaded")
        assert screen.view.scroll_offset.y == 5  # the reader stays where they were
        del source.records[pending]
        await app.poll_once()
        status = screen.query_one("#detail-status")
        await wait_for(pilot, lambda: "no longer in the source" in str(status.render()), timeout=5)


async def test_search_highlights_and_n_moves():
    source = FakeSource(40)
    msg_id = fake_failed(source)[0]
    source.details[msg_id] = TaskDetail(record=source.records[msg_id],
                                        stdout="".join(f"line {i} needle here\n" for i in range(300)),
                                        traceback=["\x1b[31mValueError\x1b[39m: needle in tb"])
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        screen = await open_detail(pilot, app, msg_id)
        await pilot.press("slash")
        await pilot.press(*"needle")
        await wait_for(pilot, lambda: len(screen.view.matches) == 301, what="301 matches")
        await pilot.press("enter")
        first = screen.view.current
        await pilot.press("n")
        assert screen.view.current == (first + 1) % 301
        await pilot.press("N", "N")
        assert screen.view.current == (first - 1) % 301
        line, column = screen.view.matches[screen.view.current]
        top = screen.view.scroll_offset.y
        assert top <= line < top + screen.view.size.height  # the current match is on screen
        strip = screen.view.render_line(line - top)
        assert any(seg.style and seg.style.bgcolor is not None and seg.text.lower() == "needle" for seg in strip)


async def test_search_typed_while_the_detail_loads_keeps_its_keys():
    import threading

    class SlowSource(FakeSource):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.release = threading.Event()

        def detail(self, msg_id: str) -> TaskDetail:
            self.release.wait(10)
            return super().detail(msg_id)

    source = SlowSource(40)
    failed = fake_failed(source)[0]
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await goto(pilot, failed)
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen)
        assert screen.loading_detail
        await pilot.press("slash", *"Traceback")
        source.release.set()
        await wait_for(pilot, lambda: not screen.loading_detail, what="detail loaded")
        await pilot.press(*" (most")
        await wait_for(pilot, lambda: screen.view.matches, what="matches")
        from textual.widgets import Input

        assert screen.query_one("#detail-search", Input).value == "Traceback (most"
        assert len(screen.view.matches) == 1


def test_find_matches_smart_case():
    rec = next(iter(FakeSource(3).records.values()))
    doc = build_document(TaskDetail(record=rec, stdout="Needle needle NEEDLE\n"), now=NOW)
    assert len(find_matches(doc, "needle")) == 3
    assert len(find_matches(doc, "Needle")) == 1


def test_document_code_highlighted_and_traceback_once():
    rec = next(r for r in FakeSource(20).records.values() if r.state.value == "failed")
    detail = TaskDetail(record=rec, code="x = 6 * 7\nprint(x)", traceback=["\x1b[31mValueError\x1b[0m: boom"],
                        result_content={"status": "error", "ename": "ValueError", "evalue": "boom",
                                        "traceback": ["\x1b[31mValueError\x1b[0m: boom"]})
    doc = build_document(detail, now=NOW)
    code = doc.lines[doc.sections["Code"] + 1]
    assert code.plain == "x = 6 * 7" and code.spans  # highlighted
    plain = [line if isinstance(line, str) else line.plain for line in doc.lines]
    assert sum("ValueError: boom" in line for line in plain) == 1  # the traceback only, not again as JSON
    assert not any("\\u001b" in line or "traceback" in line for line in plain[doc.sections["Result content"]:])


async def test_50mb_stdout_is_truncated_quickly_and_show_all_does_not_freeze():
    source = FakeSource(20)
    msg_id = sorted(source.records)[5]
    line = "x" * 90
    big = "".join(f"{i:08d} {line}\n" for i in range(520_000))  # ~52 MB
    assert len(big) > 50_000_000
    source.details[msg_id] = TaskDetail(record=source.records[msg_id], stdout=big)
    gaps: list[float] = []
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        app.set_interval(0.01, tick)
        t0 = time.perf_counter()
        screen = await open_detail(pilot, app, msg_id)
        truncated_s = time.perf_counter() - t0
        doc = screen.view.document
        assert len(doc.lines) < 3_000
        assert "Stdout" in doc.truncated
        plain = "\n".join(l if isinstance(l, str) else l.plain for l in doc.lines)
        assert "hidden (518,401 lines)" in plain and "press a to show all" in plain
        assert doc.lines[doc.sections[next(k for k in doc.sections if k.startswith("Stdout"))] + 1].startswith("00000000")
        assert "00519999" in plain  # the tail is there
        assert truncated_s < 3.0, truncated_s
        worst_truncated = max(gaps)
        gaps.clear()
        t1 = time.perf_counter()
        await pilot.press("a")
        await wait_for(pilot, lambda: len(screen.view.document.lines) > 500_000, timeout=30, what="full output")
        all_s = time.perf_counter() - t1
        await pilot.press("end")
        await pilot.pause()
        assert "00519999" in visible_text(screen.view)
        worst_all = max(gaps)
        # searching all of it happens in a thread, once typing pauses
        gaps.clear()
        t2 = time.perf_counter()
        await pilot.press("slash", *"00400000")
        await wait_for(pilot, lambda: screen.view.matches == [(screen.view.matches or [(0, 0)])[0]]
                       and screen.view.current == 0, timeout=30, what="the one match")
        search_s = time.perf_counter() - t2
        line, _ = screen.view.matches[0]
        assert screen.view.document.lines[line].startswith("00400000")
        worst_search = max(gaps)
        print(f"\n50 MB stdout: truncated view in {truncated_s:.2f} s (worst UI gap {worst_truncated * 1000:.0f} ms); "
              f"show all in {all_s:.2f} s (worst UI gap {worst_all * 1000:.0f} ms); "
              f"search of all in {search_s:.2f} s (worst UI gap {worst_search * 1000:.0f} ms)")
        assert worst_all < 0.75 and worst_search < 0.75, (worst_all, worst_search)  # ~0.1 s measured here


# -- actions ---------------------------------------------------------------------------------------


async def choose_scope(pilot, app, label_part: str) -> None:
    from textual.widgets import OptionList

    screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen, what="scope screen")
    index = next(i for i, s in enumerate(screen.scopes) if label_part in s.label)
    screen.query_one(OptionList).highlighted = index
    await pilot.press("enter")


async def test_resubmit_flow_cancel_then_confirm():
    source = FakeSource(60)
    failed = fake_failed(source)[0]
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await goto(pilot, failed)
        await pilot.press("r")
        scope_screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen)
        labels = [s.label for s in scope_screen.scopes]
        assert labels[0].startswith("the task under the cursor")
        assert "all 60 tasks" in labels[-1]
        await choose_scope(pilot, app, "cursor")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert preview.preview.send == [failed]
        body = str(preview.query_one("#preview-body").render())
        assert "1 to send" in body and "0 pending" in body
        await pilot.press("enter")  # the focused button is Cancel: enter alone never sends
        await wait_for(pilot, lambda: not isinstance(app.screen, PreviewScreen))
        await pilot.press("r")
        await choose_scope(pilot, app, "cursor")
        await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, PreviewScreen))
        assert source.resubmit_calls == []
        assert sum("cancelled" in n for n in app.notes) == 2
        await pilot.press("r")
        await choose_scope(pilot, app, "cursor")
        await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: any(n.startswith("resubmitted") for n in app.notes), what="result note")
        assert source.resubmit_calls == [[failed]]
        note = next(n for n in app.notes if n.startswith("resubmitted"))
        new_id = source.records[failed].resubmitted
        assert note.startswith("resubmitted 1 task: ") and "→" in note and new_id.rsplit("_", 1)[1] in note
        await app.poll_once()
        assert app.store.get(new_id) is not None and app.store.get(failed).resubmitted == new_id


async def test_purge_preview_leaves_out_pending_and_clears_marks():
    source = FakeSource(60)
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        pending = app.store.ids(pane_filter("pending"))[:2]
        done = app.store.ids(pane_filter("succeeded"))[:3]
        await mark(pilot, pending + done)
        await goto(pilot, done[0])
        await pilot.press("p")
        scope_screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen)
        assert [s.key for s in scope_screen.scopes][:2] == ["cursor", "marked"]
        assert scope_screen.scopes[-1].key == "engine"
        await choose_scope(pilot, app, "marked")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert sorted(preview.preview.send) == sorted(done)
        body = str(preview.query_one("#preview-body").render())
        assert "3 to send" in body and "2 pending, left out" in body
        assert "the Hub refuses to purge pending tasks" in str(preview.query_one("#preview-summary").render())
        await pilot.press("y")
        await wait_for(pilot, lambda: source.purge_calls, what="purge sent")
        assert [sorted(c) for c in source.purge_calls] == [sorted(done)]
        await wait_for(pilot, lambda: app.marked_ids() == [], what="marks cleared")
        await app.poll_once()
        assert all(app.store.get(m) is None for m in done)
        assert all(app.store.get(m) is not None for m in pending)


async def test_scopes_offer_the_pane_and_every_pane():
    source = FakeSource(60)
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        app.set_pane("failed")
        await pilot.pause()
        await pilot.press("p")
        scope_screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen)
        labels = {s.key: s.label for s in scope_screen.scopes}
        n_failed = len(failed_ids(app))
        n_done = app.store.count(("state IN ('succeeded','failed','aborted')", ()))
        assert labels["pane"] == f"the {n_failed} completed tasks of the Failed pane"
        assert labels["filter"] == f"all {n_done} completed tasks (every pane)"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ScopeScreen))
        # a query narrows both
        app.set_filter("engine:1")
        await wait_for(pilot, lambda: app.filter_text == "engine:1")
        await pilot.press("p")
        scope_screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen)
        labels = {s.key: s.label for s in scope_screen.scopes}
        n_failed_1 = app.store.count(combine(pane_filter("failed"), ("engine_id = 1", ())))
        if n_failed_1:
            assert labels["pane"].endswith("of the Failed pane matching engine:1")
        assert labels["filter"].endswith("matching engine:1 (every pane)")
        await pilot.press("escape")
        assert source.purge_calls == []


async def test_purge_one_engines_completed_tasks():
    from textual.widgets import OptionList

    source = FakeSource(40)
    app = make(source)
    engine = source.engine_list[1]
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        expected = app.store.ids(combine(("engine_uuid = ?", (engine.uuid,)),
                                         ("state IN ('succeeded','failed','aborted')", ())))
        await pilot.press("p")
        await choose_scope(pilot, app, "one engine")
        picker = await wait_for(pilot, lambda: isinstance(app.screen, EngineScreen) and app.screen)
        picker.query_one(OptionList).highlighted = next(i for i, (uuid, _) in enumerate(picker.rows)
                                                        if uuid == engine.uuid)
        await pilot.press("enter")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert sorted(preview.preview.send) == sorted(expected)
        assert preview.scope_label == f"{len(expected)} completed tasks of engine 1"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, PreviewScreen))
        assert source.purge_calls == []


async def test_read_only_and_capabilities_refuse_with_a_message():
    source = FakeSource(20)
    app = make(source, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await goto(pilot, fake_failed(source)[0])
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, (ScopeScreen, PreviewScreen))
        assert "--read-only is on: resubmit is disabled" in app.notes
        await pilot.press("p")
        await pilot.pause()
        assert "--read-only is on: purge is disabled" in app.notes
    caps = Capabilities(kind="sqlite", can_resubmit=False, resubmit_reason="a tasks.db file cannot resubmit: open the Hub")
    source = FakeSource(20, caps=caps)
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await goto(pilot, fake_failed(source)[0])
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, (ScopeScreen, PreviewScreen))
        assert "a tasks.db file cannot resubmit: open the Hub" in app.notes
        assert source.resubmit_calls == []


async def test_detail_r_acts_on_this_task_only():
    source = FakeSource(40)
    failed = fake_failed(source)[1]
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await open_detail(pilot, app, failed)
        await pilot.press("r")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert preview.preview.send == [failed]
        await pilot.press("y")
        await wait_for(pilot, lambda: source.resubmit_calls == [[failed]])
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen))


# -- triage ----------------------------------------------------------------------------------------


async def test_triage_groups_and_bulk_resubmit_of_a_group():
    from textual.widgets import DataTable

    source = FakeSource(200)
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        groups = app.store.failure_groups()
        assert len(groups) >= 3
        await pilot.press("f")
        triage = await wait_for(pilot, lambda: isinstance(app.screen, TriageScreen) and app.screen)
        table = triage.query_one(DataTable)
        assert table.row_count == len(groups)
        assert [k.value for k in table.rows] == [g.signature for g in groups]
        target = next(g for g in groups if g.signature.startswith("ValueError"))
        assert target.signature == "ValueError: bad value N"
        table.move_cursor(row=table.get_row_index(target.signature))
        # enter: the group's tasks; enter on one: its detail
        await pilot.press("enter")
        group = await wait_for(pilot, lambda: isinstance(app.screen, GroupTasksScreen) and app.screen)
        assert group.query_one(DataTable).row_count == target.count
        await pilot.press("enter")
        detail = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen)
        await wait_for(pilot, lambda: not detail.loading_detail)
        assert detail.detail.record.ename == "ValueError"
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is group)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is triage)
        # r: the whole group
        await pilot.press("r")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        ids = app.store.ids(app.store.signature_filter(target.signature))
        assert sorted(preview.preview.send) == sorted(ids) and len(ids) == target.count
        assert preview.scope_label == f"{target.count} tasks of group ValueError: bad value N"
        await pilot.press("y")
        await wait_for(pilot, lambda: source.resubmit_calls, what="group resubmitted")
        assert [sorted(c) for c in source.resubmit_calls] == [sorted(ids)]
        await app.poll_once()
        assert all(app.store.get(i).resubmitted for i in ids)
        # now the group offers "not resubmitted yet" apart (here: none left, so only the whole group)
        await pilot.press("r")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert "already resubmitted" in str(preview.query_one("#preview-summary").render())
        await pilot.press("n")


# -- help, picker, export ----------------------------------------------------------------------------


async def test_help_lists_live_bindings_with_keymap():
    app = make(FakeSource(10), keymap={"detail.copy_snippet": "Y", "main.triage": "F"})
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("question_mark")
        help_screen = await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen)
        groups = dict(help_screen.groups())
        main = next(rows for title, rows in groups.items() if title.startswith("This screen"))
        assert ("F", "Triage") in main  # the live, remapped key
        assert ("r", "Resubmit") in main
        table = next(rows for title, rows in groups.items() if title.startswith("Task table"))
        assert ("space", "Mark") in table
        detail_rows = {d: k for k, d in groups["Task detail"]}
        assert detail_rows["Copy snippet"] == "Y"
        assert detail_rows["Search"] == "/ ^f"
        assert "Failure triage" in groups and "Action: preview" in groups and "Every screen" in groups
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))


async def test_help_from_the_detail_lists_its_live_keys_first():
    source = FakeSource(20)
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await open_detail(pilot, app, fake_failed(source)[0])
        await pilot.press("question_mark")
        help_screen = await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen)
        titles = [title for title, _ in help_screen.groups()]
        assert titles[0] == "This screen (Detail)"
        assert "Task detail" not in titles  # not twice
        first = dict((d, k) for k, d in help_screen.groups()[0][1])
        assert first["Copy snippet"] == "y" and first["Help"] == "?"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen))


async def test_picker_dismisses_with_path_or_none(tmp_path):
    choices = [("default", None, tmp_path / "a.json", NOW.timestamp() - 120),
               ("work", "x1", tmp_path / "b.json", NOW.timestamp() - 7200)]
    results: list = []
    app = make(FakeSource(5))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        app.push_screen(PickerScreen(choices, now=NOW), results.append)
        from textual.widgets import DataTable

        picker = await wait_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen)
        table = await wait_for(pilot, lambda: next((t for t in picker.query(DataTable) if t.row_count == 2), None))
        cells = [str(c) for c in table.get_row_at(1)]
        assert cells == ["work", "x1", str(tmp_path / "b.json"), "2 h ago"]
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: results)
        assert results == [str(tmp_path / "b.json")]
        app.push_screen(PickerScreen(choices, now=NOW), results.append)
        await wait_for(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(results) == 2)
        assert results[1] is None


async def test_startup_picker_opens_the_chosen_source_or_quits(tmp_path):
    from tests.datasource.dbfixtures import make_records, write_sqlite

    db = tmp_path / "tasks.db"
    write_sqlite(db, make_records(30))
    choices = [("default", None, tmp_path / "nowhere-client.json", NOW.timestamp() - 60),
               ("work", None, db, NOW.timestamp() - 3600)]
    app = make_app(None, choices=choices, autopoll=False, now=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, PickerScreen), what="the picker")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.poller is not None, what="the chosen source opened")
        await app.poll_once()
        assert app.store.total == 30
        assert not isinstance(app.screen, PickerScreen)
    app = make_app(None, choices=choices, autopoll=False, now=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, PickerScreen), what="the picker")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.return_code is not None or not app.is_running, what="the app quits")


async def test_export_writes_the_view(tmp_path, monkeypatch):
    import json

    from textual.widgets import Input

    monkeypatch.chdir(tmp_path)
    source = FakeSource(30)
    app = make(source)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        app.set_filter("state:failed")
        await wait_for(pilot, lambda: app.filter_text == "state:failed")
        await pilot.press("x")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen) and app.screen)
        path_input = screen.query_one("#export-path", Input)
        stamp = NOW.astimezone().strftime("%Y%m%d-%H%M%S")  # the injected clock, in local time
        assert path_input.value == str(tmp_path / f"hubtop-export-{stamp}.csv")
        await pilot.click("#fmt-json")
        await wait_for(pilot, lambda: path_input.value.endswith(".json"))
        path_input.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(n.startswith("exported") for n in app.notes), what="export note")
        written = list(tmp_path.glob("hubtop-export-*.json"))
        assert written == [tmp_path / f"hubtop-export-{stamp}.json"]
        rows = json.loads(written[0].read_text())
        assert sorted(r["msg_id"] for r in rows) == fake_failed(source)


def screen_text(app) -> str:
    """The text of the screen as drawn (an SVG screenshot without its markup)."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")


# -- end to end: the real app on a real cluster --------------------------------------------------------


@pytest.mark.cluster
async def test_end_to_end_detail_resubmit_purge_on_a_real_cluster(fresh_cluster):
    from datasource.model import strip_ansi
    from datasource.sources.open import open_source
    from tui.format import short_id

    cluster = fresh_cluster("sqlite", n=2, workload=True)
    w = cluster.workload
    app = make_app(open_source(cluster.connection_file), poll_interval=0.5)
    notes: list[str] = []
    notify = app.notify

    def record(message: str, **kwargs) -> None:
        notes.append(message)
        notify(message, **kwargs)

    app.notify = record  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: all(app.store.get(m) is not None for m in w.all), timeout=30,
                       what="the workload in the store")
        failed = w.value_errors[0]
        # a direct tasks.db read can lag the Hub by its commit interval (~2 s): wait for the completions
        await wait_for(pilot, lambda: app.store.get(failed).state.value == "failed"
                       and app.store.get(w.succeeded[0]).state.value == "succeeded", timeout=30,
                       what="the workload's completions")

        # detail of a failed task: its traceback, as text
        app.select_task(failed)
        await pilot.pause()
        assert app.cursor_id() == failed
        await pilot.press("enter")
        detail = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, what="detail")
        await wait_for(pilot, lambda: not detail.loading_detail, timeout=20, what="detail loaded")
        assert detail.error is None
        doc = detail.view.document
        assert "Traceback" in doc.sections
        tb = [line.plain for line in doc.lines[doc.sections["Traceback"]:] if not isinstance(line, str)]
        assert any("ValueError: bad value 7" in line for line in tb)
        assert not any("\x1b" in line for line in tb)
        assert "ValueError: bad value 7" in "\n".join(strip_ansi(t) for t in detail.detail.traceback)

        # resubmit it from the detail: r -> preview -> y
        await pilot.press("r")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen, what="preview")
        assert preview.preview.send == [failed] and preview.preview.allowed
        await pilot.press("y")
        new_id = await wait_for(pilot, lambda: getattr(app.store.get(failed), "resubmitted", None), timeout=30,
                                what="the original marked resubmitted")
        await wait_for(pilot, lambda: app.store.get(new_id) is not None, timeout=30, what="the new task in the store")
        assert any(n.startswith("resubmitted 1 task: ") and "→" in n for n in notes), notes
        await wait_for(pilot, lambda: app.store.lineage(failed) == [failed, new_id], timeout=10)
        # the retry runs the same failing function: it fails again, on the cluster
        await wait_for(pilot, lambda: app.store.get(new_id).state.value == "failed", timeout=30, what="retry done")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DetailScreen))

        # purge a completed task: p -> the cursor row -> preview -> y; its row is gone
        done = w.succeeded[0]
        app.select_task(done)
        await pilot.pause()
        assert app.cursor_id() == done
        assert f"{short_id(done)} " in screen_text(app)  # the row is on screen
        await pilot.press("p")
        await choose_scope(pilot, app, "cursor")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen, what="preview")
        assert preview.preview.send == [done]
        await pilot.press("y")
        await wait_for(pilot, lambda: app.store.get(done) is None, timeout=30, what="the purged row gone")
        await wait_for(pilot, lambda: not isinstance(app.screen, PreviewScreen))
        await pilot.pause(0.2)
        assert f"{short_id(done)} " not in screen_text(app)  # and gone from the screen
        assert any(n.startswith("purged 1 task") for n in notes), notes
        assert app.cursor_id() != done
        assert app.store.get(w.succeeded[1]) is not None  # nothing else went
