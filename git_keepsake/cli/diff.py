"""`git keepsake diff`: two experiments or checkpoints side by side, differences only."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import click

from ..text import printable
from .app import App
from .format import absolute_time, display_width, value_text

if TYPE_CHECKING:
    from ..compare import Comparison


@click.command()
@click.argument("id_a", metavar="ID")
@click.argument("id_b", metavar="ID")
@click.option("--code", is_flag=True, help="Show the full code diff, not only its --stat.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.pass_obj
def diff(app: App, id_a, id_b, code, as_json):
    """Compare two experiments or checkpoints: params, packages, metrics and code.

    An experiment stands for its best checkpoint (else its latest). The code is compared
    with git, between the two experiments' snapshot commits.

    \b
    Example:
        git keepsake diff 3f8a508 b60bf65
        git keepsake diff 3f8a508 b60bf65 --code
    """
    from ..compare import compare

    comparison = compare(app.project, id_a, id_b, patch=code)
    if as_json:
        click.echo(json.dumps(diff_json(comparison), indent=2))
    else:
        app.out(render_diff(app, comparison))


def _cell(value: Any) -> str:
    from ..compare import NOT_SET

    if value is NOT_SET:
        return "(not set)"
    if isinstance(value, dt.datetime):
        return absolute_time(value)
    return printable(value_text(value))  # values from untrusted repositories: escaped


def _json_value(value: Any) -> Any:
    from ..compare import NOT_SET
    from ..metadata import format_time, to_wire

    if value is NOT_SET:
        return None
    if isinstance(value, dt.datetime):
        return format_time(value)
    return to_wire(value)


def diff_json(comparison: Comparison) -> dict[str, Any]:
    """{"a"/"b": what each side is, "sections": {section: {field: [a, b]}}, "code": ...};
    a value one side lacks is null (and its field is listed under "not_set")."""
    from ..compare import NOT_SET

    def side(s):
        return {
            "experiment": s.experiment.id,
            "checkpoint": s.checkpoint.id if s.checkpoint else None,
            "checkpoint_chosen_as": s.why,
        }

    sections = {}
    not_set = {}
    for name, rows in comparison.sections.items():
        sections[name] = {f: [_json_value(a), _json_value(b)] for f, a, b in rows}
        missing = {f: [a is NOT_SET, b is NOT_SET] for f, a, b in rows if NOT_SET in (a, b)}
        if missing:
            not_set[name] = missing
    return {
        "a": side(comparison.a),
        "b": side(comparison.b),
        "sections": sections,
        "not_set": not_set,
        "code": comparison.code,
        "code_note": comparison.code_note or None,
    }


def render_diff(app: App, comparison: Comparison) -> str:
    rows: list[list[str]] = []
    for name, entries in comparison.sections.items():
        if rows:
            rows.append(["", "", ""])
        rows.append([app.bold(name), "", ""])
        if not entries:
            rows.append([app.dim("(no difference)"), "", ""])
        for field, a, b in entries:
            rows.append([f"{printable(field)}:", _cell(a), _cell(b)])
    # Widths in terminal columns, of the plain text: styling adds invisible characters.
    shown = [[display_width(click.unstyle(c)) for c in row[:2]] for row in rows]
    widths = [max(row[i] for row in shown) + 2 for i in range(2)]
    lines = []
    for row, row_widths in zip(rows, shown, strict=True):
        cells = [c + " " * (w - n) for c, w, n in zip(row[:2], widths, row_widths, strict=True)] + [
            row[2]
        ]
        lines.append("".join(cells).rstrip())
    lines += ["", app.bold("Code")]
    if comparison.code is None:
        lines.append(app.dim(f"({printable(comparison.code_note, lines=True)})"))
    elif not comparison.code:
        lines.append(app.dim("(no difference)"))
    else:  # the code is a teammate's, or anyone's who can push
        lines.append(printable(comparison.code.rstrip("\n"), lines=True))
    return "\n".join(lines)
