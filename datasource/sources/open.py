"""`open_source`: what the user typed (a path, a URL, a profile, nothing) -> the right Source, not yet opened.

SOURCE forms:
  * a client connection file (`ipcontroller*-client.json`, or any JSON with the connection keys) -> HubSource;
  * a profile directory (holding `security/ipcontroller*-client.json`) -> its Hub;
  * a `tasks.db` path, or `sqlite:///path` -> SQLiteSource;
  * `mongodb://host:port[/db[.collection]]` -> MongoSource (db default "ipython-tasks", collection "task_records");
  * nothing: `--profile NAME [--cluster-id ID]`, else the clusters found under $IPYTHONDIR.
`hub=CONNFILE` pairs a database source with a Hub (engines, queues, resubmit, purge).

Direct fast path: for a Hub whose database is the `tasks.db` of its profile on this machine, the tasks are
read from the file (no Hub round trips for a million records) and the Hub serves engines, queues and
actions. It is chosen when the profile has a tasks.db, the Hub listens on a local address, the Hub's
backend probes as SQLite and the newest record of the file's newest table is known to the Hub (so the
file is the one that Hub writes, not a stale one). Any doubt (Hub down, probe fails) keeps the Hub path.

Only cheap local checks happen here (the file kind, a SQLite file's tables, a URL's syntax) plus, for the
direct path, two small Hub requests bounded by a short timeout. Opening and loading is the poller's job,
so a Hub that is down becomes a "retrying" status rather than a failure to start.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..connection import (
    ConnectionInfo,
    _local_ips,
    discover_clusters,
    find_connection_file,
    ipython_dir,
    load_connection_file,
    profile_dir_of,
)
from ..hubclient import HubClient
from .base import ActionRefused, Capabilities, NotATaskDatabase, Source, SourceError, SourceUnavailable

__all__ = [
    "open_source",
    "describe_spec",
    "SourceSpecError",
    "ChooseCluster",
    "ClusterChoice",
    "ReadOnlySource",
    "FileHubClient",
    "is_local",
    "DEFAULT_MONGO_DATABASE",
    "DEFAULT_MONGO_COLLECTION",
]

log = logging.getLogger("hubtop")

DEFAULT_MONGO_DATABASE = "ipython-tasks"
DEFAULT_MONGO_COLLECTION = "task_records"
SQLITE_MAGIC = b"SQLite format 3\x00"
PROBE_TIMEOUT = 2.0  # the direct-path probe: a Hub that does not answer this fast keeps the Hub path
NEXT_STEPS = "pass a connection file or a tasks.db path, --profile NAME, or try `hubtop demo`"


class SourceSpecError(SourceError):
    """SOURCE (or --profile/--hub) names nothing hubtop can read; the message says what to pass instead."""


@dataclass(frozen=True)
class ClusterChoice:
    profile: str
    cluster_id: str | None
    path: Path
    mtime: float

    @property
    def label(self) -> str:
        return f"{self.profile} (cluster id {self.cluster_id})" if self.cluster_id else self.profile

    @property
    def args(self) -> str:
        """The command-line options that pick this cluster."""
        return f"--profile {self.profile}" + (f" --cluster-id {self.cluster_id}" if self.cluster_id else "")


class ChooseCluster(SourceError):
    """Several clusters were found: the TUI shows a picker, the CLI prints them."""

    def __init__(self, clusters: list[ClusterChoice]):
        self.clusters = clusters
        names = ", ".join(c.label for c in clusters[:6]) + (", ..." if len(clusters) > 6 else "")
        super().__init__(f"{len(clusters)} clusters found ({names}): pick one with --profile NAME [--cluster-id ID]")


class ReadOnlySource:
    """Any source with resubmit and purge switched off (`--read-only`); everything else is delegated."""

    def __init__(self, inner: Source):
        self.inner = inner

    @property
    def name(self) -> str:
        return f"{self.inner.name} (read-only)"

    @name.setter
    def name(self, value: str) -> None:
        self.inner.name = value

    def capabilities(self) -> Capabilities:
        caps = self.inner.capabilities()
        return replace(caps, read_only=True, can_resubmit=False, can_purge=False,
                       resubmit_reason="read-only mode", purge_reason="read-only mode")

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        raise ActionRefused("read-only mode: resubmit is off")

    def purge(self, msg_ids: list[str]) -> int:
        raise ActionRefused("read-only mode: purge is off")

    def open(self) -> None:
        self.inner.open()

    def sync(self):
        return self.inner.sync()

    def detail(self, msg_id: str):
        return self.inner.detail(msg_id)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, attr: str) -> Any:  # backend, client, path, hub...: whatever the inner source has
        return getattr(self.inner, attr)


# -- entry point ---------------------------------------------------------------------------------------


def open_source(
    spec: str | os.PathLike | None = None,
    *,
    profile: str | None = None,
    cluster_id: str | None = None,
    hub: str | os.PathLike | None = None,
    direct: bool = True,
    read_only: bool = False,
    allow_writes: bool = False,
    timeout: float = 5.0,
) -> Source:
    """The source SOURCE names (see the module docstring). Raises SourceSpecError, ChooseCluster,
    NotATaskDatabase; never contacts a database, and a Hub only for the direct-path probe."""
    if read_only and allow_writes:
        raise SourceSpecError("--read-only and --allow-writes contradict each other: pass one")
    if spec is not None and str(spec).strip() == "":
        spec = None
    if spec is not None and (profile or cluster_id):
        raise SourceSpecError("pass either SOURCE or --profile/--cluster-id, not both")
    opts = dict(hub=hub, direct=direct, allow_writes=allow_writes and not read_only, timeout=timeout)
    if spec is None:
        source = _hub_or_direct(_find_cluster(profile, cluster_id), **opts)
    else:
        source = _from_spec(str(spec), **opts)
    return ReadOnlySource(source) if read_only else source


def describe_spec(spec: str | os.PathLike | None = None, *, profile: str | None = None,
                  cluster_id: str | None = None) -> str:
    """What SOURCE is taken for, without opening anything (for --help-like messages and logs)."""
    if spec is None or str(spec).strip() == "":
        if profile or cluster_id:
            return f"the Hub of profile {profile or 'default'}" + (f", cluster id {cluster_id}" if cluster_id else "")
        return f"the cluster found under {ipython_dir()}"
    text = str(spec)
    if _is_mongo(text):
        return f"MongoDB {text}"
    if text.startswith("sqlite:"):
        return f"SQLite file {_sqlite_url_path(text)}"
    p = Path(text).expanduser()
    if p.is_dir():
        return f"the Hub of profile directory {p}"
    if p.suffix == ".json":
        return f"the Hub of connection file {p}"
    return f"SQLite file {p}" if p.suffix in (".db", ".sqlite", ".sqlite3") else f"{p}"


# -- clusters ------------------------------------------------------------------------------------------


def _find_cluster(profile: str | None, cluster_id: str | None) -> Path:
    if profile or cluster_id:
        return _wrap(find_connection_file, profile or "default", cluster_id)
    found = [ClusterChoice(*t) for t in discover_clusters()]
    if not found:
        raise SourceSpecError(f"no ipyparallel cluster found under {ipython_dir()}: {NEXT_STEPS}")
    if len(found) > 1:
        raise ChooseCluster(found)
    return found[0].path


def _wrap(fn, *args, **kwargs):
    """Call fn; a SourceError from the connection module becomes a SourceSpecError (same words)."""
    try:
        return fn(*args, **kwargs)
    except SourceSpecError:
        raise
    except SourceError as exc:
        raise SourceSpecError(str(exc)) from None


# -- spec forms ----------------------------------------------------------------------------------------


def _is_mongo(text: str) -> bool:
    return text.startswith(("mongodb://", "mongodb+srv://"))


def _from_spec(text: str, *, hub, direct: bool, allow_writes: bool, timeout: float) -> Source:
    if _is_mongo(text):
        return _mongo(text, hub=hub, allow_writes=allow_writes, timeout=timeout)
    if text.startswith("sqlite:"):
        return _sqlite(_sqlite_url_path(text), hub=hub, allow_writes=allow_writes, timeout=timeout)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise SourceSpecError(f"{text}: unknown scheme {scheme!r}; use mongodb://, sqlite:/// or a file path")
    p = Path(text).expanduser()
    if not p.exists():
        hint = ""
        if os.sep not in text and (ipython_dir() / f"profile_{text}").is_dir():
            hint = f" (a profile of that name exists: --profile {text})"
        raise SourceSpecError(f"{p}: no such file or directory{hint}; {NEXT_STEPS}")
    if p.is_dir():
        return _from_directory(p, hub=hub, direct=direct, allow_writes=allow_writes, timeout=timeout)
    head = _head(p)
    if head.startswith(SQLITE_MAGIC):
        return _sqlite(p, hub=hub, allow_writes=allow_writes, timeout=timeout)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        info = _wrap(load_connection_file, p)
        return _hub_or_direct(info.path or p, hub=hub, direct=direct, allow_writes=allow_writes, timeout=timeout)
    raise SourceSpecError(f"{p}: neither a connection file (JSON) nor an SQLite tasks.db; {NEXT_STEPS}")


def _head(p: Path) -> bytes:
    try:
        with open(p, "rb") as fh:
            return fh.read(64)
    except PermissionError:
        raise SourceSpecError(f"{p}: permission denied") from None
    except OSError as exc:
        raise SourceSpecError(f"{p}: cannot read it ({exc.strerror or exc})") from None


def _from_directory(p: Path, *, hub, direct: bool, allow_writes: bool, timeout: float) -> Source:
    """A profile directory: its Hub (one connection file), a choice (several), or its tasks.db (no Hub file)."""
    conns = sorted((p / "security").glob("ipcontroller*-client.json"))
    if len(conns) == 1:
        return _hub_or_direct(conns[0], hub=hub, direct=direct, allow_writes=allow_writes, timeout=timeout)
    if len(conns) > 1:
        profile = p.name[len("profile_"):] if p.name.startswith("profile_") else p.name
        choices = [c for c in (ClusterChoice(*t) for t in discover_clusters(p.parent)) if c.path.parent.parent == p]
        raise ChooseCluster(choices or [ClusterChoice(profile, None, c, 0.0) for c in conns])
    if (p / "tasks.db").is_file():
        return _sqlite(p / "tasks.db", hub=hub, allow_writes=allow_writes, timeout=timeout)
    raise SourceSpecError(
        f"{p} is a directory without a connection file (security/ipcontroller-client.json) or a tasks.db; "
        f"{NEXT_STEPS}"
    )


def _sqlite_url_path(text: str) -> Path:
    """sqlite:///relative/path and sqlite:////absolute/path (SQLAlchemy); sqlite:///abs also read as /abs
    when the relative reading names no file."""
    rest = text[len("sqlite:"):]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("//"):  # sqlite:////abs
        return Path(rest[1:])
    if rest.startswith("/"):
        relative = Path(rest[1:]).expanduser()
        return relative if relative.exists() or not Path(rest).exists() else Path(rest)
    return Path(rest).expanduser()


def _sqlite(path: Path, *, hub, allow_writes: bool, timeout: float, name: str | None = None,
            client: HubClient | None = None) -> Source:
    from .sqlite import SQLiteSource

    path = Path(path).expanduser()
    if not path.exists():
        raise SourceSpecError(f"{path}: no such file; {NEXT_STEPS}")
    if path.is_dir():
        raise SourceSpecError(f"{path} is a directory, not a tasks.db file")
    if not _head(path).startswith(SQLITE_MAGIC):
        raise NotATaskDatabase(f"{path}: not an SQLite database")
    _check_task_tables(path)
    if client is None and hub is not None:
        client = _hub_client(hub, timeout)
    source = SQLiteSource(path, hub=client, allow_writes=allow_writes)
    if name:
        source.name = name
    elif client is not None:
        source.name = f"{_short(path)} + Hub {client.url}"
    return source


def _check_task_tables(path: Path) -> None:
    """A foreign SQLite file is refused here, with words, rather than at the first poll."""
    from .sqlite import find_tables

    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=1.0)
    except sqlite3.Error as exc:
        raise SourceSpecError(f"{path}: cannot open it as SQLite ({exc})") from None
    try:
        tables = find_tables(con)
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return  # a writer holds it: the source's own open() retries
        raise NotATaskDatabase(f"{path}: not a readable SQLite database ({exc})") from None
    finally:
        con.close()
    if not tables:
        raise NotATaskDatabase(f"{path} is an SQLite file but holds no ipyparallel task table (ipython-tasks*)")


def _mongo(uri: str, *, hub, allow_writes: bool, timeout: float) -> Source:
    database, collection = _parse_mongo_uri(uri)
    from .mongo import MongoSource

    client = _hub_client(hub, timeout) if hub is not None else None
    source = MongoSource(uri, database=database, collection=collection, hub=client, allow_writes=allow_writes)
    if client is not None:
        source.name = f"{source.name} + Hub {client.url}"
    return source


def _parse_mongo_uri(uri: str) -> tuple[str, str]:
    """(database, collection) from the URL path; syntax only (a +srv URL is not resolved here)."""
    if uri.startswith("mongodb+srv://"):
        path = uri[len("mongodb+srv://"):].partition("?")[0].partition("/")[2]
        database, _, collection = path.partition(".")
        if not uri[len("mongodb+srv://"):].partition("/")[0]:
            raise SourceSpecError(f"bad MongoDB URL {_redact(uri)}: no host")
        return database or DEFAULT_MONGO_DATABASE, collection or DEFAULT_MONGO_COLLECTION
    from pymongo.errors import ConfigurationError, InvalidURI
    from pymongo.uri_parser import parse_uri

    try:
        parsed = parse_uri(uri)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise SourceSpecError(f"bad MongoDB URL {_redact(uri)}: {' '.join(str(exc).split())}") from None
    return parsed.get("database") or DEFAULT_MONGO_DATABASE, parsed.get("collection") or DEFAULT_MONGO_COLLECTION


def _redact(uri: str) -> str:
    """Never echo a password: mongodb://user:secret@host -> mongodb://user:***@host."""
    scheme, _, rest = uri.partition("://")
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth:
        return uri
    return f"{scheme}://{auth.split(':', 1)[0]}:***@{host}"


def _hub_client(hub: str | os.PathLike, timeout: float) -> HubClient:
    info = _wrap(load_connection_file, hub)
    return _wrap(FileHubClient, info, timeout=timeout)


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path is not None else None
    except OSError:
        return None


class FileHubClient(HubClient):
    """A HubClient that follows its connection file: when a request gets no reply and the file was
    rewritten since (the Hub restarted, on new ports), it reconnects with the new file and retries once.

    The database sources keep their Hub for the whole session (HubSource does the same on its own).
    """

    def __init__(self, conn: ConnectionInfo, timeout: float = 5.0, **kwargs: Any):
        super().__init__(conn, timeout=timeout, **kwargs)
        self._file_mtime = _mtime(conn.path)

    def request(self, msg_type: str, content: dict | None = None, timeout: float | None = None) -> dict:
        try:
            return super().request(msg_type, content, timeout)
        except SourceUnavailable:
            if not self._follow_file():
                raise
            log.info("the Hub's connection file changed: reconnecting to %s", self.url)
            return super().request(msg_type, content, timeout)

    def _follow_file(self) -> bool:
        path = self.conn.path
        mtime = _mtime(path)
        if path is None or mtime is None or mtime == self._file_mtime:
            return False
        try:
            info = load_connection_file(path)
            url = info.url("registration")
            session = info.make_session()
        except SourceError:
            return False  # half-written or bad: try again at the next failure
        with self._lock:
            self._reset()
            self.conn, self.url, self.session = info, url, session
            self._backend = None
            self.has_label = True
        self._file_mtime = mtime
        return True


# -- Hub, or the direct fast path ----------------------------------------------------------------------


def _hub_or_direct(conn_path: Path, *, hub, direct: bool, allow_writes: bool, timeout: float) -> Source:
    from .hub import HubSource

    if hub is not None:
        raise SourceSpecError("--hub pairs a database (tasks.db, mongodb://) with a Hub; SOURCE is already a Hub")
    info = _wrap(load_connection_file, conn_path)
    if direct:
        source = _direct(info, Path(conn_path), allow_writes=allow_writes, timeout=timeout)
        if source is not None:
            return source
    return HubSource(Path(conn_path), timeout=timeout)


def is_local(info: ConnectionInfo) -> bool:
    """Whether the Hub listens on this machine (then its profile's files are its files)."""
    if info.transport == "ipc":
        return True
    if info.transport != "tcp" or info.ssh:
        return False
    try:
        host = info.host()
    except SourceError:
        return False
    return host.startswith("127.") or host in ("localhost", "::1") or host in _local_ips()


def _direct(info: ConnectionInfo, conn_path: Path, *, allow_writes: bool, timeout: float) -> Source | None:
    db = profile_dir_of(conn_path) / "tasks.db"
    if not db.is_file() or not is_local(info):
        return None
    try:
        client = FileHubClient(info, timeout=timeout)
    except SourceError:
        return None
    probe = min(timeout, PROBE_TIMEOUT)
    keep = False
    try:
        keep = client.detect_backend(timeout=probe) == "sqlite" and _hub_writes(db, client, probe)
    except SourceError as exc:
        log.info("direct path not taken for %s: %s", db, exc)
    finally:
        if not keep:
            client.close()
    if not keep:
        return None
    try:
        return _sqlite(db, hub=None, allow_writes=allow_writes, timeout=timeout, client=client,
                       name=f"{_short(db)} (direct) + Hub {client.url}")
    except SourceError as exc:
        log.info("direct path not taken for %s: %s", db, exc)
        client.close()
        return None


def _hub_writes(db: Path, client: HubClient, timeout: float) -> bool:
    """The newest committed record of the file's newest table is in the Hub's database (an empty newest
    table is accepted: a Hub that just started has created it and stored nothing yet)."""
    from .sqlite import find_tables

    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=0.5)
        try:
            tables = find_tables(con)
            if not tables:
                return False
            newest = tables[-1].replace('"', '""')
            row = con.execute(f'SELECT msg_id FROM "{newest}" ORDER BY rowid DESC LIMIT 1').fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        log.info("direct path: cannot read %s: %s", db, exc)
        return False
    if not row or not row[0][0]:
        return True
    found = client.db_query({"msg_id": {"$in": [row[0][0]]}}, ["msg_id"], timeout=timeout)
    return bool(found)


def _short(path: Path) -> str:
    try:
        return "~/" + str(Path(path).resolve().relative_to(Path.home()))
    except ValueError:
        return str(path)
