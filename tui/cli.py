"""The `hubtop` command: the dashboard, its headless twins (snapshot, query, watch, resubmit, purge),
`demo` and `serve`.

Headless commands never import Textual (tested: `"textual" not in sys.modules`); only the dashboard,
`demo` and `serve` do, lazily. Every error is one line on stderr and an exit code: 2 for usage and
configuration, 1 for source problems (wrong path, unreadable file, dead Hub), 3 when `watch` passes its
failure threshold, 130 on ctrl+c. No tracebacks (set HUBTOP_DEBUG=1 to see them).

Subcommands live in a registry (`COMMANDS`): `register()` adds one (name, help, how to add its
arguments, how to run it). A subcommand in another module is registered lazily by module path
(`LAZY_COMMANDS`), so `hubtop replay` can live in its own module.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, NoReturn, Sequence

from .config import Config, ConfigError, load_config

__all__ = ["main", "register", "COMMANDS", "LAZY_COMMANDS", "Command", "CLIError", "source_from_args",
           "add_source_arguments", "settings_from_args"]

EXIT_OK, EXIT_SOURCE, EXIT_USAGE, EXIT_THRESHOLD, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CLIError(Exception):
    """One line for stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) that exit 2."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see `{self.prog} --help`)", EXIT_USAGE)


@dataclass
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Config], int]
    description: str = ""


COMMANDS: dict[str, Command] = {}
# name -> module path; the module defines `COMMAND: Command` (imported only when the name is used).
LAZY_COMMANDS: dict[str, str] = {"replay": "tui.replay"}


def register(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace, Config], int], description: str = "") -> Command:
    cmd = Command(name, help, configure, run, description or help)
    COMMANDS[name] = cmd
    return cmd


# -- versions --------------------------------------------------------------------------------------


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    parts = [f"hubtop {v('hubtop') or 'unknown'}", f"textual {v('textual') or 'missing'}"]
    ipp = v("ipyparallel")
    parts.append(f"ipyparallel {ipp}" if ipp else "ipyparallel not installed (hubtop demo needs it)")
    parts.append(f"python {sys.version.split()[0]}")
    return "\n".join(parts)


# -- shared options ----------------------------------------------------------------------------------


def add_source_arguments(p: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        p.add_argument("source", nargs="?", metavar="SOURCE",
                       help="connection file, profile directory, tasks.db, sqlite:///path or mongodb://URL "
                            "(default: the config's `source`, else --profile, else the cluster found under $IPYTHONDIR)")
    g = p.add_argument_group("source options")
    g.add_argument("--profile", metavar="NAME", help="the Hub of this IPython profile")
    g.add_argument("--cluster-id", metavar="ID", help="with --profile: the cluster with this id")
    g.add_argument("--hub", metavar="CONNFILE", help="pair a database SOURCE with this Hub (engines, queues, actions)")
    g.add_argument("--no-direct", dest="direct", action="store_false", default=None,
                   help="always ask the Hub, never read its tasks.db directly")
    g.add_argument("--read-only", dest="read_only", action="store_true", default=None,
                   help="never resubmit or purge")
    g.add_argument("--allow-writes", action="store_true",
                   help="let purge delete records from a database SOURCE directly (no Hub)")
    g.add_argument("--timeout", type=_positive_float, default=5.0, metavar="S",
                   help="seconds to wait for the Hub or database on each call (default 5)")
    g.add_argument("--config", metavar="FILE", help="configuration file (default: $HUBTOP_CONFIG, else the user config dir)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def settings_from_args(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """The source settings: CLI flags override the config file."""
    source = getattr(args, "source", None)
    profile, cluster_id = args.profile, args.cluster_id
    if source is None and profile is None and cluster_id is None:
        source, profile, cluster_id = cfg.source, cfg.profile, cfg.cluster_id
    return dict(
        spec=source,
        profile=profile,
        cluster_id=cluster_id,
        hub=args.hub if args.hub is not None else cfg.hub,
        direct=cfg.direct if args.direct is None else args.direct,
        read_only=cfg.read_only if args.read_only is None else args.read_only,
        allow_writes=bool(args.allow_writes),
        timeout=args.timeout,
    )


def source_from_args(args: argparse.Namespace, cfg: Config):
    """open_source(...) with the merged settings; ChooseCluster becomes a one-line error listing them."""
    from datasource.sources.open import ChooseCluster, open_source

    settings = settings_from_args(args, cfg)
    spec = settings.pop("spec")
    try:
        return open_source(spec, **settings)
    except ChooseCluster as exc:
        listing = "; ".join(f"{c.label}: {c.args}" for c in exc.clusters[:8])
        raise CLIError(f"{len(exc.clusters)} clusters found, pick one: {listing}", EXIT_USAGE) from None


def _load(args: argparse.Namespace, cfg: Config, *, whole: bool = True):
    """Open the source and load every task into a store (one full sync; `whole`: with every field)."""
    from datasource.snapshot import load_source

    source = source_from_args(args, cfg)
    try:
        loaded = load_source(source, whole=whole)
    except BaseException:
        _close(source)
        raise
    return source, loaded


def _close(source) -> None:
    try:
        source.close()
    except Exception:
        pass


def _where(text: str | None):
    """A query string -> a store Filter (QueryError -> exit 2 with the column)."""
    if text is None or not text.strip():
        return None
    from datasource.query import QueryError, parse, to_sql

    try:
        sql, params = to_sql(parse(text))
    except QueryError as exc:
        raise CLIError(f"bad filter {text!r}: {exc}", EXIT_USAGE) from None
    return (sql, params)


# -- snapshot ------------------------------------------------------------------------------------------


def _configure_snapshot(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def _run_snapshot(args: argparse.Namespace, cfg: Config) -> int:
    from datasource.snapshot import build_snapshot, summary_text

    source, loaded = _load(args, cfg, whole=False)  # counts and engines: the times are not needed
    try:
        snap = build_snapshot(loaded.store, loaded.caps, source.name, loaded.warnings)
    finally:
        _close(source)
    print(json.dumps(snap, indent=2) if args.json else summary_text(snap))
    return EXIT_OK


# -- query ---------------------------------------------------------------------------------------------

_TABLE_FIELDS = ("msg_id", "state", "engine_id", "label", "submitted", "duration", "ename", "evalue")


def _fields(text: list[str] | None) -> list[str] | None:
    if not text:
        return None
    out = [f.strip() for part in text for f in part.split(",") if f.strip()]
    return out or None


def _configure_query(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("filter", metavar="FILTER", help="a query, as in the dashboard's / bar ('' for every task)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (default table)")
    p.add_argument("--fields", action="append", metavar="F,F,...", help="columns to print (comma-separated, repeatable)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N rows")
    p.add_argument("--sort", default="submitted", metavar="COL", help="sort column (default submitted)")
    p.add_argument("--reverse", action="store_true", help="oldest / smallest first (default: newest first)")


def _run_query(args: argparse.Namespace, cfg: Config) -> int:
    from datasource.export import ExportError, check_fields, export_view, iter_view
    from datasource.store import SORT_COLUMNS

    where = _where(args.filter)
    fields = _fields(args.fields)
    if args.sort not in SORT_COLUMNS:
        raise CLIError(f"cannot sort by {args.sort!r}; sort columns are: {', '.join(SORT_COLUMNS)}", EXIT_USAGE)
    try:
        cols = check_fields(fields or (_TABLE_FIELDS if args.format == "table" else None))
    except ExportError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    source, loaded = _load(args, cfg)
    try:
        descending = not args.reverse
        if args.format == "table":
            _print_table(iter_view(loaded.store, where, sort=args.sort, descending=descending, limit=args.limit), cols)
        else:
            export_view(loaded.store, where, sort=args.sort, descending=descending, path=sys.stdout,
                        fmt=args.format, fields=cols, limit=args.limit)
        for w in loaded.warnings:
            print(f"hubtop: warning: {w}", file=sys.stderr)
    finally:
        _close(source)
    return EXIT_OK


def _cell(value: Any, name: str) -> str:
    if value is None:
        return ""
    if name in ("submitted", "started", "completed", "received"):
        return value[:19].replace("T", " ")
    if name == "duration":
        return f"{value:.2f}s"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"


def _print_table(records, cols: Sequence[str]) -> None:
    from itertools import islice

    from datasource.export import record_row

    it = iter(records)
    head = [[_cell(v, c) for c, v in record_row(r, cols).items()] for r in islice(it, 500)]
    widths = [max([len(c)] + [len(row[i]) for row in head]) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = sys.stdout
    out.write(line([c.upper() for c in cols]) + "\n")
    n = 0
    for row in head:
        out.write(line(row) + "\n")
        n += 1
    for r in it:
        out.write(line([_cell(v, c) for c, v in record_row(r, cols).items()]) + "\n")
        n += 1
    print(f"({n} task{'s' if n != 1 else ''})", file=sys.stderr)


# -- watch ---------------------------------------------------------------------------------------------


def _configure_watch(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--interval", type=_positive_float, metavar="S", help="seconds between polls (default: config, else 1)")
    p.add_argument("--fail-threshold", type=_nonneg_int, metavar="N",
                   help="exit with code 3 as soon as more than N tasks (matching --filter) have failed")
    p.add_argument("--count", type=_positive_int, metavar="K", help="stop after K polls (after the first load)")
    p.add_argument("--filter", metavar="FILTER", help="only tasks matching this query (lines and threshold)")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class _Tap:
    """Wraps a source: sees every delta before the store applies it, to print what changed."""

    def __init__(self, source, store, emit: Callable[[dict], None], keep: Callable[[Any], bool] | None):
        self._source, self._store, self._emit, self._keep = source, store, emit, keep
        self.first_done = False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._source, attr)

    def sync(self):
        from datasource.export import FIELDS, record_row

        for delta in self._source.sync():
            if self.first_done and delta.filling is None:  # a fill completes the first load: no changes
                if delta.reset:
                    self._emit({"event": "reload", "message": "the source reloaded every task (a new Hub run?)"})
                before = {r.msg_id: r for r in self._store.get_many([u.msg_id for u in delta.upserts])}
                for rec in delta.upserts:
                    if self._keep is not None and not self._keep(rec):
                        continue
                    old = before.get(rec.msg_id)
                    if old is None:
                        self._emit({"change": "added", **record_row(rec, FIELDS)})
                    elif _key(old) != _key(rec):
                        self._emit({"change": "changed", "previous_state": old.state.value, **record_row(rec, FIELDS)})
                for msg_id in delta.removed:
                    self._emit({"change": "removed", "msg_id": msg_id})
            yield delta
        self.first_done = True  # the first complete sync is the initial load: reported as one event


def _key(r) -> tuple:
    return (r.state, r.engine_uuid, r.resubmitted, r.started is None, r.completed is None, r.stdout_size, r.stderr_size)


def _run_watch(args: argparse.Namespace, cfg: Config) -> int:
    from datasource.poller import Poller
    from datasource.store import TaskStore, combine, pane_filter

    interval = args.interval or cfg.interval
    where = _where(args.filter)
    keep = None
    if where is not None:
        from datasource.query import parse, predicate

        keep = predicate(parse(args.filter))
    out = sys.stdout

    def emit(obj: dict) -> None:
        out.write(json.dumps({"time": _now_iso(), **obj}, ensure_ascii=False) + "\n")
        out.flush()

    source = source_from_args(args, cfg)
    store = TaskStore()
    poller = Poller(_Tap(source, store, emit, keep), store, busy_interval=cfg.busy_interval)
    polls = 0
    loaded = False
    try:
        while True:
            outcome = poller.step()
            status = outcome.status
            if outcome.event:
                emit({"event": "status", "state": status.state, "message": outcome.event})
            for w in outcome.warnings:
                emit({"event": "warning", "message": w})
            if not loaded:
                if status.state == "connected" and not store.loading:
                    loaded = True
                    counts = store.counts(where)
                    emit({"event": "loaded", "source": source.name, "total": counts["all"],
                          **{k: counts[k] for k in ("pending", "succeeded", "failed", "aborted")}})
                elif status.state == "retrying" and status.last_success is None:
                    raise CLIError(f"cannot watch {source.name}: {status.message.split('; retrying')[0]}", EXIT_SOURCE)
            else:
                polls += 1
            if loaded and args.fail_threshold is not None:
                failed = store.count(combine(where, pane_filter("failed")))
                if failed > args.fail_threshold:
                    emit({"event": "fail-threshold", "failed": failed, "threshold": args.fail_threshold})
                    return EXIT_THRESHOLD
            if args.count is not None and polls >= args.count:
                return EXIT_OK
            time.sleep(poller.next_delay(interval))
    finally:
        poller.close()


# -- resubmit / purge ------------------------------------------------------------------------------------


def _configure_action(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("filter", metavar="FILTER", help="the tasks to act on, as a query ('' for every task)")
    p.add_argument("--yes", "-y", action="store_true", help="act (default: a dry run that only prints the preview)")


def _action_runner(action: str) -> Callable[[argparse.Namespace, Config], int]:
    def run(args: argparse.Namespace, cfg: Config) -> int:
        from datasource import actions

        read_only = cfg.read_only if args.read_only is None else args.read_only
        if read_only:
            origin = "--read-only" if args.read_only else f"read_only = true in {cfg.path}"
            raise CLIError(f"{action} refused: read-only mode ({origin})", EXIT_USAGE)
        where = _where(args.filter)
        source, loaded = _load(args, cfg)
        try:
            ids = loaded.store.ids(where)
            scope = actions.scope_matching(len(ids), args.filter) if args.filter.strip() else f"all {len(ids)} tasks"
            p = actions.preview(action, ids, loaded.store, loaded.caps, scope=scope, read_only=read_only)
            print(p.summary())
            if not args.yes:
                if p.allowed:
                    print(f"dry run: nothing was sent; add --yes to {action}")
                return EXIT_OK
            if not p.allowed:
                print(f"hubtop: error: {action} not possible: {p.reason}", file=sys.stderr)
                return EXIT_SOURCE
            result = actions.execute(p, source, store=loaded.store)
            print(result.message)
            if result.resubmitted:
                for old, new in result.resubmitted.items():
                    print(f"  {old} -> {new}")
            return EXIT_OK if result.ok else EXIT_SOURCE
        finally:
            _close(source)

    return run


# -- dashboard -------------------------------------------------------------------------------------------


def _configure_dashboard(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--interval", type=_positive_float, metavar="S", help="seconds between polls (default: config, else 1)")
    p.add_argument("--theme", metavar="NAME", help="a Textual theme (textual-dark, nord, gruvbox, ...)")
    p.add_argument("--record", metavar="FILE", help="record what the dashboard sees, for `hubtop replay FILE`")


def build_app(args: argparse.Namespace, cfg: Config, *, source=None):
    """The dashboard app for these arguments (imports Textual). `source` overrides SOURCE (demo)."""
    from datasource.sources.open import ChooseCluster

    from .app import make_app

    choices = None
    settings = settings_from_args(args, cfg)
    if source is None:
        from datasource.sources.open import open_source

        spec = settings.pop("spec")
        try:
            source = open_source(spec, **settings)
        except ChooseCluster as exc:
            choices = exc.clusters
    if getattr(args, "record", None):
        source = _recording(source, args.record)
    theme = getattr(args, "theme", None) or cfg.theme
    _check_keymap(cfg)
    app = make_app(source, choices=choices, read_only=settings["read_only"],
                   poll_interval=getattr(args, "interval", None) or cfg.interval, busy_interval=cfg.busy_interval,
                   theme=None, keymap=dict(cfg.keys) or None)
    if theme is not None:
        themes = getattr(app, "available_themes", {})
        if theme not in themes:
            origin = "--theme" if getattr(args, "theme", None) else f"{cfg.path}: key 'theme'"
            raise CLIError(f"{origin}: unknown theme {theme!r} (one of {', '.join(sorted(themes))})", EXIT_USAGE)
        app.theme = theme
    return app


def binding_ids() -> set[str]:
    """Every `id=` of a key binding in hubtop's screens and widgets (what `[keys]` may remap)."""
    import importlib as _il
    import pkgutil

    from textual.dom import DOMNode

    from . import screens, widgets

    for pkg in (screens, widgets):
        for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            _il.import_module(info.name)
    for name in ("tui.app", "tui.replay"):
        try:
            _il.import_module(name)
        except ImportError:
            pass
    ids: set[str] = set()
    todo = [DOMNode]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("tui."):
            for b in cls.__dict__.get("BINDINGS", []):
                if getattr(b, "id", None):
                    ids.add(b.id)
    return ids


def _check_keymap(cfg: Config) -> None:
    if not cfg.keys:
        return
    known = binding_ids()
    for binding_id in cfg.keys:
        if binding_id not in known:
            from difflib import get_close_matches

            close = get_close_matches(binding_id, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else " (the ids are listed in docs/user-guide.md)"
            raise CLIError(f"{cfg.path}: key 'keys.{binding_id}': no key binding has this id{hint}", EXIT_USAGE)


def _recording(source, path: str):
    try:
        module = importlib.import_module("datasource.recorder")
    except ImportError:
        raise CLIError("--record: recording is not available in this version of hubtop", EXIT_USAGE) from None
    return module.RecordingSource(source, path)


def _run_dashboard(args: argparse.Namespace, cfg: Config) -> int:
    app = build_app(args, cfg)
    app.run()
    code = getattr(app, "return_code", None)
    return int(code) if code else EXIT_OK


# -- demo / serve (their own modules) ---------------------------------------------------------------------


def _configure_demo(p: argparse.ArgumentParser) -> None:
    from .demo import configure

    configure(p)


def _run_demo(args: argparse.Namespace, cfg: Config) -> int:
    from .demo import run

    return run(args, cfg)


def _configure_serve(p: argparse.ArgumentParser) -> None:
    from .serve import configure

    configure(p)


def _run_serve(args: argparse.Namespace, cfg: Config) -> int:
    from .serve import run

    return run(args, cfg)


register("snapshot", "print task counts per state and engine (--json: one JSON object)", _configure_snapshot, _run_snapshot)
register("query", "print the tasks matching a filter as a table, JSON or CSV", _configure_query, _run_query)
register("watch", "print changes as JSON lines; exit 3 past --fail-threshold", _configure_watch, _run_watch)
register("resubmit", "resubmit the tasks matching a filter (dry run unless --yes)", _configure_action, _action_runner("resubmit"))
register("purge", "purge the completed tasks matching a filter (dry run unless --yes)", _configure_action, _action_runner("purge"))
register("demo", "start a local cluster with a live workload and open the dashboard on it", _configure_demo, _run_demo)
register("serve", "serve the dashboard to a web browser (textual-serve)", _configure_serve, _run_serve)


# -- entry point -----------------------------------------------------------------------------------------


def _command(name: str) -> Command | None:
    if name in COMMANDS:
        return COMMANDS[name]
    if name in LAZY_COMMANDS:
        try:
            module = importlib.import_module(LAZY_COMMANDS[name])
        except ImportError as exc:
            if exc.name == LAZY_COMMANDS[name]:
                raise CLIError(f"`hubtop {name}` is not available in this version of hubtop", EXIT_USAGE) from None
            raise
        cmd = module.COMMAND
        COMMANDS[name] = cmd
        return cmd
    return None


def _main_parser() -> argparse.ArgumentParser:
    names = sorted(set(COMMANDS) | set(LAZY_COMMANDS))
    epilog = "commands:\n" + "\n".join(
        f"  {n:<10} {COMMANDS[n].help if n in COMMANDS else 'see hubtop ' + n + ' --help'}" for n in names
    ) + "\n\nRun `hubtop COMMAND --help` for a command's options. Docs: docs/cli.md"
    p = _Parser(prog="hubtop", description="A keyboard-driven dashboard for ipyparallel clusters.",
                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the versions of hubtop, Textual and ipyparallel")
    _configure_dashboard(p)
    return p


def parse(argv: Sequence[str]) -> tuple[Command | None, argparse.Namespace]:
    argv = list(argv)
    first = next((a for a in argv[:1]), None)
    cmd = _command(first) if first and not first.startswith("-") else None
    if cmd is None:
        return None, _main_parser().parse_args(argv)
    p = _Parser(prog=f"hubtop {cmd.name}", description=cmd.description)
    cmd.configure(p)
    args = p.parse_args(_protect_negations(p, argv[1:]))
    for name in ("filter", "source"):
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith(_NEG):
            setattr(args, name, value[len(_NEG):])
    args.raw_argv = argv[1:]
    return cmd, args


_NEG = "\x00"


def _protect_negations(p: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """A filter such as `-state:failed` is a negation, not an option: hide its dash from argparse.

    Any single-dash word that is not one of the command's options (and not an option's value) counts.
    `--` works too, as usual.
    """
    options = p._option_string_actions  # noqa: SLF001 - argparse has no public accessor
    out: list[str] = []
    takes_value = False
    for i, arg in enumerate(argv):
        if arg == "--":
            out.extend(argv[i:])
            break
        if not takes_value and arg.startswith("-") and not arg.startswith("--") and len(arg) > 1 and arg not in options:
            out.append(_NEG + arg)
            continue
        action = options.get(arg.split("=", 1)[0]) if arg.startswith("-") else None
        takes_value = action is not None and "=" not in arg and action.nargs != 0 and action.const is None \
            and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction))
        out.append(arg)
    return out


def _fail(message: str, code: int) -> int:
    print(f"hubtop: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    from datasource.sources.base import SourceError

    argv = sys.argv[1:] if argv is None else argv
    try:
        cmd, args = parse(argv)
        if cmd is None and args.version:
            print(version_text())
            return EXIT_OK
        cfg = load_config(getattr(args, "config", None))
        if cmd is None:
            return _run_dashboard(args, cfg)
        return cmd.run(args, cfg)
    except CLIError as exc:
        return _fail(str(exc), exc.code)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SourceError as exc:
        from datasource.query import QueryError

        return _fail(str(exc), EXIT_USAGE if isinstance(exc, QueryError) else EXIT_SOURCE)
    except KeyboardInterrupt:
        print("hubtop: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader (head, less) went away: not an error; silence the flush at exit too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        return _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", EXIT_SOURCE)
    except SystemExit:
        raise
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("HUBTOP_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (set HUBTOP_DEBUG=1 for the traceback)", EXIT_SOURCE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
