"""ipyparallel connection files: find them, load and validate them, build sockets' URLs and the Session.

Only the *client* file (`ipcontroller[-<cluster_id>]-client.json`) is read; see the Hub spec §2.
Nothing here talks to the network except resolving `location` when the interface is 0.0.0.0/*.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sources.base import SourceError

__all__ = [
    "ConnectionInfo",
    "load_connection_file",
    "ipython_dir",
    "find_connection_file",
    "discover_clusters",
    "profile_dir_of",
    "find_engines_json",
    "find_tasks_db",
    "connection_file_name",
]

CHANNELS = ("registration", "control", "mux", "task", "iopub", "notification", "broadcast")
_REQUIRED = ("interface", "registration", "key", "signature_scheme")


def connection_file_name(cluster_id: str | None = None) -> str:
    return f"ipcontroller-{cluster_id}-client.json" if cluster_id else "ipcontroller-client.json"


@dataclass(repr=False)
class ConnectionInfo:
    """A loaded, validated client connection file. `repr`/`str` never show the key."""

    interface: str
    ports: dict[str, int]
    key: bytes = field(default=b"")
    signature_scheme: str = "hmac-sha256"
    pack: str = "json"
    unpack: str = "json"
    curve_serverkey: str | None = None
    location: str = ""
    ssh: str = ""
    path: Path | None = None
    task_scheme: str | None = None

    def __repr__(self) -> str:
        return (
            f"ConnectionInfo(interface={self.interface!r}, registration={self.ports.get('registration')}, "
            f"path={str(self.path) if self.path else None!r}, key=<hidden>, "
            f"curve={'yes' if self.curve_serverkey else 'no'})"
        )

    __str__ = __repr__

    @classmethod
    def from_dict(cls, cfg: Any, path: Path | None = None) -> "ConnectionInfo":
        where = str(path) if path else "connection info"
        if not isinstance(cfg, dict):
            raise SourceError(f"{where}: not a connection file (a JSON object was expected)")
        missing = [k for k in _REQUIRED if k not in cfg]
        if missing:
            raise SourceError(f"{where}: not an ipyparallel client connection file (missing {', '.join(missing)})")
        interface = cfg["interface"]
        if not isinstance(interface, str) or "://" not in interface:
            raise SourceError(f"{where}: bad 'interface' {interface!r} (expected transport://ip)")
        ports: dict[str, int] = {}
        for ch in CHANNELS:
            value = cfg.get(ch)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                if ch == "registration":
                    raise SourceError(f"{where}: bad 'registration' port {value!r}")
                continue
            ports[ch] = value
        key = cfg["key"]
        if key is None:
            key = ""
        if not isinstance(key, str):
            raise SourceError(f"{where}: 'key' must be a string")
        scheme = cfg["signature_scheme"] or "hmac-sha256"
        if not isinstance(scheme, str) or not scheme.startswith("hmac-"):
            raise SourceError(f"{where}: unsupported signature_scheme {scheme!r}")
        curve = cfg.get("curve_serverkey") or None
        if curve is not None and not isinstance(curve, str):
            raise SourceError(f"{where}: 'curve_serverkey' must be a string")
        pack = cfg.get("pack") or "json"
        unpack = cfg.get("unpack") or pack
        return cls(
            interface=interface,
            ports=ports,
            key=key.encode("utf-8"),
            signature_scheme=scheme,
            pack=str(pack),
            unpack=str(unpack),
            curve_serverkey=curve,
            location=str(cfg.get("location") or ""),
            ssh=str(cfg.get("ssh") or ""),
            path=path,
            task_scheme=cfg.get("task_scheme"),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConnectionInfo":
        return load_connection_file(path)

    # -- addresses -----------------------------------------------------------------------------

    @property
    def transport(self) -> str:
        return self.interface.split("://", 1)[0]

    def host(self) -> str:
        """The connectable host/IP: 0.0.0.0 and * are turned into localhost or `location`'s address."""
        ip = self.interface.split("://", 1)[1]
        if self.transport != "tcp" or ip not in ("0.0.0.0", "*"):
            return ip
        return _connectable_ip(self.location)

    def url(self, channel: str = "registration") -> str:
        if self.ssh:
            raise SourceError(
                f"{self.path or 'connection file'}: the Hub is reached through ssh ({self.ssh}); hubtop does not "
                f"tunnel: forward the ports yourself (ssh -L PORT:127.0.0.1:PORT {self.ssh}) and use a copy "
                f"of the file with \"ssh\": \"\""
            )
        port = self.ports.get(channel)
        if port is None:
            raise SourceError(f"{self.path or 'connection file'}: no {channel!r} port")
        sep = "-" if self.transport == "ipc" else ":"
        return f"{self.transport}://{self.host()}{sep}{port}"

    # -- session -------------------------------------------------------------------------------

    def make_session(self):  # -> jupyter_client.session.Session (imported lazily: ~150 ms)
        from jupyter_client.session import Session

        try:
            return Session(
                key=self.key,
                signature_scheme=self.signature_scheme,
                packer=self.pack,
                unpacker=self.unpack,
                username="hubtop",
            )
        except Exception as exc:  # bad packer name, unknown hash...
            raise SourceError(f"{self.path or 'connection file'}: cannot build a session: {exc}") from None

    def permission_warnings(self) -> list[str]:
        """Warn when the file holding the key is readable by group or others."""
        if self.path is None:
            return []
        try:
            mode = self.path.stat().st_mode
        except OSError:
            return []
        if self.key and mode & (stat.S_IRWXG | stat.S_IRWXO):
            return [f"{self.path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it"]
        return []


def _local_ips() -> set[str]:
    ips = {"127.0.0.1", "::1"}
    try:
        ips.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return ips


def _connectable_ip(location: str) -> str:
    """Like ipyparallel.util.disambiguate_ip_address for a 0.0.0.0/* interface."""
    if not location or location == socket.gethostname():
        return "127.0.0.1"
    try:
        ip = socket.gethostbyname(location)
    except OSError:
        raise SourceError(f"the Hub listens on all interfaces of {location!r}, which does not resolve") from None
    return "127.0.0.1" if ip in _local_ips() or ip.startswith("127.") else ip


def load_connection_file(path: str | os.PathLike) -> ConnectionInfo:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"{p}: no such connection file (is the controller running?)") from None
    except IsADirectoryError:
        raise SourceError(f"{p}: is a directory, not a connection file") from None
    except PermissionError:
        raise SourceError(f"{p}: permission denied") from None
    except UnicodeDecodeError:
        raise SourceError(f"{p}: not a connection file (not UTF-8 text)") from None
    except OSError as exc:
        raise SourceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        cfg = json.loads(text)
    except ValueError as exc:
        raise SourceError(f"{p}: not a connection file (invalid JSON: {exc})") from None
    return ConnectionInfo.from_dict(cfg, p)


# -- discovery -------------------------------------------------------------------------------------


def ipython_dir() -> Path:
    env = os.environ.get("IPYTHONDIR")
    return Path(env).expanduser() if env else Path.home() / ".ipython"


def find_connection_file(
    profile: str = "default", cluster_id: str | None = None, profile_dir: str | os.PathLike | None = None
) -> Path:
    pdir = Path(profile_dir).expanduser() if profile_dir else ipython_dir() / f"profile_{profile}"
    path = pdir / "security" / connection_file_name(cluster_id)
    if path.is_file():
        return path
    if cluster_id is None:
        others = sorted((pdir / "security").glob("ipcontroller-*-client.json"), key=_mtime, reverse=True)
        hint = f" (found {others[0].name}: pass its cluster id)" if others else ""
    else:
        hint = ""
    raise SourceError(f"no connection file {path}{hint}; is the controller running?")


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _cluster_id_of(name: str) -> str | None:
    core = name[len("ipcontroller") : -len("-client.json")]
    return core[1:] if core.startswith("-") else None


def discover_clusters(root: str | os.PathLike | None = None) -> list[tuple[str, str | None, Path, float]]:
    """(profile, cluster_id, path, mtime) for every client connection file, default profile first, then newest."""
    base = Path(root) if root else ipython_dir()
    found = []
    for path in base.glob("profile_*/security/ipcontroller*-client.json"):
        profile = path.parent.parent.name[len("profile_") :]
        found.append((profile, _cluster_id_of(path.name), path, _mtime(path)))
    found.sort(key=lambda t: (t[0] != "default", -t[3]))
    return found


def profile_dir_of(conn_path: str | os.PathLike) -> Path:
    """`<profile_dir>/security/ipcontroller-client.json` -> `<profile_dir>`."""
    p = Path(conn_path).resolve()
    return p.parent.parent if p.parent.name == "security" else p.parent


def find_engines_json(profile_dir: str | os.PathLike, cluster_id: str | None = None) -> dict[str, int]:
    """uuid -> engine id from the Hub's `log/engines<cluster_id>.json` (spec §2.3); {} when absent/bad."""
    path = Path(profile_dir) / "log" / f"engines{cluster_id or ''}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(uuid): int(eid) for eid, uuid in data["engines"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def find_tasks_db(profile_dir: str | os.PathLike) -> Path | None:
    path = Path(profile_dir) / "tasks.db"
    return path if path.is_file() else None
