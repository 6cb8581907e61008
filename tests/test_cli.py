"""The CLI on repositories recorded by git-keepsake: ls/ps/show/diff/rm output, filters, IDs, errors."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import sys
import time

import pytest

import git_keepsake as keepsake
from git_keepsake import Project, metadata
from git_keepsake.cli import format as cli_format
from git_keepsake.cli import main

from .conftest import git

START = dt.datetime(2026, 11, 20, 9, 0, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 20, 12, 30, 0, tzinfo=dt.UTC)


@pytest.fixture
def pinned(monkeypatch):
    """Time and time zone fixed, so output can be compared exactly: everything is recorded at
    START until `pinned.at(minutes)` moves the clock; the CLI's "now" is NOW."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    clock = Clock()
    monkeypatch.setattr(metadata, "now", lambda: clock.time)
    monkeypatch.setattr(cli_format, "now", lambda: NOW)
    yield clock
    monkeypatch.delenv("TZ")
    time.tzset()


class Clock:
    time = START

    def at(self, minutes: int) -> None:
        self.time = START + dt.timedelta(minutes=minutes)


def ids(prefix: str):
    """A new_id() replacement: prefix, a counter, zeros."""
    counter = itertools.count(1)
    return lambda: (f"{prefix}{next(counter):02x}" + "0" * 64)[:64]


@pytest.fixture
def run(capsys):
    def run(*args: str, input: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def record(params, losses, path=None, files=None, directory=None):
    """An experiment with one checkpoint per loss (the last also saves `files`)."""
    experiment = keepsake.init(path=path, params=params)
    for step, loss in enumerate(losses):
        experiment.checkpoint(
            path=files if step == len(losses) - 1 else None,
            step=step,
            metrics={"loss": loss, "accuracy": 1 - loss},
            primary_metric=("loss", "minimize"),
            quiet=True,
        )
    experiment.stop()
    return experiment


@pytest.fixture
def three(git_project, pinned, monkeypatch):
    """Three stopped experiments in a git project, with fixed IDs and times: experiment n is
    e{n}01..., its checkpoints e{n}02..., e{n}03..."""
    experiments = []
    for n, (params, losses) in enumerate(
        [
            ({"lr": 0.1, "optimizer": "adam", "seed": 1}, [0.5, 0.4]),
            ({"lr": 0.01, "optimizer": "sgd", "seed": 1}, [0.3, 0.2, 0.25]),
            ({"lr": 1, "optimizer": "adam", "seed": 1, "depth": 3}, []),
        ],
        start=1,
    ):
        monkeypatch.setattr(metadata, "new_id", ids(f"e{n}"))
        pinned.at(n - 1)
        experiments.append(record(params, losses))
    return experiments


def test_ls_shows_commit_params_that_differ_and_checkpoints(three, run, git_project):
    code, out, err = run("ls")
    assert (code, err) == (0, "")
    head = git("rev-parse", "--short=7", "HEAD", cwd=git_project).strip()
    lines = out.splitlines()
    assert lines[0].split() == [
        "EXPERIMENT",
        "STARTED",
        "STATUS",
        "COMMIT",
        "PARAMS",
        "BEST",
        "CHECKPOINT",
        "LATEST",
        "CHECKPOINT",
    ]
    assert [line[:12].strip() for line in lines[1:]] == [e.short_id() for e in three]
    assert f"{head} main" in lines[1]
    assert "3 hours ago" in lines[1] and "stopped" in lines[1]
    # seed is 1 everywhere: hidden; depth is set on one only: shown
    assert "depth" not in lines[1] and "depth=3" in lines[3] and "seed" not in out
    assert "lr=0.1, optimizer=adam" in lines[1]
    best = three[1].best()
    assert best.step == 1
    assert f"{best.short_id()} (step 1: loss=0.2, accuracy=0.8)" in lines[2]
    latest = three[1].latest()
    assert lines[2].endswith(f"{latest.short_id()} (step 2: loss=0.25, accuracy=0.75)")


def test_ls_exact_table(three, run, git_project):
    head = git("rev-parse", "--short=7", "HEAD", cwd=git_project).strip()
    b1, b2 = three[0].best().short_id(), three[1].best().short_id()
    l2 = three[1].latest().short_id()
    expected = (
        "EXPERIMENT  STARTED      STATUS   COMMIT        PARAMS                         "
        "BEST CHECKPOINT                           LATEST CHECKPOINT\n"
        f"{three[0].short_id()}     3 hours ago  stopped  {head} main  lr=0.1, optimizer=adam         "
        f"{b1} (step 1: loss=0.4, accuracy=0.6)  {b1} (step 1: loss=0.4, accuracy=0.6)\n"
        f"{three[1].short_id()}     3 hours ago  stopped  {head} main  lr=0.01, optimizer=sgd         "
        f"{b2} (step 1: loss=0.2, accuracy=0.8)  {l2} (step 2: loss=0.25, accuracy=0.75)\n"
        f"{three[2].short_id()}     3 hours ago  stopped  {head} main  depth=3, lr=1, optimizer=adam\n"
    )
    assert run("ls")[1] == expected


def test_ls_json_schema(three, run):
    code, out, _ = run("ls", "--json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [e.id for e in three]
    assert set(rows[0]) == {
        "id",
        "created",
        "params",
        "command",
        "num_checkpoints",
        "latest_checkpoint",
        "best_checkpoint",
        "user",
        "host",
        "running",
        "status",
        "git",
    }
    assert [r["num_checkpoints"] for r in rows] == [2, 3, 0]
    assert rows[1]["best_checkpoint"]["metrics"] == {"loss": 0.2, "accuracy": 0.8}
    assert rows[2]["best_checkpoint"] is None and rows[2]["params"]["depth"] == 3
    assert set(rows[0]["git"]) == {"commit", "branch", "dirty", "snapshot", "remote"}
    assert rows[0]["created"] == "2026-11-20T09:00:00Z" and rows[0]["status"] == "stopped"
    # A second listing comes from the index: the same JSON.
    assert json.loads(run("ls", "--json")[1]) == rows


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("lr = 0.1", [0]),
        ("lr == 0.1", [0]),
        ("lr != 0.1", [1, 2]),
        ("lr < 0.1", [1]),
        ("lr <= 0.1", [0, 1]),
        ("lr > 0.1", [2]),
        ("lr >= 0.01", [0, 1, 2]),  # Keepsake 0.4.2 errors on int vs float
        ("lr >= 1.0", [2]),
        ("optimizer = adam", [0, 2]),
        ("optimizer != adam", [1]),
        ("loss < 0.3", [1]),  # the best checkpoint's loss
        ("accuracy >= 0.6", [0, 1]),
        ("step = 1", [0, 1]),
        ("depth > 2", [2]),  # only set on one: the others don't match
        ("status = stopped", [0, 1, 2]),
        ("status = running", []),
        ("created >= 2026-11-20", [0, 1, 2]),
        ("created < 2026-11-20T09:01Z", [0]),
        ("created > 2026-11-20T09:01Z", [2]),
        ("params.lr = 1", [2]),
    ],
)
def test_ls_filter_operators_and_types(three, run, expression, expected):
    code, out, err = run("ls", "-q", "--filter", expression)
    assert (code, err) == (0, "")
    assert out.split() == [three[i].id for i in expected]


def test_ls_filters_are_anded_sorted_and_limited(three, run):
    out = run("ls", "-q", "--filter", "optimizer = adam", "--filter", "lr < 1")[1]
    assert out.split() == [three[0].id]
    assert run("ls", "-q", "--sort", "loss")[1].split() == [three[i].id for i in (1, 0, 2)]
    assert run("ls", "-q", "--sort", "loss-desc")[1].split() == [three[i].id for i in (0, 1, 2)]
    assert run("ls", "-q", "--sort", "lr", "--limit", "2")[1].split() == [
        three[1].id,
        three[0].id,
    ]
    assert run("ls", "-q", "--sort", "created-desc")[1].split() == [e.id for e in reversed(three)]


@pytest.mark.parametrize(
    "args, first_line",
    [
        (
            ["--filter", "momentum > 1"],
            "error: no built-in field, param or metric is called 'momentum'",
        ),
        (["--filter", "loss <"], "error: "),
        (["--filter", "loss"], "error: "),
        (["--sort", "nope"], "error: "),
    ],
)
def test_ls_bad_filters_are_clear_errors(three, run, args, first_line):
    code, out, err = run("ls", *args)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(first_line) and len(lines) == 2
    assert lines[1].startswith("hint: ")
    if "momentum" in args[1] or "nope" in args[1]:
        assert "lr" in lines[1] and "loss" in lines[1]  # what is available


def test_ps_lists_running_experiments(git_project, pinned, run):
    done = record({"lr": 0.1}, [0.5])
    pinned.at(1)
    running = keepsake.init(params={"lr": 0.2})
    running.flush()
    running._project.repository.write_heartbeat(running.id, dt.datetime.now(dt.UTC))
    assert run("ps", "-q")[1].split() == [running.id]
    assert run("ls", "-q", "--filter", "status = stopped")[1].split() == [done.id]
    out = run("ps")[1]
    assert "running" in out and done.short_id() not in out
    running.stop()
    assert run("ps", "-q")[1] == ""


def test_user_and_host_columns_only_when_they_differ(git_project, pinned, run):
    record({"lr": 0.1}, [0.5])
    assert "USER" not in run("ls")[1] and "HOST" not in run("ls")[1]
    pinned.at(1)
    other = keepsake.init(params={"lr": 0.2})
    other.user = "alice"
    other.stop()
    lines = run("ls")[1].splitlines()
    assert "USER" in lines[0] and "HOST" not in lines[0]
    assert "alice" in lines[2]


def test_show_experiment_in_git(three, run, git_project):
    code, out, _ = run("show", three[1].short_id())
    head = git("rev-parse", "HEAD", cwd=git_project).strip()
    assert code == 0
    assert f"Commit:   {head} (main)" in out
    assert f"Snapshot: {three[1].git.snapshot}" in out
    table = out.split("Checkpoints\n")[1].splitlines()
    assert table[0].split() == ["ID", "STEP", "CREATED", "PATH", "ACCURACY", "LOSS"]
    assert table[2].startswith("*  " + three[1].best().short_id())
    assert table[-1] == "* best: lowest loss"


def test_show_json_of_a_checkpoint(three, run):
    checkpoint = three[1].latest()
    data = json.loads(run("show", checkpoint.id[:9], "--json")[1])
    assert data["id"] == checkpoint.id and data["step"] == 2
    assert data["experiment"]["id"] == three[1].id


def test_ambiguous_prefix_lists_candidates(git_project, pinned, monkeypatch, run):
    monkeypatch.setattr(metadata, "new_id", ids("abc"))
    experiment = record({"lr": 0.1}, [0.5, 0.4])
    code, out, err = run("show", "abc")
    assert code == 1 and out == ""
    first, hint = err.splitlines()
    assert first.startswith("error: 'abc' matches 3 IDs: experiment abc0")
    assert "checkpoint abc0" in first
    assert hint == "hint: give more characters of the ID"
    # The full id, or a unique prefix, works.
    assert run("show", experiment.id)[0] == 0
    assert run("show", experiment.checkpoints[1].id[:63])[0] == 0


def test_finding_a_checkpoint_reads_one_experiment(three, run, monkeypatch):
    """After one listing, a checkpoint prefix is found through the index: only its own
    experiment's metadata is read."""
    run("ls")
    reads = []
    project = Project()
    storage_read = type(project.repository.storage).get_bytes
    git_read = type(project.git).read_metadata
    monkeypatch.setattr(
        type(project.repository.storage),
        "get_bytes",
        lambda self, key: reads.append(key) or storage_read(self, key),
    )
    monkeypatch.setattr(
        type(project.git),
        "read_metadata",
        lambda self, commit: reads.append(commit) or git_read(self, commit),
    )
    found = project.catalog.find(three[1].latest().id[:10])
    assert found.id == three[1].latest().id
    assert len([r for r in reads if not r.startswith("repository.json")]) == 1


def test_diff_shows_code_stat_and_patch(git_project, pinned, monkeypatch, run):
    monkeypatch.setattr(metadata, "new_id", ids("aa"))
    (git_project / "model.py").write_text("depth = 1\n")
    a = record({"lr": 0.1}, [0.5], path=".")
    monkeypatch.setattr(metadata, "new_id", ids("bb"))
    pinned.at(1)
    (git_project / "model.py").write_text("depth = 2\nwidth = 8\n")
    b = record({"lr": 0.2}, [0.4], path=".")
    code, out, err = run("diff", a.short_id(), b.short_id())
    assert (code, err) == (0, "")
    code_section = out.split("\nCode\n")[1]
    assert code_section == " model.py | 3 ++-\n 1 file changed, 2 insertions(+), 1 deletion(-)\n"
    assert "lr:" in out and "0.1" in out
    patch = run("diff", a.short_id(), b.short_id(), "--code")[1].split("\nCode\n")[1]
    assert "-depth = 1\n+depth = 2\n+width = 8\n" in patch
    data = json.loads(run("diff", a.short_id(), b.short_id(), "--json")[1])
    assert "model.py" in data["code"] and data["sections"]["Params"] == {"lr": [0.1, 0.2]}
    same = run("diff", a.short_id(), a.latest().short_id())[1]
    assert same.endswith("\nCode\n(no difference)\n")


def test_rm_checkpoint_keeps_experiment_and_its_entry_marked(git_project, pinned, run):
    (git_project / "weights.bin").write_bytes(b"w" * 100)
    experiment = record({"lr": 0.1}, [0.5, 0.4], files="weights.bin")
    project = Project()
    storage = project.repository.storage
    gone = experiment.latest()
    assert storage.exists(f"checkpoints/{gone.id}.tar.gz")
    code, out, err = run("rm", gone.short_id(), "-f")
    assert code == 0, err
    assert f"checkpoint {gone.short_id()} (step 1) of experiment {experiment.short_id()}" in err
    assert not storage.exists(f"checkpoints/{gone.id}.tar.gz")
    again = Project().experiments.get(experiment.id)
    assert [c.id for c in again.checkpoints] == [c.id for c in experiment.checkpoints]
    assert again.checkpoints[1].files_removed
    stored = json.loads(storage.get_bytes(f"metadata/experiments/{experiment.id}.json"))
    assert stored["checkpoints"][1]["files_removed"] is True
    in_git = git(
        "show",
        f"refs/keepsake/metadata/{experiment.id}:.keepsake/experiment.json",
        cwd=git_project,
    )
    assert json.loads(in_git)["checkpoints"][1]["files_removed"] is True
    assert gone.id in run("ls", "--json")[1]  # still its best and latest


def test_rm_experiment_removes_refs_note_metadata_and_tarballs(git_project, pinned, run):
    (git_project / "weights.bin").write_bytes(b"w" * 100)
    keep = record({"lr": 0.2}, [0.5])
    pinned.at(1)
    experiment = record({"lr": 0.1}, [0.5, 0.4], path="train.py", files="weights.bin")
    storage = Project().repository.storage
    assert experiment.id in git("notes", "--ref=keepsake", "show", "HEAD", cwd=git_project) or True
    code, _, err = run("rm", experiment.short_id(), "-f")
    assert code == 0, err
    refs = git("for-each-ref", "refs/keepsake", cwd=git_project)
    assert experiment.id not in refs and keep.id in refs
    note = git("notes", "--ref=keepsake", "show", "HEAD", cwd=git_project)
    assert experiment.short_id() not in note and keep.short_id() in note
    keys = list(storage.list(""))
    assert not [k for k in keys if experiment.id in k or experiment.latest().id in k]
    assert run("ls", "-q")[1].split() == [keep.id]


class Terminal(io.StringIO):
    """stdin as a terminal that answers the prompt."""

    def isatty(self) -> bool:
        return True


def test_rm_asks_and_refuses_without_a_terminal(git_project, pinned, run, monkeypatch):
    experiment = record({"lr": 0.1}, [0.5])
    for piped in ("", "y\n"):  # no stdin, or a pipe: never taken as a yes
        monkeypatch.setattr(sys, "stdin", io.StringIO(piped))
        code, _, err = run("rm", experiment.short_id())
        assert code == 1
        assert "error: nothing deleted: no terminal to confirm on" in err
        assert "hint: use -f" in err
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, _, err = run("rm", experiment.short_id())
    assert code == 1 and f"experiment {experiment.short_id()} (lr=0.1)" in err
    assert run("ls", "-q")[1].split() == [experiment.id]
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert run("rm", experiment.short_id())[0] == 0
    assert run("ls", "-q")[1] == ""


def test_rm_refuses_a_running_experiment(git_project, pinned, run):
    running = keepsake.init(params={"lr": 0.1})
    running.flush()
    running._project.repository.write_heartbeat(running.id, dt.datetime.now(dt.UTC))
    code, _, err = run("rm", running.short_id(), "-f")
    assert code == 1 and "is running" in err
    running.stop()


def test_color_is_off_when_piped_and_follows_flags_and_no_color(three, run, monkeypatch):
    assert "\x1b[" not in run("ls")[1]
    assert "\x1b[1m" in run("--color", "ls")[1]
    assert "\x1b[1m" in run("show", three[0].short_id(), "--color")[1]
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in run("ls")[1]
    assert "\x1b[1m" in run("--color", "ls")[1]  # an explicit flag wins


def test_a_bug_is_a_short_report_with_exit_3(git_project, run, monkeypatch):
    from git_keepsake.catalog import Catalog

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Catalog, "list", broken)
    code, out, err = run("ls")
    assert code == 3 and out == ""
    assert err.splitlines()[0] == "error: internal error: RuntimeError: boom"
    assert "Traceback" not in err
    code, _, err = run("-v", "ls")
    assert code == 3 and "Traceback" in err


def test_help_shows_examples_for_every_command(run):
    for command in ("ls", "ps", "show", "diff", "checkout", "rm"):
        code, out, _ = run(command, "-h")
        assert code == 0 and "Example:" in out, command
    assert "Example:" in run("-h")[1]
    assert run("--version")[1].startswith("git-keepsake, version")


def test_no_experiments_yet(project, run):
    code, out, err = run("ls")
    assert (code, out) == (0, "") and err == "no experiments yet\n"


def test_a_checkpoint_added_after_a_listing_is_found(git_project, pinned, run):
    experiment = keepsake.init(params={"lr": 0.1})
    experiment.checkpoint(metrics={"loss": 1.0}, primary_metric=("loss", "minimize"))
    experiment.flush()
    assert run("ls", "-q")[0] == 0  # the index now knows the first checkpoint
    later = experiment.checkpoint(metrics={"loss": 0.5}, primary_metric=("loss", "minimize"))
    experiment.stop()
    code, out, err = run("show", later.id[:10])
    assert (code, err) == (0, "") and out.startswith(f"Checkpoint: {later.id}")


def test_a_mistyped_repository_url_is_an_error_not_an_empty_list(project, run):
    code, out, err = run("-R", (project / "no-such-repo").as_uri(), "ls")
    assert code == 1 and out == ""
    assert (
        err.startswith("error: there is no repository at file://") and "hint: check the -R" in err
    )
    assert run("ls") == (0, "", "no experiments yet\n")  # the default, not made yet: fine
