"""`hubtop serve`: a real textual-serve server answering on 127.0.0.1, the served command, the warnings."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tui.serve import _is_loopback, dashboard_args, served_command

HUBTOP = [sys.executable, "-m", "tui"]


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch, tmp_path):
    monkeypatch.delenv("HUBTOP_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 20.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    err = proc.stderr.read()
    proc.stderr.close()
    proc.stdout.close()
    return err


def test_serve_answers_a_get_on_localhost(cluster_sqlite):
    port = _free_port()
    conn = str(cluster_sqlite.connection_file)
    proc = subprocess.Popen([*HUBTOP, "serve", conn, "--port", str(port), "--read-only"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        status, body = _get(f"http://127.0.0.1:{port}/")
        assert status == 200
        assert "<html" in body.lower() and "textual" in body.lower() and "hubtop" in body
        # bound to loopback only: the machine's other addresses do not answer
        with socket.socket() as s:
            s.settimeout(1)
            other = socket.gethostbyname(socket.gethostname())
            if not other.startswith("127."):
                assert s.connect_ex((other, port)) != 0
    finally:
        err = _stop(proc)
    assert f"-m tui {conn} --read-only" in err  # the served command: hubtop with the same arguments
    assert "WARNING" not in err


def test_serve_on_other_hosts_warns_unless_read_only(tmp_path):
    port = _free_port()
    # 0.0.0.0 only long enough to read the warning; a missing SOURCE would fail first, so give none
    proc = subprocess.Popen([*HUBTOP, "serve", "--host", "0.0.0.0", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
    finally:
        rest = _stop(proc)
    assert "WARNING: listening on 0.0.0.0: anyone who can reach port" in line and "resubmit and purge" in line
    assert "Traceback" not in rest


def test_serve_checks_the_source_before_serving(tmp_path):
    r = subprocess.run([*HUBTOP, "serve", str(tmp_path / "missing.db"), "--port", str(_free_port())],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("hubtop: error: ") and "missing.db: no such file" in r.stderr
    r = subprocess.run([*HUBTOP, "serve", "--port", "70000"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not a port number" in r.stderr


def test_served_command_drops_serve_options():
    argv = ["conn.json", "--host", "0.0.0.0", "--port=9000", "--read-only", "--public-url", "http://x", "--interval", "2"]
    assert dashboard_args(argv) == ["conn.json", "--read-only", "--interval", "2"]
    cmd = served_command(["my file.db"])
    assert cmd.startswith(sys.executable) and cmd.endswith("-m tui 'my file.db'")
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("example.org")
