"""`hubtop serve`: the same dashboard in a web browser, through textual-serve (the `serve` extra).

Every browser session runs `hubtop <the same arguments>` in its own process; nothing else is served.
It binds to 127.0.0.1 unless --host says otherwise, and then warns: anyone who reaches the port gets
the whole dashboard, resubmit and purge included, unless --read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import shlex
import sys

from .config import Config

INSTALL_HINT = "hubtop serve needs textual-serve: pip install 'hubtop[serve]' (from a checkout: pip install -e '.[serve]')"


def configure(p: argparse.ArgumentParser) -> None:
    from .cli import _configure_dashboard

    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--public-url", metavar="URL", help="the URL browsers use, when behind a proxy or tunnel")
    _configure_dashboard(p)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard_args(argv: list[str]) -> list[str]:
    """The arguments after `serve` minus serve's own options: what each browser session runs."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--host", "--port", "--public-url"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def served_command(argv: list[str]) -> str:
    return shlex.join([sys.executable, "-m", "tui", *dashboard_args(argv)])


def run(args: argparse.Namespace, cfg: Config) -> int:
    from .cli import EXIT_SOURCE, EXIT_USAGE, CLIError, settings_from_args

    if importlib.util.find_spec("textual_serve") is None:
        raise CLIError(INSTALL_HINT, EXIT_SOURCE)
    if not 0 < args.port < 65536:
        raise CLIError(f"--port {args.port}: not a port number (1-65535)", EXIT_USAGE)
    settings = settings_from_args(args, cfg)
    # Fail here, once, rather than in every browser session: SOURCE must name something readable.
    if settings["spec"] is not None:
        from datasource.sources.open import ChooseCluster, open_source

        spec = settings.pop("spec")
        try:
            open_source(spec, **settings).close()
        except ChooseCluster:
            pass  # each session shows the picker
    command = served_command(list(getattr(args, "raw_argv", [])))
    read_only = settings_from_args(args, cfg)["read_only"]
    # Imported before anything is printed: a Ctrl-C that lands inside an import is swallowed by importlib
    # ("Exception ignored ... KeyboardInterrupt" and a traceback) and the server starts anyway.
    from textual_serve.server import Server

    # The same for the event loop Server.serve() takes (asyncio.get_event_loop): a Ctrl-C inside its
    # construction leaves a half-made loop whose __del__ prints a traceback.
    asyncio.set_event_loop(asyncio.new_event_loop())
    if not _is_loopback(args.host) and not read_only:
        print(f"hubtop serve: WARNING: listening on {args.host}: anyone who can reach port {args.port} can "
              "resubmit and purge tasks. Add --read-only, or bind to 127.0.0.1 and use an SSH tunnel.",
              file=sys.stderr, flush=True)
    server = Server(command, host=args.host, port=args.port, title="hubtop", public_url=args.public_url)
    print(f"hubtop serve: http://{args.host}:{args.port} runs: {command}", file=sys.stderr, flush=True)
    server.serve()
    return 0
