from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from datasource.model import State
from datasource.poller import Poller
from datasource.recorder import Recorder
from datasource.sources.base import ActionRefused, NotATaskDatabase, Source, SourceError
from datasource.sources.replay import NOT_RECORDED, READ_ONLY_REASON, ReplaySource
from datasource.store import TaskStore
from tests.fakes import FakeSource, _copy, make_record

REPO = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        self.t += 10.0
        return self.t


def state_of(store: TaskStore) -> list[tuple]:
    return sorted(
        (r.msg_id, r.state.value, r.engine_uuid, r.engine_id, r.label, r.completed, r.ename, r.evalue, r.resubmitted)
        for r in store.page(limit=1_000_000)
    )


def engines_of(store: TaskStore) -> list[tuple]:
    return [(e.uuid, e.id, e.alive) for e in store.engines()]


def fail(source: FakeSource, msg_id: str, evalue: str = "late") -> None:
    rec = _copy(source.records[msg_id])
    rec.state, rec.ename, rec.evalue = State.FAILED, "ValueError", evalue
    rec.completed = (rec.submitted or datetime.now(timezone.utc)) + timedelta(seconds=2)
    source.records[msg_id] = rec


@pytest.fixture
def recording(tmp_path: Path) -> tuple[Path, list[list[tuple]], list[list[tuple]]]:
    """A recorded session of 8 states: load, failures, purges, new tasks, a resubmit, a dead engine.

    Returns the file and the live store's state (tasks, engines) after each recorded poll."""
    path = tmp_path / "rec.db"
    source = FakeSource(300, chunk=120)
    store = TaskStore()
    recorder = Recorder(path, source, clock=Clock())
    poller = Poller(source, store, on_delta=recorder.write)
    poller.open()
    states: list[list[tuple]] = []
    engines: list[list[tuple]] = []
    ids = list(source.records)

    def poll() -> None:
        out = poller.step()
        assert out.status.state == "connected"
        states.append(state_of(store))
        engines.append(engines_of(store))

    poll()
    for i in range(3):
        fail(source, ids[i * 20])
        poll()
    for m in ids[100:110]:
        del source.records[m]
    poll()
    poller.step()  # nothing changed: not a recorded state
    for i in range(300, 320):
        r = make_record(i)
        source.records[r.msg_id] = r
    poll()
    source.resubmit([ids[2]])
    poll()
    source.engine_list[1].alive = False
    poll()
    recorder.close()
    return path, states, engines


def replayer(path: Path, **kwargs) -> tuple[ReplaySource, TaskStore, Poller]:
    source = ReplaySource(path, **kwargs)
    store = TaskStore()
    poller = Poller(source, store)
    poller.open()
    return source, store, poller


def test_is_a_read_only_source(recording) -> None:
    path, states, _ = recording
    source, _, poller = replayer(path)
    assert isinstance(source, Source)
    caps = source.capabilities()
    assert (caps.kind, caps.backend, caps.read_only, caps.has_engines) == ("replay", "sqlite", True, True)
    assert (caps.can_resubmit, caps.resubmit_reason) == (False, READ_ONLY_REASON)
    assert (caps.can_purge, caps.purge_reason) == (False, READ_ONLY_REASON)
    assert caps.warnings[0].endswith(f"(poll {len(states)} of {len(states)})")
    with pytest.raises(ActionRefused, match="read-only"):
        source.resubmit(["x"])
    with pytest.raises(ActionRefused, match="read-only"):
        source.purge(["x"])
    assert "fake source" in source.name
    poller.close()


def test_opens_at_the_last_state(recording) -> None:
    path, states, engines = recording
    source, store, poller = replayer(path)
    assert len(source.times()) == len(states) == 8
    assert source.position == 7 and source.at_end
    assert poller.step().status.state == "connected"
    assert state_of(store) == states[-1]
    assert engines_of(store) == engines[-1]
    assert poller.step().added == 0  # at the cursor: nothing more
    poller.close()


def test_every_state_backwards_then_forwards(recording) -> None:
    path, states, engines = recording
    source, store, poller = replayer(path)
    poller.step()
    for i in reversed(range(len(states))):
        assert source.seek(i) == i
        out = poller.step()
        assert out.status.state == "connected"
        assert state_of(store) == states[i], i
    for i in range(1, len(states)):
        assert source.step(+1) == i
        out = poller.step()
        assert state_of(store) == states[i], i
        assert engines_of(store) == engines[i], i
        if 1 <= i <= 3:
            assert len(out.new_failures) == 1  # replayed deltas notify as they did live
    assert source.step(+1) == len(states) - 1  # clamped
    assert source.step(-100) == 0
    poller.step()
    assert state_of(store) == states[0]
    source.seek(-1)  # a far jump forward
    poller.step()
    assert state_of(store) == states[-1]
    poller.close()


def test_rebuild_matches_replayed_deltas_after_many_polls(recording, monkeypatch) -> None:
    import datasource.sources.replay as replay

    path, states, _ = recording
    monkeypatch.setattr(replay, "_MAX_FORWARD", 0)  # every forward step rebuilds from the file
    source, store, poller = replayer(path, position=0)
    poller.step()
    for i in range(len(states)):
        source.seek(i)
        poller.step()
        assert state_of(store) == states[i], i
    poller.close()


def test_seek_by_time(recording) -> None:
    path, states, _ = recording
    source, store, poller = replayer(path)
    times = source.times()
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    assert source.seek(times[3]) == 3
    assert source.seek(times[3] + timedelta(seconds=1)) == 3
    assert source.seek(times[0] - timedelta(days=1)) == 0
    assert source.seek(times[-1].replace(tzinfo=None) + timedelta(days=1)) == len(times) - 1  # naive = UTC
    source.seek(times[4])
    poller.step()
    assert state_of(store) == states[4]
    with pytest.raises(TypeError):
        source.seek("yesterday")  # type: ignore[arg-type]
    poller.close()


def test_detail_is_what_was_recorded(recording) -> None:
    path, states, _ = recording
    source, store, poller = replayer(path)
    poller.step()
    failed = [r for r in store.page(limit=1000) if r.state is State.FAILED and r.evalue == "late"]
    d = source.detail(failed[0].msg_id)
    assert d.record == store.get(failed[0].msg_id)
    assert d.stdout == NOT_RECORDED and d.stderr == NOT_RECORDED
    assert d.traceback == ["ValueError: late", f"traceback {NOT_RECORDED}"]
    new = store.get(store.get(d.record.msg_id).resubmitted) if d.record.resubmitted else None
    resubmitted = [r for r in store.page(limit=1000) if r.resubmitted]
    assert resubmitted
    copy = source.detail(resubmitted[0].resubmitted)
    assert copy.resubmitted_from == resubmitted[0].msg_id
    # at the first state, a task failed later is still what it was then
    source.seek(0)
    assert source.detail(failed[0].msg_id).record.state is not State.FAILED
    with pytest.raises(SourceError, match="not in the recording"):
        source.detail(resubmitted[0].resubmitted)  # did not exist yet
    assert new is None or new.msg_id
    poller.close()


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    def error_of(path: Path) -> SourceError:
        with pytest.raises(SourceError) as info:
            ReplaySource(path).open()
        assert "\n" not in str(info.value)
        return info.value

    assert "no such recording file" in str(error_of(tmp_path / "missing.db"))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 1000)
    err = error_of(text)
    assert isinstance(err, NotATaskDatabase) and "is not a hubtop recording" in str(err)

    tasks_db = tmp_path / "tasks.db"
    con = sqlite3.connect(tasks_db)
    con.execute("CREATE TABLE 'ipython-tasks' (msg_id text PRIMARY KEY)")
    con.commit()
    con.close()
    err = error_of(tasks_db)
    assert isinstance(err, NotATaskDatabase) and "ipyparallel tasks.db" in str(err)

    empty = tmp_path / "empty.db"
    Recorder(empty).close()
    assert "empty recording" in str(error_of(empty))


def test_truncated_and_corrupt_files(recording, tmp_path: Path) -> None:
    path, _, _ = recording
    data = path.read_bytes()
    assert len(data) > 40_000
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(NotATaskDatabase, match="truncated or corrupt (recording|SQLite file)"):
        ReplaySource(truncated).open()
    corrupt = tmp_path / "corrupt.db"
    mangled = bytearray(data)
    for offset in range(8192, len(mangled) - 4096, 4096):  # every page but the first: garbage
        mangled[offset + 100: offset + 300] = os.urandom(200)
    corrupt.write_bytes(bytes(mangled))
    with pytest.raises(NotATaskDatabase, match="truncated or corrupt (recording|SQLite file)"):
        ReplaySource(corrupt).open()


def test_newer_format(recording) -> None:
    path, _, _ = recording
    sqlite3.connect(path, isolation_level=None).execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(SourceError, match="newer hubtop .* upgrade hubtop to replay it"):
        ReplaySource(path).open()


def test_replays_the_recording_of_a_killed_hubtop(tmp_path: Path) -> None:
    """A hubtop killed while recording (no close: the WAL is left beside the file) replays to its last poll."""
    path = tmp_path / "rec.db"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.fakes import FakeSource, make_record
        from datasource.store import TaskStore
        from datasource.poller import Poller
        from datasource.recorder import Recorder
        source = FakeSource(200)
        recorder = Recorder({str(path)!r}, source)
        poller = Poller(source, TaskStore(), on_delta=recorder.write)
        poller.step()
        for i in range(200, 230):
            r = make_record(i)
            source.records[r.msg_id] = r
        poller.step()
        recorder.flush()
        print(poller.store.total, flush=True)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout.strip() == "230"
    assert Path(f"{path}-wal").exists()
    source, store, poller = replayer(path)
    assert poller.step().status.state == "connected"
    assert store.total == 230 and len(source.times()) == 2
    poller.close()


def test_recording_spanning_two_sessions(tmp_path: Path) -> None:
    """A second hubtop run appends: its first load is a reset, so tasks of the first run are gone then."""
    path = tmp_path / "rec.db"
    for n in (30, 10):
        source = FakeSource(n)
        if n == 10:
            for r in list(source.records.values()):
                del source.records[r.msg_id]
                r = _copy(r)
                r.msg_id = "other-" + r.msg_id
                source.records[r.msg_id] = r
        recorder = Recorder(path, source, clock=Clock())
        Poller(source, TaskStore(), on_delta=recorder.write).step()
        recorder.close()
    source, store, poller = replayer(path)
    assert len(source.sessions) == 2
    poller.step()
    assert store.total == 10 and all(m.startswith("other-") for m in store.ids())
    source.seek(0)
    poller.step()
    assert store.total == 30
    poller.close()


@pytest.mark.cluster
def test_post_mortem_of_a_dictdb_hub(fresh_cluster, tmp_path: Path) -> None:
    """Record a real DictDB Hub while tasks run, kill the whole cluster (the Hub's in-memory records are
    gone for good), replay: the same tasks, states, counts and engines as the last poll."""
    import signal

    import cluster_workload

    from datasource.sources.hub import HubSource

    cluster = fresh_cluster("dictdb", n=2, workload=True)
    path = tmp_path / "post-mortem.db"
    source = HubSource(cluster.connection_file, timeout=2.0)
    store = TaskStore()
    recorder = Recorder(path, source)
    poller = Poller(source, store, on_delta=recorder.write)
    assert poller.open().status.state == "loading"
    assert poller.step().status.state == "connected"
    more = cluster_workload.run_more(cluster.connection_file, 6)
    for _ in range(50):
        poller.step()
        if all(store.get(m) is not None and store.get(m).state is State.SUCCEEDED for m in more):
            break
    assert store.get(cluster.workload.pending[0]).state.is_pending  # still running when the Hub dies
    last_tasks, last_counts, last_engines = state_of(store), store.counts(), engines_of(store)
    assert last_counts["failed"] == 3 and last_counts["all"] == len(cluster.workload.all) + 6

    cluster.kill_engine(0, signal.SIGKILL)
    cluster.kill_engine(1, signal.SIGKILL)
    cluster.kill_controller(signal.SIGKILL)
    assert poller.step().status.state == "retrying"  # the Hub is gone: nothing more to record
    poller.close()
    recorder.close()
    cluster.stop()

    replay, replay_store, replay_poller = replayer(path)
    assert replay.capabilities().backend == "dictdb"
    assert replay_poller.step().status.state == "connected"
    assert state_of(replay_store) == last_tasks
    assert replay_store.counts() == last_counts
    assert engines_of(replay_store) == last_engines
    failed = cluster.workload.value_errors[0]
    detail = replay.detail(failed)
    assert detail.record.ename == "ValueError" and detail.record.evalue == "bad value 7"
    assert detail.stdout == NOT_RECORDED
    replay.seek(0)  # the first load: the six later tasks were not there yet
    replay_poller.step()
    assert replay_store.total == len(cluster.workload.all)
    replay_poller.close()


def test_capabilities_before_open_are_the_recorded_ones(recording, tmp_path: Path) -> None:
    path, _, _ = recording
    caps = ReplaySource(path).capabilities()  # an app asks before its first poll
    assert caps.has_engines and caps.backend == "sqlite" and caps.read_only
    missing = ReplaySource(tmp_path / "nope.db")
    assert missing.capabilities().kind == "replay"  # never raises; open() says what is wrong
    with pytest.raises(SourceError, match="no such recording file"):
        missing.open()


def records_of(store: TaskStore) -> list:
    return sorted(store.page(limit=1_000_000), key=lambda r: r.msg_id)


def play_forward(path: Path) -> tuple[list, list, TaskStore]:
    """Replay a recording state by state from its first one, as `]` does.

    Returns each replayed delta's `filling` with the store's `filling` after it, the store's `filling` at each
    position, and the store at the end."""
    source, store, poller = replayer(path, position=0)
    deltas: list[tuple] = []
    poller.on_delta = lambda d: deltas.append((d.filling, store.filling))
    by_position = []
    try:
        assert poller.step().status.state == "connected"
        by_position.append(store.filling)
        while not source.at_end:
            source.step(1)
            assert poller.step().status.state == "connected"
            by_position.append(store.filling)
    finally:
        poller.close()
    return deltas, by_position, store


@pytest.mark.cluster
def test_two_phase_hub_load_replays_with_its_fill(fresh_cluster, tmp_path: Path) -> None:
    """A real SQLite Hub with thousands of tasks of history, its two-phase load recorded through
    `RecordingSource` (as `hubtop --record`): the replay's fill deltas carry the same `filling` in the same
    order, the store shows the same fill progress and ends with the same records; rebuilding or undoing to
    a state mid-fill shows that state's progress. The same file without the fill columns (a recording of an
    older hubtop) replays the fill as ordinary changes, to the same records."""
    from datasource.recorder import RecordingSource
    from datasource.sources.hub import HubSource
    from tests.datasource.test_hub_load import HISTORY, fill_history

    cluster = fresh_cluster("sqlite", workload=True)
    fill_history(cluster, HISTORY)
    path = tmp_path / "hub.hubtop"
    hub = HubSource(cluster.connection_file, live_running=False)
    store = TaskStore()
    live: list[tuple] = []  # (delta.filling, store.filling after it) of every live delta
    poller = Poller(RecordingSource(hub, path), store, on_delta=lambda d: live.append((d.filling, store.filling)))
    try:
        assert poller.open().status.state == "loading"
        hub._chunk = 50  # a small head and first fill chunks: the fill spans several polls
        assert poller.step().status.state == "connected"
        assert hub.backfill_progress is not None and store.filling is None
        deadline = time.monotonic() + 60
        polls = 0
        while hub.backfill_progress is not None:
            assert time.monotonic() < deadline, f"backfill stuck at {hub.backfill_progress}"
            time.sleep(0.3)
            assert poller.step().status.state == "connected"
            polls += 1
        poller.step()  # and then quiet
    finally:
        poller.close()  # closes the Hub source and the recorder (everything queued is written)
    live_fill = [(f, s) for f, s in live if f is not None]
    total = live_fill[-1][0][1]
    assert polls > 1 and len(live_fill) > 2 and live_fill[-1] == ((total, total), None)
    assert any(s is not None for _, s in live_fill)
    live_records = records_of(store)
    assert len(live_records) == HISTORY + len(cluster.workload.all)
    assert store.count(("submitted IS NULL", ())) == 0

    replayed, by_position, replay_store = play_forward(path)
    assert [(f, s) for f, s in replayed if f is not None] == live_fill
    assert replay_store.filling is None and records_of(replay_store) == live_records
    assert replay_store.count(("submitted IS NULL", ())) == 0

    mid = [i for i, f in enumerate(by_position) if f is not None]
    assert mid and by_position[0] is None  # the state after the first load: the fill starts with the next poll
    i = mid[len(mid) // 2]
    source, at, rebuilt = replayer(path, position=i)  # a rebuild (reset) at a state mid-fill
    try:
        rebuilt.step()
        assert at.filling == by_position[i] and at.count(("submitted IS NULL", ())) > 0
        source.seek(-1)  # forward to the end: the recorded deltas, the fill ends
        rebuilt.step()
        assert at.filling is None and records_of(at) == live_records
        for j in (i, 0):  # back a few polls: one delta undoing them, then the fill's progress then
            source.seek(j)
            rebuilt.step()
            assert at.filling == by_position[j]
    finally:
        rebuilt.close()

    old = tmp_path / "old.hubtop"
    con = sqlite3.connect(path)
    con.execute("VACUUM INTO ?", (str(old),))
    con.close()
    con = sqlite3.connect(old)
    con.execute("ALTER TABLE polls DROP COLUMN fill_done")
    con.execute("ALTER TABLE polls DROP COLUMN fill_total")
    con.commit()
    con.close()
    replayed_old, by_position_old, old_store = play_forward(old)
    assert len(replayed_old) == len(replayed) and all(f is None and s is None for f, s in replayed_old)
    assert set(by_position_old) == {None}
    assert records_of(old_store) == live_records
