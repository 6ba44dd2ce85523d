"""Where hubtop's CPU goes while the cluster is busy: the cost per finished task, by part.

    python -m benchmarks.burst [-n 100000] [--bursts 6] [--tasks 2000] [--verbose-limit N]

A real local cluster (SQLite backend) with `n` tasks of history in the Hub's table, as in the gentleness
figure of `benchmarks.run`. Two measurements, one after the other, each over `bursts` bursts of `tasks`
trivial load-balanced tasks:

1. **the poll, by part**: the direct source (the file + the Hub), the store and the Poller in this process,
   no UI, polling every second on a thread of its own; the thread CPU of each part of a poll, per finished
   task. `--verbose-limit` replaces `paired.VERBOSE_LIMIT` (the Hub's in-flight ids are asked for only while
   it has finished fewer tasks than that since it started; 0: never, the case of a Hub that has run a while);
2. **the app, by thread**: the real app (`benchmarks.probe attach`, headless, 1 s polling) in a process of
   its own; the CPU of its main (UI) thread and of all its other threads, per finished task, from
   /proc/<pid>/task (Linux only; skipped elsewhere).

It prints a table; it asserts nothing about speed. The figures are thread CPU times: what hubtop takes
from the cluster's cores, whatever its priority.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from .run import HubBench, cpu_seconds, start_attached, stop_process

_ROOT = Path(__file__).resolve().parents[1]

# (label, class path, method): the parts of a poll, timed where they are called (nested parts are also inside
# their parent's figure: "file: read changes" holds the new rows and the re-reads)
_PARTS = (
    ("Hub: engines, queues, IOPub", "datasource.sources.paired:PairedHub", "poll"),
    ("file: read changes (all)", "datasource.sources.sqlite:SQLiteSource", "_read_changes"),
    ("file: new rows", "datasource.sources.sqlite:SQLiteSource", "_new_rows"),
    ("file: re-read pending rows", "datasource.sources.sqlite:SQLiteSource", "_reread_pending"),
    ("file: re-read in-flight ids", "datasource.sources.sqlite:SQLiteSource", "_track_in_flight"),
    ("file: deletion check", "datasource.sources.sqlite:SQLiteSource", "_check_deletions"),
    ("store: apply", "datasource.store:TaskStore", "apply"),
)


def _burst(conn: Path, tasks: int) -> float:
    """One burst, in a process of its own (as a user's client would be): tasks per second."""
    out = subprocess.run(
        [sys.executable, "-c", f"from benchmarks.run import throughput; print(throughput({str(conn)!r}, {tasks}))"],
        cwd=str(_ROOT), capture_output=True, text=True, timeout=600, check=True,
    )
    return float(out.stdout.split()[-1])


def _timed(on: threading.Event, acc: collections.Counter, key: str, cls: type, name: str) -> Callable[[], None]:
    """Wrap cls.name to add its thread CPU time to acc[key] while `on` is set; returns the undo."""
    orig = getattr(cls, name)

    def wrapper(*args, **kwargs):
        if not on.is_set():
            return orig(*args, **kwargs)
        t = time.thread_time()
        try:
            return orig(*args, **kwargs)
        finally:
            acc[key] += time.thread_time() - t

    setattr(cls, name, wrapper)
    return lambda: setattr(cls, name, orig)


def poll_parts(hub: HubBench, bursts: int, tasks: int, verbose_limit: int | None) -> dict:
    import importlib

    from datasource.poller import Poller
    from datasource.sources import paired
    from datasource.sources.open import open_source
    from datasource.store import TaskStore

    on = threading.Event()
    acc: collections.Counter = collections.Counter()
    undo = []
    for label, where, name in _PARTS:
        module, cls = where.split(":")
        undo.append(_timed(on, acc, label, getattr(importlib.import_module(module), cls), name))
    old_limit = paired.VERBOSE_LIMIT
    if verbose_limit is not None:
        paired.VERBOSE_LIMIT = verbose_limit
    counts = collections.Counter()
    store = TaskStore()
    poller = Poller(open_source(str(hub.conn), direct=True), store)
    try:
        while True:
            poller.step()
            if not store.loading and store.total >= hub.n:
                break
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                t = time.thread_time()
                outcome = poller.step()
                if on.is_set():
                    acc["poll (whole step)"] += time.thread_time() - t
                    counts["added"] += outcome.added
                    counts["changed"] += outcome.changed
                stop.wait(poller.next_delay(1.0))  # as the app waits: spaced out while busy

        thread = threading.Thread(target=loop, name="burst-poll")
        thread.start()
        time.sleep(2.0)
        before = store.total
        rates = []
        for _ in range(bursts):
            on.set()
            rates.append(_burst(hub.conn, tasks))
            time.sleep(2.5)  # the Hub commits every 2 s: the burst's last rows land in the file
            on.clear()
        stop.set()
        thread.join()
        finished = store.total - before
    finally:
        poller.close()
        paired.VERBOSE_LIMIT = old_limit
        for u in undo:
            u()
    return {"finished": finished, "rates": rates, "us_per_task": {k: 1e6 * v / max(1, finished) for k, v in acc.items()},
            "writes_per_task": (counts["added"] + counts["changed"]) / max(1, finished)}


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's main thread and of its other threads together."""
    out = {"main": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        seconds = cpu_seconds(pid, int(tid))
        if seconds == seconds:  # NaN: the thread ended
            out["main" if int(tid) == pid else "other"] += seconds
    return out


def app_threads(hub: HubBench, work: Path, bursts: int, tasks: int) -> dict | None:
    if not Path("/proc/self/task").exists():
        return None
    proc = start_attached(hub.conn, work / "attach.json")
    try:
        time.sleep(2.0)
        total = {"main": 0.0, "other": 0.0}
        wall = 0.0
        for _ in range(bursts):
            a, t = _thread_cpu(proc.pid), time.time()
            _burst(hub.conn, tasks)
            time.sleep(1.0)
            b = _thread_cpu(proc.pid)
            wall += time.time() - t
            for k in total:
                total[k] += b[k] - a[k]
            time.sleep(1.5)
    finally:
        stop_process(proc, timeout=20)
    n = bursts * tasks
    return {"us_per_task": {k: 1e6 * v / n for k, v in total.items()},
            "pct_of_a_core": {k: 100 * v / wall for k, v in total.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.burst", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=100_000, help="tasks of history in the Hub's table")
    p.add_argument("--bursts", type=int, default=6)
    p.add_argument("--tasks", type=int, default=2000, help="tasks per burst")
    p.add_argument("--verbose-limit", type=int, default=None,
                   help="replaces paired.VERBOSE_LIMIT in the poll measurement (0: never ask for in-flight ids)")
    p.add_argument("--no-app", action="store_true", help="skip the app's per-thread measurement")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hubtop-burst-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        with HubBench(work, args.n) as hub:
            parts = poll_parts(hub, args.bursts, args.tasks, args.verbose_limit)
            threads = None if args.no_app else app_threads(hub, work, args.bursts, args.tasks)
    rates = ", ".join(f"{r:.0f}" for r in parts["rates"])
    print(f"\n{parts['finished']:,} tasks finished in {args.bursts} bursts ({rates} tasks/s); "
          f"{parts['writes_per_task']:.2f} store writes per task\n")
    print("| part | CPU per finished task |")
    print("| --- | --- |")
    for label, _, _ in _PARTS:
        print(f"| {label} | {parts['us_per_task'].get(label, 0.0):.1f} µs |")
    print(f"| poll (whole step) | {parts['us_per_task'].get('poll (whole step)', 0.0):.1f} µs |")
    if threads is not None:
        for k, label in (("main", "app: main (UI) thread"), ("other", "app: all other threads")):
            print(f"| {label} | {threads['us_per_task'][k]:.1f} µs ({threads['pct_of_a_core'][k]:.2f} % of a core) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
