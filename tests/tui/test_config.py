"""The configuration file: defaults, a good file, every kind of bad file, $HUBTOP_CONFIG, flag precedence."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tui.cli import add_source_arguments, settings_from_args
from tui.config import ENV_VAR, Config, ConfigError, check_theme, load_config

GOOD = """
source = "~/runs/tasks.db"
profile = "gpu"
cluster_id = "t1"
hub = "/tmp/ipcontroller-client.json"
interval = 2
busy_interval = 6
theme = "nord"
read_only = true
direct = false

[keys]
"app.quit" = "ctrl+q,f10"
refresh = "f5"
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # the default location: empty


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_when_no_file():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.interval == 1.0 and cfg.direct is True and cfg.read_only is False and cfg.keys == {}


def test_good_file(tmp_path):
    p = write(tmp_path, GOOD)
    cfg = load_config(p)
    assert cfg.source == str(Path.home() / "runs/tasks.db")
    assert (cfg.profile, cfg.cluster_id, cfg.hub) == ("gpu", "t1", "/tmp/ipcontroller-client.json")
    assert cfg.interval == 2.0 and isinstance(cfg.interval, float)
    assert cfg.busy_interval == 6.0 and isinstance(cfg.busy_interval, float)
    assert cfg.theme == "nord" and cfg.read_only is True and cfg.direct is False
    assert cfg.keys == {"app.quit": "ctrl+q,f10", "refresh": "f5"}
    assert cfg.path == p


def test_default_location_is_read(tmp_path):
    p = tmp_path / "xdg" / "hubtop" / "config.toml"
    p.parent.mkdir(parents=True)
    p.write_text('interval = 0.5\n')
    assert load_config().interval == 0.5


def test_env_var_overrides_default_location(tmp_path, monkeypatch):
    default = tmp_path / "xdg" / "hubtop" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text("interval = 0.5\n")
    other = write(tmp_path, "interval = 7\n", "other.toml")
    monkeypatch.setenv(ENV_VAR, str(other))
    assert load_config().interval == 7.0


def test_env_var_to_a_missing_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"nope\.toml.*HUBTOP_CONFIG.*does not exist"):
        load_config()


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("colour = 'red'\n", r"unknown key 'colour' \(known keys: source, profile"),
        ("interval = 'fast'\n", r"key 'interval' must be a number of seconds, not the string 'fast'"),
        ("interval = 0\n", r"key 'interval' must be a number of seconds > 0"),
        ("interval = -1.5\n", r"key 'interval' must be a number of seconds > 0"),
        ("interval = true\n", r"key 'interval' must be a number of seconds, not the boolean true"),
        ("interval = nan\n", r"key 'interval' must be a number of seconds > 0"),
        ("busy_interval = -1\n", r"key 'busy_interval' must be a number of seconds >= 0 \(0: off\), not -1"),
        ("busy_interval = inf\n", r"key 'busy_interval' must be a number of seconds >= 0"),
        ("busy_interval = '4 s'\n", r"key 'busy_interval' must be a number of seconds, not the string '4 s'"),
        ("read_only = 'yes'\n", r"key 'read_only' must be true or false, not the string 'yes'"),
        ("direct = 1\n", r"key 'direct' must be true or false, not the number 1"),
        ("profile = 3\n", r"key 'profile' must be a string, not the number 3"),
        ("source = ''\n", r"key 'source' must not be empty"),
        ("keys = 'ctrl+q'\n", r"key 'keys' must be a table \(\[keys\]\)"),
        ("[keys]\nquit = 5\n", r"key 'keys.quit' must be a key string .* not the number 5"),
        ("[keys]\nquit = 'ctrl + q'\n", r"key 'keys.quit' has a bad key string 'ctrl \+ q'"),
        ("[keys]\nquit = ''\n", r"key 'keys.quit' has a bad key string"),
        ("interval = \n", r"not valid TOML"),
        ("[profile]\n", r"key 'profile' must be a string, not a table"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path, text, pattern):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(p)
    message = str(info.value)
    assert message.startswith(str(p)) and "\n" not in message


def test_unreadable_and_binary_files(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_theme_is_checked_against_textual_themes():
    check_theme("nord", "x")
    check_theme(None, "x")
    with pytest.raises(ConfigError, match="unknown theme 'nope'.*textual-dark"):
        check_theme("nope", "cfg.toml: key 'theme'")


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_source_arguments(p)
    return p.parse_args(argv)


def test_flags_override_the_file(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    s = settings_from_args(_args([]), cfg)
    assert s["spec"] == cfg.source and s["read_only"] is True and s["direct"] is False and s["hub"] == cfg.hub
    assert (s["profile"], s["cluster_id"]) == ("gpu", "t1")
    s = settings_from_args(_args(["other.db", "--hub", "h.json"]), cfg)
    # a SOURCE on the command line replaces the file's whole source choice (source, profile, cluster id)
    assert (s["spec"], s["profile"], s["cluster_id"], s["hub"]) == ("other.db", None, None, "h.json")
    s = settings_from_args(_args(["--profile", "cpu"]), cfg)
    assert (s["spec"], s["profile"], s["cluster_id"]) == (None, "cpu", None)
    cfg2 = load_config(write(tmp_path, "read_only = false\ndirect = true\n", "c2.toml"))
    s = settings_from_args(_args(["--read-only", "--no-direct"]), cfg2)
    assert s["read_only"] is True and s["direct"] is False


def _hubtop(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "tui", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    p = write(tmp_path, "interval = -3\n")
    r = _hubtop("snapshot", "whatever.db", "--config", str(p))
    assert r.returncode == 2
    assert r.stderr.strip() == f"hubtop: error: {p}: key 'interval' must be a number of seconds > 0, not -3"
    r = _hubtop("snapshot", "whatever.db", env={ENV_VAR: str(write(tmp_path, "bogus = 1\n", "b.toml"))})
    assert r.returncode == 2 and "unknown key 'bogus'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_uses_the_config_source(tmp_path):
    p = write(tmp_path, f"source = '{tmp_path / 'nothing-here.db'}'\n")
    r = _hubtop("snapshot", "--config", str(p))
    assert r.returncode == 1
    assert "nothing-here.db: no such file" in r.stderr and "Traceback" not in r.stderr


def _dashboard_args(argv: list[str]) -> argparse.Namespace:
    from tui.cli import parse

    cmd, args = parse(argv)
    assert cmd is None
    return args


def test_dashboard_applies_theme_keys_and_interval(tmp_path):
    from tests.fakes import FakeSource
    from tui.cli import build_app

    cfg = load_config(write(tmp_path, 'theme = "nord"\ninterval = 3\nbusy_interval = 0\n[keys]\n"main.quit" = "f10"\n'))
    app = build_app(_dashboard_args([]), cfg, source=FakeSource(5))
    assert app.theme == "nord" and app.interval == 3.0 and app.busy_interval == 0.0
    assert app._keymap == {"main.quit": "f10"}  # handed to App.set_keymap
    app = build_app(_dashboard_args(["--theme", "dracula", "--interval", "0.5"]), cfg, source=FakeSource(5))
    assert app.theme == "dracula" and app.interval == 0.5


def test_dashboard_refuses_unknown_theme_and_binding_ids(tmp_path):
    from tests.fakes import FakeSource
    from tui.cli import CLIError, binding_ids, build_app

    assert {"main.quit", "main.filter", "detail.back", "triage.resubmit", "app.quit"} <= binding_ids()
    cfg = load_config(write(tmp_path, '[keys]\n"main.qiut" = "f10"\n'))
    with pytest.raises(CLIError, match=r"key 'keys.main.qiut': no key binding has this id; did you mean 'main.quit'"):
        build_app(_dashboard_args([]), cfg, source=FakeSource(5))
    cfg = load_config(write(tmp_path, 'theme = "neon"\n', "t.toml"))
    with pytest.raises(CLIError, match=r"t\.toml: key 'theme': unknown theme 'neon' \(one of .*nord"):
        build_app(_dashboard_args([]), cfg, source=FakeSource(5))
    with pytest.raises(CLIError, match=r"--theme: unknown theme 'neon'"):
        build_app(_dashboard_args(["--theme", "neon"]), Config(), source=FakeSource(5))
