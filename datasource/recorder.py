"""`--record FILE`: keep every state change hubtop sees in a local SQLite file, for replay and post-mortems.

Hooked into the poll loop as `Poller(source, store, on_delta=recorder.write)`. The file is append-only:

* `meta`      key/value: format name, schema version, creation time;
* `sessions`  one row per hubtop run that recorded into the file: source name, kind, backend, hubtop version;
* `polls`     one row per recorded Delta: wall-clock time, reset/loading flags, engines / queue counts
              (only when they changed since the previous row, NULL = unchanged), warnings, and
              `fill_done` / `fill_total`: `Delta.filling` (NULL: not a fill delta);
* `tasks`     the light fields of every upserted TaskRecord, one row per (poll, task), in the store's
              column contract (docs/architecture.md), times as UTC epoch seconds;
* `removed`   the msg_ids a poll removed.

The first load is recorded in full (the state at start), then only deltas; polls that changed nothing
are not recorded. Heavy fields (stdout, tracebacks, code) are never recorded.

Writes are cheap: one transaction per delta, `executemany`, WAL journal, `synchronous=NORMAL` (no fsync
per poll: a power cut may lose the last polls, never corrupt the file). A failing write (disk full, file
removed) never breaks polling: recording stops, the poll's warnings say so once.

Versioning: `SCHEMA_VERSION` moves only when an older hubtop would misread a file. An additive change (a
new nullable column whose NULL means what older files meant) keeps it: older hubtops name their columns
and never see it, and this hubtop adds it to an older file it appends to and reads its absence as NULL.
`fill_done` / `fill_total` are such a change (a file without them replays a fill as ordinary changes).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .model import Engine, QueueStatus, State, TaskRecord, from_epoch, to_epoch
from .sources.base import Capabilities, Delta, NotATaskDatabase, Source, SourceError
from .store import COLUMNS

__all__ = [
    "Recorder",
    "RecordingSource",
    "FORMAT",
    "SCHEMA_VERSION",
    "TASK_COLUMNS",
    "ADDED_POLL_COLUMNS",
    "poll_columns",
    "open_recording",
    "record_to_row",
    "row_to_record",
    "engines_to_json",
    "engines_from_json",
    "queue_to_json",
    "queue_from_json",
    "hubtop_version",
]

log = logging.getLogger("hubtop")

FORMAT = "hubtop-recording"
SCHEMA_VERSION = 1

# The store's column contract (docs/architecture.md), in order. A change here needs a new SCHEMA_VERSION.
TASK_COLUMNS: tuple[str, ...] = COLUMNS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    source_name TEXT,
    kind TEXT,
    backend TEXT,
    hubtop_version TEXT,
    capabilities TEXT
);
CREATE TABLE IF NOT EXISTS polls (
    id INTEGER PRIMARY KEY,
    session INTEGER NOT NULL,
    t REAL NOT NULL,
    reset INTEGER NOT NULL DEFAULT 0,
    loading INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    engines TEXT,
    queue TEXT,
    warnings TEXT,
    running TEXT,
    upserts INTEGER NOT NULL DEFAULT 0,  -- this poll's task rows are rowid first_task .. first_task + upserts - 1
    first_task INTEGER,
    removals INTEGER NOT NULL DEFAULT 0,  -- and its removed rows: rowid first_removed .. + removals - 1
    first_removed INTEGER,
    fill_done INTEGER,  -- Delta.filling of a two-phase load's second phase; NULL: not a fill delta
    fill_total INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    poll INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    state TEXT NOT NULL,
    engine_uuid TEXT,
    engine_id INTEGER,
    queue TEXT,
    label TEXT,
    client TEXT,
    submitted REAL,
    started REAL,
    completed REAL,
    received REAL,
    duration REAL,
    ename TEXT,
    evalue TEXT,
    resubmitted TEXT,
    stdout_size INTEGER,
    stderr_size INTEGER,
    run TEXT
);
CREATE INDEX IF NOT EXISTS tasks_msg_poll ON tasks (msg_id, poll);
CREATE TABLE IF NOT EXISTS removed (poll INTEGER NOT NULL, msg_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS removed_msg ON removed (msg_id, poll);
"""

# Columns added to `polls` after format 1 was released (additive: no new SCHEMA_VERSION, see above).
ADDED_POLL_COLUMNS: tuple[tuple[str, str], ...] = (("fill_done", "INTEGER"), ("fill_total", "INTEGER"))

_INSERT_TASK = f"INSERT INTO tasks (poll, {', '.join(TASK_COLUMNS)}) VALUES ({', '.join('?' * (len(TASK_COLUMNS) + 1))})"


def hubtop_version() -> str:
    try:
        return metadata.version("hubtop")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- row conversions (shared with the replay source) ---------------------------------------------


def record_to_row(r: TaskRecord) -> tuple:
    return (
        r.msg_id, r.state.value, r.engine_uuid, r.engine_id, r.queue, r.label, r.client,
        to_epoch(r.submitted), to_epoch(r.started), to_epoch(r.completed), to_epoch(r.received),
        r.duration, r.ename, r.evalue, r.resubmitted, r.stdout_size, r.stderr_size, r.run,
    )


def row_to_record(row: Sequence) -> TaskRecord:
    (msg_id, state, engine_uuid, engine_id, queue, label, client, submitted, started, completed, received,
     _duration, ename, evalue, resubmitted, stdout_size, stderr_size, run) = row
    try:
        st = State(state)
    except ValueError:
        st = State.PENDING
    return TaskRecord(
        msg_id=msg_id, state=st, engine_uuid=engine_uuid, engine_id=engine_id, queue=queue, label=label,
        client=client, submitted=from_epoch(submitted), started=from_epoch(started), completed=from_epoch(completed),
        received=from_epoch(received), ename=ename, evalue=evalue, resubmitted=resubmitted,
        stdout_size=stdout_size, stderr_size=stderr_size, run=run,
    )


def _engine_list(e: Engine) -> list:
    return [e.uuid, e.id, bool(e.alive), e.queue, e.tasks, e.completed]


def _engine_of(item: Any) -> Engine | None:
    if not isinstance(item, list) or len(item) != 6 or not isinstance(item[0], str):
        return None
    uuid, eid, alive, queue, tasks, completed = item
    return Engine(uuid, eid if isinstance(eid, int) else None, bool(alive), int(queue or 0), int(tasks or 0),
                  int(completed or 0))


def engines_to_json(engines: Iterable[Engine] | None) -> str | None:
    return None if engines is None else json.dumps([_engine_list(e) for e in engines], separators=(",", ":"))


def engines_from_json(text: str | None) -> list[Engine] | None:
    if text is None:
        return None
    return [e for e in (_engine_of(i) for i in json.loads(text)) if e is not None]


def queue_to_json(queue: QueueStatus | None) -> str | None:
    if queue is None:
        return None
    engines = [[eid, *_engine_list(e)] for eid, e in sorted(queue.engines.items(), key=lambda kv: kv[0])]
    return json.dumps({"unassigned": queue.unassigned, "engines": engines}, separators=(",", ":"))


def queue_from_json(text: str | None) -> QueueStatus | None:
    if text is None:
        return None
    raw = json.loads(text)
    status = QueueStatus(unassigned=int(raw.get("unassigned") or 0))
    for item in raw.get("engines") or []:
        engine = _engine_of(item[1:]) if isinstance(item, list) and item else None
        if engine is not None and isinstance(item[0], int):
            status.engines[item[0]] = engine
    return status


# -- opening / checking a recording file -----------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_recording(path: str | os.PathLike, *, write: bool = False, check: bool = True) -> sqlite3.Connection:
    """Open an existing recording (or, with write=True, a new or existing one) and check it is ours.

    Raises NotATaskDatabase for a foreign, truncated or corrupt file, SourceError for a newer format.
    """
    path = Path(path)
    if not write and not path.is_file():
        raise SourceError(f"{path}: no such recording file" if not path.exists() else f"{path}: not a file")
    try:
        con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=2.0)
    except sqlite3.Error as exc:
        raise SourceError(f"cannot open {path}: {_one_line(exc)}") from None
    try:
        _check(con, path, write=write, check=check)
    except BaseException:
        con.close()
        raise
    return con


def _check(con: sqlite3.Connection, path: Path, *, write: bool, check: bool) -> None:
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        if "malformed" in str(exc):
            raise NotATaskDatabase(f"{path} is a truncated or corrupt SQLite file ({_one_line(exc)})") from None
        raise NotATaskDatabase(f"{path} is not a hubtop recording ({_one_line(exc)})") from None
    if not tables and write:
        return  # a new (empty) file: the caller creates the schema
    if "meta" not in tables:
        hint = " (it looks like an ipyparallel tasks.db: open it without 'replay')" if any(
            t.startswith("ipython-tasks") for t in tables) else ""
        raise NotATaskDatabase(f"{path} is not a hubtop recording{hint}")
    try:
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise NotATaskDatabase(f"{path} is not a hubtop recording ({_one_line(exc)})") from None
    if meta.get("format") != FORMAT:
        raise NotATaskDatabase(f"{path} is not a hubtop recording (format {meta.get('format')!r})")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise NotATaskDatabase(f"{path} is a damaged hubtop recording (bad schema version)") from None
    if version > SCHEMA_VERSION:
        raise SourceError(
            f"{path} was recorded by a newer hubtop (recording format {version}; this hubtop reads up to "
            f"{SCHEMA_VERSION}): upgrade hubtop to replay it"
        )
    missing = {"sessions", "polls", "tasks", "removed"} - tables
    if missing:
        raise NotATaskDatabase(f"{path} is a damaged hubtop recording (missing table {', '.join(sorted(missing))})")
    if check:
        try:
            result = con.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise NotATaskDatabase(f"{path} is a truncated or corrupt recording ({_one_line(exc)})") from None
        if result != [("ok",)]:
            first = str(result[0][0]) if result else "unknown damage"
            raise NotATaskDatabase(f"{path} is a truncated or corrupt recording ({' '.join(first.split())})")


def poll_columns(con: sqlite3.Connection) -> set[str]:
    """The columns of a recording's `polls` table (an older file lacks ADDED_POLL_COLUMNS)."""
    return {row[1] for row in con.execute("PRAGMA table_info(polls)")}


# -- the recorder ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """A delta waiting for the writer thread, with what was captured when the poll handed it over."""

    t: float
    delta: Delta
    upserts: list[TaskRecord]
    removed: list[str]
    warnings: list[str]
    engines: str | None
    queue: str | None
    running: str | None
    filling: tuple[int, int] | None


class Recorder:
    """Appends every Delta it is given to a recording file. `write` is the Poller's `on_delta` hook.

    `write` only queues the delta (the poll thread never waits for the disk); a writer thread of its own
    records it, one transaction per delta, once the poll loop has been quiet for `quiet` seconds (turning
    records into rows holds the GIL: done while the poll thread works, it would slow the poll down). The
    queue is bounded (`backlog` deltas): past half of it the writer stops waiting for quiet, and if the
    disk cannot keep up, `write` blocks rather than holding an unbounded backlog in memory. `flush()`
    waits until everything queued is on file; `close()` flushes, checkpoints the WAL into the file and
    closes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        source: Source | None = None,
        *,
        clock: Callable[[], float] = time.time,
        backlog: int = 64,
        quiet: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self.source = source
        self.clock = clock  # wall clock (epoch seconds): the time axis of the replay
        self.error: str | None = None  # set when recording stopped because a write failed
        self.deltas_written = 0
        self.rows_written = 0
        self.seconds_writing = 0.0  # writer thread time, for the overhead report
        self._error_reported = False
        self.quiet = quiet
        self._backlog = max(1, backlog)
        self._last_put = 0.0
        self._closing = False
        self._session: int | None = None
        self._last_engines: str | None = None
        self._last_queue: str | None = None
        self._last_running: str | None = None
        self._in_load = False  # the last recorded delta said more of its load follows
        if self.path.is_dir():
            raise SourceError(f"cannot record to {self.path}: it is a directory")
        if not self.path.parent.is_dir():
            raise SourceError(f"cannot record to {self.path}: no directory {self.path.parent}")
        try:
            self._db: sqlite3.Connection | None = open_recording(self.path, write=True, check=False)
        except NotATaskDatabase:
            raise SourceError(
                f"cannot record to {self.path}: the file exists and is not a hubtop recording (not overwriting it)"
            ) from None
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("BEGIN IMMEDIATE")
            have = poll_columns(self._db)
            for column, kind in ADDED_POLL_COLUMNS:  # an older recording appended to
                if column not in have:
                    self._db.execute(f"ALTER TABLE polls ADD COLUMN {column} {kind}")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (repr(self.clock()),))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.close()
            self._db = None
            raise SourceError(f"cannot record to {self.path}: {_one_line(exc)}") from None
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=self._backlog)
        self._idle = threading.Condition()
        self._unwritten = 0
        self._thread = threading.Thread(target=self._run, name=f"hubtop-recorder {self.path.name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Recorder({str(self.path)!r}, deltas={self.deltas_written})"

    @property
    def recording(self) -> bool:
        return self._db is not None and self.error is None

    # -- the poll thread -----------------------------------------------------------------------

    def write(self, delta: Delta) -> None:
        """Queue one delta for recording. Never raises; after a failed write, the next poll's warnings
        say once that recording stopped (the Poller reads a delta's warnings after `on_delta`)."""
        self.report_error(delta)
        if self._db is None or self.error is not None:
            return
        # What is small and may be shared with the source (engines, queue counts) is captured now, with the
        # poll's time; the records are turned into rows later, by the writer (sources never change a record
        # they yielded: they copy first).
        item = _Pending(
            t=self.clock(),
            delta=delta,
            upserts=list(delta.upserts),
            removed=list(delta.removed),
            warnings=list(delta.warnings),
            engines=engines_to_json(delta.engines),
            queue=queue_to_json(delta.queue),
            running=None if delta.running is None else json.dumps(sorted(delta.running), separators=(",", ":")),
            filling=delta.filling,
        )
        with self._idle:
            self._unwritten += 1
        self._last_put = time.monotonic()
        self._queue.put(item)

    def report_error(self, delta: Delta) -> None:
        """Add "recording stopped: ..." to this delta's warnings, once, if a write failed."""
        if self.error is not None and not self._error_reported:
            self._error_reported = True
            delta.warnings.append(self.error)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every queued delta is recorded (or recording failed). False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unwritten == 0, timeout)

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._wait_for_quiet()
            start = time.perf_counter()
            try:
                if self.error is None and self._db is not None:
                    self._write(self._db, item)
            except Exception as exc:  # disk full, file deleted, ...: polling goes on, recording stops
                self.error = f"recording to {self.path} stopped: {_one_line(exc)}"
                log.warning("%s", self.error, exc_info=not isinstance(exc, (sqlite3.Error, OSError)))
            finally:
                self.seconds_writing += time.perf_counter() - start
                with self._idle:
                    self._unwritten -= 1
                    self._idle.notify_all()

    def _wait_for_quiet(self) -> None:
        while self._queue.qsize() < self._backlog // 2:
            idle = time.monotonic() - self._last_put
            if idle >= self.quiet or self._closing:
                return
            time.sleep(self.quiet - idle)

    def _start_session(self, db: sqlite3.Connection, now: float) -> int:
        name = kind = backend = None
        caps_json = None
        if self.source is not None:
            name = self.source.name
            try:
                caps: Capabilities = self.source.capabilities()
                kind, backend = caps.kind, caps.backend
                caps_json = json.dumps({
                    "has_engines": caps.has_engines,
                    "knows_running": caps.knows_running,
                    "stores_tasks": caps.stores_tasks,
                    "warnings": list(caps.warnings),
                })
            except Exception:  # a source that cannot say: record what we know
                log.exception("capabilities of %s", name)
        cur = db.execute(
            "INSERT INTO sessions (started, source_name, kind, backend, hubtop_version, capabilities) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (now, name, kind, backend, hubtop_version(), caps_json),
        )
        return int(cur.lastrowid)

    def _write(self, db: sqlite3.Connection, item: "_Pending") -> None:
        delta = item.delta
        engines = item.engines
        if engines is not None and engines == self._last_engines:
            engines = None  # unchanged since the previous row: NULL means "unchanged"
        queue_json = item.queue
        if queue_json is not None and queue_json == self._last_queue:
            queue_json = None
        running = item.running
        if running is not None and running == self._last_running:
            running = None
        if not (item.upserts or item.removed or item.warnings or delta.reset or delta.loading or self._in_load
                or engines is not None or queue_json is not None or running is not None or item.filling is not None):
            # nothing changed: not a state change (but the delta ending a load is: the state is complete; and a
            # fill delta moves the fill's progress even when it filled no record, e.g. the one that ends it)
            return
        now = item.t
        fill = item.filling if item.filling is not None else (None, None)
        db.execute("BEGIN IMMEDIATE")  # the write lock first: this poll's rows get consecutive rowids
        try:
            if self._session is None:
                self._session = self._start_session(db, now)
            first_task = first_removed = None
            if item.upserts:
                first_task = db.execute("SELECT coalesce(max(rowid), 0) + 1 FROM tasks").fetchone()[0]
            if item.removed:
                first_removed = db.execute("SELECT coalesce(max(rowid), 0) + 1 FROM removed").fetchone()[0]
            cur = db.execute(
                "INSERT INTO polls (session, t, reset, loading, done, total, engines, queue, warnings, running, "
                "upserts, first_task, removals, first_removed, fill_done, fill_total) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self._session, now, int(delta.reset), int(delta.loading), delta.done, delta.total, engines,
                 queue_json, json.dumps(item.warnings) if item.warnings else None, running,
                 len(item.upserts), first_task, len(item.removed), first_removed, *fill),
            )
            poll = cur.lastrowid
            if item.upserts:
                db.executemany(_INSERT_TASK, [(poll, *record_to_row(r)) for r in item.upserts])
            if item.removed:
                db.executemany("INSERT INTO removed (poll, msg_id) VALUES (?, ?)", [(poll, m) for m in item.removed])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if engines is not None:
            self._last_engines = engines
        if queue_json is not None:
            self._last_queue = queue_json
        if running is not None:
            self._last_running = running
        self._in_load = bool(delta.loading)
        self.deltas_written += 1
        self.rows_written += len(item.upserts)

    # -- closing -------------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Record what is queued (up to `timeout`), checkpoint the WAL into the file, close."""
        if self._db is None:
            return
        self._closing = True
        self.flush(timeout)
        self._queue.put(None)
        self._thread.join(timeout)
        db, self._db = self._db, None
        if self._thread.is_alive():
            log.warning("recording %s: writer still busy after %g s; closing anyway", self.path, timeout)
            return  # the writer thread owns the connection: leave it, the WAL keeps what was committed
        try:
            db.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        except sqlite3.Error as exc:  # another reader holds the WAL: the last closer checkpoints it
            log.info("recording %s left in WAL mode: %s", self.path, _one_line(exc))
        finally:
            db.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingSource:
    """A Source that records every delta of the source it wraps (`hubtop --record FILE`).

    For callers that cannot hand the Poller an `on_delta` hook (the dashboard builds its own Poller):
    a delta is queued for the Recorder once the consumer has applied it and asks for the next one (so a
    delta the store refused is not recorded either), and a "recording stopped" warning rides on the
    next delta yielded. Everything else is the wrapped source's; `close()` closes both.
    """

    def __init__(self, source: Source, path: str | os.PathLike, *, clock: Callable[[], float] = time.time) -> None:
        if source is None:
            raise SourceError("--record needs a SOURCE to record: name the cluster or database to watch")
        self.inner = source
        self.recorder = Recorder(path, source, clock=clock)

    @property
    def name(self) -> str:
        return self.inner.name

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def open(self) -> None:
        self.inner.open()

    def sync(self) -> Iterator[Delta]:
        for delta in self.inner.sync():
            self.recorder.report_error(delta)
            yield delta
            self.recorder.write(delta)  # once the poller applied it (it asks for the next one after that)

    def detail(self, msg_id: str):
        return self.inner.detail(msg_id)

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        return self.inner.resubmit(msg_ids)

    def purge(self, msg_ids: list[str]) -> int:
        return self.inner.purge(msg_ids)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.recorder.close()

    def __getattr__(self, attr: str) -> Any:  # backend, client, path...: whatever the wrapped source has
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)
