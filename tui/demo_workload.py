"""The demo's workload: keeps a real cluster busy with a realistic mix of tasks, through `ipyparallel.Client`.

Run by `hubtop demo` as its own process (`python -m tui.demo_workload CONNFILE --rate R`), so the
dashboard's process never imports ipyparallel and the workload dies with its process group.

The mix: load-balanced and direct tasks of varied durations writing stdout and stderr, labels, ~10%
failures of several exception types, a few long runners, and now and then a task whose dependency
cannot finish in time (`after=` + `timeout=`: the scheduler fails it with a TaskTimeout).
Engines unpickle these functions by module name, so they live in this importable module.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time

LABELS = ("fit-model", "preprocess", "render-frame", "score", None, None)


def work(i: int, seconds: float) -> dict:
    import sys
    import time

    print(f"task {i}: working for {seconds:.2f} s")
    if i % 3 == 0:
        print(f"task {i}: progress note on stderr", file=sys.stderr)
    time.sleep(seconds)
    print(f"task {i}: done")
    return {"i": i, "seconds": seconds}


def fail(i: int, kind: str, seconds: float) -> None:
    import time

    time.sleep(seconds)
    print(f"task {i}: about to fail with {kind}")
    if kind == "ValueError":
        raise ValueError(f"bad parameter alpha={i % 17 - 8}")
    if kind == "KeyError":
        raise KeyError(f"column_{i % 5}")
    if kind == "ZeroDivisionError":
        return i / 0
    if kind == "FileNotFoundError":
        raise FileNotFoundError(2, "No such file or directory", f"/data/shard-{i % 9}.parquet")
    if kind == "MemoryError":
        raise MemoryError(f"cannot allocate {100 + i % 400} MiB for the batch")
    raise RuntimeError(f"solver diverged after {i % 50 + 1} iterations")


FAILURES = ("ValueError", "KeyError", "ZeroDivisionError", "FileNotFoundError", "MemoryError", "RuntimeError")


def long_runner(i: int, seconds: float) -> str:
    import time

    for step in range(int(seconds)):
        print(f"long task {i}: step {step + 1}/{int(seconds)}", flush=True)
        time.sleep(1)
    return "finished"


class Workload:
    def __init__(self, connection_file: str, rate: float, seed: int | None = None):
        import ipyparallel as ipp

        self.rc = ipp.Client(connection_file, timeout=30)
        self.rate = rate
        self.rng = random.Random(seed)
        self.i = 0
        self.outstanding: list = []
        self.stopping = False

    def submit_one(self) -> None:
        rng, i = self.rng, self.i
        self.i += 1
        lview = self.rc.load_balanced_view()
        label = rng.choice(LABELS)
        roll = rng.random()
        ids = self.rc.ids
        if roll < 0.10:  # a failure
            ar = self._lb(lview, label, fail, i, rng.choice(FAILURES), rng.uniform(0.05, 1.5))
        elif roll < 0.12:  # a long runner
            ar = self._lb(lview, "long-job", long_runner, i, rng.uniform(20, 60))
        elif roll < 0.13 and self.outstanding:  # a dependency that cannot finish in time
            slow = self._lb(lview, "long-job", long_runner, i, 30.0)
            with lview.temp_flags(after=[slow], timeout=2.0, label="waits-on-long-job"):
                ar = lview.apply_async(work, i, 0.1)
            self.outstanding.append(slow)
        elif roll < 0.28 and ids:  # a direct (mux) task on one engine
            view = self.rc[rng.choice(ids)]
            if label:
                view.set_flags(label=label)
            ar = view.apply_async(work, i, rng.uniform(0.05, 3.0))
        else:
            ar = self._lb(lview, label, work, i, rng.expovariate(1 / 1.5))
        self.outstanding.append(ar)

    def _lb(self, lview, label, fn, *args):
        if label:
            with lview.temp_flags(label=label):
                return lview.apply_async(fn, *args)
        return lview.apply_async(fn, *args)

    def run(self, burst: int = 24, duration: float | None = None) -> None:
        start = time.monotonic()
        for _ in range(burst):
            self.submit_one()
        while not self.stopping and (duration is None or time.monotonic() - start < duration):
            self.outstanding = [ar for ar in self.outstanding if not ar.ready()]
            # keep the backlog bounded: the dashboard should show queued tasks, not an ever-growing pile
            if len(self.outstanding) < max(8, 6 * len(self.rc.ids)):
                self.submit_one()
            time.sleep(self.rng.expovariate(self.rate))

    def close(self) -> None:
        try:
            self.rc.close()
        except Exception:
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tui.demo_workload")
    p.add_argument("connection_file")
    p.add_argument("--rate", type=float, default=2.0, help="tasks per second")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    workload = Workload(args.connection_file, args.rate, args.seed)

    def stop(signum, frame):
        workload.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        workload.run(duration=args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        workload.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
