"""Untrusted input, as an attacker or a damaged repository would give it: metadata pulled from a
teammate's remote or found in storage, and keepsake.yaml. IDs are 64 hex characters or the record
is refused; strings never reach the terminal raw; bad input is `error:` + `hint:` and exit 1."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import GIT_KEEPSAKE, git, run_script
from tests.conftest import keepsake_cli as keepsake

TRAIN = textwrap.dedent(
    """
    import git_keepsake as keepsake
    experiment = keepsake.init(path=".", params={"lr": 0.1})
    with open("model.pth", "wb") as f:
        f.write(b"weights")
    experiment.checkpoint(path="model.pth", step=1, metrics={"loss": 0.5},
                          primary_metric=("loss", "minimize"))
    experiment.stop()
    print(experiment.id)
    """
)


def train(clone: Path, script: str = TRAIN, *argv: str) -> str:
    """Run a training script (with `argv`: from a file, so the command line holds them)."""
    if argv:
        (clone / "train_script.py").write_text(script)
        command = [sys.executable, "train_script.py", *argv]
        result = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=120)
    else:
        result = run_script(script, clone, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def raw_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI with its output as bytes: text mode would turn a "\\r" into a newline."""
    return subprocess.run(
        [GIT_KEEPSAKE, *args], cwd=cwd, capture_output=True, timeout=120, stdin=subprocess.DEVNULL
    )


def assert_clean_failure(result, *named: str) -> str:
    """Exit 1, `error: ...` then `hint: ...`, no traceback; returns stderr."""
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert errors and lines[errors[0] + 1 :][:1] != [], stderr
    assert lines[errors[0] + 1].startswith("hint: "), stderr
    for text in named:
        assert text in stderr, stderr
    return stderr


def rewrite_git_metadata(clone: Path, experiment_id: str, change) -> None:
    """Replace an experiment's metadata in git with `change(json) -> json`, using git alone,
    as an attacker would before pushing to a shared remote."""
    ref = f"refs/keepsake/metadata/{experiment_id}"
    commit = git("rev-parse", ref, cwd=clone).strip()
    old = git("show", f"{commit}:.keepsake/experiment.json", cwd=clone)
    new = _changed(old, change)
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=clone,
        input=new,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {**os.environ, "GIT_INDEX_FILE": str(clone / ".git" / "attacker-index")}

    def plumbing(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=clone, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    plumbing("read-tree", commit)
    plumbing("update-index", "--add", "--cacheinfo", f"100644,{blob},.keepsake/experiment.json")
    tree = plumbing("write-tree")
    new_commit = plumbing("commit-tree", tree, "-p", commit, "-m", "metadata")
    git("update-ref", ref, new_commit, cwd=clone)


def rewrite_storage_metadata(storage: Path, experiment_id: str, change) -> None:
    path = storage / "metadata" / "experiments" / f"{experiment_id}.json"
    path.write_text(_changed(path.read_text(), change))


def _changed(text: str, change) -> str:
    """`change` returns the new JSON, or its text (for what json.dumps can't write)."""
    new = change(json.loads(text))
    return new if isinstance(new, str) else json.dumps(new, indent=1)


@pytest.fixture
def attacker_and_victim(tmp_path):
    """A bare remote; an attacker's clone and a victim's clone of it, each with its own storage."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    attacker = tmp_path / "attacker"
    git("clone", "-q", str(remote), str(attacker), cwd=tmp_path)
    (attacker / "train.py").write_text("print('the model')\n")
    (attacker / ".gitignore").write_text("model.pth\nkeepsake.yaml\n")
    git("add", ".", cwd=attacker)
    git("commit", "-q", "-m", "the training script", cwd=attacker)
    git("push", "-q", "origin", "main", cwd=attacker)
    victim = tmp_path / "victim"
    git("clone", "-q", str(remote), str(victim), cwd=tmp_path)
    for clone in (attacker, victim):
        storage = tmp_path / f"{clone.name}-storage"
        (clone / "keepsake.yaml").write_text(f'repository: "file://{storage}"\n')
    return attacker, victim


def push_refs(clone: Path) -> None:
    git("push", "-q", "origin", "refs/keepsake/*:refs/keepsake/*", cwd=clone)


# --- item 16: IDs from metadata are 64 hex characters or the record is refused ---------------

TRAVERSAL = "../../victim-data/precious"


def _traversing_checkpoint(data: dict) -> dict:
    data["checkpoints"][0]["id"] = TRAVERSAL
    return data


@pytest.mark.parametrize("where", ["git", "storage"])
def test_a_checkpoint_id_naming_a_path_outside_is_refused_and_nothing_is_touched(
    attacker_and_victim, tmp_path, where
):
    attacker, victim = attacker_and_victim
    # What the crafted ID would reach: <storage>/checkpoints/../../victim-data/precious.tar.gz
    precious = tmp_path / "victim-data" / "precious.tar.gz"
    precious.parent.mkdir()
    precious.write_bytes(b"years of work")
    good = train(victim)
    if where == "git":
        bad = train(attacker)
        rewrite_git_metadata(attacker, bad, _traversing_checkpoint)
        push_refs(attacker)
        pulled = raw_cli("pull", cwd=victim)
        assert pulled.returncode == 0, pulled.stderr
        assert f"experiment {bad[:7]}".encode() in pulled.stderr
    else:  # a shared bucket someone else writes to, from a folder outside git
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "keepsake.yaml").write_text((victim / "keepsake.yaml").read_text())
        bad = train(elsewhere)
        rewrite_storage_metadata(tmp_path / "victim-storage", bad, _traversing_checkpoint)
    assert (
        Path(os.path.normpath(tmp_path / "victim-storage/checkpoints" / f"{TRAVERSAL}.tar.gz"))
        == precious
    )

    for command in (["rm", "-f", bad[:7]], ["show", bad[:7]], ["checkout", bad[:7], "-f"]):
        result = raw_cli(*command, cwd=victim)
        stderr = assert_clean_failure(result, bad[:7], "refused", "64 hex")
        assert stderr.count("is refused") == 1, stderr  # the error, not a warning as well
        assert TRAVERSAL not in stderr or repr(TRAVERSAL) in stderr
    assert precious.read_bytes() == b"years of work"

    listed = raw_cli("ls", cwd=victim)
    assert listed.returncode == 0, listed.stderr
    assert good[:7].encode() in listed.stdout and bad[:7].encode() not in listed.stdout
    warnings = [line for line in listed.stderr.decode().splitlines() if bad[:7] in line]
    assert len(warnings) == 1 and "refused" in warnings[0], listed.stderr
    assert precious.read_bytes() == b"years of work"


def test_a_record_naming_another_experiment_or_a_short_id_is_refused(project):
    experiment_id = train(project)
    storage = project / ".keepsake"
    rewrite_storage_metadata(storage, experiment_id, lambda d: {**d, "id": "abc"})
    assert_clean_failure(raw_cli("show", experiment_id[:7], cwd=project), "refused")
    rewrite_storage_metadata(storage, experiment_id, lambda d: {**d, "id": experiment_id})
    keepsake("show", experiment_id[:7], cwd=project)
    rewrite_storage_metadata(
        storage, experiment_id, lambda d: _set_checkpoint(d, id=d["checkpoints"][0]["id"][:63])
    )
    assert_clean_failure(raw_cli("show", experiment_id[:7], cwd=project), "refused", "64 hex")


def _set_checkpoint(data: dict, **fields) -> dict:
    data["checkpoints"][0].update(fields)
    return data


# --- item 18: untrusted strings never reach the terminal raw --------------------------------

# Clear screen, set the window title, a forged line, a C1 CSI, a bidi override.
EVIL = ["\x1b[2J", "\x1b]0;pwned\x07", "\rforged: ok", "\x9b31m", "\u202eevil"]
RAW = [b"\x1b", b"\x07", b"\r", "\x9b".encode(), "\u202e".encode(), b"\x9b"]

EVIL_TRAIN = textwrap.dedent(
    """
    import sys, git_keepsake as keepsake
    evil = EVIL
    experiment = keepsake.init(path=".", params={e: e for e in evil} | {"lr": float(sys.argv[1])})
    with open("model.pth", "wb") as f:
        f.write(b"weights")
    metrics = {"loss": float(sys.argv[1]), **{e: e for e in evil}}
    experiment.checkpoint(path="model.pth", step=1, metrics=metrics,
                          primary_metric=(evil[1], "maximize"))
    experiment.checkpoint(path="model.pth", step=2, metrics={evil[1]: 3.0},
                          primary_metric=(evil[1], "maximize"))
    experiment.stop()
    print(experiment.id)
    """
).replace("EVIL", repr(EVIL))


def _evil_fields(data: dict) -> dict:
    evil = "".join(EVIL)
    data.update(user=evil, host=evil, python_version=evil, keepsake_version=evil)
    data["python_packages"] = {evil: evil}
    data["git"].update(branch=evil, remote=evil)
    data["checkpoints"][0]["path"] = evil
    return data


def raw_in(result) -> list[bytes]:
    return [raw for raw in RAW if raw in result.stdout or raw in result.stderr]


def assert_nothing_raw(result) -> None:
    assert not raw_in(result), (result.stdout + result.stderr).decode(errors="replace")


def test_escape_sequences_from_a_pulled_remote_never_reach_the_terminal(
    attacker_and_victim, tmp_path
):
    attacker, victim = attacker_and_victim
    evil = "".join(EVIL)
    (attacker / "train.py").write_text(f"print({evil!r})  # {evil}\n")
    first = train(attacker, EVIL_TRAIN, "0.1", evil)
    (attacker / "train.py").write_text(f"print('other')  # {evil}{evil}\n")
    second = train(attacker, EVIL_TRAIN, "0.2", evil)
    for experiment_id in (first, second):
        rewrite_git_metadata(attacker, experiment_id, _evil_fields)
    push_refs(attacker)
    # The victim shares the storage the weights are in (a team bucket).
    storage = tmp_path / "attacker-storage"
    (victim / "keepsake.yaml").write_text(f'repository: "file://{storage}"\n')
    heartbeat = storage / "metadata" / "heartbeats" / f"{first}.json"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    heartbeat.write_text(json.dumps({"experiment_id": first, "last_heartbeat": now}))

    pulled = raw_cli("pull", cwd=victim)
    assert pulled.returncode == 0, pulled.stderr
    assert_nothing_raw(pulled)
    chk = json.loads(raw_cli("show", first[:7], "--json", cwd=victim).stdout)["checkpoints"][0]
    commands = [
        ["ls"],
        ["ls", "-a"],
        ["ps"],
        ["show", first[:7]],
        ["show", chk["id"][:7]],
        ["diff", first[:7], second[:7]],
        ["diff", first[:7], second[:7], "--code"],
        ["checkout", second[:7], "-o", str(tmp_path / "out"), "-f"],
        ["rm", second[:7]],  # lists what it would delete, then asks for a terminal
    ]
    leaks = {}
    for command in commands:
        result = raw_cli(*command, cwd=victim)
        assert result.returncode in (0, 1), (command, result.stderr)
        assert b"Traceback" not in result.stderr
        if raw_in(result):
            leaks[" ".join(c for c in command if "/" not in c)] = raw_in(result)
    assert not leaks, sorted(leaks)
    assert first[:7].encode() in raw_cli("ps", cwd=victim).stdout  # its heartbeat is fresh
    shown = raw_cli("show", first[:7], cwd=victim).stdout.decode()
    assert "\\x1b]0;pwned\\x07" in shown and "\\u202eevil" in shown and "\\rforged" in shown
    code = raw_cli("diff", first[:7], second[:7], "--code", cwd=victim).stdout.decode()
    assert "\\x1b[2J" in code and "other" in code
    assert (tmp_path / "out" / "model.pth").read_bytes() == b"weights"


def test_error_messages_quoting_stored_values_escape_them(project):
    experiment_id = train(project)
    evil = "".join(EVIL)
    rewrite_storage_metadata(project / ".keepsake", experiment_id, lambda d: {**d, "created": evil})
    for command in (["show", experiment_id[:7]], ["ls"], ["diff", experiment_id, experiment_id]):
        result = raw_cli(*command, cwd=project)
        assert b"Traceback" not in result.stderr
        assert_nothing_raw(result)
    assert_clean_failure(raw_cli("show", experiment_id[:7], cwd=project), "created")


# --- item 21: wrong types in metadata and keepsake.yaml are one clear line ------------------

WRONG_TYPES = {
    "created is a number": lambda d: {**d, "created": 7},
    "created is not a time": lambda d: {**d, "created": "yesterday"},
    "params is a list": lambda d: {**d, "params": [1, 2]},
    "checkpoints is a dict": lambda d: {**d, "checkpoints": {"a": 1}},
    "a checkpoint is a number": lambda d: {**d, "checkpoints": [1]},
    "metrics is a list": lambda d: _set_checkpoint(d, metrics=[0.5]),
    "step is a string": lambda d: _set_checkpoint(d, step="1"),
    "step is a bool": lambda d: _set_checkpoint(d, step=True),
    "checkpoint created is null": lambda d: _set_checkpoint(d, created=None),
    "primary_metric is a string": lambda d: _set_checkpoint(d, primary_metric="loss"),
    "primary_metric name is a number": lambda d: _set_checkpoint(
        d, primary_metric={"name": 1, "goal": "minimize"}
    ),
    "path is a number": lambda d: _set_checkpoint(d, path=5),
    "user is a dict": lambda d: {**d, "user": {}},
    "python_packages is a list": lambda d: {**d, "python_packages": ["numpy"]},
    "a package version is a number": lambda d: {**d, "python_packages": {"numpy": 1}},
    "git is a string": lambda d: {**d, "git": "main"},
    "git snapshot is not a commit id": lambda d: {**d, "git": {**d["git"], "snapshot": "HEAD~1"}},
    "not an object": lambda d: [d],
    "nested too deep to parse": lambda d: (
        json.dumps(d)[:-1] + f', "deep": {"[" * 5000}{"]" * 5000}}}'
    ),
    # Parses, but every reader walking it recursively overflowed the stack: `ls` exited 3.
    "a param nests 500 levels": lambda d: json.dumps({**d, "params": {"lr": 1}}).replace(
        '"lr": 1', f'"lr": {"[" * 500}{"]" * 500}'
    ),
    "a metric nests 500 levels": lambda d: json.dumps(_set_checkpoint(d, metrics={"m": 1})).replace(
        '"m": 1', f'"m": {"[" * 500}{"]" * 500}'
    ),
}


@pytest.fixture
def two_runs(git_project):
    (git_project / ".gitignore").write_text("model.pth\n")
    return git_project, train(git_project), train(git_project)


@pytest.mark.parametrize("damage", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_typed_metadata_is_refused_with_one_clear_line(two_runs, tmp_path, damage):
    project, good, bad = two_runs
    rewrite_git_metadata(project, bad, damage)
    rewrite_storage_metadata(project / ".keepsake", bad, damage)
    for command in (
        ["show", bad[:7]],
        ["diff", good[:7], bad[:7]],
        ["checkout", bad[:7], "-o", str(tmp_path / "out"), "-f"],
    ):
        assert_clean_failure(raw_cli(*command, cwd=project), bad[:7], "refused")
    listed = raw_cli("ls", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert good[:7].encode() in listed.stdout and bad[:7].encode() not in listed.stdout
    assert b"Traceback" not in listed.stderr
    assert [line for line in listed.stderr.decode().splitlines() if bad[:7] in line]
    assert not (tmp_path / "out").exists()


def test_sync_says_which_storage_metadata_it_refused(git_project):
    """An experiment only in storage (recorded elsewhere) with `"created": 7`."""
    (git_project / ".gitignore").write_text("model.pth\n")
    experiment_id = train(git_project)
    git("update-ref", "-d", f"refs/keepsake/metadata/{experiment_id}", cwd=git_project)
    git("update-ref", "-d", f"refs/keepsake/experiments/{experiment_id}", cwd=git_project)
    rewrite_storage_metadata(
        git_project / ".keepsake", experiment_id, lambda d: {**d, "created": 7}
    )
    result = raw_cli("sync", cwd=git_project)
    stderr = result.stderr.decode()
    assert result.returncode in (0, 1), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert experiment_id[:7] in stderr and "refused" in stderr, stderr


BAD_CONFIGS = {
    "not UTF-8": b'repository: "file://.keep\xffsake"\n',
    "invalid YAML": b"repository: [unclosed\n",
    "a list": b"- repository\n",
    "repository is a number": b"repository: 7\n",
    "repository is a mapping": b"repository: {a: 1}\n",
    "an unknown setting": b"respository: file://.keepsake\n",
    "size overflows": b"git_max_file_size: 1e999\n",
    "size is a list": b"git_max_file_size: [1]\n",
    "a non-string key": b"1: file://.keepsake\n",
    "both repository and storage": b"repository: file://a\nstorage: file://b\n",
}


@pytest.mark.parametrize("content", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_bad_keepsake_yaml_is_one_clear_line(project, content):
    (project / "keepsake.yaml").write_bytes(content)
    for command in (["ls"], ["show", "abc1234"]):
        assert_clean_failure(raw_cli(*command, cwd=project), "keepsake.yaml")


def test_a_dangling_git_metadata_ref_falls_back_to_the_storage_copy(two_runs):
    project, good, dangling = two_runs
    ref = project / ".git" / "refs" / "keepsake" / "metadata" / dangling
    git("pack-refs", "--all", cwd=project)  # the ref is in packed-refs: write a loose one
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("0123456789abcdef0123456789abcdef01234567\n")  # an object nobody has

    listed = raw_cli("ls", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert good[:7].encode() in listed.stdout and dangling[:7].encode() in listed.stdout
    stderr = listed.stderr.decode()
    assert dangling[:7] in stderr and "missing" in stderr and "storage" in stderr, stderr
    shown = raw_cli("show", dangling[:7], cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert f"Experiment: {dangling}".encode() in shown.stdout


def test_a_dangling_git_metadata_ref_without_a_storage_copy_gives_a_hint(two_runs):
    project, good, dangling = two_runs
    ref = project / ".git" / "refs" / "keepsake" / "metadata" / dangling
    ref.write_text("0123456789abcdef0123456789abcdef01234567\n")
    (project / ".keepsake" / "metadata" / "experiments" / f"{dangling}.json").unlink()
    assert_clean_failure(raw_cli("show", dangling[:7], cwd=project), dangling[:7], "missing")
    listed = raw_cli("ls", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert good[:7].encode() in listed.stdout


def test_rm_of_a_record_claiming_anothers_checkpoint_leaves_that_checkpoints_files(
    attacker_and_victim, tmp_path
):
    """A record with well-formed IDs can still claim a checkpoint of another experiment (IDs are
    public once pushed). Removing the claimant must not delete the other's tarball."""
    attacker, victim = attacker_and_victim
    good = train(victim)
    push_refs(victim)
    git("fetch", "-q", "origin", "refs/keepsake/*:refs/keepsake/*", cwd=attacker)
    shown = json.loads(keepsake("show", good, "--json", cwd=attacker).stdout)
    stolen = shown["checkpoints"][0]["id"]
    bad = train(attacker)
    rewrite_git_metadata(attacker, bad, lambda d: _set_checkpoint(d, id=stolen))
    push_refs(attacker)
    assert raw_cli("pull", cwd=victim).returncode == 0
    tarball = tmp_path / "victim-storage" / "checkpoints" / f"{stolen}.tar.gz"
    assert tarball.exists()
    assert_clean_failure(raw_cli("show", stolen[:12], cwd=victim), "claimed by", bad[:7], good[:7])

    result = raw_cli("rm", "-f", bad[:7], cwd=victim)
    assert result.returncode == 0, result.stderr
    assert tarball.exists(), "rm of the claimant deleted another experiment's checkpoint"
    assert stolen[:7].encode() in result.stderr  # says why it kept it
    out = tmp_path / "restored"
    keepsake("checkout", stolen[:12], "-o", str(out), "-f", cwd=victim)
    assert (out / "model.pth").read_bytes() == b"weights"


def test_library_warnings_escape_what_they_quote(project, capfd, monkeypatch):
    """Warnings during training quote file names and values: a file named with an escape
    sequence (a dataset unpacked from anywhere) must not steer the terminal."""
    from git_keepsake import runtime

    monkeypatch.delenv("GIT_KEEPSAKE_STRICT")
    runtime.warn("could not read 'data/\x1b]0;pwned\x07\x1b[2J\rforged.csv'")
    err = capfd.readouterr().err
    assert "\x1b" not in err and "\r" not in err and err.count("\n") == 1
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\rforged.csv" in err
