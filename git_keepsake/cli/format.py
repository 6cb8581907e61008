"""How values read on screen: times, params, metrics, checkpoints, commits."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from ..records import GitInfo

METRICS_IN_CELL = 60  # characters of metrics shown in an ls cell before "..."


_ZWJ = "\u200d"
_VS16 = "\ufe0f"  # VARIATION SELECTOR-16: emoji presentation for the character before
_SEQUENCE = re.compile("[\u200d\ufe0f\U0001f3fb-\U0001f3ff]")  # ZWJ, VS16, skin tones


def display_width(text: str) -> int:
    """Terminal columns `text` takes (`printable` text): East Asian wide and fullwidth
    characters (CJK, most emoji) 2, combining marks and other zero-width characters 0. An
    emoji sequence counts as the one emoji terminals show: a character after a zero-width
    joiner or a skin-tone modifier after a wide one adds nothing, and VS16 makes a text-style
    character (U+2764 HEAVY BLACK HEART) an emoji-style 2."""
    if text.isascii():
        return len(text)
    if _SEQUENCE.search(text) is None:
        return sum(map(_WIDTHS.__getitem__, text))
    width = 0
    last = 0  # the width of the last character that took columns
    joined = False
    for ch in text:
        if ch == _ZWJ:
            joined = last == 2  # ZWJ also shapes Indic scripts: only join after an emoji
            continue
        if joined:
            joined = False
            continue
        if ch == _VS16:
            if last == 1:
                width += 1
                last = 2
            continue
        w = _WIDTHS[ch]
        if w == 2 and last == 2 and "\U0001f3fb" <= ch <= "\U0001f3ff":
            continue  # a skin tone modifies the emoji before it
        if w:
            width += w
            last = w
    return width


class _Widths(dict):
    """Terminal columns of one character, worked out once."""

    def __missing__(self, ch: str) -> int:
        self[ch] = width = _char_width(ch)
        return width


_WIDTHS = _Widths()


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf", "Cc"):
        return 1 if ch == "\xad" else 0  # a SOFT HYPHEN shows as a hyphen
    if "\u1160" <= ch <= "\u11ff" or "\ud7b0" <= ch <= "\ud7ff":
        return 0  # Hangul vowel and final jamo: part of the syllable the initial starts
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def now() -> dt.datetime:
    """The current time (tests pin it)."""
    return dt.datetime.now(dt.UTC)


def relative_time(when: dt.datetime, reference: dt.datetime | None = None) -> str:
    """`3 minutes ago`; a date once it is over 30 days old."""
    seconds = ((reference or now()) - when).total_seconds()
    if seconds < 10:
        return "just now" if seconds > -60 else when.astimezone().strftime("%Y-%m-%d")
    for limit, unit, size in (
        (60, "second", 1),
        (3600, "minute", 60),
        (86400, "hour", 3600),
        (86400 * 30, "day", 86400),
    ):
        if seconds < limit:
            count = int(seconds // size)
            if count == 1:
                return "an hour ago" if unit == "hour" else f"a {unit} ago"
            return f"{count} {unit}s ago"
    return when.astimezone().strftime("%Y-%m-%d")


def absolute_time(when: dt.datetime) -> str:
    """In the local time zone, with its name: `Sun, 22 Nov 2026 10:26:51 UTC`."""
    return when.astimezone().strftime("%a, %d %b %Y %H:%M:%S %Z")


def value_text(value: Any) -> str:
    """A param or metric value: strings bare, numbers in full, the rest as compact JSON."""
    kind = type(value)
    if kind is str:
        return value
    if kind is float:
        return number_text(value)
    if kind is int:
        return str(value)
    if value is None or kind is bool:
        return "null" if value is None else ("true" if value else "false")
    return json.dumps(value, separators=(",", ":"), default=str)


def number_text(value: float, digits: int | None = None) -> str:
    if value != value:
        return "NaN"
    if value in _INFINITIES:
        return "+Inf" if value > 0 else "-Inf"
    if digits is not None:
        return f"{value:.{digits}g}"
    return repr(value)


_INFINITIES = (math.inf, -math.inf)


def metric_text(value: Any) -> str:
    """A metric in a table cell: numbers to 4 significant digits."""
    if type(value) is float:
        return number_text(value, 4)
    return value_text(value)


def metrics_brief(checkpoint: Checkpoint, width: int = METRICS_IN_CELL) -> str:
    """`loss=0.3333, accuracy=0.7`: the primary metric first, then the rest by name."""
    metrics = checkpoint.metrics or {}
    names = sorted(metrics)
    primary = (checkpoint.primary_metric or {}).get("name")
    if primary in metrics and names[0] != primary:
        names.remove(primary)
        names.insert(0, primary)
    text = ", ".join([f"{n}={metric_text(metrics[n])}" for n in names])
    return text if len(text) <= width else text[: width - 3] + "..."


def checkpoint_cell(checkpoint: Checkpoint | None, cache: dict[str, str] | None = None) -> str:
    """`4ed2649 (step 2: loss=0.3333, accuracy=0.7)` for an ls column (`cache`: by checkpoint
    id, as the best checkpoint is often the latest too)."""
    if checkpoint is None:
        return ""
    if cache is not None:
        cell = cache.get(checkpoint.id)
        if cell is None:
            cell = cache[checkpoint.id] = checkpoint_cell(checkpoint)
        return cell
    step = f"step {checkpoint.step}" if checkpoint.step is not None else ""
    metrics = metrics_brief(checkpoint)
    inner = ": ".join(part for part in (step, metrics) if part)
    return f"{checkpoint.short_id()} ({inner})" if inner else checkpoint.short_id()


def commit_cell(info: GitInfo | None) -> str:
    """`a1b2c3d main` (`*` when there were uncommitted changes) for an ls column."""
    if info is None or info.recorded_outside_git:
        return ""  # recorded outside git: there is no commit to name
    commit = (info.commit or "")[:7] or "(none)"
    dirty = "*" if info.dirty else ""
    branch = info.branch or "(detached)"
    return f"{commit}{dirty} {branch}"
