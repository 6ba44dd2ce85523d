"""SQLiteSource against task DBs written by ipyparallel's own SQLiteDB (tests/datasource/dbfixtures.py)."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from datasource.model import State, normalize_record
from datasource.sources import sqlite as sqlite_mod
from datasource.sources import paired
from datasource.sources.base import ActionRefused, Delta, NotATaskDatabase, SourceError, SourceUnavailable
from datasource.sources.sqlite import SQLiteSource, table_order_key

from . import dbfixtures as fx

OLD_CLIENT = "0ld0ld00-aaaaaaaaaaaaaaaaaaaaaaaa"
MID_CLIENT = "m1dm1d00-bbbbbbbbbbbbbbbbbbbbbbbb"


def load(src: SQLiteSource) -> dict:
    """Run one sync and return {msg_id: record} of everything it delivered."""
    out = {}
    for d in src.sync():
        out.update({r.msg_id: r for r in d.upserts})
    return out


def deltas(src: SQLiteSource) -> list:
    return list(src.sync())


def odd_records() -> list[dict]:
    """Rows the SQL fast path cannot decide alone (model.normalize_record must be used for them)."""
    base = fx.record("succeeded", 90001)[0]
    no_status = dict(base, msg_id="odd_1", result_content={"execution_count": 3})
    err_only = dict(base, msg_id="odd_2", result_content={"status": "error"},
                    error={"ename": "KeyError", "evalue": "\x1b[31m'x'\x1b[0m", "traceback": []})
    garbage = dict(base, msg_id="odd_3", result_content=None, error=None)
    named = dict(base, msg_id="odd_4", result_content={"ename": "OSError", "evalue": "disk"})
    return [no_status, err_only, garbage, named]


@pytest.fixture
def taskdb(tmp_path: Path) -> Path:
    """Three Hub runs: a pre-9.1 table (no label), an older 9.2 run, and the live run with every kind."""
    path = tmp_path / "tasks.db"
    old = fx.make_records(40, seed=1, client=OLD_CLIENT, start=fx.START - timedelta(days=2))
    assert fx.write_legacy_sqlite(path, old) == "ipython-tasks"
    assert fx.write_sqlite(path, fx.make_records(120, seed=2, client=MID_CLIENT,
                                                 start=fx.START - timedelta(days=1))) == "ipython-tasks_1"
    live = list(fx.make_records(400, seed=3)) + odd_records()
    assert fx.write_sqlite(path, live) == "ipython-tasks_2"
    # a garbage result_content (not JSON) must not break the load
    con = sqlite3.connect(path)
    con.execute("UPDATE 'ipython-tasks_2' SET result_content = '{not json', completed = '2026-11-21T05:00:00+00:00' "
                "WHERE msg_id = 'odd_3'")
    con.commit()
    con.close()
    fx.engines_json(tmp_path, fx.ENGINES[:2])  # engine 2 is dead: its id comes from engine_info only
    return path


@pytest.fixture
def src(taskdb: Path):
    s = SQLiteSource(taskdb)
    s.open()
    yield s
    s.close()


def expected(path: Path, engine_ids: dict[str, int]) -> dict:
    """What model.normalize_record says for every raw row of every table."""
    con = sqlite3.connect(path)
    tables = sorted((r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE name LIKE 'ipython-tasks%'")),
                    key=table_order_key)
    con.close()
    out = {}
    for t in tables:
        run = None if t == tables[-1] else t
        for raw in fx.raw_rows(path, t):
            rec = normalize_record(raw, engine_ids, run=run)
            out[rec.msg_id] = rec
    return out


def test_table_order_is_numeric():
    names = ["ipython-tasks_10", "ipython-tasks", "ipython-tasks_2", "ipython-tasks_1"]
    assert sorted(names, key=table_order_key) == ["ipython-tasks", "ipython-tasks_1", "ipython-tasks_2",
                                                  "ipython-tasks_10"]


def test_fast_sql_path_agrees_with_normalize_record_field_by_field(src, taskdb):
    got = load(src)
    want = expected(taskdb, {u: i for i, u in enumerate(fx.ENGINES[:2])})
    assert set(got) == set(want)
    for msg_id, rec in want.items():
        assert dataclasses.asdict(got[msg_id]) == dataclasses.asdict(rec), msg_id


def test_every_kind_state_count_run_label(src):
    recs = load(src)
    assert len(recs) == 40 + 120 + 404
    runs = Counter(r.run for r in recs.values())
    assert runs == {"ipython-tasks": 40, "ipython-tasks_1": 120, None: 404}
    live = {m: r for m, r in recs.items() if r.run is None}
    states = Counter(r.state for r in live.values())
    assert set(states) == {State.SUCCEEDED, State.FAILED, State.ABORTED, State.PENDING}
    # the odd rows went through normalize_record
    assert recs["odd_1"].state is State.SUCCEEDED
    assert recs["odd_2"].state is State.FAILED and recs["odd_2"].ename == "KeyError"
    assert recs["odd_2"].evalue == "'x'"  # ANSI stripped
    assert recs["odd_3"].state is State.SUCCEEDED and recs["odd_3"].ename is None
    assert recs["odd_4"].state is State.FAILED and recs["odd_4"].ename == "OSError"
    timeouts = [r for r in live.values() if r.ename == "TaskTimeout"]
    assert timeouts and all(r.engine_uuid is None and r.started is None for r in timeouts)
    engine_errors = [r for r in live.values() if r.ename == "EngineError"]
    assert engine_errors and all(r.received is None and r.queue == "mux" for r in engine_errors)
    ansi = [r for r in live.values() if r.ename == "ValueError" and "bad value" in (r.evalue or "")]
    assert ansi and all("\x1b" not in r.evalue for r in ansi)
    # labels: the pre-9.1 table has no label column, its labels come from metadata
    legacy = [r for r in recs.values() if r.run == "ipython-tasks"]
    assert any(r.label and r.label.startswith("batch-") for r in legacy)
    # resubmitted original -> copy, the copy has no label and queue 'task'
    originals = [r for r in live.values() if r.resubmitted]
    assert originals
    for o in originals:
        copy = recs[o.resubmitted]
        assert copy.state is State.SUCCEEDED and copy.label is None and copy.queue == "task"
    # stdout/stderr sizes without reading the text
    sized = [r for r in live.values() if r.stdout_size or r.stderr_size]
    assert len(sized) > 50
    for r in sized[:40]:
        d = src.detail(r.msg_id)
        assert (len(d.stdout), len(d.stderr)) == (r.stdout_size, r.stderr_size)


def test_engine_ids_from_engines_json_and_engine_info(src):
    recs = load(src)
    live = [r for r in recs.values() if r.run is None and r.engine_uuid in fx.ENGINES]
    for r in live:
        eid = fx.ENGINES.index(r.engine_uuid)
        if eid < 2:
            assert r.engine_id == eid  # engines.json
        elif r.state is State.FAILED and r.ename == "ValueError":
            assert r.engine_id == 2  # result_content.engine_info
    assert any(r.engine_id is None for r in live if fx.ENGINES.index(r.engine_uuid) == 2)


def test_engine_ids_path_explicit(taskdb, tmp_path):
    other = tmp_path / "elsewhere"
    f = fx.engines_json(other, list(reversed(fx.ENGINES)), cluster_id="-abc")
    s = SQLiteSource(taskdb, engine_ids_path=f)
    s.open()
    recs = load(s)
    s.close()
    r = next(r for r in recs.values() if r.engine_uuid == fx.ENGINES[0])
    assert r.engine_id == 2


def test_load_in_chunks_newest_first(src, monkeypatch):
    monkeypatch.setattr(sqlite_mod, "CHUNK", 50)
    ds = deltas(src)
    assert ds[0].reset and all(not d.reset for d in ds[1:])
    assert all(d.loading for d in ds[:-1]) and not ds[-1].loading
    assert ds[-1].done == ds[-1].total == 564
    assert [d.done for d in ds[:-1]] == sorted(d.done for d in ds[:-1])
    first = ds[0].upserts
    assert len(first) == 50 and all(r.run is None for r in first)
    newest = max(r.submitted for d in ds for r in d.upserts if r.submitted)
    assert any(r.submitted == newest for r in first)


def test_detail_heavy_fields_and_lineage(src):
    recs = load(src)
    live = [r for r in recs.values() if r.run is None]
    failed = next(r for r in live if r.ename == "ValueError")
    d = src.detail(failed.msg_id)
    assert d.record == failed
    assert d.traceback and d.traceback[-1].endswith(failed.evalue.split()[-1])
    assert "\x1b[31m" in d.traceback[0]
    assert d.stderr == "warning: about to fail\n"
    loud = next(m for m, r in recs.items() if r.run is None and src.detail(m).execute_result)
    d = src.detail(loud)
    assert d.execute_result["data"] == {"text/plain": "42"}  # JSON string decoded
    assert d.code and d.code.startswith("print(")
    assert d.stdout.startswith("exec out")
    orig = next(r for r in live if r.resubmitted)
    copy = src.detail(orig.resubmitted)
    assert copy.resubmitted_from == orig.msg_id
    old = next(m for m, r in recs.items() if r.run == "ipython-tasks")
    assert src.detail(old).record.run == "ipython-tasks"  # earlier runs are searched too
    with pytest.raises(SourceError, match="no task nope"):
        src.detail("nope")


# -- incremental -------------------------------------------------------------------------------------


@pytest.fixture
def hubdb(tmp_path: Path):
    """A live 'Hub' writer: ipyparallel's SQLiteDB kept open on the file (commits when told)."""
    path = tmp_path / "tasks.db"
    db = fx.open_hub_db(path)
    for rec in fx.make_records(200, seed=5):
        db.add_record(rec["msg_id"], rec)
    db._db.commit()
    yield db, path
    db.close()


def test_incremental_new_completed_resubmitted_deleted_and_new_table(hubdb):
    db, path = hubdb
    src = SQLiteSource(path)
    src.open()
    first = load(src)
    assert len(first) == 200
    assert deltas(src) == []  # nothing changed: nothing read
    # new rows
    new = list(fx.make_records(5, seed=6, first=1000))
    for rec in new:
        db.add_record(rec["msg_id"], rec)
    db._db.commit()
    (d,) = deltas(src)
    assert {r.msg_id for r in d.upserts} == {r["msg_id"] for r in new} and not d.removed
    # a pending task completes, another gets live stdout
    pend = [m for m, r in first.items() if r.state is State.PENDING]
    done_at = fx.START + timedelta(hours=1)
    db.update_record(pend[0], {"completed": done_at, "started": done_at, "received": done_at,
                               "result_content": {"status": "ok"}})
    db.update_record(pend[1], {"stdout": "tick 0\ntick 1\ntick 2\ntick 3\n"})
    db._db.commit()
    (d,) = deltas(src)
    got = {r.msg_id: r for r in d.upserts}
    assert got[pend[0]].state is State.SUCCEEDED and got[pend[0]].completed == done_at
    assert got[pend[1]].state is State.PENDING and got[pend[1]].stdout_size == 28
    assert len(got) == 2
    # resubmission: the Hub adds the copy, then marks the original
    orig = next(m for m, r in first.items() if r.state is State.FAILED and not r.resubmitted)
    copy = fx.record("succeeded", 5000, client=fx.HUB_SESSION)[0]
    copy["client_uuid"] = fx.CLIENT
    db.add_record(copy["msg_id"], copy)
    db.update_record(orig, {"resubmitted": copy["msg_id"]})
    db._db.commit()
    (d,) = deltas(src)
    got = {r.msg_id: r for r in d.upserts}
    assert got[orig].resubmitted == copy["msg_id"] and copy["msg_id"] in got
    # an already-completed original marked later (no new copy row): found by the periodic scan
    orig2 = next(m for m, r in first.items() if r.state is State.SUCCEEDED and not r.resubmitted)
    db.update_record(orig2, {"resubmitted": "someone_else_1"})
    db._db.commit()
    seen = {}
    for _ in range(sqlite_mod.SLOW_EVERY + 1):
        for d in src.sync():
            seen.update({r.msg_id: r for r in d.upserts})
        if orig2 in seen:
            break
        db.update_record(pend[2], {"stdout": f"x{_}"})  # keep the file changing
        db._db.commit()
    assert seen[orig2].resubmitted == "someone_else_1"
    # deletions -> removed + warning
    victims = [m for m, r in first.items() if r.state is State.SUCCEEDED and m != orig2][:3]
    for m in victims:
        db.drop_record(m)
    db._db.commit()
    (d,) = deltas(src)
    assert sorted(d.removed) == sorted(victims)
    assert d.warnings == ["3 records disappeared since the last poll (ipython-tasks)"]
    # a new Hub run: a new table appears; the old one becomes an earlier run
    db2 = fx.open_hub_db(path)
    try:
        assert db2.table == "ipython-tasks_1"
        rec = fx.record("succeeded", 1, client="n3wn3w00-cccccccccccccccccccccccc")[0]
        db2.add_record(rec["msg_id"], rec)
        db2._db.commit()
        (d,) = deltas(src)
        got = {r.msg_id: r for r in d.upserts}
        assert got[rec["msg_id"]].run is None
        assert {r.run for m, r in got.items() if m != rec["msg_id"]} == {"ipython-tasks"}
        assert len(got) == 200 + 5 + 1 - 3 + 1
    finally:
        db2.close()
    src.close()


def test_the_full_resubmitted_scan_runs_at_most_every_resub_scan_seconds(hubdb):
    """The full `resubmitted` scan reads every row of the live table (~65 ms per 130k rows): a slow sync runs it
    only RESUB_SCAN_SECONDS after the last one. A pointer set with no new copy row is seen then."""
    db, path = hubdb
    src = SQLiteSource(path)
    now = [1_000.0]
    src.clock = lambda: now[0]
    src.open()
    first = load(src)
    scans = []
    real_scan = src._scan_resubmitted
    src._scan_resubmitted = lambda t, by_id, copies: (scans.append(copies), real_scan(t, by_id, copies))
    pend = next(m for m, r in first.items() if r.state is State.PENDING)
    done = [m for m, r in first.items() if r.state is State.SUCCEEDED and not r.resubmitted]

    def sync_until_slow(tick: int) -> dict:
        seen = {}
        for i in range(sqlite_mod.SLOW_EVERY + 1):
            db.update_record(pend, {"stdout": f"t{tick} {i}"})  # keep the file changing
            db._db.commit()
            for d in src.sync():
                seen.update({r.msg_id: r for r in d.upserts})
        return seen

    sync_until_slow(0)
    assert scans == [None]  # the first slow sync scans
    db.update_record(done[0], {"resubmitted": "someone_else_1"})
    db._db.commit()
    now[0] += sqlite_mod.RESUB_SCAN_SECONDS - 1
    seen = sync_until_slow(1)
    assert scans == [None] and done[0] not in seen  # a slow sync came, too soon for another full scan
    now[0] += 1
    seen = sync_until_slow(2)
    assert scans == [None, None]
    assert seen[done[0]].resubmitted == "someone_else_1"
    src.close()


def test_deleted_newest_rows_with_reused_rowid(hubdb):
    """Deleting the newest row lets SQLite reuse its rowid: the source must still see both changes."""
    db, path = hubdb
    src = SQLiteSource(path)
    src.open()
    first = load(src)
    con = sqlite3.connect(path)
    newest = con.execute("SELECT msg_id FROM 'ipython-tasks' ORDER BY rowid DESC LIMIT 1").fetchone()[0]
    con.close()
    top = db._db.execute("SELECT max(rowid) FROM 'ipython-tasks'").fetchone()[0]
    db.drop_record(newest)
    rec = fx.record("failed", 7777)[0]
    db.add_record(rec["msg_id"], rec)
    db._db.commit()
    assert db._db.execute("SELECT rowid FROM 'ipython-tasks' WHERE msg_id = ?", (rec["msg_id"],)).fetchone()[0] == top
    (d,) = deltas(src)
    assert d.removed == [newest]
    assert [r.msg_id for r in d.upserts] == [rec["msg_id"]]
    assert newest in first
    src.close()


@pytest.mark.parametrize("counting", [False, True])
def test_a_hub_commit_during_a_sync_is_not_taken_for_a_deletion(hubdb, monkeypatch, counting):
    """The Hub commits new rows between the sync's read of new rows and its deletion check: those rows are
    the next sync's news, not a sign that rows vanished (which costs a read of every msg_id: ~2 s and
    ~200 MB at 1M rows)."""
    db, path = hubdb
    if counting:  # the deletion check counts the rows at every sync (as after a purge, or every SLOW_EVERY)
        monkeypatch.setattr(SQLiteSource, "_slow_every", lambda self: 1)
    else:
        monkeypatch.setattr(sqlite_mod, "COUNT_EVERY_SYNC", 10)  # 200 rows: counted only in slow syncs
        monkeypatch.setattr(SQLiteSource, "_slow_every", lambda self: 10**6)
    src = SQLiteSource(path)
    src.open()
    load(src)
    late = list(fx.make_records(3, seed=8, first=5000))
    late_ids = {r["msg_id"] for r in late}
    new_rows = src._new_rows

    def hub_commits_meanwhile(t, by_id):
        new_rows(t, by_id)
        while late:
            rec = late.pop()
            db.add_record(rec["msg_id"], rec)
        db._db.commit()

    monkeypatch.setattr(src, "_new_rows", hub_commits_meanwhile)
    db.update_record(next(iter(src._tables["ipython-tasks"].ids)), {"stdout": "x"})  # the file changed
    db._db.commit()
    statements: list[str] = []
    src._connection().set_trace_callback(statements.append)
    got = deltas(src)
    full_reads = [s for s in statements if s.startswith('SELECT msg_id FROM "ipython-tasks"') and "WHERE" not in s]
    assert full_reads == []
    assert not any(d.removed or d.warnings for d in got)
    monkeypatch.setattr(src, "_new_rows", new_rows)
    assert late_ids <= set(load(src))  # the next sync reads them
    src.close()


def test_pending_rotation_reaches_every_pending_row(hubdb, monkeypatch):
    fx.small_pending_scan(monkeypatch, front=1, rotating=2)
    db, path = hubdb
    src = SQLiteSource(path)
    src.open()
    first = load(src)
    pend = [m for m, r in first.items() if r.state is State.PENDING]
    assert len(pend) > 6
    done_at = fx.START + timedelta(hours=2)
    for m in pend:
        db.update_record(m, {"completed": done_at, "result_content": {"status": "aborted"}})
    db._db.commit()
    seen = {}
    for i in range(len(pend)):
        for d in src.sync():
            seen.update({r.msg_id: r for r in d.upserts})
        db.update_record(pend[0], {"stdout": f"{i}"})  # the Hub keeps writing
        db._db.commit()
    assert set(pend) <= set(seen)
    assert all(seen[m].state is State.ABORTED for m in pend)
    src.close()


@pytest.mark.parametrize("stale_max", [2, 10_000])
def test_pending_order_follows_completions_new_rows_and_compaction(hubdb, monkeypatch, stale_max):
    """The pending rowids are kept in order across syncs (completions leave stale entries, new rows are
    appended, a still-pending changed row stays in it, compaction drops the stale ones): the re-reads pick
    only pending rows, reach all of them in one turn of the rotation, and the source
    ends up agreeing with a fresh load of the file."""
    fx.small_pending_scan(monkeypatch, front=2, rotating=2)
    monkeypatch.setattr(sqlite_mod, "STALE_MAX", stale_max)
    db, path = hubdb
    src = SQLiteSource(path)
    seen = load(src)
    done_at = fx.START + timedelta(hours=2)
    for round_ in range(6):
        pend = sorted((r.submitted, m) for m, r in seen.items() if r.state is State.PENDING)
        for _, m in pend[:2]:  # the oldest complete
            db.update_record(m, {"completed": done_at, "result_content": {"status": "ok"}})
        db.update_record(pend[-1][1], {"stdout": f"still running {round_}"})  # changed, still pending
        for rec in fx.record("pending", 5000 + round_):  # and a new pending task
            db.add_record(rec["msg_id"], rec)
        db._db.commit()
        seen.update(load(src))
    t = src._tables["ipython-tasks"]
    reread: list[int] = []
    real = src._reread_rowids

    def spy(table, rowids, by_id):
        assert all(r in table.pending for r in rowids)
        reread.extend(rowids)
        return real(table, rowids, by_id)

    monkeypatch.setattr(src, "_reread_rowids", spy)
    pending = set(t.pending)
    # each changed sync (an unchanged file is not read) re-reads the 2 oldest and 2 of the others in turn
    for i in range(-(-(len(pending) - 2) // 2)):
        db.update_record(pend[0][1], {"received": done_at + timedelta(seconds=i)})
        db._db.commit()
        seen.update(load(src))
    assert pending <= set(reread)
    fresh = SQLiteSource(path)
    want = load(fresh)
    assert {m: (r.state, r.stdout_size) for m, r in seen.items()} == {m: (r.state, r.stdout_size) for m, r in want.items()}
    assert sorted(t.pending) == sorted(fresh._tables["ipython-tasks"].pending)
    src.close()
    fresh.close()


def test_pending_rows_are_held_outside_the_cyclic_gc(hubdb):
    """What the source keeps of each pending row leaves the GC's lists (at 1M tasks, ~95k tracked
    TaskRecords doubled every full collection of the app), and still tells a changed row from the same."""
    import gc

    db, path = hubdb
    src = SQLiteSource(path)
    first = load(src)
    gc.collect()
    held = src._tables["ipython-tasks"].pending_recs
    assert held and not any(gc.is_tracked(fp) for fp in held.values())
    pend = sorted(m for m, r in first.items() if r.state is State.PENDING)
    db.update_record(pend[0], {"stdout": "more output"})
    db._db.commit()
    (d,) = deltas(src)
    assert [(r.msg_id, r.stdout_size, r.state) for r in d.upserts] == [(pend[0], 11, State.PENDING)]
    src.close()


def test_oldest_pending_rows_are_reread_first(hubdb, monkeypatch):
    fx.small_pending_scan(monkeypatch, front=1, rotating=1)
    db, path = hubdb
    src = SQLiteSource(path)
    first = load(src)
    pend = [m for m, r in sorted(first.items(), key=lambda kv: kv[1].submitted) if r.state is State.PENDING]
    assert len(pend) > 4
    db.update_record(pend[0], {"completed": fx.START + timedelta(hours=2), "result_content": {"status": "ok"}})
    db._db.commit()
    (d,) = deltas(src)
    assert [r.msg_id for r in d.upserts] == [pend[0]] and d.upserts[0].state is State.SUCCEEDED
    src.close()


@pytest.mark.parametrize("front_max", [2, 16])
def test_a_burst_of_completions_widens_the_front_until_it_is_caught_up(hubdb, monkeypatch, front_max):
    """Without a Hub: the oldest 8 pending tasks finish at once, the front reads 2 a sync. Seeing both of
    them changed, the next front is 8 wide and reads the rest (a fixed front of 2 needs four syncs); once
    calm, it narrows back."""
    fx.small_pending_scan(monkeypatch, front=2, rotating=1, front_max=front_max)
    db, path = hubdb
    src = SQLiteSource(path)
    first = load(src)
    by_age = sorted((r.submitted, m) for m, r in first.items() if r.state is State.PENDING)
    burst = [m for _, m in by_age[:8]]
    assert len(by_age) > 12
    for m in burst:
        db.update_record(m, {"completed": fx.START + timedelta(hours=2), "result_content": {"status": "ok"}})
    db._db.commit()
    finished = next(m for m, r in first.items() if r.state is State.SUCCEEDED)
    done = set()
    for i in range(2):
        if i:  # the file changes again, no pending row (a sync of an unchanged file reads nothing)
            db.update_record(finished, {"received": fx.START + timedelta(hours=3)})
            db._db.commit()
        done |= {r.msg_id for d in deltas(src) for r in d.upserts if r.state is State.SUCCEEDED}
    t = src._tables["ipython-tasks"]
    if front_max == 2:
        assert len(done & set(burst)) < 8
    else:
        assert done == set(burst)
        db.update_record(finished, {"received": fx.START + timedelta(hours=4)})
        db._db.commit()
        deltas(src)
        assert t.scan.window == 2  # nothing changed at the front: back to the narrowest
    src.close()


def test_replaced_file_reloads(hubdb, tmp_path):
    db, path = hubdb
    src = SQLiteSource(path)
    src.open()
    assert len(load(src)) == 200
    other = tmp_path / "other.db"
    fx.write_sqlite(other, fx.make_records(7, seed=9))
    os.replace(other, path)
    ds = deltas(src)
    assert ds[0].reset and sum(len(d.upserts) for d in ds) == 7
    src.close()


# -- never holding a lock -------------------------------------------------------------------------


def test_no_read_transaction_left_open_between_calls(hubdb, monkeypatch):
    monkeypatch.setattr(sqlite_mod, "CHUNK", 30)
    db, path = hubdb
    src = SQLiteSource(path)
    src.open()
    writer = sqlite3.connect(path, timeout=0, isolation_level=None)

    def exclusive_now():
        writer.execute("BEGIN EXCLUSIVE")  # fails at once ("database is locked") if a SHARED lock is held
        writer.execute("ROLLBACK")

    chunks = 0
    for d in src.sync():
        exclusive_now()  # even between the chunks of the first load
        chunks += 1
    assert chunks > 5
    for i in range(3):
        db.add_record(f"x_{i}", fx.record("pending", 3000 + i)[0] | {"msg_id": f"x_{i}"})
        db._db.commit()
        list(src.sync())
        exclusive_now()
    src.detail("x_0")
    exclusive_now()
    assert not src._con.in_transaction
    writer.close()
    src.close()


def test_locked_by_writer_quiet_then_unavailable_then_recovers(hubdb, monkeypatch):
    db, path = hubdb
    src = SQLiteSource(path)
    src.open()
    load(src)
    db.add_record("late_1", fx.record("succeeded", 4000)[0] | {"msg_id": "late_1"})
    db._db.commit()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(sqlite_mod.LOCKED_LIMIT - 1):
            assert deltas(src) == []  # quiet: retried at the next sync
        with pytest.raises(SourceUnavailable, match="locked"):
            deltas(src)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    (d,) = deltas(src)
    assert [r.msg_id for r in d.upserts] == ["late_1"]
    src.close()


def test_rows_read_before_a_lock_are_delivered(hubdb, monkeypatch):
    """A Hub commit can lock the file in the middle of a sync: what was read before is not lost."""
    db, path = hubdb
    src = SQLiteSource(path)
    load(src)
    rec = fx.record("succeeded", 4100)[0]
    db.add_record(rec["msg_id"], rec)
    db._db.commit()
    locker = sqlite3.connect(path, isolation_level=None)
    real = SQLiteSource._check_deletions

    def lock_then_check(self, *args):
        locker.execute("BEGIN EXCLUSIVE")  # a writer arrives after the new rows were read
        return real(self, *args)

    monkeypatch.setattr(SQLiteSource, "_check_deletions", lock_then_check)
    try:
        (d,) = deltas(src)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        monkeypatch.undo()
    assert [r.msg_id for r in d.upserts] == [rec["msg_id"]]
    assert src._locked_syncs == 1
    assert deltas(src) == []  # the rest of the sync ran: nothing else changed
    assert src._locked_syncs == 0
    src.close()


def test_detail_while_locked(hubdb):
    db, path = hubdb
    src = SQLiteSource(path)
    src.load_attempts = 2
    recs = load(src)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(SourceUnavailable, match="locked"):
            src.detail(next(iter(recs)))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert src.detail(next(iter(recs))).record.msg_id == next(iter(recs))
    src.close()


def test_locked_during_first_load(hubdb):
    db, path = hubdb
    src = SQLiteSource(path)
    src.load_attempts = 1
    src.open()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(sqlite_mod.LOCKED_LIMIT - 1):
            assert deltas(src) == []
        with pytest.raises(SourceUnavailable):
            deltas(src)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert len(load(src)) == 200
    src.close()


# -- errors ----------------------------------------------------------------------------------------


def open_error(path) -> SourceError:
    with pytest.raises(SourceError) as info:
        s = SQLiteSource(path)
        s.open()
        list(s.sync())
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return info.value


def test_missing_file(tmp_path):
    assert "no such file" in str(open_error(tmp_path / "nope.db"))


def test_directory(tmp_path):
    assert "is a directory" in str(open_error(tmp_path))


def test_garbage_file(tmp_path):
    p = tmp_path / "garbage.db"
    p.write_bytes(b"this is not a database at all\n" * 100)
    err = open_error(p)
    assert isinstance(err, NotATaskDatabase) and "not a SQLite database" in str(err)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.db"
    p.write_bytes(b"")
    err = open_error(p)
    assert isinstance(err, NotATaskDatabase) and "empty file" in str(err)


def test_sqlite_without_task_table(tmp_path):
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE things (a, b)")
    con.commit()
    con.close()
    err = open_error(p)
    assert isinstance(err, NotATaskDatabase)
    assert str(err) == f"{p} is a SQLite file but holds no ipyparallel task table"


def test_truncated_file(tmp_path):
    p = tmp_path / "tasks.db"
    fx.write_sqlite(p, fx.make_records(2000, seed=4))
    size = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.truncate(size // 2)
    err = open_error(p)
    assert isinstance(err, NotATaskDatabase) and "damaged" in str(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(taskdb):
    taskdb.chmod(0)
    try:
        assert "permission denied" in str(open_error(taskdb))
    finally:
        taskdb.chmod(0o644)


# -- capabilities and actions ----------------------------------------------------------------------


def test_capabilities_without_hub(src):
    caps = src.capabilities()
    assert caps.kind == "sqlite" and caps.backend == "sqlite"
    assert not caps.has_engines and not caps.can_resubmit and not caps.can_purge and caps.read_only
    assert caps.resubmit_reason == "resubmit needs the Hub: pass --hub CONNECTION_FILE"
    assert caps.purge_reason
    with pytest.raises(ActionRefused, match="--hub"):
        src.resubmit(["x"])
    with pytest.raises(ActionRefused):
        src.purge(["x"])


def test_purge_with_allow_writes(taskdb):
    s = SQLiteSource(taskdb, allow_writes=True)
    caps = s.capabilities()
    assert caps.can_purge and not caps.purge_via_hub and not caps.read_only
    s.open()
    recs = load(s)
    pending = next(m for m, r in recs.items() if r.state is State.PENDING)
    done = [m for m, r in recs.items() if r.state is State.SUCCEEDED][:4]
    with pytest.raises(ActionRefused, match="pending"):
        s.purge(done + [pending])
    assert deltas(s) == []  # nothing was deleted
    assert s.purge(done) == 4
    (d,) = deltas(s)
    assert sorted(d.removed) == sorted(done) and d.warnings == []  # our own purge: no warning
    s.close()


# -- real clusters (tests/conftest.py) ----------------------------------------------------------------


class Mirror:
    """What a store would hold after applying a source's deltas."""

    def __init__(self, src) -> None:
        self.src = src
        self.recs: dict = {}
        self.removed: list[str] = []
        self.warnings: list[str] = []
        self.engines = None

    def sync(self) -> None:
        for d in self.src.sync():
            if d.reset:
                self.recs = {}
            self.recs.update({r.msg_id: r for r in d.upserts})
            for m in d.removed:
                self.recs.pop(m, None)
            self.removed += d.removed
            self.warnings += d.warnings
            if d.engines is not None:
                self.engines = d.engines

    def until(self, cond, timeout: float = 20.0, what: str = "") -> None:
        import time

        deadline = time.monotonic() + timeout
        while True:
            self.sync()
            if cond(self.recs):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or cond}")
            time.sleep(0.25)


def hub_view(cluster, ids) -> dict:
    """The Hub's own records for `ids`, normalized the same way."""
    from datasource.model import LIGHT_KEYS

    with cluster.hub_client() as hub:
        live = hub.connection_request()
        raw = hub.records_by_id(list(ids), list(LIGHT_KEYS) + ["stdout", "stderr", "error", "metadata"])
    engine_ids = {u: i for i, u in live.items()}
    return {r["msg_id"]: normalize_record(r, engine_ids) for r in raw}


@pytest.mark.cluster
def test_real_cluster_tasks_db_agrees_with_the_hub(cluster_sqlite):
    w = cluster_sqlite.workload
    src = SQLiteSource(cluster_sqlite.tasks_db)
    src.open()
    m = Mirror(src)
    m.until(lambda recs: set(w.all) <= set(recs), what="the workload in tasks.db")  # commits lag ~2 s
    hub = hub_view(cluster_sqlite, w.all)
    assert set(hub) == set(w.all)
    for msg_id, want in hub.items():
        assert dataclasses.asdict(m.recs[msg_id]) == dataclasses.asdict(want), msg_id
    assert all(m.recs[i].state is State.SUCCEEDED for i in w.done_ok)
    assert {m.recs[i].ename for i in w.failed} == {"ValueError", "ZeroDivisionError"}
    assert m.recs[w.pending[0]].state is State.PENDING
    assert m.recs[w.labeled[0]].label == "hubtop-labeled"
    assert m.recs[w.direct[0]].queue == "mux"
    assert all(m.recs[i].engine_id is not None for i in w.all)  # from log/engines.json
    for msg_id, text in w.stdout.items():
        assert src.detail(msg_id).stdout == text
    d = src.detail(w.value_errors[0])
    assert "ValueError" in d.traceback[-1] and d.record.evalue == "bad value 7"
    src.close()


@pytest.mark.cluster
def test_real_cluster_paired_with_its_hub(cluster_sqlite, monkeypatch):
    hub = cluster_sqlite.hub_client()
    src = SQLiteSource(cluster_sqlite.tasks_db, hub=hub)
    try:
        caps = src.capabilities()
        assert caps.has_engines and caps.can_resubmit and caps.can_purge and caps.purge_via_hub
        m = Mirror(src)
        m.sync()
        assert m.engines and len([e for e in m.engines if e.alive]) == 2
        m.until(lambda recs: set(cluster_sqlite.workload.all) <= set(recs))
        with pytest.raises(ActionRefused, match="No such msg"):
            src.resubmit(["not-a-task"])
        # the Hub names its in-flight tasks (the workload's long sleep) ...
        d = Delta()
        assert cluster_sqlite.workload.pending[0] in paired.PairedHub(hub, live_running=False).poll(d, {})
        assert d.queue is not None and not d.warnings
        # ... unless that means listing every completed id (then counts only, no warning)
        monkeypatch.setattr(paired, "VERBOSE_LIMIT", 0)
        d = Delta()
        assert paired.PairedHub(hub, live_running=False).poll(d, {}) is None and d.engines and not d.warnings
    finally:
        src.close()
        hub.close()


@pytest.mark.cluster
def test_real_cluster_incremental_resubmit_purge_and_new_hub_run(fresh_cluster):
    import cluster_workload

    cluster = fresh_cluster("sqlite", n=1)
    hub = cluster.hub_client()
    paired = Mirror(SQLiteSource(cluster.tasks_db, hub=hub))
    plain = Mirror(SQLiteSource(cluster.tasks_db))
    try:
        paired.sync()
        plain.sync()
        ids = cluster_workload.run_more(cluster.connection_file, 5)
        for mirror in (paired, plain):
            mirror.until(lambda r: all(i in r and r[i].state is State.SUCCEEDED for i in ids), what="5 new tasks")
        mapping = paired.src.resubmit([ids[0]])
        copy = mapping[ids[0]]
        for mirror in (paired, plain):
            mirror.until(lambda r: copy in r and r[copy].state is State.SUCCEEDED
                         and r[ids[0]].resubmitted == copy, what="the resubmitted copy and pointer")
        assert paired.src.detail(copy).resubmitted_from == ids[0]
        assert paired.src.purge([ids[1]]) == 1
        for mirror in (paired, plain):
            mirror.until(lambda r: ids[1] not in r, what="the purged record to vanish")
        assert ids[1] in plain.removed and plain.warnings == ["1 record disappeared since the last poll (ipython-tasks)"]
        assert paired.warnings == []  # purged through this source: expected, not a surprise
        # a new Hub on the same profile writes a new table: the old records become an earlier run
        cluster.restart_controller()
        plain.until(lambda r: r[ids[0]].run == "ipython-tasks", what="the old table to become an earlier run")
        (new,) = cluster_workload.run_more(cluster.connection_file, 1)
        plain.until(lambda r: new in r and r[new].state is State.SUCCEEDED, what="a task of the new Hub")
        assert plain.recs[new].run is None
        assert {r.run for r in plain.recs.values()} == {None, "ipython-tasks"}
    finally:
        paired.src.close()
        plain.src.close()
        hub.close()
