"""A load's announced counts (Delta.counts, SQL aggregate) equal the counts of the rows it then delivers,
and the store shows them while the load is under way (files written by ipyparallel's SQLiteDB)."""

from __future__ import annotations

import pytest

from datasource.sources import sqlite as sqlite_mod
from datasource.sources.base import Delta
from datasource.sources.sqlite import SQLiteSource
from datasource.store import PANES, TaskStore, combine

from . import dbfixtures as fx


def test_announced_counts_match_the_loaded_rows(tmp_path, monkeypatch):
    path = tmp_path / "tasks.db"
    fx.write_legacy_sqlite(path, fx.make_records(150, seed=5, client="0ld-c"))  # pre-9.1 table, no label
    fx.write_sqlite(path, fx.make_records(700, seed=3))  # every kind: timeouts, engine errors, executes...
    monkeypatch.setattr(sqlite_mod, "CHUNK", 100)
    monkeypatch.setattr(sqlite_mod, "COUNT_SPAN", 64)  # several spans per table
    src = SQLiteSource(path)
    store = TaskStore()
    announced = None
    shown_while_loading = None
    for delta in src.sync():
        store.apply(delta)
        if delta.counts is not None:
            announced = delta.counts
            assert store.loading
            shown_while_loading = store.counts()
    src.close()
    assert announced is not None and not store.loading
    final = store.counts()
    assert {p: final[p] for p in announced} == announced
    assert announced["all"] == 850 == store.total
    assert shown_while_loading == final
    # the aggregate the store keeps agrees with a scan, pane by pane
    for pane, where in PANES.items():
        sql, params = combine(where)
        scanned = store._query(f"SELECT count(*) FROM tasks WHERE {sql}", params)[0][0]
        assert store.count(where) == store.count(combine(where)) == scanned == final[pane]


def test_store_counts_follow_changes_after_the_load():
    store = TaskStore()
    records = [r for d in _records(300) for r in d]
    store.apply(Delta(upserts=records, reset=True))
    store.apply(Delta(upserts=[r for r in records[:40]], removed=[r.msg_id for r in records[40:60]]))
    import dataclasses

    from datasource.model import State

    moved = [dataclasses.replace(r, state=State.FAILED, engine_uuid=None, resubmitted="x") for r in records[60:90]]
    store.apply(Delta(upserts=moved))
    rows = store._query("SELECT engine_uuid, state, count(*) FROM tasks GROUP BY 1, 2")
    expected: dict = {}
    for uuid, state, n in rows:
        expected.setdefault(uuid, {})[state] = n
    assert store.engine_counts() == expected
    assert store.total == 280
    assert store.counts()["resubmitted"] == store._query("SELECT count(*) FROM tasks WHERE resubmitted IS NOT NULL")[0][0]


def _records(n: int):
    from datasource.model import normalize_record

    yield [normalize_record(raw) for raw in fx.make_records(n, seed=9)]


def test_filtered_counts_are_fresh_after_each_change():
    """Filtered scans are memoized per store version: a change is never hidden by the memo."""
    import dataclasses

    from datasource.model import State
    from datasource.store import pane_filter

    store = TaskStore()
    records = [r for d in _records(200) for r in d]
    store.apply(Delta(upserts=records, reset=True))
    where = ("state = ?", ("failed",))
    before = (store.counts(where), store.engine_counts(where), store.count(combine(pane_filter("failed"), where)))
    assert before == (store.counts(where), store.engine_counts(where), store.count(combine(pane_filter("failed"), where)))
    victim = next(r for r in records if r.state is not State.FAILED)
    store.apply(Delta(upserts=[dataclasses.replace(victim, state=State.FAILED)]))
    assert store.counts(where)["failed"] == before[0]["failed"] + 1
    assert sum(sum(v.values()) for v in store.engine_counts(where).values()) == before[0]["failed"] + 1
    assert store.count(combine(pane_filter("failed"), where)) == before[2] + 1


def test_state_only_filters_are_answered_like_a_scan():
    """`state:failed`-like filters (and panes combined with them) read the aggregate: same answers as a scan."""
    import dataclasses

    from datasource.model import State
    from datasource.query import parse, to_sql
    from datasource.store import pane_filter

    store = TaskStore()
    records = [r for d in _records(400) for r in d]
    records += [dataclasses.replace(r, msg_id=r.msg_id + "x", state=State.RUNNING) for r in records[:7]]
    store.apply(Delta(upserts=records, reset=True))
    for where in (to_sql(parse("state:failed")), to_sql(parse("-state:succeeded")), ("0", ()),
                  combine(pane_filter("pending"), to_sql(parse("state:running"))), ("state = ? OR state IS NULL", ["aborted"])):
        sql, params = combine(where)
        rows = store._query(f"SELECT engine_uuid, state, count(*), count(resubmitted) FROM tasks WHERE {sql} GROUP BY 1, 2", params)
        scanned_engines: dict = {}
        for uuid, state, n, _ in rows:
            scanned_engines.setdefault(uuid, {})[state] = n
        assert store.engine_counts(where) == scanned_engines, where
        assert store.count(where) == sum(r[2] for r in rows), where
        assert store.counts(where)["all"] == sum(r[2] for r in rows)
        assert store.counts(where)["resubmitted"] == sum(r[3] for r in rows)


def test_the_counts_are_read_beside_the_first_rows(tmp_path, monkeypatch):
    """The pane counts (a full scan) run on their own thread and connection while the first rows are built
    and shown, not after them; a failure of that scan is the load's failure."""
    import threading

    path = tmp_path / "tasks.db"
    fx.write_sqlite(path, fx.make_records(400, seed=4))
    monkeypatch.setattr(sqlite_mod, "FIRST_CHUNK", 50)
    started, release = threading.Event(), threading.Event()
    threads: list[str] = []
    count = SQLiteSource._count_panes

    def held(self, con):
        threads.append(threading.current_thread().name)
        started.set()
        assert release.wait(10)
        return count(self, con)

    monkeypatch.setattr(SQLiteSource, "_count_panes", held)
    src = SQLiteSource(path)
    loading = src.sync()
    first = next(loading)
    assert first.reset and len(first.upserts) == 50
    assert started.wait(5), "the count had not started when the first rows were delivered"
    release.set()
    second = next(loading)
    assert second.counts is not None and second.counts["all"] == 400 and not second.upserts
    assert threads == ["hubtop-count"]
    rest = list(loading)
    assert sum(len(d.upserts) for d in rest) == 350
    src.close()

    def broken(self, con):
        raise sqlite_mod.SourceUnavailable("the count could not read the file")

    monkeypatch.setattr(SQLiteSource, "_count_panes", broken)
    src = SQLiteSource(path)
    loading = src.sync()
    next(loading)
    with pytest.raises(sqlite_mod.SourceUnavailable, match="the count could not read"):
        next(loading)
    src.close()
