"""Checkout attacked: pulled remotes that plant git hooks, links that lead out, crafted and
corrupt tarballs through the CLI and the Python API, tar bombs on a small disk, killed checkouts."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

import git_keepsake as keepsake
from git_keepsake import Project
from git_keepsake.cli import main
from tests.conftest import GIT_KEEPSAKE, git, run_script
from tests.conftest import keepsake_cli as keepsake_run

# --- helpers ---


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_error_and_hint(err: str, *fragments: str) -> None:
    """One `error:` line with the fragments, then a `hint:` line; no traceback."""
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], err
    assert "Traceback" not in err and "internal error" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], err


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root, links not followed: (kind, contents or target, mode). Our own
    cache in .git/keepsake is left out."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath).name == ".git":
            dirnames[:] = [d for d in dirnames if d != "keepsake"]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                value = ("link", os.readlink(path), 0)
            elif stat.S_ISDIR(st.st_mode):
                value = ("dir", None, stat.S_IMODE(st.st_mode))
            else:
                value = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
            out[path.relative_to(root).as_posix()] = value
    return out


def craft(path: Path, top: str, members: list[tuple[str, bytes, int]]) -> None:
    """A .tar.gz of (name below the top folder, data, mode) regular-file members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))


def record_checkpoint(root: Path, weights: bytes = b"weights"):
    (root / "train.py").write_text("code\n")
    (root / "model.pth").write_bytes(weights)
    experiment = keepsake.init(path="train.py")
    chk = experiment.checkpoint(path="model.pth", metrics={"loss": 0.5})
    experiment.stop()
    (root / "model.pth").unlink()
    return experiment, chk


def checkpoint_tarball(root: Path, chk) -> Path:
    return root / ".keepsake" / "checkpoints" / f"{chk.id}.tar.gz"


# --- 14: a pulled remote must not plant a git hook ---


TRAIN = "import git_keepsake as k; e = k.init(path='train.py'); e.stop(); print(e.id)"


@pytest.fixture
def attacker_and_victim(tmp_path):
    """A bare remote and one storage folder shared by an attacker's clone and a victim's."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    attacker = tmp_path / "attacker"
    git("clone", "-q", str(remote), str(attacker), cwd=tmp_path)
    (attacker / "train.py").write_text("print('train')\n")
    (attacker / "keepsake.yaml").write_text(f'repository: "file://{tmp_path / "storage"}"\n')
    git("add", ".", cwd=attacker)
    git("commit", "-q", "-m", "training script", cwd=attacker)
    git("push", "-q", "origin", "main", cwd=attacker)
    victim = tmp_path / "victim"
    git("clone", "-q", str(remote), str(victim), cwd=tmp_path)
    return attacker, victim


def attacker_records(attacker: Path, tmp_path: Path) -> tuple[str, str]:
    """Experiment A, whose snapshot (its HEAD tree) has `hooks -> .git/hooks`; experiment B,
    whose snapshot has an executable hooks/post-checkout. Both pushed."""
    os.symlink(".git/hooks", attacker / "hooks")
    git("add", "hooks", cwd=attacker)
    git("commit", "-q", "-m", "a link", cwd=attacker)
    a = run_script(TRAIN, attacker)
    assert a.returncode == 0, a.stderr
    git("rm", "-q", "hooks", cwd=attacker)
    (attacker / "hooks").mkdir()
    hook = attacker / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\necho pwned > {tmp_path / 'pwned'}\n")
    hook.chmod(0o755)
    git("add", "hooks", cwd=attacker)
    git("commit", "-q", "-m", "a hook", cwd=attacker)
    b = run_script(TRAIN, attacker)
    assert b.returncode == 0, b.stderr
    keepsake_run("push", cwd=attacker)
    return a.stdout.strip(), b.stdout.strip()


@pytest.mark.parametrize("link_already_there", [False, True])
def test_a_pulled_remote_cannot_plant_a_git_hook(attacker_and_victim, tmp_path, link_already_there):
    attacker, victim = attacker_and_victim
    a, b = attacker_records(attacker, tmp_path)
    keepsake_run("pull", cwd=victim)
    if link_already_there:  # from an older git-keepsake, or the victim's own doing
        os.symlink(".git/hooks", victim / "hooks")
    git_before = tree(victim / ".git")

    first = keepsake_run("checkout", a[:7], "-f", cwd=victim, ok=False)
    second = keepsake_run("checkout", b[:7], "-f", cwd=victim, ok=False)
    git("checkout", "-q", "-b", "elsewhere", cwd=victim)  # runs post-checkout, if there is one

    assert not (tmp_path / "pwned").exists()
    git_after = tree(victim / ".git")
    assert {k: v for k, v in git_after.items() if k.startswith("hooks")} == {
        k: v for k, v in git_before.items() if k.startswith("hooks")
    }
    assert not (victim / ".git" / "hooks" / "post-checkout").exists()
    if not link_already_there:
        assert first.returncode == 0, first.stderr
        assert "skipped symlink hooks -> .git/hooks" in first.stderr
        assert not os.path.islink(victim / "hooks")
        assert second.returncode == 0, second.stderr
        assert (victim / "hooks" / "post-checkout").is_file()  # a plain file of the work tree
    else:
        assert second.returncode == 1
        assert "error:" in second.stderr and "is a symlink" in second.stderr
        assert "Traceback" not in second.stderr


@pytest.mark.parametrize("name", [".git", ".GIT", ".Git"])
def test_links_into_git_in_any_case_are_not_written(git_project, tmp_path, capsys, name):
    os.symlink(f"{name}/hooks", git_project / "hooks")
    os.symlink(f"sub/../{name}", git_project / "g")
    git("add", "hooks", "g", cwd=git_project)
    git("commit", "-q", "-m", "links", cwd=git_project)
    experiment = keepsake.init(path="train.py")
    experiment.stop()
    out = tmp_path / "out"
    git("init", "-q", str(out), cwd=tmp_path)

    code, _, err = cli(capsys, "checkout", experiment.id, "-o", str(out), "-f")

    assert code == 0, err
    assert not os.path.lexists(out / "hooks") and not os.path.lexists(out / "g")
    assert "skipped symlink hooks" in err and "skipped symlink g" in err


# --- 17: a link that is inside by its name but outside for real ---


def test_a_link_through_another_link_that_leads_out_is_not_written(git_project, tmp_path, capsys):
    (git_project / "a" / "b").mkdir(parents=True)
    os.symlink(".", git_project / "a" / "b" / "s")
    os.symlink("s/../../..", git_project / "a" / "b" / "t")  # "." by its name; .. for real
    git("add", "a", cwd=git_project)
    git("commit", "-q", "-m", "links", cwd=git_project)
    experiment = keepsake.init(path="train.py")
    experiment.stop()
    out = tmp_path / "deep" / "out"

    code, _, err = cli(capsys, "checkout", experiment.id, "-o", str(out), "-f")

    assert code == 0, err
    t = out / "a" / "b" / "t"
    assert not os.path.lexists(t) or Path(os.path.realpath(t)).is_relative_to(out), (
        os.path.realpath(t)
    )
    assert "skipped symlink a/b/t" in err
    assert os.path.islink(out / "a" / "b" / "s")  # "." stays inside: kept


def test_a_file_is_never_written_through_a_symlinked_folder_even_inside(project, capsys):
    experiment, chk = record_checkpoint(project)
    craft(checkpoint_tarball(project, chk), chk.id, [("data/w.bin", b"w", 0o644)])
    (project / "real").mkdir()
    os.symlink("real", project / "data")

    code, _, err = cli(capsys, "checkout", chk.id, "-f")

    assert code == 1
    assert_error_and_hint(err, "is a symlink")
    assert list((project / "real").iterdir()) == []


# --- 15: the Python API has the CLI's checks (one checkout path) ---


def api_checkout(chk_id: str, out: Path) -> None:
    Project().checkpoints.get(chk_id).checkout(str(out), quiet=True)


def cli_checkout(chk_id: str, out: Path) -> None:
    code = main(["checkout", chk_id, "-o", str(out), "-f"])
    if code != 0:
        raise keepsake.KeepsakeError(f"exit {code}")


ROUTES = {"api": api_checkout, "cli": cli_checkout}
CRAFTED = {
    "into .git": [("model.pth", b"ok", 0o644), (".git/hooks/pre-commit", b"#!/bin/sh\n", 0o755)],
    "into .GIT": [(".GIT/hooks/pre-commit", b"#!/bin/sh\n", 0o755)],
    "through a link out": [("model.pth", b"ok", 0o644), ("data/w.bin", b"planted", 0o644)],
    "through a link in": [("data/w.bin", b"planted", 0o644)],
    "into the repository": [(".keepsake/repository.json", b"{}", 0o644)],
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", list(CRAFTED))
def test_api_and_cli_refuse_the_same_crafted_tarballs(project, tmp_path, route, case, capsys):
    git("init", "-q", cwd=project)
    experiment, chk = record_checkpoint(project)
    craft(checkpoint_tarball(project, chk), chk.id, CRAFTED[case])
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "inside").mkdir()
    os.symlink(outside if case.endswith("out") else "inside", project / "data")
    before, outside_before = tree(project), tree(outside)

    with pytest.raises(keepsake.KeepsakeError):
        ROUTES[route](chk.id, project)

    assert tree(project) == before
    assert tree(outside) == outside_before
    capsys.readouterr()


def test_api_checkout_still_writes_a_checkpoints_files(project, tmp_path):
    experiment, chk = record_checkpoint(project, b"the weights")
    out = tmp_path / "out"
    assert Project().checkpoints.get(chk.id).checkout(str(out), quiet=True) == ["model.pth"]
    assert tree(out) == {"model.pth": ("file", b"the weights", 0o644)}
    (out / "model.pth").write_bytes(b"changed")  # Keepsake's checkout overwrites: so does ours
    assert Project().checkpoints.get(chk.id).checkout(str(out), quiet=True) == ["model.pth"]
    assert (out / "model.pth").read_bytes() == b"the weights"


# --- 21: a corrupt tarball is our error, through the API and the CLI ---


def damage(tarball: Path, how: str) -> None:
    data = tarball.read_bytes()
    tarball.write_bytes(data[: len(data) // 2] if how == "truncated" else b"garbage" * 1000)


def read_all(checkpoint, path: str) -> bytes:
    with checkpoint.open(path) as f:
        return f.read()


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_corrupt_tarball_is_one_clear_error_everywhere(project, tmp_path, capsys, how):
    experiment, chk = record_checkpoint(project, os.urandom(300_000))
    tarball = checkpoint_tarball(project, chk)
    damage(tarball, how)
    out = tmp_path / "out"

    checkpoint = Project().checkpoints.get(chk.id)
    with pytest.raises(keepsake.KeepsakeError, match="is not a readable .tar.gz") as e:
        checkpoint.checkout(str(out), quiet=True)
    assert e.value.hint
    with pytest.raises(keepsake.KeepsakeError, match="is not a readable .tar.gz"):
        read_all(checkpoint, "model.pth")  # at open() or at read(), as far as it got
    code, _, err = cli(capsys, "checkout", chk.id, "-o", str(out), "-f")
    assert code == 1
    assert_error_and_hint(err, "is not a readable .tar.gz")
    assert not out.exists()


# --- 22: a tar bomb on a small disk; a killed checkout's leftovers ---


@pytest.fixture
def small_disk(tmp_path, mounts):
    """A 16 MB tmpfs."""
    (tmp_path / "small").mkdir()
    return mounts("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(tmp_path / "small"))


class FreeSpaceWatch:
    """The least free space seen on a filesystem while the block runs."""

    def __init__(self, path: Path):
        self.path = path
        self.least = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            st = os.statvfs(self.path)
            self.least = min(self.least, st.f_bavail * st.f_frsize)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_tar_bomb_is_refused_before_it_fills_the_disk(project, small_disk, route, capsys):
    experiment, chk = record_checkpoint(project)
    bomb = [("model.pth", b"ok", 0o644), ("zeros.bin", bytes(64 * 1024 * 1024), 0o644)]
    craft(checkpoint_tarball(project, chk), chk.id, bomb)
    assert checkpoint_tarball(project, chk).stat().st_size < 200_000
    out = small_disk / "out"

    with FreeSpaceWatch(small_disk) as watch, pytest.raises(keepsake.KeepsakeError):
        ROUTES[route](chk.id, out)

    assert watch.least > 15 * 1024 * 1024  # nothing was extracted at all
    assert not out.exists()
    if route == "cli":
        assert_error_and_hint(capsys.readouterr().err, "not enough space", str(out))


def test_a_sigkilled_checkout_leaves_nothing_git_sees_and_is_cleaned_next(git_project):
    (git_project / ".gitignore").write_text("model.pth\n.keepsake/\n")
    git("add", ".gitignore", cwd=git_project)
    git("commit", "-q", "-m", "ignore", cwd=git_project)
    experiment, chk = record_checkpoint(git_project)
    craft(
        checkpoint_tarball(git_project, chk),
        chk.id,
        [("model.pth", bytes(1024 * 1024 * 1024), 0o644)],
    )
    git("add", "train.py", cwd=git_project)
    git("commit", "-q", "-m", "train", cwd=git_project)
    assert git("status", "--porcelain", cwd=git_project) == ""

    running = subprocess.Popen(
        [GIT_KEEPSAKE, "checkout", chk.id, "-f"], cwd=git_project, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not any(
        f.stat().st_size > 1024 * 1024
        for f in git_project.glob(".keepsake-checkout-*/*")
        if f.is_file()
    ):
        assert running.poll() is None and time.monotonic() < deadline
    running.send_signal(signal.SIGKILL)
    running.wait()
    (left,) = git_project.glob(".keepsake-checkout-*")

    assert git("status", "--porcelain", "--untracked-files=all", cwd=git_project) == ""
    keepsake_run("ls", cwd=git_project)  # any command in the project cleans it up
    assert not left.exists()


# --- by resolved path, not by name; writes that cross a mount ---


def test_git_folder_under_another_name_is_refused_by_inode(project, mounts, capsys):
    git("init", "-q", cwd=project)
    experiment, chk = record_checkpoint(project)
    craft(checkpoint_tarball(project, chk), chk.id, [("view/hooks/post-checkout", b"x", 0o755)])
    (project / "view").mkdir()
    mounts("--bind", str(project / ".git"), str(project / "view"))  # .git, named "view"
    before = tree(project / ".git")

    code, _, err = cli(capsys, "checkout", chk.id, "-f")

    assert code == 1
    assert_error_and_hint(err, "is the git folder")
    assert tree(project / ".git") == before


def test_a_file_onto_another_filesystem_inside_the_output_folder(project, tmp_path, mounts):
    experiment, chk = record_checkpoint(project)
    craft(checkpoint_tarball(project, chk), chk.id, [("disk/w.bin", b"w" * 10_000, 0o755)])
    out = tmp_path / "out"
    (out / "disk").mkdir(parents=True)
    mounts("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out / "disk"))  # rename() gives EXDEV

    assert api_checkout_paths(chk.id, out) == ["disk/w.bin"]

    assert tree(out / "disk") == {"w.bin": ("file", b"w" * 10_000, 0o755)}


def api_checkout_paths(chk_id: str, out: Path) -> list[str]:
    return Project().checkpoints.get(chk_id).checkout(str(out), quiet=True)


@pytest.mark.parametrize("inside", [".git", ".git/hooks", ".GIT/x", ".keepsake/checkpoints"])
def test_an_output_folder_inside_git_or_the_repository_is_refused(git_project, capsys, inside):
    experiment, chk = record_checkpoint(git_project)
    before = tree(git_project / ".git")
    repository = tree(git_project / ".keepsake")
    code, _, err = cli(capsys, "checkout", chk.id, "-o", inside, "-f")
    assert code == 1
    assert_error_and_hint(err, "checkout never writes there")
    with pytest.raises(keepsake.KeepsakeError, match="checkout never writes there"):
        api_checkout_paths(chk.id, git_project / inside)
    assert tree(git_project / ".git") == before
    assert tree(git_project / ".keepsake") == repository
    assert not (git_project / ".GIT").exists()


def test_a_folder_swapped_for_a_link_while_the_prompt_waits_is_not_written_through(
    project, tmp_path
):
    from git_keepsake.checkout import plan_checkout

    experiment, chk = record_checkpoint(project)
    craft(checkpoint_tarball(project, chk), chk.id, [("data/w.bin", b"planted", 0o644)])
    (project / "data").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    with plan_checkout(Project(), chk.id, code=False) as plan:
        assert plan.to_write == ["data/w.bin"]
        (project / "data").rmdir()
        os.symlink(outside, project / "data")
        with pytest.raises(keepsake.KeepsakeError, match="is a symlink"):
            plan.apply()
    assert list(outside.iterdir()) == []
