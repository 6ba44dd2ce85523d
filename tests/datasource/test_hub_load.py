"""HubSource's two-phase first load on SQLite Hubs (listing, then the timestamps backfilled), against real Hubs.

The reference is the one-phase load (`fast_load=False`): after the backfill every record equals it.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections import Counter
from datetime import timedelta

import pytest

from benchmarks.generate import fill_hub_table
from datasource.hubclient import CHUNK
from datasource.model import LIGHT_KEYS, State
from datasource.sources import hub as hub_module
from datasource.sources.hub import LIST_KEYS, TIME_KEYS, HubSource
from datasource.sources.sqlite import find_tables
from tests.datasource import dbfixtures

pytestmark = pytest.mark.cluster

HISTORY = 3000
TIMES = ("submitted", "started", "completed", "received")


def spy(source: HubSource) -> list[tuple[str, dict, float]]:
    """Every request the source sends from now on: (msg_type, content, seconds)."""
    calls: list[tuple[str, dict, float]] = []
    client = source.client
    request = client.request

    def timed(msg_type, content=None, timeout=None):
        start = time.monotonic()
        try:
            return request(msg_type, content, timeout)
        finally:
            calls.append((msg_type, content or {}, time.monotonic() - start))

    client.request = timed
    return calls


def one_phase(conn) -> dict:
    source = HubSource(conn, fast_load=False, live_running=False)
    source.open()
    try:
        return known_ids({r.msg_id: r for d in source.sync() for r in d.upserts}, source)
    finally:
        source.close()


def known_ids(records: dict, source: HubSource) -> dict:
    """An engine's integer id is learnt from the first error it raised (dead engines): a record read
    before that one has None, whatever the load order; the store fills it from the engines it knows.
    Compare records as the store shows them."""
    ids = source._engine_ids
    return {m: r if r.engine_id is not None or r.engine_uuid not in ids else dataclasses.replace(r, engine_id=ids[r.engine_uuid])
            for m, r in records.items()}


def backfill(source: HubSource, records: dict, gap: float = 0.3, limit: float = 60.0) -> list[list]:
    """Sync until the backfill is over; the deltas of each sync."""
    syncs = []
    deadline = time.monotonic() + limit
    while source.backfill_progress is not None:
        assert time.monotonic() < deadline, f"backfill stuck at {source.backfill_progress}"
        time.sleep(gap)
        deltas = list(source.sync())
        for d in deltas:
            records.update({r.msg_id: r for r in d.upserts})
            for m in d.removed:
                records.pop(m, None)
        syncs.append(deltas)
    return syncs


def fill_history(cluster, n: int, **kwargs) -> list[dict]:
    """n fixture records (every kind: pending, failed with ANSI tracebacks, resubmitted pairs...) appended
    to the running Hub's own table, committed: the history a long-lived Hub has."""
    recs = list(dbfixtures.make_records(n, dbfixtures.DEFAULT_MIX, **kwargs))
    db = cluster.tasks_db
    con = sqlite3.connect(str(db), timeout=10)
    try:
        table = find_tables(con)[-1]
    finally:
        con.close()
    fill_hub_table(db, table, recs)
    return recs


def same_listing(listed, whole) -> bool:
    """Phase 1 gives everything but the times."""
    return listed == dataclasses.replace(whole, **{t: None for t in TIMES})


@pytest.fixture(params=["sqlite", "dictdb", "mongodb"])
def storing_cluster(request):
    return request.getfixturevalue(f"cluster_{request.param}")


def test_real_workload_two_phase_on_sqlite_only(storing_cluster):
    """The workload's real records (errors from engines, labels, a direct task, a pending one), with a head
    chunk of 5 ids so that most of them are listed: same states, same fields; other backends keep one phase."""
    w = storing_cluster.workload
    reference = one_phase(storing_cluster.connection_file)
    source = HubSource(storing_cluster.connection_file, live_running=False)
    source.open()
    source._chunk = 5
    calls = spy(source)
    try:
        deltas = list(source.sync())
        records = {r.msg_id: r for d in deltas for r in d.upserts}
        assert deltas[0].reset and all(d.loading for d in deltas[:-1]) and not deltas[-1].loading
        assert deltas[-1].done == deltas[-1].total == len(w.all) and sorted(records) == sorted(reference)
        asked = [tuple(c["keys"]) for m, c, _ in calls if m == "db_request"]
        if storing_cluster.backend != "sqlite":
            assert known_ids(records, source) == reference and set(asked) == {tuple(LIGHT_KEYS)}
            assert source.backfill_progress is None
            return
        assert tuple(LIST_KEYS) in asked and not any(set(TIMES) & set(k) for k in asked if k != tuple(LIGHT_KEYS))
        whole = [m for m, r in records.items() if r.submitted is not None]
        assert len(whole) == 5 and source.backfill_progress == (0, len(w.all) - 5)
        for msg_id, rec in known_ids(records, source).items():
            assert rec == reference[msg_id] if msg_id in whole else same_listing(rec, reference[msg_id]), msg_id
        assert Counter(r.state for r in records.values())[State.PENDING] == 1
        assert {records[m].ename for m in w.value_errors} == {"ValueError"}

        backfill(source, records)
        assert known_ids(records, source) == reference
    finally:
        source.close()


def test_history_of_thousands_listed_then_backfilled(fresh_cluster):
    cluster = fresh_cluster("sqlite", workload=True)
    fill_history(cluster, HISTORY)
    reference = one_phase(cluster.connection_file)
    total = len(reference)
    assert total == HISTORY + len(cluster.workload.all)

    source = HubSource(cluster.connection_file, live_running=False)
    source.open()
    calls = spy(source)
    try:
        deltas = list(source.sync())
        records = {r.msg_id: r for d in deltas for r in d.upserts}
        assert deltas[0].reset and all(d.loading for d in deltas[:-1]) and not deltas[-1].loading
        assert deltas[-1].done == deltas[-1].total == total and sorted(records) == sorted(reference)
        # the right state for every task, and every field but the times
        assert {m: r.state for m, r in records.items()} == {m: r.state for m, r in reference.items()}
        for msg_id, rec in known_ids(records, source).items():
            assert rec == reference[msg_id] or same_listing(rec, reference[msg_id]), msg_id
        # newest first: the head is whole (W_s known), the rest listed
        assert source._submitted_wm == max(r.submitted for r in reference.values())
        listed = [m for m, r in records.items() if r.submitted is None]
        assert source.backfill_progress == (0, len(listed)) and len(listed) > total // 2
        newest = sorted(reference, key=lambda m: reference[m].submitted)[-10:]
        assert all(records[m].submitted is not None for m in newest)
        # chunked: <= CHUNK ids per request, no timestamp read except for the head
        queries = [c for m, c, _ in calls if m == "db_request"]
        assert all(len(c["query"]["msg_id"]["$in"]) <= CHUNK for c in queries)
        head = [c for c in queries if tuple(c["keys"]) == tuple(LIGHT_KEYS)]
        assert sum(len(c["query"]["msg_id"]["$in"]) for c in head) == total - len(listed)
        assert {tuple(c["keys"]) for c in queries} == {tuple(LIGHT_KEYS), tuple(LIST_KEYS), ("msg_id",)}

        # a sync right after another: no time since the previous one, no Hub time for the backfill
        calls.clear()
        for d in source.sync():
            records.update({r.msg_id: r for r in d.upserts})
        n = len(calls)
        (delta,) = list(source.sync())
        assert not any(tuple(c.get("keys", ())) == tuple(TIME_KEYS) for _, c, _ in calls[n:])
        assert not delta.reset and not delta.loading

        syncs = backfill(source, records)
        assert len(syncs) > 1  # spread over several syncs
        assert all(not d.reset and not d.loading for deltas in syncs for d in deltas)
        time_queries = [c for m, c, _ in calls if m == "db_request" and tuple(c["keys"]) == tuple(TIME_KEYS)]
        assert all(len(c["query"]["msg_id"]["$in"]) <= CHUNK for c in time_queries)
        filled = [m for c in time_queries for m in c["query"]["msg_id"]["$in"]]
        # the pending re-check (orphaned pending rows: fewer in flight than pending) fetched some whole first
        whole = {m for t, c, _ in calls if t == "db_request" and tuple(c["keys"]) == tuple(LIGHT_KEYS)
                 for m in c["query"]["msg_id"].get("$in", ())}
        assert len(filled) == len(set(filled)) and set(filled) | whole >= set(listed)
        assert len(filled) > len(listed) // 2
        # newest first
        firsts = [c["query"]["msg_id"]["$in"][0] for c in time_queries]
        order = sorted(reference, key=lambda m: (reference[m].submitted, m))
        assert [order.index(m) for m in firsts] == sorted((order.index(m) for m in firsts), reverse=True)
        assert known_ids(records, source) == reference
        assert source.backfill_progress is None
        (delta,) = list(source.sync())  # and then quiet
        assert not delta.upserts
    finally:
        source.close()


def test_task_completing_mid_backfill_ends_right(fresh_cluster, monkeypatch):
    """A listed pending task that completes before its backfill chunk, without the Hub's counters moving
    (a record written by another process): the backfill sees `completed` set and fetches it whole."""
    monkeypatch.setattr(hub_module, "PENDING_RECHECK_EVERY", 1e9)  # only the backfill may find it
    cluster = fresh_cluster("sqlite", workload=True)
    recs = fill_history(cluster, 1000)
    oldest_pending = next(r for r in recs if r["completed"] is None and r["engine_uuid"])
    source = HubSource(cluster.connection_file, live_running=False)
    source.open()
    calls = spy(source)
    try:
        records = {r.msg_id: r for d in source.sync() for r in d.upserts}
        target = oldest_pending["msg_id"]
        assert records[target].state is State.PENDING and target in source._unfilled

        completed = oldest_pending["submitted"] + timedelta(seconds=3)
        con = sqlite3.connect(str(cluster.tasks_db), timeout=10)
        try:
            table = find_tables(con)[-1]
            con.execute(
                f'UPDATE "{table}" SET started = ?, completed = ?, received = ?, result_content = ? WHERE msg_id = ?',
                (completed.isoformat(), completed.isoformat(), completed.isoformat(),
                 '{"status": "error", "ename": "EngineError", "evalue": "engine died", "engine_info": {}}', target))
            con.commit()
        finally:
            con.close()

        calls.clear()
        backfill(source, records)
        asked = [(tuple(c["keys"]), c["query"]["msg_id"].get("$in", ())) for m, c, _ in calls if m == "db_request"]
        whole = [i for i, (keys, ids) in enumerate(asked) if target in ids and keys == tuple(LIGHT_KEYS)]
        assert len(whole) == 1 and asked[whole[0] - 1][0] == tuple(TIME_KEYS) and target in asked[whole[0] - 1][1]
        rec = records[target]
        assert rec.state is State.FAILED and rec.ename == "EngineError" and rec.evalue == "engine died"
        assert rec.completed == completed and rec.submitted == oldest_pending["submitted"]
        assert known_ids(records, source) == one_phase(cluster.connection_file)
    finally:
        source.close()


def test_store_sees_one_reset_load_then_ordinary_polls(cluster_sqlite):
    """Through the poller: the listing is the store's (reset) load; the backfill's polls change rows, they
    are no load (no `loading`, no bulk mode that would hide changes, nothing deleted)."""
    from datasource.poller import Poller
    from datasource.store import TaskStore

    w = cluster_sqlite.workload
    source = HubSource(cluster_sqlite.connection_file, live_running=False)
    store = TaskStore()
    poller = Poller(source, store)
    poller.open()
    source._chunk = 5
    try:
        outcome = poller.step()
        assert outcome.status.state == "connected" and not store.loading and store.total == len(w.all)
        counts = store.counts()
        assert counts["failed"] == len(w.failed) and counts["pending"] == 1
        assert store.count(("submitted IS NULL", ())) == len(w.all) - 5
        assert store.filling is None  # the fill starts with the next poll
        changed = 0
        seen: list[tuple[int, int]] = []
        sync = source.sync

        def recording():
            for delta in sync():
                if delta.filling is not None:
                    seen.append(delta.filling)
                yield delta

        source.sync = recording
        deadline = time.monotonic() + 30
        while source.backfill_progress is not None:
            assert time.monotonic() < deadline
            time.sleep(0.3)
            outcome = poller.step()
            assert not store.loading and outcome.added == outcome.removed == 0 and not outcome.new_failures
            changed += outcome.changed
            assert store.filling == source.backfill_progress  # what the status line shows
        assert changed == len(w.all) - 5
        assert store.count(("submitted IS NULL", ())) == 0 and store.counts() == counts
        # the status line's "times done / total": it moved on, and it is gone once every time is in
        assert seen == sorted(seen) and seen[-1] == (len(w.all) - 5, len(w.all) - 5)
        assert store.filling is None
    finally:
        poller.close()


@pytest.mark.parametrize("whole", [True, False])
def test_one_shot_commands_load_whole_records(cluster_sqlite, whole):
    """`hubtop query`/export load once and print: every time must be there (snapshot's counts need none)."""
    from datasource.snapshot import load_source
    from datasource.sources.open import ReadOnlySource

    source = ReadOnlySource(HubSource(cluster_sqlite.connection_file, live_running=False))
    source.inner._chunk = 5
    try:
        loaded = load_source(source, whole=whole)
        missing = loaded.store.count(("submitted IS NULL", ()))
        assert loaded.store.total == len(cluster_sqlite.workload.all)
        assert (missing == 0) if whole else (missing == loaded.store.total - 5)
    finally:
        source.close()
