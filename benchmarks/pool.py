"""The gentleness figures of one or more runs of `benchmarks.run --json`, pooled, with bootstrap intervals.

    python -m benchmarks.pool run1.json [run2.json ...] [--size 100k]

Each round of the gentleness figure is self-contained: hubtop off, on and the burner, a few seconds apart, so
the rounds of several runs of the same code are one sample. One run of 40-50 rounds leaves a 95 % interval of
about ±4 % around the on/off throughput on a shared 2-core machine (its speed moves ~10 % from window to window,
see docs/performance.md), wider than target 6's 3 %: pooling runs is how a figure near 97 % gets told apart
from it. The table gives, for each paired figure, the median of the rounds' ratios with its bootstrap 95 %
interval (the median of 4,000 resamples of the rounds, with replacement; seeded, so one input prints one
table), the mean, and the number of rounds. It asserts nothing and measures nothing itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, median
from typing import Any, Callable, Sequence

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from benchmarks.run import TARGETS, median_interval  # noqa: E402

TARGET = TARGETS["throughput_ratio"]  # target 6: throughput with hubtop attached >= 97 % of without

# (label, the per-round ratios of one run's gentleness figures); the first is target 6
FIGURES: tuple[tuple[str, Callable[[dict], list[float]]], ...] = (
    ("throughput, hubtop on / off", lambda g: g["paired_ratios"]),
    ("throughput, a burner with hubtop's CPU / off", lambda g: g["burn_paired_ratios"]),
    ("the cores the cluster used, on / off", lambda g: g["cores_paired_ratios"]["on"]),
    ("the cores the cluster used, burner / off", lambda g: g["cores_paired_ratios"]["burn"]),
    ("the cluster's CPU per finished task, on / off", lambda g: g["per_task_paired_ratios"]["on"]),
    ("the cluster's CPU per finished task, burner / off", lambda g: g["per_task_paired_ratios"]["burn"]),
)


class PoolError(Exception):
    """A file that is not a run's JSON with gentleness figures: said in one line, no traceback."""


def gentle_of(data: Any, size: str | None = None) -> dict:
    """The gentleness figures of one run's JSON: of `size` ("100k"), or of the only size that has them."""
    sizes = data.get("sizes") if isinstance(data, dict) else None
    if not isinstance(sizes, dict):
        raise PoolError("not the JSON of `python -m benchmarks.run --json` (no \"sizes\")")
    found = {label: s["hub"]["gentle"] for label, s in sizes.items()
             if isinstance(s, dict) and isinstance(s.get("hub"), dict) and isinstance(s["hub"].get("gentle"), dict)}
    if size is not None:
        if size not in found:
            raise PoolError(f"no gentleness figures for {size} (this run has them for: {', '.join(found) or 'none'})")
        return found[size]
    if len(found) != 1:
        raise PoolError("no gentleness figures (a run with --no-hub or --no-gentle?)" if not found
                        else f"gentleness figures for several sizes ({', '.join(found)}): choose one with --size")
    return next(iter(found.values()))


def load(path: Path, size: str | None = None) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise PoolError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PoolError(f"{path}: not a JSON file") from None
    try:
        return gentle_of(data, size)
    except PoolError as exc:
        raise PoolError(f"{path}: {exc}") from None


def pool(runs: Sequence[dict]) -> dict[str, list[float]]:
    """Each figure's per-round ratios over all the runs (a run from before a figure existed adds none to it)."""
    pooled: dict[str, list[float]] = {}
    for g in runs:
        for label, get in FIGURES:
            try:
                values = [float(v) for v in get(g)]
            except (KeyError, TypeError, ValueError):
                continue
            pooled.setdefault(label, []).extend(values)
    return pooled


def verdict(lo: float, hi: float, target: float = TARGET) -> str:
    """Target 6 from an interval: told apart from the target only when the interval lies on one side of it."""
    if lo >= target:
        return f"met: the interval lies above {100 * target:g} %"
    if hi < target:
        return f"missed: the interval lies below {100 * target:g} %"
    return f"not told apart from {100 * target:g} %: the interval reaches both sides"


def table(runs: Sequence[dict]) -> str:
    pooled = pool(runs)
    cpu = [float(c) for g in runs for c in g.get("hubtop_busy_cpu_pct", [])]
    lines = ["| figure | rounds | median | 95 % interval | mean |", "| --- | --- | --- | --- | --- |"]
    first = None
    for label, _ in FIGURES:
        values = pooled.get(label)
        if not values:
            continue
        lo, hi = median_interval(values)
        if label == FIGURES[0][0]:
            first = (lo, hi)
        lines.append(f"| {label} | {len(values)} | {100 * median(values):.1f} % | {100 * lo:.1f}-{100 * hi:.1f} % "
                     f"| {100 * mean(values):.1f} % |")
    if cpu:
        lines.append(f"| hubtop's CPU while the cluster is busy (% of a core) | {len(cpu)} | {median(cpu):.1f} % | | "
                     f"{mean(cpu):.1f} % |")
    out = [f"{len(runs)} run{'s' if len(runs) != 1 else ''} pooled", "", *lines]
    if first is not None:
        out += ["", f"target 6 (throughput on / off >= {100 * TARGET:g} %): {verdict(*first)}"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pool", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="JSON files written by `python -m benchmarks.run --json`")
    p.add_argument("--size", help="the size whose figures to pool (\"100k\"), when a run has several")
    args = p.parse_args(argv)
    try:
        runs = [load(path, args.size) for path in args.runs]
    except PoolError as exc:
        print(f"benchmarks.pool: {exc}", file=sys.stderr)
        return 2
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
