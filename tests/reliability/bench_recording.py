"""What `--record` costs the poll loop: `python -m tests.reliability.bench_recording [rounds]`.

The same precomputed deltas go through a real Poller into a real TaskStore, with and without a Recorder
on `on_delta`, alternating the two so machine load hits both alike:
* a first load of 100,000 records (10 deltas of 10,000): poll-thread time, then until the file has it all;
* 300 polls of 100 changed records each, 0.1 s apart: poll-thread time per poll (median, p99), and the
  writer thread's.
CPU seconds of the poll thread are reported too (thread_time: insensitive to other processes).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from typing import Iterator

from datasource.model import State
from datasource.poller import Poller
from datasource.recorder import Recorder
from datasource.sources.base import Capabilities, Delta
from datasource.store import TaskStore
from tests.fakes import ENGINE_UUIDS, FakeSource, _copy, make_record

N = 100_000
CHUNK = 10_000
POLLS = 300
CHANGES = 100
PAUSE = 0.1  # seconds between polls, in both modes (a real poll loop waits ~1 s)


class ListSource:
    """Yields prepared deltas: one list per sync (no source cost in the measurement)."""

    name = "bench"

    def __init__(self, syncs: list[list[Delta]]) -> None:
        self.syncs = iter(syncs)

    def capabilities(self) -> Capabilities:
        return Capabilities(kind="fake", has_engines=True)

    def open(self) -> None:
        pass

    def sync(self) -> Iterator[Delta]:
        yield from next(self.syncs)

    def close(self) -> None:
        pass


def _deltas() -> tuple[list[Delta], list[list[Delta]]]:
    engines = FakeSource(0).engine_list
    records = [make_record(i) for i in range(N)]
    load = [Delta(upserts=records[s:s + CHUNK], reset=s == 0, loading=s + CHUNK < N, done=s + CHUNK, total=N,
                  engines=engines if s == 0 else None) for s in range(0, N, CHUNK)]
    polls = []
    for p in range(POLLS):
        changed = []
        for r in records[p * CHANGES:(p + 1) * CHANGES]:
            c = _copy(r)
            c.state, c.label = State.SUCCEEDED, f"p{p}"
            c.completed = (c.submitted or c.completed) + timedelta(seconds=5)
            changed.append(c)
        polls.append([Delta(upserts=changed, engines=engines)])
    assert len(ENGINE_UUIDS) == 4
    return load, polls


def trial(record: bool, load: list[Delta], polls: list[list[Delta]]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.rec")
        recorder = Recorder(path) if record else None
        store = TaskStore()
        poller = Poller(ListSource([load, *polls]), store, on_delta=recorder.write if recorder else None)
        c0, t0 = time.thread_time(), time.perf_counter()
        poller.step()
        load_wall, load_cpu = time.perf_counter() - t0, time.thread_time() - c0
        load_flushed = load_wall
        if recorder:
            recorder.flush(120)
            load_flushed = time.perf_counter() - t0
        walls, cpus, writer = [], [], []
        for _ in polls:
            w0 = recorder.seconds_writing if recorder else 0.0
            c0, t0 = time.thread_time(), time.perf_counter()
            poller.step()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.thread_time() - c0)
            time.sleep(PAUSE)  # the poll interval (shortened): the writer works while the poll loop waits
            if recorder:
                recorder.flush(10)
                writer.append(recorder.seconds_writing - w0)
        size = 0
        if recorder:
            recorder.close()
            size = os.path.getsize(path)
        assert store.total == N
        store.close()
    walls.sort()
    writer.sort()
    return {
        "load_wall": load_wall, "load_cpu": load_cpu, "load_flushed": load_flushed,
        "poll_median_ms": statistics.median(walls) * 1e3, "poll_p99_ms": walls[int(len(walls) * 0.99)] * 1e3,
        "poll_cpu_ms": statistics.median(cpus) * 1e3,
        "writer_median_ms": statistics.median(writer) * 1e3 if writer else 0.0,
        "writer_p99_ms": writer[int(len(writer) * 0.99)] * 1e3 if writer else 0.0,
        "size_mb": size / 1e6,
    }


def main(rounds: int = 3) -> None:
    load, polls = _deltas()
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(rounds):
        for record in (False, True):
            results[record].append(trial(record, load, polls))
    for record in (False, True):
        m = {k: statistics.median(r[k] for r in results[record]) for k in results[record][0]}
        label = "with recording   " if record else "without recording"
        print(f"{label}: first load of {N:,}: poll thread {m['load_wall']:.2f} s wall, {m['load_cpu']:.2f} s CPU"
              + (f", on file after {m['load_flushed']:.2f} s ({m['size_mb']:.1f} MB)" if record else "")
              + f" | poll of {CHANGES} changes: median {m['poll_median_ms']:.2f} ms, p99 {m['poll_p99_ms']:.2f} ms, "
              f"CPU {m['poll_cpu_ms']:.2f} ms"
              + (f"; writer thread median {m['writer_median_ms']:.2f} ms, p99 {m['writer_p99_ms']:.2f} ms" if record else ""))
    print(f"(median of {rounds} alternating rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
