"""HubSource against real Hubs: full load, deltas, detail, resubmit, purge, engines, restarts."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest

import cluster_workload
from datasource.model import State
from datasource.sources.base import ActionRefused, Delta, Source, SourceError, SourceUnavailable
from datasource.sources.hub import DICTDB_WARNING, NODB_WARNING, HubSource

pytestmark = pytest.mark.cluster

STORING = ["sqlite", "dictdb", "mongodb"]


def load(source: HubSource) -> tuple[list[Delta], dict]:
    deltas = list(source.sync())
    records = {r.msg_id: r for d in deltas for r in d.upserts}
    return deltas, records


@pytest.fixture(params=STORING)
def storing_cluster(request):
    return request.getfixturevalue(f"cluster_{request.param}")


def test_is_a_source(cluster_sqlite):
    assert isinstance(HubSource(cluster_sqlite.connection_file), Source)


def test_full_load_states_and_counts(storing_cluster):
    w = storing_cluster.workload
    source = HubSource(storing_cluster.connection_file)
    source.open()
    try:
        caps = source.capabilities()
        assert (caps.kind, caps.backend, caps.stores_tasks, caps.has_engines) == (
            "hub", storing_cluster.backend, True, True)
        assert caps.can_resubmit and caps.can_purge and caps.purge_via_hub
        assert (DICTDB_WARNING in caps.warnings) == (storing_cluster.backend == "dictdb")
        assert "profile 'hubtop'" in source.name

        deltas, records = load(source)
        assert deltas[0].reset and deltas[0].loading and deltas[0].total == len(w.all)
        assert not deltas[-1].loading and deltas[-1].done == deltas[-1].total == len(w.all)
        assert all(d.loading for d in deltas[:-1])
        assert sorted(records) == sorted(w.all)

        states = Counter(r.state for r in records.values())
        assert states == {State.SUCCEEDED: len(w.done_ok), State.FAILED: len(w.failed), State.PENDING: 1}
        for msg_id in w.value_errors:
            assert records[msg_id].ename == "ValueError"
        assert records[w.zero_divisions[0]].ename == "ZeroDivisionError"
        assert {records[m].evalue for m in w.value_errors} == {"bad value 7", "bad value 9"}
        assert records[w.labeled[0]].label == cluster_workload.LABEL
        assert [m for m, r in records.items() if r.label] == w.labeled
        assert records[w.direct[0]].queue == "mux" and records[w.direct[0]].engine_id == 0
        assert all(records[m].queue == "task" for m in w.succeeded + w.failed + w.pending)
        assert all(r.engine_id in (0, 1) for r in records.values())
        assert all(r.stdout_size is None for r in records.values())  # lists never fetch stdout

        engines = deltas[0].engines
        assert sorted(e.id for e in engines) == [0, 1] and all(e.alive for e in engines)
        assert sum(e.tasks for e in deltas[0].queue.engines.values()) == 1

        # nothing happened: the next sync has no task changes, only engines and queue
        again = list(source.sync())
        assert len(again) == 1 and not again[0].upserts and not again[0].removed and not again[0].reset
        assert again[0].engines is not None and again[0].queue is not None
    finally:
        source.close()


def test_detail(storing_cluster):
    w = storing_cluster.workload
    source = HubSource(storing_cluster.connection_file)
    source.open()
    try:
        ok = source.detail(w.succeeded[1])
        assert ok.stdout == w.stdout[w.succeeded[1]] and ok.stderr == w.stderr[w.succeeded[1]]
        assert ok.record.state is State.SUCCEEDED and ok.msg_type == "apply_request"
        assert ok.resubmitted_from is None

        bad = source.detail(w.value_errors[0])
        assert bad.record.state is State.FAILED
        assert any("ValueError" in line for line in bad.traceback)
        assert "bad value 7" in bad.traceback[-1]
        zero = source.detail(w.zero_divisions[0])
        assert any("ZeroDivisionError" in line for line in zero.traceback)

        direct = source.detail(w.direct[0])
        assert direct.code == "print('exec out'); x = 6 * 7"
        assert direct.stdout == "exec out\n" and direct.msg_type == "execute_request"

        labeled = source.detail(w.labeled[0])
        assert labeled.record.label == cluster_workload.LABEL and labeled.stdout == "labeled output\n"

        with pytest.raises(SourceError, match="not in the Hub's database"):
            source.detail("no-such-id")
    finally:
        source.close()


def test_purge_of_pending_refused_with_a_clear_message(cluster_sqlite):
    w = cluster_sqlite.workload
    source = HubSource(cluster_sqlite.connection_file)
    source.open()
    try:
        load(source)
        with pytest.raises(ActionRefused, match="refusing to purge 1 pending task .*wait for them to finish"):
            source.purge(w.pending)
    finally:
        source.close()


def test_nodb(cluster_nodb):
    source = HubSource(cluster_nodb.connection_file)
    source.open()
    try:
        caps = source.capabilities()
        assert caps.backend == "nodb" and not caps.stores_tasks
        assert NODB_WARNING in caps.warnings
        assert not caps.can_resubmit and caps.resubmit_reason == NODB_WARNING and not caps.can_purge
        assert caps.has_engines
        (delta,) = list(source.sync())
        assert delta.reset and not delta.loading and delta.upserts == []
        assert sorted(e.id for e in delta.engines) == [0, 1]
        assert sum(e.tasks for e in delta.queue.engines.values()) == 1  # the workload's long sleep
        (delta,) = list(source.sync())
        assert not delta.reset and delta.engines
        for action in (lambda: source.detail("x"), lambda: source.resubmit(["x"]), lambda: source.purge(["x"])):
            with pytest.raises(ActionRefused, match="stores no tasks"):
                action()
    finally:
        source.close()


@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
def test_resubmit_purge_and_new_tasks(fresh_cluster, backend):
    cluster = fresh_cluster(backend, workload=True)
    w = cluster.workload
    source = HubSource(cluster.connection_file)
    source.open()
    try:
        _, records = load(source)
        assert len(records) == len(w.all)

        # resubmit a failed task: the copy appears at the next sync, the original is marked
        original = w.value_errors[0]
        mapping = source.resubmit([original])
        new = mapping[original]
        assert list(mapping) == [original] and new != original
        deadline = time.monotonic() + 20
        seen: dict = {}
        while time.monotonic() < deadline:
            for d in source.sync():
                seen.update({r.msg_id: r for r in d.upserts})
            if new in seen and seen[new].state.is_done and original in seen:
                break
            time.sleep(0.2)
        assert seen[original].resubmitted == new
        assert seen[new].state is State.FAILED and seen[new].ename == "ValueError"
        assert seen[new].queue == "task" and seen[new].label is None
        assert source.detail(new).resubmitted_from == original
        assert source.detail(original).resubmitted_from is None

        # purge a completed task: gone at the next sync
        victim = w.succeeded[0]
        assert source.purge([victim]) == 1
        deltas = list(source.sync())
        assert [m for d in deltas for m in d.removed] == [victim]
        assert victim not in source.client.history()

        # more tasks run: the next sync delivers exactly those
        more = cluster_workload.run_more(cluster.connection_file, 3)
        deltas = list(source.sync())
        upserts = {r.msg_id: r for d in deltas for r in d.upserts}
        assert sorted(upserts) == sorted(more)
        assert all(r.state is State.SUCCEEDED for r in upserts.values())
        assert not any(d.removed for d in deltas)
    finally:
        source.close()


def test_reconcile_finds_records_purged_elsewhere(fresh_cluster):
    cluster = fresh_cluster("sqlite", workload=True)
    w = cluster.workload
    source = HubSource(cluster.connection_file, reconcile_every=0.0)
    source.open()
    try:
        load(source)
        with cluster.hub_client() as other:
            other.purge(w.succeeded[:2])
        deltas = list(source.sync())
        assert sorted(m for d in deltas for m in d.removed) == sorted(w.succeeded[:2])
        assert "2 records disappeared since the last poll" in [x for d in deltas for x in d.warnings]
    finally:
        source.close()


def test_engine_death_and_hub_restart(fresh_cluster):
    cluster = fresh_cluster("sqlite", n=2)
    source = HubSource(cluster.connection_file, timeout=1.0)
    source.open()
    try:
        (delta,) = list(source.sync())
        uuids = {e.id: e.uuid for e in delta.engines}
        assert sorted(uuids) == [0, 1]

        cluster.kill_engine(1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            (delta,) = list(source.sync())
            if len(delta.queue.engines) == 1:
                break
            time.sleep(0.2)
        # kill_engine counts in start order, engine ids in registration order: they can differ under load
        alive = {e.uuid: e.alive for e in delta.engines}
        assert set(alive) == set(uuids.values()) and sorted(alive.values()) == [False, True]  # the dead one kept, flagged
        live_id = next(i for i, u in uuids.items() if alive[u])
        assert list(delta.queue.engines) == [live_id]  # queue_reply's lingering dead engine filtered out

        # the Hub restarts on new ports: the next sync reconnects with the new file and reloads
        old_port = json.loads(cluster.connection_file.read_text())["registration"]
        time.sleep(1.1)  # a different mtime even on coarse-grained file systems
        cluster.restart_controller()
        assert json.loads(cluster.connection_file.read_text())["registration"] != old_port
        deltas = list(source.sync())
        assert deltas[0].reset
        assert any("the Hub restarted" in x for x in deltas[0].warnings)
        assert len([e for e in deltas[-1].engines if e.alive]) == 2
    finally:
        source.close()


def test_open_errors(tmp_path, cluster_sqlite):
    with pytest.raises(SourceError, match="no such connection file"):
        HubSource(tmp_path / "missing.json").open()
    cfg = json.loads(cluster_sqlite.connection_file.read_text())
    cfg["key"] = "wrong-key-0000"
    path = tmp_path / "ipcontroller-client.json"
    path.write_text(json.dumps(cfg))
    source = HubSource(path, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="it is down or the key does not match"):
        source.open()
    assert time.monotonic() - start < 1.5


def test_running_from_iopub(fresh_cluster):
    cluster = fresh_cluster("sqlite", n=1)
    source = HubSource(cluster.connection_file)
    source.open()
    rc = cluster_workload.connect(cluster.connection_file)
    try:
        assert source.capabilities().knows_running
        load(source)
        time.sleep(0.5)  # let the SUB socket join before anything is published
        lview = rc.load_balanced_view()
        first = lview.apply_async(cluster_workload._sleep, 3.0)
        second = lview.apply_async(cluster_workload._sleep, 0.1)  # waits behind the first (1 engine)
        ids = [first.msg_ids[0], second.msg_ids[0]]
        states: dict = {}
        running_sets = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for d in source.sync():
                states.update({r.msg_id: r.state for r in d.upserts if r.msg_id in ids})
                running_sets.append(set(d.running or ()))
            if states.get(ids[0]) is State.RUNNING:
                break
            time.sleep(0.1)
        assert states[ids[0]] is State.RUNNING
        assert ids[0] in running_sets[-1] and ids[1] not in running_sets[-1]
        assert states[ids[1]] is State.PENDING
        first.wait(10)
        second.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(states.get(m) is State.SUCCEEDED for m in ids):
            for d in source.sync():
                states.update({r.msg_id: r.state for r in d.upserts if r.msg_id in ids})
            time.sleep(0.1)
        assert [states[m] for m in ids] == [State.SUCCEEDED, State.SUCCEEDED]
    finally:
        rc.close()
        source.close()


def test_clean_hub_shutdown_is_named(fresh_cluster):
    cluster = fresh_cluster("dictdb", n=1)
    source = HubSource(cluster.connection_file, timeout=0.5)
    source.open()
    try:
        list(source.sync())
        cluster.kill_controller(signal.SIGTERM)  # a clean exit removes the connection file
        assert not cluster.connection_file.exists()
        with pytest.raises(SourceUnavailable, match="the Hub stopped: its connection file .* was removed"):
            list(source.sync())
    finally:
        source.close()
