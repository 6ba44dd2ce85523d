"""LocalCluster: starts a real cluster, stops every process it started (busy engines too), in bounded time."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import cluster_workload
from cluster_workload import ENGINE_ENV
from datasource.cluster import ClusterError, LocalCluster, _descendants, _proc_stat

pytestmark = pytest.mark.cluster


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[1] != "Z"  # zombies: PID 1 of a container may never reap them


def _group_members(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def test_start_and_stop_with_a_busy_engine():
    cluster = LocalCluster(n=2, backend="sqlite", env=ENGINE_ENV)
    tmp_root = cluster.ipython_dir
    with cluster:
        assert cluster.running
        assert cluster.connection_file.is_file()
        assert cluster.connection_file.name == "ipcontroller-client.json"
        assert cluster.tasks_db == cluster.profile_dir / "tasks.db" and cluster.tasks_db.is_file()
        with cluster.hub_client() as client:
            assert len(client.connection_request()) == 2
        rc = cluster_workload.connect(cluster.connection_file)
        rc.load_balanced_view().apply_async(cluster_workload._sleep, 600)
        time.sleep(1.0)
        rc.close()
        groups = [cluster.controller_pid, *cluster.engine_pids]
        # each engine has a nanny (in a session of its own); the controller ~8 children in its group
        nannies = [pid for e in cluster.engine_pids for pid, _ in _descendants(e)]
        assert len(nannies) == 2
        assert len(_group_members(cluster.controller_pid)) >= 2
        family = cluster.pids()  # what the benchmark sums the cluster's CPU over
        assert set(groups) | set(nannies) | set(_group_members(cluster.controller_pid)) <= set(family)
        assert len(family) == len(set(family))
        start = time.monotonic()
    elapsed = time.monotonic() - start
    assert elapsed < 15
    assert all(_group_members(g) == [] for g in groups)
    assert not any(_alive(pid) for pid in nannies)
    assert cluster.pids() == []
    assert not tmp_root.exists()  # the temporary IPYTHONDIR is removed


def test_cluster_id_and_kill_engine(tmp_path):
    with LocalCluster(n=2, backend="dictdb", ipython_dir=tmp_path, cluster_id="t1", profile="p") as cluster:
        assert cluster.connection_file == tmp_path / "profile_p" / "security" / "ipcontroller-t1-client.json"
        assert cluster.tasks_db is None
        nanny = [pid for pid, _ in _descendants(cluster.engine_pids[0])]
        pid = cluster.kill_engine(0)
        assert _group_members(pid) == []
        deadline = time.monotonic() + 10
        with cluster.hub_client() as client:
            while len(client.connection_request()) != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(client.connection_request()) == 1
        cluster.add_engines(1)
    assert not any(_alive(pid) for pid in nanny)
    assert tmp_path.exists()  # a given IPYTHONDIR is kept


def test_bad_arguments_and_failed_start(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        LocalCluster(backend="redis")
    with pytest.raises(ValueError, match="needs mongo_uri"):
        LocalCluster(backend="mongodb")
    cluster = LocalCluster(n=1, ipython_dir=tmp_path, controller_args=["--no-such-flag-xyz"])
    start = time.monotonic()
    with pytest.raises(ClusterError) as err:
        cluster.start(timeout=30)
    assert time.monotonic() - start < 25
    assert "ipcontroller" in str(err.value) and "hubtop-controller-1.log" in str(err.value)
    assert cluster.controller.poll() is not None


def test_kill_and_restart_controller(fresh_cluster):
    cluster = fresh_cluster("sqlite", n=1)
    old = cluster.connection_file.read_text()
    cluster.kill_controller()
    assert not cluster.running
    assert cluster.connection_file.read_text() == old  # left behind, stale, as after a crash
    engines = cluster.restart_controller()
    assert len(engines) == 1 and cluster.running
    assert cluster.connection_file.read_text() != old
    assert os.path.exists(cluster.log_dir / "hubtop-controller-2.log")
