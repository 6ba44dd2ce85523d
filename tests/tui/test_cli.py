"""The `hubtop` command against real clusters: every headless command in a subprocess, checked against
the Hub's own records (ipyparallel.Client.db_query), plus the error paths (one line, right exit code)."""

from __future__ import annotations

import csv
import io
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cluster_workload
from tui.cli import main

pytestmark = pytest.mark.cluster

HUBTOP = [sys.executable, "-m", "tui"]


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch, tmp_path):
    """No user config file leaks into these runs."""
    monkeypatch.delenv("HUBTOP_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def hubtop(*args: str, timeout: float = 60, check: int | None = 0) -> subprocess.CompletedProcess:
    r = subprocess.run([*HUBTOP, *args], capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert r.returncode == check, f"exit {r.returncode}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}"
    return r


def one_line_error(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubtop: error: "), r.stderr
    return lines[0]


def hub_records(conn: Path) -> list[dict]:
    rc = cluster_workload.connect(conn)
    try:
        ids = rc.hub_history()
        return rc.db_query({"msg_id": {"$in": ids}}, keys=["msg_id", "completed", "result_content", "engine_uuid",
                                                         "resubmitted"])
    finally:
        rc.close()


def hub_state(rec: dict) -> str:
    if rec["completed"] is None:
        return "pending"
    status = (rec.get("result_content") or {}).get("status")
    return {"ok": "succeeded", "error": "failed", "aborted": "aborted"}.get(status, "succeeded")


@pytest.fixture
def cluster_sqlite(cluster_sqlite):
    """The session cluster once the Hub has committed the whole workload to tasks.db (it commits every 2 s)."""
    import sqlite3

    deadline = time.monotonic() + 10
    want = set(cluster_sqlite.workload.all)
    while True:
        con = sqlite3.connect(f"file:{cluster_sqlite.tasks_db}?mode=ro", uri=True, timeout=1)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE name LIKE 'ipython-tasks%'")]
            have = {r[0] for t in tables for r in con.execute(f'SELECT msg_id FROM "{t}" WHERE completed IS NOT NULL '
                                                               f'OR msg_id IN ({",".join("?" * len(want))})', list(want))}
            done = {r[0] for t in tables for r in con.execute(f'SELECT msg_id FROM "{t}" WHERE completed IS NOT NULL')}
        except sqlite3.OperationalError:
            have, done = set(), set()
        finally:
            con.close()
        if want <= have and set(cluster_sqlite.workload.all) - set(cluster_sqlite.workload.pending) <= done:
            return cluster_sqlite
        assert time.monotonic() < deadline, "the Hub did not commit the workload to tasks.db in 10 s"
        time.sleep(0.2)


# -- snapshot -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "hub"])
def test_snapshot_json_matches_the_hub(cluster_sqlite, direct):
    conn = cluster_sqlite.connection_file
    r = hubtop("snapshot", str(conn), "--json", *([] if direct else ["--no-direct"]))
    snap = json.loads(r.stdout)
    records = hub_records(conn)
    w = cluster_sqlite.workload
    assert snap["total"] == len(records) == len(w.all)
    expected = {s: sum(1 for rec in records if hub_state(rec) == s) for s in ("pending", "succeeded", "failed", "aborted")}
    assert {s: snap["states"][s] for s in expected} == expected
    assert expected["failed"] == len(w.failed) and expected["pending"] == len(w.pending)
    assert snap["resubmitted"] == sum(1 for rec in records if rec["resubmitted"])
    assert snap["source"]["backend"] == "sqlite"
    assert snap["source"]["kind"] == ("sqlite" if direct else "hub")
    assert str(conn.parent.parent) in snap["source"]["name"] or "Hub" in snap["source"]["name"]
    uuids = {rec["engine_uuid"] for rec in records if rec["engine_uuid"]}
    engines = {e["uuid"]: e for e in snap["engines"]}
    assert uuids <= set(engines) and all(e["alive"] for e in engines.values())
    assert sorted(e["id"] for e in snap["engines"]) == list(range(len(snap["engines"])))
    for uuid, e in engines.items():
        mine = [rec for rec in records if rec["engine_uuid"] == uuid]
        assert e["total"] == len(mine)
        assert e["failed"] == sum(1 for rec in mine if hub_state(rec) == "failed")
    assert isinstance(snap["warnings"], list)


def test_snapshot_summary_and_sqlite_file(cluster_sqlite):
    r = hubtop("snapshot", str(cluster_sqlite.tasks_db))
    w = cluster_sqlite.workload
    assert f"{len(w.all)} tasks: {len(w.pending)} pending, {len(w.done_ok)} succeeded, {len(w.failed)} failed" in r.stdout
    snap = json.loads(hubtop("snapshot", f"sqlite:///{cluster_sqlite.tasks_db}", "--json").stdout)
    assert snap["source"]["kind"] == "sqlite" and snap["total"] == len(w.all)


def test_headless_commands_never_import_textual(cluster_sqlite):
    code = (
        "import sys\n"
        "from tui.cli import main\n"
        f"conn = {str(cluster_sqlite.connection_file)!r}\n"
        "for argv in (['snapshot', conn, '--json'], ['query', conn, 'state:failed', '--format', 'csv'],\n"
        "             ['watch', conn, '--count', '1', '--interval', '0.2'], ['resubmit', conn, 'state:failed'],\n"
        "             ['purge', conn, 'state:failed'], ['snapshot', '/nonexistent'], ['--version']):\n"
        "    main(argv)\n"
        "assert 'textual' not in sys.modules, sorted(m for m in sys.modules if m.startswith('textual'))\n"
        "print('NO TEXTUAL')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("NO TEXTUAL")


# -- query --------------------------------------------------------------------------------------------


def test_query_json_and_csv_match_the_hub(cluster_sqlite):
    conn = str(cluster_sqlite.connection_file)
    w = cluster_sqlite.workload
    data = json.loads(hubtop("query", conn, "state:failed", "--format", "json").stdout)
    assert {d["msg_id"] for d in data} == set(w.failed)
    by_id = {d["msg_id"]: d for d in data}
    assert {by_id[m]["ename"] for m in w.value_errors} == {"ValueError"}
    assert by_id[w.zero_divisions[0]]["ename"] == "ZeroDivisionError"
    assert [d["submitted"] for d in data] == sorted((d["submitted"] for d in data), reverse=True)

    out = hubtop("query", conn, "", "--format", "csv", "--fields", "msg_id,state,label", "--sort", "msg_id",
                 "--reverse").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["msg_id", "state", "label"]
    assert [r["msg_id"] for r in rows] == sorted(w.all)
    states = {r["msg_id"]: r["state"] for r in rows}
    assert {states[m] for m in w.done_ok} == {"succeeded"} and states[w.pending[0]] in ("pending", "running", "queued")
    labeled = [r["msg_id"] for r in rows if r["label"] == cluster_workload.LABEL]
    assert labeled == w.labeled

    limited = json.loads(hubtop("query", conn, "-state:failed", "--format", "json", "--limit", "2").stdout)
    assert len(limited) == 2 and not {d["msg_id"] for d in limited} & set(w.failed)

    table = hubtop("query", conn, f"label:{cluster_workload.LABEL}")
    assert table.stdout.splitlines()[0].split()[:2] == ["MSG_ID", "STATE"]
    assert w.labeled[0] in table.stdout and "(1 task)" in table.stderr


def test_query_errors(cluster_sqlite):
    conn = str(cluster_sqlite.connection_file)
    assert "bad filter 'state:'" in one_line_error(hubtop("query", conn, "state:", check=None), 2)
    assert "cannot sort by 'nope'" in one_line_error(hubtop("query", conn, "", "--sort", "nope", check=None), 2)
    assert "unknown field 'bogus'" in one_line_error(hubtop("query", conn, "", "--fields", "bogus", check=None), 2)
    assert "invalid choice" in one_line_error(hubtop("query", conn, "", "--format", "xml", check=None), 2)


# -- watch --------------------------------------------------------------------------------------------


class _Lines:
    """Reads a process's stdout lines in a thread, so the test can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.q.put(line)

    def until(self, cond, timeout: float = 30.0) -> list[dict]:
        seen: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(json.loads(line))
            if cond(seen):
                return seen
        raise AssertionError(f"timed out; lines so far: {seen}")


def test_watch_prints_new_tasks_as_json_lines(fresh_cluster):
    cluster = fresh_cluster("sqlite", n=2)
    conn = cluster.connection_file
    proc = subprocess.Popen([*HUBTOP, "watch", str(conn), "--interval", "0.3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = _Lines(proc)
        first = lines.until(lambda seen: any(d.get("event") == "loaded" for d in seen))
        assert first[-1]["total"] == 0 and "time" in first[-1]
        ids = cluster_workload.run_more(conn, 3)
        seen = lines.until(lambda seen: {d["msg_id"] for d in seen if d.get("state") == "succeeded"} >= set(ids))
        added = [d for d in seen if d.get("change") == "added"]
        assert {d["msg_id"] for d in added} == set(ids)  # each new task announced once
        for d in seen:
            if "change" in d:
                assert d["msg_id"] in ids and d["queue"] == "task"
        done = [d for d in seen if d.get("state") == "succeeded"]
        assert all(d["completed"] and d["engine_uuid"] for d in done)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_watch_fail_threshold_and_count(cluster_sqlite):
    conn = str(cluster_sqlite.connection_file)
    n_failed = len(cluster_sqlite.workload.failed)
    r = hubtop("watch", conn, "--fail-threshold", str(n_failed - 1), "--interval", "0.2", check=3, timeout=30)
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[0]["event"] == "loaded" and events[0]["failed"] == n_failed
    assert events[-1] == {**events[-1], "event": "fail-threshold", "failed": n_failed, "threshold": n_failed - 1}
    # at the threshold (not past it): runs its --count polls and exits 0
    r = hubtop("watch", conn, "--fail-threshold", str(n_failed), "--count", "2", "--interval", "0.2", timeout=30)
    assert [json.loads(line)["event"] for line in r.stdout.splitlines()] == ["loaded"]
    # a filter narrows the count: no ZeroDivisionError past 1
    hubtop("watch", conn, "--filter", "ename:ZeroDivisionError", "--fail-threshold", "1", "--count", "1",
           "--interval", "0.2", timeout=30)


def test_watch_a_dead_hub_exits_1(tmp_path):
    conn = _dead_hub_file(tmp_path)
    t = time.monotonic()
    r = hubtop("watch", str(conn), "--timeout", "1", check=None, timeout=30)
    assert "cannot watch" in one_line_error(r, 1)
    assert time.monotonic() - t < 15


# -- resubmit / purge -----------------------------------------------------------------------------------


def test_resubmit_and_purge_dry_run_then_yes(fresh_cluster):
    cluster = fresh_cluster("sqlite", n=2, workload=True)
    conn = str(cluster.connection_file)
    w = cluster.workload
    # --no-direct: ask the Hub, which knows the tasks at once (its tasks.db lags up to 2 s)
    r = hubtop("resubmit", conn, "ename:ValueError", "--no-direct")
    assert "Resubmit 2 tasks matching ename:ValueError" in r.stdout and "dry run: nothing was sent" in r.stdout
    assert all(rec["resubmitted"] is None for rec in hub_records(cluster.connection_file))

    r = hubtop("resubmit", conn, "ename:ValueError", "--yes", "--no-direct")
    assert "resubmitted" in r.stdout.lower()
    mapping = dict(line.strip().split(" -> ") for line in r.stdout.splitlines() if " -> " in line)
    assert set(mapping) == set(w.value_errors)
    records = {rec["msg_id"]: rec for rec in hub_records(cluster.connection_file)}
    for old, new in mapping.items():
        assert records[old]["resubmitted"] == new and new in records

    # purge leaves the pending task out, and --yes really deletes
    r = hubtop("purge", conn, "", "--no-direct")
    assert "pending task is left out" in r.stdout and "dry run" in r.stdout
    assert len(hub_records(cluster.connection_file)) == len(records)
    r = hubtop("purge", conn, "ename:ZeroDivisionError", "--yes", "--no-direct")
    assert "purged" in r.stdout.lower()
    left = {rec["msg_id"] for rec in hub_records(cluster.connection_file)}
    assert w.zero_divisions[0] not in left and w.value_errors[0] in left


def test_actions_refused_read_only(cluster_sqlite, tmp_path):
    conn = str(cluster_sqlite.connection_file)
    assert "resubmit refused: read-only mode (--read-only)" in one_line_error(
        hubtop("resubmit", conn, "state:failed", "--yes", "--read-only", check=None), 2)
    cfg = tmp_path / "ro.toml"
    cfg.write_text("read_only = true\n")
    line = one_line_error(hubtop("purge", conn, "state:failed", "--config", str(cfg), check=None), 2)
    assert "purge refused: read-only mode" in line and str(cfg) in line


def test_purge_on_a_database_file_needs_a_hub_or_allow_writes(cluster_sqlite):
    r = hubtop("purge", str(cluster_sqlite.tasks_db), "state:failed", "--yes", check=None)
    assert r.returncode == 1 and "purge not possible" in r.stderr and "Traceback" not in r.stderr


# -- errors -------------------------------------------------------------------------------------------


def _dead_hub_file(tmp_path: Path) -> Path:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = tmp_path / "ipcontroller-client.json"
    conn.write_text(json.dumps({"interface": "tcp://127.0.0.1", "registration": port, "key": "k" * 32,
                                "signature_scheme": "hmac-sha256", "pack": "json", "unpack": "json",
                                "location": "127.0.0.1", "ssh": ""}))
    return conn


def test_errors_are_one_line(tmp_path):
    assert "no such file or directory" in one_line_error(hubtop("snapshot", str(tmp_path / "nope.json"), check=None), 1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"interface": "tcp://127.0.0.1", "registration": "x"')
    assert str(bad) in one_line_error(hubtop("snapshot", str(bad), check=None), 1)
    bad.write_text('{"hello": 1}')
    assert "not an ipyparallel client connection file" in one_line_error(hubtop("snapshot", str(bad), check=None), 1)
    foreign = tmp_path / "foreign.db"
    import sqlite3

    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    assert "no ipyparallel task table" in one_line_error(hubtop("query", str(foreign), "", check=None), 1)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "neither a connection file" in one_line_error(hubtop("snapshot", str(text), check=None), 1)
    assert "unrecognized arguments: --frobnicate" in one_line_error(hubtop("snapshot", "x", "--frobnicate", check=None), 2)
    assert "--interval" in one_line_error(hubtop("watch", "x", "--interval", "0", check=None), 2)
    assert "unknown scheme" in one_line_error(hubtop("snapshot", "http://example.org/x", check=None), 1)
    assert "bad MongoDB URL" in one_line_error(hubtop("snapshot", "mongodb://", check=None), 1)


def test_a_dead_hub_is_one_line_and_bounded(tmp_path):
    conn = _dead_hub_file(tmp_path)
    t = time.monotonic()
    line = one_line_error(hubtop("snapshot", str(conn), "--json", "--timeout", "1", check=None, timeout=30), 1)
    assert "127.0.0.1" in line
    assert time.monotonic() - t < 15


def test_no_cluster_found(tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    assert "no ipyparallel cluster found" in one_line_error(hubtop("snapshot", check=None), 1)
    assert "hubtop demo" in hubtop("snapshot", check=None).stderr


def test_version_and_help():
    r = hubtop("--version")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("hubtop ") and lines[1].startswith("textual 8.") and lines[2].startswith("ipyparallel 9.")
    r = hubtop("--help")
    for cmd in ("snapshot", "query", "watch", "resubmit", "purge", "demo", "serve", "replay"):
        assert f"  {cmd} " in r.stdout
    for cmd in ("snapshot", "query", "watch", "resubmit", "purge", "demo", "serve"):
        assert hubtop(cmd, "--help").stdout.startswith(f"usage: hubtop {cmd}")


def test_console_script_is_installed(cluster_sqlite):
    r = subprocess.run(["hubtop", "snapshot", str(cluster_sqlite.connection_file), "--json"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["total"] == len(cluster_sqlite.workload.all)


def test_main_in_process_returns_codes(capsys, tmp_path):
    assert main(["snapshot", str(tmp_path / "missing.db")]) == 1
    assert main(["snapshot", "--nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("hubtop: error:") == 2


# -- other backends ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend, warning", [("dictdb", "DictDB"), ("nodb", "stores no tasks")])
def test_snapshot_of_memory_backends_warns(request, backend, warning):
    cluster = request.getfixturevalue(f"cluster_{backend}")
    snap = json.loads(hubtop("snapshot", str(cluster.connection_file), "--json").stdout)
    assert snap["source"] == {**snap["source"], "kind": "hub", "backend": backend}
    assert any(warning in w for w in snap["warnings"])
    assert len(snap["engines"]) == 2 and all(e["alive"] for e in snap["engines"])
    if backend == "nodb":
        assert snap["total"] == 0
    else:
        assert snap["total"] == len(cluster.workload.all)
        assert snap["states"]["failed"] == len(cluster.workload.failed)
    r = hubtop("resubmit", str(cluster.connection_file), "state:failed", check=None)
    assert r.returncode == 0 and ("dry run" in r.stdout or "not possible" in r.stdout)


def test_query_mongodb_url_and_hub_pairing(cluster_mongodb):
    w = cluster_mongodb.workload
    url = f"{cluster_mongodb.mongo_uri.rstrip('/')}/{cluster_mongodb.mongo_database}"
    data = json.loads(hubtop("query", url, "state:failed", "--format", "json", "--fields", "msg_id,ename").stdout)
    assert {d["msg_id"] for d in data} == set(w.failed)
    snap = json.loads(hubtop("snapshot", url, "--hub", str(cluster_mongodb.connection_file), "--json").stdout)
    assert snap["source"]["kind"] == "mongodb" and snap["total"] == len(w.all)
    assert len(snap["engines"]) == 2 and all(e["alive"] for e in snap["engines"])


def test_watch_reports_no_change_for_a_fill_of_the_first_load() -> None:
    """A two-phase Hub load fills in the times of every task over later polls: not 100k "changed" lines."""
    from dataclasses import replace

    from fakes import make_record

    from datasource.sources.base import Delta
    from datasource.store import TaskStore
    from tui.cli import _Tap

    listed = [replace(make_record(i), submitted=None, started=None, completed=None) for i in range(4)]
    filled = [make_record(i) for i in range(4)]
    deltas = [[Delta(upserts=listed, reset=True)], [Delta(upserts=filled[:2], filling=(2, 4))],
              [Delta(upserts=filled[2:], filling=(4, 4)),
               Delta(upserts=[make_record(9)])]]

    class Listing:
        name = "listing"

        def sync(self):
            yield from deltas.pop(0)

    lines: list[dict] = []
    store = TaskStore()
    tap = _Tap(Listing(), store, lines.append, None)
    for _ in range(3):
        for delta in tap.sync():
            store.apply(delta)
    assert [(d.get("change"), d.get("msg_id")) for d in lines] == [("added", make_record(9).msg_id)]
