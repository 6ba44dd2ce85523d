from __future__ import annotations

import pytest

from datasource.actions import (
    completed_ids,
    engine_completed_ids,
    execute,
    failed_ids,
    ids_matching,
    preview,
    scope_cursor,
    scope_engine,
    scope_marked,
    scope_matching,
)
from datasource.model import State
from datasource.sources.base import ActionRefused, Capabilities, SourceUnavailable
from datasource.store import TaskStore, pane_filter
from tests.fakes import ENGINE_UUIDS, FakeSource

S = "c0ffee00-0000000000000000000000aa_1000_"


def mid(i: int) -> str:
    return f"{S}{i}"


@pytest.fixture
def env() -> tuple[FakeSource, TaskStore]:
    source = FakeSource(200)
    store = TaskStore()
    for delta in source.sync():
        store.apply(delta)
    return source, store


def resync(source: FakeSource, store: TaskStore) -> None:
    for delta in source.sync():
        store.apply(delta)


# -- previews ---------------------------------------------------------------------------------------


def test_preview_cursor_failed_task(env) -> None:
    source, store = env
    p = preview("resubmit", [mid(2)], store, source.capabilities(), scope=scope_cursor())
    assert p.allowed and p.reason == ""
    assert (p.requested, p.send, p.pending, p.engines, p.warnings) == (1, [mid(2)], [], ["2"], [])
    assert p.summary() == "Resubmit the task under the cursor\n  sends 1 task on engine 2 through the Hub"


def test_preview_marked_with_pending_warns_double_run(env) -> None:
    source, store = env
    marked = [mid(2), mid(3), mid(20), mid(21), mid(22)]  # 2 failed... 20, 21 pending (21 has no engine)
    p = preview("resubmit", marked, store, source.capabilities(), scope=scope_marked(len(marked)))
    assert p.allowed and p.send == marked
    assert p.pending == [mid(20), mid(21)]
    assert p.engines == ["0", "2", "3", "no engine"]
    assert "2 tasks are still pending: resubmitting runs them twice" in p.warnings
    text = p.summary()
    assert text.splitlines()[0] == "Resubmit 5 marked tasks"
    assert "sends 5 tasks on engines 0, 2, 3, no engine through the Hub" in text
    assert "  ! 2 tasks are still pending: resubmitting runs them twice" in text


def test_preview_purge_leaves_pending_out(env) -> None:
    source, store = env
    marked = [mid(i) for i in range(0, 10)]  # 0, 1 pending; 2, 3 failed; 4 aborted; 5-9 succeeded
    p = preview("purge", marked, store, source.capabilities(), scope=scope_marked(10))
    assert p.allowed
    assert p.pending == [mid(0), mid(1)]
    assert p.send == [mid(i) for i in range(2, 10)]
    assert p.warnings == ["2 pending tasks are left out: the Hub refuses to purge pending tasks"]
    assert "(10 requested, 2 left out)" in p.summary()


def test_preview_purge_of_only_pending_is_not_allowed(env) -> None:
    source, store = env
    p = preview("purge", [mid(0)], store, source.capabilities(), scope=scope_cursor())
    assert not p.allowed and p.send == []
    assert p.reason == "nothing to send: every selected task is pending"
    assert p.warnings == ["1 pending task is left out: the Hub refuses to purge pending tasks"]
    assert p.summary().endswith("not possible: nothing to send: every selected task is pending")


def test_preview_filter_scope(env) -> None:
    source, store = env
    ids = ids_matching(store, pane_filter("failed"))
    assert len(ids) == 20
    p = preview("resubmit", ids, store, source.capabilities(), scope=scope_matching(len(ids), "state:failed"))
    assert p.scope == "20 tasks matching state:failed"
    assert p.allowed and len(p.send) == 20 and p.pending == []
    assert p.engines == ["2", "3"]  # failures are records i % 20 in (2, 3), engine i % 4


def test_preview_engine_completed_scope(env) -> None:
    source, store = env
    ids = engine_completed_ids(store, ENGINE_UUIDS[1])
    assert ids and all(store.get(m).engine_uuid == ENGINE_UUIDS[1] and store.get(m).state.is_done for m in ids)
    expected = [r.msg_id for r in source.records.values() if r.engine_uuid == ENGINE_UUIDS[1] and r.state.is_done]
    assert sorted(ids) == sorted(expected) and len(ids) == 40
    p = preview("purge", ids, store, source.capabilities(), scope=scope_engine(len(ids), "1"))
    assert p.scope == "40 completed tasks of engine 1"
    assert p.allowed and p.engines == ["1"] and p.pending == []
    assert scope_engine(3, "no engine") == "3 completed tasks with no engine"


def test_helpers_completed_and_failed(env) -> None:
    source, store = env
    done = completed_ids(store)
    assert len(done) == 200 - 20 and all(store.get(m).state.is_done for m in done)
    source.resubmit([mid(2)])
    resync(source, store)
    failed = failed_ids(store)
    assert mid(2) not in failed and mid(3) in failed and len(failed) == 19
    assert len(failed_ids(store, latest_only=False)) == 20


def test_preview_read_only_refuses(env) -> None:
    source, store = env
    p = preview("purge", [mid(5)], store, source.capabilities(), read_only=True)
    assert not p.allowed and p.reason == "read-only mode"
    r = execute(p, source)
    assert not r.ok and r.sent == 0 and r.message == "purge refused: read-only mode"
    assert source.purge_calls == []


def test_preview_source_cannot(env) -> None:
    source, store = env
    caps = Capabilities(kind="sqlite", can_purge=False, purge_reason="the database is read-only: pass --allow-writes")
    p = preview("purge", [mid(5)], store, caps)
    assert not p.allowed and p.reason == "the database is read-only: pass --allow-writes"
    p = preview("resubmit", [mid(5)], store, caps)
    assert not p.allowed and p.reason == "this source cannot resubmit"


def test_preview_direct_database_purge_says_so(env) -> None:
    _, store = env
    caps = Capabilities(kind="sqlite", can_purge=True, purge_via_hub=False)
    p = preview("purge", [mid(5)], store, caps)
    assert p.allowed and p.via == "the database directly"
    assert "the records are deleted from the database file itself, not through the Hub" in p.warnings


def test_preview_unknown_ids_and_duplicates(env) -> None:
    source, store = env
    p = preview("resubmit", [mid(2), "nope", mid(2), ""], store, source.capabilities())
    assert p.requested == 2 and p.send == [mid(2)] and p.unknown == ["nope"]
    assert "1 id unknown to hubtop is left out" in p.warnings
    p = preview("resubmit", [], store, source.capabilities())
    assert not p.allowed and p.reason == "no tasks selected"
    with pytest.raises(ValueError):
        preview("delete", [mid(2)], store, source.capabilities())


def test_preview_resubmit_warns_mux_and_again(env) -> None:
    source, store = env
    source.resubmit([mid(3)])
    resync(source, store)
    p = preview("resubmit", [mid(3), mid(5)], store, source.capabilities())  # 5: mux (i % 5 == 0)
    assert "1 task was already resubmitted: another copy runs" in p.warnings
    assert "1 direct (mux) task loses its engine: the Hub resubmits through the load-balanced scheduler" in p.warnings


# -- execute ------------------------------------------------------------------------------------------


def test_execute_resubmit_returns_mapping_and_next_poll_shows_it(env) -> None:
    source, store = env
    p = preview("resubmit", [mid(2), mid(3)], store, source.capabilities())
    r = execute(p, source)
    assert r.ok and r.sent == 2 and r.message == "resubmitted 2 tasks"
    assert set(r.resubmitted) == {mid(2), mid(3)}
    resync(source, store)
    for old, new in r.resubmitted.items():
        assert store.get(old).resubmitted == new
        assert store.get(new).state is State.PENDING


def test_execute_chunks(env) -> None:
    source, store = env
    ids = completed_ids(store)
    p = preview("purge", ids, store, source.capabilities())
    r = execute(p, source, chunk=50)
    assert r.ok and r.sent == 180 and r.message == "purged 180 tasks"
    assert [len(c) for c in source.purge_calls] == [50, 50, 50, 30]
    assert sum(source.purge_calls, []) == ids
    resync(source, store)
    assert store.total == 20 and store.count(pane_filter("pending")) == 20


def test_execute_purge_never_sends_pending(env) -> None:
    source, store = env
    p = preview("purge", [mid(i) for i in range(20)], store, source.capabilities())
    r = execute(p, source)
    assert r.ok and r.sent == 18
    sent = sum(source.purge_calls, [])
    assert mid(0) not in sent and mid(1) not in sent and len(sent) == 18


def test_execute_purge_drops_ids_that_turned_pending(env) -> None:
    source, store = env
    p = preview("purge", [mid(2), mid(3), mid(5)], store, source.capabilities())
    source.records[mid(5)].state = State.PENDING  # the Hub now sees mid(5) pending; the store does not yet
    r = execute(p, source)
    assert r.ok and r.sent == 2
    assert r.message == "purged 2 tasks (1 pending task left out: the Hub still had them pending)"
    assert source.purge_calls == [[mid(2), mid(3), mid(5)], [mid(2), mid(3)]]
    # With the store given, a task the store now knows pending is dropped before sending.
    resync(source, store)
    source.purge_calls.clear()
    p2 = preview("purge", [mid(7), mid(8)], store, source.capabilities())
    source.records[mid(8)].state = State.PENDING
    resync(source, store)
    r = execute(p2, source, store=store)
    assert r.ok and source.purge_calls == [[mid(7)]]


class RefusingSource(FakeSource):
    """Refuses the n-th call (1-based) of an action, like a Hub that went away mid-way."""

    def __init__(self, *args, refuse_at: int, error: Exception, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.refuse_at = refuse_at
        self.error = error
        self.calls = 0

    def purge(self, msg_ids):
        self.calls += 1
        if self.calls == self.refuse_at:
            raise self.error
        return super().purge(msg_ids)

    def resubmit(self, msg_ids):
        self.calls += 1
        if self.calls == self.refuse_at:
            raise self.error
        return super().resubmit(msg_ids)


def test_execute_partial_failure_message() -> None:
    source = RefusingSource(2000, refuse_at=2, error=SourceUnavailable("no reply from the Hub at tcp://127.0.0.1:5 within 5 s"))
    store = TaskStore()
    resync(source, store)
    ids = completed_ids(store)
    assert len(ids) == 1800
    r = execute(preview("purge", ids, store, source.capabilities()), source, chunk=500)
    assert not r.ok and r.sent == 500
    assert r.message == "purged 500 of 1,800 tasks, then: no reply from the Hub at tcp://127.0.0.1:5 within 5 s"


def test_execute_refused_at_once() -> None:
    source = RefusingSource(100, refuse_at=1, error=ActionRefused("Hub refused resubmit_request: NoData: NoDB backend"))
    store = TaskStore()
    resync(source, store)
    r = execute(preview("resubmit", [mid(2), mid(3)], store, source.capabilities()), source)
    assert not r.ok and r.sent == 0 and r.resubmitted == {}
    assert r.message == "resubmit failed: Hub refused resubmit_request: NoData: NoDB backend"


def test_execute_resubmit_partial_keeps_mapping() -> None:
    source = RefusingSource(100, refuse_at=2, error=ActionRefused("Hub refused resubmit_request: KeyError: No such msg(s)"))
    store = TaskStore()
    resync(source, store)
    ids = failed_ids(store)
    r = execute(preview("resubmit", ids, store, source.capabilities()), source, chunk=4)
    assert not r.ok and r.sent == 4 and len(r.resubmitted) == 4
    assert r.message == "resubmitted 4 of 10 tasks, then: Hub refused resubmit_request: KeyError: No such msg(s)"


# -- against a real cluster ---------------------------------------------------------------------------


def _poll_until(poller, store, check, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        out = poller.step()
        assert out.status.state == "connected", out.status.message
        if check():
            return
        assert time.monotonic() < deadline, "the store never showed the expected state"
        time.sleep(0.25)


def _hub_ids(client, ids) -> set[str]:
    return {r["msg_id"] for r in client.db_query({"msg_id": {"$in": list(ids)}}, ["msg_id"])}


@pytest.mark.cluster
@pytest.mark.parametrize("path", ["hub", "direct"])
def test_resubmit_and_purge_on_a_real_hub(fresh_cluster, path: str) -> None:
    from datasource.poller import Poller
    from datasource.sources.hub import HubSource
    from datasource.sources.open import open_source
    from datasource.sources.sqlite import SQLiteSource

    cluster = fresh_cluster("sqlite", workload=True)
    w = cluster.workload
    source = open_source(str(cluster.connection_file), direct=path == "direct")
    assert isinstance(source, SQLiteSource if path == "direct" else HubSource)
    store = TaskStore()
    poller = Poller(source, store)
    hub = cluster.hub_client()
    try:
        poller.open()
        _poll_until(poller, store, lambda: all(r.state.is_done for r in store.get_many(w.done_ok + w.failed))
                    and len(store.get_many(w.all)) == len(w.all))
        caps = source.capabilities()

        # Resubmit the failed task under the cursor: a mapping, then the new task and the flagged original.
        old = w.value_errors[0]
        p = preview("resubmit", [old], store, caps, scope=scope_cursor())
        assert p.allowed and p.send == [old] and p.warnings == []
        r = execute(p, source)
        assert r.ok and r.sent == 1 and r.message == "resubmitted 1 task"
        new = r.resubmitted[old]
        assert new != old and new.split("_")[0] != old.split("_")[0]  # the Hub's session prefix
        _poll_until(poller, store, lambda: store.get(new) is not None and store.get(old).resubmitted == new)
        assert hub.db_query({"msg_id": {"$in": [old]}}, ["resubmitted"])[0]["resubmitted"] == new
        assert store.lineage(new) == [old, new]

        # Purge one completed task: gone from the Hub's records and from the store.
        gone = w.succeeded[0]
        r = execute(preview("purge", [gone], store, caps, scope=scope_cursor()), source)
        assert r.ok and r.message == "purged 1 task"
        assert _hub_ids(hub, [gone]) == set()
        _poll_until(poller, store, lambda: store.get(gone) is None)

        # Purge two completed tasks and the pending one: the pending id is never sent, the rest is purged.
        ids = [w.succeeded[1], w.succeeded[2], w.pending[0]]
        p = preview("purge", ids, store, caps, scope=scope_marked(3))
        assert p.pending == [w.pending[0]] and p.send == ids[:2]
        assert p.warnings == ["1 pending task is left out: the Hub refuses to purge pending tasks"]
        r = execute(p, source, store=store)
        assert r.ok and r.sent == 2, r.message
        assert _hub_ids(hub, ids) == {w.pending[0]}
        _poll_until(poller, store, lambda: store.get(ids[0]) is None and store.get(ids[1]) is None)
        assert store.get(w.pending[0]).state.is_pending

        # Everything completed, in chunks of 3: the Hub keeps only what is still pending.
        done = completed_ids(store)
        assert len(done) >= 6
        r = execute(preview("purge", done, store, caps), source, chunk=3)
        assert r.ok and r.sent == len(done), r.message
        assert _hub_ids(hub, done) == set()
        assert w.pending[0] in _hub_ids(hub, [w.pending[0]])
    finally:
        hub.close()
        poller.close()
        if getattr(source, "hub", None) is not None:
            source.hub.close()


@pytest.mark.cluster
def test_purge_race_with_a_task_the_hub_still_has_pending(fresh_cluster) -> None:
    """The store says completed, the Hub says pending (a stale view): the real Hub's refusal names the id,
    which is dropped, and the rest of the chunk is purged."""
    import cluster_workload

    from datasource.sources.base import Delta
    from datasource.sources.open import open_source

    cluster = fresh_cluster("sqlite", n=1, workload=False)
    done = cluster_workload.run_more(cluster.connection_file, 3)
    w = cluster_workload.run_workload(cluster.connection_file, with_pending=True)
    source = open_source(str(cluster.connection_file), timeout=10.0)  # direct: purge goes straight to the Hub
    assert "(direct)" in source.name
    store = TaskStore()
    hub = cluster.hub_client()
    try:
        source.open()
        import time

        deadline = time.monotonic() + 30  # the Hub commits tasks.db every 2 s; CPUs here are shared

        def ready() -> bool:  # all four rows read, the three quick ones seen completed (commits lag)
            return len(store.get_many(w.pending)) == 1 and sum(r.state.is_done for r in store.get_many(done)) == 3

        while not ready():
            assert time.monotonic() < deadline, [r.state for r in store.get_many(done + w.pending)]
            for delta in source.sync():
                store.apply(delta)
            time.sleep(0.3)
        stale = store.get(w.pending[0])
        stale.state = State.SUCCEEDED
        store.apply(Delta(upserts=[stale]))
        p = preview("purge", done + w.pending, store, source.capabilities())
        assert p.pending == [] and len(p.send) == 4, p.summary()  # the stale store does not know
        r = execute(p, source)
        assert r.ok and r.sent == 3
        assert r.message == "purged 3 tasks (1 pending task left out: the Hub still had them pending)"
        assert _hub_ids(hub, done + w.pending) == {w.pending[0]}
    finally:
        hub.close()
        source.close()
        source.hub.close()
