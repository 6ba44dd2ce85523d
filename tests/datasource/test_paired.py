"""A database source paired with its Hub (`datasource/sources/paired.py`): running marks from the Hub's IOPub
relay on the direct path, against real clusters."""

from __future__ import annotations

import time

import pytest

from datasource.model import State
from datasource.poller import Poller
from datasource.sources.base import Delta
from datasource.sources.open import open_source
from datasource.sources.paired import PairedHub
from datasource.sources.sqlite import SQLiteSource
from datasource.store import TaskStore

pytestmark = pytest.mark.cluster


def _submit_sleeps(cluster, *seconds: float):
    """Load-balanced sleeps on the cluster; returns (client, msg_ids). The caller closes the client."""
    import cluster_workload

    rc = cluster_workload.connect(cluster.connection_file)
    view = rc.load_balanced_view()
    ars = [view.apply_async(cluster_workload._sleep, s) for s in seconds]
    return rc, [ar.msg_ids[0] for ar in ars]


def _step_until(poller: Poller, store: TaskStore, cond, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = poller.step()
        assert out.status.state == "connected", out.status.message
        if cond(store):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def _state(store: TaskStore, msg_id: str) -> State | None:
    rec = store.get(msg_id)
    return None if rec is None else rec.state


def _connect(source) -> tuple[TaskStore, Poller]:
    """A store and a poller on `source`, opened and through a first good poll (the caller closes the source)."""
    store = TaskStore()
    poller = Poller(source, store)
    poller.open()
    assert poller.step().status.state == "connected"
    return store, poller


def test_direct_path_marks_running_tasks_then_their_outcome(fresh_cluster) -> None:
    cluster = fresh_cluster("sqlite", n=1)
    source = open_source(str(cluster.connection_file), timeout=2.0)
    assert isinstance(source, SQLiteSource)
    assert not source.capabilities().knows_running  # not subscribed before open
    rc = None
    try:
        store, poller = _connect(source)
        assert source.capabilities().knows_running
        # one engine: the first sleep runs, the second waits behind it
        rc, (first, second) = _submit_sleeps(cluster, 4.0, 2.0)
        _step_until(poller, store, lambda s: _state(s, first) is State.RUNNING, 20, "the first task running")
        assert _state(store, second) is State.PENDING  # in the file, not seen running: the Queued pane
        counts = store.counts()
        assert counts["running"] == 1 and counts["queued"] == 1 and counts["pending"] == 2
        _step_until(poller, store, lambda s: _state(s, first) is State.SUCCEEDED, 20, "the first task done")
        _step_until(poller, store, lambda s: _state(s, second) in (State.RUNNING, State.SUCCEEDED), 20,
                    "the second task running")
        _step_until(poller, store, lambda s: _state(s, second) is State.SUCCEEDED, 20, "the second task done")
        assert store.counts()["running"] == 0 and store.counts()["queued"] == 0
    finally:
        if rc is not None:
            rc.close()
        source.close()


def test_a_running_mark_reaches_the_store_without_a_change_of_the_file(fresh_cluster) -> None:
    """A task starts long before its row changes: the mark is an upsert of that record alone, made from what
    the source holds (the file's data_version did not move)."""
    cluster = fresh_cluster("sqlite", n=1)
    source = SQLiteSource(cluster.tasks_db, hub=cluster.hub_client())
    rc = None
    try:
        source.open()
        list(source.sync())
        rc, (task,) = _submit_sleeps(cluster, 6.0)
        seen: list[Delta] = []
        deadline = time.monotonic() + 20
        while not any(r.msg_id == task and r.state is State.RUNNING for d in seen for r in d.upserts):
            assert time.monotonic() < deadline, "never marked running"
            seen.extend(source.sync())
            time.sleep(0.2)
        marked = [d for d in seen if any(r.state is State.RUNNING for r in d.upserts)][0]
        assert [r.msg_id for r in marked.upserts] == [task]
        row = source._connection().execute(
            f'SELECT completed FROM "{max(source._tables)}" WHERE msg_id = ?', (task,)).fetchall()
        assert row == [(None,)]  # still pending in the file
        # nothing happens: a poll yields no upsert (engines and queues only)
        time.sleep(0.3)
        assert all(not d.upserts for d in source.sync())
    finally:
        if rc is not None:
            rc.close()
        source.close()


def test_a_task_running_before_hubtop_subscribed_is_running_when_alone_on_its_engine(fresh_cluster) -> None:
    """IOPub never shows the start of a task that began before the subscription; the Hub's verbose queue does:
    a task alone in flight on its engine is the one the engine runs. The task waiting behind it stays queued."""
    cluster = fresh_cluster("sqlite", n=1)
    rc, (first, second) = _submit_sleeps(cluster, 6.0, 1.0)
    source = SQLiteSource(cluster.tasks_db, hub=cluster.hub_client())
    store = TaskStore()
    poller = Poller(source, store)
    try:
        time.sleep(1.5)  # the first sleep has started: its busy went out before anyone subscribed
        poller.open()
        _step_until(poller, store, lambda s: _state(s, first) is State.RUNNING, 4, "the first task running")
        assert _state(store, second) is State.PENDING
        assert first not in source.paired._listener.running  # not from IOPub
        _step_until(poller, store, lambda s: _state(s, first) is State.SUCCEEDED, 20, "the first task done")
        _step_until(poller, store, lambda s: _state(s, second) is State.SUCCEEDED, 20, "the second task done")
        assert store.counts()["running"] == 0
    finally:
        rc.close()
        source.close()


def test_knows_running_only_with_a_hub(cluster_sqlite) -> None:
    w = cluster_sqlite.workload
    bare = SQLiteSource(cluster_sqlite.tasks_db)
    paired = SQLiteSource(cluster_sqlite.tasks_db, hub=cluster_sqlite.hub_client())
    try:
        # the workload's long sleep started before anyone subscribed (a SUB misses history): without a Hub it
        # is pending; with one, it is running, alone in flight on its engine (LB tasks: one per engine)
        for src, state in ((bare, State.PENDING), (paired, State.RUNNING)):
            src.open()
            recs: dict = {}
            deadline = time.monotonic() + 10
            while w.pending[0] not in recs:  # the Hub commits tasks.db every 2 s
                assert time.monotonic() < deadline
                recs.update({r.msg_id: r for d in src.sync() for r in d.upserts})
                time.sleep(0.2)
            assert recs[w.pending[0]].state is state
        assert not bare.capabilities().knows_running
        assert paired.capabilities().knows_running
        assert paired.paired.knows_running and not paired.paired.down
    finally:
        bare.close()
        paired.close()


def test_no_iopub_no_running(cluster_sqlite) -> None:
    hub = PairedHub(cluster_sqlite.hub_client(), live_running=False)
    try:
        hub.open()
        d = Delta()
        assert cluster_sqlite.workload.pending[0] in hub.poll(d, {})
        assert not hub.knows_running and d.engines and not hub.warnings()
    finally:
        hub.close()


def test_mongodb_paired_with_its_hub_marks_running_tasks(fresh_cluster) -> None:
    """The same PairedHub serves MongoSource: running marks, then the outcome."""
    from datasource.sources.mongo import MongoSource

    cluster = fresh_cluster("mongodb", n=1)
    source = MongoSource(cluster.mongo_uri, database=cluster.mongo_database, hub=cluster.hub_client())
    store = TaskStore()
    poller = Poller(source, store)
    rc = None
    try:
        poller.open()
        assert poller.step().status.state == "connected"
        assert source.capabilities().knows_running
        rc, (first, second) = _submit_sleeps(cluster, 4.0, 1.0)
        _step_until(poller, store, lambda s: _state(s, first) is State.RUNNING, 20, "the first task running")
        assert _state(store, second) is State.PENDING
        _step_until(poller, store, lambda s: _state(s, second) is State.SUCCEEDED
                    and _state(s, first) is State.SUCCEEDED, 30, "both tasks done")
    finally:
        if rc is not None:
            rc.close()
        poller.close()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "hub"])
def test_a_flood_of_short_tasks_is_not_followed_on_iopub(fresh_cluster, monkeypatch, direct: bool) -> None:
    """While the cluster finishes tasks faster than IOPubListener follows, the relay sends hubtop nothing and
    no task is marked running (a standing note says why); once it calms down, running marks come back.
    The limits are lowered so that a busy test machine still floods them."""
    import cluster_workload

    from datasource import hubclient

    monkeypatch.setattr(hubclient, "FOLLOW_MAX_RATE", 20.0)
    monkeypatch.setattr(hubclient, "FOLLOW_AGAIN_RATE", 0.5)
    cluster = fresh_cluster("sqlite", n=2)
    source = open_source(str(cluster.connection_file), timeout=5.0, direct=direct)
    store = TaskStore()
    poller = Poller(source, store)
    rc = cluster_workload.connect(cluster.connection_file)
    try:
        poller.open()
        assert poller.step().status.state == "connected"
        listener = source.paired._listener if direct else source._iopub
        assert listener is not None and not listener.paused

        def note() -> list[str]:
            return [w for w in source.capabilities().warnings if "running shown as queued" in w]

        view = rc.load_balanced_view()
        burst = [view.apply_async(pow, 2, i % 7) for i in range(600)]
        _step_until(poller, store, lambda s: listener.paused, 30, "IOPub paused", interval=0.25)
        assert note() and note()[0].split()[0].replace(",", "").isdigit()
        if direct:  # before the standing note on commits: the status line is cut on the right
            assert source.capabilities().warnings[0] == note()[0]
        time.sleep(0.3)  # the unsubscription reaches the relay
        poller.step()
        received = listener.received
        more = [view.apply_async(pow, 2, i % 7) for i in range(300)]
        for ar in burst + more:
            ar.get(timeout=60)
        _step_until(poller, store, lambda s: s.total >= 900, 30, "the flood recorded", interval=0.25)
        assert listener.received == received  # the relay sent nothing while the flood lasted
        assert store.counts()["running"] == 0

        _step_until(poller, store, lambda s: not listener.paused, 30, "IOPub followed again", interval=0.25)
        assert not note()
        (task,) = view.apply_async(cluster_workload._sleep, 4.0).msg_ids
        _step_until(poller, store, lambda s: _state(s, task) is State.RUNNING, 20, "a task running after the flood")
        assert listener.received > received
    finally:
        rc.close()
        source.close()


@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
def test_tasks_the_scheduler_still_queues_are_not_re_read(fresh_cluster, backend: str) -> None:
    """A burst waits in the scheduler's queue, which the Hub lists as unassigned: a row held pending without an
    engine for such an id cannot have changed (the database lags its Hub), so the poll does not re-read it
    (re-reading every in-flight id at each change was ~2 of the ~3 reads per burst task). Every task still
    shows its engine and its outcome."""
    from datasource.sources.mongo import MongoSource

    cluster = fresh_cluster(backend, n=1)
    reads: set[str] = set()  # ids re-read during the current poll
    if backend == "sqlite":
        source = open_source(str(cluster.connection_file), timeout=5.0, direct=True)
        reread, at = "_reread_rowids", 1  # (t, rowids, by_id): every re-read of a held pending row
        ids_of = lambda args, rowids: [args[0].pending.get(r) for r in rowids]  # noqa: E731
    else:
        source = MongoSource(cluster.mongo_uri, database=cluster.mongo_database, hub=cluster.hub_client())
        reread, at = "_reread", 0  # (ids, by_id, ...)
        ids_of = lambda args, ids: ids  # noqa: E731
    original = getattr(source, reread)

    def counting(*args, **kwargs):
        keys = list(args[at])
        reads.update(ids_of(args, keys))
        return original(*args[:at], keys, *args[at + 1:], **kwargs)

    setattr(source, reread, counting)
    unassigned: set[str] = set()  # what the Hub listed unassigned during the current poll
    hub = source.paired.hub
    request = hub.request

    def listening(msg_type, content=None, *args, **kwargs):
        reply = request(msg_type, content, *args, **kwargs)
        if msg_type == "queue_request" and (content or {}).get("verbose"):
            unassigned.update(reply.get("unassigned", []))
        return reply

    hub.request = listening
    rc = None
    try:
        store, poller = _connect(source)
        rc, ids = _submit_sleeps(cluster, *[0.25] * 30)  # one engine: ~8 s; the Hub commits every 2 s
        quiet_seen = 0
        deadline = time.monotonic() + 60
        while not all(_state(store, m) is State.SUCCEEDED for m in ids):
            assert time.monotonic() < deadline, "the burst never finished"
            held_bare = {m for m in ids if (r := store.get(m)) is not None and r.state.is_pending
                         and r.engine_uuid is None and r.started is None}
            reads.clear()
            unassigned.clear()
            assert poller.step().status.state == "connected"
            quiet = held_bare & unassigned
            quiet_seen += len(quiet)
            assert not quiet & reads, f"{len(quiet & reads)} rows re-read that the Hub still queued"
            time.sleep(0.5)
        assert quiet_seen > 0  # the scheduler did queue some of the burst
        assert all(store.get(m).engine_uuid for m in ids)
    finally:
        if rc is not None:
            rc.close()
        source.close()
