"""What a database source (SQLite file, MongoDB) gets from being paired with a Hub (`--hub`, the direct path).

Engines, queue counts and the ids in flight come from the Hub; resubmitting always goes through it.
Shared by `SQLiteSource` and `MongoSource` through `PairedHub`, which also:

* tells running tasks from pending ones: an `IOPubListener` on the Hub's IOPub relay (as `HubSource`
  does) gives the ids seen `status: busy` and not yet idle, while the cluster finishes fewer tasks a second
  than the listener follows (`IOPubListener.pace`, from the Hub's completed counts; a standing note says
  so). A task seen idle stays marked running for FINISHING_SECONDS at most (the Hub writes its completion
  to the database up to ~2 s later: without this it would show as queued in between); a busy id the Hub
  no longer has in flight is treated as idle (an idle lost to the socket's high-water mark). A fresh
  subscriber misses tasks that started before it connected: a task alone in flight on its engine (the
  Hub's verbose `queue_request`, asked while fewer than VERBOSE_LIMIT tasks completed) is running too;
  others stay pending. The source asks `marks_changed()` each sync and upserts the pending records whose
  mark changed, even when the database did not change.
* names the in-flight ids a poll need not re-read (`still_unassigned`): those the scheduler still queues,
  whose rows cannot have changed since their submission.
* keeps a Hub that is down from slowing the database: after a failed request the Hub is asked again
  only after BACKOFF_FIRST s, then twice as long each time up to BACKOFF_MAX, with a short timeout
  (RETRY_TIMEOUT) for that first request; meanwhile the database is read every poll, the capabilities
  carry one standing warning, and no task is marked running (no idle can arrive from a dead relay).
  Per-poll requests use POLL_TIMEOUT at most; actions (resubmit, purge) keep the client's own timeout.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from ..hubclient import IOPubListener
from ..model import QueueStatus, State
from .base import ActionRefused, Delta, SourceError

__all__ = [
    "PairedHub",
    "resubmit_via",
    "VERBOSE_LIMIT",
    "RESUBMIT_REASON",
    "PURGE_REASON",
]

log = logging.getLogger("hubtop")

VERBOSE_LIMIT = 20_000  # a verbose queue_request lists every completed msg_id: above this, don't ask
RESUBMIT_REASON = "resubmit needs the Hub: pass --hub CONNECTION_FILE"
PURGE_REASON = "purging needs the Hub (--hub CONNECTION_FILE) or write access (allow_writes) to a tasks.db no Hub is using"
POLL_TIMEOUT = 2.0  # per-poll requests to a paired Hub (a local Hub answers in milliseconds)
RETRY_TIMEOUT = 0.5  # the first request to a Hub that did not answer last time
BACKOFF_FIRST = 2.0  # seconds before asking a Hub that did not answer again ...
BACKOFF_MAX = 30.0  # ... doubling up to this
FINISHING_SECONDS = 10.0  # a task seen idle stays marked running until its row shows it done, at most this long


def resubmit_via(hub: Any, msg_ids: list[str]) -> dict[str, str]:
    """Resubmit through the paired Hub ({old: new}); without one, refuse with the reason."""
    if hub is None:
        raise ActionRefused(RESUBMIT_REASON)
    return hub.resubmit(list(msg_ids))


def _live_engines(hub: Any, engine_ids: dict[str, int], timeout: float | None) -> dict[int, str]:
    """The Hub's live engines (id -> uuid); uuid -> id into `engine_ids`. A SourceError propagates."""
    live = hub.connection_request(timeout)
    engine_ids.update({uuid: eid for eid, uuid in live.items()})
    return live


def _ask(hub: Any, delta: Delta, engine_ids: dict[str, int], first_timeout: float | None,
         timeout: float | None) -> tuple[set[str] | None, set[str], set[str]]:
    """Engines and queue counts from the Hub into `delta`, uuid -> id into `engine_ids` (a SourceError
    propagates; the first request is bounded by `first_timeout`).

    Returns the msg_ids the Hub has in flight (queued or running), or None when naming them would cost too
    much: a verbose `queue_request` also lists every msg_id completed since the Hub started, so above
    VERBOSE_LIMIT completed tasks the caller falls back to re-reading pending rows in slices. Then the ids
    alone in flight on a live engine: an engine runs one task at a time, so a task it has alone is the one
    it runs (or is about to, within milliseconds), whether or not IOPub saw it start. And the ids no engine
    has been given yet (the scheduler's queue; empty when the first set is None).
    """
    live = _live_engines(hub, engine_ids, first_timeout)
    status: QueueStatus = hub.queue_status(live=live, timeout=timeout)
    delta.engines = list(status.engines.values())
    delta.queue = status
    in_flight = status.unassigned + sum(e.queue + e.tasks for e in status.engines.values())
    if in_flight == 0:
        return set(), set(), set()
    if status.completed + in_flight > VERBOSE_LIMIT:
        return None, set(), set()
    raw = hub.request("queue_request", {"targets": None, "verbose": True}, timeout)
    ids: set[str] = set()
    alone: set[str] = set()
    unassigned: set[str] = set()
    for key, value in raw.items():
        if key == "unassigned" and isinstance(value, list):
            unassigned = {str(m) for m in value}
            ids.update(unassigned)
        elif isinstance(value, dict):
            on_engine = [str(m) for k in ("queue", "tasks") if isinstance(value.get(k), list) for m in value[k]]
            ids.update(on_engine)
            # the Hub lists every engine ever registered, with what a dead one had in flight
            if len(on_engine) == 1 and key.isdigit() and int(key) in live:
                alone.update(on_engine)
    return ids, alone, unassigned


class PairedHub:
    """A database source's Hub, seen once per poll: engines, queues, in-flight ids, running marks.

    `what` names the database in the warning ("file", "database"). `live_running=False`: no IOPub.
    """

    def __init__(self, hub: Any, *, what: str = "database", live_running: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.what = what
        self.live_running = live_running
        self.clock = clock
        self._listener: IOPubListener | None = None
        self._listener_conn: Any = None
        self._retry_at = 0.0  # monotonic: when a Hub that did not answer is asked again
        self._delay = 0.0  # current backoff; 0 while the Hub answers
        self._reason = ""  # why the Hub is taken for down ("" while it answers)
        self._conn_mtime: float | None = None  # of the Hub's connection file when it stopped answering
        self._busy_before: set[str] = set()
        self._finishing: dict[str, float] = {}  # msg_id -> marked running until (monotonic)
        self._marked: set[str] = set()  # ids marked running at the last poll
        self._changed: set[str] = set()  # ids whose mark changed since marks_changed() was last asked
        self.unassigned: set[str] = set()  # ids no engine had been given at the last poll (in-flight ids known)

    # -- life cycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Subscribe to the Hub's IOPub relay (best effort: no relay, no running marks)."""
        self._follow_conn()

    def close(self) -> None:
        self._close_listener()
        self.hub.close()  # a closed HubClient reconnects by itself if used again

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._listener_conn = None
        self._busy_before = set()
        self._finishing = {}
        self._changed |= self._marked
        self._marked = set()

    def _follow_conn(self) -> None:
        """(Re)subscribe when the Hub client's connection changed (a FileHubClient follows a restarted Hub)."""
        conn = getattr(self.hub, "conn", None)
        if not self.live_running or conn is None or "iopub" not in (getattr(conn, "ports", None) or {}):
            return
        if self._listener is not None and conn is self._listener_conn:
            return
        self._close_listener()
        try:
            self._listener = IOPubListener(conn)
        except (SourceError, OSError, ValueError) as exc:  # an ssh-tunnelled Hub, a bad address
            log.info("no running marks from %s: %s", getattr(self.hub, "url", "the Hub"), exc)
            return
        self._listener_conn = conn

    # -- what the source asks ----------------------------------------------------------------------

    @property
    def knows_running(self) -> bool:
        return self._listener is not None

    @property
    def down(self) -> bool:
        return bool(self._reason)

    def warnings(self) -> tuple[str, ...]:
        """The standing warning while the Hub does not answer, or while IOPub is not followed (one line)."""
        if not self._reason:
            note = self._listener.note() if self._listener is not None else ""
            return (note,) if note else ()
        return (f"Hub did not answer ({self._reason}); showing the {self.what} only, "
                f"asking it again every {self._delay:g} s",)

    def learn_engine_ids(self, engine_ids: dict[str, int]) -> None:
        """uuid -> id of the live engines (before a load normalizes records); skipped while backing off."""
        if not self._may_ask():
            return
        try:
            _live_engines(self.hub, engine_ids, self._first_timeout())
        except SourceError as exc:
            self._failed(exc)
        else:
            self._answered()

    def poll(self, delta: Delta, engine_ids: dict[str, int]) -> set[str] | None:
        """One poll of the Hub: engines and queues into `delta`, the running marks updated (see
        marks_changed). Returns the in-flight ids, or None when not known (Hub down, or too many)."""
        self._follow_conn()
        busy = self._listener.drain() if self._listener is not None else None
        in_flight: set[str] | None = None
        alone: set[str] = set()
        self.unassigned = set()
        answered = False
        if self._may_ask():
            try:
                in_flight, alone, self.unassigned = _ask(self.hub, delta, engine_ids, self._first_timeout(),
                                                         self._timeout())
            except SourceError as exc:
                self._failed(exc)
            else:
                self._answered()
                answered = True
                if self._listener is not None and getattr(self.hub, "conn", None) is not self._listener_conn:
                    self._follow_conn()  # the client followed a restarted Hub's new file: subscribe now
                    busy = self._listener.drain() if self._listener is not None else None
                if self._listener is not None and delta.queue is not None \
                        and self._listener.pace(delta.queue.completed, self.clock(), len(delta.queue.engines)):
                    busy = self._listener.running  # stopped or started following: nothing is known running
                    self._busy_before, self._finishing = set(), {}
        if busy is not None:
            following = self._listener is not None and not self._listener.paused
            self._update_marks(busy, in_flight if answered else None, alone if following else set())
        return in_flight

    def state_of(self, msg_id: str) -> State:
        """The state of a task the database shows pending: running when marked, else pending."""
        return State.RUNNING if msg_id in self._marked else State.PENDING

    def still_unassigned(self, held: Callable[[str], tuple[Any, Any] | None]) -> set[str]:
        """The in-flight ids not worth re-reading at this poll: the Hub had given them no engine yet, and the
        pending record held for them has neither an engine nor a start (`held(msg_id)`: its (engine_uuid,
        started), or None when none is held). A database lags its Hub, so such a row is still the one written
        at submission. A burst queues most of its tasks in the scheduler: re-reading each of them at every
        change of the database was ~2 of the ~3 reads per task."""
        quiet = set()
        for m in self.unassigned:
            h = held(m)
            if h is not None and h[0] is None and h[1] is None:
                quiet.add(m)
        return quiet

    def mark(self, rec: Any) -> None:
        """Set a pending record's state from the marks (done records are left alone)."""
        if rec.state.is_pending:
            rec.state = State.RUNNING if rec.msg_id in self._marked else State.PENDING

    def marks_changed(self) -> set[str]:
        """The ids whose running mark changed since the last call (the caller upserts those it holds pending)."""
        changed, self._changed = self._changed, set()
        return changed

    # -- internals -------------------------------------------------------------------------------

    def _update_marks(self, busy: set[str], in_flight: set[str] | None, alone: set[str]) -> None:
        """`busy`: the listener's ids seen busy and not idle (stale ones are dropped from it); `alone`: ids
        alone on their engine (see _ask). Running = either; a task that stops being either stays marked for
        FINISHING_SECONDS at most (until its row shows it done)."""
        now = self.clock()
        finishing = self._finishing
        for m in self._busy_before - busy - alone:  # seen idle (or no longer alone) since the last poll
            finishing[m] = now + FINISHING_SECONDS
        if in_flight is not None:
            for m in [m for m in busy if m not in in_flight]:
                # the Hub has it done (its idle is late or was dropped) or not registered yet (a busy Hub)
                if finishing.setdefault(m, now + FINISHING_SECONDS) <= now:
                    busy.discard(m)  # stale: a task of a Hub that died never says idle
        running = busy | alone
        self._busy_before = running
        self._finishing = {m: d for m, d in finishing.items() if d > now}
        if self._reason:  # the Hub is down: nothing can be told running
            marked: set[str] = set()
        else:
            marked = {m for m in running if in_flight is None or m in in_flight}
            marked.update(self._finishing)
        if marked != self._marked:
            self._changed |= marked ^ self._marked
            self._marked = marked

    def _timeout(self) -> float:
        return min(getattr(self.hub, "timeout", POLL_TIMEOUT) or POLL_TIMEOUT, POLL_TIMEOUT)

    def _first_timeout(self) -> float:
        return min(self._timeout(), RETRY_TIMEOUT) if self._reason else self._timeout()

    def _may_ask(self) -> bool:
        """While the Hub is down: once the backoff is over, or at once when its connection file was
        rewritten (a restarted Hub: a FileHubClient follows the file at its next request)."""
        if not self._reason or self.clock() >= self._retry_at:
            return True
        mtime = self._conn_file_mtime()
        return mtime is not None and mtime != self._conn_mtime

    def _conn_file_mtime(self) -> float | None:
        path = getattr(getattr(self.hub, "conn", None), "path", None)
        try:
            return os.stat(path).st_mtime if path is not None else None
        except OSError:
            return None

    def _failed(self, exc: SourceError) -> None:
        self._delay = BACKOFF_FIRST if not self._reason else min(self._delay * 2, BACKOFF_MAX)
        self._retry_at = self.clock() + self._delay
        self._conn_mtime = self._conn_file_mtime()
        if not self._reason:
            log.info("paired Hub did not answer: %s", exc)
        self._reason = " ".join(str(exc).split()) or type(exc).__name__

    def _answered(self) -> None:
        if self._reason:
            log.info("paired Hub answers again")
        self._reason = ""
        self._delay = 0.0
        self._conn_mtime = None
