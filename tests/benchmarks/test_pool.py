"""benchmarks.pool: the rounds of several benchmark runs pooled into one figure with a bootstrap interval."""

from __future__ import annotations

import json
import random
from pathlib import Path
from statistics import median

import pytest

from benchmarks import pool


def gentle(on: list[float], burn: list[float] | None = None, *, cpu: float = 2.5) -> dict:
    burn = burn if burn is not None else on
    return {"paired_ratios": on, "burn_paired_ratios": burn,
            "cores_paired_ratios": {"on": [0.98] * len(on), "burn": [0.99] * len(burn)},
            "per_task_paired_ratios": {"on": [1.02] * len(on), "burn": [1.0] * len(burn)},
            "hubtop_busy_cpu_pct": [cpu] * len(on)}


def run_json(path: Path, g: dict | None, size: str = "100k") -> Path:
    hub = {"db_query_s": 30.0} if g is None else {"db_query_s": 30.0, "gentle": g}
    path.write_text(json.dumps({"started": "x", "sizes": {size: {"n": 100_000, "hub": hub}}}))
    return path


def noisy(center: float, n: int, seed: int, spread: float = 0.12) -> list[float]:
    rnd = random.Random(seed)
    return [rnd.gauss(center, spread) for _ in range(n)]


def test_the_interval_holds_the_median_and_narrows_as_rounds_pool() -> None:
    one = noisy(0.98, 50, seed=1)
    nine = one + [r for run in range(2, 10) for r in noisy(0.98, 50, seed=run)]  # nine runs: ~1/3 the width
    lo1, hi1 = pool.median_interval(one)
    lo9, hi9 = pool.median_interval(nine)
    assert lo1 <= median(one) <= hi1 and lo9 <= median(nine) <= hi9
    assert hi9 - lo9 < 0.7 * (hi1 - lo1)
    assert pool.median_interval(one) == (lo1, hi1)  # seeded: one input, one answer


def test_runs_pool_round_by_round(tmp_path: Path) -> None:
    a = pool.load(run_json(tmp_path / "a.json", gentle([0.9, 1.0, 1.1])))
    b = pool.load(run_json(tmp_path / "b.json", gentle([0.95, 0.97])))
    pooled = pool.pool([a, b])
    assert pooled["throughput, hubtop on / off"] == [0.9, 1.0, 1.1, 0.95, 0.97]
    assert len(pooled["the cluster's CPU per finished task, on / off"]) == 5


def test_a_run_from_before_a_figure_adds_no_rounds_to_it(tmp_path: Path) -> None:
    old = gentle([1.0, 0.96])
    del old["cores_paired_ratios"], old["per_task_paired_ratios"]
    pooled = pool.pool([old, gentle([0.97])])
    assert len(pooled["throughput, hubtop on / off"]) == 3
    assert len(pooled["the cores the cluster used, on / off"]) == 1


@pytest.mark.parametrize(("center", "expected"), [
    (1.02, "met: the interval lies above 97 %"),
    (0.92, "missed: the interval lies below 97 %"),
    (0.97, "not told apart from 97 %"),
])
def test_the_verdict_on_target_6_follows_the_interval(center: float, expected: str) -> None:
    text = pool.table([gentle(noisy(center, 400, seed=7, spread=0.05))])
    assert f"target 6 (throughput on / off >= 97 %): {expected}" in text


def test_the_cli_prints_the_pooled_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(run_json(tmp_path / f"{i}.json", gentle(noisy(0.97, 40, seed=i)))) for i in range(2)]
    assert pool.main(files) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 runs pooled")
    row = next(line for line in out.splitlines() if line.startswith("| throughput, hubtop on / off |"))
    assert row.split("|")[2].strip() == "80"


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read it"),
    ("not json {", "not a JSON file"),
    (json.dumps([1, 2]), 'no "sizes"'),
    ("gentle-less", "no gentleness figures"),
])
def test_bad_input_is_one_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         content: str | None, message: str) -> None:
    path = tmp_path / "run.json"
    if content == "gentle-less":
        run_json(path, None)
    elif content is not None:
        path.write_text(content)
    assert pool.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("benchmarks.pool: ") and message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_a_size_is_chosen_when_a_run_has_several(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"sizes": {"2k": {"hub": {"gentle": gentle([1.0])}},
                                          "100k": {"hub": {"gentle": gentle([0.9, 0.95])}}}}))
    assert pool.main([str(path)]) == 2
    assert "--size" in capsys.readouterr().err
    assert pool.main([str(path), "--size", "100k"]) == 0
    assert "| throughput, hubtop on / off | 2 |" in capsys.readouterr().out
    assert pool.main([str(path), "--size", "1M"]) == 2
    assert "this run has them for: 2k, 100k" in capsys.readouterr().err
