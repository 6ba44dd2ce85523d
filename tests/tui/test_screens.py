"""Pilot tests of the screens (detail, actions flow, triage, help, picker, export) over FakeSource + TaskStore.

`ScreensHarness` is a small App with the attributes of the contract (store, source, read_only, now(),
caps, view_filter(), cursor_id(), marked_ids(), clear_marks(), refresh_now(), select_task()) and the
main screen's keys that open the screens; the end-to-end test at the bottom drives the real HubtopApp
on a real cluster.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Callable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from datasource.model import TaskDetail
from datasource.sources.base import Capabilities
from datasource.store import TaskStore, combine, pane_filter
from tests.fakes import T0, FakeSource
from tui.screens import (
    DetailScreen,
    ExportScreen,
    GroupTasksScreen,
    HelpScreen,
    PickerScreen,
    PreviewScreen,
    ScopeScreen,
    TriageScreen,
    start_action,
    start_export,
)
from tui.screens.detail import DocumentView, build_document, find_matches

NOW = T0 + timedelta(minutes=5)
SIZE = (140, 40)


class ScreensHarness(App):
    """The contract's app surface over FakeSource + a real TaskStore, with the keys that open the screens."""

    BINDINGS = [
        Binding("enter", "detail", "Detail"),
        Binding("f", "triage", "Triage"),
        Binding("r", "act('resubmit')", "Resubmit"),
        Binding("p", "act('purge')", "Purge"),
        Binding("question_mark", "help", "Help"),
        Binding("x", "export", "Export"),
    ]

    def __init__(self, source: FakeSource | None = None, *, read_only: bool = False) -> None:
        super().__init__()
        self.source = source or FakeSource(100)
        self.store = TaskStore()
        self.read_only = read_only
        self.cursor: str | None = None
        self.marks: list[str] = []
        self.filter = ("1", ())
        self.filter_text = ""
        self.refreshes = 0
        self.notes: list[str] = []
        self.sync()

    def compose(self) -> ComposeResult:
        yield Static("main screen", id="main")

    def sync(self) -> None:
        for delta in self.source.sync():
            self.store.apply(delta)

    # -- the contract --
    @property
    def caps(self) -> Capabilities:
        return self.source.capabilities()

    def now(self) -> datetime:
        return NOW

    def view_filter(self):
        return self.filter

    def cursor_id(self) -> str | None:
        return self.cursor

    def marked_ids(self) -> list[str]:
        return list(self.marks)

    def clear_marks(self) -> None:
        self.marks = []

    def refresh_now(self) -> None:
        self.refreshes += 1
        self.sync()

    def select_task(self, msg_id: str) -> None:
        self.cursor = msg_id

    def notify(self, message: str, **kwargs) -> None:  # type: ignore[override]
        self.notes.append(message)
        super().notify(message, **kwargs)

    # -- the main screen's keys --
    def action_detail(self) -> None:
        if self.cursor:
            self.push_screen(DetailScreen(self.cursor))

    def action_triage(self) -> None:
        self.push_screen(TriageScreen())

    def action_act(self, action: str) -> None:
        start_action(self, action)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_export(self) -> None:
        start_export(self)


async def wait_for(pilot, condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll `condition` with pilot.pause until it is truthy or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await pilot.pause(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def visible_text(view: DocumentView) -> str:
    """What the document view draws right now, as text (what a person sees)."""
    return "\n".join(view.render_line(y).text for y in range(view.size.height))


def failed_ids(app: ScreensHarness) -> list[str]:
    return app.store.ids(pane_filter("failed"))


async def open_detail(pilot, app: ScreensHarness, msg_id: str) -> DetailScreen:
    app.cursor = msg_id
    await pilot.press("enter")
    screen = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, what="detail screen")
    await wait_for(pilot, lambda: not screen.loading_detail, what="detail loaded")
    await pilot.pause()
    return screen


# -- detail --------------------------------------------------------------------------------------


async def test_detail_shows_traceback_without_ansi_and_stdout():
    app = ScreensHarness(FakeSource(100))
    failed = failed_ids(app)[0]
    rec = app.store.get(failed)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, app, failed)
        doc = screen.view.document
        plain = "\n".join(line if isinstance(line, str) else line.plain for line in doc.lines)
        assert f"{rec.ename}: {rec.evalue}" in plain
        assert "Traceback (most recent call last)" in plain
        assert "Traceback" in doc.sections
        screen.view.scroll_to(y=doc.sections["Traceback"], animate=False)
        await pilot.pause()
        seen = visible_text(screen.view)
        assert "Traceback (most recent call last)" in seen
        assert "\x1b" not in seen and "[31m" not in seen
        assert f"{rec.ename}: {rec.evalue}" in seen
        # the traceback keeps its colours: the ename is drawn red
        tb_line = next(line for line in doc.lines[doc.sections["Traceback"]:] if not isinstance(line, str)
                       and line.plain.startswith(rec.ename))
        assert any(span.style.color and span.style.color.number == 1 for span in tb_line.spans)  # ANSI red
        # fields are humanized: absolute + relative times, engine id + uuid
        assert "UTC" in plain and "min ago" in plain
        assert rec.engine_uuid in plain
    # stdout of a succeeded task with output
    ok = next(r for r in app.store.page(pane_filter("succeeded"), limit=100) if r.stdout_size)
    app2 = ScreensHarness(app.source)
    async with app2.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, app2, ok.msg_id)
        doc = screen.view.document
        start = doc.sections[next(k for k in doc.sections if k.startswith("Stdout"))]
        assert doc.lines[start + 1] == "hello stdout"


async def test_detail_error_is_one_line():
    app = ScreensHarness(FakeSource(20))
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(DetailScreen("no-such-task"))
        screen = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen)
        await wait_for(pilot, lambda: screen.error is not None, what="error")
        assert screen.error == "no task no-such-task"
        assert "\n" not in screen.error
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DetailScreen))


async def test_escape_returns_to_the_list_and_copy_keys():
    app = ScreensHarness(FakeSource(40))
    msg_id = failed_ids(app)[0]
    async with app.run_test(size=SIZE) as pilot:
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
        assert app.cursor == msg_id  # the list was not touched


async def test_lineage_jump_to_original_and_latest():
    source = FakeSource(40)
    app = ScreensHarness(source)
    original = failed_ids(app)[0]
    first = source.resubmit([original])[original]
    second = source.resubmit([first])[first]
    app.sync()
    assert app.store.lineage(first) == [original, first, second]
    async with app.run_test(size=SIZE) as pilot:
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


async def test_search_highlights_and_n_moves():
    source = FakeSource(40)
    app = ScreensHarness(source)
    msg_id = failed_ids(app)[0]
    rec = source.records[msg_id]
    source.details[msg_id] = TaskDetail(record=rec, stdout="".join(f"line {i} needle here\n" for i in range(300)),
                                        traceback=["\x1b[31mValueError\x1b[39m: needle in tb"])
    async with app.run_test(size=SIZE) as pilot:
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
        # the match is highlighted where it is drawn
        strip = screen.view.render_line(line - top)
        assert any(seg.style and seg.style.bgcolor is not None and seg.text.lower() == "needle" for seg in strip)


def test_find_matches_smart_case():
    doc = build_document(TaskDetail(record=FakeSource(3).records[next(iter(FakeSource(3).records))],
                                    stdout="Needle needle NEEDLE\n"), now=NOW)
    assert len(find_matches(doc, "needle")) == 3
    assert len(find_matches(doc, "Needle")) == 1


async def test_50mb_stdout_is_truncated_quickly_and_show_all_does_not_freeze():
    source = FakeSource(20)
    app = ScreensHarness(source)
    msg_id = next(iter(source.records))
    line = "x" * 90
    big = "".join(f"{i:08d} {line}\n" for i in range(520_000))  # ~52 MB
    assert len(big) > 50_000_000
    source.details[msg_id] = TaskDetail(record=source.records[msg_id], stdout=big)
    gaps: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
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
        print(f"\n50 MB stdout: truncated view in {truncated_s:.2f} s (worst UI gap {worst_truncated * 1000:.0f} ms); "
              f"show all in {all_s:.2f} s (worst UI gap {worst_all * 1000:.0f} ms)")
        assert worst_all < 1.5, worst_all


# -- actions ---------------------------------------------------------------------------------------


async def choose_scope(pilot, app, label_part: str) -> None:
    screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen, what="scope screen")
    index = next(i for i, s in enumerate(screen.scopes) if label_part in s.label)
    from textual.widgets import OptionList

    screen.query_one(OptionList).highlighted = index
    await pilot.press("enter")


async def test_resubmit_flow_cancel_then_confirm():
    source = FakeSource(60)
    app = ScreensHarness(source)
    failed = failed_ids(app)[0]
    app.cursor = failed
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        scope_screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen)
        labels = [s.label for s in scope_screen.scopes]
        assert labels[0].startswith("the task under the cursor") and labels[1] == "all 60 tasks"
        await choose_scope(pilot, app, "cursor")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert preview.preview.send == [failed]
        body = str(preview.query_one("#preview-body").render())
        assert "1 to send" in body and "0 pending" in body
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, PreviewScreen))
        assert source.resubmit_calls == []
        assert any("cancelled" in n for n in app.notes)
        await pilot.press("r")
        await choose_scope(pilot, app, "cursor")
        await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: source.resubmit_calls, what="resubmit sent")
        await wait_for(pilot, lambda: any(n.startswith("resubmitted") for n in app.notes), what="result note")
        assert source.resubmit_calls == [[failed]]
        note = next(n for n in app.notes if n.startswith("resubmitted"))
        new_id = source.records[failed].resubmitted
        assert note.startswith("resubmitted 1 task: ") and "→" in note and new_id.rsplit("_", 1)[1] in note
        await wait_for(pilot, lambda: app.refreshes >= 1)
        assert app.store.get(new_id) is not None  # the new task is in the store after the refresh


async def test_purge_preview_leaves_out_pending_and_clears_marks():
    source = FakeSource(60)
    app = ScreensHarness(source)
    pending = app.store.ids(pane_filter("pending"))[:2]
    done = app.store.ids(pane_filter("succeeded"))[:3]
    app.marks = pending + done
    app.cursor = done[0]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        scope_screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen)
        assert [s.key for s in scope_screen.scopes] == ["cursor", "marked", "filter", "engine"]
        await choose_scope(pilot, app, "marked")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert sorted(preview.preview.send) == sorted(done)
        body = str(preview.query_one("#preview-body").render())
        assert "3 to send" in body and "2 pending, left out" in body
        assert "the Hub refuses to purge pending tasks" in str(preview.query_one("#preview-summary").render())
        await pilot.press("y")
        await wait_for(pilot, lambda: source.purge_calls, what="purge sent")
        assert [sorted(c) for c in source.purge_calls] == [sorted(done)]
        await wait_for(pilot, lambda: app.marks == [], what="marks cleared")
        await wait_for(pilot, lambda: all(app.store.get(m) is None for m in done), what="rows gone")


async def test_scopes_offer_the_pane_and_every_pane():
    app = ScreensHarness(FakeSource(60))
    app.current_pane = "failed"
    app.cursor = failed_ids(app)[0]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        scope_screen = await wait_for(pilot, lambda: isinstance(app.screen, ScopeScreen) and app.screen)
        labels = {s.key: s.label for s in scope_screen.scopes}
        n_failed = len(failed_ids(app))
        n_done = app.store.count(("state IN ('succeeded','failed','aborted')", ()))
        assert labels["pane"] == f"the {n_failed} completed tasks of the Failed pane"
        assert labels["filter"] == f"all {n_done} completed tasks (every pane)"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ScopeScreen))
        assert app.source.purge_calls == []


async def test_purge_one_engines_completed_tasks():
    source = FakeSource(40)
    app = ScreensHarness(source)
    engine = source.engine_list[1]
    expected = app.store.ids(combine(("engine_uuid = ?", (engine.uuid,)),
                                     ("state IN ('succeeded','failed','aborted')", ())))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await choose_scope(pilot, app, "one engine")
        from tui.screens import EngineScreen
        from textual.widgets import OptionList

        picker = await wait_for(pilot, lambda: isinstance(app.screen, EngineScreen) and app.screen)
        options = picker.query_one(OptionList)
        options.highlighted = next(i for i, (uuid, _) in enumerate(picker.rows) if uuid == engine.uuid)
        await pilot.press("enter")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert sorted(preview.preview.send) == sorted(expected)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, PreviewScreen))
        assert source.purge_calls == []


async def test_read_only_and_capabilities_refuse_with_a_message():
    app = ScreensHarness(FakeSource(20), read_only=True)
    app.cursor = failed_ids(app)[0]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, (ScopeScreen, PreviewScreen))
        assert "--read-only is on: resubmit is disabled" in app.notes
    caps = Capabilities(kind="sqlite", can_resubmit=False, resubmit_reason="a tasks.db file cannot resubmit: open the Hub")
    app = ScreensHarness(FakeSource(20, caps=caps))
    app.cursor = failed_ids(app)[0]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, (ScopeScreen, PreviewScreen))
        assert "a tasks.db file cannot resubmit: open the Hub" in app.notes
        assert app.source.resubmit_calls == []


async def test_detail_r_acts_on_this_task_only():
    source = FakeSource(40)
    app = ScreensHarness(source)
    failed = failed_ids(app)[1]
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, failed)
        await pilot.press("r")
        preview = await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen)
        assert preview.preview.send == [failed]
        await pilot.press("y")
        await wait_for(pilot, lambda: source.resubmit_calls == [[failed]])
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen))


# -- triage ----------------------------------------------------------------------------------------


async def test_triage_groups_and_bulk_resubmit_of_a_group():
    source = FakeSource(200)
    app = ScreensHarness(source)
    groups = app.store.failure_groups()
    assert len(groups) >= 3
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        triage = await wait_for(pilot, lambda: isinstance(app.screen, TriageScreen) and app.screen)
        from textual.widgets import DataTable

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
        # the table refreshes from the store: the group's tasks now have their retries
        await wait_for(pilot, lambda: all(app.store.get(i).resubmitted for i in ids))


# -- help, picker, export ----------------------------------------------------------------------------


async def test_help_lists_live_bindings_with_keymap():
    app = ScreensHarness(FakeSource(10))
    async with app.run_test(size=SIZE) as pilot:
        app.set_keymap({"detail.copy_snippet": "Y"})
        await pilot.press("question_mark")
        help_screen = await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen)
        groups = dict(help_screen.groups())
        assert ("f", "Triage") in groups["Everywhere"]
        detail_rows = dict((d, k) for k, d in groups["Task detail"])
        assert detail_rows["Copy snippet"] == "Y"  # the remapped key, not a hand-kept list
        assert detail_rows["Search"] == "/ ^f"
        assert "Failure triage" in groups and "Action: preview" in groups
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))


async def test_picker_dismisses_with_path_or_none(tmp_path):
    choices = [("default", None, tmp_path / "a.json", NOW.timestamp() - 120),
               ("work", "x1", tmp_path / "b.json", NOW.timestamp() - 7200)]
    results: list = []
    app = ScreensHarness(FakeSource(5))
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(PickerScreen(choices), results.append)
        await wait_for(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: results)
        assert results == [str(tmp_path / "b.json")]
        app.push_screen(PickerScreen(choices), results.append)
        await wait_for(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(results) == 2)
        assert results[1] is None


async def test_export_writes_the_view(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = ScreensHarness(FakeSource(30))
    app.filter = pane_filter("failed")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("x")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen) and app.screen)
        from textual.widgets import Input

        path_input = screen.query_one("#export-path", Input)
        assert path_input.value.startswith(str(tmp_path / "hubtop-export-")) and path_input.value.endswith(".csv")
        await pilot.click("#fmt-json")
        await wait_for(pilot, lambda: path_input.value.endswith(".json"))
        path_input.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(n.startswith("exported") for n in app.notes), what="export note")
        written = list(tmp_path.glob("hubtop-export-*.json"))
        assert len(written) == 1
        import json

        rows = json.loads(written[0].read_text())
        assert sorted(r["msg_id"] for r in rows) == sorted(failed_ids(app))
