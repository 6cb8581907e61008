"""The pre-push hook: install/uninstall beside other tools' hooks, and real `git push`es to a
bare remote with it in place."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import git
from tests.test_sharing import keepsake, team, train  # noqa: F401 (team is a fixture)

FOREIGN = """#!/bin/sh
# another tool's hook: records what it was given
echo "args: $*" > "$(dirname "$0")/../legacy-ran"
cat >> "$(dirname "$0")/../legacy-ran"
exit ${LEGACY_EXIT:-0}
"""


@pytest.fixture
def repo(tmp_path):
    git("init", "-q", "-b", "main", str(tmp_path / "repo"), cwd=tmp_path)
    return tmp_path / "repo"


def hooks(repo):
    return repo / ".git" / "hooks"


def put_foreign(repo) -> None:
    """Another tool's hook, as git would run it: executable."""
    hooks(repo).mkdir(parents=True, exist_ok=True)
    (hooks(repo) / "pre-push").write_text(FOREIGN)
    (hooks(repo) / "pre-push").chmod(0o755)


def test_install_into_a_fresh_repository(repo):
    assert "installed" in keepsake("install", cwd=repo).stdout
    hook = hooks(repo) / "pre-push"
    text = hook.read_text()
    assert "# git-keepsake pre-push hook, version 2" in text
    python = re.search(r"^PYTHON='([^']+)'", text, re.MULTILINE).group(1)
    assert Path(python).resolve() == Path(sys.executable).resolve()  # no venv activation
    assert os.access(hook, os.X_OK)
    assert not (hooks(repo) / "pre-push.legacy").exists()
    assert "upgraded" in keepsake("install", cwd=repo).stdout  # again: in place


def test_a_foreign_hook_is_kept_and_restored(repo):
    put_foreign(repo)
    assert "runs first, as pre-push.legacy" in keepsake("install", cwd=repo).stdout
    assert (hooks(repo) / "pre-push.legacy").read_text() == FOREIGN
    assert "the one that was there before" in keepsake("uninstall", cwd=repo).stdout
    assert (hooks(repo) / "pre-push").read_text() == FOREIGN
    assert not (hooks(repo) / "pre-push.legacy").exists()


def test_force_replaces_a_foreign_hook(repo):
    put_foreign(repo)
    keepsake("install", "--force", cwd=repo)
    assert "git-keepsake pre-push hook" in (hooks(repo) / "pre-push").read_text()
    assert not (hooks(repo) / "pre-push.legacy").exists()


def test_an_older_version_of_ours_is_upgraded(repo):
    hooks(repo).mkdir(parents=True, exist_ok=True)
    (hooks(repo) / "pre-push").write_text("#!/bin/sh\n# git-keepsake pre-push hook, version 0\n")
    assert "(version 0 to 2)" in keepsake("install", cwd=repo).stdout
    assert "version 2" in (hooks(repo) / "pre-push").read_text()
    assert not (hooks(repo) / "pre-push.legacy").exists()


def test_core_hooks_path_is_followed(repo):
    git("config", "core.hooksPath", "team-hooks", cwd=repo)
    keepsake("install", cwd=repo)
    assert "git-keepsake" in (repo / "team-hooks" / "pre-push").read_text()
    assert not (hooks(repo) / "pre-push").exists()
    keepsake("uninstall", cwd=repo)
    assert not (repo / "team-hooks" / "pre-push").exists()


def test_bad_inputs_are_one_clear_line(repo, tmp_path):
    put_foreign(repo)
    done = keepsake("uninstall", cwd=repo, ok=False)
    assert done.returncode == 1 and "is not git-keepsake's hook: left alone" in done.stderr
    (hooks(repo) / "pre-push.legacy").write_text(FOREIGN)
    done = keepsake("install", cwd=repo, ok=False)
    assert done.returncode == 1 and "pre-push.legacy is taken already" in done.stderr
    outside = tmp_path / "not-git"
    outside.mkdir()
    done = keepsake("install", cwd=outside, ok=False)
    assert done.returncode == 1 and "is not in a git repository" in done.stderr


# --- git push with the hook ---


def remote_refs(remote) -> list[str]:
    return git("for-each-ref", "--format=%(refname)", "refs/keepsake", cwd=remote).split()


def git_push(clone, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`git push -q ARGS`, hooks and all, as the user runs it."""
    return subprocess.run(
        ["git", "push", "-q", *args],
        cwd=clone,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def commit_and_push(clone, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    (clone / "notes.txt").write_text(str(os.urandom(4)))
    git("add", "notes.txt", cwd=clone)
    git("commit", "-q", "-m", "more", cwd=clone)
    return git_push(clone, *(args or ["origin", "main"]), env=env)


def test_git_push_pushes_experiments_after_the_legacy_hook(team):  # noqa: F811
    a, b, remote = team
    put_foreign(a)
    keepsake("install", cwd=a)
    experiment_id = train(a, 0.1)
    pushed = commit_and_push(a)
    assert pushed.returncode == 0, pushed.stderr
    assert "git-keepsake: pushed 1 experiment(s) to origin" in pushed.stderr
    assert f"refs/keepsake/metadata/{experiment_id}" in remote_refs(remote)
    ran = (a / ".git" / "legacy-ran").read_text().splitlines()
    assert ran[0] == f"args: origin {remote}"
    head = git("rev-parse", "HEAD", cwd=a).strip()
    assert ran[1].split() == ["refs/heads/main", head, "refs/heads/main", ran[1].split()[3]]

    keepsake("pull", cwd=b)  # and the teammate has it
    assert experiment_id[:7] in keepsake("ls", cwd=b).stdout


def test_the_legacy_hook_can_still_stop_a_push(team):  # noqa: F811
    a, _, remote = team
    put_foreign(a)
    keepsake("install", cwd=a)
    train(a, 0.1)
    pushed = commit_and_push(a, env={"LEGACY_EXIT": "1"})
    assert pushed.returncode != 0
    assert remote_refs(remote) == []


@pytest.mark.parametrize("how", ["skip", "delete"])
def test_nothing_is_pushed_when_skipped_or_deleting_a_branch(team, how):  # noqa: F811
    a, _, remote = team
    git("push", "-q", "origin", "main:feature", cwd=a)
    keepsake("install", cwd=a)
    train(a, 0.1)
    if how == "skip":
        pushed = commit_and_push(a, env={"GIT_KEEPSAKE_SKIP_PUSH": "1"})
    else:
        pushed = git_push(a, "origin", "--delete", "feature")
    assert pushed.returncode == 0, pushed.stderr
    assert "git-keepsake" not in pushed.stderr
    assert remote_refs(remote) == []


def test_storage_down_says_so_and_the_branch_push_goes_on(team, monkeypatch):  # noqa: F811
    a, _, remote = team
    keepsake("install", cwd=a)
    train(a, 0.1)
    (a / "keepsake.yaml").write_text('repository: "s3://team-bucket"\n')
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    pushed = commit_and_push(a)
    assert pushed.returncode == 0, pushed.stderr
    assert git("rev-parse", "main", cwd=remote) == git("rev-parse", "main", cwd=a)
    lines = [line for line in pushed.stderr.splitlines() if line.startswith("git-keepsake:")]
    # The refs name only blobs already stored, so they still go; the notes need a listing.
    assert lines[0].startswith("git-keepsake: notes on commits not pushed (cannot reach s3://")
    assert lines[1] == "git-keepsake: pushed 1 experiment(s) to origin"
    assert len(remote_refs(remote)) == 2
    assert "Traceback" not in pushed.stderr


def test_a_failing_experiment_push_never_stops_the_branch(team):  # noqa: F811
    a, _, remote = team
    keepsake("install", cwd=a)
    train(a, 0.1)
    # The remote refuses refs/keepsake/* (a server-side policy, say): the branch still goes.
    hook = remote / "hooks" / "update"
    hook.write_text('#!/bin/sh\ncase "$1" in refs/keepsake/*) exit 1;; esac\nexit 0\n')
    hook.chmod(0o755)
    pushed = commit_and_push(a)
    assert pushed.returncode == 0, pushed.stderr
    assert git("rev-parse", "main", cwd=remote) == git("rev-parse", "main", cwd=a)
    lines = [line for line in pushed.stderr.splitlines() if line.startswith("git-keepsake:")]
    assert lines[0].startswith("git-keepsake: experiments were not pushed to origin: git push")
    assert lines[1] == "git-keepsake: your branch push goes on; to retry: git keepsake push origin"
    assert "Traceback" not in pushed.stderr


def test_the_hook_is_package_data():
    """Read through importlib, so a non-editable install finds it in the wheel."""
    from importlib import resources

    text = resources.files("git_keepsake.hooks").joinpath("pre-push").read_text()
    assert text.startswith("#!/bin/sh\n# git-keepsake pre-push hook, version 2\n")


def test_the_hook_finishes_a_killed_runs_uploads_before_pushing(team):  # noqa: F811
    """The third way a killed run is recovered (test_recovery.py has init() and sync)."""
    from tests.conftest import run_script
    from tests.test_recovery import KILLED

    a, b, remote = team
    keepsake("install", cwd=a)
    killed = run_script(KILLED, a)
    experiment_id, checkpoint_id = killed.stdout.split()
    pushed = commit_and_push(a)
    assert pushed.returncode == 0, pushed.stderr
    assert f"finished an earlier run's writes: experiment {experiment_id[:7]}" in pushed.stderr
    assert f"refs/keepsake/metadata/{experiment_id}" in remote_refs(remote)

    keepsake("pull", cwd=b)
    out = b / "restored"
    keepsake("checkout", checkpoint_id[:7], "-o", str(out), "-f", cwd=b)
    assert (out / "model.pth").read_bytes() == b"weights 2"


def test_git_push_to_a_url_pushes_experiments_too(team):  # noqa: F811
    """`git push URL` names no remote: the fetched refs must still get a valid place."""
    a, _, remote = team
    keepsake("install", cwd=a)
    experiment_id = train(a, 0.1)
    pushed = commit_and_push(a, str(remote), "main")
    assert pushed.returncode == 0, pushed.stderr
    assert f"git-keepsake: pushed 1 experiment(s) to {remote}" in pushed.stderr
    assert f"refs/keepsake/metadata/{experiment_id}" in remote_refs(remote)


# --- beside the pre-commit framework's own pre-push hook ---

PRE_COMMIT = str(Path(sys.executable).parent / "pre-commit")  # from the test extra


def pre_commit_install(clone) -> None:
    """`pre-commit install -t pre-push`, with a config of no hooks: only its script matters."""
    (clone / ".pre-commit-config.yaml").write_text("repos: []\n")
    git("add", ".pre-commit-config.yaml", cwd=clone)
    git("commit", "-q", "-m", "pre-commit", cwd=clone)
    done = subprocess.run(
        [PRE_COMMIT, "install", "-t", "pre-push"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def bounded_push(clone, tmp_path, timeout: float = 10) -> subprocess.CompletedProcess:
    """Commit and `git push origin main` in a process group of its own, killed whole if it
    outlives `timeout`: a hook that runs itself must fail the test, not leave a chain behind."""
    (clone / "notes.txt").write_text(str(os.urandom(4)))
    git("add", "notes.txt", cwd=clone)
    git("commit", "-q", "-m", "more", cwd=clone)
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the hooks' mktemp files, if killed
    push = subprocess.Popen(
        ["git", "push", "-q", "origin", "main"],
        cwd=clone,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = push.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the group is empty: forks may race a kill
            try:
                os.killpg(push.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        push.communicate()
        pytest.fail(f"git push did not end in {timeout} s: a hook is running itself")
    return subprocess.CompletedProcess(push.args, push.returncode, out, err)


@pytest.mark.parametrize("first", ["keepsake", "pre-commit"])
def test_beside_pre_commit_experiments_go_once_per_push(team, tmp_path, first):  # noqa: F811
    """Whichever installer runs last, each `git push` pushes the experiments once; and neither
    hook runs itself (pre-commit keeps the hook it finds as pre-push.legacy and runs that)."""
    a, _, remote = team
    if first == "keepsake":
        keepsake("install", cwd=a)
        pre_commit_install(a)
    else:
        pre_commit_install(a)
        keepsake("install", cwd=a)
    experiment_id = train(a, 0.1)
    for _ in range(2):
        pushed = bounded_push(a, tmp_path)
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stderr.count("git-keepsake: pushed 1 experiment(s) to origin") == 1, (
            pushed.stderr
        )
        assert git("rev-parse", "main", cwd=remote) == git("rev-parse", "main", cwd=a)
        assert f"refs/keepsake/metadata/{experiment_id}" in remote_refs(remote)


def test_layouts_beside_pre_commit_are_mended_and_undone(repo):
    pre_commit_install(repo)
    theirs = (hooks(repo) / "pre-push").read_text()
    ours_v1 = "#!/bin/sh\n# git-keepsake pre-push hook, version 1\n"
    # Version 1 installed after pre-commit put pre-commit's hook aside, where it refuses to run.
    (hooks(repo) / "pre-push.legacy").write_text(theirs)
    (hooks(repo) / "pre-push").write_text(ours_v1)
    assert "is pre-commit's hook again" in keepsake("install", cwd=repo).stdout
    assert (hooks(repo) / "pre-push").read_text() == theirs
    assert "version 2" in (hooks(repo) / "pre-push.legacy").read_text()
    # Version 1 that pre-commit put aside (it ran itself): upgraded where it is.
    (hooks(repo) / "pre-push.legacy").write_text(ours_v1)
    done = keepsake("install", cwd=repo).stdout
    assert "(version 1 to 2), which pre-commit's hook runs" in done
    assert "version 2" in (hooks(repo) / "pre-push.legacy").read_text()
    assert "removed" in keepsake("uninstall", cwd=repo).stdout
    assert (hooks(repo) / "pre-push").read_text() == theirs
    assert not (hooks(repo) / "pre-push.legacy").exists()
    # pre-commit's hook with another tool's legacy hook: no place left for ours.
    (hooks(repo) / "pre-push.legacy").write_text(FOREIGN)
    done = keepsake("install", cwd=repo, ok=False)
    assert done.returncode == 1 and "which it runs, is another tool's" in done.stderr
    assert "declare git-keepsake in .pre-commit-config.yaml" in done.stderr


@pytest.mark.parametrize(
    "env, said",
    [
        ({"GIT_KEEPSAKE_SKIP_PUSH": "1", "PRE_COMMIT_REMOTE_NAME": "origin"}, ""),
        ({"GIT_KEEPSAKE_PUSHING": "1", "PRE_COMMIT_REMOTE_NAME": "origin"}, ""),
        ({"PRE_COMMIT_TO_REF": "0" * 40, "PRE_COMMIT_REMOTE_NAME": "origin"}, ""),
        ({}, "git-keepsake: no remote to push experiments to"),  # `pre-commit run` by hand
    ],
)
def test_the_pre_commit_entry_skips_as_our_hook_does(env, said, capsys, repo, monkeypatch):
    from git_keepsake.hook import pre_commit

    monkeypatch.chdir(repo)
    pre_commit(env)  # returns: nothing raised, nothing pushed
    assert capsys.readouterr().err.startswith(said)
