"""Shared fixtures: real local ipyparallel clusters (one per backend, started lazily, once per session).

Session clusters are read-only for tests: each ran `cluster_workload.run_workload` once, and tests
find the msg_ids by kind in `cluster.workload`. Tests that mutate (resubmit, purge, kill, more
tasks) use the function-scoped `fresh_cluster` factory instead.

    def test_x(cluster_sqlite):
        w = cluster_sqlite.workload            # Workload: succeeded, value_errors, ..., pending
        conn = cluster_sqlite.connection_file

    def test_y(fresh_cluster):
        cluster = fresh_cluster("sqlite", n=2, workload=True)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from datasource.cluster import LocalCluster, unique_mongo_database

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import cluster_workload` from any test dir

import cluster_workload  # noqa: E402

ENGINES = 2
ENGINE_ENV = cluster_workload.ENGINE_ENV


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """A real MongoDB wire server (SecantusDB, in memory) for the whole session."""
    from secantus import SecantusDBServer

    with SecantusDBServer(storage_path=":memory:") as server:
        yield server.uri


def _start(tmp_root: Path, backend: str, n: int, workload: bool, **kwargs) -> LocalCluster:
    kwargs.setdefault("env", ENGINE_ENV)
    cluster = LocalCluster(n=n, backend=backend, ipython_dir=tmp_root / "ipython", **kwargs)
    try:
        cluster.start(timeout=90)
        cluster.workload = cluster_workload.run_workload(cluster.connection_file) if workload else None
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _session_cluster(tmp_path_factory, backend: str, **kwargs) -> Iterator[LocalCluster]:
    cluster = _start(tmp_path_factory.mktemp(f"cluster-{backend}"), backend, ENGINES, True, **kwargs)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def cluster_sqlite(tmp_path_factory) -> Iterator[LocalCluster]:
    yield from _session_cluster(tmp_path_factory, "sqlite")


@pytest.fixture(scope="session")
def cluster_dictdb(tmp_path_factory) -> Iterator[LocalCluster]:
    yield from _session_cluster(tmp_path_factory, "dictdb")


@pytest.fixture(scope="session")
def cluster_nodb(tmp_path_factory) -> Iterator[LocalCluster]:
    yield from _session_cluster(tmp_path_factory, "nodb")


@pytest.fixture(scope="session")
def cluster_mongodb(tmp_path_factory, mongo_uri) -> Iterator[LocalCluster]:
    yield from _session_cluster(tmp_path_factory, "mongodb", mongo_uri=mongo_uri, mongo_database="ipython-tasks")


@pytest.fixture
def fresh_cluster(tmp_path, request) -> Iterator[Callable[..., LocalCluster]]:
    """Factory: `fresh_cluster(backend="sqlite", n=2, workload=False, **LocalCluster kwargs)`.

    Every cluster it starts is stopped at the end of the test. `backend="mongodb"` uses the session
    Mongo server with a database of its own (`cluster.mongo_database`).
    """
    started: list[LocalCluster] = []

    def make(backend: str = "sqlite", n: int = ENGINES, workload: bool = False, **kwargs) -> LocalCluster:
        if backend == "mongodb":
            kwargs.setdefault("mongo_uri", request.getfixturevalue("mongo_uri"))
            kwargs.setdefault("mongo_database", unique_mongo_database())
        root = tmp_path / f"fresh-{len(started)}"
        cluster = _start(root, backend, n, workload, **kwargs)
        started.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in started:
            cluster.stop()


@pytest.fixture
def ipython_dir(tmp_path, monkeypatch) -> Path:
    """An empty IPYTHONDIR for discovery tests."""
    path = tmp_path / "ipython"
    path.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(path))
    return path


def pytest_collection_modifyitems(config, items):
    # Cluster tests can be skipped as a group: pytest -m "not cluster".
    if os.environ.get("HUBTOP_SKIP_CLUSTER"):
        skip = pytest.mark.skip(reason="HUBTOP_SKIP_CLUSTER is set")
        for item in items:
            if "cluster" in item.keywords:
                item.add_marker(skip)
