"""`git keepsake checkout`: code from git or blob storage, weights from blob storage, safely."""

from __future__ import annotations

import io
import os
import pty
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import git_keepsake as keepsake
from git_keepsake import Project
from git_keepsake.checkout import WouldOverwrite, checkout, plan_checkout
from git_keepsake.cli import main
from tests.conftest import GIT_KEEPSAKE, git

SKIP = {".git", ".keepsake"}


# --- helpers ---


def state(root: Path) -> dict[str, tuple]:
    """Every file under root but .git/.keepsake: (contents or link target, mode, mtime, inode)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP or Path(dirpath) != root]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath, name)
            st = path.lstat()
            body = os.readlink(path) if path.is_symlink() else path.read_bytes()
            out[path.relative_to(root).as_posix()] = (body, st.st_mode, st.st_mtime_ns, st.st_ino)
    return out


def contents(root: Path) -> dict[str, bytes | str]:
    return {rel: value[0] for rel, value in state(root).items()}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["checkout", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    assert lines and lines[0].startswith("error:"), err
    assert len([line for line in lines if line.startswith("error:")]) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


def no_staging_left(root: Path) -> bool:
    return not list(root.glob(".keepsake-checkout-*"))


class Terminal(io.StringIO):
    """stdin as a terminal that answers the prompt."""

    def isatty(self) -> bool:
        return True


def record_weights(root: Path, steps: list[tuple[float, bytes]], params=None):
    """An experiment of root, and a checkpoint of model.pth per (loss, contents)."""
    if not any(p.name != ".keepsake" for p in root.iterdir()):
        (root / "train.py").write_text("code\n")  # something to snapshot
    experiment = keepsake.init(path=".", params=params or {"lr": 0.1})
    checkpoints = []
    for loss, weights in steps:
        (root / "model.pth").write_bytes(weights)
        checkpoints.append(
            experiment.checkpoint(
                path="model.pth", metrics={"loss": loss}, primary_metric=("loss", "minimize")
            )
        )
    experiment.stop()
    return experiment, checkpoints


@pytest.fixture
def code_project(git_project):
    """A git project with a script, a module, an executable, a symlink and a dirty file."""
    root = git_project
    (root / "src").mkdir()
    (root / "src" / "model.py").write_text("LAYERS = 2\n")
    (root / "run.sh").write_text("#!/bin/sh\npython train.py\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("src/model.py", root / "model_link.py")
    git("add", ".", cwd=root)
    git("commit", "-q", "-m", "code", cwd=root)
    (root / "src" / "model.py").write_text("LAYERS = 3  # uncommitted\n")
    return root


# --- what is restored ---


def test_checkout_restores_code_from_git_and_weights_byte_identical(code_project, tmp_path, capsys):
    weights = os.urandom(3000)
    experiment, (chk,) = record_weights(code_project, [(0.5, weights)])
    out = tmp_path / "out" / "new"  # -o to a folder that does not exist yet

    code, stdout, err = cli(capsys, experiment.id[:7], "-o", str(out))

    assert code == 0, err
    assert stdout == ""  # messages go to stderr
    assert contents(out) == {
        "train.py": b"print('train')\n",
        "run.sh": b"#!/bin/sh\npython train.py\n",
        "src/model.py": b"LAYERS = 3  # uncommitted\n",  # as it ran, not as committed
        "model_link.py": "src/model.py",
        "model.pth": weights,
    }
    assert os.access(out / "run.sh", os.X_OK) and not os.access(out / "train.py", os.X_OK)
    assert (out / "model_link.py").is_symlink()
    assert f"best checkpoint {chk.short_id()}" in err
    assert "code from the git snapshot" in err
    assert f"Checked out to {out}: 5 file(s) written, 0 unchanged" in err
    assert (
        err.rstrip().splitlines()[-1] == f"To run it again: cd {out} && {experiment.command_line}"
    )
    assert no_staging_left(out)


def test_uncommitted_changes_recorded_at_init_come_back(code_project, capsys):
    experiment, _ = record_weights(code_project, [(0.5, b"w")])
    git("checkout", "--", "src/model.py", cwd=code_project)  # the dirty change is gone
    (code_project / "model.pth").unlink()
    before = state(code_project)

    code, _, err = cli(capsys, experiment.id, "-f")

    assert code == 0, err
    assert (code_project / "src/model.py").read_text() == "LAYERS = 3  # uncommitted\n"
    assert (code_project / "model.pth").read_bytes() == b"w"
    assert git("status", "--porcelain", cwd=code_project).split("\n")[0] == " M src/model.py"
    after = state(code_project)
    for rel in ("train.py", "run.sh", "model_link.py"):  # unchanged: not rewritten
        assert after[rel] == before[rel]


def test_checkout_without_git_comes_from_the_experiment_tarball(project, tmp_path, capsys):
    (project / "train.py").write_text("print('train')\n")
    (project / "tools").mkdir()
    (project / "tools" / "run.sh").write_text("#!/bin/sh\n")
    (project / "tools" / "run.sh").chmod(0o755)
    weights = os.urandom(2000)
    experiment, _ = record_weights(project, [(0.5, weights)])
    out = tmp_path / "out"

    code, _, err = cli(capsys, experiment.id, "-o", str(out))

    assert code == 0, err
    assert contents(out) == {
        "train.py": b"print('train')\n",
        "tools/run.sh": b"#!/bin/sh\n",
        "model.pth": weights,
    }
    assert os.access(out / "tools" / "run.sh", os.X_OK)
    assert "code from the snapshot of '.' in blob storage" in err


def test_experiment_gets_its_best_checkpoint_else_its_latest(project, tmp_path, capsys):
    (project / "train.py").write_text("code\n")
    experiment, chks = record_weights(project, [(0.5, b"first"), (0.1, b"best"), (0.3, b"last")])
    assert cli(capsys, experiment.id, "-o", str(tmp_path / "a"))[0] == 0
    assert (tmp_path / "a" / "model.pth").read_bytes() == b"best"

    no_metric = keepsake.init()
    for weights in (b"one", b"two"):
        (project / "model.pth").write_bytes(weights)
        no_metric.checkpoint(path="model.pth", metrics={"loss": 1.0})
    no_metric.stop()
    code, _, err = cli(capsys, no_metric.id, "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert (tmp_path / "b" / "model.pth").read_bytes() == b"two"
    assert "latest checkpoint" in err


def test_checkpoint_id_restores_its_own_files_and_its_experiments_code(
    code_project, tmp_path, capsys
):
    experiment, chks = record_weights(code_project, [(0.1, b"best"), (0.9, b"worse")])
    out = tmp_path / "out"

    code, _, err = cli(capsys, chks[1].id[:10], "-o", str(out))

    assert code == 0, err
    assert (out / "model.pth").read_bytes() == b"worse"  # the one asked for, not the best
    assert (out / "src/model.py").read_text() == "LAYERS = 3  # uncommitted\n"
    assert f"checkpoint {chks[1].short_id()} (step 1) of experiment {experiment.short_id()}" in err


def test_checkpoint_files_win_over_the_code(project, tmp_path, capsys):
    (project / "model.pth").write_bytes(b"at init")
    experiment, _ = record_weights(project, [(0.5, b"trained")])
    assert cli(capsys, experiment.id, "-o", str(tmp_path / "out"))[0] == 0
    assert (tmp_path / "out" / "model.pth").read_bytes() == b"trained"


def test_files_left_out_of_git_come_from_the_experiment_tarball(git_project, tmp_path, capsys):
    (git_project / "keepsake.yaml").write_text("git_max_file_size: 1000\n")
    data = os.urandom(5000)
    (git_project / "data.bin").write_bytes(data)
    experiment = keepsake.init(path=".")
    experiment.stop()
    out = tmp_path / "out"

    code, _, err = cli(capsys, experiment.id, "-o", str(out))

    assert code == 0, err
    assert (out / "data.bin").read_bytes() == data
    assert (out / "train.py").read_text() == "print('train')\n"
    assert "code from the git snapshot" in err


def test_project_in_a_subfolder_is_rerooted(subdir_project, tmp_path, capsys):
    experiment = keepsake.init(path=".")
    experiment.stop()

    code, _, err = cli(capsys, experiment.id, "-o", str(tmp_path / "out"))

    assert code == 0, err
    # Only the project dir's part of the work tree, at the top of the output folder.
    assert contents(tmp_path / "out") == {
        "keepsake.yaml": b'repository: "file://.keepsake"\n',
        "model.py": b"X = 1\n",
    }


def test_snapshot_not_fetched_falls_back_to_the_tarball(git_project, tmp_path, capsys):
    store = tmp_path / "store"
    (git_project / "keepsake.yaml").write_text(f'repository: "file://{store}"\n')
    git("add", "keepsake.yaml", cwd=git_project)
    git("commit", "-q", "-m", "config", cwd=git_project)
    (git_project / "train.py").write_text("print('dirty')\n")
    experiment = keepsake.init(path=".")
    experiment.stop()
    clone = tmp_path / "clone"
    # Over a transport (not a local copy of .git/objects): refs/keepsake/* are not fetched.
    git("clone", "-q", f"file://{git_project}", str(clone), cwd=tmp_path)

    code = main(["-D", str(clone), "checkout", experiment.id, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err

    assert code == 0, err
    assert "is not in this repository" in err
    assert (tmp_path / "out" / "train.py").read_text() == "print('dirty')\n"


def test_symlink_out_of_the_snapshot_and_submodule_are_skipped(git_project, tmp_path, capsys):
    os.symlink("/etc/passwd", git_project / "passwd")
    os.symlink("../outside", git_project / "up")
    git("add", "passwd", "up", cwd=git_project)
    git("update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},vendor/lib", cwd=git_project)
    git("commit", "-q", "-m", "links", cwd=git_project)
    experiment = keepsake.init(path="train.py")
    experiment.stop()
    out = tmp_path / "out"

    code, _, err = cli(capsys, experiment.id, "-o", str(out))

    assert code == 0, err
    assert contents(out) == {"train.py": b"print('train')\n"}
    assert "skipped symlink passwd -> /etc/passwd" in err
    assert "skipped symlink up -> ../outside" in err
    assert "skipped submodule vendor/lib" in err


def test_nothing_to_check_out_says_why(project, capsys):
    experiment = keepsake.init()
    experiment.checkpoint(metrics={"loss": 1.0})
    experiment.stop()
    code, _, err = cli(capsys, experiment.id)
    assert code == 0, err
    assert "has no code snapshot" in err and "has no files" in err
    assert "0 file(s) written" in err


# --- --path ---


def test_path_restores_one_file(code_project, tmp_path, capsys):
    experiment, _ = record_weights(code_project, [(0.5, b"w")])
    out = tmp_path / "out"
    assert cli(capsys, experiment.id, "-o", str(out), "--path", "model.pth")[0] == 0
    assert contents(out) == {"model.pth": b"w"}
    assert cli(capsys, experiment.id, "-o", str(out), "--path", "./src/model.py")[0] == 0
    assert contents(out) == {"model.pth": b"w", "src/model.py": b"LAYERS = 3  # uncommitted\n"}


def test_path_restores_a_folder(code_project, tmp_path, capsys):
    (code_project / "src" / "layers").mkdir()
    (code_project / "src" / "layers" / "conv.py").write_text("CONV = 1\n")
    experiment, _ = record_weights(code_project, [(0.5, b"w")])
    out = tmp_path / "out"
    assert cli(capsys, experiment.id, "-o", str(out), "--path", "src/")[0] == 0
    assert contents(out) == {
        "src/model.py": b"LAYERS = 3  # uncommitted\n",
        "src/layers/conv.py": b"CONV = 1\n",
    }


def test_missing_path_is_an_error_listing_what_there_is(code_project, tmp_path, capsys):
    experiment, _ = record_weights(code_project, [(0.5, b"w")])
    out = tmp_path / "out"
    code, _, err = cli(capsys, experiment.id, "-o", str(out), "--path", "nope.py")
    assert code == 1
    assert_one_error(err, "'nope.py' is not in", "model.pth", "src/", "train.py")
    assert not out.exists()  # made for the checkout, removed when it failed


@pytest.mark.parametrize("bad", ["../etc", "/etc/passwd"])
def test_path_outside_the_project_is_refused(code_project, capsys, bad):
    experiment, _ = record_weights(code_project, [(0.5, b"w")])
    code, _, err = cli(capsys, experiment.id, "--path", bad)
    assert code == 1
    assert_one_error(err, "must be inside the project directory")


# --- overwriting ---


@pytest.fixture
def changed(project):
    """A recorded experiment, then model.pth and train.py changed and an extra file added."""
    (project / "train.py").write_text("v1\n")
    experiment, _ = record_weights(project, [(0.5, b"weights")])
    (project / "train.py").write_text("v2, not committed anywhere\n")
    (project / "model.pth").write_bytes(b"retrained")
    (project / "notes.txt").write_text("mine\n")
    return experiment


def test_conflicts_are_listed_and_no_keeps_everything(changed, project, monkeypatch, capsys):
    before = state(project)
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, _, err = cli(capsys, changed.id)
    assert code == 1
    assert "differ from the checkout's:\n  model.pth\n  train.py\n" in err
    # The answer is echoed by a real terminal; here the error follows the prompt directly.
    assert "[y/N]: error: checkout cancelled: nothing was written\n" in err
    assert "Traceback" not in err
    assert state(project) == before
    assert no_staging_left(project)


def test_yes_overwrites_and_never_deletes(changed, project, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    code, _, err = cli(capsys, changed.id)
    assert code == 0, err
    assert (project / "train.py").read_text() == "v1\n"
    assert (project / "model.pth").read_bytes() == b"weights"
    assert (project / "notes.txt").read_text() == "mine\n"
    assert "2 file(s) written" in err


def test_force_overwrites_without_asking(changed, project, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = cli(capsys, changed.id, "-f")
    assert code == 0, err
    assert "Overwrite" not in err
    assert (project / "model.pth").read_bytes() == b"weights"


def test_without_a_terminal_it_refuses_and_hints_at_f(changed, project, monkeypatch, capsys):
    before = state(project)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a pipe with no answer in it
    code, _, err = cli(capsys, changed.id)
    assert code == 1
    assert_one_error(err, f"error: 2 file(s) in {project} would be overwritten")
    assert "hint: use -f to overwrite them" in err
    assert state(project) == before


def test_real_process_without_stdin_refuses(changed, project):
    before = state(project)
    result = subprocess.run(
        [GIT_KEEPSAKE, "checkout", changed.id],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert_one_error(result.stderr, "2 file(s)", "would be overwritten")
    assert "hint: use -f to overwrite them" in result.stderr
    assert state(project) == before


def test_real_terminal_answer_yes(changed, project):
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [GIT_KEEPSAKE, "checkout", changed.id],
            cwd=project,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        os.write(controller, b"y\n")  # waits in the terminal's line buffer for the prompt
        _, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
    assert process.returncode == 0, err
    assert "Overwrite 2 changed file(s)? [y/N]" in err
    assert (project / "model.pth").read_bytes() == b"weights"


def test_unchanged_files_are_not_rewritten(project, capsys):
    (project / "train.py").write_text("code\n")
    experiment, _ = record_weights(project, [(0.5, b"weights")])
    before = state(project)
    code, _, err = cli(capsys, experiment.id)
    assert code == 0, err
    assert state(project) == before  # same inode, same mtime: not touched
    assert "0 file(s) written, 2 unchanged" in err


def test_only_the_executable_bit_changed_is_restored_without_asking(project, capsys):
    (project / "run.sh").write_text("#!/bin/sh\n")
    (project / "run.sh").chmod(0o755)
    experiment = keepsake.init(path=".")
    experiment.stop()
    (project / "run.sh").chmod(0o644)
    code, _, err = cli(capsys, experiment.id)
    assert code == 0, err
    assert os.access(project / "run.sh", os.X_OK)


def test_a_file_changed_after_the_comparison_is_not_overwritten(changed, project):
    with plan_checkout(Project(), changed.id) as plan:
        assert plan.conflicts == ["model.pth", "train.py"]
        (project / "train.py").write_text("edited while the prompt waited\n")
        with pytest.raises(keepsake.KeepsakeError, match="changed while the checkout was waiting"):
            plan.apply()
    assert (project / "train.py").read_text() == "edited while the prompt waited\n"
    assert (project / "model.pth").read_bytes() == b"retrained"  # checked first, then written
    assert no_staging_left(project)


# --- safety ---


def craft(path: Path, top: str, members: list[tuple[str, bytes | None, dict]]) -> None:
    """Write a .tar.gz with the given (name, data, TarInfo attributes) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, attrs in members:
            info = tarfile.TarInfo(name.replace("TOP", top))
            for key, value in attrs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


GOOD = ("TOP/model.pth", b"good", {})
UNSAFE = {
    "traversal": ("TOP/../evil", b"x", {}),
    "deep traversal": ("TOP/a/../../../evil", b"x", {}),
    "absolute": ("/tmp/evil", b"x", {}),
    "symlink": ("TOP/link", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
    "hardlink": ("TOP/hard", None, {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}),
    "device": ("TOP/dev", None, {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
    "into .git": ("TOP/.git/hooks/pre-commit", b"#!/bin/sh\n", {"mode": 0o755}),
    "into the repository": ("TOP/.keepsake/repository.json", b"{}", {}),
}


@pytest.mark.parametrize("first", [True, False], ids=["bad-first", "bad-last"])
@pytest.mark.parametrize("kind", list(UNSAFE))
def test_checkout_refuses_unsafe_tarball_members(project, tmp_path, capsys, kind, first):
    (project / "train.py").write_text("code\n")
    experiment, (chk,) = record_weights(project, [(0.5, b"weights")])
    tarball = project / ".keepsake" / "checkpoints" / f"{chk.id}.tar.gz"
    members = [UNSAFE[kind], GOOD] if first else [GOOD, UNSAFE[kind]]
    craft(tarball, chk.id, members)
    (project / "model.pth").unlink()
    before = state(project)

    code, _, err = cli(capsys, chk.id, "-f")

    assert code == 1
    assert_one_error(err, str(tarball), "member")
    assert state(project) == before  # not even the good member
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
    assert no_staging_left(project)


def test_a_truncated_tarball_is_a_clear_error_and_writes_nothing(project, capsys):
    experiment, (chk,) = record_weights(project, [(0.5, os.urandom(200_000))])
    tarball = project / ".keepsake" / "checkpoints" / f"{chk.id}.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[:100_000])
    (project / "model.pth").unlink()
    before = state(project)
    code, _, err = cli(capsys, experiment.id, "-f")
    assert code == 1
    assert_one_error(err, "is not a readable .tar.gz")
    assert state(project) == before
    assert no_staging_left(project)


def test_symlink_in_the_output_folder_pointing_outside_is_refused(project, tmp_path, capsys):
    (project / "data").mkdir()
    (project / "data" / "w.bin").write_bytes(b"weights")
    experiment = keepsake.init(path="data")
    experiment.stop()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(project / "data")
    os.symlink(elsewhere, project / "data")

    code, _, err = cli(capsys, experiment.id, "-f")

    assert code == 1
    assert_one_error(err, f"{project / 'data'} is a symlink", "never writes through one")
    assert list(elsewhere.iterdir()) == []


def test_symlink_in_the_output_folder_pointing_inside_is_refused_too(project, capsys):
    (project / "data").mkdir()
    (project / "data" / "w.bin").write_bytes(b"weights")
    experiment = keepsake.init(path="data")
    experiment.stop()
    shutil.rmtree(project / "data")
    (project / "real").mkdir()
    os.symlink("real", project / "data")  # inside today; a later checkout could relink it
    code, _, err = cli(capsys, experiment.id)
    assert code == 1
    assert_one_error(err, f"{project / 'data'} is a symlink", "never writes through one")
    assert list((project / "real").iterdir()) == []


def test_a_folder_in_the_way_is_refused(project, capsys):
    experiment, _ = record_weights(project, [(0.5, b"weights")])
    (project / "model.pth").unlink()
    (project / "model.pth").mkdir()
    (project / "model.pth" / "keep.txt").write_text("mine\n")
    code, _, err = cli(capsys, experiment.id, "-f")
    assert code == 1
    assert_one_error(err, "is a folder, and the checkout has a file there")
    assert (project / "model.pth" / "keep.txt").read_text() == "mine\n"


def test_a_file_where_a_folder_must_go_is_refused(project, capsys):
    (project / "src").mkdir()
    (project / "src" / "m.py").write_text("M = 1\n")
    experiment = keepsake.init(path="src")
    experiment.stop()
    shutil.rmtree(project / "src")
    (project / "src").write_text("a file now\n")
    code, _, err = cli(capsys, experiment.id, "-f")
    assert code == 1
    assert_one_error(err, "is a file, and src/m.py needs a folder there")
    assert (project / "src").read_text() == "a file now\n"


# --- the Python API ---


def test_library_checkout_right_after_recording(project, tmp_path):
    (project / "train.py").write_text("code\n")
    experiment = keepsake.init(path=".")
    (project / "model.pth").write_bytes(b"fresh")
    chk = experiment.checkpoint(path="model.pth", metrics={"loss": 1.0})
    result = checkout(experiment._project, chk, tmp_path / "out")  # its upload may be pending
    assert result.written == ["model.pth", "train.py"]
    assert (tmp_path / "out" / "model.pth").read_bytes() == b"fresh"
    experiment.stop()


def test_library_refuses_to_overwrite_unless_forced(changed, project):
    with pytest.raises(WouldOverwrite) as e:
        checkout(Project(), changed.id)
    assert e.value.conflicts == ["model.pth", "train.py"]
    assert (project / "model.pth").read_bytes() == b"retrained"
    result = checkout(Project(), changed.id, force=True)
    assert result.written == ["model.pth", "train.py"]


def test_progress_goes_from_zero_to_the_total(project, tmp_path):
    experiment, _ = record_weights(project, [(0.5, os.urandom(300_000))])
    calls = []
    with plan_checkout(
        Project(), experiment, tmp_path / "out", progress=lambda d, t: calls.append((d, t))
    ) as plan:
        assert plan.to_write == ["model.pth", "train.py"]
        staging = list((tmp_path / "out").glob(".keepsake-checkout-*"))
        assert len(staging) == 1
    assert not staging[0].exists()  # closed without applying: staging gone
    total = calls[0][1]
    assert calls[0][0] == 0 and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# --- the Keepsake 0.4.2 fixture ---


def tarball_files(root: Path, kind: str, prefix: str) -> dict[str, bytes]:
    (path,) = (root / ".keepsake" / kind).glob(prefix + "*.tar.gz")
    with tarfile.open(path) as tar:
        return {m.name.partition("/")[2]: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.mark.parametrize(
    "target, code_from, files_from",
    [
        ("b60bf65", "b60bf65", "4ed2649"),  # path ".", best checkpoint 4ed2649 (model.pth)
        ("7965516", None, None),  # no path, metric-only checkpoints
        ("3f8a508", "3f8a508", None),  # train.py, no checkpoints
        ("8444cd1", "b60bf65", "8444cd1"),  # a checkpoint of b60bf65, path "data"
    ],
)
def test_checkout_of_the_keepsake_042_fixture(
    fixture_project, tmp_path, capsys, target, code_from, files_from
):
    expected = {}
    if code_from:
        expected |= tarball_files(fixture_project, "experiments", code_from)
    if files_from:
        expected |= tarball_files(fixture_project, "checkpoints", files_from)
    out = tmp_path / "out"

    code = main(["-D", str(fixture_project), "checkout", target, "-o", str(out)])
    err = capsys.readouterr().err

    assert code == 0, err
    assert contents(out) == expected
    assert "To run it again: cd" in err


def test_checkout_into_the_fixture_project_itself(fixture_project, capsys):
    (fixture_project / "model.pth").write_bytes(b"changed")
    code = main(["-D", str(fixture_project), "checkout", "b60bf65", "-f"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (fixture_project / "model.pth").read_bytes() == tarball_files(
        fixture_project, "checkpoints", "4ed2649"
    )["model.pth"]
    assert (fixture_project / "ignored" / "big.bin").exists()  # never deletes


# --- errors ---


def test_unknown_id_is_one_line(project, capsys):
    record_weights(project, [(0.5, b"w")])
    code, _, err = cli(capsys, "0000000")
    assert code == 1
    assert_one_error(err, "no experiment or checkpoint matches '0000000'")


def test_ambiguous_prefix_is_one_line(project, capsys):
    experiment = keepsake.init()
    for step in range(16):  # 17 ids over 16 hex digits: two share a first digit
        experiment.checkpoint(metrics={"loss": float(step)})
    experiment.stop()
    ids = [experiment.id] + [c.id for c in experiment.checkpoints]
    shared = next(d for d in "0123456789abcdef" if sum(i.startswith(d) for i in ids) > 1)
    code, _, err = cli(capsys, shared)
    assert code == 1
    assert_one_error(err, f"'{shared}' matches")


def test_non_hex_id_is_one_line(project, capsys):
    code, _, err = cli(capsys, "not-an-id")
    assert code == 1
    assert_one_error(err, "is not an experiment or checkpoint ID")


def test_remote_tarballs_are_downloaded_into_staging(project, tmp_path, monkeypatch, capsys):
    from git_keepsake.storage.disk import DiskStorage

    experiment, _ = record_weights(project, [(0.5, b"weights")])
    monkeypatch.setattr(DiskStorage, "local_path", lambda self, key: None)  # as S3 or GCS are
    out = tmp_path / "out"

    code, _, err = cli(capsys, experiment.id, "-o", str(out))

    assert code == 0, err
    assert f"Downloading checkpoints/{experiment.latest().id}.tar.gz from file://" in err
    assert contents(out) == {"train.py": b"code\n", "model.pth": b"weights"}
    assert no_staging_left(out)


def test_progress_bar_on_a_terminal(project, tmp_path, monkeypatch, capsys):
    from git_keepsake.cli import checkout as command

    experiment, _ = record_weights(project, [(0.5, os.urandom(100_000))])
    monkeypatch.setattr(command, "PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = cli(capsys, experiment.id, "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert "Extracting" in err and "100%" in err


def test_a_killed_checkouts_staging_is_cleaned_up_by_the_next(git_project, tmp_path, capsys):
    import subprocess as sp

    dead = sp.Popen(["true"])
    dead.wait()  # a process id that is gone
    abandoned = git_project / f".keepsake-checkout-{dead.pid}-abc"
    (abandoned / "0000001").mkdir(parents=True)
    alive = git_project / f".keepsake-checkout-{os.getppid()}-def"
    alive.mkdir()
    experiment = keepsake.init(path="train.py")
    experiment.stop()
    code, _, err = cli(capsys, experiment.id, "-f")
    assert code == 0, err
    assert not abandoned.exists() and alive.is_dir()
