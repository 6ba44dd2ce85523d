"""open_source: every SOURCE form and error, then the direct fast path against real clusters."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from datasource.sources.base import NotATaskDatabase, SourceError
from datasource.sources.hub import HubSource
from datasource.sources.open import (
    ChooseCluster,
    ReadOnlySource,
    SourceSpecError,
    describe_spec,
    open_source,
)
from datasource.sources.sqlite import SQLiteSource
from tests.datasource.dbfixtures import make_records, write_sqlite

# The connection file a 9.2 controller writes (spec §2.2), pointing at a port nothing listens on.
CONN = {
    "ssh": "",
    "interface": "tcp://127.0.0.1",
    "registration": 1,
    "control": 2,
    "mux": 3,
    "task": 4,
    "task_scheme": "leastload",
    "iopub": 5,
    "notification": 6,
    "broadcast": 7,
    "key": "6156ee6b-900ac059d3c2b2a6a588c90b",
    "curve_serverkey": None,
    "location": "vm",
    "pack": "json",
    "unpack": "json",
    "signature_scheme": "hmac-sha256",
}


def conn_file(ipython_dir: Path, profile: str = "default", cluster_id: str | None = None, **changes) -> Path:
    name = f"ipcontroller-{cluster_id}-client.json" if cluster_id else "ipcontroller-client.json"
    path = ipython_dir / f"profile_{profile}" / "security" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**CONN, **changes}))
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def tasks_db(tmp_path) -> Path:
    path = tmp_path / "tasks.db"
    write_sqlite(path, make_records(40))
    return path


# -- connection files and discovery ----------------------------------------------------------------


def test_connection_file_gives_hub_source(ipython_dir) -> None:
    path = conn_file(ipython_dir)
    source = open_source(str(path))
    assert isinstance(source, HubSource)
    source = open_source(path, direct=False)
    assert isinstance(source, HubSource)


def test_any_json_with_connection_keys_is_a_connection_file(tmp_path) -> None:
    path = tmp_path / "my-cluster.json"
    path.write_text(json.dumps(CONN))
    assert isinstance(open_source(str(path)), HubSource)


def test_json_that_is_not_a_connection_file(tmp_path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"theme": "dark"}))
    with pytest.raises(SourceSpecError, match=r"settings.json: not an ipyparallel client connection file \(missing interface"):
        open_source(str(path))
    path.write_text("{ not json")
    with pytest.raises(SourceSpecError, match="invalid JSON"):
        open_source(str(path))


def test_missing_path(tmp_path) -> None:
    with pytest.raises(SourceSpecError) as err:
        open_source(str(tmp_path / "nope.db"))
    assert str(err.value) == (
        f"{tmp_path / 'nope.db'}: no such file or directory; pass a connection file or a tasks.db path, "
        "--profile NAME, or try `hubtop demo`"
    )


def test_missing_path_named_like_a_profile_hints(ipython_dir, monkeypatch, tmp_path) -> None:
    conn_file(ipython_dir, "work")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceSpecError, match=r"a profile of that name exists: --profile work"):
        open_source("work")


def test_plain_directory_is_refused(tmp_path) -> None:
    with pytest.raises(SourceSpecError, match="is a directory without a connection file"):
        open_source(str(tmp_path))


def test_profile_directory(ipython_dir, tmp_path, tasks_db) -> None:
    path = conn_file(ipython_dir, "x")
    assert isinstance(open_source(str(path.parent.parent)), HubSource)
    conn_file(ipython_dir, "x", cluster_id="abc")
    with pytest.raises(ChooseCluster) as err:
        open_source(str(path.parent.parent))
    assert sorted(c.label for c in err.value.clusters) == ["x", "x (cluster id abc)"]
    # A directory with a tasks.db and no connection file: the file.
    assert isinstance(open_source(str(tasks_db.parent)), SQLiteSource)


def test_unknown_file_kind(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(SourceSpecError, match="neither a connection file"):
        open_source(str(path))


def test_no_cluster_found(ipython_dir) -> None:
    with pytest.raises(SourceSpecError) as err:
        open_source()
    assert str(err.value) == (
        f"no ipyparallel cluster found under {ipython_dir}: pass a connection file or a tasks.db path, "
        "--profile NAME, or try `hubtop demo`"
    )


def test_one_cluster_found_is_opened(ipython_dir) -> None:
    path = conn_file(ipython_dir, "solo")
    source = open_source()
    assert isinstance(source, HubSource) and source._path == path


def test_several_clusters_raise_choose_cluster(ipython_dir) -> None:
    conn_file(ipython_dir, "default")
    conn_file(ipython_dir, "default", cluster_id="1700000000-ab12")
    conn_file(ipython_dir, "other")
    with pytest.raises(ChooseCluster) as err:
        open_source()
    choices = err.value.clusters
    assert len(choices) == 3 and isinstance(err.value, SourceError)
    assert choices[0].profile == "default" and choices[-1].profile == "other"
    assert {c.args for c in choices} == {"--profile default", "--profile default --cluster-id 1700000000-ab12",
                                          "--profile other"}
    assert str(err.value).startswith("3 clusters found (")
    assert str(err.value).endswith("pick one with --profile NAME [--cluster-id ID]")


def test_profile_and_cluster_id(ipython_dir) -> None:
    conn_file(ipython_dir, "default")
    path = conn_file(ipython_dir, "default", cluster_id="c1")
    assert open_source(profile="default", cluster_id="c1")._path == path
    assert open_source(cluster_id="c1")._path == path  # profile defaults to "default"
    with pytest.raises(SourceSpecError, match="no connection file .*profile_nope"):
        open_source(profile="nope")
    with pytest.raises(SourceSpecError, match="not both"):
        open_source("x.db", profile="default")


# -- SQLite files -----------------------------------------------------------------------------------


def test_tasks_db_path_and_sqlite_urls(tasks_db, monkeypatch) -> None:
    assert str(tasks_db).startswith("/")
    # sqlite:////abs (SQLAlchemy's absolute form) and sqlite:///abs read as /abs when abs is no relative file.
    for spec in (str(tasks_db), f"sqlite://{tasks_db}", f"sqlite:///{tasks_db}"):
        source = open_source(spec)
        assert isinstance(source, SQLiteSource), spec
        assert source.path == tasks_db
    monkeypatch.chdir(tasks_db.parent)
    assert open_source("sqlite:///tasks.db").path == Path("tasks.db")  # relative, SQLAlchemy style
    source = open_source(str(tasks_db))
    source.open()
    try:
        deltas = list(source.sync())
        assert sum(len(d.upserts) for d in deltas) == 40
    finally:
        source.close()


def test_sqlite_file_that_is_not_a_tasks_db(tmp_path) -> None:
    path = tmp_path / "foreign.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(NotATaskDatabase, match="holds no ipyparallel task table"):
        open_source(str(path))
    with pytest.raises(NotATaskDatabase):
        open_source(f"sqlite:///{path}")
    text = tmp_path / "fake.db"
    text.write_text("SQLite? no")
    with pytest.raises(SourceSpecError, match="neither a connection file"):
        open_source(str(text))
    with pytest.raises(NotATaskDatabase, match="not an SQLite database"):
        open_source(f"sqlite:///{text}")
    with pytest.raises(SourceSpecError, match="no such file"):
        open_source(f"sqlite:///{tmp_path / 'missing.db'}")


def test_database_paired_with_a_hub(tasks_db, ipython_dir) -> None:
    hub = conn_file(ipython_dir)
    source = open_source(str(tasks_db), hub=str(hub))
    assert isinstance(source, SQLiteSource) and source.hub is not None
    assert source.name == f"{tasks_db} + Hub tcp://127.0.0.1:1"
    caps = source.capabilities()
    assert caps.can_resubmit and caps.can_purge and caps.purge_via_hub
    source.hub.close()
    with pytest.raises(SourceSpecError, match="SOURCE is already a Hub"):
        open_source(str(hub), hub=str(hub))
    with pytest.raises(SourceSpecError, match="no such connection file"):
        open_source(str(tasks_db), hub=str(ipython_dir / "missing.json"))


def test_read_only(tasks_db, ipython_dir) -> None:
    source = open_source(str(tasks_db), hub=str(conn_file(ipython_dir)), read_only=True)
    assert isinstance(source, ReadOnlySource)
    caps = source.capabilities()
    assert caps.read_only and not caps.can_resubmit and not caps.can_purge
    assert caps.purge_reason == "read-only mode"
    assert source.name.endswith("(read-only)") and source.path == tasks_db
    with pytest.raises(SourceError, match="read-only mode"):
        source.purge(["x"])
    with pytest.raises(SourceSpecError, match="contradict"):
        open_source(str(tasks_db), read_only=True, allow_writes=True)


# -- MongoDB URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("mongodb://", "bad MongoDB URL mongodb://: "),
        ("mongodb://host:notaport/db", "bad MongoDB URL mongodb://host:notaport/db: "),
        ("mongodb://u:secret@host:99999", "bad MongoDB URL mongodb://u:***@host:99999: "),
        ("postgres://host/db", "unknown scheme 'postgres'"),
    ],
)
def test_bad_mongodb_url(url: str, message: str) -> None:
    with pytest.raises(SourceSpecError) as err:
        open_source(url)
    assert message in str(err.value)
    assert "secret" not in str(err.value)


def test_mongodb_url_database_and_collection() -> None:
    mongo = pytest.importorskip("datasource.sources.mongo")
    source = open_source("mongodb://127.0.0.1:1")
    assert isinstance(source, mongo.MongoSource)
    assert (source.database, source.collection) == ("ipython-tasks", "task_records")
    source = open_source("mongodb://127.0.0.1:1/mydb.runs")
    assert (source.database, source.collection) == ("mydb", "runs")


def test_describe_spec(tasks_db) -> None:
    assert describe_spec("mongodb://h:1/db") == "MongoDB mongodb://h:1/db"
    assert describe_spec(str(tasks_db)) == f"SQLite file {tasks_db}"
    assert describe_spec(profile="p", cluster_id="c") == "the Hub of profile p, cluster id c"


# -- the direct fast path, against real clusters ------------------------------------------------------


def _poll_until(poller, store, ids, timeout: float = 10.0) -> None:
    """Poll until every id is in the store in a final state (the Hub commits tasks.db every 2 s)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        out = poller.step()
        assert out.status.state == "connected", out.status.message
        recs = store.get_many(ids)
        if len(recs) == len(ids) and all(r.state.is_done for r in recs):
            return
        assert time.monotonic() < deadline, f"{len(recs)} of {len(ids)} tasks after {timeout} s"
        time.sleep(0.3)


def _close(source) -> None:
    source.close()
    hub = getattr(source, "hub", None)
    if hub is not None:
        hub.close()


@pytest.mark.cluster
def test_direct_path_for_a_local_sqlite_hub(cluster_sqlite) -> None:
    from datasource.model import State
    from datasource.poller import Poller
    from datasource.store import TaskStore

    w = cluster_sqlite.workload
    info = cluster_sqlite.connection_info()
    source = open_source(str(cluster_sqlite.connection_file))
    try:
        assert isinstance(source, SQLiteSource) and source.path == cluster_sqlite.tasks_db
        assert source.name.endswith(f"tasks.db (direct) + Hub {info.url('registration')}")
        caps = source.capabilities()
        assert caps.kind == "sqlite" and caps.has_engines and caps.can_resubmit and caps.purge_via_hub
        store = TaskStore()
        poller = Poller(source, store)
        assert poller.open().status.state == "loading"
        _poll_until(poller, store, [m for m in w.all if m not in w.pending])
        assert store.get(w.value_errors[0]).state is State.FAILED
        assert store.get(w.value_errors[0]).ename == "ValueError"
        assert store.get(w.pending[0]).state.is_pending
        assert [e.alive for e in store.engines()] == [True, True]
    finally:
        _close(source)


@pytest.mark.cluster
def test_no_direct_path_when_turned_off(cluster_sqlite) -> None:
    source = open_source(str(cluster_sqlite.connection_file), direct=False)
    assert isinstance(source, HubSource)


@pytest.mark.cluster
def test_no_direct_path_for_dictdb_even_with_a_tasks_db(fresh_cluster) -> None:
    cluster = fresh_cluster("dictdb", n=1)
    # A tasks.db left in the profile by an earlier SQLite Hub must not be taken for this Hub's database.
    write_sqlite(cluster.profile_dir / "tasks.db", make_records(10))
    source = open_source(str(cluster.connection_file))
    assert isinstance(source, HubSource)


@pytest.mark.cluster
def test_no_direct_path_for_a_stale_tasks_db(fresh_cluster) -> None:
    # This Hub writes its SQLite file elsewhere; the profile's tasks.db is an old one.
    cluster = fresh_cluster("sqlite", n=1, controller_args=["--SQLiteDB.filename=elsewhere.db"])
    write_sqlite(cluster.profile_dir / "tasks.db", make_records(10))
    import cluster_workload

    cluster_workload.run_more(cluster.connection_file, 2)
    source = open_source(str(cluster.connection_file))
    assert isinstance(source, HubSource)
    assert isinstance(open_source(str(cluster.profile_dir / "elsewhere.db")), SQLiteSource)


def test_direct_path_not_taken_when_the_hub_is_down(tmp_path, tasks_db) -> None:
    # A local connection file whose Hub does not answer, next to a tasks.db: the Hub path (which retries).
    profile = tmp_path / "profile_gone"
    (profile / "security").mkdir(parents=True)
    path = profile / "security" / "ipcontroller-client.json"
    path.write_text(json.dumps(CONN))
    (profile / "tasks.db").write_bytes(tasks_db.read_bytes())
    import time

    start = time.monotonic()
    source = open_source(str(path), timeout=5.0)
    assert isinstance(source, HubSource)
    assert time.monotonic() - start < 3.0  # the probe is bounded by PROBE_TIMEOUT, not the full timeout


@pytest.mark.cluster
def test_direct_path_follows_a_hub_restart(fresh_cluster) -> None:
    """The Hub restarts on new ports (a new connection file): the direct source's Hub client follows it."""
    from datasource.poller import Poller
    from datasource.store import TaskStore

    cluster = fresh_cluster("sqlite", n=1)
    source = open_source(str(cluster.connection_file), timeout=2.0)
    assert isinstance(source, SQLiteSource)
    old_url = source.hub.url
    store = TaskStore()
    poller = Poller(source, store)
    try:
        poller.open()
        assert poller.step().status.state == "connected"
        first = {e.uuid for e in store.engines() if e.alive}
        live = cluster.restart_controller()
        out = poller.step()
        assert out.status.state == "connected", out.status.message
        assert not any("did not answer" in w for w in out.warnings), out.warnings
        assert source.hub.url != old_url and source.hub.url == cluster.connection_info().url("registration")
        alive = {e.uuid for e in store.engines() if e.alive}
        assert alive == set(live.values()) and not alive & first
    finally:
        _close(source)


@pytest.mark.cluster
def test_mongodb_url_paired_with_its_hub(cluster_mongodb, mongo_uri) -> None:
    from datasource.model import State
    from datasource.poller import Poller
    from datasource.sources.mongo import MongoSource
    from datasource.store import TaskStore

    w = cluster_mongodb.workload
    url = mongo_uri.rstrip("/") + "/" + cluster_mongodb.mongo_database
    source = open_source(url, hub=str(cluster_mongodb.connection_file))
    try:
        assert isinstance(source, MongoSource) and source.database == cluster_mongodb.mongo_database
        assert source.name.endswith(f" + Hub {cluster_mongodb.connection_info().url('registration')}")
        caps = source.capabilities()
        assert caps.can_resubmit and caps.has_engines
        store = TaskStore()
        poller = Poller(source, store)
        poller.open()
        _poll_until(poller, store, [m for m in w.all if m not in w.pending])
        assert store.get(w.zero_divisions[0]).state is State.FAILED
        assert store.get(w.zero_divisions[0]).ename == "ZeroDivisionError"
        assert [e.alive for e in store.engines()] == [True, True]
    finally:
        _close(source)
    # The Mongo Hub's own connection file: the Hub path (the direct path is for SQLite only).
    assert isinstance(open_source(str(cluster_mongodb.connection_file)), HubSource)
