"""`hubtop demo` on a real cluster: the workload's mix reaches the Hub, and every process it started is gone
afterwards, however it ends (quit, SIGTERM, SIGHUP, ctrl+c, the terminal closing)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.cluster

HUBTOP = [sys.executable, "-m", "tui"]
SEED = "0"  # with this seed the first burst holds failures, direct tasks, a long runner and a dependency timeout


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch, tmp_path):
    monkeypatch.delenv("HUBTOP_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in _alive(procs):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _wait_ready(proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "cluster ready:" in line:
            return Path(line.split("cluster ready:", 1)[1].strip())
    raise AssertionError(f"demo never became ready (exit {proc.poll()}): {proc.stderr.read() if proc.poll() is not None else ''}")


def _snapshot(conn: Path) -> dict:
    r = subprocess.run([*HUBTOP, "snapshot", str(conn), "--json", "--no-direct"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _query(conn: Path, flt: str, direct: bool = False) -> list[dict]:
    r = subprocess.run([*HUBTOP, "query", str(conn), flt, "--format", "json", *([] if direct else ["--no-direct"])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _start_demo(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([*HUBTOP, "demo", "--no-ui", "--engines", "2", "--rate", "4", "--seed", SEED, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_demo_workload_mix_then_sigterm_leaves_nothing():
    proc = _start_demo()
    started: list[psutil.Process] = []
    try:
        conn = _wait_ready(proc)
        started = _descendants(proc.pid)
        cmdlines = [" ".join(p.cmdline()) for p in started]
        assert sum("ipyparallel.engine" in c for c in cmdlines) >= 2
        assert any("ipyparallel.controller" in c for c in cmdlines)
        assert any("tui.demo_workload" in c for c in cmdlines)
        ipython_dir = conn.parents[2]
        assert ipython_dir.name.startswith("hubtop-ipython-")

        deadline = time.monotonic() + 90
        while True:
            snap = _snapshot(conn)
            tasks = _query(conn, "", direct=True)  # the tasks.db has the output sizes; it lags the Hub by ~2 s
            enames = {t["ename"] for t in tasks if t["state"] == "failed"}
            if snap["states"]["failed"] >= 3 and snap["states"]["succeeded"] >= 10 and len(enames) >= 2 \
                    and "TaskTimeout" in enames:
                break
            assert time.monotonic() < deadline, f"workload too thin after 90 s: {snap['states']}, {enames}"
            time.sleep(1)
        assert len(snap["engines"]) == 2 and all(e["alive"] for e in snap["engines"])
        assert {t["queue"] for t in tasks} == {"mux", "task"}
        assert {"fit-model", "preprocess", "long-job"} <= {t["label"] for t in tasks}
        failures = {t["ename"] for t in tasks if t["state"] == "failed"}
        assert len(failures) >= 2 and "TaskTimeout" in failures
        assert any(t["stdout_size"] for t in tasks) and any(t["stderr_size"] for t in tasks)
        assert any(t["state"] == "pending" for t in tasks)  # the long runners

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 128 + signal.SIGTERM
        assert _alive(started) == []
        assert not ipython_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(started)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT], ids=["SIGHUP", "SIGINT"])
def test_demo_signals_leave_nothing(sig):
    proc = _start_demo()
    started: list[psutil.Process] = []
    try:
        _wait_ready(proc)
        time.sleep(2)  # the workload is submitting; a long runner may be busy
        started = _descendants(proc.pid)
        assert len(started) >= 4
        proc.send_signal(sig)
        code = proc.wait(40)
        assert code == (130 if sig == signal.SIGINT else 128 + sig)
        assert _alive(started) == []
        assert "stopping the cluster" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(started)
        proc.stdout.close()
        proc.stderr.close()


def test_demo_duration_ends_by_itself():
    proc = _start_demo("--duration", "3")
    started: list[psutil.Process] = []
    try:
        _wait_ready(proc)
        started = _descendants(proc.pid)
        assert proc.wait(40) == 0
        assert _alive(started) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(started)
        proc.stdout.close()
        proc.stderr.close()


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=20).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real terminal")
@pytest.mark.parametrize("how", ["quit", "close-terminal"])
def test_demo_dashboard_in_a_terminal(tmp_path, how):
    """The real UI path: the dashboard shows the demo's tasks; `q` (or the terminal closing) stops everything."""
    session = f"hubtop-demo-test-{os.getpid()}-{how}"
    rc_file = tmp_path / "rc"
    pid_file = tmp_path / "pid"
    script = tmp_path / "run.sh"
    script.write_text(f"echo $$ > {pid_file}\nexec {' '.join(HUBTOP)} demo --engines 2 --rate 4 --seed {SEED}\n")
    _tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "40",
          f"sh {script}; echo $? > {rc_file}; sleep 60")
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        screen = ""
        while time.monotonic() < deadline:
            screen = _tmux("capture-pane", "-t", session, "-p")
            # every tab is on screen, the last one too: "7 All 58"
            shown = re.search(r"\d All ([\d,]+)", screen)
            total = int(shown[1].replace(",", "")) if shown else 0
            if "connected" in screen and total >= 10:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the dashboard never showed the demo:\n{screen}")
        demo_pid = int(pid_file.read_text())
        started = [psutil.Process(demo_pid), *_descendants(demo_pid)]
        assert any("ipyparallel.controller" in " ".join(p.cmdline()) for p in started)
        if how == "quit":
            _tmux("send-keys", "-t", session, "q")
            deadline = time.monotonic() + 40
            while not rc_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert rc_file.exists(), "q did not end the demo:\n" + _tmux("capture-pane", "-t", session, "-p")
            assert rc_file.read_text().strip() == "0"
        else:
            _tmux("kill-session", "-t", session)  # the terminal goes away: SIGHUP
        deadline = time.monotonic() + 40
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(started) == []
    finally:
        _tmux("kill-session", "-t", session)
        _kill_all(started)


def test_demo_argument_errors():
    r = subprocess.run([*HUBTOP, "demo", "--backend", "mongodb"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip() == "hubtop: error: --backend mongodb needs --mongo-uri mongodb://HOST:PORT"
    r = subprocess.run([*HUBTOP, "demo", "--backend", "nodb"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "invalid choice: 'nodb'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_demo_without_ipyparallel_says_how_to_install():
    code = "import sys; sys.modules['ipyparallel'] = None; from tui.cli import main; sys.exit(main(['demo']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == ("hubtop: error: hubtop demo needs ipyparallel: pip install 'hubtop[demo]' "
                                "(from a checkout: pip install -e '.[demo]')")


def test_demo_mongodb_backend(mongo_uri):
    proc = subprocess.Popen([*HUBTOP, "demo", "--no-ui", "--engines", "1", "--rate", "4", "--seed", SEED,
                             "--backend", "mongodb", "--mongo-uri", mongo_uri], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started: list[psutil.Process] = []
    try:
        conn = _wait_ready(proc)
        started = _descendants(proc.pid)
        url = proc.stdout.readline().split("tasks in", 1)[1].strip()
        assert url.startswith(mongo_uri.rstrip("/")) and "/hubtop-demo-" in url
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run([*HUBTOP, "snapshot", url, "--hub", str(conn), "--json"], capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            snap = json.loads(r.stdout)
            if snap["total"] >= 10:
                break
            assert time.monotonic() < deadline, snap
            time.sleep(1)
        assert snap["source"]["kind"] == "mongodb" and len(snap["engines"]) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 128 + signal.SIGTERM
        assert _alive(started) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(started)
        proc.stdout.close()
        proc.stderr.close()
