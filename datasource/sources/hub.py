"""`HubSource`: tasks, engines and queues from a live Hub over ZeroMQ; resubmit and purge through it.

Sync strategy (spec §3.2, §4, §9, §11.5). The first `sync()` is a full load: `history_request` once,
then `db_request {"msg_id": {"$in": ids}}` with `LIGHT_KEYS` (never stdout/stderr or buffers), one
Delta per chunk with done/total progress. Chunks are sized from the measured reply time so one
request stays near 150 ms of Hub time (the Hub is single-threaded).

On a SQLite Hub the first load has two phases, because the Hub's SQLiteDB runs every `timestamp`
column through dateutil (~35 us a value: ~140 us of the ~150 us a light record costs), while the
text columns have no converter and result_content's JSON costs ~3 us:
1. listing (one reset load, newest first): whole records for the newest chunk (the top of the default
   sort; W_s), then per chunk of <= 500 ids `{"completed": {"$eq": None}}` (msg_id only: the pending
   ones) and `LIST_KEYS` (no timestamps). Every task gets its state, engine, client, queue, label,
   resubmitted, ename/evalue from model.normalize_record's own rules; its times are None. 100k tasks:
   ~1.5 s of Hub time instead of ~15 s, read by one helper thread a chunk ahead while the caller
   stores the previous one. W_r is the Hub's clock (history_reply's date), taken before any "still
   pending?" question.
2. backfill: the four times of the listed tasks (`TIME_KEYS`), newest first, over the following syncs:
   at most BACKFILL_DUTY of the wall time since the previous sync and BACKFILL_MAX_SYNC per sync, so
   the poll keeps its rhythm and the Hub stays free 2/3 of the time. A task whose `completed` is set
   while we listed it pending is fetched whole. Its deltas are ordinary ones (not `loading`: the store
   would take them for a reset load); `backfill_progress` says how far it is.
DictDB (<= 1024 records) and MongoDB (read directly by hubtop) keep the one-phase load.

Each later `sync()` costs in proportion to what changed, not to the history size:

* `connection_request` + `queue_request` every sync (~2 ms each): engines (every uuid ever seen is
  kept, dead ones flagged alive=False), queue counts filtered to live engines. The queue reply's
  counters summed over every engine (completed, in flight) tell whether anything happened at all:
  when they did not move, an idle sync stops here (3 ms at 100k tasks).
* new tasks: `{"submitted": {"$ne": None, "$gte": W_s - 5 s}}` asking for `msg_id` only, where W_s is
  the newest `submitted` seen; unknown ids are then fetched by primary key. `submitted` is the
  *client's* clock, hence the margin (ids only: the overlap is cheap). `$gt` is never used (DictDB
  inverts it). On SQLite this is one table scan (~0.2 s at 100k tasks, only when something happened).
* completions (the completed counter moved): our pending ids are re-fetched by primary key when there
  are <= 500 of them; above that `{"received": {"$ne": None, "$gte": W_r - 1 s}}` (msg_id only) names
  the finished ones. `received` is the *Hub's* clock (one domain); `started`/`completed` are engine
  clocks and never used as cursors.
  Range queries carry `"$ne": None` *before* `$gte`: DictDB evaluates a field's operators in order and
  `None >= datetime` raises TypeError there (pending tasks have no `received`).
* pending re-check: records completed without a `received` (an engine died: the Hub or scheduler
  writes an EngineError) or orphaned by an earlier Hub: our pending ids are re-fetched when the Hub's
  in-flight count is below our pending count, at most every 5 s.
* ids we act on (resubmitted originals gain `resubmitted`, new copies) are re-fetched at the next sync.
  A copy made by *another* client's resubmit is recognised (its msg_id does not start with its
  client_uuid) and its original looked up with `{"resubmitted": {"$in": copies}}`.
* reconciliation every 30 s (or 60x the last history_request time, if longer): `history_request`
  diffed against what we hold: ids gone (purged elsewhere, DictDB culling) -> `Delta.removed` + a
  warning; ids never seen (a client clock far behind, a task aborted between two syncs) -> fetched.

Running vs pending: an `IOPubListener` (SUB on the `iopub` relay) is drained without blocking at
each sync; a pending task seen `status: busy` (and not yet idle) is upserted as `running`
(`knows_running`). A fresh subscriber misses tasks that started before it connected: those stay
`pending` (never called `queued`, which we cannot prove). `live_running=False` turns it off. While the
cluster finishes tasks faster than `IOPubListener.pace` follows, nothing is marked running.

When a request times out and the connection file changed (the Hub restarted on new ports), the
source reconnects with the new file and reloads from scratch (a new Hub may use a new table).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from ..connection import ConnectionInfo, load_connection_file, profile_dir_of
from ..hubclient import CHUNK, HubClient, HubError, IOPubListener, chunks
from ..model import (
    DETAIL_KEYS,
    LIGHT_KEYS,
    Engine,
    QueueStatus,
    State,
    TaskDetail,
    TaskRecord,
    is_resubmitted_copy,
    normalize_detail,
    normalize_record,
    parse_time,
)
from .base import ActionRefused, Capabilities, Delta, SourceError, SourceUnavailable

__all__ = ["HubSource", "NODB_WARNING", "DICTDB_WARNING"]

NODB_WARNING = "this Hub stores no tasks; start ipcontroller with --sqlitedb or --mongodb"
DICTDB_WARNING = (
    "this Hub keeps tasks in memory (DictDB) and culls the oldest beyond 1,024 records; "
    "start ipcontroller with --sqlitedb or --mongodb to keep them"
)
SUBMITTED_MARGIN = timedelta(seconds=5)
RECEIVED_MARGIN = timedelta(seconds=1)
RECONCILE_EVERY = 30.0
PENDING_RECHECK_EVERY = 5.0
PENDING_REFETCH_MAX = 500  # above: find completions with a `received` range query instead
# The size is picked from the previous request's speed, so a request that finds the machine twice as slow takes
# twice the target: 0.10 keeps such a request under the 250 ms a Hub request may take (0.15 made 262 ms once).
TARGET_REQUEST_SECONDS = 0.10
MIN_CHUNK = 20
# SQLite Hubs, two-phase first load (see the module docstring).
# Listing: no column here has a converter except result_content (json.loads + extract_dates: ~3 us a
# record, vs ~35 us for each timestamp column through dateutil).
LIST_KEYS: tuple[str, ...] = ("msg_id", "client_uuid", "engine_uuid", "resubmitted", "queue", "label", "result_content")
TIME_KEYS: tuple[str, ...] = ("msg_id", "submitted", "started", "completed", "received")
BACKFILL_DUTY = 1 / 3  # share of wall time the backfill may keep the Hub busy
BACKFILL_MAX_SYNC = 0.5  # seconds of Hub time per sync at most: the poll is never held longer for it
BACKFILL_MIN_BUDGET = 0.05  # below (a refresh right after a poll), no backfill in this sync
_LISTED_DONE = datetime(1970, 1, 1, tzinfo=timezone.utc)  # stands for "completed, time not fetched yet"


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _adapted(size: int, asked: int, elapsed: float) -> int:
    """The next chunk size, so that one request stays near TARGET_REQUEST_SECONDS of Hub time."""
    if elapsed <= 0 or asked < MIN_CHUNK:
        return size
    ideal = int(asked * TARGET_REQUEST_SECONDS / elapsed)
    return max(MIN_CHUNK, min(CHUNK, (size + ideal) // 2))


class HubSource:
    def __init__(
        self,
        conn: ConnectionInfo | str | os.PathLike,
        timeout: float = 5.0,
        *,
        open_timeout: float | None = None,
        reconcile_every: float = RECONCILE_EVERY,
        live_running: bool = True,
        fast_load: bool = True,
        clock=time.monotonic,
    ):
        if isinstance(conn, ConnectionInfo):
            self._conn = conn
            self._path = conn.path
        else:
            self._path = Path(conn).expanduser()
            self._conn = None  # loaded by open(): a bad path is a SourceError there
        self.timeout = timeout
        self.open_timeout = min(timeout, 3.0) if open_timeout is None else open_timeout
        self.reconcile_every = reconcile_every
        self._clock = clock
        self._client: HubClient | None = None
        self._chunk = 250  # ids per db_request, adapted to the Hub's speed (see _fetch_chunks)
        self._list_chunk = CHUNK  # ids per listing request (SQLite first load), adapted the same way
        self.fast_load = fast_load  # False: the one-phase first load on SQLite too
        self.live_running = live_running
        self._iopub: IOPubListener | None = None
        self._running: set[str] = set()
        self._action_lock = threading.Lock()  # actions may run in another thread than sync()
        self._file_mtime: float | None = None
        self._backend = "unknown"
        self._open_warnings: list[str] = []
        self._reset_state()
        self.name = f"Hub {self._path or 'connection info'}"

    # -- state ---------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._records: dict[str, TaskRecord] = {}
        self._pending: set[str] = set()
        self._engine_ids: dict[str, int] = {}  # every uuid -> id ever seen
        self._live: dict[int, str] = {}
        self._submitted_wm: datetime | None = None
        self._received_wm: datetime | None = None
        self._loaded = False
        self._last_reconcile = 0.0
        self._last_pending_check = 0.0
        self._refetch: set[str] = set()
        self._purged: set[str] = set()
        self._last_totals: tuple[int, int] | None = None
        self._history_seconds = 0.0
        # backfill of the timestamps after a two-phase first load
        self._unfilled: set[str] = set()  # listed records whose timestamps are not fetched yet
        self._backfill: list[str] = []  # the ids to fill, newest first
        self._backfill_pos = 0
        self._backfill_total = 0
        self._backfill_cost = TARGET_REQUEST_SECONDS / CHUNK  # seconds of Hub time per backfilled record
        self._last_sync_end: float | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def _describe(self) -> str:
        assert self._conn is not None
        where = f"Hub {self._client.url if self._client else self._conn.interface}"
        if self._path is not None:
            pdir = profile_dir_of(self._path)
            if pdir.name.startswith("profile_"):
                where += f" (profile '{pdir.name[len('profile_'):]}')"
        return where

    def open(self) -> None:
        if self._path is not None and (self._conn is None or self._file_changed()):
            if self._conn is not None:
                self._reset_state()  # another Hub (new ports, maybe a new table): reload
            self._conn = load_connection_file(self._path)
        assert self._conn is not None
        self._remember_mtime()
        if self._client is not None:
            self._client.close()
        self._client = HubClient(self._conn, timeout=self.timeout)
        self.name = self._describe()
        self._open_warnings = self._conn.permission_warnings()
        try:
            self._live = self._client.connection_request(timeout=self.open_timeout)
            self._backend = self._client.detect_backend(timeout=self.timeout)
        except SourceError:
            self._client.close()
            self._client = None  # the next sync() opens again
            raise
        if self._iopub is not None:
            self._iopub.close()
            self._iopub = None
        if self.live_running and self._backend != "nodb" and "iopub" in self._conn.ports:
            self._iopub = IOPubListener(self._conn)

    def close(self) -> None:
        if self._iopub is not None:
            self._iopub.close()
            self._iopub = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _remember_mtime(self) -> None:
        try:
            self._file_mtime = self._path.stat().st_mtime if self._path else None
        except OSError:
            self._file_mtime = None

    def _file_changed(self) -> bool:
        if self._path is None:
            return False
        try:
            return self._path.stat().st_mtime != self._file_mtime
        except OSError:
            return False

    @property
    def client(self) -> HubClient:
        if self._client is None:
            raise SourceError(f"{self.name}: not open")
        return self._client

    @property
    def backend(self) -> str:
        return self._backend

    def capabilities(self) -> Capabilities:
        warnings = list(self._open_warnings)
        stores = self._backend != "nodb"
        if not stores:
            warnings.append(NODB_WARNING)
        elif self._backend == "dictdb":
            warnings.append(DICTDB_WARNING)
        if self._iopub is not None and (note := self._iopub.note()):
            warnings.append(note)
        return Capabilities(
            kind="hub",
            backend=self._backend,
            stores_tasks=stores,
            knows_running=self._iopub is not None,
            has_engines=True,
            can_resubmit=stores,
            resubmit_reason="" if stores else NODB_WARNING,
            can_purge=stores,
            purge_reason="" if stores else NODB_WARNING,
            purge_via_hub=stores,
            read_only=False,
            warnings=tuple(warnings),
        )

    # -- sync ----------------------------------------------------------------------------------

    def sync(self) -> Iterator[Delta]:
        """Yield the deltas of one poll (see the module docstring)."""
        if self._client is None:
            self.open()
        warnings: list[str] = []
        try:
            engines, queue = self._engines_and_queue()
        except SourceUnavailable:
            if self._path is not None and not self._path.exists():
                raise SourceUnavailable(
                    f"the Hub stopped: its connection file {self._path} was removed"
                ) from None
            if not self._reconnect_if_restarted():
                raise
            warnings.append(f"the Hub restarted (new connection file): reconnected to {self.client.url}")
            self._reset_state()
            engines, queue = self._engines_and_queue()
        if self._iopub is not None:
            self._iopub.pace(queue.completed, self._clock(), len(queue.engines))
            self._running = set(self._iopub.drain())
        if not self._loaded or self._backend == "nodb":
            yield from self._full_load(engines, queue, warnings)
        else:
            yield self._delta(engines, queue, warnings)
            yield from self._backfill_step()
        self._last_sync_end = time.monotonic()

    def _reconnect_if_restarted(self) -> bool:
        if not self._file_changed():
            return False
        try:
            self.open()
        except SourceError:
            return False
        return True

    def _engines_and_queue(self) -> tuple[list[Engine], QueueStatus]:
        self._live = self.client.connection_request()
        for eid, uuid in self._live.items():
            self._engine_ids[uuid] = eid
        queue = self.client.queue_status(live=self._live)
        return self._engine_list(queue), queue

    def _engine_list(self, queue: QueueStatus) -> list[Engine]:
        by_uuid = {e.uuid: e for e in queue.engines.values()}
        out = []
        for uuid, eid in self._engine_ids.items():
            out.append(by_uuid.get(uuid) or Engine(uuid=uuid, id=eid, alive=False))
        return out

    def _normalize(self, raws: list[dict], listed_done: set[str] | None = None) -> list[TaskRecord]:
        """`listed_done`: ids known completed whose raws carry no `completed` (a listing): their state
        follows model.normalize_record's rules as for any completed record, their times stay None."""
        out = []
        for raw in raws:
            if listed_done and raw.get("msg_id") in listed_done:
                rec = normalize_record({**raw, "completed": _LISTED_DONE}, self._engine_ids)
                rec.completed = None
            else:
                rec = normalize_record(raw, self._engine_ids)
            if not rec.msg_id:
                continue
            self._mark_running(rec)
            if rec.engine_uuid and rec.engine_id is not None and rec.engine_uuid not in self._engine_ids:
                self._engine_ids[rec.engine_uuid] = rec.engine_id  # a dead engine named by an error
            out.append(rec)
        return out

    def _mark_running(self, rec: TaskRecord) -> None:
        """Pending + seen busy on IOPub -> running (queued cannot be told: a fresh SUB misses history)."""
        if self._iopub is not None and rec.state.is_pending:
            rec.state = State.RUNNING if rec.msg_id in self._running else State.PENDING

    def _running_changes(self) -> list[TaskRecord]:
        out = []
        for msg_id in self._pending:
            rec = self._records.get(msg_id)
            if rec is None:
                continue
            copy = dataclasses.replace(rec)
            self._mark_running(copy)
            if copy.state is not rec.state:
                out.append(copy)
        return out

    def _remember(self, records: list[TaskRecord], cursors: bool = True) -> list[TaskRecord]:
        """Keep these records; return those that are new or changed. `cursors=False`: they do not move
        W_s/W_r (backfilled times were read at various moments: a later `received` of one of them
        could pass a completion not seen yet)."""
        changed = []
        for rec in records:
            if self._records.get(rec.msg_id) == rec:
                continue
            self._records[rec.msg_id] = rec
            if rec.state.is_pending:
                self._pending.add(rec.msg_id)
            else:
                self._pending.discard(rec.msg_id)
            if cursors:
                if rec.submitted is not None and (self._submitted_wm is None or rec.submitted > self._submitted_wm):
                    self._submitted_wm = rec.submitted
                if rec.received is not None and (self._received_wm is None or rec.received > self._received_wm):
                    self._received_wm = rec.received
            changed.append(rec)
        return changed

    def _forget(self, ids) -> list[str]:
        gone = []
        for msg_id in ids:
            if self._records.pop(msg_id, None) is not None:
                gone.append(msg_id)
            self._pending.discard(msg_id)
            self._unfilled.discard(msg_id)
        return gone

    def _fetch_chunks(self, ids) -> Iterator[tuple[int, list[TaskRecord]]]:
        """Light records of `ids` by primary key, in chunks sized so that one request stays near
        TARGET_REQUEST_SECONDS of Hub time (the Hub is single-threaded; on SQLite it spends ~0.5-1 ms
        per record converting dates and JSON, whatever the history size)."""
        ids = [m for m in dict.fromkeys(ids) if m]
        i = 0
        while i < len(ids):
            chunk = ids[i : i + self._chunk]
            start = time.monotonic()
            raws = self.client.db_query({"msg_id": {"$in": chunk}}, LIGHT_KEYS)
            self._chunk = _adapted(self._chunk, len(chunk), time.monotonic() - start)
            i += len(chunk)
            self._unfilled.difference_update(chunk)  # whole records: nothing left to backfill
            yield len(chunk), self._normalize(raws)

    def _fetch(self, ids) -> list[TaskRecord]:
        return [r for _, records in self._fetch_chunks(ids) for r in records]

    def _full_load(self, engines: list[Engine], queue: QueueStatus, warnings: list[str]) -> Iterator[Delta]:
        if self._backend == "nodb":
            yield Delta(reset=not self._loaded, engines=engines, queue=queue, warnings=warnings)
            self._loaded = True
            return
        self._last_totals = self.client.last_queue_totals
        ids = list(dict.fromkeys(self.client.history()))
        history_date = self.client.last_reply_date
        total = len(ids)
        self._records.clear()
        self._pending.clear()
        self._unfilled.clear()
        self._backfill, self._backfill_pos, self._backfill_total = [], 0, 0
        yield Delta(reset=True, loading=bool(ids), engines=engines, queue=queue, done=0, total=total,
                    warnings=warnings)
        if self._backend == "sqlite" and self.fast_load and total > self._chunk:
            yield from self._list_load(ids, history_date, queue)
        else:
            done = 0
            for n, records in self._fetch_chunks(ids):
                self._remember(records)
                done += n
                last = done >= total
                yield Delta(upserts=records, loading=not last, done=done, total=total,
                            engines=self._engine_list(queue) if last else None)
        self._loaded = True
        self._last_reconcile = self._clock()

    def _list_load(self, ids: list[str], history_date: datetime | None, queue: QueueStatus) -> Iterator[Delta]:
        """Phase 1 of a SQLite first load: whole records for the newest chunk (the top of the default
        sort, and W_s), then every other task listed with its state but without its times, newest first."""
        total = len(ids)
        newest = ids[::-1]
        head = newest[: self._chunk]
        done = 0
        for n, records in self._fetch_chunks(head):
            self._remember(records)
            done += n
            yield Delta(upserts=records, loading=True, done=done, total=total)
        # W_r: the Hub's clock before any "still pending?" question below, so any completion we
        # have not seen has a later `received` (the Hub writes completed and received in one update).
        if history_date is not None and (self._received_wm is None or history_date < self._received_wm):
            self._received_wm = history_date
        rest = newest[len(head):]
        # The next chunk is read (one thread, one request at a time) while the caller stores this one:
        # the Hub's work and ours overlap instead of adding up.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubtop-listing")
        try:
            i = 0
            chunk = rest[: self._list_chunk]
            future: Future | None = pool.submit(self._listed, chunk)
            while future is not None:
                records = future.result()
                i += len(chunk)
                done += len(chunk)
                last = i >= len(rest)
                self._remember(records, cursors=False)
                self._unfilled.update(r.msg_id for r in records)
                future = None
                if not last:
                    chunk = rest[i : i + self._list_chunk]
                    future = pool.submit(self._listed, chunk)
                yield Delta(upserts=records, loading=not last, done=done, total=total,
                            engines=self._engine_list(queue) if last else None)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        self._backfill = [m for m in rest if m in self._unfilled]
        self._backfill_pos = 0
        self._backfill_total = len(self._backfill)

    def _listed(self, chunk: list[str]) -> list[TaskRecord]:
        """The records of `chunk` without their times (phase 1)."""
        # pending first: a task completing between the two requests is then listed as pending
        # (and found by the next delta or its backfill), never as completed without a result.
        pending = self.client.db_query({"msg_id": {"$in": chunk}, "completed": {"$eq": None}}, ["msg_id"])
        start = time.monotonic()
        raws = self.client.db_query({"msg_id": {"$in": chunk}}, LIST_KEYS)
        self._list_chunk = _adapted(self._list_chunk, len(chunk), time.monotonic() - start)
        done_ids = set(chunk).difference(str(r.get("msg_id")) for r in pending)
        return self._normalize(raws, listed_done=done_ids)

    @property
    def backfill_progress(self) -> tuple[int, int] | None:
        """(done, total) while the times of a two-phase first load are being filled in, else None."""
        if not self._unfilled:
            return None
        return self._backfill_total - len(self._unfilled), self._backfill_total

    def _backfill_step(self) -> Iterator[Delta]:
        """Phase 2: the times of listed records, newest first, a few chunks per sync. Budget: the Hub
        is kept busy at most BACKFILL_DUTY of the wall time (measured from the end of the previous
        sync), and at most BACKFILL_MAX_SYNC per sync."""
        if not self._unfilled:
            return
        gap = 0.0 if self._last_sync_end is None else time.monotonic() - self._last_sync_end
        budget = min(BACKFILL_MAX_SYNC, gap * BACKFILL_DUTY / (1 - BACKFILL_DUTY))
        spent = 0.0
        while self._unfilled:
            # as many ids as the budget left affords at the last measured cost (at least MIN_CHUNK once
            # per ordinary poll, so that one slow request cannot stall the backfill for good)
            size = min(self._chunk, int((budget - spent) / self._backfill_cost))
            if size < MIN_CHUNK:
                if spent or budget < BACKFILL_MIN_BUDGET:
                    break
                size = MIN_CHUNK
            chunk: list[str] = []
            while self._backfill_pos < len(self._backfill) and len(chunk) < size:
                msg_id = self._backfill[self._backfill_pos]
                self._backfill_pos += 1
                if msg_id in self._unfilled:
                    chunk.append(msg_id)
            if not chunk:
                self._unfilled.clear()  # every listed id was visited
                self._backfill, self._backfill_pos = [], 0
                break
            start = time.monotonic()
            raws = self.client.db_query({"msg_id": {"$in": chunk}}, TIME_KEYS)
            elapsed = time.monotonic() - start
            self._chunk = _adapted(self._chunk, len(chunk), elapsed)
            self._backfill_cost = elapsed / len(chunk)
            self._unfilled.difference_update(chunk)
            filled: list[TaskRecord] = []
            moved: list[str] = []
            for raw in raws:
                rec = self._records.get(str(raw.get("msg_id")))
                if rec is None:
                    continue  # purged since: reconciliation tells
                completed = parse_time(raw.get("completed"))
                if (completed is None) != rec.state.is_pending:
                    moved.append(rec.msg_id)  # completed since it was listed: fetched whole below
                    continue
                engine_id = rec.engine_id
                if engine_id is None and rec.engine_uuid:
                    engine_id = self._engine_ids.get(rec.engine_uuid)  # learnt since from another task's error
                filled.append(dataclasses.replace(
                    rec, submitted=parse_time(raw.get("submitted")), started=parse_time(raw.get("started")),
                    completed=completed, received=parse_time(raw.get("received")), engine_id=engine_id))
            if moved:  # real changes of the tasks, told apart from the fill (`hubtop watch` reports them)
                start = time.monotonic()
                changed = self._remember(self._fetch(moved), cursors=False)
                spent += time.monotonic() - start
                if changed:
                    yield Delta(upserts=changed)
            spent += elapsed
            upserts = self._remember(filled, cursors=False)
            done, total = self._backfill_total - len(self._unfilled), self._backfill_total
            if not self._unfilled:
                self._backfill, self._backfill_pos = [], 0
            yield Delta(upserts=upserts, filling=(done, total))

    def _delta(self, engines: list[Engine], queue: QueueStatus, warnings: list[str]) -> Delta:
        client = self.client
        now = self._clock()
        totals, previous = client.last_queue_totals, self._last_totals
        self._last_totals = totals
        candidates: set[str] = set()
        if totals != previous or totals is None:  # something was submitted, assigned or finished
            if self._submitted_wm is None:
                self._last_reconcile = float("-inf")  # nothing known yet: history tells (below)
            else:
                since = _iso(self._submitted_wm - SUBMITTED_MARGIN)
                raws = client.db_query({"submitted": {"$ne": None, "$gte": since}}, ["msg_id"])
                candidates |= {str(r["msg_id"]) for r in raws if r.get("msg_id") not in self._records}
            finished = previous is None or totals is None or totals[0] != previous[0]
            if finished and self._pending:
                if len(self._pending) <= PENDING_REFETCH_MAX or self._received_wm is None:
                    candidates |= self._pending
                else:
                    since = _iso(self._received_wm - RECEIVED_MARGIN)
                    raws = client.db_query({"received": {"$ne": None, "$gte": since}}, ["msg_id"])
                    candidates |= {
                        str(r["msg_id"]) for r in raws if r.get("msg_id") in self._pending or r.get("msg_id") not in self._records
                    }
        in_flight = queue.unassigned + sum(e.queue + e.tasks for e in queue.engines.values())
        if self._pending and in_flight < len(self._pending) and now - self._last_pending_check >= PENDING_RECHECK_EVERY:
            candidates |= self._pending  # finished without a `received` (engine died) or orphaned
            self._last_pending_check = now
        with self._action_lock:
            candidates |= self._refetch
            self._refetch = set()
        fetched = self._fetch(candidates) if candidates else []
        # Copies made by someone else's resubmit: refresh their originals' `resubmitted` field.
        copies = [
            r.msg_id
            for r in fetched
            if r.msg_id not in self._records and r.client and not r.msg_id.startswith(f"{r.client}_")
        ]
        for chunk in chunks(copies):
            originals = client.db_query({"resubmitted": {"$in": chunk}}, ["msg_id"])
            fetched += self._fetch(o["msg_id"] for o in originals if o.get("msg_id") not in candidates)
        fetched += self._running_changes()
        with self._action_lock:
            purged, self._purged = self._purged, set()
        removed = self._forget(purged)
        if now - self._last_reconcile >= max(self.reconcile_every, 60 * self._history_seconds):
            gone, missing = self._reconcile()
            if gone:
                n = len(gone)
                warnings.append(f"{n} record{'s' if n != 1 else ''} disappeared since the last poll")
                removed += gone
            fetched += self._fetch(missing) if missing else []
        upserts = self._remember(fetched)
        running = self._running & self._pending if self._iopub is not None else None
        return Delta(upserts=upserts, removed=removed, engines=engines, queue=queue, warnings=warnings,
                     running=running)

    def _reconcile(self) -> tuple[list[str], list[str]]:
        start = time.monotonic()
        history = self.client.history()
        self._history_seconds = time.monotonic() - start
        self._last_reconcile = self._clock()
        current = set(history)
        gone = self._forget([m for m in self._records if m not in current])
        missing = [m for m in history if m not in self._records]
        return gone, missing

    # -- detail and actions --------------------------------------------------------------------

    def _check_stores(self, what: str) -> None:
        if self._backend == "nodb":
            raise ActionRefused(f"cannot {what}: {NODB_WARNING}")

    def detail(self, msg_id: str) -> TaskDetail:
        self._check_stores("show task details")
        raws = self.client.db_query({"msg_id": {"$in": [msg_id]}}, DETAIL_KEYS)
        if not raws:
            raise SourceError(f"task {msg_id} is not in the Hub's database (purged or culled?)")
        raw = raws[0]
        resubmitted_from = None
        header = raw.get("header") if isinstance(raw.get("header"), dict) else None
        if is_resubmitted_copy(msg_id, header) or (header is None and raw.get("queue") == "task"):
            parents = self.client.db_query({"resubmitted": {"$eq": msg_id}}, ["msg_id"])
            if parents:
                resubmitted_from = str(parents[0]["msg_id"])
        return normalize_detail(raw, self._engine_ids, resubmitted_from=resubmitted_from)

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        self._check_stores("resubmit")
        if not msg_ids:
            return {}
        mapping = self.client.resubmit(msg_ids)
        with self._action_lock:
            self._refetch |= set(mapping) | set(mapping.values())
        return mapping

    def purge(self, msg_ids: list[str]) -> int:
        self._check_stores("purge")
        ids = [m for m in dict.fromkeys(msg_ids) if m]
        if not ids:
            return 0
        pending = [m for m in ids if m in self._pending]
        if pending:
            raise ActionRefused(
                f"refusing to purge {len(pending)} pending task{'s' if len(pending) != 1 else ''} "
                f"(first: {pending[0]}): wait for them to finish"
            )
        try:
            n = self.client.purge(ids)
        except ActionRefused:
            raise
        except HubError as exc:
            raise ActionRefused(str(exc)) from None
        with self._action_lock:
            self._purged |= set(ids)
        return n
