"""to_mongo "mongo" dialect against a real MongoDB wire server (SecantusDB): compiled query vs predicate."""

from __future__ import annotations

from datetime import datetime, timezone

import pymongo
import pytest
from hypothesis import HealthCheck, given, settings

from datasource.model import normalize_record
from datasource.query import MongoPlan, parse, predicate, to_mongo

from .strategies import UUIDS, raw_documents, trees

ENGINE_UUIDS = {0: UUIDS[0], 1: UUIDS[1]}  # UUIDS[2] is an engine whose id we never learnt
ENGINE_IDS = {u: i for i, u in ENGINE_UUIDS.items()}


@pytest.fixture(scope="module")
def collection(mongo_uri):
    client = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    coll = client["hubtop-query-test"]["task_records"]
    yield coll
    client.drop_database("hubtop-query-test")
    client.close()


def check(coll, tree, docs) -> MongoPlan:
    coll.delete_many({})
    if docs:
        coll.insert_many([dict(d) for d in docs])
    # normalize what Mongo stored (BSON dates have whole milliseconds)
    stored = list(coll.find({}, {"_id": 0}))
    keep = predicate(tree)
    expected = {r.msg_id for r in (normalize_record(d, ENGINE_IDS) for d in stored) if keep(r)}
    plan = to_mongo(tree, "mongo", engine_uuids=ENGINE_UUIDS)
    got = {d["msg_id"] for d in coll.find(plan.query, {"msg_id": 1})}
    if plan.exact:
        assert got == expected, (str(tree), plan.query)
    else:
        assert got >= expected, (str(tree), plan.query)
    return plan


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tree=trees(), docs=raw_documents())
def test_mongo_dialect_agrees_with_predicate(collection, tree, docs):
    check(collection, tree, docs)


NOW = datetime(2026, 11, 20, 10, 0, 30, tzinfo=timezone.utc)
T = datetime(2026, 11, 20, 10, 0, 5, 250000, tzinfo=timezone.utc)


def doc(msg_id: str, **kw) -> dict:
    base = {"msg_id": msg_id, "submitted": T, "client_uuid": "f129", "engine_uuid": UUIDS[0], "started": None,
            "completed": None, "resubmitted": None, "received": None, "result_content": None, "error": None,
            "queue": "task", "label": None}
    base.update(kw)
    return base


DOCS = [
    doc("ok_1", completed=T, result_content={"status": "ok"}, label="fit-1"),
    doc("err_1", completed=T, result_content={"status": "error", "ename": "ValueError",
                                              "evalue": "\x1b[31mbad\x1b[39m value", "engine_info": {"engine_id": 2}},
        engine_uuid=UUIDS[2]),
    doc("ab_1", completed=T, result_content={"status": "aborted"}, queue="mux"),
    doc("pend_1", engine_uuid="", label=""),
    doc("odd_1", completed=T, result_content={}, error={"ename": "KeyError", "evalue": "k"}),
    doc("resub_1", completed=T, result_content={"status": "ok"}, resubmitted="new_1"),
]


@pytest.mark.parametrize(
    "text, expected, exact",
    [
        ("state:succeeded", {"ok_1", "resub_1"}, True),
        ("state:failed", {"err_1", "odd_1"}, True),
        ("state:aborted", {"ab_1"}, True),
        ("state:pending", {"pend_1"}, True),
        ("state:running", set(), False),  # a DB cannot tell queued from running: superset
        ("state:done -state:resubmitted", {"ok_1", "err_1", "ab_1", "odd_1"}, True),
        ("-label:fit*", {"err_1", "ab_1", "pend_1", "odd_1", "resub_1"}, True),
        ('{"label": null}', {"err_1", "ab_1", "pend_1", "odd_1", "resub_1"}, True),  # "" is None
        ('{"engine_uuid": null}', {"pend_1"}, True),
        ("engine:2", {"err_1"}, False),  # id from engine_info: found, filtered by the caller
        ("engine:0", {"ok_1", "ab_1", "odd_1", "resub_1"}, False),
        ("ename:ValueError", {"err_1"}, False),
        ("ename:KeyError", {"odd_1"}, False),
        ('"bad value"', {"err_1"}, False),  # ANSI codes are stripped before matching
        ("queue:mux", {"ab_1"}, True),
        ("since:25s", {"ok_1", "err_1", "ab_1", "pend_1", "odd_1", "resub_1"}, True),
        ('{"completed": {"$gte": "2026-11-20T10:00:05.2504Z"}}', set(), True),  # rounded to BSON's ms
        ('{"completed": {"$lte": "2026-11-20T10:00:05.2504Z"}}', {"ok_1", "err_1", "ab_1", "odd_1", "resub_1"}, True),
        ("-{}", set(), True),
    ],
)
def test_examples(collection, text, expected, exact):
    tree = parse(text, now=NOW)
    plan = check(collection, tree, DOCS)
    assert plan.exact is exact
    keep = predicate(tree)
    assert {d["msg_id"] for d in DOCS if keep(normalize_record(d, ENGINE_IDS))} == expected
