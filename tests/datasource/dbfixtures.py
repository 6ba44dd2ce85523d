"""Realistic ipyparallel task databases, written with ipyparallel's OWN backend classes (no Hub needed).

`make_records(n, mix)` yields raw TaskRecord dicts shaped like the spec's §6.4 real records (the dicts the
Hub hands to its DB backend: aware datetimes, dict columns as dicts, buffers as lists of bytes).

SQLite: `SQLiteDB` creates the table (and, like a real Hub, a new `ipython-tasks_N` each time it opens a
file that already has one). `SQLiteDB.add_record` costs a Python call and an INSERT per row, too slow for
100k rows, so `write_sqlite` adds the first few rows with `add_record` and bulk-inserts the rest with one
`executemany` of the *same* values adapted by ipyparallel's own adapters (`_adapt_dict`, `_adapt_bufs`,
`_adapt_timestamp`): the bytes on disk are identical to what the Hub writes. Measured on the shared 2-core
VM: `make_records(100_000)` 1.5 s, `write_sqlite` of them 4.3 s (139 MB file); records stream from the
generator, nothing is held in memory.

Mongo: `MongoDB` (ipyparallel's backend) creates the collection and its indexes; bulk rows go through
`insert_many` after the backend's own `_binary_buffers` (SecantusDB stores ~700 documents/s: keep
Mongo fixtures to a few hundred records).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ipyparallel.controller import sqlitedb as ipp_sqlitedb
from ipyparallel.controller.sqlitedb import SQLiteDB

CLIENT = "f129a23e-bedfdfe3e40b45dd000e0782"
HUB_SESSION = "123c8b2c-ae36bac60850476f9742d06c"
ENGINES = [
    "1e0d58e5-62d29a98b44b25ce27af650d",
    "840e01f9-39a684de907bc1dc0f7458e0",
    "90594652-79d32c1c74ff82372d45d943",
]
START = datetime(2026, 11, 21, 4, 46, 11, 142743, tzinfo=timezone.utc)

# Kinds of records and the default mix (weights). "resubmitted" yields TWO records: the original
# (failed, `resubmitted` set) and its Hub-made copy (succeeded, queue 'task', metadata {}).
DEFAULT_MIX: dict[str, int] = {
    "succeeded": 60,
    "failed": 10,
    "execute": 5,
    "execute_loud": 2,
    "aborted": 2,
    "pending": 6,
    "unassigned": 3,
    "timeout": 2,
    "engine_error": 2,
    "resubmitted": 3,
}
KINDS = tuple(DEFAULT_MIX)

ANSI_TB = [
    "\x1b[31m---------------------------------------------------------------------------\x1b[39m",
    "\x1b[31mValueError\x1b[39m                                Traceback (most recent call last)",
    "Cell \x1b[32mIn[1], line 3\x1b[39m, in \x1b[36mwork\x1b[39m\x1b[34m(i)\x1b[39m",
]


def _header(msg_id: str, session: str, date: datetime, msg_type: str = "apply_request") -> dict:
    return {"msg_id": msg_id, "msg_type": msg_type, "username": "user", "session": session, "date": date, "version": "5.4"}


def _result_header(msg_id: str, engine: str, date: datetime, msg_type: str = "apply_reply") -> dict:
    return {"msg_id": f"{msg_id}-r", "msg_type": msg_type, "username": "user", "session": engine, "date": date, "version": "5.4"}


def record(kind: str, i: int, *, client: str = CLIENT, start: datetime = START, label: str | None = None) -> list[dict]:
    """One record of `kind` (two for "resubmitted": the original then its copy), number `i`."""
    msg_id = f"{client}_8890_{i}"
    submitted = start + timedelta(milliseconds=10 * i)
    if i % 997 == 0:
        submitted = submitted.replace(microsecond=0)  # isoformat() then has no fraction at all
    eid = i % len(ENGINES)
    engine = ENGINES[eid]
    started = submitted + timedelta(microseconds=5123)
    completed = started + timedelta(microseconds=20000 + 37 * (i % 1000))
    received = completed + timedelta(microseconds=1311)
    if label is None and i % 4 == 0:
        label = f"batch-{i % 3}"
    lb = kind not in ("execute", "execute_loud") and i % 5 != 0
    rec: dict[str, Any] = {
        "msg_id": msg_id,
        "header": _header(msg_id, client, submitted, "apply_request"),
        "metadata": {"after": [], "follow": [], "label": label, "retries": 0, "targets": [], "timeout": 0.0}
        if lb
        else {"label": label},
        "content": {},
        "buffers": [b"\x80\x05\x95func", b"\x80\x05\x95args%d" % i],
        "submitted": submitted,
        "client_uuid": client,
        "engine_uuid": engine,
        "started": None,
        "completed": None,
        "resubmitted": None,
        "received": None,
        "result_header": None,
        "result_metadata": None,
        "result_content": None,
        "result_buffers": None,
        "queue": "task" if lb else "mux",
        "execute_input": None,
        "execute_result": None,
        "error": None,
        "stdout": "",
        "stderr": "",
        "label": label,
    }
    done = {
        "started": started,
        "completed": completed,
        "received": received,
        "result_header": _result_header(msg_id, engine, completed),
        "result_metadata": {"started": started.isoformat(), "dependencies_met": True, "engine": engine, "status": "ok", "label": label},
    }
    if kind == "succeeded":
        rec.update(done, result_content={"status": "ok"}, result_buffers=[b"\x80\x05K%d." % i])
        rec["stdout"] = f"hello stdout {i}\n" if i % 2 else ""
        rec["stderr"] = f"hello stderr {i}\n" if i % 3 == 0 else ""
    elif kind == "failed":
        evalue = f"bad value {i}"
        if i % 7 == 0:
            evalue = f"\x1b[1mbad\x1b[0m value {i}"  # some evalues carry ANSI too
        tb = ANSI_TB + [f"\x1b[31mValueError\x1b[39m: {evalue}"]
        rc = {"status": "error", "ename": "ValueError", "evalue": evalue, "traceback": tb,
              "engine_info": {"engine_id": eid, "engine_uuid": engine, "method": "apply"}}
        rec.update(done, result_content=rc, result_buffers=[])
        rec["error"] = {"traceback": tb, "ename": "ValueError", "evalue": evalue}
        rec["result_metadata"] = {**done["result_metadata"], "status": "error", "engine_info": rc["engine_info"]}
        rec["stderr"] = "warning: about to fail\n"
    elif kind in ("execute", "execute_loud"):
        code = f"print('exec out {i}'); 6*7"
        rec["header"]["msg_type"] = "execute_request"
        rec["content"] = {"code": code, "silent": kind == "execute", "user_expressions": {}}
        rec["buffers"] = None
        rec.update(done, result_content={"execution_count": i, "payload": [], "status": "ok", "user_expressions": {}})
        rec["result_header"]["msg_type"] = "execute_reply"
        rec["stdout"] = f"exec out {i}\n"
        if kind == "execute_loud":
            rec["execute_input"] = code
            rec["execute_result"] = {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": i}
    elif kind == "aborted":
        rec.update(done, result_content={"status": "aborted"}, started=None)
    elif kind == "pending":
        rec["stdout"] = "tick 0\ntick 1\n" if i % 2 else ""
    elif kind == "unassigned":
        rec["engine_uuid"] = None
        rec["queue"] = "task"
    elif kind == "timeout":
        rec.update(engine_uuid="", completed=completed, received=received, result_metadata={}, result_header=_result_header(msg_id, "", completed), queue="task")
        rec["result_content"] = {"ename": "TaskTimeout", "engine_info": {}, "evalue": "", "status": "error",
                                 "traceback": ["ipyparallel.error.TaskTimeout\n"]}
    elif kind == "engine_error":
        evalue = f"Engine {eid} died while running task '{msg_id}'"
        rec.update(completed=completed, queue="mux", result_metadata=None, result_header={"engine": engine, "date": completed})
        rec["result_content"] = {"status": "error", "ename": "EngineError", "engine_info": {}, "evalue": evalue,
                                 "traceback": [f"ipyparallel.error.EngineError: {evalue}\n"]}
    elif kind == "resubmitted":
        copy_id = f"{HUB_SESSION}_8441_{i}"
        rc = {"status": "error", "ename": "RuntimeError", "evalue": f"flaky {i}", "traceback": ANSI_TB,
              "engine_info": {"engine_id": eid, "engine_uuid": engine, "method": "apply"}}
        rec.update(done, result_content=rc, resubmitted=copy_id)
        rec["error"] = {"traceback": ANSI_TB, "ename": "RuntimeError", "evalue": f"flaky {i}"}
        c_sub = received + timedelta(milliseconds=3)
        copy = dict(rec)
        copy.update(
            msg_id=copy_id, header={**rec["header"], "msg_id": copy_id, "date": c_sub}, metadata={}, submitted=c_sub,
            engine_uuid=ENGINES[(eid + 1) % len(ENGINES)], started=c_sub + timedelta(milliseconds=2),
            completed=c_sub + timedelta(milliseconds=30), received=c_sub + timedelta(milliseconds=31),
            resubmitted=None, result_content={"status": "ok"}, error=None, queue="task", label=None,
            result_metadata={"status": "ok"}, stdout="second try ok\n",
        )
        return [rec, copy]
    else:
        raise ValueError(f"unknown record kind {kind!r}")
    return [rec]


def make_records(n: int, mix: Mapping[str, int] | None = None, *, seed: int = 0, client: str = CLIENT,
                 start: datetime = START, first: int = 0) -> Iterator[dict]:
    """Yield about `n` raw TaskRecord dicts (exactly n; a "resubmitted" pair counts as two).

    `mix` maps kinds (see KINDS) to weights; records are drawn with a seeded RNG, so the same arguments
    always give the same records. `first` offsets msg_id counters (to add more rows to a file later).
    """
    weights = dict(mix or DEFAULT_MIX)
    kinds = [k for k, w in weights.items() if w > 0]
    cum = list(itertools.accumulate(weights[k] for k in kinds))
    rng = random.Random(seed)
    made = 0
    i = first
    while made < n:
        kind = rng.choices(kinds, cum_weights=cum)[0]
        if kind == "resubmitted" and made + 2 > n:
            kind = "succeeded"
        for rec in record(kind, i, client=client, start=start):
            yield rec
            made += 1
        i += 1


# -- SQLite -----------------------------------------------------------------------------------

_KEYS: list[str] = list(SQLiteDB.class_traits()["_keys"].default())  # the 23 columns in table order
_TYPES: dict[str, str] = dict(SQLiteDB.class_traits()["_types"].default())
LEGACY_KEYS = [k for k in _KEYS if k != "label"]  # pre-9.1: 22 columns


def _adapt(value: Any) -> Any:
    """What ipyparallel's registered sqlite3 adapters turn a value into."""
    if isinstance(value, dict):
        return ipp_sqlitedb._adapt_dict(value)
    if isinstance(value, datetime):
        return ipp_sqlitedb._adapt_timestamp(value)
    if isinstance(value, list):
        return ipp_sqlitedb._adapt_bufs(value)
    return value


def _row(rec: Mapping[str, Any], keys: list[str]) -> list[Any]:
    return [_adapt(rec.get(k)) for k in keys]


def open_hub_db(path: str | os.PathLike) -> SQLiteDB:
    """A writer exactly like a Hub's: ipyparallel's SQLiteDB on `path` (a new table if one exists).

    Call `.commit()` (the Hub does every 2 s) to make writes visible; `.close()` when done.
    """
    path = Path(path)
    db = SQLiteDB(location=str(path.parent), filename=path.name)
    return db


def write_sqlite(path: str | os.PathLike, records: Iterable[Mapping[str, Any]], *, close: bool = True) -> str:
    """Write `records` into a new Hub table of `path` (ipyparallel's SQLiteDB); returns the table name."""
    db = open_hub_db(path)
    it = iter(records)
    for rec in itertools.islice(it, 5):
        db.add_record(rec["msg_id"], dict(rec))
    sql = f"INSERT INTO '{db.table}' VALUES ({','.join('?' * len(_KEYS))})"
    db._db.executemany(sql, (_row(rec, _KEYS) for rec in it))
    db._db.commit()
    table = db.table
    if close:
        db.close()
    return table


def write_legacy_sqlite(path: str | os.PathLike, records: Iterable[Mapping[str, Any]],
                        table: str = "ipython-tasks") -> str:
    """A pre-9.1 table: SQLiteDB's DDL without `label` (22 columns), values adapted the same way."""
    con = sqlite3.connect(str(path))
    cols = ",\n".join(f"{k} {_TYPES[k]}" + (" PRIMARY KEY" if k == "msg_id" else "")
                      for k in LEGACY_KEYS)
    con.execute(f"CREATE TABLE IF NOT EXISTS '{table}' ({cols})")
    con.executemany(f"INSERT INTO '{table}' VALUES ({','.join('?' * len(LEGACY_KEYS))})",
                    (_row(rec, LEGACY_KEYS) for rec in records))
    con.commit()
    con.close()
    return table


def raw_rows(path: str | os.PathLike, table: str) -> list[dict]:
    """Every row of `table` as a plain dict of what is stored (text, no converters), buffers left out."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info('{table}')") if r[1] not in ("buffers", "result_buffers")]
        cur = con.execute(f"SELECT {', '.join(cols)} FROM '{table}' ORDER BY rowid")
        return [dict(zip(cols, row)) for row in cur.fetchall()]
    finally:
        con.close()


def engines_json(profile_dir: str | os.PathLike, engines: Iterable[str] = ENGINES, cluster_id: str = "") -> Path:
    """`<profile_dir>/log/engines<cluster_id>.json` as the Hub writes it."""
    log = Path(profile_dir) / "log"
    log.mkdir(parents=True, exist_ok=True)
    path = log / f"engines{cluster_id}.json"
    uuids = list(engines)
    path.write_text(json.dumps({"engines": {str(i): u for i, u in enumerate(uuids)}, "next_id": len(uuids)}))
    return path


# -- MongoDB ----------------------------------------------------------------------------------

def open_hub_mongo(uri: str, database: str = "ipython-tasks"):
    """ipyparallel's MongoDB backend on `uri` (creates the msg_id/submitted indexes like a Hub)."""
    from ipyparallel.controller.mongodb import MongoDB

    return MongoDB(connection_args=[uri], connection_kwargs={"serverSelectionTimeoutMS": 3000}, database=database)


def write_mongo(uri: str, records: Iterable[Mapping[str, Any]], database: str = "ipython-tasks"):
    """Insert `records` through ipyparallel's MongoDB backend (bulk after the first few). Returns the backend."""
    db = open_hub_mongo(uri, database)
    it = iter(records)
    for rec in itertools.islice(it, 5):
        db.add_record(rec["msg_id"], dict(rec))
    while batch := [db._binary_buffers(dict(r)) for r in itertools.islice(it, 5000)]:
        db._records.insert_many(batch, ordered=False)
    return db


def small_pending_scan(monkeypatch: Any, front: int, rotating: int, front_max: int | None = None) -> None:
    """Re-read `front` oldest pending tasks (up to `front_max` when the changes widen it) and `rotating` others
    per sync, for sources made after this call (datasource/sources/pending.py)."""
    from datasource.sources import pending

    monkeypatch.setattr(pending, "FRONT_MIN", front)
    monkeypatch.setattr(pending, "FRONT_MAX", front if front_max is None else front_max)
    monkeypatch.setattr(pending, "ROTATING", rotating)
