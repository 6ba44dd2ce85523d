from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator, TypeVar

import pytest

from datasource.model import Engine, State, TaskRecord
from datasource.sources.base import Delta
from datasource.store import (
    PANES,
    TaskStore,
    combine,
    engine_filter,
    failure_signature,
    ids_filter,
    pane_filter,
)
from tests.fakes import ENGINE_UUIDS, FakeSource, make_record

T = TypeVar("T")


def load(store: TaskStore, source: FakeSource) -> None:
    for delta in source.sync():
        store.apply(delta)


def planned(store: TaskStore, read: Callable[[], T]) -> tuple[T, str]:
    """What `read()` returns, and SQLite's plan for the first statement it ran that orders rows."""
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        result = read()
    finally:
        store._db.set_trace_callback(None)
    select = next(s for s in statements if s.startswith("SELECT") and "ORDER BY" in s)
    return result, " | ".join(row[3] for row in store._query("EXPLAIN QUERY PLAN " + select))


@contextmanager
def lock_held_elsewhere(store: TaskStore) -> Iterator[None]:
    """The store's lock held by another thread (a write, or a filter's scan) for the duration."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._lock:
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(5)
        yield
    finally:
        release.set()
        thread.join()


@pytest.fixture
def loaded() -> tuple[TaskStore, FakeSource]:
    source = FakeSource(200, chunk=64)
    store = TaskStore()
    load(store, source)
    return store, source


def test_counts_by_pane(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, source = loaded
    counts = store.counts()
    expected = {pane: 0 for pane in PANES}
    for r in source.records.values():
        expected[r.state.value] += 1
        expected["queued"] += r.state is State.PENDING  # not known to be running: waiting
        expected["all"] += 1
        expected["resubmitted"] += r.resubmitted is not None
    assert counts == expected
    assert counts["all"] == store.total == 200
    assert counts["pending"] == 20 and counts["failed"] == 20 and counts["aborted"] == 10


def test_queued_and_running_count_as_pending() -> None:
    store = TaskStore()
    recs = [make_record(i) for i in range(3)]
    recs[0].state, recs[1].state = State.QUEUED, State.RUNNING
    store.apply(Delta(upserts=recs, reset=True))
    c = store.counts()
    assert (c["pending"], c["queued"], c["running"]) == (2, 1, 1)
    assert store.count(pane_filter("pending")) == 2


def test_the_queued_pane_holds_every_pending_task_not_known_to_be_running() -> None:
    """A source that sees tasks start (IOPub) marks them running; the others stay `pending` (it cannot prove
    they are queued: a task may have started before it listened). They belong in the Queued pane."""
    store = TaskStore()
    recs = [make_record(i) for i in range(40) if make_record(i).state is State.PENDING] + [make_record(1)]
    waiting = {r.msg_id for r in recs if r.state is State.PENDING}
    recs[0].state = State.RUNNING
    waiting.discard(recs[0].msg_id)
    store.apply(Delta(upserts=recs, reset=True))
    queued = pane_filter("queued")
    assert store.counts()["queued"] == store.count(queued) == len(waiting) >= 2
    assert {r.msg_id for r in store.page(queued, limit=100)} == waiting
    # no task is in state `queued`: the pane is read as `state = 'pending'`, in the indexes' order
    assert store._narrow(queued) == ("state = ?", ["pending"])
    assert store.position(sorted(waiting)[0], queued, sort="msg_id", descending=False) == 0


def test_page_sorted_filtered_and_paged(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, source = loaded
    page = store.page(pane_filter("failed"), sort="submitted", descending=True, offset=0, limit=5)
    failed = sorted((r for r in source.records.values() if r.state is State.FAILED), key=lambda r: r.submitted, reverse=True)
    assert [r.msg_id for r in page] == [r.msg_id for r in failed[:5]]
    page2 = store.page(pane_filter("failed"), offset=5, limit=5)
    assert [r.msg_id for r in page2] == [r.msg_id for r in failed[5:10]]
    assert page[0] == failed[0]  # round trip through the store keeps every field


def test_nulls_sort_last_both_ways(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, _ = loaded
    for desc in (True, False):
        rows = store.page(sort="duration", descending=desc, limit=1000)
        durations = [r.duration for r in rows]
        first_none = durations.index(None)
        assert all(d is None for d in durations[first_none:])
        known = durations[:first_none]
        assert known == sorted(known, reverse=desc)


@pytest.mark.parametrize("sort", ["duration", "engine_id", "label", "ename", "completed"])
@pytest.mark.parametrize("desc", [True, False])
@pytest.mark.parametrize("where", [None, pane_filter("pending"), pane_filter("failed"), ("label = ?", ("fit-1",))])
def test_a_page_at_any_offset_is_a_slice_of_one_order(loaded: tuple[TaskStore, FakeSource], sort: str, desc: bool,
                                                      where) -> None:
    """A nullable column's view is two ranges (the partial indexes hold only rows with a value): the rows with
    a value by (value, rowid), then the NULLs by rowid, either direction. A page that starts in either
    range, or straddles the boundary, is the same slice of that one order."""
    store, _ = loaded
    sql, params = combine(where)
    rows = store._query(f"SELECT msg_id, {sort}, rowid FROM tasks WHERE {sql}", params)
    with_value = sorted((r for r in rows if r[1] is not None), key=lambda r: (r[1], r[2]), reverse=desc)
    without = sorted((r for r in rows if r[1] is None), key=lambda r: r[2], reverse=desc)
    order = [r[0] for r in with_value + without]
    assert [r.msg_id for r in store.page(where, sort=sort, descending=desc, limit=len(order) + 5)] == order
    edge = len(with_value)
    for offset in sorted({0, 1, max(0, edge - 3), edge - 1, edge, edge + 1, len(order) - 1, len(order) + 2} - {-1}):
        for limit in (1, 4):
            page = store.page(where, sort=sort, descending=desc, offset=offset, limit=limit, matches=len(order))
            assert [r.msg_id for r in page] == order[offset:offset + limit], (offset, limit)
    for index in range(max(0, edge - 2), min(len(order), edge + 2)):
        assert store.position(order[index], where, sort=sort, descending=desc) == index


@pytest.mark.parametrize("sort", ["submitted", "duration", "engine_id", "label", "state"])
@pytest.mark.parametrize("desc", [True, False])
def test_position_matches_page(loaded: tuple[TaskStore, FakeSource], sort: str, desc: bool) -> None:
    store, _ = loaded
    where = pane_filter("all")
    rows = store.page(where, sort=sort, descending=desc, limit=1000)
    for index in (0, 7, 55, len(rows) - 1):
        assert store.position(rows[index].msg_id, where, sort=sort, descending=desc) == index
    assert store.position("nope", where) is None


def test_engine_filter_and_counts(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, source = loaded
    e0 = ENGINE_UUIDS[0]
    assert store.count(engine_filter([e0])) == sum(r.engine_uuid == e0 for r in source.records.values())
    assert store.count(engine_filter([None])) == sum(r.engine_uuid is None for r in source.records.values())
    per_engine = store.engine_counts()
    assert sum(per_engine[e0].values()) == store.count(engine_filter([e0]))
    assert store.count(engine_filter([])) == 0
    both = combine(engine_filter([e0]), pane_filter("failed"))
    assert store.count(both) == sum(r.engine_uuid == e0 and r.state is State.FAILED for r in source.records.values())


def test_counts_and_engine_counts_of_one_filter_share_one_scan(loaded: tuple[TaskStore, FakeSource]) -> None:
    """The app asks counts(view filter) and engine_counts(query): with no engine selected, the same filter
    wrapped once more by combine(). One scan serves both (a label or ename filter at 1M tasks: ~45 ms each);
    another filter, or a store change, scans again."""
    store, source = loaded
    query = ("label = ?", ("fit-1",))
    grouped: list[str] = []
    store._db.set_trace_callback(lambda s: grouped.append(s) if "GROUP BY engine_uuid, state" in s else None)
    try:
        counts = store.counts(combine(query, None))
        per_engine = store.engine_counts(query)
        assert len(grouped) == 1
        store.counts(combine(combine(query)))
        assert len(grouped) == 1
        store.counts(("label = ?", ("fit-2",)))
        assert len(grouped) == 2
    finally:
        store._db.set_trace_callback(None)
    labelled = [r for r in source.records.values() if r.label == "fit-1"]
    assert counts["all"] == len(labelled) == sum(sum(states.values()) for states in per_engine.values())


def test_a_cancelled_count_scan_stops_keeps_nothing_and_frees_the_store(loaded: tuple[TaskStore, FakeSource],
                                                                        monkeypatch) -> None:
    """counts(cancelled=...) asks `cancelled` while SQLite scans: True stops the scan (ScanCancelled), the
    lock is free at once and nothing is memoized; a scan never cancelled answers as without it."""
    import datasource.store as store_mod
    from datasource.store import ScanCancelled

    monkeypatch.setattr(store_mod, "_CANCEL_CHECK_STEPS", 10)  # ask often: the test store is small
    store, source = loaded
    query = ("label = ?", ("fit-1",))
    asked: list[int] = []

    def cancel_on_third_ask() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(ScanCancelled):
        store.counts(query, cancelled=cancel_on_third_ask)
    assert len(asked) == 3
    assert store._lock.acquire(blocking=False)
    store._lock.release()
    assert not any(key[0] == "grouped" for key in store._memos)
    with pytest.raises(ScanCancelled):
        store.engine_counts(query, cancelled=lambda: True)
    uncancelled = store.counts(query, cancelled=lambda: False)
    assert uncancelled == store.counts(query)
    assert uncancelled["all"] == sum(r.label == "fit-1" for r in source.records.values())


def test_aggregates_now_answers_only_from_the_aggregate_and_never_waits(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, _ = loaded
    failed = pane_filter("failed")
    assert store.aggregates_now() == (store.counts(), store.engine_counts())
    assert store.aggregates_now(failed, failed) == (store.counts(failed), store.engine_counts(failed))
    e0 = engine_filter([ENGINE_UUIDS[0]])
    assert store.aggregates_now(e0) is None and store.aggregates_now(None, e0) is None  # scans: in a thread
    with lock_held_elsewhere(store):
        assert store.aggregates_now() is None  # a write under way: not waited for on the UI thread
    assert store.aggregates_now() is not None


def test_engines_merge_and_alive(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, source = loaded
    assert [e.id for e in store.engines()] == [0, 1, 2, 3]
    source.engine_list = source.engine_list[:2]
    load(store, source)
    engines = store.engines()
    assert [(e.id, e.alive) for e in engines] == [(0, True), (1, True), (2, False), (3, False)]


def test_engine_ids_filled_from_engine_list() -> None:
    store = TaskStore()
    rec = make_record(5)
    rec.engine_id = None
    store.apply(Delta(upserts=[rec], reset=True))
    assert store.get(rec.msg_id).engine_id is None
    store.apply(Delta(engines=[Engine(rec.engine_uuid, 7, True)]))
    assert store.get(rec.msg_id).engine_id == 7


def test_deltas_update_add_remove_and_report_new_failures(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, source = loaded
    pending = next(r for r in source.records.values() if r.state is State.PENDING)
    done = TaskRecord(**{f: getattr(pending, f) for f in TaskRecord.__slots__})
    done.state, done.ename, done.evalue = State.FAILED, "ValueError", "bad value 1"
    done.completed = (done.submitted or 0) + timedelta(seconds=5)
    source.records[pending.msg_id] = done
    new = make_record(10_000)
    source.records[new.msg_id] = new
    gone = make_record(7).msg_id
    del source.records[gone]
    version = store.version
    results = [store.apply(d) for d in source.sync()]
    assert sum(r.added for r in results) == 1
    assert sum(r.changed for r in results) == 1
    assert sum(r.removed for r in results) == 1
    assert [f for r in results for f in r.new_failures] == [pending.msg_id]
    assert store.get(gone) is None and store.get(new.msg_id) == new
    assert store.get(pending.msg_id).state is State.FAILED
    assert store.version > version and store.removed_total == 1
    # nothing changed -> version stays (views skip re-rendering)
    version = store.version
    for d in source.sync():
        d.engines = None
        d.queue = None
        store.apply(d)
    assert store.version == version


def test_reset_drops_what_was_not_delivered_again() -> None:
    store = TaskStore()
    store.apply(Delta(upserts=[make_record(i) for i in range(10)], reset=True))
    assert store.total == 10
    store.apply(Delta(upserts=[make_record(i) for i in range(3)], reset=True, loading=True, done=3, total=5))
    assert store.loading and store.total == 10  # until the reload finishes nothing is dropped
    store.apply(Delta(upserts=[make_record(i) for i in range(3, 5)], loading=False, done=5, total=5))
    assert not store.loading and store.total == 5


def test_resubmission_lineage() -> None:
    store = TaskStore()
    a, b, c = make_record(2), make_record(3), make_record(5)
    a.resubmitted, b.resubmitted = b.msg_id, c.msg_id
    store.apply(Delta(upserts=[a, b, c], reset=True))
    assert store.lineage(b.msg_id) == [a.msg_id, b.msg_id, c.msg_id]
    assert store.resubmitted_from(c.msg_id) == b.msg_id
    assert store.resubmitted_from(a.msg_id) is None
    assert store.counts()["resubmitted"] == 2
    assert set(store.ids(pane_filter("resubmitted"))) == {a.msg_id, b.msg_id}


def test_failure_groups(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, source = loaded
    groups = store.failure_groups()
    assert sum(g.count for g in groups) == store.counts()["failed"]
    by_sig = {g.signature: g for g in groups}
    assert "ValueError: bad value N" in by_sig  # 'bad value 2', 'bad value 23' ... one group
    g = by_sig["ValueError: bad value N"]
    assert store.count(combine(pane_filter("failed"), store.signature_filter(g.signature))) == g.count
    assert failure_signature("KeyError", "'k1'") == failure_signature("KeyError", "'k22'")
    assert failure_signature("EngineError", None) == "EngineError"


def test_ids_filter_and_get_many(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, source = loaded
    some = list(source.records)[:3]
    assert sorted(r.msg_id for r in store.get_many(some)) == sorted(some)
    assert store.count(ids_filter([])) == 0
    assert store.count(ids_filter(some + ["unknown"])) == 3


def test_unknown_sort_and_pane_are_refused(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, _ = loaded
    with pytest.raises(ValueError, match="cannot sort"):
        store.page(sort="msg_id; DROP TABLE tasks")
    with pytest.raises(ValueError, match="unknown pane"):
        pane_filter("nope")


def test_reader_and_writer_threads() -> None:
    store = TaskStore()
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                store.counts()
                store.page(limit=20)
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    source = FakeSource(5000, chunk=500)
    load(store, source)
    stop.set()
    t.join()
    assert not errors and store.total == 5000


def test_whitespace_evalue_and_regex_filters() -> None:
    from datasource.query import parse, to_sql

    store = TaskStore()
    rec = make_record(2)
    rec.evalue = " \n "
    store.apply(Delta(upserts=[rec, make_record(3)], reset=True))
    assert failure_signature(rec.ename, rec.evalue) == rec.ename
    assert store.count(to_sql(parse('{"ename": {"$regex": "^(Value|Key)Error$"}}'))) == 2


def test_idle_poll_keeps_the_version(loaded: tuple[TaskStore, FakeSource]) -> None:
    store, source = loaded
    load(store, source)  # engines and queue delivered again, unchanged
    version = store.version
    load(store, source)
    assert store.version == version  # nothing to repaint
    source.engine_list[1].alive = False
    load(store, source)
    assert store.version > version and any(not e.alive for e in store.engines())
    version = store.version
    source.engine_list[0].tasks += 1  # a queue count moved: the engine list must repaint
    load(store, source)
    assert store.version > version


@pytest.mark.parametrize("sort", ["submitted", "label", "state"])
@pytest.mark.parametrize("where", [pane_filter("all"), pane_filter("failed"), ("label = ?", ["fit-1"])])
def test_position_within_bound(loaded: tuple[TaskStore, FakeSource], sort: str, where) -> None:
    store, _ = loaded
    rows = store.page(where, sort=sort, descending=False, limit=300)
    assert len(rows) >= 16
    for index in (0, 7, 8, 15):
        exact = store.position(rows[index].msg_id, where, sort=sort, descending=False)
        bounded = store.position(rows[index].msg_id, where, sort=sort, descending=False, within=8)
        assert exact == index
        assert bounded == (index if index < 8 else None)


def test_poll_upserts_write_only_what_changed(loaded: tuple[TaskStore, FakeSource]) -> None:
    """A poll's upserts (not a load): a known row updates the columns that differ, an identical one is not
    a change (no version bump, no repaint), a msg_id given twice keeps the last record, a row that turns
    failed is a new failure, and the aggregate follows the state changes."""
    store, source = loaded
    pending = [r for r in source.records.values() if r.state is State.PENDING][:2]
    counts = store.counts()
    version = store.version
    same = store.get(pending[0].msg_id)
    assert store.apply(Delta(upserts=[same])).changed == 0 and store.version == version

    relabelled = dataclasses.replace(same, label="moved")
    first = dataclasses.replace(pending[1], state=State.SUCCEEDED,
                                completed=pending[1].submitted + timedelta(seconds=1))
    last = dataclasses.replace(first, state=State.FAILED, ename="KeyError", evalue="'k'")
    result = store.apply(Delta(upserts=[relabelled, first, last]))
    assert (result.added, result.changed, result.new_failures) == (0, 2, [pending[1].msg_id])
    assert store.version > version
    assert store.get(same.msg_id) == relabelled and store.get(last.msg_id) == last
    after = store.counts()
    assert after["pending"] == counts["pending"] - 1 and after["failed"] == counts["failed"] + 1
    assert after["succeeded"] == counts["succeeded"] and after["all"] == counts["all"]
    assert store.count(("label = ?", ["moved"])) == 1
    assert [g.signature for g in store.failure_groups(("msg_id = ?", [last.msg_id]))] == ["KeyError: '…'"]


def test_a_fill_reports_its_progress_until_done_and_a_reset_clears_it() -> None:
    store = TaskStore()
    records = [make_record(i) for i in range(6)]
    store.apply(Delta(upserts=records, reset=True))
    assert store.filling is None
    store.apply(Delta(upserts=records[:2], filling=(2, 6)))
    assert store.filling == (2, 6) and not store.loading
    store.apply(Delta())  # an ordinary poll in between: the fill is still under way
    assert store.filling == (2, 6)
    store.apply(Delta(upserts=records[2:], filling=(6, 6)))
    assert store.filling is None
    store.apply(Delta(upserts=records[:1], filling=(1, 6)))
    store.apply(Delta(upserts=records, reset=True))  # a reload starts over
    assert store.filling is None


def test_a_filtered_view_in_the_default_order_walks_an_index_without_sorting(monkeypatch) -> None:
    """engine:3, label:x, ename:E on a big store (planner statistics written after the load): the first page,
    newest first, is read in index order. Sorting every match instead cost 60-180 ms a page at 1M tasks, and
    walking the submitted index past the non-matches of a rare ename 250 ms."""
    import datasource.store as store_mod

    monkeypatch.setattr(store_mod, "STATS_MIN_ROWS", 2_000)
    source = FakeSource(3_000, chunk=1_000)
    store = TaskStore()
    load(store, source)
    assert store._query("SELECT count(*) FROM sqlite_stat1")[0][0] > 0  # the load wrote them
    for column, value in (("engine_id", 3), ("label", "fit-1"), ("ename", "KeyError")):
        where = (f"{column} = ?", (value,))
        page, plan = planned(store, lambda: store.page(where, sort="submitted", descending=True, limit=20))
        assert page and all(getattr(r, column) == value for r in page)
        assert f"INDEX tasks_{column}_submitted" in plan and "TEMP B-TREE" not in plan, plan
        # the counts of the same filter still come from their covering index, in GROUP BY order
        grouped = " | ".join(row[3] for row in store._query(
            f"EXPLAIN QUERY PLAN SELECT engine_uuid, state, count(*), count(resubmitted) FROM tasks WHERE {column} = ? "
            "GROUP BY engine_uuid, state", (value,)))
        assert f"COVERING INDEX tasks_count_{column}" in grouped and "TEMP B-TREE" not in grouped, grouped


def test_a_filtered_view_sorted_by_state_reads_the_filters_index_in_order(monkeypatch) -> None:
    """engine:3, label:x, ename:E sorted by state: ties go by rowid, so the (state, column) index, skipped
    through state by state, holds the matches in page order. With msg_id as the tiebreak SQLite walked the
    (state, msg_id) index past every non-match instead: ename:ValueError at 1M tasks, 58-340 ms a page."""
    import datasource.store as store_mod

    monkeypatch.setattr(store_mod, "STATS_MIN_ROWS", 2_000)
    source = FakeSource(3_000, chunk=1_000)
    store = TaskStore()
    load(store, source)
    for column, value in (("engine_id", 3), ("label", "fit-1"), ("ename", "KeyError")):
        where = (f"{column} = ?", (value,))
        for descending in (False, True):
            page, plan = planned(store, lambda: store.page(where, sort="state", descending=descending, limit=20))
            assert page and all(getattr(r, column) == value for r in page)
            states = [r.state.value for r in page]
            assert states == sorted(states, reverse=descending)
            assert f"INDEX tasks_state_{column}" in plan and "TEMP B-TREE" not in plan, plan


def test_matches_are_sorted_unless_an_index_the_filter_narrows_already_holds_them_in_order(monkeypatch) -> None:
    """range_page(sort_matches=True) lets SQLite walk an index only when the filter's equality narrows that
    index (engine:3 sorted by state: the (state, engine_id) index, read state by state); otherwise it sorts
    the matches. `label IS NULL` reads as `label=?` in a plan but narrows nothing: a view's NULL range."""
    import datasource.store as store_mod

    monkeypatch.setattr(store_mod, "STATS_MIN_ROWS", 2_000)
    store = TaskStore()
    load(store, FakeSource(3_000, chunk=1_000))

    def plan_of_page(where: tuple[str, tuple]) -> str:
        rows, plan = planned(store, lambda: store.range_page(where, "state", False, limit=20, sort_matches=True))
        assert rows
        return plan

    walked = plan_of_page(("engine_id = ?", (3,)))
    assert "INDEX tasks_state_engine_id" in walked and "TEMP B-TREE" not in walked, walked
    assert "TEMP B-TREE" in plan_of_page(("evalue LIKE ?", ("%1%",)))

    select = "SELECT rowid FROM tasks WHERE resubmitted IS NOT NULL AND label IS NULL ORDER BY rowid LIMIT 20"
    assert "tasks_resub_label (label=?)" in store._query("EXPLAIN QUERY PLAN " + select)[0][3]
    assert not store._walk_is_narrowed(select, (), "rowid")
    narrowed = select.replace("label IS NULL", "label IS NULL AND engine_id = 2")
    assert "(engine_id=?)" in store._query("EXPLAIN QUERY PLAN " + narrowed)[0][3]
    assert store._walk_is_narrowed(narrowed, (), "rowid")


def test_a_views_null_range_is_not_read_through_the_nulls_of_every_other_view(monkeypatch) -> None:
    """Sorted by duration, a pane's unfinished tasks are the view's NULL range (`duration IS NULL`, by rowid).
    The planner statistics say how many tasks that matches: told it was one row per value, SQLite read every
    NULL duration of the store through the (duration) index for the Pending pane + engine:3 (1M tasks: 143k
    rows, 200 ms). The All pane's NULL range still reads that index in rowid order, without sorting."""
    import datasource.store as store_mod
    from datasource.store import view_ranges

    monkeypatch.setattr(store_mod, "STATS_MIN_ROWS", 2_000)
    store = TaskStore()
    load(store, FakeSource(3_000, chunk=1_000))

    def plan(where, sort_matches: bool) -> str:
        return planned(store, lambda: store.range_page(where, "rowid", True, limit=20, sort_matches=sort_matches))[1]

    for column in ("duration", "completed"):
        nulls = view_ranges(column)[1][0]
        narrowed = plan(combine(pane_filter("pending"), ("engine_id = ?", (3,)), nulls), True)
        assert f"tasks_{column} " not in narrowed and "tasks_state_engine_id" in narrowed, narrowed
        whole = plan(nulls, False)
        assert f"INDEX tasks_{column} ({column}=?)" in whole and "TEMP B-TREE" not in whole, whole


def test_the_total_is_read_without_waiting_for_a_scan() -> None:
    """The UI thread reads the total for every view refresh; a filter's count scan in a worker holds the
    store's lock for up to ~0.1 s at 1M tasks, and the total must not wait for it."""
    import time

    store = TaskStore()
    store.apply(Delta(upserts=[make_record(i) for i in range(5)], reset=True))
    with lock_held_elsewhere(store):
        start = time.monotonic()
        assert store.total == 5
        assert time.monotonic() - start < 1
    store.apply(Delta(removed=[make_record(0).msg_id]))
    assert store.total == 4


def test_the_engines_are_read_without_waiting_for_a_scan() -> None:
    """The engine list repaints on the UI thread after a filter, while the filter's grouped count scan holds
    the store's lock in a worker (1M tasks: 15-80 ms): engines() answers from the last apply's snapshot."""
    import time

    store = TaskStore()
    rec = make_record(1)
    store.apply(Delta(upserts=[rec], reset=True, engines=[Engine(rec.engine_uuid, 4, True, queue=2)]))
    with lock_held_elsewhere(store):
        start = time.monotonic()
        engines = store.engines()
        assert time.monotonic() - start < 1
    assert [(e.uuid, e.id, e.alive, e.queue) for e in engines] == [(rec.engine_uuid, 4, True, 2)]
    engines[0].alive = False  # a copy: the caller's changes stay its own
    assert store.engines()[0].alive
    store.apply(Delta(engines=[Engine("other", 0, True)]))
    assert [(e.id, e.alive) for e in store.engines()] == [(0, True), (4, False)]


def test_a_view_with_few_matches_is_sorted_not_walked(monkeypatch) -> None:
    """A rare value under another sort (evalue:X, which no index serves, sorted by duration): with the count
    it knows, the table's page sorts the few matches instead of walking the duration index past every other
    task (1M tasks, no match: 0.4-1.5 s -> < 1 ms). The rows are the same either way."""
    import datasource.store as store_mod

    monkeypatch.setattr(store_mod, "STATS_MIN_ROWS", 2_000)
    source = FakeSource(3_000, chunk=1_000)
    store = TaskStore()
    load(store, source)

    def plan(where, **kwargs) -> tuple[list, str]:
        return planned(store, lambda: store.page(where, sort="duration", descending=True, limit=40, **kwargs))

    for value in ("division by zero", "no such error"):
        where = ("evalue = ?", (value,))
        n = store.count(where)
        walked, walk_plan = plan(where)
        sorted_, sort_plan = plan(where, matches=n)
        assert walked == sorted_ and len(sorted_) == min(40, n)
        assert "USING INDEX tasks_duration" in walk_plan  # what SQLite does on its own
        assert "tasks_duration" not in sort_plan and "TEMP B-TREE FOR ORDER BY" in sort_plan, sort_plan
    # many matches: the sort index is walked as before
    where = ("label IS NULL", ())
    _, many = plan(where, matches=store.count(where))
    assert "tasks_duration" in many and "TEMP B-TREE" not in many, many
