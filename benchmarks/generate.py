"""Write N realistic tasks into a tasks.db with ipyparallel's own `SQLiteDB` (the benchmark's input).

    python -m benchmarks.generate tasks.db 100000 [--engines 32] [--seed 0]

The records are tests/datasource/dbfixtures.py's (shaped like the spec's real records, ANSI tracebacks
included) in the issue's mix: ~70% succeeded, 10% failed with ANSI tracebacks, 5% aborted, 10% pending,
5% resubmitted (each resubmitted original comes with its Hub-made copy, a success). Tasks are spread over
`engines` engines (uuid -> id in `log/engines.json` next to the file, as a Hub writes it).
`write_sqlite` adds the first rows with `SQLiteDB.add_record` and the rest with one `executemany` of the
same values adapted by ipyparallel's own adapters: the bytes on disk are what a Hub writes.

`fill_hub_table` appends records to the table a *running* Hub writes (committed, from outside): a Hub only
ever sees its own new table, so this is how a real Hub gets a history of N tasks.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Mapping

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.datasource import dbfixtures  # noqa: E402

__all__ = ["MIX", "HUB_MIX", "engine_uuids", "records", "generate", "fill_hub_table"]

# draws per kind; "resubmitted" draws yield two records (the failed original + its successful copy)
MIX: dict[str, int] = {"succeeded": 70, "failed": 10, "aborted": 5, "pending": 10, "resubmitted": 5}
# A Hub knows every pending task of its own table (they are in its queues): pending rows written into a
# live Hub's table from outside would be orphans no real Hub has. The Hub's history is completed tasks;
# the cluster's own in-flight tasks are its pending ones.
HUB_MIX: dict[str, int] = {"succeeded": 80, "failed": 10, "aborted": 5, "resubmitted": 5}


def engine_uuids(n: int, seed: int = 0) -> list[str]:
    rng = uuid.UUID(int=seed * 7919 + 1)
    out = []
    for i in range(n):
        h = uuid.uuid5(rng, str(i)).hex
        out.append(f"{h[:8]}-{h[8:32]}")  # the Hub's engine uuid shape
    return out


@contextlib.contextmanager
def _engines(uuids: list[str]) -> Iterator[None]:
    """dbfixtures.record() spreads tasks over its module-level ENGINES: give it ours for a while."""
    saved = dbfixtures.ENGINES
    dbfixtures.ENGINES = uuids
    try:
        yield
    finally:
        dbfixtures.ENGINES = saved


def records(n: int, *, engines: int = 32, seed: int = 0, mix: Mapping[str, int] = MIX, first: int = 0,
            client: str = dbfixtures.CLIENT) -> Iterator[dict]:
    """Exactly n raw TaskRecord dicts (the dicts a Hub hands its DB backend)."""
    uuids = engine_uuids(engines, seed)
    with _engines(uuids):
        yield from dbfixtures.make_records(n, mix, seed=seed, first=first, client=client)


def generate(path: str | Path, n: int, *, engines: int = 32, seed: int = 0, mix: Mapping[str, int] = MIX) -> str:
    """A fresh `path` holding one Hub table of n tasks; returns the table name."""
    path = Path(path)
    for p in (path, path.with_name(path.name + "-journal")):
        p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = dbfixtures.write_sqlite(path, records(n, engines=engines, seed=seed, mix=mix))
    dbfixtures.engines_json(path.parent, engine_uuids(engines, seed))
    return table


def fill_hub_table(path: str | Path, table: str, recs: Iterable[Mapping], *, batch: int = 20_000) -> int:
    """Append records to a running Hub's table, in committed batches (short write locks). Returns the count."""
    keys = dbfixtures._KEYS
    sql = f"INSERT INTO \"{table}\" VALUES ({','.join('?' * len(keys))})"
    con = sqlite3.connect(str(path), timeout=30.0)
    n = 0
    try:
        buf: list[list] = []
        for rec in recs:
            buf.append(dbfixtures._row(rec, keys))
            if len(buf) >= batch:
                con.executemany(sql, buf)
                con.commit()
                n += len(buf)
                buf = []
        if buf:
            con.executemany(sql, buf)
            con.commit()
            n += len(buf)
    finally:
        con.close()
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("n", type=int)
    p.add_argument("--engines", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t = time.perf_counter()
    table = generate(args.path, args.n, engines=args.engines, seed=args.seed)
    print(f"{args.n} tasks in {args.path} (table {table}, {args.engines} engines) in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
