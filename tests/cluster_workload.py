"""A known workload for a real cluster, submitted with the real `ipyparallel.Client`.

Only the test fixtures import this (hubtop's own code never imports ipyparallel). `run_workload`
returns the msg_ids by kind so tests can assert exact states, counts, outputs and tracebacks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
# Engines unpickle the workload's functions by module name: LocalCluster(env=ENGINE_ENV) lets them
# import `cluster_workload` (and `tests.cluster_workload`).
ENGINE_ENV = {"PYTHONPATH": os.pathsep.join([str(_TESTS), str(_TESTS.parent), os.environ.get("PYTHONPATH", "")])}

LABEL = "hubtop-labeled"
LONG_SLEEP = 600.0  # keeps one task pending until the cluster is stopped (stop() SIGKILLs the engine)


def _ok(i: int) -> int:
    import sys

    print(f"hello stdout {i}")
    print(f"hello stderr {i}", file=sys.stderr)
    return i * i


def _value_error(i: int) -> None:
    raise ValueError(f"bad value {i}")


def _zero_division(i: int) -> float:
    return i / 0


def _labeled() -> str:
    print("labeled output")
    return "labeled"


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


@dataclass
class Workload:
    succeeded: list[str] = field(default_factory=list)  # LB successes with stdout + stderr
    value_errors: list[str] = field(default_factory=list)
    zero_divisions: list[str] = field(default_factory=list)
    labeled: list[str] = field(default_factory=list)  # LB success with label LABEL
    direct: list[str] = field(default_factory=list)  # DirectView execute on engine 0 (queue 'mux')
    pending: list[str] = field(default_factory=list)  # the long sleep, still running
    stdout: dict[str, str] = field(default_factory=dict)  # msg_id -> expected stdout
    stderr: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return self.value_errors + self.zero_divisions

    @property
    def done_ok(self) -> list[str]:
        return self.succeeded + self.labeled + self.direct

    @property
    def all(self) -> list[str]:
        return self.done_ok + self.failed + self.pending


def connect(connection_file: str | Path, timeout: float = 20.0):
    import ipyparallel as ipp

    return ipp.Client(str(connection_file), timeout=timeout)


def run_more(connection_file: str | Path, n: int, start: int = 100, timeout: float = 30.0) -> list[str]:
    """Run `n` more quick successful LB tasks; return their msg_ids once all are done."""
    rc = connect(connection_file)
    try:
        lview = rc.load_balanced_view()
        ars = [lview.apply_async(_ok, start + i) for i in range(n)]
        for ar in ars:
            ar.wait(timeout)
        ids = [ar.msg_ids[0] for ar in ars]
        _wait_recorded(rc, ids, timeout)
        return ids
    finally:
        rc.close()


def _wait_recorded(rc, ids: list[str], timeout: float) -> None:
    """Wait until the Hub has recorded every one of `ids` as completed (the Hub lags the client)."""
    import ipyparallel as ipp

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = rc.result_status(ids, status_only=True)
        except ipp.RemoteError as exc:
            # the client can hold a result before the Hub has processed the task's request: it then knows
            # the id neither as pending nor as completed ("No such message"), which is "not recorded yet"
            if exc.ename != "KeyError" or "No such message" not in str(exc.evalue):
                raise
        else:
            if not status["pending"]:
                return
        time.sleep(0.05)
    raise TimeoutError(f"the Hub did not record {len(ids)} tasks as completed in {timeout} s")


def run_workload(connection_file: str | Path, timeout: float = 60.0, with_pending: bool = True) -> Workload:
    rc = connect(connection_file)
    w = Workload()
    try:
        lview = rc.load_balanced_view()
        ars = []
        for i in range(4):
            ar = lview.apply_async(_ok, i)
            ars.append(ar)
            w.succeeded.append(ar.msg_ids[0])
            w.stdout[ar.msg_ids[0]] = f"hello stdout {i}\n"
            w.stderr[ar.msg_ids[0]] = f"hello stderr {i}\n"
        for i in (7, 9):
            ar = lview.apply_async(_value_error, i)
            ars.append(ar)
            w.value_errors.append(ar.msg_ids[0])
        ar = lview.apply_async(_zero_division, 3)
        ars.append(ar)
        w.zero_divisions.append(ar.msg_ids[0])
        with lview.temp_flags(label=LABEL):
            ar = lview.apply_async(_labeled)
        ars.append(ar)
        w.labeled.append(ar.msg_ids[0])
        w.stdout[ar.msg_ids[0]] = "labeled output\n"
        ar = rc[0].execute("print('exec out'); x = 6 * 7", block=False)
        ars.append(ar)
        w.direct.append(ar.msg_ids[0])
        w.stdout[ar.msg_ids[0]] = "exec out\n"
        for ar in ars:
            ar.wait(timeout)
        _wait_recorded(rc, [m for ar in ars for m in ar.msg_ids], timeout)
        if with_pending:
            ar = lview.apply_async(_sleep, LONG_SLEEP)
            w.pending.append(ar.msg_ids[0])
            # Wait until the Hub has the record and the scheduler assigned it to an engine.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                qs = rc.queue_status()
                if sum(v.get("tasks", 0) for k, v in qs.items() if k != "unassigned") >= 1:
                    try:
                        recs = rc.db_query({"msg_id": {"$in": w.pending}}, keys=["msg_id", "engine_uuid"])
                    except Exception:  # NoDB stores nothing: the queue count is all there is
                        break
                    if recs and recs[0].get("engine_uuid"):
                        break
                time.sleep(0.05)
            else:
                raise TimeoutError("the long task was never assigned")
        return w
    finally:
        rc.close()
