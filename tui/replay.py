"""`hubtop replay FILE`: the dashboard over a recording (`hubtop --record FILE`), read-only, with keys to
move through time.

Registered lazily by tui/cli.py (`LAZY_COMMANDS["replay"]`). The app is the ordinary HubtopApp plus four
bindings (a subclass: tui/app.py needs no change):

    [ / ]   one recorded state back / forward        { / }   ten states back / forward
    ctrl+home / ctrl+end  the first / the last recorded state

Each key moves `ReplaySource`'s cursor (`step(n)` / `seek(i)`) and asks for a poll at once
(`app.refresh_now()`); the poll applies the change to the store like any other delta. Where the cursor is
shows in the status line (the source's standing warning "replay: <time> (poll i of n)").
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from .cli import EXIT_OK, CLIError, Command, EXIT_USAGE
from .config import Config

__all__ = ["COMMAND", "make_replay_app", "parse_at"]


def parse_at(text: str) -> int | datetime:
    """`--at`: an index into the recorded states (negative: from the end) or an ISO time (naive = UTC)."""
    try:
        return int(text)
    except ValueError:
        pass
    from datasource.model import parse_time

    when = parse_time(text)
    if when is None:
        raise CLIError(f"--at: {text!r} is neither a state number nor an ISO time (2026-11-21T06:05:00)", EXIT_USAGE)
    return when


def make_replay_app(source: Any, **kwargs: Any):
    """The dashboard over a ReplaySource, with the time keys. Imports Textual."""
    from textual.binding import Binding

    from .app import HubtopApp

    class ReplayApp(HubtopApp):
        BINDINGS = [
            *HubtopApp.BINDINGS,
            Binding("left_square_bracket", "replay_step(-1)", "Earlier", id="replay.back"),
            Binding("right_square_bracket", "replay_step(1)", "Later", id="replay.forward"),
            Binding("left_curly_bracket", "replay_step(-10)", "10 earlier", show=False, id="replay.back10"),
            Binding("right_curly_bracket", "replay_step(10)", "10 later", show=False, id="replay.forward10"),
            Binding("ctrl+home", "replay_seek(0)", "First state", show=False, id="replay.first"),
            Binding("ctrl+end", "replay_seek(-1)", "Last state", show=False, id="replay.last"),
        ]

        def action_replay_step(self, n: int) -> None:
            self.source.step(n)
            self.refresh_now()

        def action_replay_seek(self, index: int) -> None:
            self.source.seek(index)
            self.refresh_now()

    kwargs["read_only"] = True
    return ReplayApp(source, **kwargs)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a recording made with `hubtop --record FILE`")
    p.add_argument("--at", metavar="WHEN", type=parse_at,
                   help="open at this recorded state: a number (0 = first, -1 = last, the default) or an ISO time")
    p.add_argument("--theme", metavar="NAME", help="a Textual theme")


def _run(args: argparse.Namespace, cfg: Config) -> int:
    from datasource.sources.replay import ReplaySource

    source = ReplaySource(args.file)
    source.open()  # a foreign / truncated / newer file: one line and exit 1 before the screen opens
    if args.at is not None:
        source.seek(args.at)
    app = make_replay_app(source, poll_interval=cfg.interval, keymap=dict(cfg.keys) or None)
    theme = args.theme or cfg.theme
    if theme is not None:
        if theme not in getattr(app, "available_themes", {}):
            raise CLIError(f"--theme: unknown theme {theme!r}", EXIT_USAGE)
        app.theme = theme
    app.run()
    return int(getattr(app, "return_code", None) or EXIT_OK)


COMMAND = Command(
    "replay",
    "open a recording (hubtop --record FILE) read-only; [ and ] step through time",
    _configure,
    _run,
    "Open a recording made with `hubtop --record FILE` in the dashboard, read-only. The last recorded state "
    "shows first; [ and ] step one recorded state back and forward, { and } ten, ctrl+home / ctrl+end jump "
    "to the first / last.",
)
