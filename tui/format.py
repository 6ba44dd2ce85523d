"""Humanized cell text, in one place: ages, durations, sizes, counts, short ids.

Pure functions of their inputs (the current time is always passed in), so snapshots are stable.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["thousands", "ago", "duration", "size", "short_id", "age_seconds", "error_text"]


def thousands(n: int | None) -> str:
    """12345 -> '12,345' (None -> '–')."""
    return "–" if n is None else f"{n:,}"


def ago(when: datetime | None, now: datetime) -> str:
    """'just now', '42 s ago', '3 min ago', '5 h ago', '2 d ago' (future times read 'in 3 min')."""
    if when is None:
        return ""
    seconds = (now - when).total_seconds()
    if -1 < seconds < 1:
        return "just now"
    text = _span(abs(seconds))
    return f"{text} ago" if seconds > 0 else f"in {text}"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def duration(seconds: float | None) -> str:
    """0.0123 -> '12 ms', 3.456 -> '3.46 s', 75 -> '1 min 15 s', 7300 -> '2 h 1 min'."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes} min {secs} s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60} min"


def age_seconds(seconds: float | None) -> str:
    """Data age for the status line: '<1 s', '4 s', '12 s', '3 min'. Whole seconds: tenths would change the
    line, and repaint it, at every UI tick."""
    if seconds is None:
        return "never"
    if seconds < 1:
        return "<1 s"
    if seconds < 10:
        return f"{int(seconds)} s"
    return _span(seconds)


def size(n: int | None) -> str:
    """Bytes: 0 -> '0 B', 1536 -> '1.5 KiB' (None -> '')."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def short_id(msg_id: str, width: int = 16) -> str:
    """A msg_id that fits `width` and still tells tasks apart.

    Hub msg_ids are '{session}_{pid}_{counter}': the session prefix is shared by every task of a client,
    so keep its first 8 characters and as much of the distinguishing tail as fits.
    """
    if len(msg_id) <= width:
        return msg_id
    head, sep, tail = msg_id.partition("_")
    if sep and len(tail) + 2 <= width:
        keep = min(8, width - len(tail) - 1)
        return f"{head[:keep]}…{tail}"
    return "…" + msg_id[-(width - 1):]


def error_text(ename: str | None, evalue: str | None, *, whole: bool = False) -> str:
    """'ValueError: bad value 7': on one line (the message's first), or with the `whole` message. No colon
    without a message: the scheduler's TaskTimeout has none."""
    if not ename and not evalue:
        return ""
    text = (evalue or "").strip()
    message = text if whole else next(iter(text.splitlines()), "")
    if ename and message:
        return f"{ename}: {message}"
    return ename or message
