"""to_mongo "hub" dialect against ipyparallel's own backends: in process (DictDB, SQLiteDB: hypothesis)
and through a real Hub per backend (SQLite, DictDB, MongoDB) for every operator of the portable set."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from ipyparallel.controller.dictdb import DictDB
from ipyparallel.controller.sqlitedb import SQLiteDB
from ipyparallel.util import extract_dates

from datasource.hubclient import MATCH_ALL, _check_query
from datasource.model import LIGHT_KEYS, normalize_record
from datasource.query import HUB_MATCH_ALL, MongoPlan, parse, predicate, to_mongo

from .strategies import UUIDS, raw_documents, trees

ENGINE_UUIDS = {0: UUIDS[0], 1: UUIDS[1]}
ENGINE_IDS = {u: i for i, u in ENGINE_UUIDS.items()}
HUB_OPERATORS = {"$eq", "$ne", "$lt", "$lte", "$gte", "$in", "$nin", "$glob"}


def assert_portable(query: dict) -> None:
    """Only the portable set of spec §9, in a shape HubClient accepts."""
    _check_query(query)  # raises on {}, $gt, empty/None/oversized $in, plain multi-key equality
    for key, test in query.items():
        assert not key.startswith("$") and "." not in key, key
        assert isinstance(test, dict) and set(test) <= HUB_OPERATORS, test


def hub_find(db, query: dict) -> set[str]:
    """What the Hub does with a db_request: JSON on the wire, extract_dates, find_records."""
    wire = json.loads(json.dumps(query))
    return {r["msg_id"] for r in db.find_records(extract_dates(wire), keys=["msg_id"])}


def check(db, tree) -> MongoPlan:
    stored = db.find_records(extract_dates(MATCH_ALL), keys=list(LIGHT_KEYS) + ["error"])
    keep = predicate(tree)
    expected = {r.msg_id for r in (normalize_record(d, ENGINE_IDS) for d in stored) if keep(r)}
    plan = to_mongo(tree, "hub", engine_uuids=ENGINE_UUIDS)
    assert_portable(plan.query)
    got = hub_find(db, plan.query)
    if plan.exact:
        assert got == expected, (str(tree), plan.query)
    else:
        assert got >= expected, (str(tree), plan.query)
    return plan


def fill(db, docs: list[dict]) -> None:
    for d in docs:
        db.add_record(d["msg_id"], dict(d))


@pytest.fixture
def sqlitedb(tmp_path):
    db = SQLiteDB(location=str(tmp_path), filename="tasks.db", session="hubtop-test")
    yield db
    db._db.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), docs=raw_documents())
def test_hub_dialect_on_dictdb(tree, docs):
    db = DictDB()
    fill(db, docs)
    check(db, tree)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tree=trees(), docs=raw_documents())
def test_hub_dialect_on_sqlitedb(sqlitedb, tree, docs):
    sqlitedb._db.execute(f"DELETE FROM '{sqlitedb.table}'")
    fill(sqlitedb, docs)
    check(sqlitedb, tree)


T = datetime(2026, 11, 20, 10, 0, 5, 250000, tzinfo=timezone.utc)
NOW = T + timedelta(seconds=25)


def doc(msg_id: str, **kw) -> dict:
    base = {"msg_id": msg_id, "submitted": T, "client_uuid": "f129", "engine_uuid": UUIDS[0], "started": None,
            "completed": None, "resubmitted": None, "received": None, "result_content": None, "error": None,
            "queue": "task", "label": None}
    base.update(kw)
    return base


DOCS = [
    doc("ok_1", completed=T, result_content={"status": "ok"}, label="fit-1"),
    doc("err_1", completed=T + timedelta(seconds=1), result_content={"status": "error", "ename": "ValueError"}),
    doc("pend_1", engine_uuid=None, submitted=T + timedelta(seconds=2)),
    doc("resub_1", completed=T, result_content={"status": "ok"}, resubmitted="new_1", queue="mux"),
]


@pytest.mark.parametrize("backend", ["dictdb", "sqlite"])
@pytest.mark.parametrize(
    "text, query, expected, exact",
    [
        ("", HUB_MATCH_ALL, {"ok_1", "err_1", "pend_1", "resub_1"}, True),
        ("state:pending", {"completed": {"$eq": None}}, {"pend_1"}, True),
        ("state:done", {"completed": {"$ne": None}}, {"ok_1", "err_1", "resub_1"}, True),
        ("state:failed", {"completed": {"$ne": None}}, {"err_1"}, False),
        ("queue:mux", {"queue": {"$eq": "mux"}}, {"resub_1"}, True),
        ("queue:task label:fit*", {"queue": {"$eq": "task"}, "label": {"$glob": "fit*"}}, {"ok_1"}, True),
        ("id:ok_,err_", {"msg_id": {"$ne": ""}}, {"ok_1", "err_1"}, False),  # prefixes OR'ed: no $or
        ('{"msg_id": {"$in": ["ok_1", "err_1"]}}', {"msg_id": {"$in": ["ok_1", "err_1"]}}, {"ok_1", "err_1"}, True),
        ('-{"msg_id": {"$in": ["ok_1", "err_1"]}}', {"msg_id": {"$nin": ["ok_1", "err_1"]}}, {"pend_1", "resub_1"}, True),
        ('-{"msg_id": "ok_1"}', {"msg_id": {"$ne": "ok_1"}}, {"err_1", "pend_1", "resub_1"}, True),
        ("since:24s", {"submitted": {"$ne": None, "$gte": "2026-11-20T10:00:06.250000Z"}}, {"pend_1"}, True),
        ("before:2026-11-20T10:00:06Z", {"submitted": {"$ne": None, "$lt": "2026-11-20T10:00:06Z"}},
         {"ok_1", "err_1", "resub_1"}, True),
        ('{"completed": {"$lte": "2026-11-20T10:00:05.25Z"}}', {"completed": {"$ne": None, "$lte": "2026-11-20T10:00:05.250000Z"}},
         {"ok_1", "resub_1"}, True),
        ('{"completed": {"$gt": "2026-11-20T10:00:05.25Z"}}', {"completed": {"$ne": None, "$gte": "2026-11-20T10:00:05.250000Z"}},
         {"err_1"}, False),  # no $gt: DictDB inverts it
        ("engine:1e0d", {"engine_uuid": {"$glob": "1e0d*"}}, {"ok_1", "err_1", "resub_1"}, True),
        ("state:resubmitted", {"resubmitted": {"$ne": None}}, {"resub_1"}, True),
        ("-label:x", HUB_MATCH_ALL, {"ok_1", "err_1", "pend_1", "resub_1"}, False),  # SQLite's != drops NULLs
        ('"value"', HUB_MATCH_ALL, {"err_1"}, False),
    ],
)
def test_examples(backend, sqlitedb, text, query, expected, exact):
    db = DictDB() if backend == "dictdb" else sqlitedb
    fill(db, DOCS)
    tree = parse(text, now=NOW)
    plan = check(db, tree)
    assert plan.query == query
    assert plan.exact is exact
    assert {d["msg_id"] for d in DOCS if predicate(tree)(normalize_record(d, ENGINE_IDS))} == expected


def test_dictdb_would_crash_without_the_none_guard():
    """Why every comparison carries `$ne: None` first: DictDB compares None with a datetime."""
    db = DictDB()
    fill(db, DOCS)
    with pytest.raises(TypeError):
        db.find_records(extract_dates({"completed": {"$gte": "2026-11-20T10:00:05Z"}}), keys=["msg_id"])
    assert hub_find(db, to_mongo(parse('{"completed": {"$gte": "2026-11-20T10:00:05Z"}}'), "hub").query) == {
        "ok_1", "err_1", "resub_1"
    }


# ---------------------------------------------------------------- real Hubs


def _queries(records: list) -> list[str]:
    """One query per operator of the portable set, built from what the Hub holds."""
    ids = sorted(r.msg_id for r in records)
    times = sorted(r.submitted for r in records if r.submitted)
    middle = times[len(times) // 2]
    # whole milliseconds: exact on every backend (MongoDB keeps ms); the raw one tests the rounding
    mid = middle.replace(microsecond=middle.microsecond // 1000 * 1000).isoformat().replace("+00:00", "Z")
    raw_mid = middle.isoformat().replace("+00:00", "Z")
    label = "hubtop-labeled"
    prefix = ids[0].split("_")[0]
    return [
        "",  # MATCH_ALL ($ne "")
        "state:pending",  # $eq None
        "state:done",  # $ne None
        "state:failed",  # superset, filtered
        "queue:task",  # $eq
        "queue:mux",
        f"label:{label}",  # $eq
        "label:hubtop-*",  # $glob
        f"id:{prefix}",  # $glob on an escaped prefix
        f"engine:{records[0].engine_uuid[:8] if records[0].engine_uuid else '0'}",
        json.dumps({"msg_id": {"$in": ids[:3]}}),  # $in
        "-" + json.dumps({"msg_id": {"$in": ids[:3]}}),  # $nin
        "-" + json.dumps({"msg_id": ids[0]}),  # $ne
        f"since:{mid}",  # $gte
        f"before:{mid}",  # $lt
        json.dumps({"submitted": {"$lte": mid}}),  # $lte
        json.dumps({"submitted": {"$gt": mid}}),  # no $gt: $gte superset
        f"since:{raw_mid}",
        json.dumps({"submitted": {"$lte": raw_mid}}),
        f"state:done queue:task since:{times[0].isoformat().replace('+00:00', 'Z')}",  # several keys
        "ValueError",  # free text: superset
    ]


@pytest.mark.cluster
@pytest.mark.parametrize("backend", ["sqlite", "dictdb", "mongodb"])
def test_portable_set_on_a_real_hub(backend, request):
    cluster = request.getfixturevalue(f"cluster_{backend}")
    with cluster.hub_client(timeout=10) as hub:
        engines = hub.connection_request()
        engine_ids = {u: i for i, u in engines.items()}
        raw = hub.db_query(MATCH_ALL, LIGHT_KEYS)
        records = [normalize_record(r, engine_ids) for r in raw]
        assert len(records) >= len(cluster.workload.all)
        checked_exact = 0
        for text in _queries(records):
            tree = parse(text)
            plan = to_mongo(tree, "hub", engine_uuids=engines)
            assert_portable(plan.query)
            got = {r["msg_id"] for r in hub.db_query(plan.query, ["msg_id"])}
            keep = predicate(tree)
            expected = {r.msg_id for r in records if keep(r)}
            if plan.exact:
                checked_exact += 1
                assert got == expected, (backend, text, plan.query)
            else:
                assert got >= expected, (backend, text, plan.query)
        assert checked_exact >= 12
        # the workload's known answers
        w = cluster.workload
        assert {r.msg_id for r in records if predicate(parse("state:failed"))(r)} >= set(w.failed)
        got = {r["msg_id"] for r in hub.db_query(to_mongo(parse("state:pending"), "hub").query, ["msg_id"])}
        assert set(w.pending) <= got
        got = {r["msg_id"] for r in hub.db_query(to_mongo(parse("label:hubtop-labeled"), "hub").query, ["msg_id"])}
        assert got == set(w.labeled)
