"""The detail screen of one task: every field humanized, outputs, traceback, lineage, search, copy.

The whole detail is one document of lines drawn by a line-API view (`DocumentView`): only the visible
lines are ever rendered, so a 50 MB stdout shown in full costs one `splitlines` (in a worker thread),
not a 50 MB widget. By default big outputs are cut to a head and a tail with a line saying how much
is hidden; `a` shows everything.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from rich.style import Style
from rich.syntax import Syntax
from rich.text import Span, Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.widgets import Input, LoadingIndicator, Static

from datasource.model import State, TaskDetail, TaskRecord, strip_ansi

from .. import format as fmt
from ..format import short_id
from ..widgets.footer import Footer

__all__ = [
    "DetailScreen",
    "DocumentView",
    "Document",
    "build_document",
    "python_snippet",
    "STATE_STYLES",
    "HEAD_LINES",
    "TAIL_LINES",
]

STATE_STYLES: dict[str, str] = {
    State.SUCCEEDED.value: "bold green",
    State.FAILED.value: "bold red",
    State.ABORTED.value: "bold yellow",
    State.PENDING.value: "bold cyan",
    State.QUEUED.value: "bold cyan",
    State.RUNNING.value: "bold magenta",
}

# Outputs bigger than this are cut to a head and a tail (`a` shows all).
TRUNCATE_CHARS = 200_000
TRUNCATE_LINES = 4_000
HEAD_LINES = 1_000
TAIL_LINES = 1_000
PART_CHARS = 80_000  # at most this many characters in the head, and in the tail
MAX_LINE = 4_000  # a single line longer than this is cut when drawn (the full text stays copyable)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")
_HEADING = Style(bold=True, color="bright_blue")
_KEY = Style(color="bright_black")
_DIM = Style(dim=True)
_MATCH = Style(bgcolor="yellow", color="black")
_CURRENT = Style(bgcolor="bright_magenta", color="black", bold=True)


@dataclass(repr=False)
class Document:
    """The lines of one task's detail, with where each section starts."""

    lines: list[Text | str] = field(default_factory=list)
    sections: dict[str, int] = field(default_factory=dict)
    width: int = 0
    truncated: dict[str, int] = field(default_factory=dict)  # stream name -> characters hidden

    def __repr__(self) -> str:
        return f"<Document {len(self.lines):,} lines>"

    def add(self, line: Text | str) -> None:
        self.lines.append(line)

    def heading(self, title: str) -> None:
        if self.lines:
            self.lines.append(Text(""))
        self.sections[title] = len(self.lines)
        self.lines.append(Text(f"── {title} ", style=_HEADING) + Text("─" * max(0, 60 - len(title)), style=_HEADING))

    def field(self, key: str, value: Text | str) -> None:
        self.lines.append(Text.assemble((f"{key:>12}  ", _KEY), value))

    def finish(self) -> "Document":
        width = 0
        for line in self.lines:
            n = line.cell_len if isinstance(line, Text) else len(line)
            if n > width:
                width = n
        self.width = min(width, MAX_LINE + 40)
        return self


def plain_of(line: Text | str) -> str:
    """The searchable text of a line: what is drawn, without colour codes."""
    if isinstance(line, Text):
        return line.plain
    if "\x1b" in line:
        line = strip_ansi(line)
    return _clean(line)


def _clean(s: str) -> str:
    if "\t" in s:
        s = s.expandtabs(8)
    if len(s) > MAX_LINE:
        s = f"{s[:MAX_LINE]} … (+{len(s) - MAX_LINE:,} characters)"
    return _CONTROL.sub("", s)


def text_of(line: Text | str) -> Text:
    if isinstance(line, Text):
        text = line.copy()
        if text.style:  # Text.render ignores the base style: make it the lowest span
            text.spans.insert(0, Span(0, len(text), text.style))
            text.style = ""
        return text
    if "\x1b" in line:
        text = Text.from_ansi(line.expandtabs(8) if "\t" in line else line, no_wrap=True)
        if len(text.plain) > MAX_LINE:
            text = text[:MAX_LINE] + Text(f" … (+{len(text.plain) - MAX_LINE:,} characters)", style=_DIM)
        return text
    return Text(_clean(line))


# -- humanized values ----------------------------------------------------------------------------


def _when(dt: datetime | None, now: datetime) -> Text:
    if dt is None:
        return Text("—", style=_DIM)
    utc = dt.astimezone(timezone.utc)
    return Text.assemble(
        utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d} UTC",
        ("  " + fmt.ago(dt, now), _DIM),
    )


def _duration(seconds: float | None) -> str:
    return "—" if seconds is None else fmt.duration(seconds)


def _size(n: int | None) -> str:
    return "—" if n is None else fmt.size(n)


def state_text(state: State | str) -> Text:
    value = state.value if isinstance(state, State) else str(state)
    return Text(f"● {value}", style=STATE_STYLES.get(value, ""))


def _pretty(value: Any) -> list[str]:
    try:
        return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False).splitlines()
    except (TypeError, ValueError):
        return repr(value).splitlines()


# -- the document --------------------------------------------------------------------------------


def _head_tail(text: str) -> tuple[list[str], int, int, list[str]]:
    """(head lines, hidden characters, hidden lines, tail lines) of a big text, in C-speed steps."""
    limit = min(len(text), PART_CHARS)
    pos = 0
    for _ in range(HEAD_LINES):
        nxt = text.find("\n", pos, limit)
        if nxt < 0:
            break
        pos = nxt + 1
    head_end = pos or limit  # no newline at all in the first PART_CHARS: cut that one long line
    body_end = len(text) - 1 if text.endswith("\n") else len(text)
    low = max(head_end, len(text) - PART_CHARS)
    pos = body_end
    for _ in range(TAIL_LINES):
        prv = text.rfind("\n", low, pos)
        if prv < 0:
            break
        pos = prv
    tail_start = pos + 1 if pos < body_end else low
    if tail_start <= head_end:
        return text.splitlines(), 0, 0, []
    hidden_lines = text.count("\n", head_end, tail_start)
    return text[:head_end].splitlines(), tail_start - head_end, hidden_lines, text[tail_start:].splitlines()


def _split_lines(text: str, chunk: int = 1 << 20) -> list[str]:
    """splitlines in ~1 MB pieces, yielding the GIL between them: one C call on 50 MB would hold it for
    a few hundred ms and freeze the UI thread meanwhile."""
    if len(text) <= chunk:
        return text.splitlines()
    out: list[str] = []
    start = 0
    while start < len(text):
        end = text.find("\n", min(len(text), start + chunk))
        end = len(text) if end < 0 else end + 1
        out.extend(text[start:end].splitlines())
        start = end
        time.sleep(0)
    return out


def _add_output(doc: Document, name: str, text: str, show_all: bool) -> None:
    n_lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    doc.heading(f"{name}  ({_size(len(text))}, {n_lines:,} line{'s' if n_lines != 1 else ''})")
    if not text:
        doc.add(Text("(empty)", style=_DIM))
        return
    if show_all or (len(text) <= TRUNCATE_CHARS and n_lines <= TRUNCATE_LINES):
        doc.lines.extend(_split_lines(text))
        return
    head, hidden_chars, hidden_lines, tail = _head_tail(text)
    doc.lines.extend(head)
    if hidden_chars:
        doc.truncated[name] = hidden_chars
        doc.add(Text(
            f"─── {_size(hidden_chars)} hidden ({hidden_lines:,} lines): press a to show all ───",
            style=Style(bold=True, color="black", bgcolor="yellow"),
        ))
    doc.lines.extend(tail)


def _code_lines(code: str) -> list[Text | str]:
    """Python source, highlighted (big inputs stay plain: highlighting is for reading, not for megabytes)."""
    if len(code) > 100_000:
        return list(code.splitlines())
    text = Syntax(code, "python", theme="ansi_dark", background_color="default").highlight(code)
    text.rstrip()
    return list(text.split("\n"))


def build_document(
    detail: TaskDetail,
    *,
    now: datetime,
    lineage: Sequence[TaskRecord | str] = (),
    show_all: bool = False,
) -> Document:
    """Every field of a task as lines. Pure and thread-safe: the screen builds it in a worker."""
    rec = detail.record
    doc = Document()
    doc.heading("Task")
    doc.field("msg_id", rec.msg_id)
    doc.field("state", state_text(rec.state))
    if rec.ename or rec.evalue:
        doc.field("error", Text(fmt.error_text(rec.ename, rec.evalue, whole=True), style="red"))
    if rec.engine_uuid or rec.engine_id is not None:
        eid = "?" if rec.engine_id is None else str(rec.engine_id)
        doc.field("engine", Text.assemble(eid, (f"  uuid {rec.engine_uuid or '—'}", _DIM)))
    else:
        doc.field("engine", Text("none (not assigned)", style=_DIM))
    queue = {"mux": "mux (direct view)", "task": "task (load-balanced)"}.get(rec.queue or "", rec.queue or "—")
    doc.field("queue", queue)
    doc.field("label", rec.label or Text("—", style=_DIM))
    doc.field("client", rec.client or Text("—", style=_DIM))
    if detail.msg_type:
        doc.field("msg type", detail.msg_type)
    if rec.run:
        doc.field("hub run", rec.run)
    doc.field("submitted", _when(rec.submitted, now))
    doc.field("started", _when(rec.started, now))
    doc.field("completed", _when(rec.completed, now))
    doc.field("received", _when(rec.received, now))
    if rec.submitted and rec.started:
        doc.field("waited", _duration(max(0.0, (rec.started - rec.submitted).total_seconds())))
    doc.field("duration", _duration(rec.duration))
    doc.field("stdout", f"{_size(rec.stdout_size if rec.stdout_size is not None else len(detail.stdout))}")
    doc.field("stderr", f"{_size(rec.stderr_size if rec.stderr_size is not None else len(detail.stderr))}")
    if rec.resubmitted:
        doc.field("resubmitted", Text(f"→ {rec.resubmitted}", style="cyan"))
    if detail.resubmitted_from:
        doc.field("resubmit of", Text(f"← {detail.resubmitted_from}", style="cyan"))

    chain = list(lineage)
    if len(chain) > 1:
        doc.heading(f"Lineage ({len(chain)} attempts)  o: original  l: latest")
        for i, item in enumerate(chain, 1):
            if isinstance(item, TaskRecord):
                mid = item.msg_id
                line = Text.assemble(f"{i:>4}. ", mid, "  ", state_text(item.state))
                if item.ename:
                    line.append(f"  {fmt.error_text(item.ename, item.evalue)}", style="red")
            else:
                mid = item
                line = Text.assemble(f"{i:>4}. ", mid, ("  (not in the list)", _DIM))
            if mid == rec.msg_id:
                line.append("   ◀ this task", style="bold")
            doc.add(line)

    if detail.traceback:
        doc.heading("Traceback")
        for entry in detail.traceback:
            for part in entry.splitlines() or [""]:
                text = Text.from_ansi(part.expandtabs(8), no_wrap=True)
                if len(text.plain) > MAX_LINE:
                    text = text[:MAX_LINE]
                doc.add(text)
    _add_output(doc, "Stdout", detail.stdout, show_all)
    _add_output(doc, "Stderr", detail.stderr, show_all)
    if detail.code:
        doc.heading("Code")
        doc.lines.extend(_code_lines(detail.code))
    result = detail.execute_result
    if result:
        doc.heading("Result")
        data = result.get("data") if isinstance(result, dict) else None
        if isinstance(data, dict) and isinstance(data.get("text/plain"), str):
            doc.lines.extend(data["text/plain"].splitlines())
        else:
            doc.lines.extend(_pretty(result))
    content = detail.result_content
    if content and detail.traceback and "traceback" in content:
        content = {k: v for k, v in content.items() if k != "traceback"}  # drawn above, in colour
    for title, value in (
        ("Result content", content),
        ("Metadata", detail.metadata),
        ("Result metadata", detail.result_metadata),
        ("Header", detail.header),
        ("Result header", detail.result_header),
    ):
        if value:
            doc.heading(title)
            doc.lines.extend(_pretty(value))
    return doc.finish()


def python_snippet(msg_id: str, connection_file: str | None = None) -> str:
    """A ready-to-paste snippet to reproduce/inspect the task with ipyparallel's own client."""
    target = repr(str(connection_file)) if connection_file else ""
    return (
        "import ipyparallel as ipp\n"
        f"rc = ipp.Client({target})\n"
        f"ar = rc.get_result({msg_id!r})  # ar.get() returns the result or re-raises the remote error\n"
        f"# rc.resubmit([{msg_id!r}])\n"
        f"rc.db_query({{'msg_id': {msg_id!r}}})\n"
    )


# -- the view ------------------------------------------------------------------------------------


class DocumentView(ScrollView, can_focus=True):
    """Draws a Document line by line (line API); highlights search matches while drawing."""

    DEFAULT_CSS = """
    DocumentView { height: 1fr; background: $surface; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.document = Document()
        self.query_text = ""
        self.matches: list[tuple[int, int]] = []  # (line, column) of each match
        self.current = -1
        self._cache: LRUCache[tuple[int, int], Strip] = LRUCache(1024)
        self._gen = 0

    def set_document(self, document: Document) -> None:
        self.document = document
        self.matches, self.current = [], -1
        self._invalidate()
        self.virtual_size = Size(document.width + 1, len(document.lines))
        self.refresh()

    def set_matches(self, query_text: str, matches: list[tuple[int, int]], current: int) -> None:
        self.query_text, self.matches, self.current = query_text, matches, current
        self._invalidate()
        self.refresh()

    def _invalidate(self) -> None:
        self._gen += 1
        self._cache.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        if index >= len(self.document.lines):
            return Strip.blank(width, style)
        strip = self._cache.get((index, self._gen))
        if strip is None:
            text = text_of(self.document.lines[index])
            if self.query_text:
                self._highlight(text, index)
            segments = list(text.render(self.app.console))
            strip = Strip(segments, text.cell_len)
            self._cache[(index, self._gen)] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_style(style)

    def _highlight(self, text: Text, index: int) -> None:
        plain = text.plain
        needle, haystack = _case(self.query_text, plain)
        current = self.matches[self.current] if 0 <= self.current < len(self.matches) else None
        start = haystack.find(needle)
        while start >= 0 and needle:
            text.stylize(_CURRENT if current == (index, start) else _MATCH, start, start + len(needle))
            start = haystack.find(needle, start + len(needle))

    def scroll_to_match(self, line: int, column: int) -> None:
        height = max(1, self.size.height)
        y = max(0, line - height // 3)
        width = max(1, self.size.width)
        x = 0 if column < width - 10 else max(0, column - width // 3)
        self.scroll_to(x=x, y=y, animate=False, immediate=True)


def _case(query: str, plain: str) -> tuple[str, str]:
    """Smart case: a query with no capitals matches any case."""
    if query.lower() == query:
        return query, plain.lower()
    return query, plain


def find_matches(document: Document, query: str, limit: int = 100_000) -> list[tuple[int, int]]:
    """(line, column) of every match, columns in the drawn (plain) text. Smart case."""
    out: list[tuple[int, int]] = []
    if not query:
        return out
    pattern = re.compile(re.escape(query), 0 if query.lower() != query else re.IGNORECASE)
    search = pattern.search
    for index, line in enumerate(document.lines):
        if isinstance(line, str):
            # The raw line rules most lines out at C speed; only candidates are cleaned like the drawing is.
            if not search(line) and "\x1b" not in line and "\t" not in line:
                if index % 20_000 == 0:
                    time.sleep(0)  # let the UI thread have the GIL (this runs in a worker for big documents)
                continue
            plain = plain_of(line)
        else:
            plain = line.plain
        for m in pattern.finditer(plain):
            out.append((index, m.start()))
            if len(out) >= limit:
                return out
    return out


# -- the screen ----------------------------------------------------------------------------------


class DetailScreen(Screen[None]):
    """One task in full. `escape` returns to the list exactly where it was (the list is not touched)."""

    DEFAULT_CSS = """
    DetailScreen { layout: vertical; }
    DetailScreen #detail-title { height: 1; padding: 0 1; background: $panel; }
    DetailScreen #detail-status { height: 1; padding: 0 1; color: $text-muted; }
    DetailScreen #detail-error { height: auto; padding: 1 2; color: $error; display: none; }
    DetailScreen LoadingIndicator { height: 3; }
    DetailScreen #detail-search { dock: bottom; display: none; margin-bottom: 1; }
    DetailScreen.-searching #detail-search { display: block; }
    """

    BINDINGS = [
        Binding("escape", "back", "Back", id="detail.back"),
        Binding("q", "back", "Back", show=False, id="detail.back_q"),
        Binding("slash,ctrl+f", "search", "Search", id="detail.search"),
        Binding("n", "next_match", "Next", id="detail.next_match"),
        Binding("N", "previous_match", "Prev", id="detail.previous_match"),
        Binding("c", "copy_id", "Copy id", id="detail.copy_id"),
        Binding("y", "copy_snippet", "Copy snippet", id="detail.copy_snippet"),
        Binding("r", "resubmit", "Resubmit", id="detail.resubmit"),
        Binding("p", "purge", "Purge", id="detail.purge"),
        Binding("o", "original", "Original", id="detail.original"),
        Binding("l", "latest", "Latest", id="detail.latest"),
        Binding("a", "show_all", "Show all", id="detail.show_all"),
        Binding("right_square_bracket", "next_section", "Next section", show=False, id="detail.next_section"),
        Binding("left_square_bracket", "previous_section", "Prev section", show=False, id="detail.previous_section"),
        Binding("f5", "reload", "Reload", show=False, id="detail.reload"),
        Binding("question_mark", "help", "Help", show=False, id="detail.help"),
    ]

    class Loaded(Message):
        def __init__(self, msg_id: str, detail: TaskDetail, document: Document, chain: list[str]) -> None:
            super().__init__()
            self.msg_id, self.detail, self.document, self.chain = msg_id, detail, document, chain

    class Failed(Message):
        def __init__(self, msg_id: str, error: str) -> None:
            super().__init__()
            self.msg_id, self.error = msg_id, error

    class Searched(Message):
        def __init__(self, query_text: str, matches: list[tuple[int, int]]) -> None:
            super().__init__()
            self.query_text, self.matches = query_text, matches

    def __init__(self, msg_id: str, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.msg_id = msg_id
        self.detail: TaskDetail | None = None
        self.chain: list[str] = []
        self.show_all = False
        self.loading_detail = True  # from the start: on_mount begins the load
        self.error: str | None = None
        self._seen_version = -1
        self._shown: str | None = None
        self._search_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(self.msg_id), id="detail-title")
        yield LoadingIndicator(id="detail-loading")
        yield Static("", id="detail-error")
        yield DocumentView(id="detail-doc")
        yield Static("", id="detail-status")
        yield Input(placeholder="search the detail (enter: next match, escape: close)", id="detail-search")
        yield Footer()

    def on_mount(self) -> None:
        self.load()
        self.set_interval(1.0, self._follow_store, name="detail-follow")

    def _follow_store(self) -> None:
        """Reload when the task moves on (completes, is resubmitted); say so when it is gone (purged)."""
        if self.detail is None or self.loading_detail or self.app.screen is not self:
            return
        store = self.app.store
        if store.version == self._seen_version:
            return
        self._seen_version = store.version
        rec = store.get(self.msg_id)
        if rec is None:
            self._status("this task is no longer in the source (purged or culled); escape: back")
            return
        old = self.detail.record
        # pending vs queued/running may differ between the store and a detail fetch: compare done-ness only
        if (rec.state.is_done, rec.resubmitted) != (old.state.is_done, old.resubmitted):
            self.detail = None
            self.load()

    # -- loading --

    @property
    def view(self) -> DocumentView:
        return self.query_one("#detail-doc", DocumentView)

    def load(self) -> None:
        self.loading_detail = True
        self.query_one("#detail-loading").display = True
        self.query_one("#detail-error").display = False
        self._fetch(self.msg_id, self.show_all, self.detail if self.detail and self.detail.record.msg_id == self.msg_id else None)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False, description="load a task's detail")
    def _fetch(self, msg_id: str, show_all: bool, cached: TaskDetail | None) -> None:
        app = self.app
        try:
            detail = cached if cached is not None else app.source.detail(msg_id)
            store = app.store
            chain = store.lineage(msg_id)
            if detail.resubmitted_from and detail.resubmitted_from not in chain:
                chain.insert(0, detail.resubmitted_from)
            known = {r.msg_id: r for r in store.get_many(chain)} if len(chain) > 1 else {}
            records: list[TaskRecord | str] = [known.get(m, m) for m in chain]
            document = build_document(detail, now=app.now(), lineage=records, show_all=show_all)
        except Exception as exc:  # a SourceError is one line already; anything else must not kill the app
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.post_message(self.Failed(msg_id, message))
            return
        self.post_message(self.Loaded(msg_id, detail, document, chain))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        if event.msg_id != self.msg_id:
            return
        self.loading_detail = False
        self.detail, self.chain = event.detail, event.chain
        self.query_one("#detail-loading").display = False
        rec = event.detail.record
        title = Text.assemble((rec.msg_id, "bold"), "  ", state_text(rec.state))
        if rec.ename:
            title.append(f"  {fmt.error_text(rec.ename, rec.evalue)}", style="red")
        if len(event.chain) > 1:
            title.append(f"  attempt {event.chain.index(rec.msg_id) + 1 if rec.msg_id in event.chain else '?'}"
                         f"/{len(event.chain)}", style="cyan")
        self.query_one("#detail-title", Static).update(title)
        view = self.view
        same_task = bool(view.document.lines) and self._shown == event.msg_id
        keep = view.scroll_offset
        view.set_document(event.document)
        if same_task:  # a reload (show all, the task moved on): stay where the reader was
            view.scroll_to(x=keep.x, y=keep.y, animate=False, immediate=True)
        self._shown = event.msg_id
        if not self.query_one("#detail-search", Input).has_focus:  # never take the keys from a search being typed
            view.focus()
        hidden = event.document.truncated
        if hidden:
            self._status(", ".join(f"{k}: {_size(v)} hidden" for k, v in hidden.items()) + " — a: show all")
        else:
            self._status("")
        if self.query_one("#detail-search", Input).value:
            self._run_search(self.query_one("#detail-search", Input).value)

    @on(Failed)
    def _failed(self, event: Failed) -> None:
        if event.msg_id != self.msg_id:
            return
        self.loading_detail = False
        self.error = event.error
        self.query_one("#detail-loading").display = False
        error = self.query_one("#detail-error", Static)
        error.update(Text(f"Cannot load {event.msg_id}: {event.error}"))
        error.display = True

    def _status(self, text: str) -> None:
        self.query_one("#detail-status", Static).update(Text(text))

    # -- actions --

    def action_help(self) -> None:
        from .help import HelpScreen

        self.app.push_screen(HelpScreen())

    def action_back(self) -> None:
        if self.has_class("-searching"):
            self._close_search()
            return
        self.dismiss(None)

    def action_reload(self) -> None:
        self.detail = None
        self.load()

    def action_show_all(self) -> None:
        if self.detail is None or not self.view.document.truncated:
            self.notify("nothing is hidden", timeout=2)
            return
        self.show_all = True
        self._status("loading the full output…")
        self.load()

    def action_search(self) -> None:
        self.add_class("-searching")
        self.query_one("#detail-search", Input).focus()

    def _close_search(self) -> None:
        self.remove_class("-searching")
        self.view.focus()

    @on(Input.Changed, "#detail-search")
    def _search_changed(self, event: Input.Changed) -> None:
        self._run_search(event.value)

    @on(Input.Submitted, "#detail-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        self.remove_class("-searching")
        self.view.focus()
        if self.view.matches:
            self._goto(self.view.current if self.view.current >= 0 else 0)

    def _run_search(self, query_text: str) -> None:
        document = self.view.document
        if len(document.lines) < 20_000:
            self._apply_matches(query_text, find_matches(document, query_text))
            return
        # A big document is searched in a thread, once typing pauses (a thread cannot be cancelled:
        # one search per keystroke would pile up).
        if self._search_timer is not None:
            self._search_timer.stop()
        self._status(f"searching {len(document.lines):,} lines…")
        self._search_timer = self.set_timer(0.3, lambda: self._search_worker(document, query_text))

    # An explicit description: without one, @work builds it from repr() of the arguments (a whole document).
    @work(thread=True, exclusive=True, group="detail-search", exit_on_error=False, description="search the detail")
    def _search_worker(self, document: Document, query_text: str) -> None:
        self.post_message(self.Searched(query_text, find_matches(document, query_text)))

    @on(Searched)
    def _searched(self, event: Searched) -> None:
        if event.query_text == self.query_one("#detail-search", Input).value:
            self._apply_matches(event.query_text, event.matches)

    def _apply_matches(self, query_text: str, matches: list[tuple[int, int]]) -> None:
        view = self.view
        top = view.scroll_offset.y
        current = next((i for i, (line, _) in enumerate(matches) if line >= top), 0) if matches else -1
        view.set_matches(query_text, matches, current)
        if matches:
            self._goto(current)
        elif query_text:
            self._status(f"no match for {query_text!r}")
        else:
            self._status("")

    def _goto(self, index: int) -> None:
        view = self.view
        if not view.matches:
            return
        index %= len(view.matches)
        view.set_matches(view.query_text, view.matches, index)
        line, column = view.matches[index]
        view.scroll_to_match(line, column)
        hidden = "  — outputs are cut, a: search all of them" if view.document.truncated else ""
        self._status(f"match {index + 1:,}/{len(view.matches):,} for {view.query_text!r}  (n/N: next/previous){hidden}")

    def action_next_match(self) -> None:
        if not self.view.matches:
            self.notify("no search: press / to search", timeout=2)
            return
        self._goto(self.view.current + 1)

    def action_previous_match(self) -> None:
        if not self.view.matches:
            self.notify("no search: press / to search", timeout=2)
            return
        self._goto(self.view.current - 1)

    def _section_starts(self) -> list[int]:
        return sorted(self.view.document.sections.values())

    def action_next_section(self) -> None:
        top = self.view.scroll_offset.y
        later = [s for s in self._section_starts() if s > top]
        if later:
            self.view.scroll_to(y=later[0], animate=False)

    def action_previous_section(self) -> None:
        top = self.view.scroll_offset.y
        earlier = [s for s in self._section_starts() if s < top]
        self.view.scroll_to(y=earlier[-1] if earlier else 0, animate=False)

    def action_copy_id(self) -> None:
        self.app.copy_to_clipboard(self.msg_id)
        self.notify(f"copied msg_id {self.msg_id}", timeout=3)

    def action_copy_snippet(self) -> None:
        source = getattr(self.app, "source", None)
        conn = getattr(source, "connection_file", None)
        self.app.copy_to_clipboard(python_snippet(self.msg_id, str(conn) if conn else None))
        self.notify(f"copied a Python snippet for {short_id(self.msg_id)} (rc.get_result / resubmit / db_query)",
                    timeout=3)

    def _jump(self, target: str | None, what: str) -> None:
        if target is None:
            return
        if target == self.msg_id:
            self.notify(f"this task is the {what} attempt", timeout=2)
            return
        self.msg_id = target
        self.detail = None
        self.show_all = False
        self.query_one("#detail-title", Static).update(Text(target))
        self.view.set_document(Document())
        self.load()

    def action_original(self) -> None:
        self._jump(self.chain[0] if self.chain else None, "original")

    def action_latest(self) -> None:
        self._jump(self.chain[-1] if self.chain else None, "latest")

    def _act(self, action: str) -> None:
        from .actions import Scope, start_action

        start_action(self.app, action, scopes=[Scope("task", f"this task ({short_id(self.msg_id)})", [self.msg_id])])

    def action_resubmit(self) -> None:
        self._act("resubmit")

    def action_purge(self) -> None:
        self._act("purge")
