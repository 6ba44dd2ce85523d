"""Write SVG + PNG screenshots of hubtop: the dashboard, a task's detail, failure triage, a purge preview.

    python screenshots/make_screenshots.py            # a real local cluster (LocalCluster + the demo workload)
    python screenshots/make_screenshots.py --fake     # no cluster: tests/fakes.py FakeSource (deterministic)
    python screenshots/make_screenshots.py --out DIR --size 140x40

The real run starts a 2-engine ipyparallel cluster on 127.0.0.1 (SQLite Hub DB, private IPYTHONDIR),
lets `tui.demo_workload` submit tasks for a few seconds, stops the workload (so the data holds still),
drives the real app headless (`App.run_test`) over `open_source(connection file)`, and stops the cluster
by PID whatever happens. Without ipyparallel, or if the cluster does not start, it falls back to the fake
source. PNGs need cairosvg and the Fira Code font (`apt-get install fonts-firacode`), as Textual's SVGs
ask for it; without cairosvg only the SVGs are written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import datasource.query  # noqa: F401  # before tests/ joins sys.path: tests/datasource must not shadow it

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ("01-dashboard", "02-detail", "03-triage", "04-purge-preview")


def start_cluster(seconds: float) -> tuple[Any, subprocess.Popen | None]:
    """A LocalCluster with the demo workload run for `seconds`, then stopped (the cluster keeps running)."""
    from datasource.cluster import LocalCluster

    cluster = LocalCluster(n=2, backend="sqlite", profile="hubtop-shots", ipython_dir=tempfile.mkdtemp(prefix="hubtop-shots-"))
    cluster.start(timeout=90)
    workload = subprocess.Popen(
        [sys.executable, "-m", "tui.demo_workload", str(cluster.connection_file), "--rate", "12", "--seed", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    time.sleep(seconds)
    stop_workload(workload)
    time.sleep(2.5)  # the Hub commits tasks.db every 2 s
    return cluster, None


def stop_workload(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def fake_app() -> Any:
    sys.path.append(str(ROOT / "tests"))
    from fakes import T0, FakeSource

    from tui.app import make_app

    return make_app(FakeSource(2_400), autopoll=False, clock=lambda: 1000.0, now=lambda: T0 + timedelta(hours=1))


async def until(pilot: Any, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not reach the state to screenshot")
        await pilot.pause(0.05)


async def shoot(app: Any, out: Path, size: tuple[int, int], real: bool) -> list[Path]:
    from tui.screens import DetailScreen, PreviewScreen, ScopeScreen, TriageScreen

    written: list[Path] = []

    def save(name: str) -> None:
        written.append(Path(app.save_screenshot(f"{name}.svg", path=str(out))))

    async with app.run_test(size=size, notifications=False) as pilot:
        await until(pilot, lambda: app.poller is not None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a real Hub: poll until the first load is complete
            outcome = await app.poll_once()
            if outcome.status.state == "connected" and not app.store.loading and app.store.total:
                break
            await pilot.pause(0.5)
        if real:
            await app.poll_once()
        await pilot.press(str(app.panes.index("all") + 1))  # the dashboard on All: every state at once
        await pilot.pause()
        await app.settle()
        save(SHOTS[0])

        failed = app.panes.index("failed") + 1
        await pilot.press(str(failed))
        await pilot.pause()
        if app.cursor_id() is not None:
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen) and not app.screen.loading_detail)
            await pilot.pause()
            save(SHOTS[1])
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, DetailScreen))

        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, TriageScreen))
        await pilot.pause(0.5)
        save(SHOTS[2])
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, TriageScreen))

        # purge preview: mark two failed tasks, choose "the marked rows"
        await pilot.press("space", "space", "p")
        await until(pilot, lambda: isinstance(app.screen, (ScopeScreen, PreviewScreen)))
        if isinstance(app.screen, ScopeScreen):
            await pilot.press("down", "enter")
            await until(pilot, lambda: isinstance(app.screen, PreviewScreen))
        await pilot.pause()
        save(SHOTS[3])
        await pilot.press("escape")  # cancel: nothing is purged
        await pilot.pause()
    return written


def to_png(svgs: list[Path]) -> list[Path]:
    try:
        import cairosvg
    except ImportError:
        print("cairosvg is not installed: SVGs only", file=sys.stderr)
        return []
    pngs = []
    for svg in svgs:
        png = svg.with_suffix(".png")
        cairosvg.svg2png(url=str(svg), write_to=str(png))
        pngs.append(png)
    return pngs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake", action="store_true", help="use the fake source instead of a real cluster")
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="output directory")
    parser.add_argument("--size", default="140x40", help="terminal size WxH")
    parser.add_argument("--workload-seconds", type=float, default=15.0, help="how long the demo workload runs")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)

    cluster = None
    real = not args.fake
    if real:
        try:
            cluster, _ = start_cluster(args.workload_seconds)
        except Exception as exc:  # no ipyparallel, no ports...: the fake source still shows every screen
            print(f"no real cluster ({type(exc).__name__}: {exc}); using the fake source", file=sys.stderr)
            real = False
    try:
        if real:
            from datasource.sources.open import open_source

            from tui.app import make_app

            app = make_app(open_source(str(cluster.connection_file)), autopoll=False)
        else:
            app = fake_app()
        svgs = asyncio.run(shoot(app, args.out, (width, height), real))
    finally:
        if cluster is not None:
            cluster.stop()
    for path in svgs + to_png(svgs):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
