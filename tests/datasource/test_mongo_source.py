"""MongoSource against a real MongoDB wire server (SecantusDB), records written by ipyparallel's MongoDB."""

from __future__ import annotations

import dataclasses
import socket
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from pymongo import MongoClient

from datasource.model import State, normalize_record
from datasource.query.errors import QueryError
from datasource.sources import mongo as mongo_mod
from datasource.sources.base import ActionRefused, NotATaskDatabase, SourceError, SourceUnavailable
from datasource.sources.mongo import MONGO_OPERATORS, MongoSource, check_query, translate_glob

from . import dbfixtures as fx

# `mongo_uri` (a session SecantusDB server) comes from tests/conftest.py.


def load(src) -> dict:
    out = {}
    for d in src.sync():
        out.update({r.msg_id: r for r in d.upserts})
    return out


@pytest.fixture
def mongodb(mongo_uri):
    """A fresh database written through ipyparallel's MongoDB backend: (backend, database name)."""
    name = f"hubtop-{uuid.uuid4().hex[:8]}"
    db = fx.write_mongo(mongo_uri, fx.make_records(150, seed=11), database=name)
    yield db, name
    db._connection.drop_database(name)
    db._connection.close()


@pytest.fixture
def src(mongo_uri, mongodb):
    s = MongoSource(mongo_uri, database=mongodb[1])
    s.open()
    yield s
    s.close()


def test_records_agree_with_normalize_record_on_full_documents(src, mongo_uri, mongodb):
    got = load(src)
    coll = MongoClient(mongo_uri, tz_aware=True)[mongodb[1]]["task_records"]
    docs = list(coll.find({}, {"buffers": 0, "result_buffers": 0}))
    assert len(docs) == len(got) == 150
    for doc in docs:
        want = normalize_record(doc)
        assert dataclasses.asdict(got[want.msg_id]) == dataclasses.asdict(want), want.msg_id


def test_states_labels_sizes_and_millisecond_dates(src):
    recs = load(src)
    states = Counter(r.state for r in recs.values())
    assert {State.SUCCEEDED, State.FAILED, State.PENDING} <= set(states)
    assert all(r.run is None for r in recs.values())
    assert any(r.label and r.label.startswith("batch-") for r in recs.values())
    assert all(r.submitted.microsecond % 1000 == 0 for r in recs.values() if r.submitted)
    sized = [r for r in recs.values() if r.stdout_size]
    assert sized and all(len(src.detail(r.msg_id).stdout) == r.stdout_size for r in sized[:10])
    failed = [r for r in recs.values() if r.ename == "ValueError"]
    assert failed and all(r.engine_id == fx.ENGINES.index(r.engine_uuid) for r in failed)  # engine_info
    timeouts = [r for r in recs.values() if r.ename == "TaskTimeout"]
    assert all(r.engine_uuid is None for r in timeouts)


def test_load_in_chunks_newest_first(src, monkeypatch):
    monkeypatch.setattr(mongo_mod, "CHUNK", 40)
    ds = list(src.sync())
    assert ds[0].reset and not any(d.reset for d in ds[1:])
    assert [d.loading for d in ds] == [True] * (len(ds) - 1) + [False]
    assert ds[-1].done == ds[-1].total == 150
    newest = max(r.submitted for d in ds for r in d.upserts)
    assert any(r.submitted == newest for r in ds[0].upserts)


def test_detail(src):
    recs = load(src)
    failed = next(r for r in recs.values() if r.ename == "ValueError")
    d = src.detail(failed.msg_id)
    assert d.traceback and "\x1b[31m" in d.traceback[0]
    assert d.stderr == "warning: about to fail\n"
    orig = next(r for r in recs.values() if r.resubmitted)
    assert src.detail(orig.resubmitted).resubmitted_from == orig.msg_id
    with pytest.raises(SourceError, match="no task nope"):
        src.detail("nope")


def test_incremental(src, mongodb):
    db, _ = mongodb
    first = load(src)
    assert list(src.sync()) == []
    new = list(fx.make_records(3, seed=12, first=500))
    for rec in new:
        db.add_record(rec["msg_id"], dict(rec))
    (d,) = src.sync()
    assert {r.msg_id for r in d.upserts} == {r["msg_id"] for r in new}
    pend = next(m for m, r in first.items() if r.state is State.PENDING)
    at = fx.START + timedelta(hours=3)
    db.update_record(pend, {"completed": at, "result_content": {"status": "ok"}, "stdout": "done\n"})
    (d,) = src.sync()
    (rec,) = d.upserts
    assert rec.msg_id == pend and rec.state is State.SUCCEEDED and rec.stdout_size == 5
    orig = next(m for m, r in first.items() if r.state is State.FAILED and not r.resubmitted)
    copy = fx.record("succeeded", 600, client=fx.HUB_SESSION)[0] | {"client_uuid": fx.CLIENT}
    db.add_record(copy["msg_id"], dict(copy))
    db.update_record(orig, {"resubmitted": copy["msg_id"]})
    (d,) = src.sync()
    got = {r.msg_id: r for r in d.upserts}
    assert got[orig].resubmitted == copy["msg_id"] and copy["msg_id"] in got
    victims = [m for m, r in first.items() if r.state is State.SUCCEEDED][:2]
    db.drop_matching_records({"msg_id": {"$in": victims}})
    (d,) = src.sync()
    assert sorted(d.removed) == sorted(victims)
    assert d.warnings == ["2 records disappeared since the last poll"]


def test_pending_slices_reach_every_pending_document(mongo_uri, mongodb, monkeypatch):
    fx.small_pending_scan(monkeypatch, front=1, rotating=2)
    db, name = mongodb
    src = MongoSource(mongo_uri, database=name)
    src.open()
    first = load(src)
    pend = [m for m, r in first.items() if r.state is State.PENDING]
    assert len(pend) > 6
    for m in pend:
        db.update_record(m, {"completed": fx.START + timedelta(hours=4), "result_content": {"status": "aborted"}})
    seen = {}
    for _ in range(len(pend)):
        for d in src.sync():
            seen.update({r.msg_id: r for r in d.upserts})
    assert set(pend) <= set(seen) and all(seen[m].state is State.ABORTED for m in pend)
    src.close()


def test_find_pushdown_and_operator_allowlist(src):
    recs = load(src)
    failed = src.find({"result_content.status": "error", "result_content.ename": {"$in": ["ValueError"]}})
    assert failed and {r.msg_id for r in failed} == {m for m, r in recs.items() if r.ename == "ValueError"}
    labelled = src.find({"label": {"$glob": "batch-*"}})
    assert labelled and all(r.label.startswith("batch-") for r in labelled)
    assert len(src.find({"completed": None}, limit=2)) == 2
    for bad in ({"$where": "sleep(1000)"}, {"label": {"$expr": {}}},
                {"$or": [{"msg_id": "x"}, {"$function": {}}]}):
        with pytest.raises(QueryError, match="not allowed"):
            src.find(bad)
    assert "$where" not in MONGO_OPERATORS
    check_query({"$and": [{"a": {"$not": {"$regex": "x"}}}]})
    assert translate_glob({"label": {"$glob": "a*"}})["label"]["$regex"].startswith("^(?s:a.*)")


def test_capabilities_and_actions(src, mongo_uri, mongodb):
    caps = src.capabilities()
    assert caps.kind == "mongodb" and not caps.can_resubmit and not caps.can_purge and caps.read_only
    with pytest.raises(ActionRefused, match="--hub"):
        src.resubmit(["x"])
    with pytest.raises(ActionRefused):
        src.purge(["x"])
    w = MongoSource(mongo_uri, database=mongodb[1], allow_writes=True)
    w.open()
    recs = load(w)
    pending = next(m for m, r in recs.items() if r.state is State.PENDING)
    done = [m for m, r in recs.items() if r.state is State.FAILED][:2]
    with pytest.raises(ActionRefused, match="pending"):
        w.purge(done + [pending])
    assert list(w.sync()) == []
    assert w.purge(done) == 2
    (d,) = w.sync()
    assert sorted(d.removed) == sorted(done) and d.warnings == []
    w.close()


# -- errors --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down():
    port = _free_port()
    s = MongoSource(f"mongodb://127.0.0.1:{port}/")
    t = time.monotonic()
    with pytest.raises(SourceUnavailable) as info:
        s.open()
    assert time.monotonic() - t < 5
    assert str(info.value) == f"MongoDB at 127.0.0.1:{port} did not answer within 2 s"


def test_no_such_database_or_collection(mongo_uri):
    s = MongoSource(mongo_uri, database="hubtop-nothing-here")
    with pytest.raises(NotATaskDatabase, match="no collection hubtop-nothing-here.task_records"):
        s.open()


def test_foreign_collection(mongo_uri):
    name = f"hubtop-{uuid.uuid4().hex[:8]}"
    client = MongoClient(mongo_uri)
    client[name]["task_records"].insert_one({"hello": "world"})
    try:
        with pytest.raises(NotATaskDatabase, match="does not hold ipyparallel task records"):
            MongoSource(mongo_uri, database=name).open()
    finally:
        client.drop_database(name)
        client.close()


def test_bad_uri():
    with pytest.raises(SourceError, match="bad MongoDB URI"):
        MongoSource("mongodb://").open()


def test_auth_refused(tmp_path):
    from secantus import SecantusDBServer

    with SecantusDBServer(storage_path=":memory:", require_auth=True) as server:
        host = server.uri.split("://", 1)[1].rstrip("/")
        s = MongoSource(f"mongodb://nobody:wrong@{host}/?authSource=admin")
        with pytest.raises(SourceError) as info:
            s.open()
        assert "refused access" in str(info.value) and "wrong" not in str(info.value)


def test_server_stopped_and_restarted(tmp_path):
    from secantus import SecantusDBServer

    store = str(tmp_path / "mongo-data")
    server = SecantusDBServer(storage_path=store)
    server.start()
    port = int(server.uri.rsplit(":", 1)[1].strip("/"))
    try:
        db = fx.write_mongo(server.uri, fx.make_records(20, seed=13))
        db._connection.close()
        s = MongoSource(server.uri)
        s.open()
        assert len(load(s)) == 20
        server.stop()
        with pytest.raises(SourceUnavailable, match="did not answer within 2 s"):
            list(s.sync())
        server = SecantusDBServer(port=port, storage_path=store)
        server.start()
        db = fx.open_hub_mongo(server.uri)
        rec = fx.record("succeeded", 999)[0]
        db.add_record(rec["msg_id"], dict(rec))
        db._connection.close()
        (d,) = s.sync()
        assert [r.msg_id for r in d.upserts] == [rec["msg_id"]]
        s.close()
    finally:
        server.stop()


# -- a real cluster writing to MongoDB (tests/conftest.py) ------------------------------------------


@pytest.mark.cluster
def test_real_cluster_mongodb_agrees_with_the_hub(cluster_mongodb):
    from datasource.model import LIGHT_KEYS

    w = cluster_mongodb.workload
    with cluster_mongodb.hub_client() as hub:
        live = hub.connection_request()
        raw = hub.records_by_id(w.all, list(LIGHT_KEYS) + ["stdout", "stderr", "error", "metadata"])
        src = MongoSource(cluster_mongodb.mongo_uri, database=cluster_mongodb.mongo_database, hub=hub)
        src.open()
        try:
            recs = load(src)
            caps = src.capabilities()
            assert caps.has_engines and caps.can_resubmit
        finally:
            src.close()
    engine_ids = {u: i for i, u in live.items()}
    assert set(w.all) <= set(recs)
    for r in raw:
        want = normalize_record(r, engine_ids)
        if want.msg_id == w.pending[0]:  # the long sleep, alone in flight on its engine: the paired Hub says so
            want.state = State.RUNNING
        assert dataclasses.asdict(recs[want.msg_id]) == dataclasses.asdict(want), want.msg_id
    assert recs[w.pending[0]].state is State.RUNNING
    assert {recs[i].ename for i in w.failed} == {"ValueError", "ZeroDivisionError"}
    assert recs[w.labeled[0]].label == "hubtop-labeled"
    assert all(recs[i].engine_id is not None for i in w.all)  # from the paired Hub's engine list
