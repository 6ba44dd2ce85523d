"""`ReplaySource`: a recording (datasource/recorder.py) played back as a read-only Source.

The time axis is the list of recorded polls that left a complete state (a multi-chunk first load counts
once, at its last chunk): `times()`. A cursor (`position`, an index into `times()`) says which state
the store should show; `seek()` / `step()` move it (from any thread), and the next `sync()` yields
what brings the store there:

* forward by a few polls: the recorded deltas themselves, in order (new failures notify as they did);
* back by a few polls (no full load among them): one delta undoing them, with the tasks they touched as
  they were then (cost in proportion to the changes undone, not to the history);
* further, or across a full load: a reset rebuilding the state at that time from the file
  (the latest row of each task since the last full load, minus the tasks removed since).

The fill of a two-phase Hub load (`Delta.filling`) replays as it was seen: the recorded fill deltas carry
their `filling` again (what tells a fill from changes: the store's progress, `hubtop watch`'s lines), and a
rebuild or an undo ends with a delta that gives the store the fill's progress at the cursor. A recording
made before `filling` was recorded has no fill columns: its fill replays as ordinary changes, as it did.

The cursor starts at the end: opening a recording shows the last state hubtop saw (a post-mortem
of a Hub that is gone). Heavy fields were never recorded: `detail()` says so.
"""

from __future__ import annotations

import bisect
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..model import State, TaskDetail, from_epoch
from ..recorder import (
    TASK_COLUMNS,
    engines_from_json,
    open_recording,
    poll_columns,
    queue_from_json,
    row_to_record,
)
from .base import Capabilities, Delta, NotATaskDatabase, SourceError

__all__ = ["ReplaySource", "NOT_RECORDED", "READ_ONLY_REASON"]

NOT_RECORDED = "(not recorded)"
READ_ONLY_REASON = "replay is read-only"
_CHUNK = 10_000  # records per delta of a rebuild
_MAX_FORWARD = 200  # jumps over more recorded polls than this are rebuilt instead of replayed / undone
_COLS = ", ".join(f"t.{c}" for c in TASK_COLUMNS)


@dataclass(frozen=True, slots=True)
class RecordedSession:
    id: int
    started: datetime
    source_name: str | None
    kind: str | None
    backend: str | None
    hubtop_version: str | None
    capabilities: dict


class ReplaySource:
    """Replays a hubtop recording. Read-only; `times()`, `seek()`, `step()`, `position` move through it."""

    def __init__(self, path: str | os.PathLike, *, position: int | None = None) -> None:
        self.path = Path(path)
        self.name = f"replay of {self.path.name}"
        self._initial = position
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()  # cursor state: seek() runs on the UI thread, sync() on the worker
        self._db_lock = threading.Lock()
        self._steps: list[tuple[int, float, int]] = []  # (poll id, t, session) of each complete state
        self._times: list[float] = []
        self._sessions: dict[int, RecordedSession] = {}
        self._cursor = -1  # index into _steps
        self._delivered: int | None = None  # poll id the consumer's store reflects (None: nothing yet)
        self._has_fill = False  # `polls` has the columns of Delta.filling (older recordings do not)

    # -- life cycle ----------------------------------------------------------------------------

    def open(self) -> None:
        if self._db is not None:
            return
        db = open_recording(self.path)
        try:
            self._load_index(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise NotATaskDatabase(f"{self.path} is a truncated or corrupt recording ({_one_line(exc)})") from None
        if not self._steps:
            db.close()
            raise SourceError(f"{self.path} is an empty recording (hubtop recorded no poll)")
        self._db = db
        last = len(self._steps) - 1
        self._cursor = last if self._initial is None else max(0, min(last, _index(self._initial, last)))
        latest = self._sessions[max(self._sessions)] if self._sessions else None
        if latest is not None and latest.source_name:
            self.name = f"replay of {self.path.name} ({latest.source_name})"

    def _load_index(self, db: sqlite3.Connection) -> None:
        for sid, started, name, kind, backend, version, caps in db.execute(
            "SELECT id, started, source_name, kind, backend, hubtop_version, capabilities FROM sessions ORDER BY id"
        ):
            try:
                caps_dict = json.loads(caps) if caps else {}
            except ValueError:
                caps_dict = {}
            self._sessions[sid] = RecordedSession(sid, from_epoch(started) or datetime.now(timezone.utc), name, kind,
                                                  backend, version, caps_dict if isinstance(caps_dict, dict) else {})
        self._has_fill = {"fill_done", "fill_total"} <= poll_columns(db)
        self._steps = db.execute("SELECT id, t, session FROM polls WHERE loading = 0 ORDER BY id").fetchall()
        self._times = [t for _, t, _ in self._steps]

    def close(self) -> None:
        with self._db_lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()

    def _q(self, sql: str, params: tuple = ()) -> list[tuple]:
        """One query, fetched at once (detail() and sync() run on different worker threads)."""
        with self._db_lock:
            if self._db is None:
                raise SourceError(f"{self.name} is not open")
            return self._db.execute(sql, params).fetchall()

    # -- what it is ----------------------------------------------------------------------------

    @property
    def sessions(self) -> list[RecordedSession]:
        return [self._sessions[k] for k in sorted(self._sessions)]

    def capabilities(self) -> Capabilities:
        if self._db is None:
            try:
                self.open()  # what was recorded decides (engines, running): read it before the first poll
            except SourceError:
                pass  # open() / sync() report it
        session = self._session_at(self._cursor) if self._steps else None
        caps = session.capabilities if session else {}
        warnings = [str(w) for w in caps.get("warnings") or []]
        if self._steps:
            when = self.time_at(self._cursor).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            warnings.insert(0, f"replay: {when} (poll {self._cursor + 1} of {len(self._steps)})")
        return Capabilities(
            kind="replay",
            backend=(session.backend if session and session.backend else "unknown"),
            stores_tasks=bool(caps.get("stores_tasks", True)),
            knows_running=bool(caps.get("knows_running", False)),
            has_engines=bool(caps.get("has_engines", False)),
            can_resubmit=False,
            resubmit_reason=READ_ONLY_REASON,
            can_purge=False,
            purge_reason=READ_ONLY_REASON,
            read_only=True,
            warnings=tuple(warnings),
        )

    def _session_at(self, index: int) -> RecordedSession | None:
        return self._sessions.get(self._steps[index][2]) if self._steps else None

    # -- the time axis (any thread) ------------------------------------------------------------

    def times(self) -> list[datetime]:
        """The wall-clock time of every recorded state, oldest first (aware UTC datetimes)."""
        return [datetime.fromtimestamp(t, tz=timezone.utc) for t in self._times]

    def time_at(self, index: int) -> datetime:
        return datetime.fromtimestamp(self._times[index], tz=timezone.utc)

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def position(self) -> int:
        """Index into times() of the state the next sync() brings the store to."""
        return self._cursor

    @property
    def at_end(self) -> bool:
        return self._cursor == len(self._steps) - 1

    def seek(self, target: int | datetime) -> int:
        """Move the cursor to an index (negative counts from the end) or to the last state at or before a
        time (the first one if the time is earlier). Returns the new position; the next sync() applies it."""
        if not self._steps:
            raise SourceError(f"{self.name} is not open")
        last = len(self._steps) - 1
        if isinstance(target, datetime):
            when = target if target.tzinfo else target.replace(tzinfo=timezone.utc)
            index = max(0, bisect.bisect_right(self._times, when.timestamp()) - 1)
        elif isinstance(target, int) and not isinstance(target, bool):
            index = _index(target, last)
        else:
            raise TypeError(f"seek() takes an index or a datetime, not {type(target).__name__}")
        with self._lock:
            self._cursor = max(0, min(last, index))
            return self._cursor

    def step(self, n: int = 1) -> int:
        """Move the cursor n recorded states forward (negative: back), clamped to the recording."""
        with self._lock:
            return self.seek(max(0, self._cursor + n))

    # -- Source --------------------------------------------------------------------------------

    def sync(self) -> Iterator[Delta]:
        with self._lock:
            target_poll = self._steps[self._cursor][0] if self._steps else None
            delivered = self._delivered
        if target_poll is None:
            raise SourceError(f"{self.name} is not open")
        try:
            if delivered == target_poll:
                return
            if delivered is not None:
                lo, hi = sorted((delivered, target_poll))
                ((n, resets),) = self._q(
                    "SELECT count(*), coalesce(sum(reset), 0) FROM polls WHERE id > ? AND id <= ?", (lo, hi))
                if n <= _MAX_FORWARD and delivered < target_poll:
                    yield from self._replay(delivered, target_poll)
                    self._delivered = target_poll
                    return
                if n <= _MAX_FORWARD and not resets:
                    yield from self._rewind(target_poll, delivered)
                    self._delivered = target_poll
                    return
            yield from self._rebuild(target_poll)
            self._delivered = target_poll
        except sqlite3.DatabaseError as exc:
            raise NotATaskDatabase(f"{self.path} is a truncated or corrupt recording ({_one_line(exc)})") from None

    def _replay(self, after: int, upto: int) -> Iterator[Delta]:
        polls = self._q(
            "SELECT id, reset, loading, done, total, engines, queue, warnings, running, upserts, first_task, "
            f"removals, first_removed, {'fill_done, fill_total' if self._has_fill else 'NULL, NULL'} "
            "FROM polls WHERE id > ? AND id <= ? ORDER BY id",
            (after, upto),
        )
        for (pid, reset, loading, done, total, engines, queue, warnings, running, n_up, first_up, n_rm, first_rm,
             fill_done, fill_total) in polls:
            # A poll's rows are consecutive rowids (recorded in one transaction): no index needed.
            upserts = [row_to_record(r) for r in self._q(
                f"SELECT {_COLS} FROM tasks t WHERE rowid >= ? AND rowid < ? ORDER BY rowid",
                (first_up, first_up + n_up))] if n_up else []
            removed = [r[0] for r in self._q(
                "SELECT msg_id FROM removed WHERE rowid >= ? AND rowid < ? ORDER BY rowid",
                (first_rm, first_rm + n_rm))] if n_rm else []
            yield Delta(
                upserts=upserts,
                removed=removed,
                engines=engines_from_json(engines),
                queue=queue_from_json(queue),
                reset=bool(reset),
                loading=bool(loading),
                done=done,
                total=total,
                warnings=json.loads(warnings) if warnings else [],
                running=set(json.loads(running)) if running else None,
                filling=None if fill_total is None else (int(fill_done or 0), int(fill_total)),
            )

    def _filling_at(self, upto: int) -> tuple[int, int] | None:
        """The fill under way right after poll `upto` as the live store had it: the last recorded fill delta
        since the last full load, while it was not complete (the store drops a complete one)."""
        if not self._has_fill:
            return None
        rows = self._q(
            "SELECT fill_done, fill_total FROM polls WHERE fill_total IS NOT NULL AND id <= ? "
            "AND id >= (SELECT coalesce(max(id), 0) FROM polls WHERE reset = 1 AND id <= ?) ORDER BY id DESC LIMIT 1",
            (upto, upto),
        )
        if not rows:
            return None
        done, total = int(rows[0][0] or 0), int(rows[0][1])
        return (done, total) if done < total else None

    def _rows_range(self, table: str, after: int, upto: int) -> tuple[int, int]:
        """The rowids of `table` (tasks / removed) written by the polls after `after` up to `upto`."""
        first, count = ("first_task", "upserts") if table == "tasks" else ("first_removed", "removals")
        ((lo,),) = self._q(f"SELECT coalesce(max({first} + {count} - 1), 0) FROM polls WHERE id <= ? AND {count} > 0",
                           (after,))
        ((hi,),) = self._q(f"SELECT coalesce(max({first} + {count} - 1), 0) FROM polls WHERE id <= ? AND {count} > 0",
                           (upto,))
        return lo, hi

    def _rewind(self, target: int, current: int) -> Iterator[Delta]:
        """Undo the polls after `target` up to `current` (no reset among them): one delta with the
        tasks they touched as they were at `target` (removed if they did not exist then), and one with
        the fill's progress at `target` if it differs from `current`'s ((0, 0): no fill under way)."""
        touched: set[str] = set()
        for table in ("tasks", "removed"):
            lo, hi = self._rows_range(table, target, current)
            if hi > lo:
                touched.update(r[0] for r in self._q(f"SELECT msg_id FROM {table} WHERE rowid > ? AND rowid <= ?", (lo, hi)))
        ((since,),) = self._q("SELECT coalesce(max(id), 0) FROM polls WHERE reset = 1 AND id <= ?", (target,))
        ids = json.dumps(sorted(touched))
        rows = self._q(
            "WITH latest AS (SELECT t.msg_id, max(t.rowid) AS rid FROM tasks t "
            "JOIN (SELECT value AS msg_id FROM json_each(?)) ids ON ids.msg_id = t.msg_id "
            "WHERE t.poll >= ? AND t.poll <= ? GROUP BY t.msg_id) "
            f"SELECT {_COLS} FROM latest JOIN tasks t ON t.rowid = latest.rid "
            "WHERE NOT EXISTS (SELECT 1 FROM removed r WHERE r.msg_id = t.msg_id AND r.poll >= t.poll AND r.poll <= ?)",
            (ids, since, target, target),
        )
        upserts = [row_to_record(r) for r in rows]
        present = {r.msg_id for r in upserts}
        running_json = self._latest("running", target)
        yield Delta(
            upserts=upserts,
            removed=sorted(touched - present),
            engines=engines_from_json(self._latest("engines", target)),
            queue=queue_from_json(self._latest("queue", target)),
            running=set(json.loads(running_json)) if running_json else None,
        )
        filling = self._filling_at(target)
        if filling != self._filling_at(current):
            yield Delta(filling=filling or (0, 0))

    def _state_query(self, upto: int) -> tuple[str, tuple]:
        """SQL for the light fields of every task present right after poll `upto`."""
        ((since,),) = self._q("SELECT coalesce(max(id), 0) FROM polls WHERE reset = 1 AND id <= ?", (upto,))
        sql = (
            "WITH latest AS (SELECT msg_id, max(rowid) AS rid FROM tasks WHERE poll >= ? AND poll <= ? GROUP BY msg_id) "
            f"SELECT {_COLS}, t.poll FROM latest JOIN tasks t ON t.rowid = latest.rid "
            "WHERE NOT EXISTS (SELECT 1 FROM removed r WHERE r.msg_id = t.msg_id AND r.poll >= t.poll AND r.poll <= ?)"
        )
        return sql, (since, upto, upto)

    def _latest(self, column: str, upto: int) -> str | None:
        rows = self._q(
            f"SELECT {column} FROM polls WHERE {column} IS NOT NULL AND id <= ? ORDER BY id DESC LIMIT 1", (upto,)
        )
        return rows[0][0] if rows else None

    def _rebuild(self, upto: int) -> Iterator[Delta]:
        sql, params = self._state_query(upto)
        rows = self._q(sql, params)
        engines = engines_from_json(self._latest("engines", upto))
        queue = queue_from_json(self._latest("queue", upto))
        running_json = self._latest("running", upto)
        running = set(json.loads(running_json)) if running_json else None
        total = len(rows)
        filling = self._filling_at(upto)
        if not rows:
            yield Delta(reset=True, engines=engines, queue=queue, total=0, running=running)
            return
        for start in range(0, total, _CHUNK):
            part = rows[start:start + _CHUNK]
            first = start == 0
            yield Delta(
                upserts=[row_to_record(r[:-1]) for r in part],
                reset=first,
                loading=start + _CHUNK < total,
                done=start + len(part),
                total=total,
                engines=engines if first else None,
                queue=queue if first else None,
                running=running if first else None,
            )
        if filling is not None:  # a reset ends any fill in the store: the fill under way then comes after it
            yield Delta(filling=filling)

    def detail(self, msg_id: str) -> TaskDetail:
        """What was recorded of this task at the cursor: its light fields only."""
        with self._lock:
            upto = self._steps[self._cursor][0] if self._steps else None
        if upto is None:
            raise SourceError(f"{self.name} is not open")
        try:
            rows = self._q(
                f"SELECT {_COLS}, t.poll FROM tasks t WHERE t.msg_id = ? AND t.poll <= ? ORDER BY t.rowid DESC LIMIT 1",
                (msg_id, upto),
            )
            parents = self._q(
                "SELECT msg_id FROM tasks WHERE resubmitted = ? AND poll <= ? ORDER BY rowid DESC LIMIT 1",
                (msg_id, upto),
            )
        except sqlite3.DatabaseError as exc:
            raise NotATaskDatabase(f"{self.path} is a truncated or corrupt recording ({_one_line(exc)})") from None
        row = rows[0] if rows else None
        parent = parents[0] if parents else None
        if row is None:
            raise SourceError(f"task {msg_id} is not in the recording at {self.time_at(self._cursor):%H:%M:%S}")
        record = row_to_record(row[:-1])
        traceback: list[str] = []
        if record.state is State.FAILED:
            traceback = [f"{record.ename or 'Error'}: {record.evalue or ''}".rstrip(), f"traceback {NOT_RECORDED}"]
        return TaskDetail(
            record=record,
            stdout=NOT_RECORDED,
            stderr=NOT_RECORDED,
            traceback=traceback,
            code=None,
            resubmitted_from=parent[0] if parent else None,
        )

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        from .base import ActionRefused

        raise ActionRefused(f"cannot resubmit: {READ_ONLY_REASON}")

    def purge(self, msg_ids: list[str]) -> int:
        from .base import ActionRefused

        raise ActionRefused(f"cannot purge: {READ_ONLY_REASON}")


def _index(i: int, last: int) -> int:
    return last + 1 + i if i < 0 else i


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
