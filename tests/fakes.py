"""A deterministic in-process Source for fast UI and store unit tests.

It is never the only proof that something works: every behaviour it stands in for is also tested
against a real cluster (tests/datasource/test_hub_source.py and friends).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Iterator

from datasource.model import Engine, QueueStatus, State, TaskDetail, TaskRecord
from datasource.sources.base import ActionRefused, Capabilities, Delta, SourceUnavailable

T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=timezone.utc)
ENGINE_UUIDS = [f"e{i:07d}-0000000000000000000000{i:02d}" for i in range(4)]
_ERRORS = [("ValueError", "bad value {n}"), ("ZeroDivisionError", "division by zero"), ("KeyError", "'k{n}'")]


def make_record(i: int, *, session: str = "c0ffee00-0000000000000000000000aa") -> TaskRecord:
    """Record number i of a fixed, realistic mix: 70% ok, 10% failed, 5% aborted, 10% pending, 5% resubmitted."""
    msg_id = f"{session}_1000_{i}"
    submitted = T0 + timedelta(seconds=i)
    kind = i % 20
    engine = ENGINE_UUIDS[i % len(ENGINE_UUIDS)]
    label = f"fit-{i % 3}" if i % 4 == 0 else None
    if kind in (0, 1):  # pending
        return TaskRecord(msg_id, State.PENDING, engine_uuid=engine if kind == 0 else None, engine_id=(i % 4) if kind == 0 else None,
                          queue="task", label=label, client=session, submitted=submitted)
    started = submitted + timedelta(seconds=1)
    completed = started + timedelta(seconds=(i % 7) + 0.5)
    rec = TaskRecord(msg_id, State.SUCCEEDED, engine_uuid=engine, engine_id=i % 4, queue="mux" if i % 5 == 0 else "task",
                     label=label, client=session, submitted=submitted, started=started, completed=completed,
                     received=completed + timedelta(milliseconds=3), stdout_size=(i % 3) * 10, stderr_size=0)
    if kind in (2, 3):
        ename, evalue = _ERRORS[i % len(_ERRORS)]
        rec.state, rec.ename, rec.evalue = State.FAILED, ename, evalue.format(n=i)
    elif kind == 4:
        rec.state = State.ABORTED
    return rec


class FakeSource:
    """A Source over a list of records that tests mutate; sync() yields what changed since the last sync."""

    name = "fake source"

    def __init__(self, n: int = 100, *, chunk: int = 10_000, engines: int = 4, caps: Capabilities | None = None) -> None:
        self.records: dict[str, TaskRecord] = {r.msg_id: r for r in (make_record(i) for i in range(n))}
        self._synced: dict[str, TaskRecord] = {}
        self._loaded = False
        self.chunk = chunk
        self.fail_next = 0  # number of sync calls that raise SourceUnavailable
        self.engine_list = [Engine(u, i, True, queue=0, tasks=1 if i % 2 else 0, completed=10 * i) for i, u in enumerate(ENGINE_UUIDS[:engines])]
        self._caps = caps or Capabilities(kind="fake", backend="sqlite", has_engines=True, can_resubmit=True, can_purge=True, purge_via_hub=True)
        self._counter = itertools.count(10_000)
        self.resubmit_calls: list[list[str]] = []
        self.purge_calls: list[list[str]] = []
        self.details: dict[str, TaskDetail] = {}

    def capabilities(self) -> Capabilities:
        return self._caps

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def sync(self) -> Iterator[Delta]:
        if self.fail_next:
            self.fail_next -= 1
            raise SourceUnavailable("no reply from the Hub at tcp://127.0.0.1:1: it is down or the key does not match")
        queue = QueueStatus(engines={e.id: e for e in self.engine_list if e.id is not None}, unassigned=0)
        if not self._loaded:
            self._loaded = True
            records = list(self.records.values())
            total = len(records)
            if not records:
                yield Delta(reset=True, engines=list(self.engine_list), queue=queue, total=0)
            for start in range(0, max(total, 1), self.chunk):
                part = records[start:start + self.chunk]
                if not part:
                    break
                yield Delta(upserts=part, reset=start == 0, loading=start + self.chunk < total, done=start + len(part),
                            total=total, engines=list(self.engine_list) if start == 0 else None, queue=queue if start == 0 else None)
            self._synced = {k: _copy(v) for k, v in self.records.items()}
            return
        upserts = [r for k, r in self.records.items() if self._synced.get(k) != r]
        removed = [k for k in self._synced if k not in self.records]
        self._synced = {k: _copy(v) for k, v in self.records.items()}
        warnings = [f"{len(removed)} records disappeared since the last poll"] if removed else []
        yield Delta(upserts=upserts, removed=removed, engines=list(self.engine_list), queue=queue, warnings=warnings)

    def detail(self, msg_id: str) -> TaskDetail:
        if msg_id in self.details:
            return self.details[msg_id]
        rec = self.records.get(msg_id)
        if rec is None:
            raise ActionRefused(f"no task {msg_id}")
        tb = []
        if rec.state is State.FAILED:
            tb = ["\x1b[31m---------------------------------------------------------------------------\x1b[39m",
                  f"\x1b[31m{rec.ename}\x1b[39m                                Traceback (most recent call last)",
                  "Cell \x1b[32mIn[1], line 3\x1b[39m, in \x1b[36mwork\x1b[39m\x1b[34m(x)\x1b[39m",
                  f"\x1b[31m{rec.ename}\x1b[39m: {rec.evalue}"]
        parent = next((k for k, r in self.records.items() if r.resubmitted == msg_id), None)
        return TaskDetail(record=rec, stdout="hello stdout\n" * ((rec.stdout_size or 0) // 10), stderr="", traceback=tb,
                          code=None, result_content={"status": "error" if tb else "ok"}, resubmitted_from=parent,
                          msg_type="apply_request")

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        self.resubmit_calls.append(list(msg_ids))
        out = {}
        for old in msg_ids:
            if old not in self.records:
                raise ActionRefused(f"Hub refused resubmit_request: KeyError: No such msg(s): ['{old}']")
            new_id = f"hub00000-000000000000000000000000_1_{next(self._counter)}"
            orig = self.records[old]
            self.records[new_id] = TaskRecord(new_id, State.PENDING, queue="task", client=orig.client,
                                              submitted=(orig.submitted or T0) + timedelta(hours=1))
            self.records[old] = _copy(orig)
            self.records[old].resubmitted = new_id
            out[old] = new_id
        return out

    def purge(self, msg_ids: list[str]) -> int:
        self.purge_calls.append(list(msg_ids))
        pending = [i for i in msg_ids if i in self.records and self.records[i].state.is_pending]
        if pending:
            raise ActionRefused(f"Hub refused purge_request: IndexError: msg pending: '{pending[0]}'")
        for i in msg_ids:
            self.records.pop(i, None)
        return len(msg_ids)


def _copy(r: TaskRecord) -> TaskRecord:
    return TaskRecord(**{f: getattr(r, f) for f in TaskRecord.__slots__})  # type: ignore[attr-defined]
