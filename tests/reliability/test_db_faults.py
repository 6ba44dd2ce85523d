"""MongoDB going down and coming back; DictDB culling old records; records purged by someone else."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from datasource.poller import Poller
from datasource.sources.hub import HubSource
from datasource.sources.mongo import MongoSource
from datasource.store import TaskStore
from tests.datasource import dbfixtures as fx
from tests.reliability.helpers import errors_logged, poll_until


def test_mongodb_down_and_back_on_the_same_port(tmp_path: Path, caplog) -> None:
    from secantus import SecantusDBServer

    caplog.set_level(logging.INFO, logger="hubtop")
    data = str(tmp_path / "mongo-data")
    server = SecantusDBServer(storage_path=data)
    server.start()
    port = int(server.uri.rsplit(":", 1)[1].strip("/"))
    try:
        fx.write_mongo(server.uri, fx.make_records(300, seed=21))._connection.close()
        source = MongoSource(server.uri, timeout=1.0)
        store = TaskStore()
        poller = Poller(source, store)
        poller.open()
        assert poller.step().status.state == "connected" and store.total == 300
        before = sorted(store.ids())

        server.stop()
        t0 = time.monotonic()
        out = poller.step()
        assert time.monotonic() - t0 < 5.0  # bounded by the read timeout, no hang
        assert out.status.state == "retrying" and out.event and out.event.startswith("connection lost")
        assert "\n" not in out.status.message
        assert sorted(store.ids()) == before  # stale, not empty
        assert poller.step().event is None  # one notification per transition

        server = SecantusDBServer(port=port, storage_path=data)
        server.start()
        hub = fx.open_hub_mongo(server.uri)  # the Hub writes on: 5 more records
        for rec in fx.make_records(5, seed=22, first=90_000):
            hub.add_record(rec["msg_id"], dict(rec))
        hub._connection.close()
        out = poll_until(poller, lambda o: o.status.state == "connected", timeout=60)
        assert out.event == "reconnected"
        poll_until(poller, lambda o: store.total == 305, timeout=20)
        poller.close()
    finally:
        server.stop()
    assert errors_logged(caplog) == []


@pytest.mark.cluster
def test_dictdb_culling_and_purges_by_someone_else(fresh_cluster, caplog) -> None:
    """A Hub keeping 50 records (DictDB culls the oldest 5 above that): hubtop's counts follow the Hub's
    and the status says how many records disappeared; the same when another client purges records."""
    import cluster_workload

    caplog.set_level(logging.INFO, logger="hubtop")
    cluster = fresh_cluster("dictdb", n=2, controller_args=["--DictDB.record_limit=50"])
    source = HubSource(cluster.connection_file, timeout=3.0, reconcile_every=0.5)
    store = TaskStore()
    poller = Poller(source, store)
    poller.open()
    poller.step()
    first = cluster_workload.run_more(cluster.connection_file, 40, start=0)
    poll_until(poller, lambda o: store.total == 40, timeout=30)
    second = cluster_workload.run_more(cluster.connection_file, 40, start=100)
    with cluster.hub_client() as hub:
        history = set(hub.history())
    assert len(history) < 80  # the Hub culled
    outcomes = []
    poll_until(poller, lambda o: set(store.ids()) == history, timeout=30, outcomes=outcomes)
    culled = 80 - len(history)
    warned = [w for o in outcomes for w in o.warnings if "disappeared" in w]
    assert warned, [o.warnings for o in outcomes]
    assert sum(int(w.split()[0]) for w in warned) == culled
    assert store.removed_total == culled
    assert store.counts()["succeeded"] == len(history)
    assert set(second) <= history and not set(first) <= history

    purged = sorted(history)[:7]
    rc = cluster_workload.connect(cluster.connection_file)
    try:
        rc.purge_hub_results(purged)
    finally:
        rc.close()
    outcomes = []
    poll_until(poller, lambda o: not set(purged) & set(store.ids()), timeout=30, outcomes=outcomes)
    assert any(w == "7 records disappeared since the last poll" for o in outcomes for w in o.warnings)
    assert store.total == len(history) - 7
    assert store.removed_total == culled + 7
    poller.close()
    assert errors_logged(caplog) == []
