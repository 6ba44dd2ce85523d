from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from datasource import store as store_module
from datasource.model import Engine, QueueStatus, State
from datasource.poller import Poller
from datasource.recorder import (
    FORMAT,
    SCHEMA_VERSION,
    TASK_COLUMNS,
    Recorder,
    open_recording,
    record_to_row,
    row_to_record,
)
from datasource.sources.base import Delta, SourceError
from datasource.store import TaskStore
from tests.fakes import FakeSource, _copy, make_record


class Clock:
    def __init__(self, t: float = 1_790_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def recorded(path: Path, n: int = 50, chunk: int = 20) -> tuple[FakeSource, TaskStore, Poller, Recorder]:
    source = FakeSource(n, chunk=chunk)
    store = TaskStore()
    recorder = Recorder(path, source, clock=Clock())
    poller = Poller(source, store, on_delta=recorder.write)
    poller.open()
    return source, store, poller, recorder


def test_recording_holds_every_store_column(tmp_path: Path) -> None:
    path = tmp_path / "rec.db"
    *_, recorder = recorded(path, n=5)
    recorder.close()
    con = sqlite3.connect(path)
    columns = [row[1] for row in con.execute("PRAGMA table_info(tasks)")]
    con.close()
    assert [c for c in columns if c in store_module.COLUMNS] == list(TASK_COLUMNS) == list(store_module.COLUMNS)


def test_record_row_round_trip() -> None:
    for i in range(40):
        rec = make_record(i)
        assert row_to_record(record_to_row(rec)) == rec


def test_first_load_then_only_changes(tmp_path: Path) -> None:
    path = tmp_path / "rec.db"
    source, store, poller, recorder = recorded(path, n=50, chunk=20)
    poller.step()  # first load: 3 chunks
    poller.step()  # nothing changed: not recorded
    rec = _copy(source.records["c0ffee00-0000000000000000000000aa_1000_0"])
    rec.state, rec.completed, rec.ename, rec.evalue = State.FAILED, rec.submitted + timedelta(seconds=3), "E", "v"
    source.records[rec.msg_id] = rec
    del source.records["c0ffee00-0000000000000000000000aa_1000_7"]
    poller.step()
    recorder.close()

    db = sqlite3.connect(path)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["format"] == FORMAT and meta["schema_version"] == str(SCHEMA_VERSION)
    (name, kind, backend, version), = db.execute("SELECT source_name, kind, backend, hubtop_version FROM sessions")
    assert (name, kind, backend) == ("fake source", "fake", "sqlite") and version
    polls = db.execute("SELECT reset, loading, done, total, upserts, removals, engines IS NOT NULL FROM polls").fetchall()
    assert polls == [
        (1, 1, 20, 50, 20, 0, 1),
        (0, 1, 40, 50, 20, 0, 0),
        (0, 0, 50, 50, 10, 0, 0),
        (0, 0, 0, None, 1, 1, 0),  # engines unchanged since the load: NULL
    ]
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 51
    row = db.execute(f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks ORDER BY rowid DESC LIMIT 1").fetchone()
    assert row_to_record(row) == rec
    assert db.execute("SELECT msg_id FROM removed").fetchall() == [("c0ffee00-0000000000000000000000aa_1000_7",)]
    # close() checkpoints: one self-contained file, no WAL left
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not Path(f"{path}-wal").exists()


def test_wal_while_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.db"
    _, _, poller, recorder = recorded(path)
    poller.step()
    assert recorder.flush(10)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 50  # readable while recording
    db.close()
    recorder.close()


def test_engines_and_queue_recorded_when_they_change(tmp_path: Path) -> None:
    path = tmp_path / "rec.db"
    recorder = Recorder(path, clock=Clock())
    engines = [Engine("u0", 0, True, 1, 2, 3), Engine("u1", 1, True)]
    queue = QueueStatus(engines={0: engines[0], 1: engines[1]}, unassigned=4)
    recorder.write(Delta(reset=True, engines=engines, queue=queue))
    recorder.write(Delta(engines=[Engine("u0", 0, True, 1, 2, 3), Engine("u1", 1, True)], queue=queue))  # same
    recorder.write(Delta(engines=[Engine("u0", 0, False), Engine("u1", 1, True)], queue=queue))
    recorder.write(Delta(running={"b", "a"}))
    recorder.close()
    db = sqlite3.connect(path)
    rows = db.execute("SELECT engines, queue, running FROM polls ORDER BY id").fetchall()
    assert len(rows) == 3
    assert json.loads(rows[0][0]) == [["u0", 0, True, 1, 2, 3], ["u1", 1, True, 0, 0, 0]]
    assert json.loads(rows[0][1]) == {"unassigned": 4, "engines": [[0, "u0", 0, True, 1, 2, 3], [1, "u1", 1, True, 0, 0, 0]]}
    assert json.loads(rows[1][0])[0] == ["u0", 0, False, 0, 0, 0] and rows[1][1] is None
    assert rows[2] == (None, None, '["a","b"]')


def test_appends_a_session_to_an_existing_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.db"
    for _ in range(2):
        _, _, poller, recorder = recorded(path, n=10)
        poller.step()
        recorder.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 2
    assert db.execute("SELECT session, reset FROM polls ORDER BY id").fetchall() == [(1, 1), (2, 1)]


def test_refuses_to_overwrite_a_foreign_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("my precious notes\n" * 100)
    with pytest.raises(SourceError, match="exists and is not a hubtop recording"):
        Recorder(text)
    assert text.read_text().startswith("my precious notes")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (a)")
    with pytest.raises(SourceError, match="not a hubtop recording"):
        Recorder(other)
    with pytest.raises(SourceError, match="it is a directory"):
        Recorder(tmp_path)
    with pytest.raises(SourceError, match="no directory"):
        Recorder(tmp_path / "missing" / "rec.db")


def test_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rec.db"
    Recorder(path).close()
    sqlite3.connect(path, isolation_level=None).execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SourceError, match=r"newer hubtop \(recording format 99; this hubtop reads up to 1\)"):
        Recorder(path)
    with pytest.raises(SourceError, match="newer hubtop"):
        open_recording(path)


def test_a_failing_write_never_breaks_polling(tmp_path: Path) -> None:
    """A real SQLITE_FULL (the file may not grow) stops recording with one warning; polls go on."""
    path = tmp_path / "rec.db"
    source, store, poller, recorder = recorded(path, n=10)
    poller.step()
    assert recorder.flush(10) and recorder.error is None
    pages = recorder._db.execute("PRAGMA page_count").fetchone()[0]
    recorder._db.execute(f"PRAGMA max_page_count = {pages}")
    for i in range(10, 400):
        r = make_record(i)
        source.records[r.msg_id] = r
    out = poller.step()
    assert out.status.state == "connected" and out.added == 390
    assert recorder.flush(10)
    assert recorder.error is not None and "database or disk is full" in recorder.error
    source.records.pop(next(iter(source.records)))
    out = poller.step()
    assert out.status.state == "connected" and out.removed == 1
    assert out.warnings[-1] == recorder.error
    assert any("recording to" in w and "stopped" in w for w in out.status.warnings)
    assert poller.step().warnings == []  # said once
    assert store.total == 399
    recorder.close()
    # what was recorded before the failure is intact
    assert sqlite3.connect(path).execute("SELECT count(*) FROM tasks").fetchone()[0] == 10


def test_write_after_close_is_ignored(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "rec.db")
    recorder.close()
    recorder.write(Delta(upserts=[make_record(1)]))
    recorder.close()
    assert recorder.deltas_written == 0


def test_recording_source_wraps_any_source(tmp_path: Path) -> None:
    """What `hubtop --record FILE` uses (the dashboard builds its own Poller, without on_delta)."""
    from datasource.recorder import RecordingSource
    from datasource.sources.replay import ReplaySource

    path = tmp_path / "rec.db"
    inner = FakeSource(40)
    source = RecordingSource(inner, path)
    assert source.name == inner.name and source.capabilities() == inner.capabilities()
    store = TaskStore()
    poller = Poller(source, store)
    poller.step()
    new = make_record(40)
    inner.records[new.msg_id] = new
    poller.step()
    assert source.resubmit([new.msg_id]) and inner.resubmit_calls == [[new.msg_id]]
    poller.step()
    assert source.detail(new.msg_id).record.resubmitted
    poller.close()  # closes the recorder too
    assert not Path(f"{path}-wal").exists()
    replay = ReplaySource(path)
    replay_store = TaskStore()
    Poller(replay, replay_store).step()
    assert sorted(r.msg_id for r in replay_store.page(limit=100)) == sorted(r.msg_id for r in store.page(limit=100))
    assert replay_store.get(new.msg_id) == store.get(new.msg_id)
    with pytest.raises(SourceError, match="--record needs a SOURCE"):
        RecordingSource(None, tmp_path / "x.db")  # type: ignore[arg-type]


def test_write_costs_the_poll_thread_little(tmp_path: Path) -> None:
    """write() only captures and queues: CPU time on the calling thread, not the disk's."""
    import statistics
    import time

    recorder = Recorder(tmp_path / "rec.db")
    engines = FakeSource(0).engine_list
    deltas = [Delta(upserts=[make_record(i * 100 + k) for k in range(100)], engines=engines) for i in range(200)]
    costs = []
    for delta in deltas:
        t0 = time.thread_time()
        recorder.write(delta)
        costs.append(time.thread_time() - t0)
    assert recorder.flush(60)
    recorder.close()
    assert recorder.rows_written == 20_000 and recorder.error is None
    assert statistics.median(costs) < 0.001, statistics.median(costs)


def test_an_empty_delta_that_ends_a_load_is_recorded(tmp_path: Path) -> None:
    """SQLiteSource ends its first load with an empty delta (loading=False): without it no state is complete."""
    path = tmp_path / "rec.db"
    recorder = Recorder(path, clock=Clock())
    recorder.write(Delta(upserts=[make_record(1), make_record(2)], reset=True, loading=True, done=2, total=2))
    recorder.write(Delta(done=2, total=2))  # the end of the load, nothing else
    recorder.write(Delta())  # an idle poll: not recorded
    recorder.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT reset, loading, upserts FROM polls ORDER BY id").fetchall() == [(1, 1, 2), (0, 0, 0)]


def test_fill_progress_is_recorded_even_when_a_fill_delta_fills_nothing(tmp_path: Path) -> None:
    """Delta.filling goes into fill_done / fill_total (NULL for any other delta); a fill delta with no record
    (the last chunk's records all moved or purged) still moves the progress, so it is recorded too."""
    path = tmp_path / "rec.db"
    recorder = Recorder(path, clock=Clock())
    listed = [dataclasses.replace(make_record(i), submitted=None, started=None, completed=None, received=None)
              for i in range(4)]
    recorder.write(Delta(upserts=listed, reset=True, done=4, total=4))
    recorder.write(Delta(upserts=[make_record(0), make_record(1)], filling=(2, 4)))
    recorder.write(Delta(upserts=[make_record(3)]))  # a real change between two fill chunks
    recorder.write(Delta(filling=(4, 4)))  # the end of the fill, nothing filled
    recorder.write(Delta())  # an idle poll: not recorded
    recorder.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT upserts, fill_done, fill_total FROM polls ORDER BY id").fetchall() == [
        (4, None, None), (2, 2, 4), (1, None, None), (0, 4, 4)]
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_appending_to_an_older_recording_adds_the_fill_columns(tmp_path: Path) -> None:
    """A file recorded before fill_done / fill_total existed (same format version: the columns are additive)
    gets them when a new session appends; its older rows keep NULL, which replays as before."""
    from datasource.sources.replay import ReplaySource

    path = tmp_path / "rec.db"
    source, store, poller, recorder = recorded(path, n=30, chunk=30)
    poller.step()
    recorder.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("ALTER TABLE polls DROP COLUMN fill_done")  # the file as the previous hubtop wrote it
    db.execute("ALTER TABLE polls DROP COLUMN fill_total")
    db.close()
    replay = ReplaySource(path)
    replay_store = TaskStore()
    Poller(replay, replay_store).step()  # still replays
    assert replay_store.total == 30 and replay_store.filling is None

    recorder = Recorder(path, clock=Clock(1_800_000_000.0))
    recorder.write(Delta(upserts=[make_record(i) for i in range(10)], reset=True, done=10, total=10))
    recorder.write(Delta(upserts=[make_record(0)], filling=(1, 10)))
    recorder.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT session, fill_done, fill_total FROM polls ORDER BY id").fetchall() == [
        (1, None, None), (2, None, None), (2, 1, 10)]
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    db.close()
    replay = ReplaySource(path, position=0)
    replay_store = TaskStore()
    deltas: list[Delta] = []
    replay_poller = Poller(replay, replay_store, on_delta=deltas.append)
    replay_poller.step()
    while not replay.at_end:
        replay.step(1)
        replay_poller.step()
    assert [d.filling for d in deltas] == [None, None, (1, 10)]
    assert replay_store.total == 10 and replay_store.filling == (1, 10)
    replay_poller.close()
