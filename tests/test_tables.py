"""Tables and aligned fields on screen: wide characters (CJK, emoji) take two terminal columns,
combining marks none; control characters and escape sequences read from storage are shown
escaped, never sent to the terminal."""

from __future__ import annotations

import time
import unicodedata

import pytest

import git_keepsake as keepsake
from git_keepsake import metadata
from git_keepsake.cli import format as cli_format
from git_keepsake.cli import main
from git_keepsake.text import printable

from .test_cli import NOW, Clock

CJK = "数据集"
CAFE = "cafe\u0301"  # e + COMBINING ACUTE ACCENT: 4 columns, 5 code points
ROCKET = "\U0001f680"
WIDE_VALUES = [CJK, CAFE, ROCKET + "x", "mnist-long-ascii"]


def columns(text: str) -> int:
    """Terminal columns, computed here independently of the code under test (good enough for
    the characters these tests use: no ZWJ sequences or variation selectors)."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return width


def column_of(line: str, text: str, last: bool = False) -> int:
    """The terminal column at which `text` starts in `line`."""
    index = line.rfind(text) if last else line.find(text)
    assert index >= 0, (text, line)
    return columns(line[:index])


@pytest.fixture
def pinned(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    clock = Clock()
    monkeypatch.setattr(metadata, "now", lambda: clock.time)
    monkeypatch.setattr(cli_format, "now", lambda: NOW)
    yield clock
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.fixture
def run(capsys):
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def record(params, metrics=None):
    experiment = keepsake.init(params=params)
    experiment.checkpoint(
        step=1,
        metrics=metrics or {"loss": 0.5},
        primary_metric=("loss", "minimize"),
        quiet=True,
    )
    experiment.stop()
    return experiment


# --- ls ---


def test_ls_columns_line_up_after_wide_and_combining_params(git_project, pinned, run):
    experiments = []
    for n, value in enumerate(WIDE_VALUES):
        pinned.at(n)
        experiments.append(record({"dataset": value}))
    code, out, err = run("ls")
    assert (code, err) == (0, "")
    header, *lines = out.splitlines()
    assert len(lines) == len(WIDE_VALUES)
    best = column_of(header, "BEST CHECKPOINT")
    latest = column_of(header, "LATEST CHECKPOINT")
    for experiment, line in zip(experiments, lines, strict=True):
        cell = f"{experiment.best().short_id()} (step 1"
        assert column_of(line, cell) == best, line
        assert column_of(line, cell, last=True) == latest, line
    assert f"dataset={CJK}" in out and f"dataset={CAFE}" in out


def test_ls_wide_characters_exact(git_project, pinned, run):
    """After 数据集 (3 code points, 6 columns), the padding is what the columns need."""
    wide = record({"dataset": CJK})
    pinned.at(1)
    record({"dataset": "abcdefghijk"})
    line = run("ls")[1].splitlines()[1]
    # dataset=abcdefghijk is 19 columns, dataset=数据集 14: 5 spaces, and 2 between columns.
    assert f"  dataset={CJK}       {wide.best().short_id()} (step 1" in line


# --- show ---


def test_show_fields_line_up_after_wide_names(git_project, pinned, run):
    params = {CJK: "v1", CAFE: "v2", ROCKET: "v3", "lr": "v4", "a-long-ascii-name": "v5"}
    experiment = record(params)
    code, out, err = run("show", experiment.short_id())
    assert (code, err) == (0, "")
    section = out.split("\nParams\n")[1].split("\n\n")[0].splitlines()
    assert len(section) == len(params)
    starts = {column_of(line, "v" + line.rstrip()[-1], last=True) for line in section}
    assert starts == {len("a-long-ascii-name: ")}


def test_show_checkpoint_table_lines_up_after_wide_metric_names(git_project, pinned, run):
    # Names sort loss, 准确率, 🚀speed: the CJK one is a padded (not last) column.
    experiment = record({"lr": 0.1}, {"loss": 0.5, "准确率": 0.25, ROCKET + "speed": 7.5})
    out = run("show", experiment.short_id())[1]
    table = out.split("\nCheckpoints\n")[1].splitlines()
    header, row = table[0], table[1]
    assert header.endswith("LOSS  准确率  " + ROCKET + "SPEED")
    assert column_of(row, "0.25") == column_of(header, "准确率")
    assert column_of(row, "7.5", last=True) == column_of(header, ROCKET + "SPEED")


def test_show_checkpoint_fields_line_up_after_wide_metric_names(git_project, pinned, run):
    experiment = record({"lr": 0.1}, {"loss": 0.5, CJK: 0.25})
    out = run("show", experiment.latest().short_id())[1]
    section = out.split("\nMetrics\n")[1].split("\n\n")[0].splitlines()
    assert section == ["loss:   0.5", f"{CJK}: 0.25"]


# --- diff ---


def test_diff_columns_line_up_after_wide_values(git_project, pinned, run):
    pinned.at(0)
    a = record({"dataset": CJK, "lr": 0.1, CAFE: "A3", ROCKET: ROCKET + "A4"})
    pinned.at(1)
    b = record({"dataset": "B1", "lr": "B2", CAFE: "B3", ROCKET: "B4"})
    code, out, err = run("diff", a.short_id(), b.short_id())
    assert (code, err) == (0, "")
    section = out.split("\nParams\n")[1].split("\n\n")[0].splitlines()
    assert len(section) == 4
    a_values = {"dataset": CJK, "lr": "0.1", CAFE: "A3", ROCKET: ROCKET + "A4"}
    a_columns = set()
    for line in section:
        name = next(n for n in a_values if line.startswith(n + ":"))
        a_columns.add(column_of(line[len(name) + 1 :], a_values[name]) + columns(name) + 1)
    assert len(a_columns) == 1, section
    b_columns = {column_of(line, "B", last=True) for line in section}
    assert len(b_columns) == 1, section


# --- untrusted text: control characters and escape sequences ---

HOSTILE = {
    "title": "\x1b]0;pwned\x07",  # OSC: sets the terminal's title (click does not strip it)
    "red": "\x1b[31mred",  # CSI: click strips it only when not coloring
    "lines": "one\ntwo\rthree",
    "c1": "\x9b31m",  # C1 CSI, for 8-bit terminals
}
ESCAPED = {
    "title": "\\x1b]0;pwned\\x07",
    "red": "\\x1b[31mred",
    "lines": "one\\ntwo\\rthree",
    "c1": "\\x9b31m",
}


def raw_controls(text: str) -> set[str]:
    return {ch for ch in text if unicodedata.category(ch) == "Cc" and ch != "\n"}


def test_ls_escapes_control_characters_in_values(git_project, pinned, run):
    record({"other": "plain"})
    pinned.at(1)
    record(HOSTILE)
    for flag in ("--color", "--no-color"):
        code, out, err = run("ls", flag)
        assert (code, err) == (0, "")
        header, *lines = out.splitlines()
        assert len(lines) == 2  # no value made a line of its own
        assert raw_controls("\n".join(lines)) == set()
        for name, escaped in ESCAPED.items():
            assert f"{name}={escaped}" in lines[1]


def test_ls_escapes_control_characters_in_param_names(git_project, pinned, run):
    record({"a\x1b[2Jb": 1})
    out = run("ls", "--color")[1]
    assert "a\\x1b[2Jb=1" in out and "\x1b[2J" not in out


def test_show_escapes_control_characters(git_project, pinned, run):
    experiment = record({**HOSTILE, "name\x1b[2J": "v"})
    code, out, err = run("show", experiment.short_id(), "--color")
    assert (code, err) == (0, "")
    body = out.split("Params")[1].split("System")[0]
    assert raw_controls(click_unstyle(body)) == set()
    for name, escaped in ESCAPED.items():
        assert f"{name}:" in body and escaped in body
    assert "name\\x1b[2J:" in body
    # The aligned values still start in one column, escapes counted as printed.
    lines = [line for line in click_unstyle(body).splitlines() if ":" in line]
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}) == 1


def test_show_json_keeps_values_as_stored(git_project, pinned, run):
    import json

    experiment = record(HOSTILE)
    data = json.loads(run("show", experiment.short_id(), "--json")[1])
    assert data["params"] == HOSTILE


def test_diff_escapes_control_characters(git_project, pinned, run):
    a = record({"x": "\x1b]0;a\x07", "y\x1b[1m": 1})
    pinned.at(1)
    b = record({"x": "two\nlines", "y\x1b[1m": 2})
    code, out, err = run("diff", a.short_id(), b.short_id(), "--color")
    assert (code, err) == (0, "")
    section = click_unstyle(out.split("Params")[1].split("Python packages")[0])
    assert raw_controls(section) == set()
    assert "\\x1b]0;a\\x07" in section and "two\\nlines" in section and "y\\x1b[1m:" in section


def click_unstyle(text: str) -> str:
    import click

    return click.unstyle(text)


# --- the width and escaping functions themselves ---


@pytest.mark.parametrize(
    "text, width",
    [
        ("", 0),
        ("abc", 3),
        (CJK, 6),
        (CAFE, 4),
        (ROCKET, 2),
        ("\u2764", 1),  # HEAVY BLACK HEART: text presentation by default
        ("\u2764\ufe0f", 2),  # ... emoji presentation with VARIATION SELECTOR-16
        ("1\ufe0f\u20e3", 2),  # keycap 1
        ("\U0001f469\u200d\U0001f52c", 2),  # woman scientist: a ZWJ sequence is one emoji
        ("\U0001f44d\U0001f3fd", 2),  # thumbs up, medium skin tone
        ("\U0001f1eb\U0001f1f7", 2),  # a flag: two regional indicators
        ("\u200b", 0),  # ZERO WIDTH SPACE
        ("\u1112\u1161\u11ab", 2),  # a Hangul syllable from conjoining jamo
        ("\uff21", 2),  # FULLWIDTH LATIN CAPITAL LETTER A
        ("\uff71", 1),  # HALFWIDTH KATAKANA LETTER A
        ("\u0e01\u0e31", 1),  # Thai: a vowel mark with combining class 0
    ],
)
def test_display_width(text, width):
    assert cli_format.display_width(text) == width


@pytest.mark.parametrize(
    "text, shown",
    [
        ("plain", "plain"),
        (CJK, CJK),
        ("a\tb", "a\\tb"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("\x1b[31m", "\\x1b[31m"),
        ("\x85", "\\x85"),
        ("\u2028", "\\u2028"),
        ("\u202e", "\\u202e"),  # RIGHT-TO-LEFT OVERRIDE
        ("\ud800", "\\ud800"),  # a lone surrogate JSON can carry: unprintable in UTF-8
        ("\u200d\ufe0f", "\u200d\ufe0f"),  # joiners and selectors are text
    ],
)
def test_printable(text, shown):
    assert printable(text) == shown


def test_table_lines_up_wide_cells_and_keeps_ascii_output():
    from git_keepsake.cli.app import App

    app = App(color=False)
    ascii_rows = [["a", "bb", "c"], ["dddd", "e", "f"]]
    assert app.table(["X", "Y", "Z"], ascii_rows) == "X     Y   Z\na     bb  c\ndddd  e   f"
    wide = app.table(["X", "Y", "Z"], [[CJK, CAFE, "z"], ["a\x1bb", "e", "f"]])
    assert wide == f"X       Y     Z\n{CJK}  {CAFE}  z\na\\x1bb  e     f"
