"""The Keepsake 0.4 JSON format: IDs, timestamps, values, NaN quirks, byte-exact encoding."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from typing import Any

from .errors import CorruptRepository, InvalidArgument

ID_LENGTH = 64
# How deep values (params, metrics) may nest. Readers walk them recursively, two frames a
# level: a few hundred levels in a crafted record overflowed the stack of every `ls`.
MAX_DEPTH = 200
SHORT_ID_LENGTH = 7
_ID_RE = re.compile(r"[0-9a-f]{64}")

# Go's encoding/json can't write NaN or infinities, so Keepsake stores them as these strings.
_FLOAT_TO_WIRE = {"nan": "[NaN]", "inf": "[+Infinity]", "-inf": "[-Infinity]"}
_WIRE_TO_FLOAT = {v: float(k) for k, v in _FLOAT_TO_WIRE.items()}

# Field order of Keepsake's Go structs: its files list fields in this order (maps are sorted).
EXPERIMENT_FIELDS = (
    "id",
    "created",
    "params",
    "host",
    "user",
    "config",
    "command",
    "path",
    "python_version",
    "python_packages",
    "checkpoints",
    "keepsake_version",
)
CHECKPOINT_FIELDS = ("id", "created", "metrics", "step", "path", "primary_metric")
# Nested Go structs keep their declared field order too; every other map is sorted.
_STRUCTS = {"config": ("repository", "storage"), "primary_metric": ("name", "goal")}
GOALS = ("minimize", "maximize")


def new_id() -> str:
    """A random 64-hex ID, as Keepsake makes them (not a content hash)."""
    import secrets  # hashlib and hmac come with it: not needed to read a repository

    return secrets.token_hex(ID_LENGTH // 2)


def is_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))


# --- timestamps -------------------------------------------------------------------------------

_RFC3339_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)"
)


# From Python 3.11, fromisoformat reads "...Z" and any number of fractional digits.
_FROMISOFORMAT_RFC3339 = sys.version_info >= (3, 11)


def format_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, trailing zeros trimmed like Go's RFC3339Nano."""
    when = when.astimezone(dt.UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += "." + f"{when.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_time(text: str) -> dt.datetime:
    """Parse RFC 3339 with 0 to 9 fractional digits (Go writes nanoseconds; Python keeps micro)."""
    if _FROMISOFORMAT_RFC3339 and isinstance(text, str) and text[-1:] == "Z" and "T" in text:
        try:  # 15x faster, and listings parse three times per experiment
            return dt.datetime.fromisoformat(text).astimezone(dt.UTC)
        except ValueError:
            pass
    m = _RFC3339_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac or "0").ljust(6, "0")[:6])
    if zone in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    when = dt.datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz
    )
    return when.astimezone(dt.UTC)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- values ---------------------------------------------------------------------------------


def to_json_value(value: Any, where: str) -> Any:
    """Convert a param or metric to plain JSON types, or raise InvalidArgument naming `where`.

    numpy/torch/tensorflow/jax scalars and arrays are converted (users log `loss.item()` and
    `np.float32` alike); NaN and infinities stay floats and are encoded the Keepsake way on write.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(
                    f"{where} has a key that is not a string: {key!r}",
                    hint="use string keys, e.g. str(key)",
                )
            out[key] = to_json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    converted = _from_array_library(value)
    if converted is not _UNCONVERTIBLE:
        return to_json_value(converted, where)
    raise InvalidArgument(
        f"{where} is not JSON-representable: {type(value).__name__} {value!r:.60}",
        hint="use str, int, float, bool, None, lists and dicts of them",
    )


_UNCONVERTIBLE = object()
_ARRAY_LIBRARIES = {"numpy", "torch", "tensorflow", "jax", "jaxlib"}


def _from_array_library(value: Any) -> Any:
    """Scalars/arrays from numpy, torch, tensorflow, jax, detected without importing them."""
    module = type(value).__module__.split(".")[0]
    if module not in _ARRAY_LIBRARIES:
        return _UNCONVERTIBLE
    try:
        if hasattr(value, "detach"):  # torch: leave the autograd graph and the GPU first
            value = value.detach().cpu()
        elif module == "tensorflow" and hasattr(value, "numpy"):
            value = value.numpy()
        return value.tolist()
    except Exception:
        return _UNCONVERTIBLE


def to_wire(value: Any) -> Any:
    """Replace NaN/±inf floats (anywhere) by Keepsake's marker strings."""
    if isinstance(value, float):
        if math.isnan(value):
            return "[NaN]"
        if math.isinf(value):
            return "[+Infinity]" if value > 0 else "[-Infinity]"
        return value
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


_NUMBERS = frozenset({int, float, bool, type(None)})


def from_wire(value: Any) -> Any:
    """The inverse of to_wire: Keepsake's marker strings become float NaN/±inf again."""
    kind = type(value)
    if kind is str:
        return _WIRE_TO_FLOAT.get(value, value)
    if kind is dict:
        if all(type(v) in _NUMBERS for v in value.values()):
            return value  # the usual metrics: nothing to convert, no copy
        return {k: from_wire(v) for k, v in value.items()}
    if kind is list:
        return [from_wire(v) for v in value]
    return value


# --- encoding -------------------------------------------------------------------------------


def _sorted_maps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_maps(v) for v in value]
    return value


def _encode_field(key: str, value: Any, level: int) -> str:
    order = _STRUCTS.get(key)
    if order and isinstance(value, dict):
        value = {k: value[k] for k in (*order, *sorted(set(value) - set(order))) if k in value}
    else:
        value = _sorted_maps(value)
    return _encode(to_wire(value), level)


def _encode(value: Any, level: int) -> str:
    """JSON as Go's MarshalIndent(v, "", " ") writes it, nested `level` deep."""
    text = json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False)
    return text.replace("\n", "\n" + " " * level) if level else text


def _encode_struct(fields: list[tuple[str, Any]], level: int) -> str:
    pad = " " * (level + 1)
    body = ",\n".join(f"{pad}{json.dumps(k)}: {v}" for k, v in fields)
    return "{\n" + body + "\n" + " " * level + "}"


def encode_checkpoint(checkpoint: dict[str, Any], level: int = 2) -> str:
    """One checkpoint object, at the nesting level it has inside an experiment file."""
    keys = [*CHECKPOINT_FIELDS, *(k for k in checkpoint if k not in CHECKPOINT_FIELDS)]
    fields = [(k, _encode_field(k, checkpoint.get(k), level + 1)) for k in keys]
    return " " * level + _encode_struct(fields, level)


def encode_experiment(experiment: dict[str, Any], checkpoint_texts: list[str]) -> str:
    """An experiment file: Keepsake's field order, 1-space indent, sorted maps, no final newline.

    Checkpoints arrive pre-encoded (encode_checkpoint) so that a run with thousands of them
    re-encodes only the new ones; extra fields (ours) follow Keepsake's, which ignores them.
    """
    fields = []
    for key in [*EXPERIMENT_FIELDS, *(k for k in experiment if k not in EXPERIMENT_FIELDS)]:
        if key == "checkpoints":
            text = "[\n" + ",\n".join(checkpoint_texts) + "\n ]" if checkpoint_texts else "null"
        else:
            text = _encode_field(key, experiment.get(key), 1)
        fields.append((key, text))
    return _encode_struct(fields, 0)


def decode(text: str | bytes, experiment_id: str) -> dict[str, Any]:
    """Parse one experiment's metadata file, as read from storage or git: untrusted input.

    Every field a reader uses has the type Keepsake 0.4 writes and every ID is 64 hex
    characters (a checkpoint ID becomes a storage key: `../../x` would reach outside), or the
    whole record is refused with a CorruptRepository naming what is wrong. Unknown fields pass.
    """
    try:
        data = json.loads(text)
        _check_experiment(data, experiment_id)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError too
        problem = e if isinstance(e, _Refused) else f"its metadata is not JSON ({e})"
        raise CorruptRepository(
            f"experiment {experiment_id[:SHORT_ID_LENGTH]} is refused: {problem}",
            hint="its metadata is damaged or was not written by git-keepsake or Keepsake; "
            "nothing is done with it, and the other experiments are not affected",
        ) from None
    return data


class _Refused(ValueError):
    """A metadata file that parses as JSON but is not an experiment's."""


# What a field may hold (None too: Keepsake writes null for an empty map, or omits a field).
_TEXT, _MAP, _LIST, _FLAG = "a string", "an object", "a list", "true or false"
_ALLOWED: dict[str, tuple[type, ...]] = {
    _TEXT: (str, type(None)),
    _MAP: (dict, type(None)),
    _LIST: (list, type(None)),
    _FLAG: (bool, type(None)),
}
_EXPERIMENT_TYPES = {
    "params": _MAP,
    "host": _TEXT,
    "user": _TEXT,
    "config": _MAP,
    "command": _TEXT,
    "path": _TEXT,
    "python_version": _TEXT,
    "python_packages": _MAP,
    "checkpoints": _LIST,
    "keepsake_version": _TEXT,
    "git": _MAP,  # ours
}
_CHECKPOINT_TYPES = {"metrics": _MAP, "path": _TEXT, "primary_metric": _MAP}
_GIT_TYPES = {
    "commit": _TEXT,
    "branch": _TEXT,
    "dirty": _FLAG,
    "snapshot": _TEXT,
    "remote": _TEXT,
    "imported": _FLAG,
}
_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _shown(value: Any) -> str:
    """A value in a message: its repr (control characters escaped), cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_types(data: dict[str, Any], types: dict[str, str], where: str) -> None:
    for key, kind in types.items():
        value = data.get(key)
        if type(value) not in _ALLOWED[kind]:
            raise _Refused(f"{where}{key} is {_shown(value)}, not {kind}")


def _check_time(data: dict[str, Any], where: str) -> None:
    value = data.get("created")
    try:
        if type(value) is not str:
            raise ValueError
        parse_time(value)
    except (ValueError, OverflowError):  # OverflowError: year 1 moved back to UTC
        raise _Refused(f"{where}created is {_shown(value)}, not an RFC 3339 time") from None


def _check_experiment(data: Any, experiment_id: str) -> None:
    if type(data) is not dict:
        raise _Refused(f"its metadata is {type(data).__name__}, not an object")
    if data.get("id") != experiment_id:
        raise _Refused(f"its metadata names another experiment: {_shown(data.get('id'))}")
    _check_types(data, _EXPERIMENT_TYPES, "")
    _check_time(data, "")
    packages = data.get("python_packages") or {}
    if not all(type(v) is str for v in packages.values()):
        raise _Refused("python_packages has versions that are not strings")
    for key, value in data.items():
        if key != "checkpoints" and too_deep(value):
            raise _Refused(f"{key} nests deeper than {MAX_DEPTH} levels")
    git = data.get("git")
    if git is not None:
        _check_types(git, _GIT_TYPES, "git.")
        for key in ("commit", "snapshot"):
            if git.get(key) and not _COMMIT_RE.fullmatch(git[key]):
                raise _Refused(f"git.{key} is {_shown(git[key])}, not a commit ID")
    for n, checkpoint in enumerate(data.get("checkpoints") or (), 1):
        if not _checkpoint_is_sound(checkpoint):
            _check_checkpoint(checkpoint, f"checkpoint {n} ")


_TEXTS, _MAPS = _ALLOWED[_TEXT], _ALLOWED[_MAP]
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = (dict, list)


def too_deep(value: Any) -> bool:
    """Whether `value` nests more than MAX_DEPTH containers (walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if type(item) not in _CONTAINERS:
            continue
        if level == MAX_DEPTH:
            return True
        children = item.values() if type(item) is dict else item
        stack.extend((child, level + 1) for child in children if type(child) in _CONTAINERS)
    return False


def _checkpoint_is_sound(c: Any) -> bool:
    """The common case, in one expression: an experiment can have thousands of checkpoints."""
    try:
        primary = c.get("primary_metric")
        return (
            type(c) is dict
            and type(c["id"]) is str
            and _ID_RE.fullmatch(c["id"]) is not None
            and type(c.get("metrics")) in _MAPS
            and type(c.get("path")) in _TEXTS
            and (c.get("step") is None or type(c["step"]) is int)
            and (primary is None or (type(primary) is dict and _primary_is_sound(primary)))
            and type(c["created"]) is str
            and parse_time(c["created"]) is not None
            and (_plain(c, primary) or not too_deep(c))
        )
    except (KeyError, AttributeError, ValueError, OverflowError):
        return False


def _plain(c: dict[str, Any], primary: dict[str, Any] | None) -> bool:
    """Nothing in the checkpoint nests: its own fields only, metrics of plain values."""
    metrics = c.get("metrics") or {}
    return (
        len(c) <= len(CHECKPOINT_FIELDS)
        and (primary is None or len(primary) <= 2)
        and all(type(v) in _SCALARS for v in metrics.values())
    )


def _primary_is_sound(primary: dict[str, Any]) -> bool:
    return type(primary.get("name")) is str and type(primary.get("goal", "")) is str


def _check_checkpoint(checkpoint: Any, where: str) -> None:
    """Says what is wrong with a checkpoint `_checkpoint_is_sound` refused."""
    if type(checkpoint) is not dict:
        raise _Refused(f"{where}is {_shown(checkpoint)}, not an object")
    checkpoint_id = checkpoint.get("id")
    if type(checkpoint_id) is not str or not is_id(checkpoint_id):
        raise _Refused(f"{where}has the ID {_shown(checkpoint_id)}, not 64 hex characters")
    _check_types(checkpoint, _CHECKPOINT_TYPES, where)
    _check_time(checkpoint, where)
    step = checkpoint.get("step")
    if step is not None and type(step) is not int:
        raise _Refused(f"{where}step is {_shown(step)}, not a whole number")
    if too_deep(checkpoint):
        raise _Refused(f"{where}nests deeper than {MAX_DEPTH} levels")
    primary = checkpoint["primary_metric"]
    raise _Refused(f"{where}primary_metric is {_shown(primary)}, not a name and goal")
