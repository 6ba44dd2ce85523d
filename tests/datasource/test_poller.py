from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest

from datasource.model import State
from datasource.poller import BUSY_INTERVAL, RATE_SPAN, RECENT_WARNING_SECONDS, Poller
from datasource.sources.base import Capabilities, Delta, SourceUnavailable
from datasource.store import TaskStore
from tests.fakes import FakeSource


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(n: int = 100, **kwargs) -> tuple[FakeSource, TaskStore, Poller, Clock]:
    source = FakeSource(n, **kwargs)
    store = TaskStore()
    clock = Clock()
    return source, store, Poller(source, store, clock=clock), clock


def test_first_load_then_delta() -> None:
    source, store, poller, _ = make(100)
    assert poller.status.state == "connecting"
    assert poller.open().status.state == "loading"
    out = poller.step()
    assert (out.added, out.changed, out.removed, out.event) == (100, 0, 0, None)
    assert out.new_failures == []  # failures of the first load are not "new"
    assert out.status.state == "connected" and out.status.message == "connected"
    assert store.total == 100

    rec = source.records["c0ffee00-0000000000000000000000aa_1000_0"]
    assert rec.state is State.PENDING
    rec.state, rec.ename, rec.evalue = State.FAILED, "ValueError", "late"
    rec.completed = rec.submitted + timedelta(seconds=2)
    out = poller.step()
    assert (out.added, out.changed) == (0, 1)
    assert out.new_failures == [rec.msg_id]


def test_backoff_sequence_and_next_delay() -> None:
    source, _, poller, clock = make(10)
    poller.open()
    poller.step()
    assert poller.next_delay(1.5) == 1.5
    source.fail_next = 7
    delays = []
    for _ in range(7):
        out = poller.step()
        assert out.status.state == "retrying"
        delays.append(poller.next_delay(1.5))
    assert delays == [2, 4, 8, 16, 20, 20, 20]
    assert poller.status.failures == 7
    assert poller.status.retry_in == 20
    assert poller.status.message.startswith("no reply from the Hub at tcp://127.0.0.1:1")
    assert poller.status.message.endswith("; retrying in 20 s")
    clock.now += 5.5
    assert poller.next_delay(1.5) == 14.5
    assert poller.status.retry_in == 14.5 and poller.status.message.endswith("retrying in 15 s")
    out = poller.step()
    assert out.status.state == "connected" and out.status.failures == 0 and out.status.retry_in is None
    assert poller.next_delay(1.5) == 1.5


def test_max_backoff_is_configurable() -> None:
    source = FakeSource(5)
    poller = Poller(source, TaskStore(), clock=Clock(), max_backoff=3.0)
    source.fail_next = 3
    for _ in range(3):
        poller.step()
    assert poller.next_delay(1) == 3.0


def test_events_once_per_transition() -> None:
    source, _, poller, _ = make(10)
    poller.open()
    assert poller.step().event is None
    source.fail_next = 3
    events = [poller.step().event for _ in range(3)]
    assert events[0] == "connection lost: no reply from the Hub at tcp://127.0.0.1:1: it is down or the key does not match"
    assert events[1:] == [None, None]
    assert poller.step().event == "reconnected"
    assert poller.step().event is None
    source.fail_next = 1
    assert poller.step().event.startswith("connection lost: ")
    assert poller.step().event == "reconnected"


def test_failure_before_any_success_says_cannot_connect() -> None:
    source, store, poller, _ = make(10)
    source.fail_next = 2
    assert poller.step().event.startswith("cannot connect: no reply")
    assert poller.step().event is None
    out = poller.step()
    assert out.event == "reconnected" and out.added == 10 and store.total == 10


class FailingOpen(FakeSource):
    def __init__(self, *args, fails: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fails = fails
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.fails:
            raise SourceUnavailable("no reply from the Hub at tcp://127.0.0.1:9 within 5 s")


def test_open_errors_become_status_and_step_retries_open() -> None:
    source = FailingOpen(10, fails=2)
    store = TaskStore()
    poller = Poller(source, store, clock=Clock())
    out = poller.open()
    assert out.status.state == "retrying" and out.event.startswith("cannot connect: no reply")
    assert poller.next_delay(1) == 2
    out = poller.step()
    assert out.status.state == "retrying" and out.status.failures == 2 and source.opens == 2
    assert store.total == 0
    out = poller.step()
    assert source.opens == 3 and out.status.state == "connected" and out.event == "reconnected"
    assert store.total == 10
    poller.step()
    assert source.opens == 3  # opened once it worked


def test_progress_visible_during_chunked_first_load() -> None:
    source = FakeSource(1000, chunk=100)
    store = TaskStore()
    seen: list[tuple[bool, int, int | None, str, str, int]] = []
    poller: Poller

    def on_delta(delta: Delta) -> None:
        # Runs inside step(), after the delta is in the store: what the UI thread would see now.
        st = poller.status
        seen.append((store.loading, store.load_done, store.load_total, st.state, st.message, store.total))

    poller = Poller(source, store, clock=Clock(), on_delta=on_delta)
    poller.open()
    out = poller.step()
    assert out.added == 1000 and out.status.state == "connected"
    assert len(seen) == 10
    assert seen[0] == (True, 100, 1000, "loading", "loading tasks: 100 of 1,000", 100)
    assert seen[4][1] == 500 and seen[4][4] == "loading tasks: 500 of 1,000" and seen[4][5] == 500
    assert seen[-1][0] is False and seen[-1][5] == 1000  # the last delta ends the load
    assert not store.loading


def test_status_readable_from_another_thread_while_a_sync_runs() -> None:
    source = FakeSource(300, chunk=100)
    store = TaskStore()
    gate, release = threading.Event(), threading.Event()

    def on_delta(delta: Delta) -> None:
        if delta.reset:
            gate.set()
            release.wait(5)

    poller = Poller(source, store, clock=Clock(), on_delta=on_delta)
    poller.open()
    worker = threading.Thread(target=poller.step)
    worker.start()
    assert gate.wait(5)
    st = poller.status  # the worker is parked inside step(), mid-load
    assert st.state == "loading" and st.message == "loading tasks: 100 of 300"
    overlapping = poller.step()  # a second step while one runs: returns at once, touches nothing
    assert overlapping.added == 0 and overlapping.status.state == "loading" and store.total == 100
    release.set()
    worker.join(5)
    assert poller.status.state == "connected"


def test_close_while_a_sync_runs_is_done_by_the_syncing_thread_after_it() -> None:
    """The UI thread closes the poller at exit while a worker is inside a sync: the source (whose sockets are
    not thread-safe) is closed by the worker once the sync ends, exactly once, and no step runs after."""
    closed_by: list[tuple[str, bool]] = []
    gate, release = threading.Event(), threading.Event()

    class Source(FakeSource):
        in_sync = False

        def sync(self):
            self.in_sync = True
            try:
                yield from super().sync()
            finally:
                self.in_sync = False

        def close(self) -> None:
            closed_by.append((threading.current_thread().name, self.in_sync))

    def on_delta(delta: Delta) -> None:
        gate.set()
        release.wait(5)

    source, store = Source(50), TaskStore()
    poller = Poller(source, store, clock=Clock(), on_delta=on_delta)
    worker = threading.Thread(target=poller.step, name="poll-worker")
    worker.start()
    assert gate.wait(5)
    poller.close()  # returns at once: the worker holds the step
    assert closed_by == []
    release.set()
    worker.join(5)
    assert closed_by == [("poll-worker", False)]
    poller.close()
    assert poller.step().added == 0 and closed_by == [("poll-worker", False)]


def test_close_between_polls_closes_at_once() -> None:
    calls = []
    source, _, poller, _ = make(5)
    source.close = lambda: calls.append(1)  # type: ignore[method-assign]
    poller.step()
    poller.close()
    assert calls == [1]
    assert poller.step().added == 0 and calls == [1]


def test_age_from_injected_clock() -> None:
    source, _, poller, clock = make(5)
    assert poller.age() is None
    poller.step()
    assert poller.age() == 0
    assert poller.status.last_success == 1000.0
    clock.now += 7.25
    assert poller.age() == 7.25
    source.fail_next = 1
    poller.step()
    clock.now += 1
    assert poller.age() == 8.25  # a failure does not refresh the data age
    assert poller.status.last_success == 1000.0


class Exploding(FakeSource):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.explode = False

    def sync(self):
        for delta in super().sync():
            if self.explode:
                raise KeyError("engine_info")
            yield delta


def test_unexpected_exception_does_not_escape(caplog) -> None:
    source = Exploding(10)
    store = TaskStore()
    poller = Poller(source, store, clock=Clock())
    poller.step()
    source.explode = True
    with caplog.at_level(logging.ERROR, logger="hubtop"):
        out = poller.step()
    assert out.status.state == "retrying"
    assert out.event == "connection lost: internal error while polling fake source: KeyError: 'engine_info'"
    assert "\n" not in out.status.message
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
    source.explode = False
    assert poller.step().status.state == "connected"


def test_on_delta_sees_every_delta_in_order() -> None:
    source = FakeSource(250, chunk=100)
    got: list[Delta] = []
    poller = Poller(source, TaskStore(), clock=Clock(), on_delta=got.append)
    poller.step()
    assert [d.done for d in got] == [100, 200, 250]
    assert got[0].reset and not got[-1].loading


def test_warnings_standing_and_recent() -> None:
    caps = Capabilities(kind="fake", backend="dictdb", warnings=("the Hub uses DictDB: it keeps 1,024 records",))
    source = FakeSource(20, caps=caps)
    clock = Clock()
    poller = Poller(source, TaskStore(), clock=clock)
    poller.open()
    assert poller.status.warnings == ["the Hub uses DictDB: it keeps 1,024 records"]
    poller.step()
    del source.records["c0ffee00-0000000000000000000000aa_1000_5"]
    del source.records["c0ffee00-0000000000000000000000aa_1000_6"]
    out = poller.step()
    assert out.removed == 2
    assert out.warnings == ["2 records disappeared since the last poll"]
    assert poller.status.warnings == [
        "the Hub uses DictDB: it keeps 1,024 records",
        "2 records disappeared since the last poll",
    ]
    assert poller.step().warnings == []  # a poll's warnings are reported once...
    assert len(poller.status.warnings) == 2  # ...and stay among the recent ones for a while
    clock.now += RECENT_WARNING_SECONDS + 1
    assert poller.status.warnings == ["the Hub uses DictDB: it keeps 1,024 records"]


def test_recent_warnings_are_bounded() -> None:
    source, _, poller, _ = make(100)
    poller.step()
    for i in range(8):
        del source.records[f"c0ffee00-0000000000000000000000aa_1000_{i + 2}"]
        source.records.pop(f"c0ffee00-0000000000000000000000aa_1000_{i + 12}")
        poller.step()  # "2 records disappeared" every time: one entry, refreshed
    assert poller.status.warnings == ["2 records disappeared since the last poll"]
    for n in range(1, 8):
        for i in range(n):
            source.records.pop(next(iter(source.records)))
        poller.step()
    assert len(poller.status.warnings) == 5
    assert poller.status.warnings[-1] == "7 records disappeared since the last poll"


def test_pause_and_resume() -> None:
    source, store, poller, _ = make(10)
    poller.pause()
    out = poller.step()
    assert out.status.state == "paused" and store.total == 0
    poller.resume()
    assert poller.step().status.state == "connected" and store.total == 10


@pytest.mark.cluster
def test_real_hub_lost_and_back(fresh_cluster) -> None:
    """A real Hub killed and restarted: one "connection lost", backoff while down, one "reconnected"."""
    from datasource.sources.hub import HubSource

    cluster = fresh_cluster("sqlite", n=1)
    source = HubSource(cluster.connection_file, timeout=1.0)
    store = TaskStore()
    clock = Clock()
    poller = Poller(source, store, clock=clock)
    try:
        poller.open()
        out = poller.step()
        assert out.status.state == "connected" and out.event is None
        cluster.kill_controller()
        out = poller.step()
        assert out.status.state == "retrying"
        assert out.event.startswith("connection lost: no reply from the Hub at tcp://127.0.0.1:")
        assert poller.next_delay(1.0) == 2.0
        out = poller.step()
        assert out.event is None and poller.next_delay(1.0) == 4.0
        cluster.restart_controller()
        out = poller.step()
        assert out.status.state == "connected", out.status.message
        assert out.event == "reconnected"
        assert any("the Hub restarted" in w for w in out.warnings)
    finally:
        poller.close()


def test_submit_steps_on_one_background_priority_thread() -> None:
    from datasource.priority import thread_nice

    source, store, poller, _ = make(50)
    seen: list[tuple[int, int | None]] = []
    sync = source.sync

    def watched_sync():
        seen.append((threading.get_native_id(), thread_nice()))
        return sync()

    source.sync = watched_sync
    closed: list[bool] = []
    source.close = lambda: closed.append(True)
    assert poller.submit().result(timeout=10).added == 50
    assert poller.submit().result(timeout=10).status.state == "connected"
    assert len(seen) == 2 and seen[0][0] == seen[1][0] != threading.get_native_id()
    if thread_nice() is not None:  # Linux: the polls run below the caller's priority
        assert seen[0][1] > thread_nice()
    poller.close()
    assert poller.submit().result(timeout=10).added == 0  # closed: nothing runs, nothing raises
    assert closed == [True] and len(seen) == 2


def _poll_later(source: FakeSource, poller: Poller, clock: Clock, seconds: float, new_tasks: int = 0) -> None:
    """`seconds` later, after `new_tasks` tasks were submitted: one poll."""
    from tests.fakes import make_record

    start = len(source.records)
    for i in range(start, start + new_tasks):
        rec = make_record(i, session="b0b0b0b0-0000000000000000000000bb")
        source.records[rec.msg_id] = rec
    clock.now += seconds
    poller.step()
    assert poller.status.state == "connected"


def test_polls_are_spaced_out_while_the_tasks_change_fast_and_back_when_calm() -> None:
    source, store, poller, clock = make(20_000, chunk=1_000)  # a load of 20 chunks: counted as no change
    poller.step()
    assert store.total == 20_000
    assert poller.next_delay(1.0) == 1.0 and poller.status.busy_rate is None
    # 150 changes/s as a SQLite Hub writes them (a commit every 2 s): 300, then nothing. Not busy: the rate
    # is measured over RATE_SPAN, not over the one poll that saw the commit
    for changes in (300, 0, 300, 0):
        _poll_later(source, poller, clock, 1.0, changes)
        assert poller.next_delay(1.0) == 1.0 and poller.status.busy_rate is None

    _poll_later(source, poller, clock, 1.0, 1_000)  # a burst's first poll: busy at once
    assert poller.next_delay(1.0) == BUSY_INTERVAL and poller.interval_for(1.0) == BUSY_INTERVAL
    assert poller.status.busy_rate == pytest.approx(1_000 / RATE_SPAN)
    assert poller.next_delay(10.0) == 10.0  # a longer chosen interval stays

    _poll_later(source, poller, clock, BUSY_INTERVAL, 480)  # 120/s: under BUSY_RATE, above CALM_RATE: still busy
    assert poller.next_delay(1.0) == BUSY_INTERVAL and poller.status.busy_rate == pytest.approx(120.0)

    _poll_later(source, poller, clock, 0.2)  # `r`: a refresh forced right after, nothing new: too short to be calm
    assert poller.next_delay(1.0) == BUSY_INTERVAL

    _poll_later(source, poller, clock, BUSY_INTERVAL, 40)  # 10/s: calm again
    assert poller.next_delay(1.0) == 1.0 and poller.status.busy_rate is None


def test_a_refresh_right_after_a_poll_does_not_make_a_rate() -> None:
    source, store, poller, clock = make(100)
    poller.step()
    _poll_later(source, poller, clock, 1.0, 150)
    _poll_later(source, poller, clock, 0.1, 150)  # `r` 0.1 s later: 300 over 2 s at least, not 1,500/s
    assert poller.next_delay(1.0) == 1.0 and poller.status.busy_rate is None


def test_busy_interval_zero_never_spaces_the_polls_out() -> None:
    source, clock = FakeSource(100), Clock()
    poller = Poller(source, TaskStore(), clock=clock, busy_interval=0)
    poller.step()
    _poll_later(source, poller, clock, 1.0, 5_000)
    assert poller.next_delay(1.0) == 1.0 and poller.status.busy_rate is None


def test_while_retrying_the_backoff_wins_over_the_busy_interval() -> None:
    source, store, poller, clock = make(100)
    poller.step()
    _poll_later(source, poller, clock, 1.0, 1_000)
    assert poller.next_delay(1.0) == BUSY_INTERVAL
    source.fail_next = 1
    poller.step()
    assert poller.status.state == "retrying" and poller.next_delay(1.0) == 2.0


def test_a_real_burst_spaces_the_polls_out_until_the_cluster_is_calm(fresh_cluster) -> None:
    """A real Hub (SQLite, read directly) running a burst of trivial tasks: the polls that see it are busy
    (hundreds of changes a second), and once every task is recorded done they are back at the interval."""
    import time

    from datasource.sources.open import open_source
    from tests.cluster_workload import connect, _ok

    cluster = fresh_cluster("sqlite", n=2)
    store = TaskStore()
    poller = Poller(open_source(str(cluster.connection_file), direct=True), store)
    rc = connect(cluster.connection_file)
    try:
        poller.step()
        assert poller.status.state == "connected" and not store.loading
        ar = rc.load_balanced_view().map_async(_ok, range(1_000), chunksize=1)
        busy_rates = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            poller.step()
            if poller.status.busy_rate is not None:
                busy_rates.append(poller.status.busy_rate)
                assert poller.next_delay(1.0) == BUSY_INTERVAL
            if ar.ready() and store.counts()["succeeded"] == 1_000:
                break
        ar.get(timeout=10)
        assert busy_rates and max(busy_rates) > 200, busy_rates
        # The span under way when the last task showed done still counts the burst's last changes (it can end
        # busy); the next one counts none and ends calm: two spans, and slack for a slow machine.
        calm_by = time.monotonic() + 2 * RATE_SPAN + 3.0
        while poller.status.busy_rate is not None and time.monotonic() < calm_by:
            time.sleep(0.5)
            poller.step()
        assert poller.status.busy_rate is None and poller.next_delay(1.0) == 1.0
    finally:
        rc.close()
        poller.close()
