"""Start and stop a real local ipyparallel cluster (controller + N engines) on 127.0.0.1.

Used by `hubtop demo` and by every cluster test. The cluster's processes are started with this
interpreter (`python -m ipyparallel.controller` / `-m ipyparallel.engine`), each in its own process
group (engines have a nanny child; the controller has ~8 children), in a private IPYTHONDIR
(temporary by default). `stop()` ends everything by PID in bounded time: SIGTERM, wait, then SIGKILL
the whole process group (an engine busy in a long task ignores SIGTERM). An `atexit` hook stops
clusters a crashed test session left running.

This module never imports ipyparallel: it talks to the Hub with `HubClient`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid as _uuid
from pathlib import Path
from typing import IO, Mapping, Sequence

from .connection import ConnectionInfo, connection_file_name, load_connection_file
from .hubclient import HubClient
from .sources.base import SourceError

__all__ = ["LocalCluster", "ClusterError", "BACKENDS"]

BACKENDS = ("sqlite", "dictdb", "nodb", "mongodb")
_BACKEND_FLAGS = {"sqlite": "--sqlitedb", "dictdb": "--dictdb", "nodb": "--nodb", "mongodb": "--mongodb"}

_live: "set[LocalCluster]" = set()  # strong refs: an unreferenced running cluster is still stopped at exit


class ClusterError(SourceError):
    """The local cluster could not be started (message names the log to read)."""


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group of `proc` (it leads one: start_new_session=True)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, start time) from /proc (Linux); None when gone or unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], fields[19]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every descendant, whatever its session: the engine's nanny calls setsid,
    so killing the engine's process group does not reach it."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    try:
        entries = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return []
    for child in entries:
        stat = _proc_stat(child)
        if stat is not None:
            children.setdefault(stat[0], []).append(child)
            starts[child] = stat[2]
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append((child, starts[child]))
            todo.append(child)
    return out


def _kill_if_same(pid: int, start: str) -> bool:
    """SIGKILL `pid` if it is still the process we saw (same start time); True if it was alive."""
    stat = _proc_stat(pid)
    if stat is None or stat[2] != start or stat[1] == "Z":
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _end(procs: Sequence[subprocess.Popen], term_wait: float, kill_wait: float = 3.0) -> None:
    """SIGTERM the leaders, wait up to term_wait, then SIGKILL every group and descendant still present."""
    procs = [p for p in procs if p is not None]
    family = [d for p in procs if p.poll() is None for d in _descendants(p.pid)]
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + term_wait
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    # Children (nanny, schedulers) may outlive their leader: kill what remains of each group.
    for p in procs:
        if p.poll() is None or _group_alive(p.pid):
            _signal_group(p, signal.SIGKILL)
    deadline = time.monotonic() + kill_wait
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    _reap(family, deadline)
    while any(_group_alive(p.pid) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


def _reap(family: Sequence[tuple[int, str]], deadline: float) -> None:
    """Kill descendants in other sessions (nannies) that did not exit with their parent; wait for them."""
    alive = [(pid, start) for pid, start in family if _kill_if_same(pid, start)]
    while alive and time.monotonic() < deadline:
        alive = [(pid, start) for pid, start in alive if (st := _proc_stat(pid)) and st[2] == start and st[1] != "Z"]
        if alive:
            time.sleep(0.05)


class LocalCluster:
    """A controller and `n` engines on 127.0.0.1.

    >>> with LocalCluster(n=2, backend="sqlite") as cluster:
    ...     HubClient(cluster.connection_info()).connection_request()
    """

    def __init__(
        self,
        n: int = 2,
        backend: str = "sqlite",
        *,
        ipython_dir: str | os.PathLike | None = None,
        profile: str = "hubtop",
        cluster_id: str | None = None,
        mongo_uri: str | None = None,
        mongo_database: str = "ipython-tasks",
        ping_ms: int = 1000,
        controller_args: Sequence[str] = (),
        engine_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        if backend == "mongodb" and not mongo_uri:
            raise ValueError("backend 'mongodb' needs mongo_uri")
        self.n = n
        self.backend = backend
        self.profile = profile
        self.cluster_id = cluster_id
        self.mongo_uri = mongo_uri
        self.mongo_database = mongo_database
        self.ping_ms = ping_ms
        self.controller_args = list(controller_args)
        self.engine_args = list(engine_args)
        self.extra_env = dict(env or {})  # e.g. PYTHONPATH so engines can import test helpers
        self._tmp: str | None = None
        if ipython_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="hubtop-ipython-")
            ipython_dir = self._tmp
        self.ipython_dir = Path(ipython_dir).resolve()
        self.controller: subprocess.Popen | None = None
        self.engines: list[subprocess.Popen] = []
        self._logs: list[IO] = []
        self._lock = threading.Lock()
        self._controller_starts = 0
        self._orphans: list[tuple[int, str]] = []  # (pid, start time) of nannies of killed engines
        self.workload: object = None  # set by the test fixtures (tests/cluster_workload.Workload)

    # -- paths ---------------------------------------------------------------------------------

    @property
    def profile_dir(self) -> Path:
        return self.ipython_dir / f"profile_{self.profile}"

    @property
    def connection_file(self) -> Path:
        return self.profile_dir / "security" / connection_file_name(self.cluster_id)

    @property
    def tasks_db(self) -> Path | None:
        """The SQLite file the Hub writes (sqlite backend only)."""
        return self.profile_dir / "tasks.db" if self.backend == "sqlite" else None

    @property
    def log_dir(self) -> Path:
        return self.profile_dir / "log"

    @property
    def engine_pids(self) -> list[int]:
        return [p.pid for p in self.engines]

    @property
    def controller_pid(self) -> int | None:
        return self.controller.pid if self.controller else None

    def pids(self) -> list[int]:
        """Every running process of the cluster: the controller (the Hub) with its schedulers and relays,
        the engines with their nannies."""
        leaders = [p for p in [self.controller, *self.engines] if p is not None and p.poll() is None]
        return [pid for p in leaders for pid in [p.pid] + [d for d, _ in _descendants(p.pid)]]

    def connection_info(self) -> ConnectionInfo:
        return load_connection_file(self.connection_file)

    def hub_client(self, timeout: float = 5.0) -> HubClient:
        return HubClient(self.connection_info(), timeout=timeout)

    def __repr__(self) -> str:
        return f"LocalCluster(backend={self.backend!r}, n={self.n}, profile_dir={str(self.profile_dir)!r})"

    # -- processes -----------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["IPYTHONDIR"] = str(self.ipython_dir)
        env.pop("IPP_CLUSTER_ID", None)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def _common_args(self) -> list[str]:
        args = [f"--profile={self.profile}", f"--ipython-dir={self.ipython_dir}"]
        if self.cluster_id:
            args.append(f"--cluster-id={self.cluster_id}")
        return args

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / log_name, "ab")
        self._logs.append(log)
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=str(self.profile_dir),
            start_new_session=True,
        )

    def _start_controller(self) -> None:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.connection_file.unlink()  # a stale file from a killed controller would fool the wait
        except FileNotFoundError:
            pass
        args = [
            sys.executable,
            "-m",
            "ipyparallel.controller",
            *self._common_args(),
            "--ip=127.0.0.1",
            f"--ping={self.ping_ms}",
            _BACKEND_FLAGS[self.backend],
        ]
        if self.backend == "mongodb":
            args += [
                f"--MongoDB.connection_args=['{self.mongo_uri}']",
                f"--MongoDB.database={self.mongo_database}",
            ]
        args += self.controller_args
        self._controller_starts += 1
        self.controller = self._spawn(args, f"hubtop-controller-{self._controller_starts}.log")

    def _start_engine(self) -> subprocess.Popen:
        i = len(self.engines)
        args = [sys.executable, "-m", "ipyparallel.engine", *self._common_args(), *self.engine_args]
        proc = self._spawn(args, f"hubtop-engine-{self._controller_starts}-{i}.log")
        self.engines.append(proc)
        return proc

    def _log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = (self.log_dir / name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def _wait_connection_file(self, deadline: float) -> None:
        while not self.connection_file.is_file():
            if self.controller is not None and self.controller.poll() is not None:
                log = f"hubtop-controller-{self._controller_starts}.log"
                raise ClusterError(
                    f"ipcontroller exited with code {self.controller.returncode}; see {self.log_dir / log}: "
                    f"{self._log_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(f"ipcontroller wrote no connection file {self.connection_file} in time")
            time.sleep(0.05)
        # The file is written in one go but may be seen empty for an instant: retry until it parses.
        while True:
            try:
                self.connection_info()
                return
            except SourceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def wait_for_engines(self, n: int | None = None, timeout: float = 60.0) -> dict[int, str]:
        """Poll connection_request until at least `n` engines are registered; {id: uuid}."""
        n = self.n if n is None else n
        deadline = time.monotonic() + timeout
        client = self.hub_client(timeout=2.0)
        try:
            while True:
                try:
                    engines = client.connection_request(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                except SourceError:
                    engines = {}
                if len(engines) >= n:
                    return engines
                if self.controller is not None and self.controller.poll() is not None:
                    raise ClusterError(f"ipcontroller exited with code {self.controller.returncode}")
                dead = [p.pid for p in self.engines if p.poll() is not None]
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"only {len(engines)} of {n} engines registered within {timeout:g} s"
                        + (f" (engines exited: {dead}; logs in {self.log_dir})" if dead else "")
                    )
                time.sleep(0.2)
        finally:
            client.close()

    def start(self, timeout: float = 60.0) -> "LocalCluster":
        """Start the controller and the engines; return once all `n` engines are registered."""
        with self._lock:
            if self.controller is not None and self.controller.poll() is None:
                return self
            deadline = time.monotonic() + timeout
            _live.add(self)
            try:
                self._start_controller()
                self._wait_connection_file(deadline)
                for _ in range(self.n):
                    self._start_engine()
                self.wait_for_engines(self.n, max(0.1, deadline - time.monotonic()))
            except BaseException:
                self._stop_processes()
                raise
        return self

    def add_engines(self, k: int = 1, timeout: float = 60.0) -> dict[int, str]:
        """Start `k` more engines; wait until they are registered."""
        alive = len([p for p in self.engines if p.poll() is None])
        for _ in range(k):
            self._start_engine()
        return self.wait_for_engines(alive + k, timeout)

    def kill_engine(self, i: int, sig: int = signal.SIGKILL, wait: float = 5.0) -> int:
        """Kill engine number `i` (start order) and its nanny; return its PID."""
        proc = self.engines[i]
        if proc.poll() is None:
            self._orphans += _descendants(proc.pid)  # the nanny reports the death, then exits
        if sig == signal.SIGKILL:
            _signal_group(proc, sig)
        else:
            proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass
        return proc.pid

    def kill_controller(self, sig: int = signal.SIGKILL, wait: float = 5.0) -> None:
        """Kill the controller (SIGKILL leaves its connection file behind, stale, like a crash)."""
        if self.controller is None:
            return
        if sig == signal.SIGKILL:
            _signal_group(self.controller, sig)
            try:
                self.controller.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        else:
            _end([self.controller], wait)

    def restart_controller(self, timeout: float = 60.0) -> dict[int, str]:
        """Kill the controller and its engines, start a new Hub (new ports, new file) and `n` new engines."""
        with self._lock:
            _end([*self.engines, self.controller], term_wait=0.0)
            self.engines = []
            deadline = time.monotonic() + timeout
            self._start_controller()
            self._wait_connection_file(deadline)
            for _ in range(self.n):
                self._start_engine()
        return self.wait_for_engines(self.n, max(0.1, deadline - time.monotonic()))

    def _stop_processes(self, timeout: float = 10.0) -> None:
        engines, controller = self.engines, self.controller
        # Engines first (idle ones exit on SIGTERM in ~1-2 s; busy ones get SIGKILLed), then the Hub.
        _end(engines, term_wait=min(1.0, timeout / 2))
        if controller is not None:
            _end([controller], term_wait=min(5.0, timeout / 2))
        _reap(self._orphans, time.monotonic() + 2.0)
        self._orphans = []
        for log in self._logs:
            try:
                log.close()
            except OSError:
                pass
        self._logs = []

    def stop(self, timeout: float = 10.0, *, remove_dir: bool = True) -> None:
        """Stop every process by PID (bounded by ~timeout + a few s); remove the temporary IPYTHONDIR."""
        with self._lock:
            self._stop_processes(timeout)
            _live.discard(self)
            if remove_dir and self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    @property
    def running(self) -> bool:
        return self.controller is not None and self.controller.poll() is None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unique_mongo_database(prefix: str = "hubtop") -> str:
    return f"{prefix}-{_uuid.uuid4().hex[:8]}"


@atexit.register
def _stop_all() -> None:
    for cluster in list(_live):
        try:
            cluster.stop(timeout=4.0)
        except Exception:
            pass
