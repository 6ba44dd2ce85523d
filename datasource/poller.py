"""One poll step: `source.sync()` -> `store.apply()`, plus the connection state the views show.

The caller (the TUI, the CLI loop) calls `step()`, or `submit()` to run it on the poller's own
background-priority thread (see priority.py), waits `next_delay(interval)`, and calls it again: polls
never overlap. While the tasks change faster than BUSY_RATE a second, `next_delay` spaces the polls out to
`busy_interval` (`PollStatus.busy_rate` says so): hubtop's work grows with every row it reads and writes, a row read
later is often read once instead of twice (submitted, then done), and a table changing hundreds of rows a
second cannot be read row by row anyway. `step()` never raises: a source error becomes a "retrying"
status with exponential backoff, anything unexpected is logged (with its traceback) to the `hubtop`
logger and reported as one line. The UI thread reads `status` while a step runs: it gets a copy made
under a lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import humanize

from .priority import background_executor
from .sources.base import Delta, Source, SourceError
from .store import TaskStore

__all__ = ["PollStatus", "PollOutcome", "Poller", "RECENT_WARNING_SECONDS", "BUSY_RATE", "CALM_RATE", "BUSY_INTERVAL", "RATE_SPAN"]

log = logging.getLogger("hubtop")

_RECENT_WARNINGS = 5  # recent (per-poll) warnings kept in the status next to the standing ones...
RECENT_WARNING_SECONDS = 300.0  # ...for this long after they were last raised
# Task changes a second (rows added, changed or removed, a load's rows aside) above which the polls are spaced
# out to the busy interval, and below which they are back at the chosen one. A hundred changes a second is a
# steady cluster that hubtop follows every poll (~1 % of a core); a burst of trivial tasks is thousands.
BUSY_RATE = 200.0
CALM_RATE = 100.0
BUSY_INTERVAL = 4.0  # seconds between polls while busy (two of the SQLite Hub's commits, which come every 2 s)
RATE_SPAN = 2.0  # the shortest span a rate is measured over (see _pace)


@dataclass
class PollStatus:
    state: str  # "connecting" | "loading" | "connected" | "retrying" | "paused"
    message: str  # one line for the status bar
    last_success: float | None = None  # clock() time of the last successful sync
    retry_in: float | None = None  # seconds until the next attempt while retrying
    failures: int = 0  # consecutive failures
    warnings: list[str] = field(default_factory=list)  # standing (capabilities) + recent (deltas) warnings
    busy_rate: float | None = None  # task changes a second while the polls are spaced out (see BUSY_RATE)


@dataclass
class PollOutcome:
    status: PollStatus
    added: int = 0
    changed: int = 0
    removed: int = 0
    new_failures: list[str] = field(default_factory=list)  # msg_ids that turned failed (not during a load)
    event: str | None = None  # a transition worth one notification: "connection lost: ...", "reconnected"
    warnings: list[str] = field(default_factory=list)  # warnings the source raised in this poll


class Poller:
    def __init__(
        self,
        source: Source,
        store: TaskStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_delta: Callable[[Delta], None] | None = None,
        max_backoff: float = 20.0,
        busy_interval: float = BUSY_INTERVAL,
    ) -> None:
        self.source = source
        self.store = store
        self.clock = clock
        self.on_delta = on_delta
        self.max_backoff = max_backoff
        self.busy_interval = busy_interval  # 0: never space the polls out
        self._lock = threading.Lock()  # guards the status fields
        self._stepping = threading.Lock()  # held by the step() in progress
        self._opened = False
        self._healthy: bool | None = None  # None: no attempt finished yet
        self._paused = False
        self._closed = False  # close() was called: no step starts, the source is closed once
        self._source_closed = False
        self._state = "connecting"
        self._message = f"connecting to {source.name}"
        self._error = ""  # last failure, without the "retrying in" tail
        self._last_success: float | None = None
        self._retry_at: float | None = None
        self._failures = 0
        self._standing: list[str] = []
        self._recent: dict[str, float] = {}  # warning -> clock() when last raised (insertion = age order)
        self._thread: ThreadPoolExecutor | None = None  # submit()'s thread, made at the first submit
        self._rate_from: tuple[float, int] | None = None  # (clock() at the span's start, changes since)
        self._rate: float | None = None  # task changes a second over the last span measured
        self._busy = False

    # -- status (any thread) -------------------------------------------------------------------

    @property
    def status(self) -> PollStatus:
        with self._lock:
            return self._status_locked()

    def _status_locked(self) -> PollStatus:
        retry_in = None
        message = self._message
        state = self._state
        if state == "retrying" and self._retry_at is not None:
            retry_in = max(0.0, self._retry_at - self.clock())
            message = f"{self._error}; retrying in {math.ceil(retry_in)} s"
        if self._paused:
            state, message = "paused", f"paused ({message})" if message else "paused"
        return PollStatus(
            state=state,
            message=message,
            last_success=self._last_success,
            retry_in=retry_in,
            failures=self._failures,
            warnings=list(self._standing) + [w for w in self._recent_locked() if w not in self._standing],
            busy_rate=self._rate if self._busy else None,
        )

    def age(self) -> float | None:
        """Seconds since the last successful sync (None before the first one)."""
        with self._lock:
            last = self._last_success
        return None if last is None else max(0.0, self.clock() - last)

    def next_delay(self, interval: float) -> float:
        """How long the caller waits before the next step(): the interval, the busy interval while the tasks
        change fast (when longer), or the backoff when retrying."""
        with self._lock:
            if self._state == "retrying" and self._retry_at is not None and not self._paused:
                return max(0.0, self._retry_at - self.clock())
        return self.interval_for(interval)

    def interval_for(self, interval: float) -> float:
        """The seconds between polls for a chosen `interval`, now (what the status line shows)."""
        return max(interval, self.busy_interval) if self._busy else interval

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """step() does nothing until resume() (the status shows "paused")."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    # -- polling (the worker thread) -----------------------------------------------------------

    def open(self) -> PollOutcome:
        """Open the source. Errors become the status (retrying), never exceptions."""
        event = self._try_open()
        return PollOutcome(status=self.status, event=event)

    def _try_open(self) -> str | None:
        with self._lock:
            self._state, self._message = "connecting", f"connecting to {self.source.name}"
        try:
            self.source.open()
        except Exception as exc:
            return self._failed(exc)
        self._opened = True
        self._refresh_standing()
        with self._lock:
            if self._last_success is None:
                self._state, self._message = "loading", "loading tasks"
        return None

    def submit(self) -> Future[PollOutcome]:
        """step() on the poller's own thread, which runs at background CPU priority: the cluster being
        watched goes first when it wants every core."""
        if not self._closed:
            if self._thread is None:
                self._thread = background_executor("hubtop-poll")
            try:
                return self._thread.submit(self.step)
            except RuntimeError:  # close() shut the thread down since the check
                pass
        done: Future[PollOutcome] = Future()
        done.set_result(PollOutcome(status=self.status))
        return done

    def step(self) -> PollOutcome:
        """One sync: every delta applied to the store as it arrives. Never raises.

        A step called while another one runs (a forced refresh during a poll) returns at once, doing nothing.
        """
        if self._paused or self._closed or not self._stepping.acquire(blocking=False):
            return PollOutcome(status=self.status)
        try:
            if self._closed:  # closed between the check and the lock
                return PollOutcome(status=self.status)
            return self._step()
        finally:
            if self._closed:
                self._close_source()  # close() came while this step ran: the source's own thread closes it
            self._stepping.release()

    def _step(self) -> PollOutcome:
        if not self._opened:
            event = self._try_open()
            if not self._opened:
                return PollOutcome(status=self.status, event=event)
        outcome = PollOutcome(status=self.status)  # status refreshed when the sync ends
        changes = 0  # outside a load: what the busy rate counts
        try:
            for delta in self.source.sync():
                in_load = self.store.loading or delta.reset or delta.loading or delta.filling is not None
                result = self.store.apply(delta)
                if not in_load:
                    changes += result.added + result.changed + result.removed
                if self.store.loading:
                    self._loading_progress()
                if self.on_delta is not None:
                    self.on_delta(delta)
                outcome.added += result.added
                outcome.changed += result.changed
                outcome.removed += result.removed
                outcome.new_failures.extend(result.new_failures)
                outcome.warnings.extend(delta.warnings)
        except Exception as exc:
            outcome.event = self._failed(exc)
            self._note_warnings(outcome.warnings)
            outcome.status = self.status
            return outcome
        self._refresh_standing()
        self._note_warnings(outcome.warnings)
        with self._lock:
            self._pace(changes)
            outcome.event = "reconnected" if self._healthy is False else None
            self._healthy = True
            self._failures = 0
            self._retry_at = None
            self._error = ""
            self._last_success = self.clock()
            self._state, self._message = "connected", "connected"
            outcome.status = self._status_locked()
        return outcome

    def close(self) -> None:
        """Close the source, from any thread, without waiting: a step in progress (a worker thread inside a
        Hub request, say) closes it when it ends. Sockets are not thread-safe: closing one that a step is
        reading crashed that step ("Socket operation on non-socket")."""
        self._closed = True
        if self._thread is not None:
            self._thread.shutdown(wait=False)  # a step in progress ends first; its thread then exits
        if self._stepping.acquire(blocking=False):
            try:
                self._close_source()
            finally:
                self._stepping.release()

    def _close_source(self) -> None:
        if self._source_closed:
            return
        self._source_closed = True
        try:
            self.source.close()
        except Exception:
            log.exception("closing %s", self.source.name)

    # -- internals -----------------------------------------------------------------------------

    def _loading_progress(self) -> None:
        done, total = self.store.load_done, self.store.load_total
        text = f"loading tasks: {humanize.intcomma(done)}"
        if total:
            text += f" of {humanize.intcomma(total)}"
        with self._lock:
            self._state, self._message = "loading", text

    def _failed(self, exc: BaseException) -> str | None:
        if isinstance(exc, SourceError):
            text = " ".join(str(exc).split()) or type(exc).__name__
        else:
            log.exception("poll of %s failed", self.source.name)
            first = " ".join(str(exc).split())
            text = f"internal error while polling {self.source.name}: {type(exc).__name__}" + (f": {first}" if first else "")
        with self._lock:
            self._failures += 1
            backoff = min(2.0 ** self._failures, self.max_backoff)
            self._retry_at = self.clock() + backoff
            self._error = text
            self._state = "retrying"
            if self._healthy is True:
                event: str | None = f"connection lost: {text}"
            elif self._healthy is None:
                event = f"cannot connect: {text}"
            else:
                event = None  # repeated failures: one notification per transition
            self._healthy = False
        return event

    def _refresh_standing(self) -> None:
        try:
            standing = list(self.source.capabilities().warnings)
        except Exception:
            log.exception("capabilities of %s", self.source.name)
            return
        with self._lock:
            self._standing = standing

    def _pace(self, changes: int) -> None:
        """Busy or not, from the task changes a second since the span began (under the lock). A span is at least
        RATE_SPAN long, so that a Hub committing every 2 s does not double its rate in the poll that sees a commit;
        a shorter one decides early only when it already makes a busy rate over RATE_SPAN (a burst's first poll)."""
        now = self.clock()
        if self._rate_from is None or self.store.loading:
            self._rate_from = (now, 0)  # the first sync is a load: the rate starts at its end
            return
        since, counted = self._rate_from
        counted += changes
        span = now - since
        rate = counted / max(span, RATE_SPAN)
        if span < RATE_SPAN and (self._busy or rate <= BUSY_RATE):
            self._rate_from = (since, counted)
            return
        self._rate_from = (now, 0)
        self._rate = rate
        self._busy = self.busy_interval > 0 and (rate >= CALM_RATE if self._busy else rate > BUSY_RATE)

    def _recent_locked(self) -> list[str]:
        horizon = self.clock() - RECENT_WARNING_SECONDS
        return [w for w, at in self._recent.items() if at >= horizon][-_RECENT_WARNINGS:]

    def _note_warnings(self, warnings: list[str]) -> None:
        if not warnings:
            return
        now = self.clock()
        with self._lock:
            for w in warnings:
                self._recent.pop(w, None)
                self._recent[w] = now
            for w in list(self._recent)[:-_RECENT_WARNINGS]:
                del self._recent[w]
