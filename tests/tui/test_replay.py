"""`hubtop replay`: the dashboard over a recording, with the time keys (pilot tests on a real recording file)."""

from __future__ import annotations

from pathlib import Path

from datasource.poller import Poller
from datasource.recorder import Recorder
from datasource.sources.replay import ReplaySource
from datasource.store import TaskStore
from fakes import FakeSource, make_record
from tui.cli import main
from tui.replay import make_replay_app
from tui.widgets.status_bar import StatusBar

from .conftest import NOW, SIZE


def record(path: Path) -> list[int]:
    """Five recorded states with 100, 110, 120, 130, 140 tasks."""
    source = FakeSource(100)
    recorder = Recorder(path, source)
    poller = Poller(source, TaskStore(), on_delta=recorder.write)
    totals = []
    for k in range(5):
        for i in range(100 + 10 * k, 110 + 10 * k) if k else ():
            r = make_record(i)
            source.records[r.msg_id] = r
        poller.step()
        totals.append(poller.store.total)
    recorder.close()
    return totals


async def test_keys_move_through_time(tmp_path: Path, clock) -> None:
    path = tmp_path / "rec.db"
    assert record(path) == [100, 110, 120, 130, 140]
    source = ReplaySource(path)
    app = make_replay_app(source, autopoll=False, clock=clock, now=lambda: NOW)
    assert app.read_only
    async with app.run_test(size=SIZE) as pilot:
        await app.poll_once()
        await pilot.pause()
        assert app.store.total == 140
        assert "(poll 5 of 5)" in app.screen_main().query_one(StatusBar).text
        assert "read-only" in app.screen_main().query_one(StatusBar).text
        for key, total in (("left_square_bracket", 130), ("left_square_bracket", 120), ("right_square_bracket", 130),
                           ("left_curly_bracket", 100), ("right_curly_bracket", 140), ("ctrl+home", 100),
                           ("ctrl+end", 140)):
            await pilot.press(key)
            await app.poll_once()
            await pilot.pause()
            assert app.store.total == total, key
        await pilot.press("left_square_bracket")
        await app.poll_once()
        await pilot.pause()
        assert "(poll 4 of 5)" in app.screen_main().query_one(StatusBar).text


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a recording\n")
    assert main(["replay", str(text)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hubtop: error: ") and "is not a hubtop recording" in err and err.count("\n") == 1
    path = tmp_path / "rec.db"
    record(path)
    assert main(["replay", str(path), "--at", "last tuesday"]) == 2
    assert "--at" in capsys.readouterr().err


async def test_record_flag_then_replay(tmp_path: Path, clock) -> None:
    """`hubtop SOURCE --record FILE` (the CLI's build_app) records what the dashboard polls; replay shows it."""
    import datasource.sources.replay  # noqa: F401
    from tests.datasource import dbfixtures as fx
    from tui.cli import build_app, parse
    from tui.config import Config

    db = tmp_path / "tasks.db"
    fx.write_sqlite(db, fx.make_records(120, seed=9))
    rec = tmp_path / "session.rec"
    _, args = parse([str(db), "--record", str(rec)])
    app = build_app(args, Config())
    app.autopoll = False
    async with app.run_test(size=SIZE) as pilot:
        await app.poll_once()
        await pilot.pause()
        assert app.store.total == 120
        live = sorted((r.msg_id, r.state.value) for r in app.store.page(limit=1000))
        await pilot.press("q")
    recorder = app.source.recorder
    assert (recorder.deltas_written, recorder.error, recorder.recording) == (2, None, False)  # load + its end; closed
    source = ReplaySource(rec)
    store = TaskStore()
    out = Poller(source, store).step()
    assert out.status.state == "connected", out.status.message
    assert sorted((r.msg_id, r.state.value) for r in store.page(limit=1000)) == live
    assert source.sessions[0].kind == "sqlite"
