"""`hubtop demo`: a real local cluster, a live workload, and the dashboard on it; no orphans afterwards.

The cluster (`datasource.cluster.LocalCluster`: ipcontroller on 127.0.0.1 and N engines, each in its own
process group, in a temporary IPYTHONDIR) and the workload (`python -m tui.demo_workload`, its own
process group) are stopped by PID when the demo ends, whichever way it ends: quitting the dashboard,
ctrl+c, a crash (finally), SIGTERM or SIGHUP (the terminal closed: handlers ask the app to exit,
and stop everything themselves if it does not within a few seconds), interpreter exit (atexit).
SIGKILL cannot be caught: then `LocalCluster`'s processes outlive the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .config import Config

INSTALL_HINT = "hubtop demo needs ipyparallel: pip install 'hubtop[demo]' (from a checkout: pip install -e '.[demo]')"
_FORCE_AFTER = 15.0  # seconds a signal gives the app to exit before the demo stops everything itself


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", type=int, default=4, metavar="N", help="number of engines (default 4)")
    p.add_argument("--rate", type=float, default=2.0, metavar="R", help="tasks submitted per second (default 2)")
    p.add_argument("--backend", choices=("sqlite", "dictdb", "mongodb"), default="sqlite",
                   help="the Hub's task database (default sqlite)")
    p.add_argument("--mongo-uri", metavar="URI", help="MongoDB server for --backend mongodb (mongodb://host:port)")
    p.add_argument("--interval", type=float, metavar="S", help="seconds between polls (default: config, else 1)")
    p.add_argument("--theme", metavar="NAME", help="a Textual theme")
    p.add_argument("--read-only", dest="read_only", action="store_true", default=None, help="never resubmit or purge")
    p.add_argument("--config", metavar="FILE", help="configuration file")
    # for tests and scripted runs: no dashboard, stop after S seconds (or on a signal)
    p.add_argument("--no-ui", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)


class Demo:
    """The demo's processes: a LocalCluster and the workload. `stop()` is idempotent and thread-safe."""

    def __init__(self, engines: int, backend: str, rate: float, mongo_uri: str | None = None, seed: int | None = None):
        from datasource.cluster import LocalCluster, unique_mongo_database

        kwargs: dict[str, Any] = {}
        if backend == "mongodb":
            kwargs = dict(mongo_uri=mongo_uri, mongo_database=unique_mongo_database("hubtop-demo"))
        self.cluster = LocalCluster(n=engines, backend=backend, profile="hubtop-demo", **kwargs)
        self.rate = rate
        self.seed = seed
        self.workload: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._log = None

    @property
    def connection_file(self) -> Path:
        return self.cluster.connection_file

    def start(self) -> None:
        self.cluster.start(timeout=90)
        self.cluster.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.cluster.log_dir / "hubtop-demo-workload.log", "ab")
        args = [sys.executable, "-m", "tui.demo_workload", str(self.connection_file), "--rate", str(self.rate)]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        self.workload = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def pids(self) -> list[int]:
        pids = [p for p in [self.cluster.controller_pid, *self.cluster.engine_pids] if p]
        if self.workload is not None:
            pids.append(self.workload.pid)
        return pids

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if self.workload is not None:
                _end_group(self.workload, 5.0)
            self.cluster.stop(timeout=8.0)
            if self._log is not None:
                self._log.close()


def _end_group(proc: subprocess.Popen, wait: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group (ZMQ threads, children)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(3.0)
    except subprocess.TimeoutExpired:
        pass


def have_ipyparallel() -> bool:
    """Whether the `demo` extra is there (without importing it: the workload process does)."""
    if "ipyparallel" in sys.modules:
        return sys.modules["ipyparallel"] is not None
    try:
        return importlib.util.find_spec("ipyparallel") is not None
    except (ImportError, ValueError):
        return False


def run(args: argparse.Namespace, cfg: Config) -> int:
    from .cli import EXIT_SOURCE, EXIT_USAGE, CLIError

    if not have_ipyparallel():
        raise CLIError(INSTALL_HINT, EXIT_SOURCE)
    if args.backend == "mongodb" and not args.mongo_uri:
        raise CLIError("--backend mongodb needs --mongo-uri mongodb://HOST:PORT", EXIT_USAGE)
    if args.mongo_uri and args.backend != "mongodb":
        raise CLIError("--mongo-uri only goes with --backend mongodb", EXIT_USAGE)
    if args.engines < 1:
        raise CLIError("--engines must be at least 1", EXIT_USAGE)
    if not args.rate > 0:
        raise CLIError("--rate must be > 0 tasks per second", EXIT_USAGE)

    demo = Demo(args.engines, args.backend, args.rate, args.mongo_uri, args.seed)
    atexit.register(demo.stop)
    state: dict[str, Any] = {"app": None, "signal": None}
    # SIGINT too: a demo started in the background by a script inherits SIGINT ignored (the shell does that to
    # background jobs), and Python then never turns it into KeyboardInterrupt
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}

    def on_signal(signum: int, frame: Any) -> None:
        state["signal"] = signum
        app = state["app"]
        if app is None:
            raise KeyboardInterrupt  # not in the dashboard: unwind through the finally below
        try:
            asyncio.get_running_loop().call_soon_threadsafe(app.exit)
        except RuntimeError:
            raise KeyboardInterrupt from None
        # If the app cannot exit (the terminal is gone), stop the processes anyway and leave.
        def force() -> None:
            time.sleep(_FORCE_AFTER)
            demo.stop()
            os._exit(128 + signum)

        threading.Thread(target=force, daemon=True).start()

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        print(f"hubtop demo: starting a {args.backend} cluster with {args.engines} engines...", file=sys.stderr, flush=True)
        demo.start()
        print(f"hubtop demo: cluster ready: {demo.connection_file}", flush=True)
        if args.backend == "mongodb":
            print(f"hubtop demo: tasks in {args.mongo_uri.rstrip('/')}/{demo.cluster.mongo_database}", flush=True)
        if args.no_ui:
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while deadline is None or time.monotonic() < deadline:
                if demo.workload is not None and demo.workload.poll() is not None:
                    raise CLIError(f"the demo workload exited with code {demo.workload.returncode}; "
                                   f"see {demo.cluster.log_dir / 'hubtop-demo-workload.log'}", EXIT_SOURCE)
                time.sleep(0.2)
            return 0
        from datasource.sources.open import open_source

        from .cli import build_app

        read_only = cfg.read_only if args.read_only is None else args.read_only
        source = open_source(str(demo.connection_file), read_only=read_only)
        ns = argparse.Namespace(**vars(args))
        for name in ("source", "profile", "cluster_id", "hub"):
            setattr(ns, name, None)
        ns.direct, ns.allow_writes, ns.timeout, ns.record = None, False, 5.0, None
        app = build_app(ns, cfg, source=source)
        state["app"] = app
        app.run()
        state["app"] = None
        if state["signal"]:
            return 128 + state["signal"]
        code = getattr(app, "return_code", None)
        return int(code) if code else 0
    except KeyboardInterrupt:
        sig = state["signal"]
        return 128 + sig if sig else 130
    finally:
        state["app"] = None
        print("hubtop demo: stopping the cluster...", file=sys.stderr, flush=True)
        demo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
