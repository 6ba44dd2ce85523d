"""The benchmark still runs end to end (N=2000, a real Hub): a well-formed table and JSON. No timing asserts."""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ROWS = (
    "floor: sqlite3 CLI, tasks by state",
    "Client.db_query, light fields (Hub)",
    "same db_request, no client parsing",
    "hubtop tasks.db: counts + first page painted",
    "poll with 100 changes: hubtop work per poll",
    "keystroke -> repaint: all kinds",
    "resident memory (after load / peak)",
    "HubSource first full load (--no-direct): every task, its state",
    "slowest single Hub request",
    "throughput of trivial tasks, hubtop on",
    "hubtop's CPU while the cluster is busy",
    "throughput, a CPU burner using that much instead",
    "the cores the cluster used while busy",
    "the cluster's CPU per finished task",
    "queue_request latency, hubtop on-busy",
)


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_runner_produces_a_well_formed_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "-n", "2000", "--quick", "--cache", str(tmp_path / "cache"),
         "--json", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=560,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["what", "N", "value", "ratios", "target"]
    assert set(lines[1]) <= {"|", "-"}
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert all(len(row) == 5 and row[1] == "2k" and row[2] for row in cells)
    whats = [row[0] for row in cells]
    for row in ROWS:
        assert row in whats, f"missing row {row!r}"
    targets = [row[4] for row in cells if row[4]]
    assert targets and all(t.endswith((" OK", " MISSED")) for t in targets)

    data = json.loads(out.read_text())
    size = data["sizes"]["2k"]
    assert size["expected"]["all"] == 2000
    app = size["app"]
    assert app["tasks"] >= 2000 and app["source_kind"] == "sqlite"
    for key in ("first_paint_s", "loaded_s", "idle_cpu_pct", "poll_work_ms", "rss_mb"):
        assert math.isfinite(app[key]) and app[key] >= 0, key
    assert app["keys"]["all"]["n"] > 0
    assert len(app["keys"]["trace"]) == app["keys"]["all"]["n"]  # every key, with its view, for tracing
    hub = size["hub"]
    assert hub["db_query_s"] > 0 and hub["db_request_raw_s"] > 0
    assert hub["hub_source"]["tasks"] == 2000 and hub["hub_source"]["ok"]
    assert "(direct)" in hub["which"]["direct"] and hub["which"]["no_direct"].startswith("HubSource")
    gentle = hub["gentle"]
    assert gentle["throughput_off"] > 0 and gentle["throughput_on"] > 0
    assert gentle["latency"]["on-busy"]["n"] > 0
    assert gentle["throughput_burn"] > 0 and len(gentle["burn_paired_ratios"]) == 1
    # a --quick window is ~0.2 s: /proc counts CPU in 10 ms ticks, so 0 is a possible reading here
    assert all(math.isfinite(c) and c >= 0 for c in gentle["hubtop_busy_cpu_pct"] + gentle["burner_cpu_pct"])
    assert len(gentle["hubtop_busy_cpu_pct"]) == len(gentle["burner_cpu_pct"]) == 1
    # the cluster's own CPU in each busy window: its processes (the Hub at least) and the client did work
    for state in ("off", "on", "burn"):
        (cores,), (per_task,) = gentle["cluster_cores"][state], gentle["cluster_cpu_ms_per_task"][state]
        assert 0 < cores <= os.cpu_count() + 0.5 and per_task > 0, state
    assert all(r > 0 for r in gentle["cores_paired_ratios"]["on"] + gentle["per_task_paired_ratios"]["burn"])


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_the_burst_profile_runs_end_to_end(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.burst", "-n", "1000", "--bursts", "1", "--tasks", "100"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=280, env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp.iterdir())  # its cluster's profile and history went with it
    assert "101 tasks finished in 1 bursts" in proc.stdout  # the burst and the throughput call's warm-up task
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| part")}
    for part in ("store: apply", "file: new rows", "poll (whole step)", "app: main (UI) thread"):
        assert rows[part].endswith(("µs", "core)")), part
    # the store wrote every finished task at least once; the whole step holds its parts
    assert float(rows["store: apply"].split()[0]) > 0
    assert float(rows["poll (whole step)"].split()[0]) >= float(rows["store: apply"].split()[0])
