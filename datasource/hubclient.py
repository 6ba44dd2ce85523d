"""The Hub's query protocol over one blocking pyzmq DEALER (spec §3-§9).

Blocking on purpose: every source runs in the poller's worker thread, and decoding a big `db_reply`
must stay off the UI loop anyway. One request at a time (a lock: the UI may fire an action while a
poll runs); every request is bounded by a timeout, after which the socket is closed and recreated so
that requests queued for a dead Hub are discarded.

Backend detection (`HubClient.backend`), one cheap probe that matches no record on any backend:
`db_request {"msg_id": {"$regex": "^$"}}` with keys ["msg_id"]:
  * ok                                   -> "mongodb" (the only backend relaying `$regex`);
  * ename NoData                         -> "nodb";
  * evalue "Unsupported operator ..."    -> "sqlite" (SQLiteDB._render_expression rejects it);
  * another KeyError ('$regex')          -> "dictdb" (DictDB's filter table has no `$regex`).
Both DictDB and SQLite fail while building the filter, before touching a record, so the probe costs
about one round trip whatever the history size.
"""

from __future__ import annotations

import hmac
import threading
import time
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping, Sequence

import zmq

from .connection import ConnectionInfo
from .model import Engine, QueueStatus, parse_time
from .sources.base import ActionRefused, SourceError, SourceUnavailable

__all__ = ["HubClient", "HubError", "IOPubListener", "CHUNK", "MATCH_ALL", "chunks", "FOLLOW_MAX_RATE",
           "FOLLOW_AGAIN_RATE", "FOLLOW_PER_ENGINE", "follow_limits"]

CHUNK = 500  # ids per $in / resubmit / purge request (SQLite fails above ~1000)
MATCH_ALL: dict = {"msg_id": {"$ne": ""}}  # `{}` is invalid SQL on the SQLite backend
# Tasks finished per second, cluster-wide, above which IOPub is not followed, and below which it is again:
# two status messages per task cost this process ~25 us each (zmq's I/O thread ~15, the drain ~11): 200
# tasks/s is ~1 % of a core, the 550/s of trivial tasks on 2 cores ~2.7 %, taken from the cluster.
FOLLOW_MAX_RATE = 200.0
FOLLOW_AGAIN_RATE = 100.0
# ... and per live engine: above 10 tasks/s an engine's tasks last < 0.1 s on average, too short for a view
# polled every second to show them running, so a small cluster stops following sooner (2 engines: 20/s; the
# IOPub it would follow in a burst's first poll interval is the cost). The resume rate scales with it.
FOLLOW_PER_ENGINE = 10.0
PACE_SECONDS = 0.5  # the shortest span a rate is measured over: one task in 50 ms is not 20 tasks/s
NOTE_SECONDS = 10.0  # the rate the standing note shows moves at most this often (a rate that moves every poll
# would repaint the status line every poll of a busy cluster)


def follow_limits(engines: int | None) -> tuple[float, float]:
    """(stop following above, follow again below) tasks/s, for a cluster of `engines` live engines."""
    stop = FOLLOW_MAX_RATE if not engines else min(FOLLOW_MAX_RATE, FOLLOW_PER_ENGINE * engines)
    return stop, stop * FOLLOW_AGAIN_RATE / FOLLOW_MAX_RATE


class HubError(SourceError):
    """The Hub answered with status "error"."""

    def __init__(self, msg_type: str, ename: str, evalue: str):
        self.msg_type = msg_type
        self.ename = ename
        self.evalue = evalue
        text = f"Hub refused {msg_type}: {ename}: {evalue}".strip()
        super().__init__(" ".join(text.split()))  # one line


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _check_query(query: Mapping[str, Any]) -> None:
    """Refuse the queries the spec lists as broken on some backend (§9)."""
    if not query:
        raise ValueError("empty query: use MATCH_ALL ({'msg_id': {'$ne': ''}}) instead of {}")
    for key, test in query.items():
        if not isinstance(test, Mapping):
            continue
        if "$gt" in test:
            raise ValueError(f"$gt on {key!r}: DictDB inverts it; use $gte and dedupe")
        for op in ("$in", "$nin"):
            if op in test:
                values = test[op]
                if not values:
                    raise ValueError(f"empty {op} on {key!r}: invalid SQL on the SQLite backend")
                if len(values) > CHUNK:
                    raise ValueError(f"{op} with {len(values)} values on {key!r}: chunk to <= {CHUNK}")
                if any(v is None for v in values):
                    raise ValueError(f"None inside {op} on {key!r}: refused by the SQLite backend")
    if len(query) > 1 and any(not isinstance(t, Mapping) for t in query.values()):
        raise ValueError("plain equality with several keys hits DictDB's closure bug: use explicit $eq")


class HubClient:
    """Blocking request/reply with the Hub's `registration` ROUTER."""

    def __init__(self, conn: ConnectionInfo, timeout: float = 5.0, context: zmq.Context | None = None):
        self.conn = conn
        self.timeout = timeout
        self.url = conn.url("registration")  # raises SourceError for ssh-tunnelled Hubs
        self.session = conn.make_session()
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._lock = threading.Lock()
        self._backend: str | None = None
        self.has_label: bool = True  # pre-9.1 Hubs have no `label` key (SQLite: "Bad record key(s)")
        self.last_rtt: float = 0.0  # seconds, last successful request
        self.last_reply_date: datetime | None = None  # the Hub's clock (reply header) at the last reply
        # (completed, in flight) summed over *every* engine id in the last queue_reply, dead ones
        # included: Hub counters that only grow/shift when something happens (activity detection).
        self.last_queue_totals: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"HubClient({self.url})"

    # -- socket --------------------------------------------------------------------------------

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            if self.conn.curve_serverkey:
                public, secret = zmq.curve_keypair()
                sock.curve_serverkey = self.conn.curve_serverkey.encode("ascii")
                sock.curve_publickey = public
                sock.curve_secretkey = secret
            sock.connect(self.url)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __enter__(self) -> "HubClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request -------------------------------------------------------------------------------

    def request(self, msg_type: str, content: dict | None = None, timeout: float | None = None) -> dict:
        """Send one request, wait for its reply; return the reply content (status ok).

        Raises SourceUnavailable on timeout, HubError when the Hub answers with an error.
        """
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            sock = self._socket()
            msg = self.session.msg(msg_type, content=content or {})
            msg_id = msg["header"]["msg_id"]
            start = time.monotonic()
            deadline = start + timeout
            try:
                sock.send_multipart(self.session.serialize(msg), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass  # not connected yet: poll below times out the same way
            reply = None
            while reply is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sock.poll(max(1, int(remaining * 1000))):
                    self._reset()
                    cause = (
                        "it is down, or it does not use CURVE or with another key (curve_serverkey)"
                        if self.conn.curve_serverkey
                        else "it is down or the key does not match"
                    )
                    raise SourceUnavailable(f"no reply from the Hub at {self.url} within {timeout:g} s: {cause}")
                frames = sock.recv_multipart()
                try:
                    _, parts = self.session.feed_identities(frames)
                    candidate = self.session.deserialize(parts, content=True)
                except Exception:
                    continue  # garbage or a bad signature: not our reply
                if candidate.get("parent_header", {}).get("msg_id") == msg_id:
                    reply = candidate
            self.last_rtt = time.monotonic() - start
            self.last_reply_date = parse_time((reply.get("header") or {}).get("date"))
        content = reply.get("content")
        if not isinstance(content, dict):
            raise SourceError(f"malformed {reply.get('msg_type')} from the Hub at {self.url}")
        if content.get("status") != "ok":
            raise HubError(msg_type, str(content.get("ename", "error")), str(content.get("evalue", "")))
        return content

    # -- typed helpers -------------------------------------------------------------------------

    def connection_request(self, timeout: float | None = None) -> dict[int, str]:
        """Live engines: {id: uuid}."""
        content = self.request("connection_request", {}, timeout)
        engines = content.get("engines") or {}
        out: dict[int, str] = {}
        for key, uuid in engines.items():
            try:
                out[int(key)] = str(uuid)
            except (TypeError, ValueError):
                continue
        return out

    def queue_status(
        self, verbose: bool = False, live: Mapping[int, str] | None = None, timeout: float | None = None
    ) -> QueueStatus:
        """In-flight counts per *live* engine (dead ones linger in queue_reply: §4.3)."""
        if live is None:
            live = self.connection_request(timeout)
        content = self.request("queue_request", {"targets": None, "verbose": verbose}, timeout)
        status = QueueStatus()
        unassigned = content.get("unassigned", 0)
        status.unassigned = len(unassigned) if isinstance(unassigned, list) else int(unassigned or 0)

        def count(v: Any) -> int:
            return len(v) if isinstance(v, list) else int(v or 0)

        completed_all = in_flight_all = 0
        for key, counts in content.items():
            if key in ("status", "unassigned") or not isinstance(counts, dict):
                continue
            completed_all += count(counts.get("completed"))
            in_flight_all += count(counts.get("queue")) + count(counts.get("tasks"))
        self.last_queue_totals = (completed_all, in_flight_all + status.unassigned)
        for eid, uuid in live.items():
            counts = content.get(str(eid)) or {}
            status.engines[eid] = Engine(
                uuid=uuid,
                id=eid,
                alive=True,
                queue=count(counts.get("queue")),
                tasks=count(counts.get("tasks")),
                completed=count(counts.get("completed")),
            )
        return status

    def history(self, timeout: float | None = None) -> list[str]:
        content = self.request("history_request", {}, timeout)
        return [str(m) for m in content.get("history") or []]

    def db_query(self, query: Mapping[str, Any], keys: Iterable[str], timeout: float | None = None) -> list[dict]:
        """Records matching `query`, only `keys` (always explicit: never the pickled buffers)."""
        keys = [k for k in keys if k not in ("buffers", "result_buffers")]
        if not self.has_label and "label" in keys:
            keys.remove("label")
        if not keys:
            raise ValueError("db_query needs explicit keys")
        _check_query(query)
        try:
            content = self.request("db_request", {"query": dict(query), "keys": keys}, timeout)
        except HubError as exc:
            # SQLite: KeyError "Bad record key(s): ['label']"; DictDB: KeyError 'label'
            if self.has_label and "label" in keys and exc.ename == "KeyError" and "label" in exc.evalue:
                self.has_label = False  # pre-9.1 schema
                return self.db_query(query, keys, timeout)
            raise
        records = content.get("records") or []
        return [r for r in records if isinstance(r, dict)]

    def records_by_id(self, msg_ids: Sequence[str], keys: Iterable[str], timeout: float | None = None) -> list[dict]:
        keys = list(keys)
        out: list[dict] = []
        for chunk in chunks([m for m in dict.fromkeys(msg_ids) if m]):
            out.extend(self.db_query({"msg_id": {"$in": chunk}}, keys, timeout))
        return out

    def result_status(self, msg_ids: Sequence[str], timeout: float | None = None) -> tuple[list[str], list[str]]:
        """(pending, completed) according to the Hub's memory first, then its DB."""
        pending: list[str] = []
        completed: list[str] = []
        for chunk in chunks(list(dict.fromkeys(msg_ids))):
            content = self.request("result_request", {"msg_ids": chunk, "status_only": True}, timeout)
            pending.extend(content.get("pending") or [])
            completed.extend(content.get("completed") or [])
        return pending, completed

    def resubmit(self, msg_ids: Sequence[str], timeout: float | None = None) -> dict[str, str]:
        """{old: new}. Raises ActionRefused with the Hub's message when it refuses a chunk."""
        mapping: dict[str, str] = {}
        for chunk in chunks(list(dict.fromkeys(m for m in msg_ids if m))):
            try:
                content = self.request("resubmit_request", {"msg_ids": chunk}, timeout)
            except HubError as exc:
                done = f" ({len(mapping)} resubmitted before)" if mapping else ""
                raise ActionRefused(f"{exc}{done}") from None
            mapping.update({str(k): str(v) for k, v in (content.get("resubmitted") or {}).items()})
        return mapping

    def purge(self, msg_ids: Sequence[str], timeout: float | None = None) -> int:
        """Drop these records (the caller removed pending ids). Returns how many ids were sent."""
        ids = list(dict.fromkeys(m for m in msg_ids if m))
        sent = 0
        for chunk in chunks(ids):
            try:
                self.request("purge_request", {"msg_ids": chunk, "engine_ids": []}, timeout)
            except HubError as exc:
                done = f" ({sent} purged before)" if sent else ""
                raise ActionRefused(f"{exc}{done}") from None
            sent += len(chunk)
        return sent

    # -- backend -------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        if self._backend is None:
            self._backend = self.detect_backend()
        return self._backend

    def detect_backend(self, timeout: float | None = None) -> str:
        """"sqlite" | "dictdb" | "mongodb" | "nodb" | "unknown" (see the module docstring)."""
        try:
            self.request("db_request", {"query": {"msg_id": {"$regex": "^$"}}, "keys": ["msg_id"]}, timeout)
            return "mongodb"
        except HubError as exc:
            if exc.ename == "NoData":
                return "nodb"
            if "Unsupported operator" in exc.evalue:
                return "sqlite"
            if exc.ename == "KeyError" and "$regex" in exc.evalue:
                return "dictdb"
            return "unknown"


class IOPubListener:
    """SUB on the Hub's `iopub` relay: which tasks are running right now (status busy/idle, §4.12).

    Drained without blocking at each sync. A fresh subscriber misses what happened before it
    connected (slow joiner), so tasks already running then are only known as pending. Subscribing
    receives every engine's output too: at most `max_messages` are read per drain, and the socket's
    receive high-water mark drops the excess instead of growing memory.

    Paced by the cluster (`pace`, given the Hub's completed count and live engines each poll): while it
    finishes more tasks a second than `follow_limits` allows (FOLLOW_MAX_RATE, less for a few engines) the
    subscription is dropped (the connection kept, the relay then sends nothing) and no task is known
    running; below half that it is followed again, from then on.
    Such tasks last milliseconds: a 1 s view cannot show them running anyway, and following them would
    take the CPU from the cluster.
    """

    def __init__(self, conn: ConnectionInfo, context: zmq.Context | None = None, session=None):
        self.url = conn.url("iopub")
        self.session = session or conn.make_session()
        ctx = context or zmq.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 10_000
        if conn.curve_serverkey:
            public, secret = zmq.curve_keypair()
            sock.curve_serverkey = conn.curve_serverkey.encode("ascii")
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.url)
        self._sock: zmq.Socket | None = sock
        self.running: set[str] = set()  # msg_ids seen busy and not yet idle
        self.received = 0
        self.paused = False  # not following: the cluster finishes tasks too fast (see pace)
        self.rate: float | None = None  # tasks finished per second at the last pace(), once known
        self._paced: tuple[float, int] | None = None  # (monotonic time, completed) at the last pace()
        self._noted: tuple[float, float] | None = None  # (monotonic time, rate) the note shows

    def pace(self, completed: int, now: float, engines: int | None = None) -> bool:
        """Follow IOPub or not, from the Hub's count of finished tasks (summed over its `engines` live
        engines) at monotonic `now` (see the class docstring). True when it stopped or started following:
        `running` was emptied."""
        last = self._paced
        if last is not None and completed >= last[1] and now - last[0] < PACE_SECONDS:
            return False  # too soon after the last count to tell a rate (a load's last poll, then the first)
        self._paced = (now, completed)
        if last is None or completed < last[1]:  # first call, or an engine left the sum
            return False
        self.rate = (completed - last[1]) / (now - last[0])
        stop, resume = follow_limits(engines)
        switch = self.rate < resume if self.paused else self.rate > stop
        if switch or self._noted is None or now - self._noted[0] >= NOTE_SECONDS:
            self._noted = (now, self.rate)
        if self._sock is None or not switch:
            return False
        self.paused = not self.paused
        self._sock.setsockopt(zmq.SUBSCRIBE if not self.paused else zmq.UNSUBSCRIBE, b"")
        self.running = set()
        return True

    def note(self) -> str:
        """The standing note while not following ("" otherwise): short, the status line is cut on the right."""
        if not self.paused or self._noted is None:
            return ""
        return f"{self._noted[1]:,.0f} tasks/s: running shown as queued"

    def drain(self, max_messages: int = 20_000) -> set[str]:
        """Read what is waiting (never blocks); return the running set."""
        sock = self._sock
        if sock is None:
            return self.running
        for _ in range(max_messages):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.received += 1
            if self.paused:
                continue  # sent before the relay saw the unsubscription
            try:
                parent, state = self._status(frames)
            except Exception:
                continue
            if not parent:
                continue
            if state == "busy":
                self.running.add(parent)
            elif state in ("idle", "dead"):
                self.running.discard(parent)
        return self.running

    def _status(self, frames: list[bytes]) -> tuple[str | None, str | None]:
        """(parent msg_id, execution_state) of a signed status message, else (None, None).

        Only what a status needs is read: under a stream of trivial tasks the relay carries ~2 messages per
        task (500 tasks/s: ~1,000/s), and a full `Session.deserialize` (~23 us each) would cost this process
        ~2-3 % of a core. Engines publish under the topic `engine.<id>.<msg_type>`: anything but a status
        (stdout, results, displays) is dropped unread. The signature is still checked."""
        session = self.session
        idents, parts = session.feed_identities(frames)
        topic = idents[0] if idents else b""
        if topic and not topic.endswith(b".status"):
            return None, None
        if len(parts) < 5:
            return None, None
        if session.auth is not None and not hmac.compare_digest(session.sign(parts[1:5]), parts[0]):
            return None, None
        if not topic and session.unpack(parts[1]).get("msg_type") != "status":
            return None, None
        parent = session.unpack(parts[2]).get("msg_id")
        state = session.unpack(parts[4]).get("execution_state")
        return (parent if isinstance(parent, str) else None), state

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
