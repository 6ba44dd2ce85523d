"""The HMAC key of a connection file never leaves it: a whole session against a real cluster is grepped for it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from datasource.actions import preview
from datasource.export import export_view
from datasource.poller import Poller
from datasource.recorder import RecordingSource
from datasource.sources.base import SourceError
from datasource.sources.hub import HubSource
from datasource.sources.open import open_source
from datasource.sources.replay import ReplaySource
from datasource.store import TaskStore
from tests.reliability.helpers import copy_connection_file, poll_until
from tui.cli import main

pytestmark = pytest.mark.cluster


def _forms(key: str) -> list[str]:
    """The key as text, and the pieces of it long enough to identify it (a UUID's groups)."""
    forms = [key, key.replace("-", "")]
    forms += [part for part in key.split("-") if len(part) >= 8]
    return forms


def test_the_key_never_leaks(cluster_sqlite, tmp_path: Path, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    conn = Path(cluster_sqlite.connection_file)
    key = json.loads(conn.read_text())["key"]
    assert key and len(key) >= 16
    produced: list[str] = []  # every text the session made
    files: list[Path] = []

    # the dashboard's path: a Hub source (direct tasks.db + Hub), recorded, polled, details, an action preview
    source = open_source(conn)
    recording = tmp_path / "session.rec"
    recorded = RecordingSource(source, recording)
    store = TaskStore()
    poller = Poller(recorded, store)
    produced += [repr(poller.open()), repr(poller.step())]
    outcomes: list = []
    poll_until(poller, lambda o: store.total >= len(cluster_sqlite.workload.done_ok), timeout=20, outcomes=outcomes)
    produced += [repr(o) for o in outcomes] + [repr(poller.status)]
    produced += [repr(source), str(source.name), repr(source.capabilities()), repr(recorded.recorder)]
    w = cluster_sqlite.workload
    assert store.total >= len(w.done_ok)
    for msg_id in store.ids():
        produced.append(repr(recorded.detail(msg_id)))
    produced.append(repr(preview("purge", w.pending, store, recorded.capabilities())))
    try:
        recorded.purge(w.pending)  # refused (pending): the Hub's error message
    except SourceError as exc:
        produced.append(str(exc))
    for fmt in ("csv", "json"):
        out = tmp_path / f"export.{fmt}"
        export_view(store, path=out, fmt=fmt)
        files.append(out)
    poller.close()
    files.append(recording)
    replay = ReplaySource(recording)
    replay_store = TaskStore()
    produced.append(repr(Poller(replay, replay_store).step()))
    produced += [repr(replay.detail(m)) for m in replay_store.ids()]
    replay.close()

    # a bare Hub source and its client
    hub = HubSource(conn, timeout=2.0)
    hub.open()
    produced += [repr(hub), repr(hub.client), repr(hub.client.conn), str(hub.client.conn), repr(hub.client.session)]
    hub.close()

    # errors a user meets: wrong key (no reply), a broken connection file, a directory
    wrong = copy_connection_file(conn, tmp_path / "wrong.json", key=key[::-1])
    bad_hub = HubSource(wrong, timeout=0.5)
    bad_poller = Poller(bad_hub, TaskStore())
    produced += [repr(bad_poller.open()), repr(bad_poller.step())]
    bad_poller.close()
    broken = tmp_path / "broken.json"
    broken.write_text(conn.read_text().replace('"interface"', '"interfaze"'))
    for spec in (broken, tmp_path):
        try:
            HubSource(spec).open()
        except Exception as exc:  # noqa: BLE001 - whatever it is, its text must not hold the key
            produced += [str(exc), repr(exc)]

    # the headless CLI: snapshot, query, watch, purge dry run
    for argv in (["snapshot", str(conn), "--json"], ["snapshot", str(conn)], ["query", "", str(conn), "--format", "json"],
                 ["watch", str(conn), "--count", "1"], ["purge", "state:succeeded", str(conn)],
                 ["snapshot", str(wrong), "--timeout", "0.5"], ["snapshot", str(broken)]):
        main(argv)
        captured = capsys.readouterr()
        produced += [captured.out, captured.err]

    produced += [r.getMessage() for r in caplog.records]
    produced += [logging.Formatter().format(r) for r in caplog.records]  # with tracebacks, if any
    for path in files:
        produced.append(path.read_bytes().decode("utf-8", "replace"))

    text = "\n".join(produced)
    assert len(text) > 10_000  # the session did produce output
    for form in _forms(key):
        assert form not in text, f"the key (or part {form!r}) leaked"
    raw = recording.read_bytes()
    assert key.encode() not in raw


def test_a_connection_file_readable_by_others_gets_a_warning(cluster_sqlite, tmp_path: Path) -> None:
    conn = Path(cluster_sqlite.connection_file)
    key = json.loads(conn.read_text())["key"]
    shared = tmp_path / "ipcontroller-client.json"
    shutil.copy(conn, shared)
    shared.chmod(0o644)
    source = HubSource(shared, timeout=2.0)
    poller = Poller(source, TaskStore())
    poller.open()
    out = poller.step()
    warnings = [w for w in out.status.warnings if "readable by others" in w]
    assert warnings == [f"{shared} is readable by others (mode 644): chmod 600 it"]
    assert key not in " ".join(out.status.warnings)
    poller.close()
    shared.chmod(0o600)
    private = HubSource(shared, timeout=2.0)
    p2 = Poller(private, TaskStore())
    p2.open()
    assert not [w for w in p2.step().status.warnings if "readable" in w]
    p2.close()
