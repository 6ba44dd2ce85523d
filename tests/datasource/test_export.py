"""export_view / iter_view: the store's own order, page boundaries, NULLs, ties, formats, memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc

import pytest

from datasource.export import FIELDS, ExportError, export_view, iter_view, record_row
from datasource.model import State
from datasource.sources.base import Delta
from datasource.store import SORT_COLUMNS, TaskStore, pane_filter
from tests.fakes import FakeSource, make_record


def _store(n: int = 300) -> TaskStore:
    store = TaskStore()
    for delta in FakeSource(n, chunk=97).sync():
        store.apply(delta)
    return store


@pytest.fixture(scope="module")
def store() -> TaskStore:
    return _store()


@pytest.mark.parametrize("sort", SORT_COLUMNS)
@pytest.mark.parametrize("descending", [True, False])
def test_iter_view_is_the_store_order_across_pages(store, sort, descending):
    """Small pages (7 rows) cross many boundaries, ties (state, engine_id, label) and NULL runs (label, ename)."""
    expected = [r.msg_id for r in store.page(None, sort=sort, descending=descending, limit=10_000)]
    got = [r.msg_id for r in iter_view(store, None, sort=sort, descending=descending, page=7)]
    assert got == expected
    assert len(got) == 300


def test_filter_and_limit(store):
    failed = pane_filter("failed")
    expected = [r.msg_id for r in store.page(failed, limit=10_000)]
    assert [r.msg_id for r in iter_view(store, failed, page=4)] == expected
    assert [r.msg_id for r in iter_view(store, failed, page=4, limit=9)] == expected[:9]
    assert list(iter_view(store, ("0", ()))) == []


def test_csv_parses_back(store, tmp_path):
    path = tmp_path / "out.csv"
    n = export_view(store, pane_filter("failed"), sort="duration", descending=False, path=path, fmt="csv")
    rows = list(csv.DictReader(path.open()))
    expected = store.page(pane_filter("failed"), sort="duration", descending=False, limit=10_000)
    assert n == len(rows) == len(expected) == 30
    assert list(rows[0]) == list(FIELDS)
    for row, rec in zip(rows, expected):
        assert row["msg_id"] == rec.msg_id and row["state"] == "failed"
        assert row["ename"] == rec.ename and row["evalue"] == rec.evalue
        assert float(row["duration"]) == pytest.approx(rec.duration)
        assert row["submitted"] == rec.submitted.isoformat()
        assert row["label"] == (rec.label or "")
    assert not list(tmp_path.glob(".*.part"))  # the temporary file was renamed


def test_json_parses_back_with_fields_and_nulls(store, tmp_path):
    path = tmp_path / "out.json"
    n = export_view(store, pane_filter("pending"), path=path, fmt="json", fields=["msg_id", "state", "completed", "label"])
    data = json.loads(path.read_text())
    expected = store.page(pane_filter("pending"), limit=10_000)
    assert n == len(data) == len(expected) == 30
    assert data[0] == {"msg_id": expected[0].msg_id, "state": "pending", "completed": None, "label": expected[0].label}
    assert [d["msg_id"] for d in data] == [r.msg_id for r in expected]


def test_empty_views_are_valid_documents(store, tmp_path):
    assert export_view(store, ("0", ()), path=tmp_path / "e.json", fmt="json") == 0
    assert json.loads((tmp_path / "e.json").read_text()) == []
    assert export_view(store, ("0", ()), path=tmp_path / "e.csv") == 0
    assert (tmp_path / "e.csv").read_text() == ",".join(FIELDS) + "\n"


def test_stream_target(store):
    buf = io.StringIO()
    assert export_view(store, None, path=buf, fmt="csv", fields=["msg_id"], limit=3) == 3
    assert buf.getvalue().splitlines()[0] == "msg_id" and len(buf.getvalue().splitlines()) == 4


def test_bad_arguments(store, tmp_path):
    with pytest.raises(ExportError, match="unknown field 'stdout'"):
        export_view(store, None, path=tmp_path / "x", fields=["msg_id", "stdout"])
    with pytest.raises(ExportError, match="unknown export format 'xml'"):
        export_view(store, None, path=tmp_path / "x", fmt="xml")
    with pytest.raises(ExportError, match="cannot sort by 'bogus'"):
        export_view(store, None, path=tmp_path / "x", sort="bogus")
    with pytest.raises(ExportError, match="needs a path"):
        export_view(store, None)
    with pytest.raises(OSError):
        export_view(store, None, path=tmp_path / "no-such-dir" / "x.csv")
    assert not (tmp_path / "x").exists()


def test_record_row_times_and_state():
    rec = make_record(5)
    row = record_row(rec, ("state", "submitted", "duration", "engine_id"))
    assert row == {"state": rec.state.value, "submitted": rec.submitted.isoformat(), "duration": rec.duration,
                   "engine_id": rec.engine_id}
    assert rec.state is State.SUCCEEDED


def test_memory_stays_bounded_on_a_big_view(tmp_path):
    """25k rows in pages of 2,000: peak Python memory is about a page's worth, not the whole view."""
    n = 25_000
    store = TaskStore()
    chunk = 20_000
    for start in range(0, n, chunk):
        store.apply(Delta(upserts=[make_record(i) for i in range(start, min(n, start + chunk))], reset=start == 0,
                          loading=start + chunk < n))
    path = tmp_path / "big.csv"
    tracemalloc.start()
    try:
        count = export_view(store, None, path=path, fmt="csv", page=2_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert sum(1 for _ in path.open()) == n + 1
    # 25k TaskRecords take ~12 MB; a page of 2,000 ~1 MB
    assert peak < 5 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
