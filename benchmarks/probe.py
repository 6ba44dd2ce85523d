"""The benchmark's child processes (run.py starts them; each measures one thing in a fresh process).

    python -m benchmarks.probe app SPEC EXPECTED.json OUT.json [--no-direct] [--churn K] [--keys]
        the real hubtop app, headless (App.run_test): time to the first correct paint, load time, idle
        CPU, poll cost with K changes per poll (a `churn` process writes them), keystroke-to-repaint
        latencies, resident memory. A fresh process, so RSS is hubtop's alone.
    python -m benchmarks.probe attach CONNECTION_FILE SECONDS OUT.json [--no-direct]
        hubtop attached to a live cluster for SECONDS (1 s polling), for the gentleness figures.
    python -m benchmarks.probe latency CONNECTION_FILE OUT
        queue_request round trips every 10 ms until SIGTERM (`time latency` lines).
    python -m benchmarks.probe churn TASKS_DB K INTERVAL
        every INTERVAL s, one committed transaction in the newest table: K/2 pending tasks complete and
        K/2 new pending tasks are submitted (rows as ipyparallel's SQLiteDB writes them). Until killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

SIZE = (160, 48)


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


# -- churn: K changes per interval --------------------------------------------------------------------


def churn(path: str, k: int, interval: float) -> None:
    from benchmarks.generate import records
    from tests.datasource import dbfixtures

    con = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    table = con.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'ipython-tasks%' ORDER BY name"
    ).fetchall()
    name = sorted((r[0] for r in table), key=lambda n: int(n.rpartition("_")[2]) if n[-1].isdigit() else 0)[-1]
    q = '"' + name + '"'
    first = con.execute(f"SELECT max(rowid) FROM {q}").fetchone()[0] or 0
    first += 10_000_000  # msg_id counters far from the generated ones
    keys = dbfixtures._KEYS
    insert = f"INSERT INTO {q} VALUES ({','.join('?' * len(keys))})"
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    ticks = 0
    while not stop:
        start = time.monotonic()
        now = datetime.now(timezone.utc)
        done = con.execute(f"SELECT rowid FROM {q} WHERE completed IS NULL ORDER BY rowid LIMIT ?", (k // 2,)).fetchall()
        new = [dbfixtures._row(r, keys) for r in records(k - k // 2, mix={"pending": 1}, first=first, seed=ticks)]
        first += len(new)
        iso = lambda d: d.isoformat()  # noqa: E731  # what ipyparallel's timestamp adapter stores
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            f"UPDATE {q} SET started = ?, completed = ?, received = ?, result_content = ? WHERE rowid = ?",
            [(iso(now - timedelta(seconds=1)), iso(now), iso(now), '{"status": "ok"}', r[0]) for r in done],
        )
        con.executemany(insert, new)
        con.execute("COMMIT")
        ticks += 1
        time.sleep(max(0.0, interval - (time.monotonic() - start)))
    con.close()


def start_churn(path: str, k: int, interval: float = 1.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.probe", "churn", path, str(k), str(interval)],
                            cwd=str(_ROOT), start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


# -- the app ------------------------------------------------------------------------------------------


class PollMeter:
    """Wraps Poller.step (worker thread) and HubtopApp.refresh_views (UI thread) with timers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.steps: list[tuple[float, float, int]] = []  # (wall s, thread cpu s, changes)
        self.refresh: list[float] = []
        poller = app.poller
        step = poller.step

        def timed_step():
            t, c = time.perf_counter(), time.thread_time()
            out = step()
            self.steps.append((time.perf_counter() - t, time.thread_time() - c,
                               out.added + out.changed + out.removed))
            return out

        poller.step = timed_step
        refresh = app.refresh_views

        def timed_refresh(*args: Any, **kwargs: Any) -> None:
            t = time.perf_counter()
            refresh(*args, **kwargs)
            self.refresh.append(time.perf_counter() - t)

        app.refresh_views = timed_refresh

    def mark(self) -> tuple[int, int, float, float]:
        return len(self.steps), len(self.refresh), time.process_time(), time.perf_counter()


async def _settle(pilot: Any, rounds: int = 3) -> None:
    """Until the key's effects are on screen: message queues drained, and a task-table re-read running in a
    worker (big stores) has landed (its new rows, not the previous ones, are what the repaint shows)."""
    app = pilot.app
    for _ in range(rounds):
        await pilot._wait_for_screen()
    table = app._table() if app._main_ready() else None
    deadline = time.perf_counter() + 30
    while table is not None and getattr(table, "loading", False) and time.perf_counter() < deadline:
        await asyncio.sleep(0.001)
        await pilot._wait_for_screen()


async def key_latency(app: Any, pilot: Any, key: str) -> float:
    """Key event in -> handled -> screen repainted (no Pilot.press: it sleeps until the CPU is idle)."""
    from textual import events

    char = key if len(key) == 1 else None
    t = time.perf_counter()
    event = events.Key(key, char)
    event.set_sender(app)
    app._driver.send_message(event)
    await _settle(pilot)
    app.screen._on_timer_update()
    return time.perf_counter() - t


async def call_latency(app: Any, pilot: Any, fn: Any) -> float:
    t = time.perf_counter()
    fn()
    await _settle(pilot)
    app.screen._on_timer_update()
    return time.perf_counter() - t


def _first_correct(app: Any, expected: dict) -> bool:
    from tui.widgets.pane_tabs import PaneTabs

    if not app._main_ready():
        return False
    tabs = app._tabs()
    for i, pane in enumerate(tabs.panes):
        want = expected["counts"].get(pane)
        if want is not None and tabs._labels.get(pane) != PaneTabs.label_for(i, pane, want):
            return False
    top = [r.msg_id for r in app._table().visible_records()[: len(expected["first_page"])]]
    return top == expected["first_page"]


async def run_app(spec: str, expected: dict, *, direct: bool, churn_k: int, keys: bool, t_spawn: float,
                  steady_polls: int = 10) -> dict:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    from datasource.sources.open import open_source
    from tui.app import make_app

    out["import_s"] = time.perf_counter() - t0
    t_open = time.perf_counter()
    source = open_source(spec, direct=direct)
    app = make_app(source, poll_interval=1.0)
    out["source"] = source.name
    out["source_kind"] = source.capabilities().kind
    meter = PollMeter(app)
    async with app.run_test(headless=True, size=SIZE) as pilot:
        deadline = time.perf_counter() + 600
        while not _first_correct(app, expected):
            if time.perf_counter() > deadline:
                raise SystemExit("no correct first paint within 600 s")
            await asyncio.sleep(0.005)
        app.screen._on_timer_update()
        now = time.perf_counter()
        out["first_paint_s"] = now - t_open
        out["first_paint_from_spawn_s"] = time.time() - t_spawn
        out["title"] = f"{app.title} | {app.sub_title}"  # the header names the source (and "(direct)")
        while app.store.loading or app.polls < 1:
            await asyncio.sleep(0.02)
        out["loaded_s"] = time.perf_counter() - t_open
        out["rss_loaded_mb"], _ = rss_mb()
        out["tasks"] = app.store.total
        # idle: polls with nothing changing
        await asyncio.sleep(1.5)
        s0, r0, c0, w0 = meter.mark()
        await asyncio.sleep(5.0)
        s1, r1, c1, w1 = meter.mark()
        out["idle_cpu_pct"] = 100 * (c1 - c0) / (w1 - w0)
        out["idle_step_ms"] = 1000 * median([s[0] for s in meter.steps[s0:s1]] or [float("nan")])
        if churn_k:
            proc = start_churn(spec, churn_k)
            try:
                await asyncio.sleep(2.5)  # the first changed polls
                s0, r0, c0, w0 = meter.mark()
                while len(meter.steps) - s0 < steady_polls:
                    await asyncio.sleep(0.1)
                s1, r1, c1, w1 = meter.mark()
            finally:
                stop_process(proc)
            steps = meter.steps[s0:s1]
            refresh = meter.refresh[r0:r1]
            n = max(1, len(steps))
            out["churn_k"] = churn_k
            out["poll_changes_median"] = median([s[2] for s in steps]) if steps else 0
            out["poll_step_ms_p50"] = 1000 * pct([s[0] for s in steps], 0.5)
            out["poll_step_ms_p95"] = 1000 * pct([s[0] for s in steps], 0.95)
            out["poll_step_cpu_ms"] = 1000 * sum(s[1] for s in steps) / n
            out["poll_refresh_ms_p50"] = 1000 * pct(refresh, 0.5)
            out["poll_refresh_ms_p95"] = 1000 * pct(refresh, 0.95)
            out["poll_cpu_ms"] = 1000 * (c1 - c0) / n  # all of the process's CPU per poll (Textual included)
            # hubtop's work for a poll: the sync + store apply (worker thread CPU) + re-reading the views
            out["poll_work_ms"] = 1000 * (sum(s[1] for s in steps) + sum(refresh)) / n
            out["poll_refresh_per_poll_ms"] = 1000 * sum(refresh) / n
            out["steady_cpu_pct"] = 100 * (c1 - c0) / (w1 - w0)
        if keys:
            out["keys"] = await measure_keys(app, pilot)
        out["rss_mb"], out["rss_peak_mb"] = rss_mb()
        app.exit()
    return out


async def measure_keys(app: Any, pilot: Any) -> dict[str, dict[str, float]]:
    """Keystroke -> repaint latencies (ms) per kind, polling paused so only the key is measured."""
    app.poller.pause()
    await asyncio.sleep(0.3)
    table = app._table()
    table.focus()  # the keys go where a user's go: page down and cursor moves in the task table
    await _settle(pilot)
    lat: dict[str, list[float]] = {"pane": [], "pagedown": [], "sort": [], "filter": [], "down": []}
    trace: list[tuple[str, str, str, float]] = []  # (kind, key or filter, the table's sort, ms): in the JSON

    def timed(kind: str, what: str, seconds: float) -> None:
        lat[kind].append(seconds)
        trace.append((kind, what, f"{table.sort}{' desc' if table.descending else ''}", round(1000 * seconds, 1)))
    rounds = 4
    for _ in range(rounds):
        for key in ("2", "3", "4", "5", "6", "1"):
            timed("pane", key, await key_latency(app, pilot, key))
        await key_latency(app, pilot, "6")  # the All pane: the biggest
        row = table.cursor_row
        for _ in range(5):
            timed("pagedown", "pagedown", await key_latency(app, pilot, "pagedown"))
        if table.cursor_row <= row:
            raise SystemExit("page down did not move the task table's cursor: the keys are not measured")
        for _ in range(5):
            timed("down", "down", await key_latency(app, pilot, "down"))
        for _ in range(4):
            timed("sort", "s", await key_latency(app, pilot, "s"))
        for text in ("state:failed", "label:batch-1", "engine:3", "ename:ValueError"):
            timed("filter", text, await call_latency(app, pilot, lambda t=text: app.set_filter(t)))
            timed("filter", f"escape {text}", await key_latency(app, pilot, "escape"))  # clear it again
        await key_latency(app, pilot, "home")
    out = {}
    for kind, values in lat.items():
        out[kind] = {"n": len(values), "p50_ms": 1000 * pct(values, 0.5), "p95_ms": 1000 * pct(values, 0.95),
                     "max_ms": 1000 * max(values)}
    every = [v for values in lat.values() for v in values]
    out["all"] = {"n": len(every), "p50_ms": 1000 * pct(every, 0.5), "p95_ms": 1000 * pct(every, 0.95),
                  "max_ms": 1000 * max(every)}
    out["trace"] = trace  # type: ignore[assignment]
    app.poller.resume()
    return out


async def attach(spec: str, seconds: float, out_path: str, *, direct: bool) -> dict:
    from datasource.sources.open import open_source
    from tui.app import make_app

    source = open_source(spec, direct=direct)
    app = make_app(source, poll_interval=1.0)
    meter = PollMeter(app)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app.run_test(headless=True, size=SIZE):
        while app.store.loading or app.polls < 1:
            await asyncio.sleep(0.05)
        Path(out_path + ".ready").write_text(source.name)
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        c1, w1 = time.process_time(), time.perf_counter()
        out = {"source": source.name, "polls": len(meter.steps), "cpu_pct": 100 * (c1 - c0) / (w1 - w0),
               "step_ms_p50": 1000 * pct([s[0] for s in meter.steps], 0.5),
               "step_ms_p95": 1000 * pct([s[0] for s in meter.steps], 0.95), "tasks": app.store.total}
        app.exit()
    return out


def latency(conn: str, out_path: str, every: float = 0.01) -> None:
    """queue_request round trips (the Hub's responsiveness), one per `every` s, until SIGTERM:
    lines of `wall_time latency_s` in out_path."""
    from datasource.connection import load_connection_file
    from datasource.hubclient import HubClient

    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    client = HubClient(load_connection_file(conn), timeout=10.0)
    with open(out_path, "w") as fh:
        while not stop:
            t = time.perf_counter()
            try:
                client.request("queue_request", {"targets": None, "verbose": False})
                fh.write(f"{time.time():.4f} {time.perf_counter() - t:.6f}\n")
            except Exception:
                fh.write(f"{time.time():.4f} nan\n")
            fh.flush()
            time.sleep(max(0.0, every - (time.perf_counter() - t)))
    client.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.probe")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("app")
    a.add_argument("spec")
    a.add_argument("expected")
    a.add_argument("out")
    a.add_argument("--no-direct", dest="direct", action="store_false")
    a.add_argument("--churn", type=int, default=0)
    a.add_argument("--keys", action="store_true")
    a.add_argument("--t-spawn", type=float, default=None)
    b = sub.add_parser("attach")
    b.add_argument("spec")
    b.add_argument("seconds", type=float)
    b.add_argument("out")
    b.add_argument("--no-direct", dest="direct", action="store_false")
    d = sub.add_parser("latency")
    d.add_argument("conn")
    d.add_argument("out")
    c = sub.add_parser("churn")
    c.add_argument("path")
    c.add_argument("k", type=int)
    c.add_argument("interval", type=float)
    args = p.parse_args(argv)
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    if args.cmd == "churn":
        churn(args.path, args.k, args.interval)
        return 0
    if args.cmd == "latency":
        latency(args.conn, args.out)
        return 0
    if args.cmd == "app":
        expected = json.loads(Path(args.expected).read_text())
        result = asyncio.run(run_app(args.spec, expected, direct=args.direct, churn_k=args.churn, keys=args.keys,
                                     t_spawn=args.t_spawn or time.time()))
    else:
        result = asyncio.run(attach(args.spec, args.seconds, args.out, direct=args.direct))
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
