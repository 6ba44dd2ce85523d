"""`MongoSource`: the Hub's MongoDB task records (`ipython-tasks.task_records`), read with pymongo.

Every call is bounded: server selection, connect and socket timeouts are `timeout` (2 s by default).
Reads never fetch `buffers`/`result_buffers` nor the text of stdout/stderr: an aggregate `$project` keeps
the light fields and computes `stdout_size`/`stderr_size` with `$strLenCP` on the server (on SecantusDB it
measured ~1.5x slower than fetching the text with `find`, but a real mongod computes it in C++ and a task's
output can be megabytes). Documents are normalized with `model.normalize_record`; Mongo dates are BSON
dates with millisecond precision (microseconds are lost by the Hub's own writes).

Incremental sync (cost grows with the changes, plus a few indexed queries):
* new documents: `_id > last seen _id` (ObjectIds come from the Hub's pymongo, monotonic per process);
* deletions and out-of-order inserts: `estimated_document_count()` against the ids known; on a mismatch
  one `{msg_id: 1}` scan tells which ids vanished (`Delta.removed` + a warning) or appeared;
* changed documents: pending ids re-read by `{"msg_id": {"$in": chunk}}`; without a Hub the oldest by
  `submitted` and a rotating slice of the others per sync (`pending.PendingScan`); with a paired Hub its
  in-flight ids plus the ids that just left that set;
* `resubmitted` set on originals: `{"resubmitted": {"$in": new copies}}` when a Hub-made copy appears,
  plus `{"resubmitted": {"$ne": None}}` every `SLOW_EVERY` syncs.
Paired with a Hub, pending records seen busy on its IOPub relay are `running` (`knows_running`), and a Hub
that does not answer is asked again with a backoff: see `paired.PairedHub`.
`find(query)` runs a Mongo query for the query language, after checking every `$operator` against
`MONGO_OPERATORS` (no `$where`, no `$expr`) and translating `$glob` like ipyparallel does.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from ..model import TaskDetail, TaskRecord, normalize_detail, normalize_record
from ..query.errors import QueryError
from ..query.jsonquery import MONGO_OPERATORS
from .base import ActionRefused, Capabilities, Delta, NotATaskDatabase, SourceError, SourceUnavailable
from .paired import PURGE_REASON, RESUBMIT_REASON, PairedHub, resubmit_via
from .pending import IN_FLIGHT_MAX, PendingScan

__all__ = ["MongoSource", "MONGO_OPERATORS", "LIGHT_PROJECTION", "check_query", "translate_glob"]

CHUNK = 5_000
ID_CHUNK = 500
SLOW_EVERY = 10
WATCH_SECONDS = 10.0


def _size(field: str) -> dict:
    return {"$cond": [{"$eq": [{"$type": f"${field}"}, "string"]}, {"$strLenCP": f"${field}"}, 0]}


# The light fields of a task record, as an aggregate $project (never buffers, never output text).
LIGHT_PROJECTION: dict[str, Any] = {
    "_id": 1,
    "msg_id": 1,
    "submitted": 1,
    "started": 1,
    "completed": 1,
    "received": 1,
    "engine_uuid": 1,
    "queue": 1,
    "client_uuid": 1,
    "resubmitted": 1,
    "label": 1,
    "metadata.label": 1,
    "result_content.status": 1,
    "result_content.ename": 1,
    "result_content.evalue": 1,
    "result_content.engine_info": 1,
    "error.ename": 1,
    "error.evalue": 1,
    "stdout_size": _size("stdout"),
    "stderr_size": _size("stderr"),
}
_DETAIL_EXCLUDE = {"buffers": 0, "result_buffers": 0}


def check_query(query: Any, where: str = "query") -> None:
    """Refuse any `$operator` outside MONGO_OPERATORS (`$where`, `$expr`, `$function`...), anywhere."""
    if isinstance(query, Mapping):
        for key, value in query.items():
            if not isinstance(key, str):
                raise QueryError(f"{where}: keys must be strings")
            if key.startswith("$") and key not in MONGO_OPERATORS:
                allowed = ", ".join(sorted(MONGO_OPERATORS))
                raise QueryError(f"operator '{key}' is not allowed (allowed: {allowed})")
            check_query(value, key)
    elif isinstance(query, (list, tuple)):
        for item in query:
            check_query(item, where)


def translate_glob(query: Any) -> Any:
    """`{"$glob": p}` -> `{"$regex": "^" + fnmatch.translate(p) + "$"}` (what ipyparallel's MongoDB does)."""
    if isinstance(query, Mapping):
        out = {}
        for key, value in query.items():
            if key == "$glob":
                if not isinstance(value, str):
                    raise QueryError("'$glob' needs a string")
                out["$regex"] = "^" + fnmatch.translate(value) + "$"
            else:
                out[key] = translate_glob(value)
        return out
    if isinstance(query, list):
        return [translate_glob(v) for v in query]
    return query


class MongoSource:
    """Task records in a MongoDB collection written by a Hub started with `--mongodb`."""

    def __init__(
        self,
        uri: str,
        *,
        database: str = "ipython-tasks",
        collection: str = "task_records",
        hub: Any = None,
        allow_writes: bool = False,
        timeout: float = 2.0,
    ) -> None:
        self.uri = uri
        self.database = database
        self.collection = collection
        self.hub = hub
        self.paired = PairedHub(hub, what="database") if hub is not None else None
        self.allow_writes = allow_writes
        self.timeout = timeout
        self.host = _host_of(uri)
        # one read of a 5,000-document chunk may take seconds on a slow server (SecantusDB: ~4 s)
        self._read_ms = max(int(timeout * 1000), 10_000)
        self.name = f"MongoDB {self.host} {database}.{collection}"
        self._client: Any = None
        self._coll: Any = None
        self._loaded = False
        self._last_id: Any = None
        self._ids: set[str] = set()
        self._pending: dict[str, TaskRecord] = {}
        self._resubmitted: dict[str, str] = {}
        self._scan = PendingScan()
        self._syncs = 0
        self._engine_ids: dict[str, int] = {}
        self._purged: set[str] = set()
        self._in_flight: set[str] = set()
        self._watch: dict[str, float] = {}

    # -- protocol ----------------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        hub = self.hub is not None
        can_purge = hub or self.allow_writes
        return Capabilities(
            kind="mongodb",
            backend="mongodb",
            stores_tasks=True,
            knows_running=self.paired is not None and self.paired.knows_running,
            has_engines=hub,
            can_resubmit=hub,
            resubmit_reason="" if hub else RESUBMIT_REASON,
            can_purge=can_purge,
            purge_reason="" if can_purge else PURGE_REASON.replace("a tasks.db", "a database"),
            purge_via_hub=hub,
            read_only=not hub and not self.allow_writes,
            warnings=self.paired.warnings() if self.paired is not None else (),
        )

    def open(self) -> None:
        from pymongo import MongoClient
        from pymongo.errors import ConfigurationError, InvalidURI

        self.close()  # a previous attempt's client
        ms = int(self.timeout * 1000)
        try:
            self._client = MongoClient(
                self.uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=self._read_ms,
                tz_aware=True, appname="hubtop", connect=False,
            )
        except (ConfigurationError, InvalidURI, ValueError, TypeError) as exc:
            raise SourceError(f"bad MongoDB URI {_redact(self.uri)!r}: {_first_line(exc)}") from None
        try:
            self._connect()
        except BaseException:
            self.close()
            raise
        if self.paired is not None:
            self.paired.open()  # subscribe to IOPub before the load: a task starting meanwhile is seen

    def _connect(self) -> None:
        with self._errors():
            self._client.admin.command("ping")
            db = self._client[self.database]
            names = db.list_collection_names(filter={"name": self.collection})
            if not names:
                raise NotATaskDatabase(
                    f"MongoDB at {self.host} has no collection {self.database}.{self.collection} "
                    "(no Hub with --mongodb wrote there)"
                )
            from bson.codec_options import CodecOptions

            self._coll = db.get_collection(self.collection, CodecOptions(tz_aware=True))
            sample = self._coll.find_one({}, {"msg_id": 1})
            if sample is not None and "msg_id" not in sample:
                raise NotATaskDatabase(
                    f"{self.database}.{self.collection} at {self.host} does not hold ipyparallel task records"
                )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._coll = None
        if self.paired is not None:
            self.paired.close()

    def sync(self) -> Iterator[Delta]:
        if self._coll is None:
            self.open()
        self._syncs += 1
        if not self._loaded:
            yield from self._full_load()
            return
        delta = Delta()
        by_id: dict[str, TaskRecord] = {}
        try:
            with self._errors():
                self._incremental(delta, by_id)
        except SourceError:
            # what was read before the server went away is true (and past `_last_id`): deliver it
            self._remark(by_id)
            delta.upserts.extend(by_id.values())
            if delta.upserts or delta.removed:
                yield delta
            raise
        delta.upserts.extend(by_id.values())
        if delta.upserts or delta.removed or delta.warnings or delta.engines is not None:
            yield delta

    def detail(self, msg_id: str) -> TaskDetail:
        coll = self._collection()
        with self._errors():
            doc = coll.find_one({"msg_id": msg_id}, _DETAIL_EXCLUDE)
            if doc is None:
                raise SourceError(f"no task {msg_id} in {self.database}.{self.collection} at {self.host}")
            parent = coll.find_one({"resubmitted": msg_id}, {"msg_id": 1})
        return normalize_detail(doc, self._engine_ids, resubmitted_from=(parent or {}).get("msg_id"))

    def find(self, query: Mapping[str, Any], limit: int | None = None) -> list[TaskRecord]:
        """Records matching a Mongo query (for the query language's pushdown). Refuses unknown operators."""
        check_query(query)
        pipeline: list[dict] = [{"$match": translate_glob(dict(query))}]
        if limit:
            pipeline.append({"$limit": int(limit)})
        pipeline.append({"$project": LIGHT_PROJECTION})
        with self._errors():
            docs = list(self._collection().aggregate(pipeline))
        return [normalize_record(d, self._engine_ids) for d in docs]

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        return resubmit_via(self.hub, msg_ids)

    def purge(self, msg_ids: list[str]) -> int:
        ids = list(dict.fromkeys(m for m in msg_ids if m))
        if not ids:
            return 0
        if self.hub is not None:
            n = self.hub.purge(ids)
            self._purged.update(ids)  # our own purge: no "disappeared" warning when it shows
            return n
        if not self.allow_writes:
            raise ActionRefused(PURGE_REASON.replace("a tasks.db", "a database"))
        coll = self._collection()
        with self._errors():
            for i in range(0, len(ids), ID_CHUNK):
                chunk = ids[i:i + ID_CHUNK]
                pending = coll.find_one({"msg_id": {"$in": chunk}, "completed": None}, {"msg_id": 1})
                if pending is not None:
                    raise ActionRefused(f"msg pending: {pending['msg_id']!r} (pending tasks are never purged)")
            for i in range(0, len(ids), ID_CHUNK):
                chunk = ids[i:i + ID_CHUNK]
                # `completed != None` again: a task cannot turn pending, but never delete one by accident
                coll.delete_many({"msg_id": {"$in": chunk}, "completed": {"$ne": None}})
                self._purged.update(chunk)
        return len(ids)

    # -- errors ------------------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        from pymongo import errors as E

        try:
            yield
        except SourceError:
            raise
        except E.OperationFailure as exc:
            if exc.code in (13, 18) or "auth" in str(exc).lower():
                raise SourceError(f"MongoDB at {self.host} refused access: {_first_line(exc)}") from None
            raise SourceError(f"MongoDB at {self.host}: {_first_line(exc)}") from None
        except E.ServerSelectionTimeoutError:
            raise SourceUnavailable(f"MongoDB at {self.host} did not answer within {self.timeout:g} s") from None
        except E.NetworkTimeout:
            raise SourceUnavailable(
                f"MongoDB at {self.host} did not answer a query within {self._read_ms / 1000:g} s") from None
        except E.ConnectionFailure:  # AutoReconnect and kin: the connection dropped mid-call
            raise SourceUnavailable(f"MongoDB at {self.host} closed the connection") from None
        except E.ConfigurationError as exc:
            raise SourceError(f"MongoDB at {self.host}: {_first_line(exc)}") from None
        except E.PyMongoError as exc:
            raise SourceError(f"MongoDB at {self.host}: {_first_line(exc)}") from None

    def _collection(self):
        if self._coll is None:
            self.open()
        return self._coll

    # -- reading -----------------------------------------------------------------------------------

    def _light(self, match: Mapping[str, Any], sort: int = 0, limit: int = 0) -> list[dict]:
        pipeline: list[dict] = [{"$match": dict(match)}]
        if sort:
            pipeline.append({"$sort": {"_id": sort}})
        if limit:
            pipeline.append({"$limit": limit})
        pipeline.append({"$project": LIGHT_PROJECTION})
        return list(self._coll.aggregate(pipeline))

    def _records(self, docs: list[dict]) -> list[TaskRecord]:
        recs = [normalize_record(d, self._engine_ids) for d in docs]
        for rec in recs:
            self._ids.add(rec.msg_id)
            if rec.state.is_pending:
                if self.paired is not None:
                    self.paired.mark(rec)
                self._pending[rec.msg_id] = rec
            else:
                self._pending.pop(rec.msg_id, None)
            if rec.resubmitted:
                self._resubmitted[rec.msg_id] = rec.resubmitted
            else:
                self._resubmitted.pop(rec.msg_id, None)
        return recs

    def _full_load(self) -> Iterator[Delta]:
        if self.paired is not None:
            self.paired.learn_engine_ids(self._engine_ids)  # before normalizing, so records get their ids
            self.paired.marks_changed()  # every record of the load is marked as it is built
        self._ids, self._pending, self._resubmitted = set(), {}, {}
        self._in_flight, self._watch = set(), {}
        with self._errors():
            total = self._coll.estimated_document_count()
            top = self._light({}, sort=-1, limit=1)
        self._last_id = top[0]["_id"] if top else None
        done = 0
        first = True
        match: dict = {}
        while self._last_id is not None:
            with self._errors():
                docs = self._light(match, sort=-1, limit=CHUNK)
            if not docs:
                break
            match = {"_id": {"$lt": docs[-1]["_id"]}}
            recs = self._records(docs)
            done += len(recs)
            yield Delta(upserts=recs, reset=first, loading=True, done=done, total=max(total, done))
            first = False
        self._loaded = True
        final = Delta(reset=first, loading=False, done=done, total=done)
        if self.paired is not None:
            self.paired.poll(final, self._engine_ids)
            by_id: dict[str, TaskRecord] = {}
            self._remark(by_id)  # tasks that started or ended while the load ran
            final.upserts.extend(by_id.values())
        yield final

    def _incremental(self, delta: Delta, by_id: dict[str, TaskRecord]) -> None:
        """Fill `delta` (removals, warnings, Hub state) and `by_id` (upserts) with what changed."""
        in_flight = self.paired.poll(delta, self._engine_ids) if self.paired is not None else None
        slow = self._syncs % SLOW_EVERY == 0
        # new documents
        while True:
            match = {"_id": {"$gt": self._last_id}} if self._last_id is not None else {}
            docs = self._light(match, sort=1, limit=CHUNK)
            if not docs:
                break
            self._last_id = docs[-1]["_id"]
            for rec in self._records(docs):
                by_id[rec.msg_id] = rec
        # changed documents
        if in_flight is not None:
            now = time.monotonic()
            for m in self._in_flight - in_flight:
                self._watch[m] = now + WATCH_SECONDS
            for m in self._pending:
                if m not in in_flight and m in by_id and m not in self._watch:
                    self._watch[m] = now + WATCH_SECONDS
            self._in_flight = set(in_flight)
            self._watch = {m: d for m, d in self._watch.items() if d > now and m in self._ids}
            pending = self._pending
            quiet = self.paired.still_unassigned(
                lambda m: (r.engine_uuid, r.started) if (r := pending.get(m)) is not None else None)
            wanted = [m for m in [m for m in in_flight if m not in quiet][:IN_FLIGHT_MAX]
                      + [m for m in self._watch if m not in quiet][:IN_FLIGHT_MAX] if m in self._ids]
            self._reread(wanted, by_id)
            for m in list(self._watch):
                if m in by_id and by_id[m].state.is_done:
                    del self._watch[m]
            if slow:  # orphans of an earlier Hub process: slowly
                self._reread_pending(by_id, quiet)
        else:
            self._reread_pending(by_id)
        # resubmitted pointers
        known = set(self._resubmitted.values())
        copies = [m for m, r in by_id.items() if r.client and not m.startswith(r.client + "_") and m not in known]
        if slow:
            rows = list(self._coll.find({"resubmitted": {"$ne": None}}, {"msg_id": 1, "resubmitted": 1, "_id": 0}))
            now_set = {d.get("msg_id") for d in rows}
            changed = [d["msg_id"] for d in rows if self._resubmitted.get(d["msg_id"]) != d.get("resubmitted")]
            changed += [m for m in self._resubmitted if m not in now_set]
            self._reread([m for m in changed if m not in by_id], by_id)
        elif copies:
            rows = list(self._coll.find({"resubmitted": {"$in": copies}}, {"msg_id": 1, "resubmitted": 1, "_id": 0}))
            self._reread([d["msg_id"] for d in rows if d["msg_id"] not in by_id], by_id)
        # deletions
        count = self._coll.estimated_document_count()
        if count != len(self._ids):
            present = {d.get("msg_id") for d in self._coll.find({}, {"msg_id": 1, "_id": 0})}
            vanished = self._ids - present
            appeared = [m for m in present - self._ids if isinstance(m, str)]
            if vanished:
                self._ids -= vanished
                for m in vanished:
                    self._pending.pop(m, None)
                    self._resubmitted.pop(m, None)
                    by_id.pop(m, None)
                delta.removed.extend(sorted(vanished))
                ours = vanished & self._purged
                self._purged -= ours
                theirs = len(vanished) - len(ours)
                if theirs:
                    delta.warnings.append(
                        f"{theirs} record{'s' if theirs != 1 else ''} disappeared since the last poll"
                    )
            if appeared:
                self._reread(appeared, by_id, known_only=False)
        self._remark(by_id)

    def _remark(self, by_id: dict[str, TaskRecord]) -> None:
        """Pending records whose running mark changed (IOPub) and that this sync did not re-read: upserted
        again with the new state (no read of the database)."""
        if self.paired is None:
            return
        for m in self.paired.marks_changed():
            rec = self._pending.get(m)
            if rec is None or m in by_id:
                continue
            state = self.paired.state_of(m)
            if rec.state is not state:
                rec = self._pending[m] = dataclasses.replace(rec, state=state)
                by_id[m] = rec

    def _reread_pending(self, by_id: dict[str, TaskRecord], skip: set[str] | frozenset[str] = frozenset()) -> None:
        """Re-read the pending ids `self._scan` picks, by `submitted` (the oldest ones and a rotating slice,
        see pending.py); not those in `skip`."""
        far = datetime.max.replace(tzinfo=timezone.utc)
        order = sorted((r.submitted or far, m) for m, r in self._pending.items() if m not in skip)
        front, rest = self._scan.pick(order, len(order))
        self._scan.saw(self._reread([m for _, m in front], by_id))
        if rest:
            self._reread([m for _, m in rest], by_id)

    def _reread(self, ids: list[str], by_id: dict[str, TaskRecord], known_only: bool = True) -> int:
        """Re-read these ids; those that changed go to `by_id`. Returns how many did."""
        changed = 0
        ids = [m for m in dict.fromkeys(ids) if m not in by_id and (m in self._ids or not known_only)]
        for i in range(0, len(ids), ID_CHUNK):
            chunk = ids[i:i + ID_CHUNK]
            old = {m: self._pending.get(m) for m in chunk}
            recs = self._records(self._light({"msg_id": {"$in": chunk}}))
            for rec in recs:
                if old.get(rec.msg_id) != rec:
                    by_id[rec.msg_id] = rec
                    changed += 1
        return changed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first.split(", full error:")[0].split(", Timeout:")[0]


def _redact(uri: str) -> str:
    """The URI without its password."""
    scheme, sep, rest = uri.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return uri
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _host_of(uri: str) -> str:
    """mongodb://user:pw@host:port/db?x -> host:port (never the credentials)."""
    rest = uri.split("://", 1)[-1]
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    return rest.rsplit("@", 1)[-1] or uri
