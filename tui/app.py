"""The hubtop app: the main screen (panes, task table, engines, filter, status) and the live poll loop.

Threads: the poll runs `Poller.step()` on the poller's own thread, at background CPU priority
(datasource/priority.py), and posts `PollFinished`; the next poll is armed with `set_timer` only then, so
polls never overlap. The UI thread only reads the store: a light timer re-reads counts and the visible rows
when `store.version` moved (every 0.25 s, and at once after a poll).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Header, Tabs
from textual.worker import get_current_worker

from datasource.poller import BUSY_INTERVAL, Poller, PollOutcome
from datasource.sources.base import Capabilities, Delta, Source
from datasource.store import PANES, Filter, ScanCancelled, TaskStore, combine, pane_filter

from . import format as fmt
from .messages import AggregatesReady, LoadShowable, PollFinished, SortRequested, TaskChosen
from .widgets.engine_list import EngineList
from .widgets.filter_bar import FilterBar
from .widgets.footer import Footer
from .widgets.pane_tabs import PANE_TITLES, PaneTabs, panes_for
from .widgets.status_bar import StatusBar, StatusInfo
from .widgets.task_table import COLUMNS, TaskTable

__all__ = ["HubtopApp", "MainScreen", "make_app", "INTERVALS"]

INTERVALS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
UI_TICK = 0.25
LIVE_FILTER_BUDGET = 0.15  # seconds: filters that apply slower than this wait for enter (no live apply)
AGE_REPAINT = 5.0  # the table's "N min ago" cells are at most this old (repainted when one reads differently)
FAILURE_TOAST_EVERY = 10.0  # seconds between two "N new failures" toasts (a steady trickle is one toast per period)
_DEFAULT_DESCENDING = {"submitted", "duration", "started", "completed", "received"}
_NEW_FAILURE_DETAIL = 5_000  # look at most this many new failures up to group them by exception


def failure_summary(enames: Iterable[str | None], total: int) -> str:
    """'12 new failures: ValueError ×9, KeyError ×3' (the three most common names, then '…')."""
    counts = Counter(e or "Error" for e in enames)
    parts = [f"{name} ×{n}" for name, n in counts.most_common(3)]
    if len(counts) > 3:
        parts.append("…")
    noun = "failure" if total == 1 else "failures"
    return f"{fmt.thousands(total)} new {noun}: " + ", ".join(parts)


class MainScreen(Screen[None]):
    """The dashboard. Its keys live here, so pushed screens (detail, triage) do not inherit them."""

    BINDINGS = [
        Binding("slash", "app.open_filter", "Filter", id="main.filter"),
        Binding("escape", "app.clear_filter", "Clear filter", show=False, id="main.clear_filter"),
        Binding("e", "app.focus_engines", "Engines", id="main.engines"),
        Binding("f", "app.triage", "Triage", id="main.triage"),
        Binding("r", "app.resubmit", "Resubmit", id="main.resubmit"),
        Binding("p", "app.purge", "Purge", id="main.purge"),
        Binding("x", "app.export", "Export", id="main.export"),
        Binding("s", "app.sort_next", "Sort", id="main.sort"),
        Binding("S", "app.sort_reverse", "Reverse", show=False, id="main.sort_reverse"),
        Binding("plus", "app.slower", "Slower", show=False, id="main.slower"),
        Binding("minus", "app.faster", "Faster", show=False, id="main.faster"),
        Binding("P", "app.toggle_pause", "Pause", id="main.pause"),
        Binding("ctrl+r", "app.refresh_now", "Refresh", show=False, id="main.refresh"),
        Binding("question_mark", "app.help", "Help", id="main.help"),
        Binding("q", "app.quit", "Quit", id="main.quit"),
        Binding("tab", "app.focus_next_pane", "", show=False, id="main.focus_next"),
        *[Binding(str(i), f"app.pane({i - 1})", f"Pane {i}", show=False, id=f"main.pane{i}") for i in range(1, 8)],
    ]

    def __init__(self, app: "HubtopApp") -> None:
        super().__init__(id="main")
        self._hubtop = app

    def compose(self) -> ComposeResult:
        a = self._hubtop
        yield Header(show_clock=False, icon="◆")
        with Horizontal(id="body"):
            yield EngineList(a.store, id="engines")
            with Vertical(id="main-column"):
                yield PaneTabs(a.panes, id="panes")
                yield TaskTable(a.store, now=a.now, id="tasks")
        yield FilterBar(now=a.now, id="filter")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TaskTable).focus()
        self._hubtop.main_mounted()

    def on_screen_resume(self) -> None:
        if self._hubtop._main_ready():
            self._hubtop.refresh_views(force=True)  # polls that landed while another screen was shown


class HubtopApp(App[None]):
    """The hubtop dashboard over one Source (or a picker of connection files when there is none yet)."""

    CSS_PATH = "app.tcss"
    TITLE = "hubtop"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="app.quit")]

    def __init__(
        self,
        source: Source | None,
        *,
        choices: list | None = None,
        read_only: bool = False,
        poll_interval: float = 1.0,
        busy_interval: float = BUSY_INTERVAL,
        theme: str | None = None,
        keymap: dict[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        now: Callable[[], datetime] | None = None,
        autopoll: bool = True,
        store: TaskStore | None = None,
    ) -> None:
        super().__init__()
        self.source: Source | None = source
        self.choices = choices
        self._read_only = read_only
        self.interval = poll_interval
        self.busy_interval = busy_interval
        self.clock = clock or time.monotonic
        self._now = now or (lambda: datetime.now(timezone.utc))
        self.autopoll = autopoll
        self.store = store or TaskStore()
        self.poller: Poller | None = self._poller_of(source) if source is not None else None
        self._caps: Capabilities = _caps_of(source)
        self.panes = panes_for(self._caps.knows_running)
        self.current_pane = self.panes[0]
        self.filter_text = ""
        self._query_filter: Filter | None = None
        self._pane_cursor: dict[str, str | None] = {}
        self._poll_timer: Timer | None = None
        self._early_poll: Future[PollOutcome] | None = None
        self._polling = False
        self._poll_again = False
        self._seen_version = -1
        self._counts: dict[str, int] = {p: 0 for p in PANES}
        self._agg_key: tuple | None = None  # what the shown counts are of: (store version, filters...)
        self._agg_pending: tuple | None = None  # what the aggregates worker is computing
        self._aggregates_waiting = False  # counts to request once the table's re-read has landed
        self._agg_again = False  # count again when the pending counts (of an older store version) land
        self._gc_frozen = False
        self._last_event: str | None = None
        self.polls = 0
        self._widgets: tuple[TaskTable, EngineList, StatusBar, FilterBar] | None = None
        self._quitting = False
        self._failure_names: list[str | None] = []
        self._failure_count = 0
        self._last_failure_toast: float | None = None
        self.notices: list[tuple[str, str]] = []  # (severity, message) of every toast, for tests and logs
        if keymap:
            self.set_keymap(keymap)
        if theme:
            self.theme = theme

    # -- the API screens and the CLI use -----------------------------------------------------------

    @property
    def read_only(self) -> bool:
        return self._read_only or self._caps.read_only

    @property
    def caps(self) -> Capabilities:
        return self._caps

    def now(self) -> datetime:
        return self._now()

    def view_filter(self) -> Filter:
        """The query filter AND the engine selection (no pane): what "all matching" means."""
        engines = self._engine_list().filter() if self._main_ready() else None
        return combine(self._query_filter, engines)

    def table_filter(self) -> Filter:
        return combine(pane_filter(self.current_pane), self.view_filter())

    def cursor_id(self) -> str | None:
        return self._table().cursor_id if self._main_ready() else None

    def marked_ids(self) -> list[str]:
        if not self._main_ready():
            return []
        marks = self._table().marks
        if not marks:
            return []
        present = {r.msg_id for r in self.store.get_many(sorted(marks))}
        return sorted(present)

    def clear_marks(self) -> None:
        if self._main_ready():
            self._table().marks.clear()
            self._table().refresh()
            self._update_status()

    def refresh_now(self) -> None:
        """Poll as soon as possible (after an action)."""
        if self.poller is None:
            return
        if self._polling:
            self._poll_again = True
            return
        if self._poll_timer is not None:
            self._poll_timer.stop()
        if self.autopoll:
            self._start_poll()

    def select_task(self, msg_id: str) -> None:
        """Move the cursor to this task (switches to the All pane if the current one does not hold it)."""
        table = self._table()
        if table.move_to(msg_id):
            return
        if self.current_pane != "all":
            self.set_pane("all")
            if table.move_to(msg_id):
                return
        self.notify(f"task {fmt.short_id(msg_id)} is hidden by the filter or engine selection", severity="warning")

    def set_pane(self, pane: str) -> None:
        if pane not in self.panes:
            return
        tabs = self._tabs()
        if tabs.active != f"pane-{pane}":
            tabs.active = f"pane-{pane}"  # TabActivated -> _pane_changed
        self._switch_pane(pane)

    def set_filter(self, text: str) -> None:
        """Apply a query (as if typed in the filter bar)."""
        self._filter_bar().set_text(text)

    async def poll_once(self) -> PollOutcome:
        """One poll, awaited (tests, and `autopoll=False` drivers). Never overlaps a running poll."""
        assert self.poller is not None, "no source yet"
        while self._polling:
            await asyncio.sleep(0.01)
        self._polling = True
        try:
            outcome = await asyncio.wrap_future(self.poller.submit())
        finally:
            self._polling = False
        self._after_poll(outcome)
        await self.settle()
        return outcome

    # -- start-up -------------------------------------------------------------------------------

    def on_load(self) -> None:
        # The first poll (opening the source, a load's first rows and counts) runs while Textual builds the
        # screen: that is ~0.1 s of the time to the first paint. _poll_worker awaits it.
        if self.autopoll and self.poller is not None:
            self._early_poll = self.poller.submit()

    def get_default_screen(self) -> Screen:
        return MainScreen(self)

    def screen_main(self) -> MainScreen:
        return self.screen_stack[0]  # type: ignore[return-value]  # the default screen, under any pushed one

    def _main_ready(self) -> bool:
        return self._widgets is not None and self._widgets[0].is_attached and not self._quitting

    def _table(self) -> TaskTable:
        assert self._widgets is not None
        return self._widgets[0]

    def _engine_list(self) -> EngineList:
        assert self._widgets is not None
        return self._widgets[1]

    def _status_bar(self) -> StatusBar:
        assert self._widgets is not None
        return self._widgets[2]

    def _tabs(self) -> PaneTabs:
        return self.screen_main().query_one(PaneTabs)

    def _filter_bar(self) -> FilterBar:
        assert self._widgets is not None
        return self._widgets[3]

    def main_mounted(self) -> None:
        """The main screen is composed: start (or ask which cluster first)."""
        main = self.screen_main()
        self._widgets = (main.query_one(TaskTable), main.query_one(EngineList), main.query_one(StatusBar), main.query_one(FilterBar))
        self._table().after_load = self._table_loaded
        self._filter_bar().before_apply = self._table().hold_frames
        self.set_interval(UI_TICK, self._tick, name="ui-tick")
        if self.source is None:
            self._pick_source()
        else:
            self._started()

    def _pick_source(self) -> None:
        try:
            from .screens.picker import PickerScreen
        except ImportError as exc:  # the screens module is not there yet
            self.exit(message=f"no source given and no picker available: {exc}")
            return

        def chosen(path: str | None) -> None:
            if not path:
                self.exit()
                return
            self._open_path(path)

        self.push_screen(PickerScreen(self.choices or [], now=self.now()), chosen)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False, description="open source")
    def _open_path(self, path: str) -> None:
        from datasource.sources.base import SourceError
        from datasource.sources.open import open_source

        try:
            source = open_source(path, read_only=self._read_only)
        except SourceError as exc:
            self.call_from_thread(self._open_failed, str(exc))
            return
        except Exception as exc:  # a bug, shown as one line
            self.call_from_thread(self._open_failed, f"{type(exc).__name__}: {exc}")
            return
        self.call_from_thread(self._use_source, source)

    def _open_failed(self, message: str) -> None:
        self._toast(message, severity="error")
        self._pick_source()

    def _use_source(self, source: Source) -> None:
        self.source = source
        self.poller = self._poller_of(source)
        self._caps = _caps_of(source)
        self._sync_panes()
        self._started()

    def _poller_of(self, source: Source) -> Poller:
        return Poller(source, self.store, clock=self.clock, on_delta=self._delta_applied, busy_interval=self.busy_interval)

    def _delta_applied(self, delta: Delta) -> None:
        """On the poll thread: a load's first rows and its counts are worth a frame at once (the first
        paint); anything else waits for the UI tick or the end of the poll."""
        if delta.loading and (delta.reset or delta.counts is not None):
            self.post_message(LoadShowable())

    def on_load_showable(self, message: LoadShowable) -> None:
        self.refresh_views()

    def _sync_panes(self) -> None:
        """Queued + Running tabs instead of Pending once the source says it can tell them apart (or back)."""
        wanted = panes_for(self._caps.knows_running)
        if wanted == self.panes or not self._main_ready():
            return
        self.panes = wanted
        if self.current_pane not in wanted:
            self.current_pane = "queued" if self.current_pane == "pending" else "pending" if self.current_pane in ("queued", "running") else wanted[0]
        tabs = self._tabs()
        tabs.set_panes(self.panes)

        def after() -> None:
            tabs.active = f"pane-{self.current_pane}"
            self._apply_view()

        self.call_after_refresh(after)

    def _started(self) -> None:
        self._update_header()
        table = self._table()
        table.set_view(self.table_filter(), cursor_id=None)
        table.empty_text = "loading tasks…"
        self.refresh_views(force=True)
        if self.autopoll and self.poller is not None:
            self._start_poll()

    # -- polling --------------------------------------------------------------------------------

    def _start_poll(self) -> None:
        if self.poller is None or self._polling:
            return
        self._polling = True
        self._poll_worker()

    @work(exclusive=True, group="poll", exit_on_error=False, description="poll the source")
    async def _poll_worker(self) -> None:
        assert self.poller is not None
        try:
            # on the poller's own thread, at background priority; never raises by contract, but a bug
            # still must not kill the loop
            future, self._early_poll = self._early_poll or self.poller.submit(), None
            outcome = await asyncio.wrap_future(future)
        except Exception as exc:
            from datasource.poller import PollStatus

            outcome = PollOutcome(
                status=PollStatus("retrying", f"internal error: {type(exc).__name__}: {exc}"),
                event=f"internal error: {type(exc).__name__}",
            )
        self.post_message(PollFinished(outcome))

    def on_poll_finished(self, message: PollFinished) -> None:
        self._polling = False
        self._after_poll(message.outcome)
        if not self.autopoll or self.poller is None:
            return
        if self._poll_again:
            self._poll_again = False
            self._start_poll()
            return
        self._arm_poll()

    def _arm_poll(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.stop()
        assert self.poller is not None
        self._poll_timer = self.set_timer(self.poller.next_delay(self.interval), self._start_poll, name="poll")

    def _after_poll(self, outcome: PollOutcome) -> None:
        self.polls += 1
        self._caps = _caps_of(self.source)
        self._sync_panes()
        if outcome.event:
            lost = outcome.event.startswith(("connection lost", "cannot connect", "internal error"))
            self._toast(outcome.event, severity="error" if lost else "information", title=self.source.name if self.source else "")
        if outcome.new_failures:
            ids = outcome.new_failures
            room = max(0, _NEW_FAILURE_DETAIL - len(self._failure_names))
            self._failure_names.extend(r.ename for r in self.store.get_many(ids[:room]))
            self._failure_count += len(ids)
        self._flush_failures()
        if outcome.warnings:
            self._toast("; ".join(dict.fromkeys(outcome.warnings)), severity="warning")
        if not self._gc_frozen and self.store.total and not self.store.loading:
            # What lives from here on (widgets, caches, a source's pending rows) is long-lived: a full
            # collection need not walk it again every few seconds (100k-1M tasks: 50-70 ms pauses on the UI
            # thread, 4 ms after). The load's cyclic garbage goes first, or it would be frozen with the rest.
            gc.collect()
            gc.freeze()
            self._gc_frozen = True
        self.refresh_views()

    def _flush_failures(self) -> None:
        """One toast for a burst of new failures, and at most one every FAILURE_TOAST_EVERY seconds."""
        if not self._failure_count:
            return
        now = self.clock()
        if self._last_failure_toast is not None and now - self._last_failure_toast < FAILURE_TOAST_EVERY:
            return  # the next poll (or UI tick) after the quiet period reports everything gathered meanwhile
        self._toast(failure_summary(self._failure_names, self._failure_count), severity="warning", title="failures")
        self._last_failure_toast = now
        self._failure_names, self._failure_count = [], 0

    def _toast(self, message: str, *, severity: str = "information", title: str = "") -> None:
        self.notices.append((severity, message))
        self.notify(message, severity=severity, title=title, markup=False)  # type: ignore[arg-type]

    # -- views ----------------------------------------------------------------------------------

    def _tick(self) -> None:
        if not self._main_ready():
            return
        self._flush_failures()
        if not self._main_visible():
            return  # re-read when the main screen comes back (MainScreen.on_screen_resume)
        if self.store.version != self._seen_version:
            self.refresh_views()
        else:
            self._update_status()
        # "3 min ago" moves on even when no row changed (a reload that changes nothing shown does not repaint)
        self._table().repaint_ages(every=AGE_REPAINT)

    def _main_visible(self) -> bool:
        """The main screen is shown, alone or under a modal dialog."""
        for screen in reversed(self.screen_stack):
            if screen is self.screen_main():
                return True
            if not isinstance(screen, ModalScreen):
                return False
        return False

    def refresh_views(self, *, force: bool = False) -> None:
        """Re-read counts, engines and the visible rows if the store changed (or force)."""
        if not self._main_ready() or not self._main_visible():
            return
        version = self.store.version
        changed = force or version != self._seen_version
        self._seen_version = version
        if changed:
            with self.batch_update():
                table = self._table()
                empty_text = self._empty_text()
                if empty_text != table.empty_text:
                    table.empty_text = empty_text
                    table.refresh()
                table.reload()  # set_view() already asked for a new view: one read per keystroke
                self._update_header()
            if table.loading:  # the rows first: a count scanning the store would hold its lock meanwhile
                self._aggregates_waiting = True
                return  # the status line is updated with the counts, in their frame
            if self._request_aggregates():
                return
        self._update_status()

    def _table_loaded(self) -> None:
        if self._aggregates_waiting:
            self._aggregates_waiting = False
            self._request_aggregates()

    def _aggregates_key(self) -> tuple[tuple, Filter, Filter | None]:
        """(what the counts of the current view are of, its view filter, its query filter)."""
        where = self.view_filter()
        query = self._query_filter
        key = (self.store.version, where[0], tuple(where[1]), None if query is None else (query[0], tuple(query[1])),
               self._caps.knows_running)
        return key, where, query

    def _cancel_stale_aggregates(self) -> None:
        """A filter's count scan for a view the user has left stops (ScanCancelled) and lets go of the store."""
        pending = self._agg_pending
        if pending is not None and pending[1:] != self._aggregates_key()[0][1:]:
            self.workers.cancel_group(self, "aggregates")
            self._agg_pending = None
            self._agg_again = False

    def _request_aggregates(self) -> bool:
        """Pane counts and engine rows for the current filter, computed in a thread: with a filter over a
        million tasks they are full scans (~0.05-2 s) and the table must keep answering keys meanwhile.
        A scan of the same view for an older store version is let finish and shown, then the view is
        counted again: restarted at every poll, a scan slower than the poll interval would never land.
        True if they were asked for (the status line is then updated with them)."""
        key, where, query = self._aggregates_key()
        if key in (self._agg_key, self._agg_pending):
            return False
        if self._agg_pending is not None:
            if self._agg_pending[1:] == key[1:]:
                self._agg_again = True
                return True
            self._cancel_stale_aggregates()
        self._agg_pending = key
        quick = self.store.aggregates_now(where, query)
        if quick is not None:  # no filter scan: shown in the frame that shows the rows, not one frame later
            self._show_aggregates(key, *quick)
        else:
            self._aggregates_worker(key, where, query)
        return True

    @work(thread=True, exclusive=True, group="aggregates", exit_on_error=False, description="count tasks")
    def _aggregates_worker(self, key: tuple, where: Filter, query: Filter | None) -> None:
        worker = get_current_worker()
        try:
            counts = self.store.counts(where, cancelled=lambda: worker.is_cancelled)
            engine_counts = self.store.engine_counts(query, cancelled=lambda: worker.is_cancelled)
        except ScanCancelled:
            return
        except Exception as exc:  # sqlite3.Error from a filter the store cannot run: shown by _apply_view
            self.post_message(AggregatesReady(key, None, None, error=f"{type(exc).__name__}: {exc}"))
            return
        if not worker.is_cancelled:
            self.post_message(AggregatesReady(key, counts, engine_counts))

    def on_aggregates_ready(self, message: AggregatesReady) -> None:
        self._show_aggregates(message.key, message.counts, message.engine_counts)

    def _show_aggregates(self, key: tuple, counts: dict[str, int] | None,
                         engine_counts: dict[str | None, dict[str, int]] | None) -> None:
        if key != self._agg_pending:
            return  # an older filter or store version: a newer request is under way
        self._agg_pending = None
        if self._agg_again:
            self.call_later(self._count_again)
        if counts is None or not self._main_ready():
            return
        same_filter = self._agg_key is not None and self._agg_key[1:] == key[1:]
        self._agg_key = key
        self._counts = counts
        with self.batch_update():
            # live counts of the same filter keep the tabs' widths; another filter's counts lay the bar out anew
            self._tabs().set_counts(counts, hold=same_filter)
            self._engine_list().update_rows(self._query_filter, knows_running=self._caps.knows_running,
                                            counts=engine_counts)
            self._update_status()

    def _count_again(self) -> None:
        """The store changed while the view's counts were computed: count it at its current version."""
        if not self._agg_again:
            return  # the user left the view meanwhile (_cancel_stale_aggregates)
        self._agg_again = False
        if not self._main_ready() or not self._main_visible():
            return
        if self._table().loading:
            self._aggregates_waiting = True  # the rows first, as in refresh_views
        elif not self._request_aggregates():
            self._update_status()

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until the counts of the current view are shown (tests; scripts taking screenshots)."""
        deadline = time.monotonic() + timeout
        while (self._agg_pending is not None or self._agg_again or self._aggregates_waiting
               or (self._main_ready() and self._table().loading)) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)

    def _update_header(self) -> None:
        if self.source is None:
            self.sub_title = "no cluster chosen"
            return
        engines = self.store.engines()
        alive = sum(1 for e in engines if e.alive)
        parts = [self._caps.kind]
        if self._caps.backend and self._caps.backend != "unknown":
            parts.append(f"Hub DB {self._caps.backend}")
        if self._caps.has_engines or engines:
            parts.append(f"engines {alive}/{len(engines)}")
        # the short facts first: a source name can be a long path + Hub URL and is cut on the right
        self.title = "hubtop · " + " · ".join(parts)
        self.sub_title = self.source.name

    def _empty_text(self) -> str:
        if self.poller is None or (self.poller.status.last_success is None and not self.store.total):
            return "loading tasks…" if self.poller is None or self.poller.status.state != "retrying" else "no data yet: " + self.poller.status.message
        if self.filter_text or self._engine_list().selected:
            return f"no {PANE_TITLES[self.current_pane].lower()} tasks match the filter"
        if self.current_pane == "all":
            return "no tasks"
        return f"no {PANE_TITLES[self.current_pane].lower()} tasks"

    def _update_status(self) -> None:
        if not self._main_ready():
            return
        status_bar = self._status_bar()
        if self.poller is None:
            status_bar.show(StatusInfo("connecting", "choose a cluster", self.interval, None, 0))
            return
        status = self.poller.status
        total = self.store.total
        filtered = bool(self._query_filter) or bool(self._engine_list().selected)
        all_matching = self._counts.get("all", 0)
        loading = (self.store.load_done, self.store.load_total) if self.store.loading else None
        state = "loading" if loading and status.state in ("loading", "connected", "connecting") else status.state
        message = status.message
        warnings = list(status.warnings)
        status_bar.show(
            StatusInfo(
                state=state,
                message=message,
                interval=self.poller.interval_for(self.interval),
                age=self.poller.age(),
                total=total,
                matching=all_matching if filtered else None,
                loading=loading,
                filling=self.store.filling,
                read_only=self.read_only,
                warnings=warnings,
                marked=len(self._table().marks),
                busy_rate=status.busy_rate,
            )
        )

    def _apply_view(self, *, cursor_id: str | None | bool = False) -> None:
        self._cancel_stale_aggregates()  # before the rows' read, which would wait behind its scan
        self._table().set_view(self.table_filter(), cursor_id=cursor_id)  # store errors: _query_failed
        # counts and engine rows are cached by (store version, filter): a pane switch re-reads neither
        self.refresh_views(force=True)

    def _switch_pane(self, pane: str) -> None:
        if pane == self.current_pane:
            return
        table = self._table()
        self._pane_cursor[self.current_pane] = table.cursor_id
        self.current_pane = pane
        self._apply_view(cursor_id=self._pane_cursor.get(pane))

    # -- events ---------------------------------------------------------------------------------

    @on(Tabs.TabActivated, "#panes")
    def _pane_changed(self, event: Tabs.TabActivated) -> None:
        if event.tab.id and event.tab.id.startswith("pane-"):
            self._switch_pane(event.tab.id.removeprefix("pane-"))

    @on(FilterBar.Applied)
    def _filter_applied(self, event: FilterBar.Applied) -> None:
        self.filter_text = event.text
        self._query_filter = event.filter
        start = time.perf_counter()
        self._apply_view()
        self._filter_bar().live = time.perf_counter() - start < LIVE_FILTER_BUDGET

    @on(TaskTable.QueryFailed)
    def _query_failed(self, event: TaskTable.QueryFailed) -> None:
        """A filter the store cannot run (e.g. a function SQLite lacks): say so under the input, drop it."""
        bar = self._filter_bar()
        bar.show_error(self.filter_text, Exception(f"cannot run this filter: {event.error}"))
        bar.applied_text = ""
        self._query_filter = None
        self.filter_text = ""
        self._apply_view()

    @on(FilterBar.Closed)
    def _filter_closed(self, event: FilterBar.Closed) -> None:
        self._table().focus()

    @on(EngineList.SelectionChanged)
    def _engines_changed(self, event: EngineList.SelectionChanged) -> None:
        self._apply_view()

    @on(SortRequested)
    def _sort_requested(self, event: SortRequested) -> None:
        sort, descending = self._table().requested_sort
        if event.column == sort:
            self._set_sort(sort, not descending)
        else:
            self._set_sort(event.column, event.column in _DEFAULT_DESCENDING)

    @on(TaskChosen)
    def _task_chosen(self, event: TaskChosen) -> None:
        try:
            from .screens.detail import DetailScreen
        except ImportError:
            self._toast("the detail screen is not available", severity="warning")
            return
        self.push_screen(DetailScreen(event.msg_id))

    def _set_sort(self, column: str, descending: bool) -> None:
        self._table().set_view(self.table_filter(), sort=column, descending=descending)

    # -- actions --------------------------------------------------------------------------------

    def action_pane(self, index: int) -> None:
        if 0 <= index < len(self.panes):
            self.set_pane(self.panes[index])

    def action_open_filter(self) -> None:
        self._filter_bar().open()

    def action_clear_filter(self) -> None:
        bar = self._filter_bar()
        if self.filter_text or bar.has_class("-active"):
            bar.action_clear()
        elif self._engine_list().selected:
            self._engine_list().action_clear_selection()

    def action_focus_engines(self) -> None:
        engines = self._engine_list()
        if engines.has_focus:
            self._table().focus()
        else:
            engines.focus()

    def action_focus_next_pane(self) -> None:
        self.screen.focus_next()

    def action_sort_next(self) -> None:
        sort, _ = self._table().requested_sort
        keys = [c.key for c in COLUMNS]
        column = keys[(keys.index(sort) + 1) % len(keys)] if sort in keys else keys[0]
        self._set_sort(column, column in _DEFAULT_DESCENDING)

    def action_sort_reverse(self) -> None:
        sort, descending = self._table().requested_sort
        self._set_sort(sort, not descending)

    def action_slower(self) -> None:
        bigger = [i for i in INTERVALS if i > self.interval]
        self._set_interval(bigger[0] if bigger else self.interval)

    def action_faster(self) -> None:
        smaller = [i for i in INTERVALS if i < self.interval]
        self._set_interval(smaller[-1] if smaller else self.interval)

    def _set_interval(self, value: float) -> None:
        self.interval = value
        if self.autopoll and not self._polling and self.poller is not None:
            self._arm_poll()
        self._update_status()

    def action_toggle_pause(self) -> None:
        if self.poller is None:
            return
        if self.poller.paused:
            self.poller.resume()
            self.refresh_now()
        else:
            self.poller.pause()
        self._update_status()

    def action_refresh_now(self) -> None:
        self.refresh_now()

    def action_help(self) -> None:
        screen = _screen("help", "HelpScreen")
        if screen is None:
            self._toast("the help screen is not available", severity="warning")
            return
        self.push_screen(screen())

    def action_triage(self) -> None:
        screen = _screen("triage", "TriageScreen")
        if screen is None:
            self._toast("the triage screen is not available", severity="warning")
            return
        self.push_screen(screen())

    def action_resubmit(self) -> None:
        self._start_action("resubmit")

    def action_purge(self) -> None:
        self._start_action("purge")

    def _start_action(self, action: str) -> None:
        start = _screen("actions", "start_action")
        if start is None:
            self._toast(f"{action} is not available", severity="warning")
            return
        start(self, action)

    def action_export(self) -> None:
        start = _screen("actions", "start_export")
        if start is None:
            self._toast("export is not available", severity="warning")
            return
        table = self._table()
        start(self, sort=table.sort, descending=table.descending)

    # -- command palette ------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if not isinstance(screen, MainScreen):
            return
        for i, pane in enumerate(self.panes):
            yield SystemCommand(f"Pane: {PANE_TITLES[pane]}", f"Show the {PANE_TITLES[pane].lower()} tasks (key {i + 1})",
                                lambda i=i: self.action_pane(i))
        yield SystemCommand("Filter tasks", "Type a query: state:failed engine:3 label:fit* since:10m (key /)", self.action_open_filter)
        yield SystemCommand("Clear filter and engine selection", "Show every task (escape)", self._clear_everything)
        yield SystemCommand("Failure triage", "Failed tasks grouped by exception and message (key f)", self.action_triage)
        yield SystemCommand("Resubmit tasks", "Preview, then resubmit marked / cursor / matching tasks (key r)", self.action_resubmit)
        yield SystemCommand("Purge tasks", "Preview, then delete completed records from the Hub DB (key p)", self.action_purge)
        yield SystemCommand("Export the view", "Write the tasks of this view to CSV / JSON (key x)", self.action_export)
        yield SystemCommand("Refresh now", "Poll the source at once (ctrl+r)", self.refresh_now)
        pause = "Resume polling" if self.poller is not None and self.poller.paused else "Pause polling"
        yield SystemCommand(pause, "Stop / restart polling the source (key P)", self.action_toggle_pause)
        yield SystemCommand("Poll less often", f"Now every {self.interval:g} s (key +)", self.action_slower)
        yield SystemCommand("Poll more often", f"Now every {self.interval:g} s (key -)", self.action_faster)
        yield SystemCommand("Clear marks", "Unmark every marked task", self.clear_marks)
        for column in COLUMNS:
            yield SystemCommand(f"Sort by {column.title}", f"Sort the task table by {column.title}",
                                lambda key=column.key: self._set_sort(key, key in _DEFAULT_DESCENDING))

    def _clear_everything(self) -> None:
        bar = self._filter_bar()
        bar.action_clear()
        self._engine_list().action_clear_selection()

    async def action_quit(self) -> None:
        self._quitting = True
        if self._poll_timer is not None:
            self._poll_timer.stop()
        self.exit()

    def on_unmount(self) -> None:
        if self.poller is not None:
            self.poller.close()
        if self._gc_frozen:
            gc.unfreeze()  # an embedding process (tests, `serve`) collects this app's objects again
            self._gc_frozen = False


def _caps_of(source: Source | None) -> Capabilities:
    if source is None:
        return Capabilities(kind="none")
    try:
        return source.capabilities()
    except Exception:
        return Capabilities(kind="unknown")


def _screen(module: str, name: str) -> Any:
    """A screen class / function of the screens package, or None when it is not there (yet)."""
    import importlib

    try:
        return getattr(importlib.import_module(f"tui.screens.{module}"), name)
    except (ImportError, AttributeError):
        return None


def make_app(
    source: Source | None,
    *,
    choices: list | None = None,
    read_only: bool = False,
    poll_interval: float = 1.0,
    busy_interval: float = BUSY_INTERVAL,
    theme: str | None = None,
    keymap: dict[str, str] | None = None,
    clock: Callable[[], float] | None = None,
    now: Callable[[], datetime] | None = None,
    autopoll: bool = True,
) -> HubtopApp:
    """The one factory the CLI and the tests use."""
    return HubtopApp(
        source,
        choices=choices,
        read_only=read_only,
        poll_interval=poll_interval,
        busy_interval=busy_interval,
        theme=theme,
        keymap=keymap,
        clock=clock,
        now=now,
        autopoll=autopoll,
    )
