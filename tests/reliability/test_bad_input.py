"""Odd records, fuzzed: through the normalizer, the store, the recorder and the replay, never a traceback.

Odd means: None or "" in any field, unknown keys, every date format (and broken ones), wrong types,
huge numbers, ANSI garbage, non-UTF-8 bytes, lone surrogates (what json.loads makes of "\\ud800"),
and one 50 MB stdout.
"""

from __future__ import annotations

import math
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from datasource.model import DETAIL_KEYS, TaskDetail, TaskRecord, normalize_detail, normalize_record, strip_ansi
from datasource.poller import Poller
from datasource.recorder import Recorder
from datasource.sources.base import Delta
from datasource.sources.replay import ReplaySource
from datasource.store import TaskStore

ANSI = st.sampled_from(["\x1b[31m", "\x1b[0m", "\x1b[1;32;40m", "\x1b]0;title\x07", "\x1b[?25l", "\x1b", "\x9b31m",
                        "\x1b[38;5;208m", "\r", "\x00", "\x7f"])
TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(ANSI, st.text(max_size=5)), max_size=10).map("".join),
    st.sampled_from(["\ud800", "a\udfffb", "\ufeffBOM", "e\u0301", "😀" * 3, "x" * 5000]),
)
BYTES = st.one_of(st.binary(max_size=40), st.sampled_from([b"\xff\xfe\x00", b"caf\xe9", b"\xc3\x28", b"\x80" * 10]))
DT = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))


def _formats(dt: datetime) -> st.SearchStrategy:
    aware = dt.replace(tzinfo=timezone.utc)
    return st.sampled_from([
        dt, aware, aware.astimezone(timezone(timedelta(hours=5, minutes=30))),
        dt.isoformat(), aware.isoformat(), aware.isoformat().replace("+00:00", "Z"), dt.isoformat(sep=" "),
        dt.strftime("%Y-%m-%dT%H:%M:%S.%f123Z"), dt.strftime("%Y-%m-%dT%H:%M:%S.1Z"), dt.strftime("%Y-%m-%d"),
        dt.strftime("%d/%m/%Y %H:%M"), dt.isoformat().encode(), dt.strftime("%Y-%m-%dT%H:%M:%S+0200"),
    ])


DATES = st.one_of(
    DT.flatmap(_formats),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from(["", "yesterday", "2026-13-45T99:99:99Z", "0000-00-00", "NaT", "None"]),
)
SCALAR = st.one_of(st.none(), st.just(""), TEXT, BYTES, st.booleans(),
                   st.integers(min_value=-(2 ** 80), max_value=2 ** 80), st.floats(), DATES)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70), st.floats(), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
RESULT_CONTENT = st.one_of(
    SCALAR,
    JSONISH,
    st.fixed_dictionaries(
        {"status": st.sampled_from(["ok", "error", "aborted", None, "", "weird", 3])},
        optional={
            "ename": SCALAR, "evalue": SCALAR, "traceback": st.one_of(SCALAR, st.lists(st.one_of(TEXT, BYTES, st.none()))),
            "engine_info": st.one_of(SCALAR, st.fixed_dictionaries({}, optional={"engine_id": st.one_of(
                SCALAR, st.integers(min_value=-(2 ** 70), max_value=2 ** 70))})),
        },
    ),
)
FIELD = {
    "submitted": DATES, "started": DATES, "completed": DATES, "received": DATES,
    "result_content": RESULT_CONTENT, "error": st.one_of(RESULT_CONTENT, JSONISH.map(str)),
    "execute_result": st.one_of(SCALAR, JSONISH), "header": st.one_of(SCALAR, JSONISH),
    "metadata": st.one_of(SCALAR, st.fixed_dictionaries({}, optional={"label": SCALAR})),
}
RAW = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.fixed_dictionaries(
        {"msg_id": st.one_of(SCALAR, st.text(min_size=1, max_size=30))},
        optional={k: FIELD.get(k, SCALAR) for k in DETAIL_KEYS if k != "msg_id"}
        | {"stdout_size": st.one_of(SCALAR, st.integers(min_value=-1, max_value=2 ** 70)), "stderr_size": SCALAR,
           "buffers": SCALAR},
    ),
    st.dictionaries(st.text(max_size=12).filter(lambda k: k not in DETAIL_KEYS), SCALAR, max_size=3),
)


def _check_record(rec: TaskRecord) -> None:
    assert isinstance(rec.msg_id, str)
    for name in ("submitted", "started", "completed", "received"):
        value = getattr(rec, name)
        assert value is None or (isinstance(value, datetime) and value.tzinfo is not None)
    if rec.duration is not None:
        assert rec.duration >= 0 and not math.isnan(rec.duration)
    if rec.evalue is not None:
        assert strip_ansi(rec.evalue) == rec.evalue


@example([{"msg_id": "a", "result_content": {"status": "ok", "engine_info": {"engine_id": 2 ** 70}}}], {})
@example([{"msg_id": "b", "stdout_size": 2 ** 64, "stderr_size": 2 ** 63}], {})
@example([{"msg_id": "c", "engine_uuid": "u"}], {"u": 2 ** 66})
@example([{"msg_id": "d\udce9", "completed": "2026-11-21T04:46:11Z",
           "result_content": {"status": "error", "ename": "FileNotFoundError", "evalue": "/data/caf\udce9"}}], {})
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(RAW, min_size=1, max_size=4), st.dictionaries(st.text(max_size=36), st.integers(-5, 2 ** 40), max_size=3))
def test_odd_records_through_normalizer_store_recorder_and_replay(raws: list[dict], engine_ids: dict) -> None:
    records = []
    for raw in raws:
        rec = normalize_record(raw, engine_ids)
        _check_record(rec)
        detail = normalize_detail(raw, engine_ids)
        assert isinstance(detail, TaskDetail) and isinstance(detail.stdout, str) and isinstance(detail.traceback, list)
        assert all(isinstance(line, str) for line in detail.traceback)
        records.append(rec)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rec.db"
        store = TaskStore()
        recorder = Recorder(path)
        delta = Delta(upserts=records, reset=True)
        store.apply(delta)
        recorder.write(delta)
        assert recorder.flush(10)
        assert recorder.error is None, recorder.error
        recorder.close()
        for rec in records:
            got = store.get(rec.msg_id)
            assert got is not None
            _check_record(got)
        replay = ReplaySource(path)
        replayed = TaskStore()
        out = Poller(replay, replayed).step()
        assert out.status.state == "connected", out.status.message
        assert sorted(replayed.ids()) == sorted(store.ids())
        for msg_id in store.ids():
            assert replayed.get(msg_id) == store.get(msg_id)
            assert replay.detail(msg_id).record == store.get(msg_id)
        replay.close()
        store.close()
        replayed.close()


def test_fifty_megabytes_of_stdout_and_garbage(tmp_path: Path) -> None:
    big = ("\x1b[31mred\x1b[0m line of output é 😀\n" * 1_500_000)[: 50 * 1024 * 1024]
    raw = {
        "msg_id": "big_1_1", "submitted": "2026-11-21T04:46:11.142743+00:00", "completed": "2026-11-21T04:47:11Z",
        "started": "2026-11-21T04:46:12Z", "result_content": '{"status": "error", "ename": "\\u001b[31mValueError", '
        '"evalue": "\\u001b[1mbad\\u001b[0m", "traceback": ["\\u001b[31mTraceback\\u001b[0m"]}',
        "stdout": big, "stderr": b"\xff\xfe not utf-8 \x80" * 1000, "label": b"caf\xe9",
    }
    rec = normalize_record(raw)
    assert rec.stdout_size == len(big) and rec.stderr_size and rec.label == "caf\ufffd"
    assert rec.evalue == "bad"
    detail = normalize_detail(raw)
    assert len(detail.stdout) == len(big) and "\ufffd" in detail.stderr
    store = TaskStore()
    store.apply(Delta(upserts=[rec], reset=True))
    with Recorder(tmp_path / "rec.db") as recorder:
        recorder.write(Delta(upserts=[rec], reset=True))
    assert (tmp_path / "rec.db").stat().st_size < 1_000_000  # heavy fields are never recorded
    replay = ReplaySource(tmp_path / "rec.db")
    replayed = TaskStore()
    Poller(replay, replayed).step()
    assert replayed.get("big_1_1") == store.get("big_1_1")
    replay.close()
