"""How values read on screen: times, params, metrics, checkpoints, commits."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

METRICS_IN_CELL = 60  # characters of metrics shown in an ls cell before "..."


def now() -> dt.datetime:
    """The current time (tests pin it)."""
    return dt.datetime.now(dt.timezone.utc)


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
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return number_text(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def number_text(value: float, digits: int | None = None) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if digits is not None:
        return f"{value:.{digits}g}"
    return repr(value)


def metric_text(value: Any) -> str:
    """A metric in a table cell: numbers to 4 significant digits."""
    if isinstance(value, float):
        return number_text(value, 4)
    return value_text(value)


def metrics_brief(checkpoint: Checkpoint, width: int = METRICS_IN_CELL) -> str:
    """`loss=0.3333, accuracy=0.7`: the primary metric first, then the rest by name."""
    metrics = checkpoint.metrics or {}
    primary = (checkpoint.primary_metric or {}).get("name")
    names = sorted(metrics, key=lambda n: (n != primary, n))
    text = ", ".join(f"{n}={metric_text(metrics[n])}" for n in names)
    return text if len(text) <= width else text[: width - 3] + "..."


def checkpoint_cell(checkpoint: Checkpoint | None) -> str:
    """`4ed2649 (step 2: loss=0.3333, accuracy=0.7)` for an ls column."""
    if checkpoint is None:
        return ""
    step = f"step {checkpoint.step}" if checkpoint.step is not None else ""
    metrics = metrics_brief(checkpoint)
    inner = ": ".join(part for part in (step, metrics) if part)
    return f"{checkpoint.short_id()} ({inner})" if inner else checkpoint.short_id()


def commit_cell(info: dict[str, Any] | None) -> str:
    """`a1b2c3d main` (`*` when there were uncommitted changes) for an ls column."""
    if not info:
        return ""
    commit = (info.get("commit") or "")[:7] or "(none)"
    dirty = "*" if info.get("dirty") else ""
    branch = info.get("branch") or "(detached)"
    return f"{commit}{dirty} {branch}"
