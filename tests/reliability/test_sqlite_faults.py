"""The Hub's tasks.db read while the Hub writes it; locks, dropped tables, truncated and corrupt files."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from datasource.cluster import LocalCluster
from datasource.hubclient import HubClient
from datasource.poller import Poller
from datasource.sources.base import NotATaskDatabase, SourceError
from datasource.sources.sqlite import LOCKED_LIMIT, SQLiteSource
from datasource.store import TaskStore
from tests.datasource import dbfixtures as fx
from tests.reliability.helpers import errors_logged, poll_until

ROWS = 100_000


def _p99(samples: list[float]) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def _latencies(client: HubClient, seconds: float, until=lambda: False, timeout: float = 10.0) -> list[float]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        t0 = time.perf_counter()
        client.request("queue_request", {"targets": None, "verbose": False}, timeout=timeout)
        out.append(time.perf_counter() - t0)
        time.sleep(0.02)
    return out


@pytest.mark.cluster
def test_hub_latency_while_hubtop_reads_a_large_tasks_db(tmp_path: Path, capsys) -> None:
    """hubtop never holds a read transaction across polls: while tasks run (the Hub commits every 2 s) and
    SQLiteSource loads and syncs a 100k-row tasks.db in a loop, no Hub queue_request waits behind a reader
    (max < 200 ms; a lock held across a poll costs the Hub seconds, as the control phase shows: one reader
    holding `BEGIN; SELECT` stalls it for its 5 s busy timeout). The p99 is printed and compared with the
    same Hub without hubtop (docs/reliability.md): on this shared 2-core VM CPU contention alone moves it
    past 10 ms, so the p99 bound asserted is relative to the baseline."""
    import cluster_workload

    from tests.conftest import ENGINE_ENV

    ipython_dir = tmp_path / "ipython"
    cluster = LocalCluster(n=1, backend="sqlite", ipython_dir=ipython_dir, env=ENGINE_ENV)
    cluster.profile_dir.mkdir(parents=True)
    fx.write_sqlite(cluster.profile_dir / "tasks.db", fx.make_records(ROWS, seed=5))  # an earlier run's 100k rows
    cluster.start(timeout=90)
    stop = threading.Event()
    syncs: list[float] = []
    try:
        db_path = cluster.tasks_db
        client = HubClient(cluster.connection_info(), timeout=10.0)

        def submit_forever() -> None:  # keep the Hub writing: it commits every 2 s while records change
            rc = cluster_workload.connect(cluster.connection_file)
            try:
                view = rc.load_balanced_view()
                while not stop.is_set():
                    view.apply_async(cluster_workload._ok, 1).wait(10)
            finally:
                rc.close()

        submitter = threading.Thread(target=submit_forever, daemon=True)
        submitter.start()
        baseline = _latencies(client, 4.0)

        source = SQLiteSource(db_path)
        store = TaskStore()
        poller = Poller(source, store)

        def sync_forever() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                poller.step()
                syncs.append(time.perf_counter() - t0)
                time.sleep(0.2)

        syncer = threading.Thread(target=sync_forever, daemon=True)
        syncer.start()
        loading = _latencies(client, 60.0, until=lambda: store.total >= ROWS)  # the first load: 20k-row statements
        loaded, load_syncs = store.total, len(syncs)
        during = _latencies(client, 8.0)  # then incremental syncs in a loop
        stop.set()
        syncer.join(15)
        submitter.join(15)
        poller.close()

        # Control: a reader that keeps a read transaction open blocks the Hub's commit (its event loop).
        stop.clear()
        submitter = threading.Thread(target=submit_forever, daemon=True)
        submitter.start()
        holder = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, isolation_level=None)
        holder.execute("BEGIN")
        holder.execute("SELECT count(*) FROM 'ipython-tasks'").fetchall()
        # each commit the holder blocks stalls the Hub for its 5 s busy timeout, and an overdue commit can run
        # again before the waiting request: one request may wait two of them (a CI run saw > 10 s)
        control = _latencies(client, 6.0, timeout=30.0)
        holder.execute("COMMIT")
        holder.close()
        stop.set()
        submitter.join(15)
        client.close()
    finally:
        stop.set()
        cluster.stop()

    with capsys.disabled():
        print(
            f"\nqueue_request latency (ms) while tasks run: without hubtop p99 {_p99(baseline) * 1e3:.1f}; "
            f"while SQLiteSource loads {loaded:,} rows p99 {_p99(loading) * 1e3:.1f} max {max(loading) * 1e3:.1f}; "
            f"while it syncs in a loop ({len(syncs) - load_syncs} syncs) "
            f"p99 {_p99(during) * 1e3:.1f} max {max(during) * 1e3:.1f}; "
            f"with a reader holding a transaction p99 {_p99(control) * 1e3:.0f} max {max(control) * 1e3:.0f}"
        )
    assert loaded >= ROWS
    assert len(syncs) - load_syncs >= 10
    assert _p99(during) <= max(0.010, 3 * _p99(baseline) + 0.010), sorted(during)[-5:]
    assert max(during) < 0.2
    assert max(loading) < 1.0  # a commit waits at most for one load statement, never for a whole poll
    assert max(control) > 1.0  # the measurement does see a lock held across polls


def test_no_lock_survives_a_poll(tmp_path: Path) -> None:
    """Between two polls (the first load of 100k rows included) another connection can take the EXCLUSIVE
    lock at once (busy timeout 0): SQLiteSource holds no lock and no open statement across polls."""
    path = tmp_path / "tasks.db"
    fx.write_sqlite(path, fx.make_records(ROWS, seed=6))
    source, store, poller = _source(path)
    probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    hub = fx.open_hub_db(path)  # a writer adding rows between polls, like a Hub
    try:
        for i in range(6):
            poller.step()
            probe.execute("BEGIN EXCLUSIVE")  # raises "database is locked" if a reader still holds SHARED
            probe.execute("ROLLBACK")
            for rec in fx.make_records(50, seed=100 + i, first=200_000 + 100 * i):
                hub.add_record(rec["msg_id"], dict(rec))
            hub._db.commit()
        assert store.total == ROWS + 250
    finally:
        hub.close()
        probe.close()
        poller.close()


def _source(path: Path) -> tuple[SQLiteSource, TaskStore, Poller]:
    source = SQLiteSource(path)
    store = TaskStore()
    return source, store, Poller(source, store)


def test_database_locked_is_retried_quietly(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="hubtop")
    path = tmp_path / "tasks.db"
    fx.write_sqlite(path, fx.make_records(2_000, seed=1))
    source, store, poller = _source(path)
    assert poller.step().status.state == "connected" and store.total == 2_000

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(LOCKED_LIMIT - 1):
            t0 = time.monotonic()
            out = poller.step()
            assert time.monotonic() - t0 < 3.0
            assert out.status.state == "connected" and out.event is None  # quiet
        out = poller.step()  # locked for LOCKED_LIMIT polls in a row: now it says so
        assert out.status.state == "retrying"
        assert "locked by another process" in out.status.message and "\n" not in out.status.message
        assert store.total == 2_000  # last data kept
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    hub = fx.open_hub_db(path)  # a Hub writes more: a new table, 10 rows
    for rec in fx.make_records(10, seed=2, first=50_000):
        hub.add_record(rec["msg_id"], dict(rec))
    hub._db.commit()
    hub.close()
    out = poll_until(poller, lambda o: o.status.state == "connected" and store.total == 2_010, timeout=30)
    assert out.event == "reconnected"
    poller.close()
    assert errors_logged(caplog) == []


def test_task_table_dropped_while_polling(tmp_path: Path, caplog) -> None:
    """Someone drops the task table under hubtop: the records go, and the status must say why."""
    caplog.set_level(logging.INFO, logger="hubtop")
    path = tmp_path / "tasks.db"
    table = fx.write_sqlite(path, fx.make_records(500, seed=3))
    source, store, poller = _source(path)
    poller.step()
    assert store.total == 500
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"DROP TABLE '{table}'")
    con.close()
    outcomes = []
    out = poll_until(poller, lambda o: o.status.state == "retrying" or store.total == 0, timeout=30, outcomes=outcomes)
    said = [out.status.message] + [w for o in outcomes for w in o.warnings] + out.status.warnings
    assert all("\n" not in w and "Traceback" not in w for w in said)
    poller.close()
    assert [r for r in errors_logged(caplog) if "internal error" in r.getMessage()] == []
    assert any("500 records disappeared" in w or table in w for w in said), said


@pytest.mark.parametrize("damage", ["foreign", "no-table", "truncated", "corrupt", "empty", "text"])
def test_bad_files_give_one_clear_line(tmp_path: Path, damage: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger="hubtop")
    path = tmp_path / "tasks.db"
    if damage == "foreign":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, blob BLOB)")
        con.commit()
        con.close()
    elif damage == "no-table":
        fx.write_sqlite(path, fx.make_records(10))
        con = sqlite3.connect(path)
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            con.execute(f"DROP TABLE '{name}'")
        con.commit()
        con.close()
    elif damage in ("truncated", "corrupt"):
        fx.write_sqlite(path, fx.make_records(3_000, seed=4))
        data = bytearray(path.read_bytes())
        if damage == "truncated":
            data = data[: len(data) // 3]
        else:
            for offset in range(4096, len(data) - 4096, 4096):
                data[offset: offset + 64] = os.urandom(64)
        path.write_bytes(bytes(data))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("msg_id,state\n1,ok\n")
    source, store, poller = _source(path)
    outcomes = [poller.open(), poller.step()]
    for _ in range(3):  # damage deep in the file may only show while loading
        outcomes.append(poller.step())
    bad = [o for o in outcomes if o.status.state == "retrying"]
    assert bad, f"{damage}: no error reported"
    message = bad[0].status.message
    assert "\n" not in message and "Traceback" not in message
    assert any(word in message for word in ("not a SQLite", "no ipyparallel task table", "damaged", "empty file",
                                            "malformed", "not an ipyparallel")), message
    with pytest.raises(SourceError) as info:
        fresh = SQLiteSource(path)
        fresh.open()
        for _ in range(3):
            list(fresh.sync())
    assert isinstance(info.value, (NotATaskDatabase, SourceError))
    poller.close()
    assert [r for r in errors_logged(caplog) if "internal error" in r.getMessage()] == []
