"""The `ls --filter` / `--sort` language: parse expressions, then match and sort experiments.

A filter is `NAME OP VALUE`; OP is one of = (or ==) != < <= > >=, spaces around it optional.
Several filters must all hold.

NAME is a built-in (command, created or its alias started, host, id, status, step, user), a
param, or a metric; a bare name means the built-in, else the experiment's param, else its metric.
`params.NAME` and `metrics.NAME` say which. Metrics and `step` come from the best checkpoint
(by the primary metric); a metric it lacks, or every metric when there is no primary metric, comes
from the latest checkpoint.

VALUE is a number (1, 0.01, 1e-3, inf, nan), true, false, null, a "quoted" or 'quoted' string
(always text, may hold spaces and operators), or else a bare string. Numbers compare
numerically, ints and floats alike (true is not 1); strings exactly for = and !=, in character
order for < and > (Z before a). Values of different types are never equal and never ordered;
lists and dicts compare by their JSON text, with = and != only. NaN matches nothing but !=.
An experiment without the value (a param it does not set, a metric without checkpoints) matches
no filter on it, not even !=.

user, host, command and status compare with the value as written (`user = 1001` is text);
`status` is running or stopped; `id = 3f2a` matches IDs that start with 3f2a (case-insensitive).
`created` compares with the whole period a date or time names: `created = 2026-11-01` is that
day, `created > 2026-11-01` after it, `created >= 2026-11-01T10:00` from that minute on. Dates and
times are in the local time zone unless they end in Z or an offset (+01:00).

`--sort KEY` or `KEY-desc` takes the same names. Missing values go last either way; numbers come
before NaN, then strings, booleans, times, lists and dicts, then null. Ties keep their order.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument
from .metadata import to_wire
from .records import ExperimentRecord

# For `ls --help`: each example must parse (tests check it).
FILTER_HELP = """\
  --filter "learning_rate >= 0.01"    a param, or a metric of the best (else latest) checkpoint
  --filter "status = running" --filter "step > 100"    several filters must all hold
  --filter "created >= 2026-11-01"    local time unless it ends in Z or +01:00
  --filter 'command = "python train.py --lr=0.1"'    quote values with spaces or operators
  --sort loss, --sort created-desc    missing values sort last"""

BUILTINS = ("command", "created", "host", "id", "status", "step", "user")
ALIASES = {"started": "created"}
_RESERVED = {*BUILTINS, *ALIASES}
_TEXT_BUILTINS = {"command", "host", "user"}

_EXAMPLE = 'e.g. --filter "loss < 0.5"'
_SORT_EXAMPLE = "e.g. --sort loss, --sort created-desc"
_OPERATOR_CHARS = "=!<>"
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.I)
_TIME = re.compile(
    r"(\d{4})-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?)?)?",
    re.I,
)
_MAX_NAMES_SHOWN = 40
_MISSING: tuple[bool, Any] = (False, None)


@dataclass(frozen=True)
class Period:
    """The span of time a date or time names, in UTC: [start, end)."""

    start: dt.datetime
    end: dt.datetime

    def compare(self, when: Any, op: str) -> bool:
        if not isinstance(when, dt.datetime):
            return False
        when = _aware(when)
        inside = self.start <= when < self.end
        return {
            "=": inside,
            "!=": not inside,
            "<": when < self.start,
            "<=": when < self.end,
            ">": when >= self.end,
            ">=": when >= self.start,
        }[op]


@dataclass(frozen=True)
class Filter:
    """One `NAME OP VALUE` comparison (op "==" is stored as "=")."""

    name: str
    op: str
    value: Any

    def matches(self, experiment: ExperimentRecord) -> bool:
        """Whether the experiment's value satisfies this filter; never raises on odd values."""
        found, actual = value_of(experiment, self.name)
        if not found:
            return False
        if isinstance(self.value, Period):
            return self.value.compare(actual, self.op)
        if self.name == "id" and self.op in ("=", "!=") and isinstance(actual, str):
            return actual.startswith(self.value) == (self.op == "=")
        return _compare(actual, self.op, self.value)


def parse_filter(expression: str) -> Filter:
    """A Filter from `NAME OP VALUE` (syntax and built-in values only: names are not checked)."""
    text = expression.strip() if isinstance(expression, str) else ""
    if not text:
        raise InvalidArgument("empty filter: expected NAME OP VALUE", hint=_EXAMPLE)
    at = next((i for i, c in enumerate(text) if c in _OPERATOR_CHARS), None)
    op = None
    if at is not None:
        op = text[at : at + 2] if text[at : at + 2] in ("==", "!=", "<=", ">=") else text[at]
    if op is None or op == "!":
        raise InvalidArgument(
            f"filter {expression!r} has no operator (one of = != < <= > >=)", hint=_EXAMPLE
        )
    name, raw = text[:at].strip(), text[at + len(op) :].strip()
    if not name:
        raise InvalidArgument(f"filter {expression!r} has no name before {op!r}", hint=_EXAMPLE)
    if not raw:
        raise InvalidArgument(f"filter {expression!r} has no value after {op!r}", hint=_EXAMPLE)
    for prefix, kind in (("params.", "param"), ("metrics.", "metric")):
        if name == prefix:
            raise InvalidArgument(
                f"filter {expression!r} has no {kind} name after {prefix!r}",
                hint=f'e.g. --filter "{prefix}{"lr" if kind == "param" else "loss"} < 0.5"',
            )
    value, written = _parse_value(raw, expression)
    name = ALIASES.get(name, name)
    op = "=" if op == "==" else op
    return Filter(name, op, _builtin_value(name, value, written, expression))


def apply_filters(experiments: Iterable[ExperimentRecord], expressions: Iterable[str]) -> list:
    """The experiments matching every expression, in their order.

    Raises InvalidArgument for a malformed expression, or for a name that is neither built-in
    nor a param or metric of any of the experiments (not checked when there are none).
    """
    if isinstance(expressions, str):
        expressions = [expressions]
    filters = [parse_filter(e) for e in expressions]
    experiments = list(experiments)
    _check_names([f.name for f in filters], experiments)
    return [e for e in experiments if all(f.matches(e) for f in filters)]


def sort_experiments(experiments: Iterable[ExperimentRecord], key: str) -> list:
    """Experiments sorted by `KEY` or `KEY-desc` (stable; missing values last either way)."""
    text = key.strip() if isinstance(key, str) else ""
    descending = text.lower().endswith("-desc")
    if descending:
        text = text[: -len("-desc")]
    elif text.lower().endswith("-asc"):
        text = text[: -len("-asc")]
    name = ALIASES.get(text.strip(), text.strip())
    if not name:
        raise InvalidArgument(f"empty sort key {key!r}", hint=_SORT_EXAMPLE)
    experiments = list(experiments)
    _check_names([name], experiments)
    keyed = [(_sort_key(*value_of(e, name)), e) for e in experiments]
    # Order values within their group (reversed if descending; Python keeps ties stable either
    # way), then put the groups back in their fixed order so missing values stay last.
    keyed.sort(key=lambda item: item[0], reverse=descending)
    keyed.sort(key=lambda item: item[0][0])
    return [e for _, e in keyed]


def value_of(experiment: ExperimentRecord, name: str) -> tuple[bool, Any]:
    """(True, value) of a filter/sort name for one experiment, or (False, None) if it has none."""
    name = ALIASES.get(name, name)
    if name in BUILTINS:
        return _builtin(experiment, name)
    if name.startswith("params."):
        return _param(experiment, name[len("params.") :])
    if name.startswith("metrics."):
        return _metric(experiment, name[len("metrics.") :])
    found = _param(experiment, name)
    return found if found[0] else _metric(experiment, name)


def available_names(experiments: Iterable[ExperimentRecord]) -> list[str]:
    """Names a filter or sort can use: built-ins, then params, then metrics, each sorted.

    A param or metric hidden by a name before it (a param called "step", a metric that is also
    a param) is listed with its `params.` / `metrics.` prefix.
    """
    params, metrics = _names(list(experiments))
    shown_params = sorted(f"params.{n}" if n in _RESERVED else n for n in params)
    shown_metrics = sorted(f"metrics.{n}" if n in _RESERVED or n in params else n for n in metrics)
    return [*BUILTINS, *shown_params, *shown_metrics]


# --- parsing values ---


def _parse_value(raw: str, expression: str) -> tuple[Any, str]:
    """(typed value, text as written without quotes)."""
    if raw[0] in "\"'":
        if len(raw) < 2 or raw[-1] != raw[0]:
            raise InvalidArgument(
                f"filter {expression!r} has a quoted value without its closing quote",
                hint="""quote the whole value, e.g. --filter 'command = "python train.py"'""",
            )
        return raw[1:-1], raw[1:-1]
    if raw[0] == "!" or any(c in raw for c in "=<>"):
        raise InvalidArgument(
            f"filter {expression!r} has more than one operator",
            hint="give one comparison per --filter, and quote a value that contains = < > or !: "
            """--filter 'command = "python train.py --lr=0.1"'""",
        )
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true", raw
    if lowered == "null":
        return None, raw
    if _INT.fullmatch(raw):
        return int(raw), raw
    if _FLOAT.fullmatch(raw):
        return float(raw), raw
    return raw, raw


def _builtin_value(name: str, value: Any, written: str, expression: str) -> Any:
    """The value a built-in compares with, checked now so a typo fails before any listing."""
    if name == "created":
        return _period(written, expression)
    if name == "step":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgument(
                f"step is compared with a number, not {written!r}",
                hint='e.g. --filter "step >= 100"',
            )
        return value
    if name == "status":
        if written.lower() not in ("running", "stopped"):
            raise InvalidArgument(
                f"status is 'running' or 'stopped', not {written!r}",
                hint='e.g. --filter "status = running"',
            )
        return written.lower()
    if name == "id":
        return written.lower()
    if name in _TEXT_BUILTINS:
        return written
    return value


def _period(text: str, expression: str) -> Period:
    """The period a date (a day), YYYY-MM (a month) or time (a minute, second...) names."""
    match = _TIME.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError(text)
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        start = dt.datetime(
            int(year),
            int(month),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
        if day is None:
            end = dt.datetime(start.year + start.month // 12, start.month % 12 + 1, 1)
        elif hour is None:
            end = start + dt.timedelta(days=1)
        elif second is None:
            end = start + dt.timedelta(minutes=1)
        elif fraction is None:
            end = start + dt.timedelta(seconds=1)
        else:
            end = start + dt.timedelta(microseconds=10 ** (6 - len(fraction)))
        if zone:
            tz = _offset(zone)
            start, end = start.replace(tzinfo=tz), end.replace(tzinfo=tz)
        # A naive datetime's astimezone() reads it as the local time zone (DST included).
        return Period(start.astimezone(dt.UTC), end.astimezone(dt.UTC))
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"created is compared with a date or time, not {text!r} (in {expression!r})",
            hint='e.g. --filter "created >= 2026-11-01" or --filter "created > 2026-11-01T10:00"',
        ) from None


def _offset(zone: str) -> dt.timezone:
    if zone.upper() == "Z":
        return dt.UTC
    digits = zone[1:].replace(":", "")
    delta = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return dt.timezone(-delta if zone[0] == "-" else delta)


# --- looking values up ---


def _builtin(experiment: ExperimentRecord, name: str) -> tuple[bool, Any]:
    if name == "step":
        for checkpoint in (experiment.best(), experiment.latest()):
            if checkpoint is not None and checkpoint.step is not None:
                return True, checkpoint.step
        return _MISSING
    if name == "status":
        return True, "running" if experiment.is_running() else "stopped"
    value = getattr(experiment, name)
    return (value is not None, value)


def _param(experiment: ExperimentRecord, name: str) -> tuple[bool, Any]:
    params = experiment.params or {}
    return (True, params[name]) if name in params else _MISSING


def _metric(experiment: ExperimentRecord, name: str) -> tuple[bool, Any]:
    # best() and latest() come from the listing's summary: the checkpoint list stays unread.
    for checkpoint in (experiment.best(), experiment.latest()):
        if checkpoint is not None and checkpoint.metrics and name in checkpoint.metrics:
            return True, checkpoint.metrics[name]
    return _MISSING


def _names(experiments: list[ExperimentRecord]) -> tuple[set[str], set[str]]:
    params: set[str] = set()
    metrics: set[str] = set()
    for experiment in experiments:
        params.update(experiment.params or ())
        for checkpoint in (experiment.best(), experiment.latest()):
            if checkpoint is not None:
                metrics.update(checkpoint.metrics or ())
    return params, metrics


def _check_names(names: list[str], experiments: list[ExperimentRecord]) -> None:
    """InvalidArgument for a name no experiment has (nothing to check without experiments)."""
    unknown = [n for n in names if n not in BUILTINS]
    if not unknown or not experiments:
        return
    params, metrics = _names(experiments)
    for name in unknown:
        if name.startswith("params."):
            bare = name[len("params.") :]
            if bare not in params:
                _unknown(f"no experiment has a param called {bare!r}", name, experiments)
        elif name.startswith("metrics."):
            bare = name[len("metrics.") :]
            if bare not in metrics:
                message = f"no experiment has a metric called {bare!r}"
                _unknown(message + " in its best or latest checkpoint", name, experiments)
        elif name not in params and name not in metrics:
            _unknown(f"no built-in field, param or metric is called {name!r}", name, experiments)


def _unknown(message: str, name: str, experiments: list[ExperimentRecord]) -> None:
    names = available_names(experiments)
    close = difflib.get_close_matches(name, names, n=1)
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    if len(names) > _MAX_NAMES_SHOWN:
        shown += f", ... and {len(names) - _MAX_NAMES_SHOWN} more"
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InvalidArgument(message, hint=f"{hint}available: {shown}")


# --- comparing ---


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple, dict)):
        return "json"
    return "other"


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op in ("=", "!="):
        return _equal(actual, expected) == (op == "=")
    kind = _kind(actual)
    # NaN needs no case of its own: every ordering with NaN is False.
    return kind == _kind(expected) and kind in ("number", "string") and _ORDER[op](actual, expected)


def _equal(actual: Any, expected: Any) -> bool:
    kind, expected_kind = _kind(actual), _kind(expected)
    if kind == "json" and expected_kind == "string":
        try:
            return _json_text(actual) == _json_text(json.loads(expected))
        except ValueError:
            return False
    if kind != expected_kind or kind in ("json", "other"):
        return False
    return kind == "null" or actual == expected


def _json_text(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(to_wire(value), sort_keys=True, separators=(",", ":"), default=str)


def _sort_key(found: bool, value: Any) -> tuple[int, Any]:
    """(group, value within the group): numbers, NaN, strings, bools, times, JSON, null, missing."""
    if not found:
        return (7, 0)
    kind = _kind(value)
    if kind == "number":
        return (1, 0) if value != value else (0, value)
    if kind == "string":
        return (2, value)
    if kind == "bool":
        return (3, value)
    if isinstance(value, dt.datetime):
        return (4, _aware(value))
    if kind == "null":
        return (6, 0)
    return (5, _json_text(value))


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
