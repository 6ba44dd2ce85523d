"""hubtop's configuration file: TOML, typed, validated; CLI flags override it.

Location: `$HUBTOP_CONFIG` if set, else `platformdirs.user_config_dir("hubtop")/config.toml`. A missing
default file is fine (defaults apply); a missing `$HUBTOP_CONFIG` file or a `--config` file is an error.
This module never imports Textual: the theme name is checked against Textual's themes only when the
dashboard starts (`check_theme`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from datasource.poller import BUSY_INTERVAL

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Config", "ConfigError", "load_config", "default_config_path", "config_path", "check_theme", "ENV_VAR"]

ENV_VAR = "HUBTOP_CONFIG"


class ConfigError(Exception):
    """A bad configuration file or value; `str()` is one line naming the file and the key."""


@dataclass
class Config:
    source: str | None = None  # path, URL or connection file; None: discover
    profile: str | None = None
    cluster_id: str | None = None
    hub: str | None = None  # a Hub connection file paired with a database source
    interval: float = 1.0  # seconds between polls
    busy_interval: float = BUSY_INTERVAL  # seconds between polls while the tasks change fast; 0: never longer
    theme: str | None = None  # a Textual theme name
    read_only: bool = False
    direct: bool = True  # False: always go through the Hub, never read the database file directly
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> key string (App.set_keymap)
    path: Path | None = None  # the file this came from (None: defaults only)


# key -> (accepted Python types, human type name)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "source": ((str,), "a string"),
    "profile": ((str,), "a string"),
    "cluster_id": ((str,), "a string"),
    "hub": ((str,), "a string (path to a connection file)"),
    "interval": ((int, float), "a number of seconds"),
    "busy_interval": ((int, float), "a number of seconds"),
    "theme": ((str,), "a string (a Textual theme name)"),
    "read_only": ((bool,), "true or false"),
    "direct": ((bool,), "true or false"),
    "keys": ((dict,), "a table ([keys])"),
}
_FILE_KEYS = tuple(f.name for f in fields(Config) if f.name != "path")
assert set(_FILE_KEYS) == set(_TYPES)


def default_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("hubtop")) / "config.toml"


def config_path(explicit: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """(path, required): `--config`, else `$HUBTOP_CONFIG`, else the default location (optional)."""
    if explicit is not None:
        return Path(explicit).expanduser(), True
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), True
    return default_config_path(), False


def load_config(explicit: str | os.PathLike | None = None) -> Config:
    """Read and validate the configuration file; raises ConfigError (one line) when it is bad."""
    path, required = config_path(explicit)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if required:
            origin = f" (from ${ENV_VAR})" if explicit is None else ""
            raise ConfigError(f"config file {path}{origin} does not exist") from None
        return Config()
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not valid UTF-8)") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path)


def parse_config(raw: Mapping[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "config"
    cfg = Config(path=path)
    for key, value in raw.items():
        if key not in _TYPES:
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {', '.join(_FILE_KEYS)})")
        types, name = _TYPES[key]
        # bool is an int in Python: `interval = true` must not pass as 1 second.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"{where}: key {key!r} must be {name}, not {_describe(value)}")
        if key == "interval":
            value = float(value)
            if not value > 0 or value != value or value == float("inf"):
                raise ConfigError(f"{where}: key 'interval' must be a number of seconds > 0, not {value:g}")
        elif key == "busy_interval":
            value = float(value)
            if not value >= 0 or value == float("inf"):
                raise ConfigError(f"{where}: key 'busy_interval' must be a number of seconds >= 0 (0: off), not {value:g}")
        elif key == "keys":
            value = _parse_keys(value, where)
        elif isinstance(value, str):
            if not value.strip():
                raise ConfigError(f"{where}: key {key!r} must not be empty")
            if key in ("source", "hub"):
                value = os.path.expanduser(value) if "://" not in value else value
        setattr(cfg, key, value)
    return cfg


def _parse_keys(table: Mapping[str, Any], where: str) -> dict[str, str]:
    keymap: dict[str, str] = {}
    for binding_id, keys in table.items():
        if not isinstance(keys, str):
            raise ConfigError(
                f"{where}: key 'keys.{binding_id}' must be a key string such as \"ctrl+r\" or \"f5,r\", "
                f"not {_describe(keys)}"
            )
        parts = [k.strip() for k in keys.split(",")]
        if not keys.strip() or any(not k or " " in k for k in parts):
            raise ConfigError(
                f"{where}: key 'keys.{binding_id}' has a bad key string {keys!r} "
                "(comma-separated key names without spaces, e.g. \"ctrl+r\" or \"f5,r\")"
            )
        keymap[binding_id] = ",".join(parts)
    return keymap


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def check_theme(cfg_theme: str | None, origin: str) -> None:
    """Raise ConfigError unless `cfg_theme` is a Textual theme (imports Textual: dashboard path only)."""
    if cfg_theme is None:
        return
    from textual.theme import BUILTIN_THEMES

    if cfg_theme not in BUILTIN_THEMES:
        raise ConfigError(f"{origin}: unknown theme {cfg_theme!r} (one of {', '.join(sorted(BUILTIN_THEMES))})")
