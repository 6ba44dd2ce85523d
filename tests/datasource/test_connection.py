"""Connection files: loading, validation, URLs, session, discovery (no cluster needed)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from datasource.connection import (
    ConnectionInfo,
    discover_clusters,
    find_connection_file,
    find_engines_json,
    find_tasks_db,
    load_connection_file,
    profile_dir_of,
)
from datasource.connection import ipython_dir as current_ipython_dir
from datasource.sources.base import SourceError

KEY = "6156ee6b-900ac059d3c2b2a6a588c90b"
SPEC_FILE = {
    "ssh": "",
    "interface": "tcp://127.0.0.1",
    "registration": 39219,
    "control": 56861,
    "mux": 36735,
    "task": 38833,
    "task_scheme": "leastload",
    "iopub": 60703,
    "notification": 34587,
    "broadcast": 36589,
    "key": KEY,
    "curve_serverkey": None,
    "location": "vm",
    "pack": "json",
    "unpack": "json",
    "signature_scheme": "hmac-sha256",
}


def write(path, data, mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    os.chmod(path, mode)
    return path


def test_load_spec_file(tmp_path):
    conn = load_connection_file(write(tmp_path / "c.json", SPEC_FILE))
    assert conn.interface == "tcp://127.0.0.1"
    assert conn.ports["registration"] == 39219 and conn.ports["iopub"] == 60703
    assert conn.key == KEY.encode()
    assert conn.url("registration") == "tcp://127.0.0.1:39219"
    assert conn.url("notification") == "tcp://127.0.0.1:34587"
    assert conn.permission_warnings() == []


def test_key_never_shown(tmp_path):
    conn = load_connection_file(write(tmp_path / "c.json", SPEC_FILE))
    for text in (repr(conn), str(conn), f"{conn}"):
        assert KEY not in text
        assert "hidden" in text


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"interface": "tcp://127.0.0.1"}), "missing registration, key, signature_scheme"),
        (json.dumps({**SPEC_FILE, "registration": "x"}), "bad 'registration' port"),
        (json.dumps({**SPEC_FILE, "interface": "127.0.0.1"}), "bad 'interface'"),
        (json.dumps({**SPEC_FILE, "signature_scheme": "rot13"}), "unsupported signature_scheme"),
    ],
)
def test_bad_files_one_line(tmp_path, content, expected):
    path = write(tmp_path / "ipcontroller-client.json", content)
    with pytest.raises(SourceError) as err:
        load_connection_file(path)
    msg = str(err.value)
    assert expected in msg
    assert str(path) in msg
    assert "\n" not in msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SourceError, match="no such connection file"):
        load_connection_file(tmp_path / "nope.json")
    with pytest.raises(SourceError, match="is a directory"):
        load_connection_file(tmp_path)


def test_binary_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SourceError, match="not UTF-8"):
        load_connection_file(path)


def test_ipc_separator_and_wildcard_interfaces():
    conn = ConnectionInfo.from_dict({**SPEC_FILE, "interface": "ipc:///tmp/ipp"})
    assert conn.url("registration") == "ipc:///tmp/ipp-39219"
    for ip in ("0.0.0.0", "*"):
        here = ConnectionInfo.from_dict({**SPEC_FILE, "interface": f"tcp://{ip}", "location": socket.gethostname()})
        assert here.url() == "tcp://127.0.0.1:39219"
        nowhere = ConnectionInfo.from_dict({**SPEC_FILE, "interface": f"tcp://{ip}", "location": ""})
        assert nowhere.url() == "tcp://127.0.0.1:39219"
    local_name = ConnectionInfo.from_dict({**SPEC_FILE, "interface": "tcp://0.0.0.0", "location": "localhost"})
    assert local_name.url() == "tcp://127.0.0.1:39219"
    bad = ConnectionInfo.from_dict({**SPEC_FILE, "interface": "tcp://*", "location": "no-such-host.invalid"})
    with pytest.raises(SourceError, match="does not resolve"):
        bad.url()


def test_ssh_is_refused_with_a_hint():
    conn = ConnectionInfo.from_dict({**SPEC_FILE, "ssh": "me@cluster.example"})
    with pytest.raises(SourceError, match=r"ssh -L .*me@cluster.example"):
        conn.url()


def test_permission_warning(tmp_path):
    conn = load_connection_file(write(tmp_path / "c.json", SPEC_FILE, mode=0o644))
    (warning,) = conn.permission_warnings()
    assert "readable by others" in warning and "644" in warning


def test_make_session_matches_file():
    conn = ConnectionInfo.from_dict({**SPEC_FILE, "signature_scheme": "hmac-sha512"})
    session = conn.make_session()
    assert session.key == KEY.encode()
    assert session.signature_scheme == "hmac-sha512"
    assert session.username == "hubtop"
    bad = ConnectionInfo.from_dict({**SPEC_FILE, "pack": "no.such.packer"})
    with pytest.raises(SourceError, match="cannot build a session"):
        bad.make_session()


def test_curve_and_blank_key():
    conn = ConnectionInfo.from_dict({**SPEC_FILE, "key": "", "curve_serverkey": "!F:vJ*MXb7tTMP22oRhP6wpI!eXDF9=7R}VkxE2C"})
    assert conn.key == b""
    assert conn.curve_serverkey.startswith("!F:")
    assert "curve=yes" in repr(conn)


def test_discovery(ipython_dir):
    assert current_ipython_dir() == ipython_dir
    old = write(ipython_dir / "profile_default/security/ipcontroller-client.json", SPEC_FILE)
    other = write(ipython_dir / "profile_x/security/ipcontroller-c1-client.json", SPEC_FILE)
    newest = write(ipython_dir / "profile_y/security/ipcontroller-client.json", SPEC_FILE)
    now = time.time()
    os.utime(old, (now - 100, now - 100))
    os.utime(other, (now - 50, now - 50))
    found = discover_clusters()
    assert [(p, c, path) for p, c, path, _ in found] == [
        ("default", None, old),
        ("y", None, newest),
        ("x", "c1", other),
    ]
    assert find_connection_file() == old
    assert find_connection_file("x", cluster_id="c1") == other
    assert find_connection_file(profile_dir=ipython_dir / "profile_y") == newest
    with pytest.raises(SourceError, match="ipcontroller-c1-client.json: pass its cluster id"):
        find_connection_file("x")
    with pytest.raises(SourceError, match="no connection file"):
        find_connection_file("nope")


def test_profile_files(tmp_path):
    pdir = tmp_path / "profile_p"
    conn = write(pdir / "security" / "ipcontroller-client.json", SPEC_FILE)
    assert profile_dir_of(conn) == pdir.resolve()
    assert find_tasks_db(pdir) is None
    (pdir / "tasks.db").write_bytes(b"")
    assert find_tasks_db(pdir) == pdir / "tasks.db"
    assert find_engines_json(pdir) == {}
    write(pdir / "log" / "engines.json", {"engines": {"0": "u0", "2": "u2"}, "next_id": 3})
    write(pdir / "log" / "enginest1.json", {"engines": {"5": "u5"}, "next_id": 6})
    assert find_engines_json(pdir) == {"u0": 0, "u2": 2}
    assert find_engines_json(pdir, "t1") == {"u5": 5}
    write(pdir / "log" / "engines.json", "garbage")
    assert find_engines_json(pdir) == {}
