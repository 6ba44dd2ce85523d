"""HubClient against real Hubs (shared session clusters; nothing here mutates them)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from datasource.connection import ConnectionInfo, load_connection_file
from datasource.hubclient import MATCH_ALL, HubClient, HubError
from datasource.model import LIGHT_KEYS
from datasource.sources.base import ActionRefused, SourceUnavailable

pytestmark = pytest.mark.cluster


def test_hubtop_never_imports_ipyparallel():
    code = (
        "import sys\n"
        "import datasource.connection, datasource.hubclient, datasource.sources.hub, datasource.cluster\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'ipyparallel')\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_connection_and_queue(cluster_sqlite):
    with cluster_sqlite.hub_client() as client:
        engines = client.connection_request()
        assert sorted(engines) == [0, 1]
        status = client.queue_status(live=engines)
        assert sorted(status.engines) == [0, 1]
        assert all(e.alive and e.uuid == engines[i] for i, e in status.engines.items())
        # the long sleep of the workload occupies one engine
        assert sum(e.tasks for e in status.engines.values()) == 1
        assert sum(e.completed for e in status.engines.values()) == len(cluster_sqlite.workload.all) - 1
        verbose = client.queue_status(verbose=True)
        assert sum(e.tasks for e in verbose.engines.values()) == 1
        assert client.last_rtt < 1.0


@pytest.mark.parametrize("backend", ["sqlite", "dictdb", "nodb", "mongodb"])
def test_backend_detection(request, backend):
    cluster = request.getfixturevalue(f"cluster_{backend}")
    with cluster.hub_client() as client:
        start = time.monotonic()
        assert client.backend == backend
        assert time.monotonic() - start < 1.0


def test_history_and_db_query(cluster_sqlite):
    w = cluster_sqlite.workload
    with cluster_sqlite.hub_client() as client:
        history = client.history()
        assert sorted(history) == sorted(w.all)
        records = client.db_query(MATCH_ALL, ["msg_id", "completed"])
        assert sorted(r["msg_id"] for r in records) == sorted(w.all)
        pending = client.db_query({"completed": {"$eq": None}}, ["msg_id"])
        assert [r["msg_id"] for r in pending] == w.pending
        both = client.db_query({"queue": {"$eq": "mux"}, "msg_id": {"$in": w.direct}}, ["msg_id", "queue"])
        assert [r["msg_id"] for r in both] == w.direct


def test_records_by_id_is_chunked(cluster_sqlite):
    """1,200 ids in one $in fails on SQLite (expression depth): the client chunks them."""
    w = cluster_sqlite.workload
    ids = [f"nope-{i}" for i in range(1200)] + w.all
    with cluster_sqlite.hub_client() as client:
        records = client.records_by_id(ids, LIGHT_KEYS)
    assert sorted(r["msg_id"] for r in records) == sorted(w.all)
    assert all("buffers" not in r and "stdout" not in r for r in records)


@pytest.mark.parametrize(
    "query, message",
    [
        ({}, "empty query"),
        ({"submitted": {"$gt": "2026-01-01T00:00:00Z"}}, r"\$gt"),
        ({"msg_id": {"$in": []}}, r"empty \$in"),
        ({"msg_id": {"$in": ["a", None]}}, r"None inside \$in"),
        ({"msg_id": {"$in": [str(i) for i in range(501)]}}, "chunk"),
        ({"queue": "mux", "msg_id": "x"}, r"explicit \$eq"),
    ],
)
def test_unsafe_queries_refused_before_sending(cluster_sqlite, query, message):
    with cluster_sqlite.hub_client() as client:
        with pytest.raises(ValueError, match=message):
            client.db_query(query, ["msg_id"])


def test_error_replies_are_one_line(cluster_sqlite):
    with cluster_sqlite.hub_client() as client:
        with pytest.raises(HubError) as err:
            client.request("bogus_request", {})
        assert err.value.ename == "KeyError"
        assert str(err.value).startswith("Hub refused bogus_request: KeyError:")
        with pytest.raises(HubError, match="Illegal testing key"):
            client.db_query({"result_content.status": {"$eq": "ok"}}, ["msg_id"])
        # the client still works after errors
        assert len(client.connection_request()) == 2


def test_stale_replies_are_dropped(cluster_sqlite):
    with cluster_sqlite.hub_client() as client:
        sock = client._socket()
        sock.send_multipart(client.session.serialize(client.session.msg("history_request", {})))
        time.sleep(0.2)  # its reply is now waiting on the socket
        engines = client.connection_request()
        assert sorted(engines) == [0, 1]


def test_purge_of_pending_is_refused_by_the_hub(cluster_sqlite):
    w = cluster_sqlite.workload
    with cluster_sqlite.hub_client() as client:
        with pytest.raises(ActionRefused) as err:
            client.purge(w.pending + w.succeeded[:1])
        assert str(err.value) == f"Hub refused purge_request: IndexError: msg pending: '{w.pending[0]}'"
        # nothing was dropped
        assert sorted(client.history()) == sorted(w.all)
        assert client.purge([]) == 0


def test_resubmit_unknown_is_refused(cluster_sqlite):
    with cluster_sqlite.hub_client() as client:
        with pytest.raises(ActionRefused, match="Hub refused resubmit_request: KeyError: .*No such msg"):
            client.resubmit(["no-such-msg-id"])


def test_result_status(cluster_sqlite):
    w = cluster_sqlite.workload
    with cluster_sqlite.hub_client() as client:
        pending, completed = client.result_status(w.pending + w.succeeded)
    assert pending == w.pending
    assert sorted(completed) == sorted(w.succeeded)


def test_nodb_refuses_history(cluster_nodb):
    with cluster_nodb.hub_client() as client:
        with pytest.raises(HubError) as err:
            client.history()
        assert err.value.ename == "NoData"
        assert len(client.connection_request()) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wrong_key_times_out_with_a_clear_message(cluster_sqlite, tmp_path):
    cfg = json.loads(cluster_sqlite.connection_file.read_text())
    secret = "0123456789abcdef-not-the-key"
    cfg["key"] = secret
    path = tmp_path / "ipcontroller-client.json"
    path.write_text(json.dumps(cfg))
    conn = load_connection_file(path)
    client = HubClient(conn, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(SourceUnavailable) as err:
        client.connection_request()
    elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 1.5
    msg = str(err.value)
    assert msg == (
        f"no reply from the Hub at tcp://127.0.0.1:{cfg['registration']} within 0.5 s: "
        "it is down or the key does not match"
    )
    assert secret not in msg and secret not in repr(client) and secret not in repr(conn)
    client.close()


def test_dead_hub_times_out_and_recovers_socket():
    cfg = {"interface": "tcp://127.0.0.1", "registration": _free_port(), "key": "k", "signature_scheme": "hmac-sha256"}
    client = HubClient(ConnectionInfo.from_dict(cfg), timeout=0.3)
    for _ in range(2):  # the socket is recreated after each timeout: the second call times out the same way
        start = time.monotonic()
        with pytest.raises(SourceUnavailable, match="it is down or the key does not match"):
            client.history()
        assert time.monotonic() - start < 1.0
    client.close()


def test_curve_hub(fresh_cluster):
    from cluster_workload import ENGINE_ENV

    cluster = fresh_cluster("sqlite", n=1, env={**ENGINE_ENV, "IPP_ENABLE_CURVE": "1"})
    conn = cluster.connection_info()
    assert conn.curve_serverkey and conn.key == b""
    with HubClient(conn, timeout=3.0) as client:
        assert len(client.connection_request()) == 1
        assert client.backend == "sqlite"
    # without the CURVE options the connection never completes: a timeout, not garbage
    plain = ConnectionInfo.from_dict({**json.loads(cluster.connection_file.read_text()), "curve_serverkey": None})
    with HubClient(plain, timeout=0.5) as client:
        with pytest.raises(SourceUnavailable):
            client.connection_request()


def test_iopub_reads_signed_status_messages_only() -> None:
    """The relay's frames as an engine sends them (topic, delimiter, signature, four parts): a status
    moves the running set; output, a bad signature and garbage do not, and are not fully parsed."""
    import uuid

    from jupyter_client.session import Session

    from datasource.hubclient import IOPubListener

    key = uuid.uuid4().hex.encode()
    engine = Session(key=key, username="engine")
    listener = IOPubListener.__new__(IOPubListener)  # no socket: _status() is what drain() runs per message
    listener.session = Session(key=key, username="hubtop")
    parent = engine.msg_header("apply_request")

    def frames(msg_type: str, content: dict, topic: bytes | None, session: Session = engine) -> list[bytes]:
        msg = session.msg(msg_type, content, parent=parent)
        return session.serialize(msg, ident=topic)

    busy = frames("status", {"execution_state": "busy"}, b"engine.3.status")
    assert listener._status(busy) == (parent["msg_id"], "busy")
    assert listener._status(frames("status", {"execution_state": "idle"}, None)) == (parent["msg_id"], "idle")
    assert listener._status(frames("stream", {"name": "stdout", "text": "x"}, b"engine.3.stdout")) == (None, None)
    assert listener._status(frames("stream", {"name": "stdout", "text": "x"}, None)) == (None, None)
    forged = frames("status", {"execution_state": "busy"}, b"engine.3.status", Session(key=b"wrong", username="x"))
    assert listener._status(forged) == (None, None)
    tampered = list(busy)
    tampered[-1] = b'{"execution_state": "idle"}'
    assert listener._status(tampered) == (None, None)


def test_iopub_is_not_followed_while_the_cluster_finishes_tasks_fast() -> None:
    """`pace` from the Hub's completed counts: above FOLLOW_MAX_RATE tasks/s the subscription is dropped and the
    publisher (a real PUB, as the relay) stops sending; below FOLLOW_AGAIN_RATE it is followed again."""
    import uuid

    import zmq
    from jupyter_client.session import Session

    from datasource.hubclient import FOLLOW_AGAIN_RATE, FOLLOW_MAX_RATE, NOTE_SECONDS, IOPubListener

    key = uuid.uuid4().hex
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    conn = ConnectionInfo(interface="tcp://127.0.0.1", ports={"iopub": port}, key=key.encode())
    engine = Session(key=key.encode(), username="engine")
    listener = IOPubListener(conn, context=ctx)

    def publish(state: str) -> str:
        parent = engine.msg_header("apply_request")
        engine.send(pub, "status", {"execution_state": state}, parent=parent, ident=b"engine.0.status")
        return parent["msg_id"]

    def seen_busy(what: str) -> None:
        """Publish busy until one arrives (a subscription reaches the publisher after a while)."""
        deadline = time.monotonic() + 10
        while not listener.drain():
            assert time.monotonic() < deadline, what
            publish("busy")
            time.sleep(0.02)

    try:
        seen_busy("never subscribed")
        assert listener.pace(1_000, 100.0) is False  # the first count: no rate yet
        assert listener.pace(1_000 + int(FOLLOW_MAX_RATE), 101.0) is False  # at the limit: still following
        assert listener.rate == FOLLOW_MAX_RATE and not listener.paused and listener.note() == ""

        assert listener.pace(1_000 + 3 * int(FOLLOW_MAX_RATE), 102.0) is True  # 400 tasks/s
        assert listener.paused and listener.running == set() and listener.drain() == set()
        assert listener.note() == f"{2 * FOLLOW_MAX_RATE:,.0f} tasks/s: running shown as queued"
        paused_at = 1_000 + 3 * int(FOLLOW_MAX_RATE)
        assert listener.pace(paused_at + 500, 103.0) is False and listener.rate == 500  # still paused ...
        assert listener.note().startswith(f"{2 * FOLLOW_MAX_RATE:,.0f} tasks/s")  # ... the note holds its rate
        assert listener.pace(paused_at + 500 + 5_000, 102.0 + NOTE_SECONDS) is False
        assert listener.note().startswith(f"{5_000 / (NOTE_SECONDS - 1):,.0f} tasks/s")  # NOTE_SECONDS on: moves
        time.sleep(0.3)  # the unsubscription reaches the publisher
        listener.drain()
        received = listener.received
        for _ in range(200):
            publish("busy")
        time.sleep(0.3)
        assert listener.drain() == set() and listener.received == received  # the publisher sent nothing

        base, t = paused_at + 5_500, 102.0 + NOTE_SECONDS
        assert listener.pace(base + int(FOLLOW_AGAIN_RATE), t + 1) is False  # at 100/s
        assert listener.paused
        assert listener.pace(base + int(1.5 * FOLLOW_AGAIN_RATE), t + 2) is True  # 50/s
        assert not listener.paused and listener.note() == ""
        seen_busy("no busy after subscribing again")
        assert listener.received > received
        assert listener.pace(0, t + 3) is False and not listener.paused  # fewer than before (an engine left)
    finally:
        listener.close()
        pub.close(linger=0)
        ctx.term()


def test_a_few_engines_stop_being_followed_sooner() -> None:
    """With few engines the limit is FOLLOW_PER_ENGINE tasks/s each (their tasks last < 0.1 s: too short to be
    seen running at a 1 s poll); it never exceeds FOLLOW_MAX_RATE, and resuming scales with it."""
    from datasource.hubclient import FOLLOW_AGAIN_RATE, FOLLOW_MAX_RATE, FOLLOW_PER_ENGINE, IOPubListener, follow_limits

    assert follow_limits(None) == follow_limits(0) == (FOLLOW_MAX_RATE, FOLLOW_AGAIN_RATE)
    assert follow_limits(2) == (2 * FOLLOW_PER_ENGINE, 2 * FOLLOW_PER_ENGINE * FOLLOW_AGAIN_RATE / FOLLOW_MAX_RATE)
    assert follow_limits(1_000) == (FOLLOW_MAX_RATE, FOLLOW_AGAIN_RATE)

    import zmq

    conn = ConnectionInfo(interface="tcp://127.0.0.1", ports={"iopub": 9}, key=b"k")  # nothing publishes there
    listener = IOPubListener(conn, context=zmq.Context.instance())
    try:
        listener.pace(0, 0.0, engines=2)
        assert listener.pace(2, 0.05, engines=2) is False and not listener.paused  # 2 tasks in 50 ms: too soon
        assert listener.pace(15, 1.0, engines=2) is False  # 15/s on 2 engines: following
        assert listener.pace(40, 2.0, engines=2) is True and listener.paused  # 25/s > 20
        assert listener.pace(55, 3.0, engines=2) is False and listener.paused  # 15/s: not below 10 yet
        assert listener.pace(60, 4.0, engines=2) is True and not listener.paused  # 5/s
        assert listener.pace(85, 5.0, engines=64) is False and not listener.paused  # 25/s on 64 engines
    finally:
        listener.close()
