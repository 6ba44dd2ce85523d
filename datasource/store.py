"""The store: the light fields of every known task, in an indexed SQLite database (a private temporary file
with a bounded page cache, so a million tasks do not live in the process).

Sources yield `Delta`s, `TaskStore.apply` folds them in; views only ever read the store (counts, a sorted
and filtered page of rows, a lookup). Counting, filtering, sorting and paging run at C speed, so the
views stay fast at a million tasks, and nothing but the visible page becomes Python objects.

Thread model: a poll worker thread writes, the UI thread reads. One lock serialises them; a write holds
it for one delta (a chunk of at most a few ten thousand rows during a first load), so readers are
never blocked for long.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Sequence

from .query import install_sql_functions
from .model import Engine, QueueStatus, State, TaskRecord, from_epoch, to_epoch
from .sources.base import Delta

__all__ = [
    "TaskStore",
    "ScanCancelled",
    "Filter",
    "ApplyResult",
    "FailureGroup",
    "PANES",
    "SORT_COLUMNS",
    "COLUMNS",
    "pane_filter",
    "engine_filter",
    "ids_filter",
    "combine",
    "failure_signature",
    "tiebreak",
    "view_ranges",
]

Filter = tuple[str, Sequence[object]]  # an SQL boolean expression over the `tasks` columns, with ? parameters

_PENDING = (State.PENDING.value, State.QUEUED.value, State.RUNNING.value)

# The panes of the dashboard, each a filter on the store. Order matters: it is the tab order.
PANES: dict[str, Filter] = {
    "pending": ("state IN (?, ?, ?)", _PENDING),
    # a source that tells running tasks apart (IOPub) proves `running`; the others wait, as far as it knows
    "queued": ("state IN (?, ?)", (State.PENDING.value, State.QUEUED.value)),
    "running": ("state = ?", (State.RUNNING.value,)),
    "succeeded": ("state = ?", (State.SUCCEEDED.value,)),
    "failed": ("state = ?", (State.FAILED.value,)),
    "aborted": ("state = ?", (State.ABORTED.value,)),
    "resubmitted": ("resubmitted IS NOT NULL", ()),
    "all": ("1", ()),
}

SORT_COLUMNS: tuple[str, ...] = (
    "submitted",
    "msg_id",
    "state",
    "engine_id",
    "label",
    "started",
    "completed",
    "received",
    "duration",
    "ename",
    "evalue",
    "queue",
    "client",
)

COLUMNS: tuple[str, ...] = (
    "msg_id",
    "state",
    "engine_uuid",
    "engine_id",
    "queue",
    "label",
    "client",
    "submitted",
    "started",
    "completed",
    "received",
    "duration",
    "ename",
    "evalue",
    "resubmitted",
    "stdout_size",
    "stderr_size",
    "run",
)
_SELECT = ", ".join(COLUMNS)

_SCHEMA = """
CREATE TABLE tasks (
    msg_id TEXT PRIMARY KEY,
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
    run TEXT,
    signature TEXT,
    gen INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_submitted ON tasks (submitted);
CREATE INDEX tasks_state_submitted ON tasks (state, submitted);
-- Most indexes of a column a task may lack hold only the rows with a value (`WHERE x IS NOT NULL`): a
-- pending task has no engine or duration yet, a success no ename, most tasks no label. A burst's task,
-- inserted pending and updated done a second later, then writes fewer entries (the store's writes:
-- 59-61 -> 51-52 us per task; at 1M tasks the store is 12 % smaller). A view sorted by such a column is two
-- ranges (view_ranges): rows with a value, then the rest by rowid, which (state) serves in a pane.
-- (engine_id), (duration), (completed) keep their NULLs: they serve `engine:none`-like filters and the All
-- pane's second range.
CREATE INDEX tasks_engine_id ON tasks (engine_id);
CREATE INDEX tasks_state ON tasks (state);
-- a pane sorted by a column: (state, column) serves the first page and the cursor's position without sorting
-- the pane (1M tasks: 0.1-0.5 s per keystroke otherwise). Ties go by rowid, the last column of every index:
-- with msg_id (~45 bytes) in each of them the store was twice as large, and each write slower (tiebreak).
CREATE INDEX tasks_state_id ON tasks (state, msg_id);
CREATE INDEX tasks_state_engine_id ON tasks (state, engine_id) WHERE engine_id IS NOT NULL;
CREATE INDEX tasks_state_label ON tasks (state, label) WHERE label IS NOT NULL;
CREATE INDEX tasks_state_duration ON tasks (state, duration) WHERE duration IS NOT NULL;
CREATE INDEX tasks_state_ename ON tasks (state, ename) WHERE ename IS NOT NULL;
-- the Resubmitted pane (a few % of the tasks) sorted by a table column: small partial indexes
CREATE INDEX tasks_resub_id ON tasks (msg_id) WHERE resubmitted IS NOT NULL;
CREATE INDEX tasks_resub_state ON tasks (state) WHERE resubmitted IS NOT NULL;
CREATE INDEX tasks_resub_engine_id ON tasks (engine_id) WHERE resubmitted IS NOT NULL;
CREATE INDEX tasks_resub_label ON tasks (label) WHERE resubmitted IS NOT NULL;
CREATE INDEX tasks_resub_submitted ON tasks (submitted) WHERE resubmitted IS NOT NULL;
CREATE INDEX tasks_resub_duration ON tasks (duration) WHERE resubmitted IS NOT NULL;
CREATE INDEX tasks_resub_ename ON tasks (ename) WHERE resubmitted IS NOT NULL;
CREATE INDEX tasks_label ON tasks (label) WHERE label IS NOT NULL;
CREATE INDEX tasks_duration ON tasks (duration);
CREATE INDEX tasks_ename ON tasks (ename) WHERE ename IS NOT NULL;
CREATE INDEX tasks_engine ON tasks (engine_uuid, state);
-- the counts of an `x = value` filter (engine:3, label:..., ename:...) from the index alone, already in
-- GROUP BY order (1M tasks: 130 ms -> 8 ms per filter, no row lookups). `x = ?` implies `x IS NOT NULL`, so
-- the planner takes the partial ones: a task has no engine while pending and no ename unless it failed, and
-- a row a burst inserts pending and updates done a second later then writes one entry instead of three.
CREATE INDEX tasks_count_engine_id ON tasks (engine_id, engine_uuid, state, resubmitted) WHERE engine_id IS NOT NULL;
CREATE INDEX tasks_count_label ON tasks (label, engine_uuid, state, resubmitted) WHERE label IS NOT NULL;
CREATE INDEX tasks_count_ename ON tasks (ename, engine_uuid, state, resubmitted) WHERE ename IS NOT NULL;
-- a filter on one of these in the default order (newest first): the first page and the cursor's position read
-- the index in order. Without them SQLite sorted every match (engine:3 at 1M tasks: 60-100 ms a page) or walked
-- the submitted index past every non-match (a rare ename: 250 ms). Partial: a pending task has none of them.
CREATE INDEX tasks_engine_id_submitted ON tasks (engine_id, submitted) WHERE engine_id IS NOT NULL;
CREATE INDEX tasks_label_submitted ON tasks (label, submitted) WHERE label IS NOT NULL;
CREATE INDEX tasks_ename_submitted ON tasks (ename, submitted) WHERE ename IS NOT NULL;
CREATE INDEX tasks_completed ON tasks (completed);
CREATE INDEX tasks_resubmitted ON tasks (resubmitted) WHERE resubmitted IS NOT NULL;
CREATE INDEX tasks_signature ON tasks (signature) WHERE signature IS NOT NULL;

-- Tasks per (engine, state), kept by triggers: unfiltered pane counts, per-engine counts and pane row counts
-- are read from a few hundred rows instead of a scan (0.15-0.3 s per poll at 1M tasks). '' = no engine.
CREATE TABLE agg (
    engine TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    resub INTEGER NOT NULL,
    PRIMARY KEY (engine, state)
) WITHOUT ROWID;
CREATE TRIGGER agg_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO agg VALUES (coalesce(new.engine_uuid, ''), new.state, 1, new.resubmitted IS NOT NULL)
    ON CONFLICT (engine, state) DO UPDATE SET n = n + 1, resub = resub + excluded.resub;
END;
CREATE TRIGGER agg_delete AFTER DELETE ON tasks BEGIN
    UPDATE agg SET n = n - 1, resub = resub - (old.resubmitted IS NOT NULL)
    WHERE engine = coalesce(old.engine_uuid, '') AND state = old.state;
END;
CREATE TRIGGER agg_update AFTER UPDATE OF state, engine_uuid, resubmitted ON tasks
WHEN old.state IS NOT new.state OR old.engine_uuid IS NOT new.engine_uuid
     OR (old.resubmitted IS NULL) != (new.resubmitted IS NULL) BEGIN
    UPDATE agg SET n = n - 1, resub = resub - (old.resubmitted IS NOT NULL)
    WHERE engine = coalesce(old.engine_uuid, '') AND state = old.state;
    INSERT INTO agg VALUES (coalesce(new.engine_uuid, ''), new.state, 1, new.resubmitted IS NOT NULL)
    ON CONFLICT (engine, state) DO UPDATE SET n = n + 1, resub = resub + excluded.resub;
END;
"""

# Filters the aggregate answers: no filter, and each pane alone (as given, or as combine() wraps it).
_AGG_WHERE: dict[tuple[str, tuple], str] = {("1", ()): "1", ("", ()): "1"}
for _pane, (_sql, _params) in PANES.items():
    _agg_sql = "resub" if _pane == "resubmitted" else _sql
    _AGG_WHERE[(_sql, tuple(_params))] = _agg_sql
    _AGG_WHERE[(f"({_sql})", tuple(_params))] = _agg_sql


_WORDS = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
# EXPLAIN QUERY PLAN: "SEARCH tasks USING INDEX tasks_state_ename (ANY(state) AND ename=?)"
_INDEX_CONSTRAINTS = re.compile(r"USING (?:COVERING )?INDEX \w+ \((.*)\)")
_IS_NULL = re.compile(r"(\w+) IS NULL")
_CONSTRAINED = re.compile(r"(\w+)=")  # equality: a range on a leading column leaves the rest unnarrowed
_STATE_ONLY_WORDS = {"state", "in", "and", "or", "not", "is", "null"}
_CANCEL_CHECK_STEPS = 20_000  # SQLite VM steps between two checks: ~0.1-0.3 ms of a scan


class ScanCancelled(Exception):
    """A scan stopped because its caller's `cancelled()` said so: nothing is wrong, and nothing is kept."""


def tiebreak(sort: str) -> str:
    """What orders the rows of a view that have the same `sort` value (a sort key of its own for page()): the
    rowid (the store's insertion order), which every index ends with. Sorted by state too: a filter on x
    sorted by state is then the (state, x) index read state by state (a skip-scan), where a msg_id tiebreak
    made SQLite walk (state, msg_id) past every non-match (ename:ValueError at 1M tasks: 58-340 ms a page)."""
    return "msg_id" if sort == "msg_id" else "rowid"


def view_ranges(sort: str) -> list[tuple[Filter | None, str]]:
    """The parts of a view sorted by `sort`, in their order, each as (the filter that picks it, the column
    that orders it). NULLs come last in either direction: a column a task may lack is the rows with a value
    (its partial indexes hold only those), then the rows without one, by the tiebreak."""
    if sort in _NOT_NULL:
        return [(None, sort)]
    return [((f"{sort} IS NOT NULL", ()), sort), ((f"{sort} IS NULL", ()), tiebreak(sort))]


def _unwrapped(sql: str) -> str:
    """`sql` without parentheses around all of it: combine() wraps each filter it is given, so the app's
    view filter (the query AND the engine selection) reaches counts() as `((q))` and engine_counts() as
    `(q)`; the same scan, memoized once."""
    while sql.startswith("(") and sql.endswith(")"):
        depth = 0
        for i, ch in enumerate(sql):
            depth += (ch == "(") - (ch == ")")
            if depth == 0 and i < len(sql) - 1:
                return sql  # `(a) AND (b)`: the first parenthesis closes before the end
        sql = sql[1:-1]
    return sql


def _state_only(sql: str) -> bool:
    """Whether a filter reads nothing but `state` (`state:failed`, a pane): the aggregate can answer it."""
    return "'" not in sql and '"' not in sql and all(w.lower() in _STATE_ONLY_WORDS for w in _WORDS.findall(sql))


def _agg_answers(sql: str) -> bool:
    """Whether the `agg` table can count what this filter (as `combine` gives it) matches."""
    return sql == "1" or _state_only(sql)


def _agg_filter(where: "Filter | None") -> tuple[str, tuple] | None:
    """(SQL over `agg`, params) for a filter the aggregate can count, else None."""
    if where is None:
        return ("1", ())
    key = (where[0], tuple(where[1]))
    sql = _AGG_WHERE.get(key)
    if sql is None:
        return key if _state_only(key[0]) else None
    return (sql, key[1] if sql != "resub" else ())


_UPSERT = (
    f"INSERT INTO tasks ({_SELECT}, signature, gen) VALUES ({', '.join('?' * (len(COLUMNS) + 2))}) "
    "ON CONFLICT(msg_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:] + ("signature", "gen"))
)

_NOT_NULL = {"msg_id", "state", "rowid"}
_NULLS_INDEXED = {"submitted", "engine_id", "duration", "completed"}  # their (x) index is not partial
_WRITTEN = COLUMNS + ("signature", "gen")  # the columns of _UPSERT, in TaskStore._row's order
_COMPARED = tuple(range(1, len(COLUMNS) + 1))  # a known row's columns a poll may change (not msg_id, gen)

CACHE_MB = 32  # SQLite page cache of the store (see TaskStore.__init__)
STATS_MIN_ROWS = 20_000  # below, SQLite's default plans are fine (and everything is fast)

_LEADING_STATES = re.compile(r"^(\(*)state IN \((\?(?:, \?)*)\)")  # a pane's; combine() adds the parentheses

_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def failure_signature(ename: str | None, evalue: str | None) -> str:
    """Group key for failure triage: exception name + the message with numbers and quoted parts masked.

    'ValueError: bad value 7' and 'ValueError: bad value 9' land in one group; so do two EngineErrors
    naming different engines and task ids.
    """
    lines = (evalue or "").strip().splitlines()
    message = _NUMBERS.sub("N", _QUOTED.sub("'…'", lines[0])) if lines else ""
    return f"{ename or 'Error'}: {message}" if message else (ename or "Error")


def pane_filter(pane: str) -> Filter:
    try:
        return PANES[pane]
    except KeyError:
        raise ValueError(f"unknown pane {pane!r}; one of {', '.join(PANES)}") from None


def engine_filter(engine_uuids: Iterable[str | None]) -> Filter:
    """Tasks of these engines; None stands for "no engine" (unassigned tasks, scheduler failures)."""
    uuids = [u for u in engine_uuids if u is not None]
    parts = []
    if uuids:
        parts.append(f"engine_uuid IN ({', '.join('?' * len(uuids))})")
    if any(u is None for u in engine_uuids):
        parts.append("engine_uuid IS NULL")
    return (f"({' OR '.join(parts)})", uuids) if parts else ("0", ())


def ids_filter(msg_ids: Sequence[str]) -> Filter:
    if not msg_ids:
        return ("0", ())
    return ("msg_id IN (SELECT value FROM json_each(?))", (_json_list(msg_ids),))


def _json_list(items: Sequence[str]) -> str:
    import json

    return json.dumps(list(items))


def combine(*filters: Filter | None) -> Filter:
    """AND of several filters (None entries are skipped)."""
    parts = [f for f in filters if f is not None and f[0] not in ("1", "")]
    if not parts:
        return ("1", ())
    sql = " AND ".join(f"({s})" for s, _ in parts)
    params: list[object] = []
    for _, p in parts:
        params.extend(p)
    return (sql, params)


@dataclass(slots=True)
class ApplyResult:
    added: int = 0
    changed: int = 0
    removed: int = 0
    new_failures: list[str] = field(default_factory=list)  # msg_ids that became failed (not during a load)
    loading: bool = False


class ActionRow(NamedTuple):
    state: State
    engine_id: int | None
    engine_uuid: str | None
    queue: str | None
    resubmitted: str | None


@dataclass(slots=True)
class FailureGroup:
    signature: str
    ename: str | None
    count: int
    newest: float | None  # epoch seconds of the newest completion in the group
    example_id: str
    engines: int  # distinct engines in the group


def _row_to_record(row: Sequence) -> TaskRecord:
    (msg_id, state, engine_uuid, engine_id, queue, label, client, submitted, started, completed, received,
     _duration, ename, evalue, resubmitted, stdout_size, stderr_size, run) = row
    return TaskRecord(
        msg_id=msg_id,
        state=State(state),
        engine_uuid=engine_uuid,
        engine_id=engine_id,
        queue=queue,
        label=label,
        client=client,
        submitted=from_epoch(submitted),
        started=from_epoch(started),
        completed=from_epoch(completed),
        received=from_epoch(received),
        ename=ename,
        evalue=evalue,
        resubmitted=resubmitted,
        stdout_size=stdout_size,
        stderr_size=stderr_size,
        run=run,
    )


class TaskStore:
    """Indexed table of TaskRecords, plus the engines and the Hub's queue status."""

    def __init__(self, path: str = "", cache_mb: int = CACHE_MB) -> None:
        # path "": SQLite's private temporary file, deleted on close. Only `cache_mb` of its pages stay in
        # this process (a million tasks with their indexes take ~1 GB; the OS page cache keeps the rest
        # warm, and it is not ours to count). ":memory:" keeps everything in the process. temp_store FILE:
        # a sort or GROUP BY over a million rows spills to a temporary file instead of growing the process.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE;")
        self._db.execute(f"PRAGMA cache_size = {-1024 * int(cache_mb)}")
        self._db.executescript(_SCHEMA)
        install_sql_functions(self._db)  # REGEXP, for `$regex` filters
        self._lock = threading.RLock()
        self._gen = 0
        self._loading_reset = False
        self._engines: dict[str, Engine] = {}
        self._engine_list: tuple[Engine, ...] = ()  # engines() without the lock: rebuilt by apply()
        self._engine_list_state: list[tuple] = []
        self.queue: QueueStatus | None = None
        self._total = 0
        self.version = 0  # bumped by every apply that changed something: views re-read when it moves
        self.removed_total = 0  # records that vanished from the source (purged, culled) since start
        self.loading = False
        self.load_done = 0
        self.load_total: int | None = None
        self.filling: tuple[int, int] | None = None  # (done, total) of a load's second phase (Delta.filling)
        self._load_counts: dict[str, int] | None = None  # Delta.counts of the load under way
        self._memos: dict[tuple, tuple[int, object]] = {}  # filtered scans of the current version
        self._stale_rows = False  # the load under way replaces rows held before it

    # -- writing -------------------------------------------------------------------------------

    def apply(self, delta: Delta) -> ApplyResult:
        result = ApplyResult(loading=delta.loading)
        with self._lock:
            was_loading = self.loading
            db = self._db
            db.execute("BEGIN")
            try:
                if delta.reset:
                    self._gen += 1
                    self._loading_reset = True
                    # nothing older can remain after a first load: skip the final scan (1M rows: ~1 s locked)
                    self._stale_rows = db.execute("SELECT 1 FROM tasks LIMIT 1").fetchone() is not None
                bulk = self._loading_reset
                engines_changed = False
                if delta.engines is not None:
                    before_engines = self._engine_state()
                    self._merge_engines(delta.engines)
                    engines_changed = self._engine_state() != before_engines
                if delta.queue is not None:
                    engines_changed = engines_changed or delta.queue != self.queue
                    self.queue = delta.queue
                if delta.upserts and bulk:
                    known = self._engine_ids()
                    rows = []
                    for r in delta.upserts:
                        rows.append(self._row(r, self._engine_id(r, known)))
                    result.added = len(rows)
                    db.executemany(_UPSERT, rows)
                elif delta.upserts:
                    self._apply_changes(delta.upserts, result)
                if delta.removed:
                    cur = db.execute(
                        "DELETE FROM tasks WHERE msg_id IN (SELECT value FROM json_each(?))",
                        (_json_list(delta.removed),),
                    )
                    result.removed += cur.rowcount
                    self.removed_total += cur.rowcount
                if delta.counts is not None:
                    self._load_counts = dict(delta.counts)
                if delta.reset:
                    self.filling = None
                elif delta.filling is not None:
                    done, total = delta.filling
                    self.filling = (done, total) if done < total else None
                if delta.reset or delta.loading:
                    self.loading = True
                    self.load_done = delta.done
                    self.load_total = delta.total
                if self._loading_reset and not delta.loading:
                    # The (re)load is complete: whatever was not delivered again is gone.
                    if self._stale_rows:
                        cur = db.execute("DELETE FROM tasks WHERE gen < ?", (self._gen,))
                        result.removed += cur.rowcount
                    self._loading_reset = False
                    self.loading = False
                    self._load_counts = None
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._total = db.execute("SELECT coalesce(sum(n), 0) FROM agg").fetchone()[0]
            engine_state = self._engine_state()
            if engine_state != self._engine_list_state:
                self._engine_list_state = engine_state
                self._engine_list = tuple(sorted(
                    (e.copy() for e in self._engines.values()),
                    key=lambda e: (not e.alive, e.id if e.id is not None else 1 << 30, e.uuid)))
            if was_loading and not self.loading:
                self._write_stats()
            # An idle poll (same engines, same queues, no task changed) leaves the version alone, so the
            # views do not re-read and repaint every second for nothing.
            if result.added or result.changed or result.removed or engines_changed \
                    or delta.reset or delta.loading or was_loading != self.loading:
                self.version += 1
        return result

    def _engine_id(self, r: TaskRecord, known: dict[str, int]) -> int | None:
        engine_id = r.engine_id if r.engine_id is not None else known.get(r.engine_uuid or "")
        if r.engine_uuid and r.engine_uuid not in self._engines:
            self._engines[r.engine_uuid] = Engine(uuid=r.engine_uuid, id=engine_id, alive=False)
        return engine_id

    def _apply_changes(self, upserts: Sequence[TaskRecord], result: ApplyResult) -> None:
        """A poll's upserts (not a load): new rows inserted; a known row updates only the columns that
        differ, and an identical one is not written at all. An UPDATE rewrites the entries of every index
        holding a column it sets, changed or not (~25 indexes: 1M tasks, 100 changes, ~1 ms per poll)."""
        db = self._db
        records = list({r.msg_id: r for r in upserts}.values())  # the last of a msg_id given twice wins
        before = {
            row[0]: row for row in db.execute(
                f"SELECT {_SELECT}, signature FROM tasks WHERE msg_id IN (SELECT value FROM json_each(?))",
                (_json_list([r.msg_id for r in records]),),
            )
        }
        known = self._engine_ids()
        inserts = []
        updates: dict[tuple[int, ...], list[tuple]] = {}
        failed = State.FAILED.value
        for r in records:
            row = self._row(r, self._engine_id(r, known))
            old = before.get(r.msg_id)
            if old is None:
                inserts.append(row)
                result.added += 1
            else:
                changed = tuple(i for i in _COMPARED if row[i] != old[i])
                if not changed:
                    continue
                updates.setdefault(changed, []).append(tuple(row[i] for i in changed) + (r.msg_id,))
                result.changed += 1
            if row[1] == failed and (old is None or old[1] != failed):
                result.new_failures.append(r.msg_id)
        if inserts:
            db.executemany(_UPSERT, inserts)
        for changed, rows in updates.items():
            sets = ", ".join(f"{_WRITTEN[i]} = ?" for i in changed)
            db.executemany(f"UPDATE tasks SET {sets} WHERE msg_id = ?", rows)

    def _write_stats(self) -> None:
        """Planner statistics (sqlite_stat1) from what the store knows, after a load: without them SQLite takes
        `label = ?` for a handful of rows and sorts a 80k-row filtered view instead of walking the sort
        index (1M tasks, a filtered page + cursor position: p95 330 -> 100 ms). ~0.2 s at 1M, vs 1.8 s for
        ANALYZE. An optimisation only: a failure leaves the planner's defaults."""
        db = self._db
        try:
            n, resub = db.execute("SELECT coalesce(sum(n), 0), coalesce(sum(resub), 0) FROM agg").fetchone()
            if n < STATS_MIN_ROWS:
                return
            failed = db.execute("SELECT coalesce(sum(n), 0) FROM agg WHERE state = ?", (State.FAILED.value,)).fetchone()[0]
            distinct = {
                "state": db.execute("SELECT count(DISTINCT state) FROM agg WHERE n > 0").fetchone()[0],
                "engine_uuid": db.execute("SELECT count(DISTINCT engine) FROM agg WHERE n > 0").fetchone()[0],
            }
            for column in ("engine_id", "label", "ename"):  # index-only scans of their (x) indexes, and NULL
                distinct[column] = 1 + db.execute(
                    f"SELECT count(*) FROM (SELECT DISTINCT {column} FROM tasks WHERE {column} IS NOT NULL)"
                ).fetchone()[0]
            for column in ("duration", "completed"):
                # Nearly every value is unique, but `x IS NULL` (a view's NULL range) is an equality on the
                # full (x) index that matches every unfinished task: told it matches one row, SQLite read
                # all 143k NULL durations for the Pending pane + engine:3 sorted by duration at 1M (200 ms).
                nulls = db.execute(f"SELECT count(*) FROM tasks WHERE {column} IS NULL").fetchone()[0]
                distinct[column] = max(1, n // max(1, nulls))
            rows = []
            for (name, where) in db.execute(
                "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'tasks'"
            ).fetchall():
                columns = [r[2] for r in db.execute(f"PRAGMA index_info({name})").fetchall()]
                # The `x IS NOT NULL` indexes count as the whole table, as when they held every row: told that
                # the (label) index holds 200k of 1M rows, SQLite takes `label = ?` for 25k rows and sorts them
                # rather than walk the sort column's index (label:x sorted by completed at 1M: 4 -> 90 ms).
                total = n
                if where and "resubmitted IS NOT NULL" in where:
                    total = resub
                elif where and "signature IS NOT NULL" in where:
                    total = failed
                total = max(1, total)
                stat, seen = [str(total)], 1
                for column in columns:
                    seen *= max(1, distinct.get(column, total))
                    stat.append(str(max(1, total // seen)))
                rows.append(("tasks", name, " ".join(stat)))
            db.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1
            db.execute("DELETE FROM sqlite_stat1")
            db.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", rows)
            db.execute("ANALYZE sqlite_schema")  # the planner reads them
        except sqlite3.Error:
            pass

    def _row(self, r: TaskRecord, engine_id: int | None) -> tuple:
        submitted, started, completed = to_epoch(r.submitted), to_epoch(r.started), to_epoch(r.completed)
        duration = max(0.0, completed - started) if started is not None and completed is not None else None
        signature = failure_signature(r.ename, r.evalue) if r.state is State.FAILED else None
        return (
            r.msg_id, r.state.value, r.engine_uuid, engine_id, r.queue, r.label, r.client, submitted, started,
            completed, to_epoch(r.received), duration, r.ename, r.evalue, r.resubmitted, r.stdout_size,
            r.stderr_size, r.run, signature, self._gen,
        )

    def _engine_ids(self) -> dict[str, int]:
        return {u: e.id for u, e in self._engines.items() if e.id is not None}

    def _engine_state(self) -> list[tuple]:
        return [(e.uuid, e.id, e.alive, e.queue, e.tasks, e.completed) for e in self._engines.values()]

    def _merge_engines(self, engines: list[Engine]) -> None:
        live = {e.uuid for e in engines if e.alive}
        for e in self._engines.values():
            if e.uuid not in live:
                e.alive = False
                e.queue = e.tasks = 0
        for e in engines:
            known = self._engines.get(e.uuid)
            if known is None or known.id != e.id:
                if e.id is not None:
                    self._db.execute(
                        "UPDATE tasks SET engine_id = ? WHERE engine_uuid = ? AND engine_id IS NOT ?",
                        (e.id, e.uuid, e.id),
                    )
            self._engines[e.uuid] = e.copy()  # a copy: the caller's engine stays its own

    # -- reading -------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[object] = (), cancelled: Callable[[], bool] | None = None
               ) -> list[tuple]:
        """`cancelled`: asked every few thousand SQLite steps while the statement runs; True stops it
        (ScanCancelled), so a scan for a filter the user has already left lets go of the lock."""
        with self._lock:
            if cancelled is None:
                return self._db.execute(sql, params).fetchall()
            stopped = False

            def check() -> bool:
                nonlocal stopped
                stopped = cancelled()
                return stopped

            self._db.set_progress_handler(check, _CANCEL_CHECK_STEPS)
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:  # "interrupted"
                if stopped:
                    raise ScanCancelled(sql) from exc
                raise
            finally:
                self._db.set_progress_handler(None, 0)

    @property
    def total(self) -> int:
        """Tasks in the store, as of the last apply: read without the lock, so the UI thread never waits
        behind a filter's scan in a worker for it."""
        return self._total

    def count(self, where: Filter | None = None) -> int:
        agg = _agg_filter(where)
        if agg is not None:
            sql, params = agg
            column = "resub" if sql == "resub" else "n"
            where_sql = "1" if sql == "resub" else sql
            return self._query(f"SELECT coalesce(sum({column}), 0) FROM agg WHERE {where_sql}", params)[0][0]
        sql, params = self._narrow(combine(where))
        return self._memo("count", sql, params,
                          lambda: self._query(f"SELECT count(*) FROM tasks WHERE {sql}", params)[0][0])

    def _memo(self, kind: str, sql: str, params: Sequence[object], compute):
        """A filtered scan's result, kept until the store changes: a filter applied at 1M tasks is read by
        the table, the pane counts and the engine list in the same frame (each scan ~50-300 ms)."""
        version = self.version
        key = (kind, _unwrapped(sql), tuple(params))
        hit = self._memos.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        if len(self._memos) > 64:
            self._memos.clear()
        self._memos[key] = (version, value)
        return value

    def _grouped(self, sql: str, params: Sequence[object], cancelled: Callable[[], bool] | None) -> list[tuple]:
        """(engine_uuid, state, count, resubmitted count) of the tasks matching a filter: one scan serves
        counts() and engine_counts()."""
        return self._memo("grouped", sql, params, lambda: self._query(
            f"SELECT engine_uuid, state, count(*), count(resubmitted) FROM tasks WHERE {sql} "
            "GROUP BY engine_uuid, state", params, cancelled))

    def counts(self, where: Filter | None = None, cancelled: Callable[[], bool] | None = None) -> dict[str, int]:
        """Tasks per pane (pending includes queued and running; resubmitted counts originals).
        `cancelled`: see _query(); a filter's scan of 1M tasks holds the store for 45-300 ms."""
        sql, params = combine(where)
        announced = self._load_counts
        if sql == "1" and announced is not None and self.loading:
            # a load under way announced its counts: show them rather than the rows loaded so far
            out = {pane: announced.get(pane, 0) for pane in PANES}
            if "queued" not in announced:  # unfinished, not known to be running (as the Queued pane)
                out["queued"] = out["pending"] - out["running"]
            return out
        if _agg_answers(sql):
            rows = self._query(
                f"SELECT state, sum(n), sum(resub) FROM agg WHERE {sql} GROUP BY state HAVING sum(n) > 0", params
            )
        else:
            rows = [(state, n, resubmitted) for _, state, n, resubmitted in self._grouped(sql, params, cancelled)]
        out = {pane: 0 for pane in PANES}
        for state, n, resubmitted in rows:
            out[state] = out.get(state, 0) + n
            out["resubmitted"] += resubmitted
            out["all"] += n
            if state in (State.QUEUED.value, State.RUNNING.value):
                out["pending"] += n  # the pending pane holds queued and running tasks too
            elif state == State.PENDING.value:
                out["queued"] += n  # ... and the queued pane every task not known to be running
        return out

    def engine_counts(self, where: Filter | None = None, cancelled: Callable[[], bool] | None = None
                      ) -> dict[str | None, dict[str, int]]:
        """Per engine uuid (None: no engine): tasks per state, under an optional filter (`cancelled`: as counts())."""
        sql, params = combine(where)
        out: dict[str | None, dict[str, int]] = {}
        if _agg_answers(sql):
            for engine, state, n in self._query(f"SELECT engine, state, n FROM agg WHERE n > 0 AND ({sql})", params):
                out.setdefault(engine or None, {})[state] = n
            return out
        for uuid, state, n, _ in self._grouped(sql, params, cancelled):
            out.setdefault(uuid, {})[state] = n
        return out

    def aggregates_now(self, where: Filter | None = None, engine_where: Filter | None = None
                       ) -> tuple[dict[str, int], dict[str | None, dict[str, int]]] | None:
        """(counts(where), engine_counts(engine_where)) at once when the `agg` table answers both (a few hundred
        rows: well under a millisecond) and no write holds the store; else None: ask in a thread, a filter's
        scan of a million rows must not block the UI."""
        if not (_agg_answers(combine(where)[0]) and _agg_answers(combine(engine_where)[0])):
            return None
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self.counts(where), self.engine_counts(engine_where)
        finally:
            self._lock.release()

    def engines(self) -> list[Engine]:
        """Every engine ever seen, live ones first, by id, as of the last apply: read without the lock, so
        the engine list on the UI thread never waits behind a filter's scan in a worker (1M tasks: 15-80 ms)."""
        return [e.copy() for e in self._engine_list]  # copies: the snapshot stays as published

    def _order(self, sort: str, descending: bool) -> str:
        """ORDER BY of one of view_ranges(sort): no NULLs in it, and a tiebreak keeps paging stable."""
        if sort not in SORT_COLUMNS and sort != "rowid":
            raise ValueError(f"cannot sort by {sort!r}")
        direction = "DESC" if descending else "ASC"
        if sort in ("msg_id", "rowid"):  # unique: a tiebreak would cost a sort step
            return f"{sort} {direction}"
        return f"{sort} {direction}, {tiebreak(sort)} {direction}"

    def _narrow(self, where: Filter) -> Filter:
        """A pane over several states (Pending: pending, queued, running) without tasks in some of them
        drops those: `state = 'pending'` is served in sorted order by the (state, column) indexes, where an
        IN over several states makes SQLite sort the whole pane (1M tasks: 0.1-0.5 s per page)."""
        sql, params = where
        m = _LEADING_STATES.match(sql)
        if m is None:
            return where
        k = m.group(2).count("?")
        states = list(params[:k])
        present = {row[0] for row in self._query("SELECT state FROM agg WHERE n > 0")}
        keep = [s for s in states if s in present] or states[:1]
        if len(keep) == len(states):
            return where
        clause = "state = ?" if len(keep) == 1 else f"state IN ({', '.join('?' * len(keep))})"
        return (m.group(1) + clause + sql[m.end():], [*keep, *params[k:]])

    def page(
        self,
        where: Filter | None = None,
        *,
        sort: str = "submitted",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        matches: int | None = None,
    ) -> list[TaskRecord]:
        return [record for _, record in self.keyed_page(where, sort, descending, offset=offset, limit=limit,
                                                        matches=matches)]

    def keyed_page(self, where: Filter | None, sort: str, descending: bool, *, offset: int = 0,
                   limit: int = 50, matches: int | None = None) -> list[tuple[object, TaskRecord]]:
        """page(), each record with its tiebreak(sort) value, across the view's ranges (view_ranges).

        `matches`: how many tasks `where` matches, when the caller knows (the task table counts its view
        first). SQLite cannot tell `ename:KeyError` (50k tasks) from `ename:NoSuchError` (none), and walks
        the sort column's index looking for the page either way: seconds for a rare value at 1M tasks.
        Walking costs ~total/matches index steps per row of the page, sorting the matches ~matches: when
        that is cheaper, the matches are sorted (`ORDER BY +column` keeps the planner off the sort index)."""
        offset, limit = max(0, offset), max(0, limit)
        self._order(sort, descending)  # an unknown column fails here, not in SQL
        sort_matches = matches is not None and matches * matches < self._total * (offset + limit) \
            and _agg_filter(where) is None
        out: list[tuple[object, TaskRecord]] = []
        ranges = view_ranges(sort)
        for i, (part, column) in enumerate(ranges):
            rows = self.range_page(combine(where, part), column, descending, offset=offset, limit=limit - len(out),
                                   sort_matches=sort_matches)
            out += rows
            if len(out) == limit or i == len(ranges) - 1:
                break
            # this range ended: where the next one starts, in its own rows
            size = offset + len(rows) if rows or offset == 0 else self.count(combine(where, part))
            offset = max(0, offset - size)
        return out

    def range_sizes(self, where: Filter | None, sort: str, matches: int) -> list[int]:
        """How many of a view's `matches` rows each of view_ranges(sort) holds. One range is counted and the
        other is the rest: the rows without a value where the whole table is the view and the column's
        index holds NULLs too (an index range; the rows with one would be most of the index), else the rows
        with one, which the partial (x) and (state, x) indexes hold alone."""
        ranges = view_ranges(sort)
        if len(ranges) == 1:
            return [matches]
        whole = _agg_filter(where) == ("1", ())
        if whole and sort in _NULLS_INDEXED:
            without = self.count(combine(where, ranges[1][0]))
            return [matches - without, without]
        filled = self.count(combine(where, ranges[0][0]))
        return [filled, matches - filled]

    def range_page(self, where: Filter | None, column: str, descending: bool, *, offset: int = 0,
                   limit: int = 50, sort_matches: bool = False) -> list[tuple[object, TaskRecord]]:
        """Rows [offset, offset+limit) of one of view_ranges(): `where` includes the range's filter and
        `column` is the column that orders it. Each record comes with its tiebreak(column) value: a keyset
        walk goes on after the last one with `(column, tiebreak) < (value, key)` (or `>`), whatever the
        poller wrote meanwhile (export.py).
        `sort_matches`: sort the rows `where` matches rather than walk the column's index (keyed_page)."""
        sql, params = self._narrow(combine(where))
        select = f"SELECT {tiebreak(column)}, {_SELECT} FROM tasks WHERE {sql} ORDER BY %s LIMIT ? OFFSET ?"
        order = self._order(column, descending)
        args = [*params, max(0, limit), max(0, offset)]
        if sort_matches and not self._walk_is_narrowed(select % order, args, column):
            order = "+" + order  # keeps the planner off the indexes that give this order
        rows = self._query(select % order, args)
        return [(r[0], _row_to_record(r[1:])) for r in rows]

    def _walk_is_narrowed(self, select: str, params: Sequence[object], column: str) -> bool:
        """Whether SQLite reads this query's rows in order from an index that the filter narrows, as the
        (state, ename) index skipped state by state for ename:E sorted by state: then the walk reads only
        the matches, where sorting them would read them all (engine:3 sorted by state at 1M: 26 ms -> 0.1)."""
        plan = [row[3] for row in self._query("EXPLAIN QUERY PLAN " + select, params)]
        if any("TEMP B-TREE" in step for step in plan):
            return False
        for step in plan:
            m = _INDEX_CONSTRAINTS.search(step)
            # `x IS NULL` reads as `x=?` in a plan: a view's NULL range (view_ranges) is not a narrowing filter
            if m and set(_CONSTRAINED.findall(m.group(1))) - {"state", column, "rowid", *_IS_NULL.findall(select)}:
                return True
        return False

    def position(
        self,
        msg_id: str,
        where: Filter | None = None,
        *,
        sort: str = "submitted",
        descending: bool = True,
        within: int | None = None,
    ) -> int | None:
        """Row index of msg_id in the sorted, filtered list (None if it is not in it).

        Counting the rows before it walks an index range as long as its depth (~75 ms at row 1M). `within`
        bounds that walk: a task deeper than `within` rows answers None, like one outside the view."""
        tie = tiebreak(sort)
        sql, params = combine(where, ("msg_id = ?", (msg_id,)))
        row = self._query(f"SELECT {sort}, {tie} FROM tasks WHERE {sql}", params)
        if not row:
            return None
        value, tied = row[0]
        op = ">" if descending else "<"
        # two index range counts (an OR of both would make SQLite scan the whole view)
        if value is None:  # NULLs come last either way
            before = [(f"{sort} IS NOT NULL", ()), (f"{sort} IS NULL AND {tie} {op} ?", (tied,))]
        else:
            before = [(f"{sort} {op} ?", (value,)), (f"{sort} = ? AND {tie} {op} ?", (value, tied))]
        if within is None:
            return sum(self.count(combine(where, b)) for b in before)
        total = 0
        for b in before:
            total += self._count_upto(combine(where, b), within - total)
            if total >= within:
                return None
        return total

    def _count_upto(self, where: Filter, limit: int) -> int:
        """min(count(where), limit), reading at most `limit` index entries."""
        if _agg_filter(where) is not None:
            return min(self.count(where), limit)
        sql, params = self._narrow(where)
        return self._query(f"SELECT count(*) FROM (SELECT 1 FROM tasks WHERE {sql} LIMIT ?)", [*params, limit])[0][0]

    def get(self, msg_id: str) -> TaskRecord | None:
        rows = self._query(f"SELECT {_SELECT} FROM tasks WHERE msg_id = ?", (msg_id,))
        return _row_to_record(rows[0]) if rows else None

    def get_many(self, msg_ids: Sequence[str]) -> list[TaskRecord]:
        sql, params = ids_filter(msg_ids)
        rows = self._query(f"SELECT {_SELECT} FROM tasks WHERE {sql}", params)
        return [_row_to_record(r) for r in rows]

    def action_rows(self, msg_ids: Sequence[str]) -> dict[str, ActionRow]:
        """What an action preview needs of each task, without building TaskRecords (cheap for 100k ids)."""
        sql, params = ids_filter(msg_ids)
        rows = self._query(
            f"SELECT msg_id, state, engine_id, engine_uuid, queue, resubmitted FROM tasks WHERE {sql}", params
        )
        states = {s.value: s for s in State}
        return {r[0]: ActionRow(states[r[1]], r[2], r[3], r[4], r[5]) for r in rows}

    def ids(self, where: Filter | None = None, *, limit: int | None = None) -> list[str]:
        sql, params = combine(where)
        tail = " LIMIT ?" if limit is not None else ""
        rows = self._query(
            f"SELECT msg_id FROM tasks WHERE {sql} ORDER BY submitted, rowid{tail}",
            [*params, limit] if limit is not None else params,
        )
        return [r[0] for r in rows]

    def resubmitted_from(self, msg_id: str) -> str | None:
        rows = self._query("SELECT msg_id FROM tasks WHERE resubmitted = ? LIMIT 1", (msg_id,))
        return rows[0][0] if rows else None

    def lineage(self, msg_id: str) -> list[str]:
        """The resubmission chain through msg_id, from the first original to the latest attempt."""
        chain = [msg_id]
        seen = {msg_id}
        parent = self.resubmitted_from(msg_id)
        while parent is not None and parent not in seen:
            chain.insert(0, parent)
            seen.add(parent)
            parent = self.resubmitted_from(parent)
        current = self.get(msg_id)
        nxt = current.resubmitted if current else None
        while nxt is not None and nxt not in seen:
            chain.append(nxt)
            seen.add(nxt)
            rec = self.get(nxt)
            nxt = rec.resubmitted if rec else None
        return chain

    def failure_groups(self, where: Filter | None = None) -> list[FailureGroup]:
        """Failed tasks grouped by signature, biggest group first."""
        sql, params = combine(where, PANES["failed"])
        rows = self._query(
            "SELECT signature, max(ename), count(*), max(completed), max(msg_id), count(DISTINCT engine_uuid) "
            f"FROM tasks WHERE {sql} GROUP BY signature ORDER BY count(*) DESC, max(completed) DESC",
            params,
        )
        return [FailureGroup(sig or "Error", ename, n, newest, example, engines) for sig, ename, n, newest, example, engines in rows]

    def signature_filter(self, signature: str) -> Filter:
        return ("signature = ?", (signature,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
