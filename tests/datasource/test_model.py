"""Normalization rules, checked on the real records of the Hub spec (§6.4, §4.5, §10.4)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasource.model import (
    State,
    is_resubmitted_copy,
    normalize_detail,
    normalize_record,
    parse_time,
    strip_ansi,
)

UTC = timezone.utc
TB = [
    "\x1b[31m---------------------------------------------------------------------------\x1b[39m",
    "\x1b[31mValueError\x1b[39m                                Traceback (most recent call last)",
    "\x1b[31mValueError\x1b[39m: bad value 7",
]
ENGINE = "90594652-79d32c1c74ff82372d45d943"

# §6.4: LB failure with a label, as SQLite hands it over through db_request (error is a JSON string).
LB_FAILURE_SQLITE = {
    "msg_id": "f129a23e-bedfdfe3e40b45dd000e0782_8890_2",
    "queue": "task",
    "label": "my-label",
    "client_uuid": "f129a23e-bedfdfe3e40b45dd000e0782",
    "engine_uuid": ENGINE,
    "metadata": {"after": [], "follow": [], "label": "my-label", "retries": 0, "targets": [], "timeout": 0.0},
    "content": {},
    "submitted": "2026-11-21T04:46:11.143298Z",
    "started": "2026-11-21T04:46:11.156079+00:00",
    "completed": "2026-11-21T04:46:11.318940Z",
    "received": "2026-11-21T04:46:11.322598Z",
    "resubmitted": None,
    "result_content": {
        "status": "error",
        "ename": "ValueError",
        "evalue": "bad value 7",
        "engine_info": {"engine_id": 2, "engine_uuid": ENGINE, "method": "apply"},
        "traceback": TB,
    },
    "error": json.dumps({"traceback": TB, "ename": "ValueError", "evalue": "bad value 7"}),
    "execute_input": None,
    "execute_result": None,
    "stdout": "",
    "stderr": "",
}


def test_lb_failure_from_sqlite_wire() -> None:
    r = normalize_record(LB_FAILURE_SQLITE)
    assert r.state is State.FAILED
    assert (r.ename, r.evalue) == ("ValueError", "bad value 7")
    assert r.engine_uuid == ENGINE and r.engine_id == 2  # from engine_info, no map needed
    assert r.label == "my-label" and r.queue == "task"
    assert r.submitted == datetime(2026, 11, 21, 4, 46, 11, 143298, tzinfo=UTC)
    assert r.started is not None and r.started.tzinfo is not None
    assert r.duration == pytest.approx(0.162861, abs=1e-6)
    assert r.stdout_size == 0 and r.stderr_size == 0
    d = normalize_detail(LB_FAILURE_SQLITE)
    assert d.traceback == TB
    assert strip_ansi(d.traceback[-1]) == "ValueError: bad value 7"


def test_engine_map_wins_over_nothing() -> None:
    raw = dict(LB_FAILURE_SQLITE, result_content={"status": "ok"}, error=None)
    assert normalize_record(raw, {ENGINE: 5}).engine_id == 5
    assert normalize_record(raw).engine_id is None


def test_direct_execute_and_execute_result_string() -> None:
    raw = {
        "msg_id": "a_1_1",
        "queue": "mux",
        "content": {"code": "print('loud'); 6*7", "silent": False, "user_expressions": {}},
        "metadata": {"label": None},
        "stdout": "loud\n",
        "execute_input": "print('loud'); 6*7",
        "execute_result": '{"data": {"text/plain": "42"}, "metadata": {}, "execution_count": 1}',
        "result_content": {"execution_count": 1, "payload": [], "status": "ok", "user_expressions": {}},
        "result_header": {"msg_type": "execute_reply"},
        "header": {"msg_type": "execute_request", "session": "a"},
        "completed": "2026-11-21T04:46:11Z",
    }
    r = normalize_record(raw)
    assert r.state is State.SUCCEEDED and r.queue == "mux" and r.label is None and r.stdout_size == 5
    d = normalize_detail(raw)
    assert d.execute_result == {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": 1}
    assert d.code == "print('loud'); 6*7" and d.msg_type == "execute_request"


def test_pending_task() -> None:
    raw = {"msg_id": "x_1_8", "queue": "mux", "engine_uuid": "840e01f9-aa", "submitted": "2026-11-21T04:46:11Z",
           "started": None, "completed": None, "received": None, "result_content": None, "result_header": None,
           "stdout": "tick 0\n", "stderr": "", "resubmitted": None}
    r = normalize_record(raw)
    assert r.state is State.PENDING and r.state.is_pending and r.duration is None and r.stdout_size == 7


def test_scheduler_failure_has_empty_engine_uuid() -> None:
    raw = {"msg_id": "x_1_9", "engine_uuid": "", "started": None, "result_metadata": {}, "queue": "task",
           "completed": "2026-11-21T04:50:58.535191Z",
           "result_content": {"ename": "TaskTimeout", "engine_info": {}, "evalue": "", "status": "error",
                              "traceback": ["ipyparallel.error.TaskTimeout\n"]}}
    r = normalize_record(raw)
    assert r.state is State.FAILED and r.engine_uuid is None and r.engine_id is None
    assert r.ename == "TaskTimeout" and r.evalue is None


def test_engine_error_written_by_hub() -> None:
    raw = {"msg_id": "x_1_10", "completed": datetime(2026, 11, 21, 4, 51, 23), "started": None, "received": None,
           "result_metadata": None, "result_header": {"engine": "dd961bf1", "date": "2026-11-21T04:51:23Z"},
           "result_content": {"status": "error", "ename": "EngineError", "engine_info": {},
                              "evalue": "Engine 1 died while running task 'x_1_10'",
                              "traceback": ["ipyparallel.error.EngineError: Engine 1 died\n"]}}
    r = normalize_record(raw)
    assert r.state is State.FAILED and r.ename == "EngineError"
    assert r.completed == datetime(2026, 11, 21, 4, 51, 23, tzinfo=UTC)  # naive -> UTC (pymongo/orjson rule)


def test_aborted_and_resubmitted_original() -> None:
    raw = {"msg_id": "x_1_11", "completed": "2026-11-21T04:46:11Z", "result_content": {"status": "aborted"},
           "resubmitted": "hub_2_1"}
    r = normalize_record(raw)
    assert r.state is State.ABORTED and r.is_resubmitted and r.resubmitted == "hub_2_1"


def test_old_schema_without_label_uses_metadata() -> None:
    raw = {"msg_id": "x_1_12", "metadata": {"label": "old"}, "completed": None}
    assert normalize_record(raw).label == "old"
    assert normalize_record({"msg_id": "x"}).label is None


def test_mongo_document_shape() -> None:
    raw = {"_id": object(), "msg_id": "m_1_1", "submitted": datetime(2026, 11, 21, 4, 46, 11, 650000, tzinfo=UTC),
           "completed": datetime(2026, 11, 21, 4, 46, 12, tzinfo=UTC), "error": None, "execute_result": None,
           "result_content": {"status": "ok"}, "stdout": "", "stderr": "", "label": "lbl-1", "buffers": [b"abc"]}
    r = normalize_record(raw)
    assert r.state is State.SUCCEEDED and r.label == "lbl-1"


def test_evalue_ansi_is_stripped() -> None:
    raw = {"msg_id": "a", "completed": "2026-11-21T04:46:11Z",
           "result_content": {"status": "error", "ename": "E", "evalue": "\x1b[31mred\x1b[0m text"}}
    assert normalize_record(raw).evalue == "red text"


def test_error_only_in_error_field() -> None:
    raw = {"msg_id": "a", "completed": "2026-11-21T04:46:11Z", "result_content": None,
           "error": '{"ename": "OSError", "evalue": "disk"}'}
    r = normalize_record(raw)
    assert r.state is State.FAILED and (r.ename, r.evalue) == ("OSError", "disk")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-21T04:46:11.144197Z", datetime(2026, 11, 21, 4, 46, 11, 144197, tzinfo=UTC)),
        ("2026-11-21T04:46:11.142743+00:00", datetime(2026, 11, 21, 4, 46, 11, 142743, tzinfo=UTC)),
        ("2026-11-21T04:46:11Z", datetime(2026, 11, 21, 4, 46, 11, tzinfo=UTC)),
        ("2026-11-21T06:46:11+02:00", datetime(2026, 11, 21, 4, 46, 11, tzinfo=UTC)),
        ("2026-11-21 04:46:11.1", datetime(2026, 11, 21, 4, 46, 11, 100000, tzinfo=UTC)),
        ("2026-11-21T04:46:11.1234567Z", datetime(2026, 11, 21, 4, 46, 11, 123456, tzinfo=UTC)),
        (b"2026-11-21T04:46:11Z", datetime(2026, 11, 21, 4, 46, 11, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("", None),
        (None, None),
        ("yesterday", None),
        ([1, 2], None),
    ],
)
def test_parse_time(text: object, expected: datetime | None) -> None:
    assert parse_time(text) == expected


def test_resubmitted_copy_detection() -> None:
    assert is_resubmitted_copy("hubsess_99_3", {"session": "client1"})
    assert not is_resubmitted_copy("client1_5_3", {"session": "client1"})
    assert not is_resubmitted_copy("x", None)


_odd = st.one_of(st.none(), st.just(""), st.text(max_size=20), st.integers(), st.floats(allow_nan=True),
                 st.binary(max_size=20), st.lists(st.text(max_size=5), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
                 st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))))
_KEYS = ["msg_id", "submitted", "started", "completed", "received", "engine_uuid", "client_uuid", "queue", "label",
         "resubmitted", "result_content", "error", "execute_result", "stdout", "stderr", "metadata", "header",
         "content", "execute_input", "unknown_key"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _odd))
def test_odd_records_never_raise(raw: dict) -> None:
    r = normalize_record(raw)
    assert isinstance(r.state, State)
    d = normalize_detail(raw)
    assert isinstance(d.stdout, str) and isinstance(d.traceback, list)


def test_non_utf8_and_huge_output() -> None:
    raw = {"msg_id": "a", "stdout": b"\xff\xfe bad bytes", "stderr": "x" * (50 * 1024 * 1024)}
    d = normalize_detail(raw)
    assert "bad bytes" in d.stdout and d.record.stderr_size == 50 * 1024 * 1024
    # engine clock skew: started after completed -> duration clamps to 0, never negative
    assert normalize_record({"msg_id": "a", "completed": "2026-11-21T04:46:11Z", "started": "2026-11-21T04:46:12Z"}).duration == 0.0
