"""`SQLiteSource`: the Hub's `tasks.db`, read directly and read-only, every `ipython-tasks*` table.

Reading rules (spec §10.3): the Hub commits every 2 s and needs an EXCLUSIVE lock to do so, so this reader
opens the file `mode=ro` in autocommit, never BEGINs, runs short statements (`LIMIT 20000` chunks by rowid)
and `fetchall()`s at once so no SHARED lock outlives a call; it never reads `buffers`/`result_buffers`
and never changes the journal mode. `database is locked` is retried quietly at the next sync;
`SourceUnavailable` only after `LOCKED_LIMIT` failed syncs in a row.

Tables: a 9.2 Hub creates a new `ipython-tasks_N` at every start. All are read; the numerically newest is
the live one (`TaskRecord.run = None`), older ones are earlier runs (`run` = the table name). Tables with
the pre-9.1 22-column layout (no `label`) are read too.

First load: the light columns only, normalized in SQL where that is cheap (lengths of stdout/stderr,
`json_extract` of the status, ename, evalue and engine id, the label fallback to `metadata.label`),
dates parsed in Python with `datetime.fromisoformat` (the stored text is `isoformat()` output, which it
reads exactly; anything else falls back to `model.parse_time`). Rows the fast path cannot decide exactly
(completed with no known status, failures without a text `ename`) go through `model.normalize_record`.
The newest table is loaded first and each table from its newest rowid down, so the first page (newest
submitted first) is right after the first chunk.

Incremental sync, per call:
* `PRAGMA data_version` (per connection) unchanged => no read at all (one tiny statement); the file's
  inode is checked too (a replaced tasks.db => full reload).
* new rows: `rowid > last max rowid` per table; a new table = a new Hub run (the previous live table's
  records are delivered again, in chunks, with `run` set).
* changed rows: with a paired Hub, re-read (by PK) the Hub's in-flight ids, the ids that left the
  in-flight set (until the DB shows them done: the Hub commits up to 2 s late) and new pending rows the
  Hub does not list. A verbose queue_request also lists every completed id, so past VERBOSE_LIMIT
  completed tasks the Hub is only asked for counts and the slices below are used. Without a Hub: the
  live table's oldest pending rows and a rotating slice of the others (`pending.PendingScan`) per sync;
  older tables' pending rows one such pick per slow sync (every `SLOW_EVERY` syncs that follow a change
  of the file). A cheap read of a few raw columns tells which of them changed (`_changed_rowids`).
* `resubmitted` set on originals: a `WHERE resubmitted IN (copies)` scan when a Hub-made copy appears
  (the Hub writes the copy and the pointer in one commit), plus a full `resubmitted IS NOT NULL` scan of the
  live table at the first slow sync RESUB_SCAN_SECONDS after the previous one (a safety net: ~65 ms per 130k
  rows, which every slow sync of a busy cluster paid).
* deletions: `count(*)`, `max(rowid)` and the msg_id at the max rowid of the live table each changed sync
  (older tables every slow sync); on a mismatch one `SELECT msg_id` of that table tells which ids
  vanished (`Delta.removed` + "N records disappeared since the last poll") and which appeared under a
  reused rowid (SQLite reuses the largest rowid after the newest rows are deleted).
* a lock in the middle of a sync ends it there: what was read before is delivered, the rest is redone at
  the next sync (the data_version watermark only moves after a complete sync).
* running vs pending (paired with a Hub, `knows_running` while its IOPub relay is subscribed): pending rows
  are marked RUNNING as they are built when `paired.PairedHub` has them seen busy; a mark that changes while
  the row does not (a task starts long before its row changes) is upserted from what the table keeps of the
  row (its fingerprint), with no read of the file. A Hub that does not answer is asked again with a backoff
  (paired.py), so the file keeps its pace.
Limits: without a Hub a change to a pending row out of submission order is seen within
ceil(pending / pending.ROTATING) changed syncs; `resubmitted` set on an already-completed row with no new
copy is seen within RESUB_SCAN_SECONDS plus a slow sync; the count check and the slow scans are O(rows)
(~90 ms and ~1-2 s per 1M rows on a busy 2-core machine): above COUNT_EVERY_SYNC rows the live table is
counted only at slow syncs, which come every SLOW_EVERY syncs per 100k rows (1M rows: a deletion by another
client, other than of the newest rows, is seen within ~100 syncs; our own purges at the next sync), and every
scan runs in short rowid spans.
"""

from __future__ import annotations

import bisect
import dataclasses
import gc
import glob
import json
import operator
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..model import (
    DETAIL_KEYS,
    State,
    TaskDetail,
    TaskRecord,
    normalize_detail,
    normalize_record,
    parse_time,
    strip_ansi,
)
from ..priority import lower_this_thread
from .base import ActionRefused, Capabilities, Delta, NotATaskDatabase, SourceError, SourceUnavailable
from .paired import PURGE_REASON, RESUBMIT_REASON, PairedHub, resubmit_via
from .pending import IN_FLIGHT_MAX, PendingScan

__all__ = ["SQLiteSource", "find_tables", "table_order_key"]

CHUNK = 5_000  # rows per SELECT and per store apply during a load: short statements, short store locks
FIRST_CHUNK = 2_000  # the first SELECT of a load is small: the first page shows at once
COUNT_SPAN = 50_000  # rowids per statement of the full-table scans (counting, resubmitted): ~0.05 s each
ID_CHUNK = 500  # ids per `IN (...)` lookup
SLOW_EVERY = 10  # syncs between the periodic scans (older tables, the live table's count)
RESUB_SCAN_SECONDS = 120.0  # at least this long between full `resubmitted` scans of the live table
COUNT_EVERY_SYNC = 100_000  # above this many rows the live table is counted only at the slow syncs
LOCKED_LIMIT = 5  # consecutive locked syncs before SourceUnavailable
WATCH_SECONDS = 10.0  # how long ids that left the Hub's in-flight set are re-read
INTERN_MAX = 50_000  # distinct strings shared between records
STALE_MAX = 2_000  # rows no longer pending kept in a table's pending order before it is rebuilt

_TABLE_RE = re.compile(r"^ipython-tasks(?:_(\d+))?$")
_UTC = timezone.utc
_fromiso = datetime.fromisoformat


def table_order_key(name: str) -> tuple[int, int, str]:
    """ipython-tasks < ipython-tasks_1 < ipython-tasks_2 < ... (numeric); odd names first, by name."""
    m = _TABLE_RE.match(name)
    if not m:
        return (0, 0, name)
    return (1, int(m.group(1) or 0), name)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def find_tables(con: sqlite3.Connection) -> list[str]:
    """Every `ipython-tasks*` table, oldest Hub run first."""
    rows = con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'ipython-tasks%'"
    ).fetchall()
    return sorted((r[0] for r in rows), key=table_order_key)


def _dt(value: Any) -> datetime | None:
    """Stored ISO text -> aware UTC datetime, exactly as model.parse_time, faster for the usual text."""
    if value is None:
        return None
    try:
        d = _fromiso(value)
    except (TypeError, ValueError):
        return parse_time(value)
    tz = d.tzinfo
    if tz is _UTC:
        return d
    if tz is None:
        return d.replace(tzinfo=_UTC)
    return d.astimezone(_UTC)


def _same(key: str, value: str) -> str:
    return value


def _s(value: Any) -> str | None:
    """model._as_str for the values SQLite hands back."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    return value or None


# Columns of the fast light SELECT (indexes used by _build).
_RC = "result_content"
_LIGHT_SQL = """rowid, msg_id, submitted, started, completed, received, nullif(engine_uuid, ''), queue, client_uuid,
 resubmitted, {label},
 coalesce(length(stdout), 0), coalesce(length(stderr), 0),
 CASE WHEN completed IS NOT NULL AND json_valid(result_content) THEN json_extract(result_content, '$.status') END,
 CASE WHEN instr(result_content, '"ename"') AND json_valid(result_content)
      THEN json_extract(result_content, '$.ename') END,
 CASE WHEN instr(result_content, '"evalue"') AND json_valid(result_content)
      THEN json_extract(result_content, '$.evalue') END,
 CASE WHEN instr(result_content, '"engine_id"') AND json_valid(result_content)
       AND json_type(result_content, '$.engine_info.engine_id') = 'integer'
      THEN json_extract(result_content, '$.engine_info.engine_id') END"""
_LABEL_SQL = (
    "coalesce(nullif(label, ''), CASE WHEN metadata IS NOT NULL AND json_valid(metadata) "
    "THEN json_extract(metadata, '$.label') END)"
)
_LEGACY_LABEL_SQL = (
    "CASE WHEN metadata IS NOT NULL AND json_valid(metadata) THEN json_extract(metadata, '$.label') END"
)
# Raw columns for the exact (model.normalize_record) path.
_RAW_KEYS = ("msg_id", "submitted", "client_uuid", "engine_uuid", "started", "completed", "resubmitted",
             "received", "result_content", "queue", "metadata", "error")


# What a table keeps of a pending row's record: its fields as a tuple (the state as its value), equal for equal
# records. A tuple of str/int/float/datetime/None leaves the cyclic GC's lists, a TaskRecord does not: ~95k
# pending TaskRecords (1M tasks) made every full collection of the app ~50 ms longer, every few seconds.
_FP_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord) if f.name != "state")
_FP_GET = operator.attrgetter(*_FP_FIELDS)
_FP = {name: i + 1 for i, name in enumerate(_FP_FIELDS)}  # field -> index in a fingerprint
_FP_MSG_ID, _FP_ENGINE, _FP_STARTED, _FP_RESUB, _FP_OUT, _FP_ERR = (
    _FP[f] for f in ("msg_id", "engine_uuid", "started", "resubmitted", "stdout_size", "stderr_size"))


def _fingerprint(rec: TaskRecord) -> tuple:
    return (rec.state.value,) + _FP_GET(rec)


def _record_of(fp: tuple) -> TaskRecord:
    """The record a fingerprint was taken of (TaskRecord's fields: msg_id, state, then _FP_FIELDS[1:])."""
    return TaskRecord(fp[1], State(fp[0]), *fp[2:])


assert _FP_FIELDS[0] == "msg_id" and [f.name for f in dataclasses.fields(TaskRecord)][1] == "state"


class _IdSet:
    """The msg_ids of one table, compactly: a Hub-era msg_id is `<session>_<pid>_<counter>`, kept as an int
    under its shared prefix (~50 bytes per id instead of ~130 for a set of str: 1M ids, ~80 MB less)."""

    __slots__ = ("_groups", "_other")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._groups: dict[str, set[int]] = {}
        self._other: set[str] = set()
        self.update(ids)

    @staticmethod
    def _split(msg_id: str) -> tuple[str | None, Any]:
        head, sep, tail = msg_id.rpartition("_")
        if sep and tail.isascii() and tail.isdigit() and (tail == "0" or tail[0] != "0"):
            return head, int(tail)
        return None, msg_id

    def add(self, msg_id: str) -> None:
        head, key = self._split(msg_id)
        if head is None:
            self._other.add(key)
        else:
            group = self._groups.get(head)
            if group is None:
                group = self._groups[head] = set()
            group.add(key)

    def update(self, ids: Iterable[str]) -> None:
        for m in ids:
            self.add(m)

    def discard(self, msg_id: str) -> None:
        head, key = self._split(msg_id)
        if head is None:
            self._other.discard(key)
        elif head in self._groups:
            self._groups[head].discard(key)

    def __contains__(self, msg_id: object) -> bool:
        if not isinstance(msg_id, str):
            return False
        head, key = self._split(msg_id)
        if head is None:
            return key in self._other
        group = self._groups.get(head)
        return group is not None and key in group

    def __len__(self) -> int:
        return len(self._other) + sum(len(g) for g in self._groups.values())

    def __iter__(self) -> Iterator[str]:
        yield from self._other
        for head, group in self._groups.items():
            for key in group:
                yield f"{head}_{key}"

    def __sub__(self, other: Iterable[str]) -> set[str]:
        other = other if isinstance(other, (set, frozenset)) else set(other)
        return {m for m in self if m not in other}

    def __isub__(self, other: Iterable[str]) -> "_IdSet":
        for m in other:
            self.discard(m)
        return self


@dataclass
class _Table:
    name: str
    columns: frozenset[str]
    run: str | None = None
    max_rowid: int = 0
    top_msg_id: str | None = None  # msg_id at max_rowid, to notice a reused rowid
    count: int = 0
    ids: _IdSet = field(default_factory=_IdSet)
    pending: dict[int, str] = field(default_factory=dict)  # rowid -> msg_id of known pending rows
    pending_recs: dict[int, tuple] = field(default_factory=dict)  # rowid -> _fingerprint of its record
    pending_rowid: dict[str, int] = field(default_factory=dict)  # msg_id -> rowid
    resubmitted: dict[str, str] = field(default_factory=dict)  # original msg_id -> copy
    scan: PendingScan = field(default_factory=PendingScan)  # which pending rows to re-read without a Hub
    suspect: bool = False  # a re-read missed a row: check deletions at the next sync
    # The pending rowids in ascending order, kept across syncs (sorting ~100k of them every sync cost ~5 ms):
    # built at first use, new rows appended; rows that stop being pending stay in it ("stale") until a
    # compaction, so the ~50 completions per sync cost nothing here.
    _order: list[int] | None = None
    _stale: int = 0

    @property
    def has_label(self) -> bool:
        return "label" in self.columns

    def set_pending(self, rowid: int, rec: TaskRecord) -> None:
        order = self._order
        if order is not None and rowid not in self.pending:
            if not order or rowid > order[-1]:
                order.append(rowid)
            else:
                i = bisect.bisect_left(order, rowid)
                if i < len(order) and order[i] == rowid:
                    self._stale -= 1  # a stale entry is live again
                else:
                    order.insert(i, rowid)  # a reused rowid: rare
        self.pending[rowid] = rec.msg_id
        self.pending_recs[rowid] = _fingerprint(rec)
        self.pending_rowid[rec.msg_id] = rowid

    def drop_pending(self, msg_id: str) -> None:
        rowid = self.pending_rowid.pop(msg_id, None)
        if rowid is not None:
            if self.pending.pop(rowid, None) is not None and self._order is not None:
                self._stale += 1
            self.pending_recs.pop(rowid, None)

    def pending_order(self) -> list[int]:
        """The pending rowids, ascending, with at most STALE_MAX stale entries among them (callers skip
        rowids not in `pending`)."""
        if self._order is None or self._stale > STALE_MAX:
            self._order = sorted(self.pending)
            self._stale = 0
        return self._order

    def light_select(self) -> str:
        return _LIGHT_SQL.format(label=_LABEL_SQL if self.has_label else _LEGACY_LABEL_SQL)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC while one chunk is built: 20k rows and records (no cycles among them) would
    otherwise trigger collections over everything loaded so far (measured: 1M rows in 16 s instead of 9 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Locked(Exception):
    """The file was locked by a writer for longer than the busy timeout."""


class SQLiteSource:
    """A Hub's tasks.db, read-only (see the module docstring for the strategy and its limits)."""

    load_attempts = 10  # tries per statement of a (re)load before the sync counts as locked (~0.3 s each)

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        engine_ids_path: str | os.PathLike | None = None,
        hub: Any = None,
        allow_writes: bool = False,
    ) -> None:
        self.path = Path(path).expanduser()
        self.engine_ids_path = Path(engine_ids_path).expanduser() if engine_ids_path else None
        self.hub = hub
        self.paired = PairedHub(hub, what="file") if hub is not None else None
        self.allow_writes = allow_writes
        self.name = f"SQLite {self.path}"
        self._con: sqlite3.Connection | None = None
        self._tables: dict[str, _Table] = {}
        self._loaded = False
        self._data_version: int | None = None
        self._inode: tuple[int, int] | None = None
        self._locked_syncs = 0
        self._syncs = 0
        self._engine_ids: dict[str, int] = {}
        self._engine_mtimes: dict[str, float] = {}
        self._purged: set[str] = set()  # removed by our own purge: no "disappeared" warning
        self._in_flight: set[str] = set()
        self._watch: dict[str, float] = {}  # msg_id -> re-read until (monotonic)
        self._intern: dict[str, str] = {}
        self._dirty = False  # the file changed since the last slow scan
        self._rerun: set[str] = set()  # tables that became an earlier run, to re-deliver with `run` set
        self._last_slow = 0
        self._resub_scanned: float | None = None  # clock time of the last full `resubmitted` scan
        self.clock = time.monotonic

    # -- protocol ----------------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        hub = self.hub is not None
        can_purge = hub or self.allow_writes
        return Capabilities(
            kind="sqlite",
            backend="sqlite",
            stores_tasks=True,
            knows_running=self.paired is not None and self.paired.knows_running,
            has_engines=hub,
            can_resubmit=hub,
            resubmit_reason="" if hub else RESUBMIT_REASON,
            can_purge=can_purge,
            purge_reason="" if can_purge else PURGE_REASON,
            purge_via_hub=hub,
            read_only=not hub and not self.allow_writes,
            # the Hub's state first: the status line is cut on the right, and the constant note can wait
            warnings=(self.paired.warnings() if self.paired is not None else ())
            + ("read from tasks.db: the Hub commits every 2 s, so data can be ~2 s late",),
        )

    def open(self) -> None:
        self._check_path()
        con = self._con = self._reader()
        try:
            tables = self._retry(lambda: find_tables(con), self.load_attempts)
        except _Locked:
            self.close()
            raise SourceUnavailable(f"{self.path} is locked by another process") from None
        except SourceError:
            self.close()
            raise
        if not tables:
            self.close()
            raise NotATaskDatabase(f"{self.path} is a SQLite file but holds no ipyparallel task table")
        st = self.path.stat()
        self._inode = (st.st_dev, st.st_ino)
        self._load_engine_ids()
        if self.paired is not None:
            self.paired.open()  # subscribe to IOPub before the load: a task starting meanwhile is seen

    def _reader(self) -> sqlite3.Connection:
        """A read-only connection to the file (the source's own, or a helper thread's)."""
        try:
            return sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                timeout=0.25,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self.paired is not None:
            self.paired.close()

    def sync(self) -> Iterator[Delta]:
        if self._con is None:
            self.open()
        self._syncs += 1
        try:
            if not self._loaded or self._file_replaced():
                yield from self._full_load()
                self._locked_syncs = 0
                return
            delta, locked = self._incremental()
        except _Locked:
            self._count_locked()
            return
        if delta is not None:
            yield delta  # what was read before a lock stopped the sync is true: deliver it
        if locked:
            self._count_locked()
        else:
            self._locked_syncs = 0

    def _count_locked(self) -> None:
        """One more sync stopped by a writer's lock: quiet, until LOCKED_LIMIT in a row."""
        self._locked_syncs += 1
        if self._locked_syncs >= LOCKED_LIMIT:
            raise SourceUnavailable(
                f"{self.path} stayed locked by another process for {self._locked_syncs} polls in a row"
            )

    def detail(self, msg_id: str) -> TaskDetail:
        try:
            return self._detail(msg_id)
        except _Locked:
            raise SourceUnavailable(f"{self.path} is locked by another process; try again") from None

    def _detail(self, msg_id: str) -> TaskDetail:
        con = self._connection()
        attempts = self.load_attempts
        for table in reversed(self._retry(lambda: find_tables(con), attempts)):
            info = self._tables.get(table) or self._describe(table)
            cols = [k for k in DETAIL_KEYS if k in info.columns]
            rows = self._retry(lambda: con.execute(
                f"SELECT {', '.join(cols)} FROM {_q(table)} WHERE msg_id = ?", (msg_id,)).fetchall(), attempts)
            if not rows:
                continue
            raw = dict(zip(cols, rows[0]))
            parent = self._retry(lambda: con.execute(
                f"SELECT msg_id FROM {_q(table)} WHERE resubmitted = ? LIMIT 1", (msg_id,)).fetchall(), attempts)
            self._load_engine_ids()
            return normalize_detail(raw, self._engine_ids, run=info.run,
                                    resubmitted_from=parent[0][0] if parent else None)
        raise SourceError(f"no task {msg_id} in {self.path}")

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        return resubmit_via(self.hub, msg_ids)

    def purge(self, msg_ids: list[str]) -> int:
        ids = list(dict.fromkeys(m for m in msg_ids if m))
        if not ids:
            return 0
        if self.hub is not None:
            live = self._live_name()
            live_ids = self._tables[live].ids if live else set()
            older = [m for m in ids if m not in live_ids and any(m in t.ids for t in self._tables.values())]
            if older and not self.allow_writes:
                raise ActionRefused(
                    f"{len(older)} of these records belong to earlier Hub runs, which the Hub cannot purge "
                    "(open the file with allow_writes to delete them directly)"
                )
            hub_ids = [m for m in ids if m not in set(older)]
            n = self.hub.purge(hub_ids) if hub_ids else 0
            self._purged.update(hub_ids)  # our own purge: no "disappeared" warning when it shows
            if older:
                n += self._delete(older)
            return n
        if not self.allow_writes:
            raise ActionRefused(PURGE_REASON)
        return self._delete(ids)

    # -- opening and errors -------------------------------------------------------------------------

    def _check_path(self) -> None:
        p = self.path
        if not p.exists():
            raise SourceError(f"{p}: no such file")
        if p.is_dir():
            raise SourceError(f"{p} is a directory, not a tasks.db file")
        if not os.access(p, os.R_OK):
            raise SourceError(f"{p}: permission denied (cannot read it)")
        try:
            with open(p, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise SourceError(f"{p}: cannot read it ({exc.strerror or exc})") from None
        if not head:
            raise NotATaskDatabase(f"{p} is an empty file, not an ipyparallel task database")
        if head != b"SQLite format 3\x00":
            raise NotATaskDatabase(f"{p} is not a SQLite database (file is not a database)")

    def _error(self, exc: sqlite3.Error) -> SourceError:
        text = str(exc)
        low = text.lower()
        if "locked" in low or "busy" in low:
            return SourceUnavailable(f"{self.path} is locked by another process ({text})")
        if "not a database" in low:
            return NotATaskDatabase(f"{self.path} is not a SQLite database ({text})")
        if "malformed" in low or "corrupt" in low:
            return NotATaskDatabase(f"{self.path} is a damaged SQLite file ({text})")
        if "unable to open" in low:
            return SourceError(f"{self.path}: cannot open it ({text})")
        return SourceError(f"{self.path}: {text}")

    def _retry(self, fn, attempts: int = 1):
        """Run one short read; a lock -> _Locked (quiet retry later), any other error -> SourceError."""
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                low = str(exc).lower()
                if "locked" in low or "busy" in low:
                    if i + 1 < attempts:
                        time.sleep(0.05)
                        continue
                    raise _Locked() from None
                raise self._error(exc) from None
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        raise AssertionError("unreachable")

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            self.open()
        assert self._con is not None
        return self._con

    def _file_replaced(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            raise SourceUnavailable(f"{self.path} is gone (deleted or moved)") from None
        if (st.st_dev, st.st_ino) != self._inode:
            self.close()
            self.open()
            self._loaded = False
            return True
        return False

    # -- tables ------------------------------------------------------------------------------------

    def _table_names(self) -> list[str]:
        return self._retry(lambda: find_tables(self._connection()))

    def _describe(self, name: str) -> _Table:
        cols = self._retry(lambda: self._connection().execute(f"PRAGMA table_info({_q(name)})").fetchall())
        return _Table(name=name, columns=frozenset(r[1] for r in cols))

    def _live_name(self) -> str | None:
        return max(self._tables, key=table_order_key) if self._tables else None

    def _set_runs(self) -> None:
        live = self._live_name()
        for name, t in self._tables.items():
            t.run = None if name == live else name

    # -- engine ids --------------------------------------------------------------------------------

    def _engine_files(self) -> list[str]:
        if self.engine_ids_path is not None:
            p = self.engine_ids_path
            return sorted(glob.glob(str(p / "engines*.json"))) if p.is_dir() else [str(p)]
        return sorted(glob.glob(str(self.path.parent / "log" / "engines*.json")))

    def _load_engine_ids(self) -> None:
        """uuid -> id from every `log/engines*.json` (re-read when one changes; ids seen are kept)."""
        for f in self._engine_files():
            try:
                mtime = os.stat(f).st_mtime
                if self._engine_mtimes.get(f) == mtime:
                    continue
                with open(f, encoding="utf-8") as fh:
                    data = json.load(fh)
                self._engine_mtimes[f] = mtime
            except (OSError, ValueError):
                continue
            engines = data.get("engines") if isinstance(data, dict) else None
            for key, uuid in (engines or {}).items():
                try:
                    self._engine_ids[str(uuid)] = int(key)
                except (TypeError, ValueError):
                    continue

    # -- building records --------------------------------------------------------------------------

    def _build(self, rows: list[tuple], table: _Table, pend: list[tuple[int, TaskRecord]]
               ) -> tuple[list[TaskRecord], list[int]]:
        """Fast path: SQL-normalized rows -> TaskRecords (pending ones also into `pend` with their rowid).

        Returns (records, rowids needing the exact path)."""
        out: list[TaskRecord] = []
        exact: list[int] = []
        add_pending = pend.append
        run = table.run
        eids = self._engine_ids
        # one str object per distinct engine/client/queue/label (1M copies of a uuid cost ~80 MB), but
        # stop sharing when the values are mostly distinct (per-task labels): the cache would only grow
        intern = self._intern
        share = intern.setdefault if len(intern) < INTERN_MAX else _same
        succeeded, aborted, failed, pending = State.SUCCEEDED, State.ABORTED, State.FAILED, State.PENDING
        for (rowid, msg_id, submitted, started, completed, received, engine, queue, client, resub, label,
             out_size, err_size, status, ename, evalue, eid) in rows:
            done = _dt(completed)
            ename_v = evalue_v = None
            if done is None:
                state = pending
            elif status == "ok":
                state = succeeded
            elif status == "aborted":
                state = aborted
            elif status == "error" and ename and isinstance(ename, str):
                state = failed
                ename_v = ename
                evalue_v = _s(evalue)
                if evalue_v is not None and "\x1b" in evalue_v:
                    evalue_v = strip_ansi(evalue_v)
            else:
                exact.append(rowid)
                continue
            if engine is not None:
                if not isinstance(engine, str):
                    engine = _s(engine)
                engine = share(engine, engine)
                if engine in eids:
                    eid = eids[engine]
            if client is not None:
                client = share(client, client) if isinstance(client, str) and client else _s(client)
            if queue is not None:
                queue = share(queue, queue) if isinstance(queue, str) and queue else _s(queue)
            if label is not None:
                label = share(label, label) if isinstance(label, str) and label else _s(label)
            rec = TaskRecord(
                msg_id if isinstance(msg_id, str) and msg_id else (_s(msg_id) or ""),
                state, engine, eid, queue, label, client,
                _dt(submitted), _dt(started), done, _dt(received),
                ename_v, evalue_v, resub if isinstance(resub, str) and resub else _s(resub),
                out_size, err_size, run,
            )
            out.append(rec)
            if done is None:
                add_pending((rowid, rec))
        return out, exact

    def _exact(self, table: _Table, rowids: Sequence[int], pend: list[tuple[int, TaskRecord]]) -> list[TaskRecord]:
        """model.normalize_record on the raw light columns (the rows the fast path left out)."""
        cols = [k for k in _RAW_KEYS if k in table.columns] + (["label"] if table.has_label else [])
        out = []
        for i in range(0, len(rowids), ID_CHUNK):
            chunk = list(rowids[i:i + ID_CHUNK])
            rows = self._retry(lambda: self._connection().execute(
                f"SELECT {', '.join(cols)}, coalesce(length(stdout), 0), coalesce(length(stderr), 0), rowid "
                f"FROM {_q(table.name)} WHERE rowid IN ({','.join('?' * len(chunk))})", chunk).fetchall(), 3)
            for row in rows:
                raw = dict(zip(cols, row))
                raw["stdout_size"], raw["stderr_size"] = row[-3], row[-2]
                rec = normalize_record(raw, self._engine_ids, run=table.run)
                out.append(rec)
                if rec.state.is_pending:
                    pend.append((row[-1], rec))
        return out

    def _select(self, table: _Table, where: str, params: Sequence[Any], attempts: int = 1) -> list[tuple]:
        sql = f"SELECT {table.light_select()} FROM {_q(table.name)} WHERE {where}"
        return self._retry(lambda: self._connection().execute(sql, params).fetchall(), attempts)

    def _records(self, table: _Table, rows: list[tuple], *, fresh: bool = False) -> list[TaskRecord]:
        """Rows -> records, and remember their ids, pending rows and resubmitted pointers.

        `fresh`: rows never seen before (the first load), so nothing to forget."""
        pend: list[tuple[int, TaskRecord]] = []
        recs, exact = self._build(rows, table, pend)
        if exact:
            recs.extend(self._exact(table, exact, pend))
        if self.paired is not None and pend:
            mark = self.paired.mark
            for _, rec in pend:
                mark(rec)
        table.ids.update([r.msg_id for r in recs])
        if not fresh:
            for rec in recs:
                table.drop_pending(rec.msg_id)
        for rowid, rec in pend:
            table.set_pending(rowid, rec)
        resub = table.resubmitted
        for rec in recs:
            if rec.resubmitted:
                resub[rec.msg_id] = rec.resubmitted
            elif not fresh and resub:
                resub.pop(rec.msg_id, None)
        return recs

    # -- the first (or a full) load ------------------------------------------------------------------

    def _full_load(self) -> Iterator[Delta]:
        self._load_engine_ids()
        if self.paired is not None:
            self.paired.learn_engine_ids(self._engine_ids)  # before normalizing, so records get their ids
            self.paired.marks_changed()  # every record of the load is marked as it is built
        self._tables = {}
        self._rerun = set()
        self._in_flight = set()
        self._watch = {}
        con = self._connection()
        names = self._table_names()
        self._data_version = self._retry(lambda: con.execute("PRAGMA data_version").fetchone()[0], self.load_attempts)
        for name in names:
            t = self._describe(name)
            # max(rowid) is one B-tree descent; count(*) would read the whole primary key (~1 s per 1M rows)
            # before the first row shows. The count is an estimate until the load has read the table.
            top = self._retry(lambda: con.execute(f"SELECT max(rowid) FROM {_q(name)}").fetchone(), self.load_attempts)
            t.max_rowid = t.count = top[0] or 0
            self._tables[name] = t
        self._set_runs()
        total = sum(t.count for t in self._tables.values())
        # the pane counts are a full scan (~0.15 s per 100k rows), read beside the first chunk, not after it
        counting = self._count_aside() if total > FIRST_CHUNK else None
        done = 0
        first = True
        for name in reversed(names):  # newest run first, each from its newest row down
            t = self._tables[name]
            upper = t.max_rowid
            while upper > 0:
                with _no_gc():
                    size = min(FIRST_CHUNK, CHUNK) if first else CHUNK
                    rows = self._select(t, "rowid <= ? ORDER BY rowid DESC LIMIT ?", (upper, size), attempts=self.load_attempts)
                    if not rows:
                        break
                    upper = rows[-1][0] - 1
                    recs = self._records(t, rows, fresh=True)
                done += len(recs)
                yield Delta(upserts=recs, reset=first, loading=True, done=done, total=max(total, done))
                if first and done < total:
                    # the first page is shown; the pane counts come from SQL before the other rows
                    counts = counting.result() if counting is not None else self._count_panes(con)
                    total = max(counts["all"], done)
                    yield Delta(loading=True, done=done, total=total, counts=counts)
                first = False
            if t.max_rowid:
                top = self._retry(lambda: con.execute(
                    f"SELECT msg_id FROM {_q(name)} WHERE rowid = ?", (t.max_rowid,)).fetchall(), self.load_attempts)
                t.top_msg_id = top[0][0] if top else None
            t.count = len(t.ids)
        self._loaded = True
        final = Delta(reset=first, loading=False, done=done, total=done)
        if self.paired is not None:
            self._hub_state(final)
            by_id: dict[str, TaskRecord] = {}
            self._remark(by_id)  # tasks that started or ended while the load ran
            final.upserts.extend(by_id.values())
        yield final

    def _count_aside(self) -> Future[dict[str, int]]:
        """_count_panes on a thread of its own (background priority, its own connection): SQLite counts
        without the GIL while the poll thread builds the first rows."""
        result: Future[dict[str, int]] = Future()

        def count() -> None:
            lower_this_thread()
            try:
                con = self._reader()
                try:
                    result.set_result(self._count_panes(con))
                finally:
                    con.close()
            except BaseException as exc:  # re-raised by result(), in the poll thread
                result.set_exception(exc)

        threading.Thread(target=count, name="hubtop-count", daemon=True).start()
        return result

    def _count_panes(self, con: sqlite3.Connection) -> dict[str, int]:
        """Tasks per pane of every table, counted in SQL by the rules of model.normalize_record (the
        load's final counts, before its rows are built), in rowid spans so no statement is long."""
        counts = {"pending": 0, "succeeded": 0, "failed": 0, "aborted": 0, "resubmitted": 0, "all": 0}
        for t in self._tables.values():
            sql = (
                "SELECT CASE WHEN completed IS NULL THEN 'pending' WHEN st = 'ok' THEN 'succeeded' "
                "WHEN st = 'aborted' THEN 'aborted' "
                "WHEN st = 'error' OR (json_valid(error) AND json_type(error) = 'object') "
                "  OR (json_valid(result_content) AND coalesce(json_extract(result_content, '$.ename'), '') != '') "
                "THEN 'failed' ELSE 'succeeded' END, count(*), count(nullif(resubmitted, '')) "
                "FROM (SELECT completed, resubmitted, error, result_content, CASE WHEN json_valid(result_content) "
                f"THEN json_extract(result_content, '$.status') END AS st FROM {_q(t.name)} "
                "WHERE rowid BETWEEN ? AND ?) GROUP BY 1"
            )
            for low in range(0, t.max_rowid + 1, COUNT_SPAN):
                rows = self._retry(lambda: con.execute(sql, (low, low + COUNT_SPAN - 1)).fetchall(),
                                   self.load_attempts)
                for pane, n, resubmitted in rows:
                    counts[pane] += n
                    counts["all"] += n
                    counts["resubmitted"] += resubmitted
        return counts

    # -- incremental sync --------------------------------------------------------------------------

    def _incremental(self) -> tuple[Delta | None, bool]:
        """(the delta of this sync or None, whether a writer's lock cut it short)."""
        con = self._connection()
        delta = Delta()
        hub_ids = self._hub_state(delta) if self.paired is not None else None
        try:
            version = self._retry(lambda: con.execute("PRAGMA data_version").fetchone()[0])
        except _Locked:
            by_id: dict[str, TaskRecord] = {}
            self._remark(by_id)
            delta.upserts.extend(by_id.values())
            return (delta if delta.engines is not None or delta.warnings or delta.upserts else None), True
        changed = version != self._data_version
        self._dirty |= changed
        slow = self._dirty and self._syncs - self._last_slow >= self._slow_every()
        by_id: dict[str, TaskRecord] = {}
        locked = False
        if not changed and not slow:  # the file did not change: nothing to read
            if hub_ids is not None:
                self._track_in_flight(hub_ids, None, {})
        else:
            try:
                self._read_changes(delta, by_id, hub_ids, slow)
                self._data_version = version
            except _Locked:
                locked = True  # every state change so far matches what is in `delta`/`by_id`
        self._remark(by_id)
        delta.upserts.extend(by_id.values())
        if not delta.upserts and not delta.removed and not delta.warnings and delta.engines is None:
            return None, locked
        return delta, locked

    def _slow_every(self) -> int:
        """Syncs between the O(rows) scans: SLOW_EVERY, stretched above COUNT_EVERY_SYNC rows so their cost
        per sync stays that of a 100k-row table (1M rows: every 100 syncs; ~1-2 s of reading each time)."""
        rows = max((len(t.ids) for t in self._tables.values()), default=0)
        return SLOW_EVERY * max(1, -(-rows // COUNT_EVERY_SYNC))

    def _read_changes(self, delta: Delta, by_id: dict[str, TaskRecord], hub_ids: set[str] | None,
                      slow: bool) -> None:
        if slow:
            self._last_slow, self._dirty = self._syncs, False
        self._load_engine_ids()
        names = self._table_names()
        new_tables = [n for n in names if n not in self._tables]
        described = {n: self._describe(n) for n in new_tables}  # may hit a lock: nothing changed yet
        gone = [n for n in self._tables if n not in names]
        if described or gone:
            old_live = self._live_name()
            self._tables.update(described)
            for name in gone:  # a dropped table: all its records are gone, and the status says why
                ids = self._tables.pop(name).ids
                delta.removed.extend(ids)
                delta.warnings.append(
                    f"table {name} was dropped: {len(ids):,} record{'s' if len(ids) != 1 else ''} disappeared"
                )
            self._set_runs()
            if old_live in self._tables and self._tables[old_live].run is not None:
                self._rerun.add(old_live)
        for name in sorted(self._rerun):
            # the previous live table is now an earlier run: its records change `run` (in short chunks)
            t = self._tables.get(name)
            upper = t.max_rowid if t is not None else 0
            while upper > 0:
                rows = self._select(t, "rowid <= ? ORDER BY rowid DESC LIMIT ?", (upper, CHUNK))
                if not rows:
                    break
                for r in self._records(t, rows):
                    by_id[r.msg_id] = r
                upper = rows[-1][0] - 1
            self._rerun.discard(name)
        live = self._live_name()
        for name in names:
            t = self._tables[name]
            is_live = name == live
            self._new_rows(t, by_id)
            if is_live:
                if hub_ids is not None:
                    self._track_in_flight(hub_ids, t, by_id)
                else:
                    self._reread_pending(t, by_id)
                now = self.clock()
                if slow and (self._resub_scanned is None or now - self._resub_scanned >= RESUB_SCAN_SECONDS):
                    self._resub_scanned = now
                    self._scan_resubmitted(t, by_id, None)
                else:
                    copies = [m for m, r in by_id.items() if r.run is None and r.client
                              and not m.startswith(r.client + "_")]
                    if copies:  # the set of known copies only when there are candidates (1M rows: ~5 ms)
                        known = set(t.resubmitted.values())
                        copies = [m for m in copies if m not in known]
                    if copies:
                        self._scan_resubmitted(t, by_id, copies)
            elif slow and t.pending:
                self._reread_pending(t, by_id)
            if is_live or slow or name in new_tables or t.suspect:
                # count(*) reads the whole primary-key index (~90 ms per 1M rows): every sync only while the
                # table is small, or when a deletion is expected; max(rowid) + its msg_id every sync
                count = slow or t.suspect or bool(self._purged) or name in new_tables or len(t.ids) <= COUNT_EVERY_SYNC
                self._check_deletions(t, delta, by_id, count)

    def _new_rows(self, t: _Table, by_id: dict[str, TaskRecord]) -> None:
        while True:
            rows = self._select(t, "rowid > ? ORDER BY rowid LIMIT ?", (t.max_rowid, CHUNK))
            if not rows:
                return
            recs = self._records(t, rows)
            for r in recs:
                by_id[r.msg_id] = r
            t.max_rowid = rows[-1][0]
            t.top_msg_id = rows[-1][1]
            t.count = len(t.ids)

    def _check_deletions(self, t: _Table, delta: Delta, by_id: dict[str, TaskRecord], count: bool = True) -> None:
        """Whether rows already read are gone. Rows above the newest one read are not looked at: the Hub may
        commit new rows between this sync's read of them and this check, and the next sync reads them; taken
        for a deletion, they cost a read of every msg_id (1M rows: ~2 s and ~200 MB). One statement, so one
        snapshot: counting rows up to the newest one read directly would walk the table (~0.35 s at 1M)."""
        con = self._connection()
        q = _q(t.name)
        upto = f"(SELECT count(*) FROM {q}) - (SELECT count(*) FROM {q} WHERE rowid > ?1)" if count else "NULL"
        known, upto_id = self._retry(lambda: con.execute(
            f"SELECT {upto}, (SELECT msg_id FROM {q} WHERE rowid = ?1)", (t.max_rowid,)).fetchone())
        if (known is None or known == len(t.ids)) and upto_id == t.top_msg_id:
            t.suspect = False
            return
        top, top_id = self._retry(lambda: con.execute(
            f"SELECT rowid, msg_id FROM {q} ORDER BY rowid DESC LIMIT 1").fetchone()) or (0, None)
        present = {r[0] for r in self._retry(lambda: con.execute(f"SELECT msg_id FROM {q}").fetchall())}
        vanished = t.ids - present
        appeared = {m for m in present if m not in t.ids}
        if vanished:
            t.ids -= vanished
            for m in vanished:
                t.drop_pending(m)
                t.resubmitted.pop(m, None)
                by_id.pop(m, None)
            delta.removed.extend(vanished)
            ours = vanished & self._purged
            self._purged -= ours
            theirs = len(vanished) - len(ours)
            if theirs:
                delta.warnings.append(
                    f"{theirs} record{'s' if theirs != 1 else ''} disappeared since the last poll ({t.name})"
                )
        if appeared:  # rows written under a reused rowid (the newest rows were deleted first)
            ids = sorted(appeared)
            for i in range(0, len(ids), ID_CHUNK):
                chunk = ids[i:i + ID_CHUNK]
                rows = self._select(t, f"msg_id IN ({','.join('?' * len(chunk))})", chunk)
                recs = self._records(t, rows)
                for r in recs:
                    by_id[r.msg_id] = r
        t.max_rowid = top
        t.top_msg_id = top_id
        t.count = len(t.ids)
        t.suspect = False

    def _reread_rowids(self, t: _Table, rowids: list[int], by_id: dict[str, TaskRecord]) -> int:
        """Re-read known rows; only those that changed go to `by_id`. Returns how many did."""
        changed = 0
        for i in range(0, len(rowids), ID_CHUNK):
            chunk = self._changed_rowids(t, rowids[i:i + ID_CHUNK])
            if not chunk:
                continue
            expected = {rowid: t.pending.get(rowid) for rowid in chunk}
            old = {fp[_FP_MSG_ID]: fp for rowid in chunk if (fp := t.pending_recs.get(rowid)) is not None}
            rows = self._select(t, f"rowid IN ({','.join('?' * len(chunk))})", chunk)
            recs = self._records(t, rows)
            for rec in recs:
                if old.get(rec.msg_id) != _fingerprint(rec):
                    by_id[rec.msg_id] = rec
                    changed += 1
            found = {r[0]: r[1] for r in rows}
            for rowid, msg_id in expected.items():
                if found.get(rowid) != msg_id and msg_id is not None:
                    # deleted, or a reused rowid: the deletion check of this table sorts it out
                    if found.get(rowid) is None:
                        t.drop_pending(msg_id)
                    t.suspect = True
        return changed

    def _changed_rowids(self, t: _Table, rowids: list[int]) -> list[int]:
        """Of these known pending rows, those whose light columns may differ from the record we hold (a
        cheap check of raw columns first: building 2,000 unchanged records per sync cost ~40 ms)."""
        rows = self._retry(lambda: self._connection().execute(
            f"SELECT rowid, msg_id, completed IS NULL, nullif(engine_uuid, ''), started IS NULL, "
            f"nullif(resubmitted, ''), coalesce(length(stdout), 0), coalesce(length(stderr), 0) "
            f"FROM {_q(t.name)} WHERE rowid IN ({','.join('?' * len(rowids))})", rowids).fetchall())
        same = set()
        fps = t.pending_recs
        for rowid, msg_id, pending, engine, not_started, resubmitted, out, err in rows:
            fp = fps.get(rowid)
            if (fp is not None and pending and not_started and fp[_FP_STARTED] is None and msg_id == fp[_FP_MSG_ID]
                    and engine == fp[_FP_ENGINE] and resubmitted == fp[_FP_RESUB]
                    and out == fp[_FP_OUT] and err == fp[_FP_ERR]):
                same.add(rowid)
        return [r for r in rowids if r not in same]  # changed, or gone (the caller sorts that out)

    def _reread_pending(self, t: _Table, by_id: dict[str, TaskRecord], skip: frozenset[str] = frozenset()) -> None:
        """Re-read the pending rows `t.scan` picks (the oldest ones and a rotating slice, see pending.py); not
        those whose msg_id is in `skip`."""
        live = t.pending
        if not live:
            return
        front, rest = (
            [r for r in rows if live[r] not in skip]
            for rows in t.scan.pick(t.pending_order(), len(live), live.__contains__)
        )
        t.scan.saw(self._reread_rowids(t, front, by_id))
        if rest:
            self._reread_rowids(t, rest, by_id)

    def _reread_ids(self, t: _Table, ids: Iterable[str], by_id: dict[str, TaskRecord]) -> None:
        rowid_of = t.pending_rowid
        rowids: list[int] = []
        rest: list[str] = []
        for m in ids:  # a known pending row is in t.ids: only the others are looked up there (~2 us each)
            if m in by_id:
                continue
            rowid = rowid_of.get(m)
            if rowid is not None:
                rowids.append(rowid)
            elif m in t.ids:
                rest.append(m)
        self._reread_rowids(t, rowids, by_id)
        for i in range(0, len(rest), ID_CHUNK):
            chunk = rest[i:i + ID_CHUNK]
            rows = self._select(t, f"msg_id IN ({','.join('?' * len(chunk))})", chunk)
            recs = self._records(t, rows)
            for r in recs:
                by_id[r.msg_id] = r

    def _track_in_flight(self, in_flight: set[str], t: _Table | None, by_id: dict[str, TaskRecord]) -> None:
        """Paired with a Hub: re-read its in-flight ids, the ids that left the in-flight set (until the DB
        shows them done: the Hub commits up to 2 s late) and pending rows it does not list (once seen); not the
        ones it still queues unassigned (PairedHub.still_unassigned)."""
        now = self.clock()
        for m in self._in_flight - in_flight:
            self._watch[m] = now + WATCH_SECONDS
        self._in_flight = set(in_flight)
        if t is None:
            return
        for rowid, m in t.pending.items():
            if m not in in_flight and m not in self._watch and m in by_id:
                self._watch[m] = now + WATCH_SECONDS  # new pending row the Hub no longer lists
        self._watch = {m: d for m, d in self._watch.items() if d > now and m in t.ids}
        if not by_id and not self._watch and not in_flight:
            return
        assert self.paired is not None
        rowid_of, held = t.pending_rowid, t.pending_recs

        def engine_and_start(msg_id: str) -> tuple[Any, Any] | None:
            fp = held.get(rowid_of.get(msg_id, -1))
            return (fp[_FP_ENGINE], fp[_FP_STARTED]) if fp is not None else None

        quiet = self.paired.still_unassigned(engine_and_start)
        wanted = [m for m in in_flight if m not in quiet][:IN_FLIGHT_MAX] + \
            [m for m in self._watch if m not in quiet][:IN_FLIGHT_MAX]
        self._reread_ids(t, wanted, by_id)
        for m in list(self._watch):
            rec = by_id.get(m)
            if rec is not None and rec.state.is_done:
                del self._watch[m]
        if self._syncs - self._last_slow == 0:  # orphans of an earlier Hub process: slowly
            self._reread_pending(t, by_id, frozenset(quiet))

    def _scan_resubmitted(self, t: _Table, by_id: dict[str, TaskRecord], copies: list[str] | None) -> None:
        """Originals whose `resubmitted` pointer changed: all of them, or those pointing at `copies`."""
        con = self._connection()
        if copies is None:  # in rowid spans: no statement keeps the Hub's commit waiting for long
            rows = []
            for low in range(0, t.max_rowid + 1, COUNT_SPAN):
                rows += self._retry(lambda: con.execute(
                    f"SELECT msg_id, resubmitted FROM {_q(t.name)} WHERE rowid BETWEEN ? AND ? "
                    "AND resubmitted IS NOT NULL AND resubmitted != ''", (low, low + COUNT_SPAN - 1)).fetchall())
        else:
            rows = []
            for i in range(0, len(copies), ID_CHUNK):
                chunk = copies[i:i + ID_CHUNK]
                rows += self._retry(lambda: con.execute(
                    f"SELECT msg_id, resubmitted FROM {_q(t.name)} WHERE resubmitted IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall())
        changed = [m for m, r in rows if t.resubmitted.get(m) != r and m not in by_id]
        if copies is None:
            now_set = {m for m, _ in rows}
            changed += [m for m in t.resubmitted if m not in now_set and m not in by_id]
        if changed:
            self._reread_ids(t, changed, by_id)

    # -- the paired Hub ----------------------------------------------------------------------------

    def _hub_state(self, delta: Delta) -> set[str] | None:
        assert self.paired is not None
        return self.paired.poll(delta, self._engine_ids)

    def _remark(self, by_id: dict[str, TaskRecord]) -> None:
        """Pending rows whose running mark changed (IOPub) and that this sync did not re-read: their record
        again, rebuilt from what the table keeps of it with the new state (no read of the file)."""
        if self.paired is None:
            return
        for m in self.paired.marks_changed():
            if m in by_id:
                continue  # re-read this sync, and marked as it was built
            state = self.paired.state_of(m).value
            for t in self._tables.values():
                rowid = t.pending_rowid.get(m)
                if rowid is None:
                    continue
                fp = t.pending_recs.get(rowid)
                if fp is not None and fp[0] != state:
                    fp = (state,) + fp[1:]
                    t.pending_recs[rowid] = fp
                    by_id[m] = _record_of(fp)
                break

    # -- writes (allow_writes only) ----------------------------------------------------------------

    def _delete(self, ids: list[str]) -> int:
        """Delete completed rows directly (short write transactions). Pending ids refuse the whole call."""
        if not self.allow_writes:
            raise ActionRefused(PURGE_REASON)
        try:
            con = sqlite3.connect(str(self.path), timeout=2.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        deleted: set[str] = set()
        try:
            names = find_tables(con)
            for i in range(0, len(ids), ID_CHUNK):
                chunk = ids[i:i + ID_CHUNK]
                marks = ",".join("?" * len(chunk))
                con.execute("BEGIN IMMEDIATE")
                try:
                    for name in names:
                        pending = con.execute(
                            f"SELECT msg_id FROM {_q(name)} WHERE msg_id IN ({marks}) AND completed IS NULL",
                            chunk).fetchall()
                        if pending:
                            raise ActionRefused(f"msg pending: {pending[0][0]!r} (pending tasks are never purged)")
                    for name in names:
                        con.execute(f"DELETE FROM {_q(name)} WHERE msg_id IN ({marks})", chunk)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                deleted.update(chunk)
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc).lower():
                raise ActionRefused(f"{self.path} is not writable") from None
            raise self._error(exc) from None
        finally:
            con.close()
            self._purged |= deleted
        return len(deleted)
