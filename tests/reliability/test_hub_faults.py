"""Faults of a live Hub, injected for real: killed and restarted, never answering, an engine dying mid-task."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import zmq

from datasource.model import State
from datasource.poller import Poller
from datasource.sources.hub import HubSource
from datasource.store import TaskStore
from tests.reliability.helpers import copy_connection_file, errors_logged, poll_until, state_of

pytestmark = pytest.mark.cluster


def test_hub_killed_then_restarted_on_new_ports(fresh_cluster, caplog) -> None:
    caplog.set_level(logging.INFO, logger="hubtop")
    cluster = fresh_cluster("sqlite", n=1, workload=True)
    old_ports = json.loads(cluster.connection_file.read_text())
    source = HubSource(cluster.connection_file, timeout=1.0)
    store = TaskStore()
    poller = Poller(source, store)
    try:
        poller.open()
        assert poller.step().status.state == "connected"
        before = state_of(store)
        assert len(before) == len(cluster.workload.all)

        cluster.kill_controller(signal.SIGKILL)
        t0 = time.monotonic()
        outcomes = [poller.step()]
        if outcomes[0].status.state != "retrying":
            outcomes.append(poller.step())
        assert outcomes[-1].status.state == "retrying", "not reported within two polls"
        assert time.monotonic() - t0 < 2 * 1.0 + 1.5  # each poll bounded by the 1 s request timeout
        assert [o.event for o in outcomes if o.event][0].startswith("connection lost: no reply from the Hub")
        assert state_of(store) == before  # the last data stays on screen
        assert poller.age() is not None and poller.age() > 0

        delays = []
        for _ in range(3):
            out = poller.step()
            assert out.status.state == "retrying" and out.event is None  # one notification per transition
            delays.append(poller.next_delay(1.0))
            assert state_of(store) == before
        assert delays[0] < delays[1] < delays[2]  # exponential backoff
        assert "retrying in" in poller.status.message

        cluster.restart_controller()
        new_ports = json.loads(cluster.connection_file.read_text())
        assert new_ports["registration"] != old_ports["registration"]
        outcomes = []
        out = poll_until(poller, lambda o: o.status.state == "connected", timeout=60, outcomes=outcomes)
        assert out.event == "reconnected"
        assert any("the Hub restarted" in w for o in outcomes for w in o.warnings)
        assert str(new_ports["registration"]) in source.client.url
        # the new Hub runs a new table: its (empty) history replaced the old run's
        poll_until(poller, lambda o: store.total == 0, timeout=10)
        assert len([e for e in store.engines() if e.alive]) == 1
    finally:
        poller.close()
    assert errors_logged(caplog) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open_bounded(path: Path, timeout: float = 1.0) -> tuple[float, str]:
    source = HubSource(path, timeout=timeout)
    poller = Poller(source, TaskStore())
    t0 = time.monotonic()
    try:
        out = poller.open()
        if out.status.state != "retrying":
            out = poller.step()
    finally:
        poller.close()
    elapsed = time.monotonic() - t0
    assert out.status.state == "retrying"
    assert "\n" not in out.status.message
    return elapsed, out.status.message


def test_hub_that_never_answers(cluster_sqlite, tmp_path: Path, caplog) -> None:
    """Wrong key, CURVE on a non-CURVE Hub, nothing listening, a ROUTER that never replies: each a clear
    message naming the likely cause, within the timeout, no hang."""
    caplog.set_level(logging.INFO, logger="hubtop")
    conn = Path(cluster_sqlite.connection_file)

    wrong_key = copy_connection_file(conn, tmp_path / "wrong-key.json", key="00000000-1111-2222-3333-444444444444")
    elapsed, message = _open_bounded(wrong_key)
    assert elapsed < 4.0
    assert "key does not match" in message

    public, _ = zmq.curve_keypair()
    curve = copy_connection_file(conn, tmp_path / "curve.json", curve_serverkey=public.decode("ascii"))
    elapsed, message = _open_bounded(curve)
    assert elapsed < 4.0
    assert "CURVE" in message or "curve" in message, message

    nothing = copy_connection_file(conn, tmp_path / "nothing.json", registration=_free_port())
    elapsed, message = _open_bounded(nothing)
    assert elapsed < 4.0
    assert "no reply" in message or "nothing" in message or "refused" in message, message

    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        silent = copy_connection_file(conn, tmp_path / "silent.json", registration=port)
        elapsed, message = _open_bounded(silent)
        assert elapsed < 4.0
        assert "no reply from the Hub" in message
        assert router.poll(100), "the request did reach the silent ROUTER"
    finally:
        router.close(0)
    assert errors_logged(caplog) == []


def _engine_index_of(cluster, idle_pids: set[int]) -> int:
    """Which of cluster.engines (process-group leaders) is *not* one of the idle engines' groups."""
    idle_groups = {os.getpgid(pid) for pid in idle_pids}
    busy = [i for i, p in enumerate(cluster.engines) if p.pid not in idle_groups]
    assert len(busy) == 1, (busy, idle_groups)
    return busy[0]


def test_engine_dies_mid_task(fresh_cluster) -> None:
    import cluster_workload

    cluster = fresh_cluster("sqlite", n=2, workload=True)
    long_task = cluster.workload.pending[0]
    source = HubSource(cluster.connection_file, timeout=2.0)
    store = TaskStore()
    poller = Poller(source, store)
    try:
        poller.open()
        poller.step()
        rec = store.get(long_task)
        assert rec is not None and rec.state.is_pending and rec.engine_uuid
        busy_uuid = rec.engine_uuid
        # Ask the idle engine its pid (the busy one cannot answer): the other engine runs the long task.
        rc = cluster_workload.connect(cluster.connection_file)
        try:
            idle_ids = [eid for eid, uuid in rc._engines.items() if uuid != busy_uuid]
            idle_pids = {rc[eid].apply_sync(os.getpid) for eid in idle_ids}
        finally:
            rc.close()
        cluster.kill_engine(_engine_index_of(cluster, idle_pids), signal.SIGKILL)

        def task_failed(_) -> bool:
            r = store.get(long_task)
            return r is not None and r.state is State.FAILED

        out = poll_until(poller, task_failed, timeout=60)
        rec = store.get(long_task)
        assert rec.ename == "EngineError", rec
        assert long_task in out.new_failures or rec.state is State.FAILED
        dead = {e.uuid: e for e in store.engines()}
        assert dead[busy_uuid].alive is False
        assert sum(e.alive for e in store.engines()) == 1
    finally:
        poller.close()


def test_direct_path_hub_down_keeps_the_file_pace_then_recovers(fresh_cluster, caplog) -> None:
    """The direct path (tasks.db + its Hub): with the Hub killed, every poll still reads the file, fast (the Hub
    is asked again with a backoff, not at every poll), one standing warning says why; the Hub restarted, the
    engines and the running marks come back."""
    import sqlite3
    from datetime import datetime, timezone

    import cluster_workload
    from datasource.sources.open import open_source
    from datasource.sources.paired import POLL_TIMEOUT, RETRY_TIMEOUT
    from datasource.sources.sqlite import SQLiteSource, find_tables

    caplog.set_level(logging.INFO, logger="hubtop")
    cluster = fresh_cluster("sqlite", n=1)
    source = open_source(str(cluster.connection_file), timeout=5.0)
    assert isinstance(source, SQLiteSource)
    store = TaskStore()
    poller = Poller(source, store)
    rc = None
    try:
        poller.open()
        assert poller.step().status.state == "connected"
        assert any(e.alive for e in store.engines())

        cluster.kill_controller(signal.SIGKILL)
        times: list[float] = []
        written: dict[str, int] = {}  # msg_id -> the poll after which it was written
        seen_at: dict[str, int] = {}
        end = time.monotonic() + 8.0
        while time.monotonic() < end:
            if len(times) in (5, 15, 25):  # the file changes while the Hub is down (another writer)
                msg_id = f"written-while-down-{len(times)}"
                con = sqlite3.connect(str(cluster.tasks_db), timeout=2.0)
                with con:
                    con.execute(f'INSERT INTO "{find_tables(con)[-1]}" (msg_id, submitted) VALUES (?, ?)',
                                (msg_id, datetime.now(timezone.utc).isoformat()))
                con.close()
                written[msg_id] = len(times)
            t0 = time.monotonic()
            out = poller.step()
            times.append(time.monotonic() - t0)
            assert out.status.state == "connected", out.status.message  # the file is there: not an outage
            for m in written:
                if m not in seen_at and store.get(m) is not None:
                    seen_at[m] = len(times) - 1 - written[m]
            time.sleep(0.1)
        assert times[0] < POLL_TIMEOUT + 1.0  # the poll that found the Hub gone: the per-poll timeout, not 5 s
        assert max(times[1:]) < RETRY_TIMEOUT + 0.5, times  # the retries: the short timeout
        assert sorted(times)[len(times) // 2] < 0.1, times  # most polls do not ask the Hub at all
        assert len(times) >= 20
        assert seen_at == {m: 0 for m in written}  # each change of the file at the very next poll
        hub_lines = [w for w in poller.status.warnings if "Hub did not answer" in w]
        assert len(hub_lines) == 1 and "showing the file only" in hub_lines[0] and "\n" not in hub_lines[0]
        assert all(store.get(m).state is State.PENDING for m in written)  # no running marks while the Hub is down

        live = cluster.restart_controller()
        poll_until(poller, lambda o: not any("Hub did not answer" in w for w in o.status.warnings), timeout=40)
        rc = cluster_workload.connect(cluster.connection_file)
        task = rc.load_balanced_view().apply_async(cluster_workload._sleep, 5.0).msg_ids[0]
        poll_until(poller, lambda o: store.get(task) is not None and store.get(task).state is State.RUNNING,
                   timeout=20)
        assert not any("Hub did not answer" in w for w in poller.status.warnings)
        assert {e.uuid for e in store.engines() if e.alive} == set(live.values())
        assert source.capabilities().knows_running
        poll_until(poller, lambda o: store.get(task).state is State.SUCCEEDED, timeout=30)
    finally:
        if rc is not None:
            rc.close()
        poller.close()
    assert errors_logged(caplog) == []
