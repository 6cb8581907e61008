"""Which files go into a snapshot, checked against the real git where git semantics matter."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from git_keepsake import snapshot
from git_keepsake.snapshot import IgnoreRules, list_files, walk_files

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory, monkeypatch):
    """Keep the user's and system git config (global excludes above all) out of the ground truth."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for var in ("XDG_CONFIG_HOME", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def git_init(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "-c", "init.defaultBranch=main", "init", "-q")
    return path


def git_files(cwd: Path) -> list[str]:
    """What git says belongs in the tree: tracked plus untracked, not ignored files."""
    out = git(cwd, "ls-files", "-z", "--others", "--cached", "--exclude-standard")
    return sorted(p for p in out.split("\0") if p)


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def all_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    )


# Each scenario: files to create (".gitignore" files among them) plus info/exclude lines.
GIT_SCENARIOS = {
    "nested-negation": (
        {
            ".gitignore": "*.log\n!keep.log\nbuild/\n/top-only.txt\n",
            "a.log": "",
            "keep.log": "",
            "top-only.txt": "",
            "src/top-only.txt": "",
            "src/main.py": "",
            "src/debug.log": "",
            "src/.gitignore": "!debug.log\n*.tmp\n",
            "src/x.tmp": "",
            "src/deep/y.tmp": "",
            "src/deep/z.txt": "",
            "build/out.bin": "",
            "src/build/out.bin": "",
        },
        "",
    ),
    "dir-only-vs-file": (
        {
            ".gitignore": "cache/\nlogs\n",
            "cache/a": "",
            "sub/cache": "a file called cache is kept",
            "sub/cache2/b": "",
            "logs": "",
            "sub/logs/c": "",
        },
        "",
    ),
    "double-star": (
        {
            ".gitignore": "**/tmp/\na/**/b.txt\nfoo/**\n!foo/keep.txt\n**/*.pyc\nx/**/\n",
            "tmp/1": "",
            "q/tmp/2": "",
            "q/r/tmp/3": "",
            "a/b.txt": "",
            "a/m/n/b.txt": "",
            "b.txt": "",
            "foo/drop.txt": "",
            "foo/keep.txt": "",
            "foo/sub/drop.txt": "",
            "m.pyc": "",
            "p/q/m.pyc": "",
            "x/direct.txt": "",
            "x/sub/hidden.txt": "",
        },
        "",
    ),
    "anchored-and-slashes": (
        {
            ".gitignore": "/root.txt\ndocs/*.md\n!docs/README.md\nd1/d2\n*/skip-one-level\n",
            "root.txt": "",
            "deep/root.txt": "",
            "docs/a.md": "",
            "docs/README.md": "",
            "docs/sub/b.md": "",
            "d1/d2/f": "",
            "x/d1/d2/f": "",
            "a/skip-one-level": "",
            "a/b/skip-one-level": "",
            "skip-one-level": "",
        },
        "",
    ),
    "cannot-reinclude-in-excluded-dir": (
        {
            ".gitignore": "data/\n!data/important.csv\nout\n!out/keep\n",
            "data/important.csv": "",
            "data/other.csv": "",
            "out/keep": "",
            "out/drop": "",
        },
        "",
    ),
    "negated-dir-does-not-leak-to-files": (
        {
            ".gitignore": "*.txt\n!keep/\n/*\n!/keep\n!/.gitignore\n!/sub/\n",
            "keep/a.txt": "",
            "keep/b.py": "",
            "top.py": "",
            "sub/c.txt": "",
            "sub/d.py": "",
        },
        "",
    ),
    "whitelist-only-python": (
        {
            ".gitignore": "*\n!*/\n!*.py\n!.gitignore\n",
            "a.py": "",
            "a.txt": "",
            "pkg/b.py": "",
            "pkg/b.txt": "",
            "pkg/sub/c.py": "",
        },
        "",
    ),
    "info-exclude-and-precedence": (
        {
            ".gitignore": "!wanted.secret\n",
            "x.secret": "",
            "wanted.secret": "",
            "scratch/a": "",
            "sub/.gitignore": "!*.local\n",
            "sub/b.local": "",
            "c.local": "",
        },
        "*.secret\nscratch/\n*.local\n",
    ),
    "brackets-never-match-slash": (
        {
            ".gitignore": "x[!a]\n/y[a-z0]\n",
            "x/kept.txt": "",
            "xb": "",
            "y/kept.txt": "",
            "yq": "",
        },
        "",
    ),
    "star-star-after-literal-prefix": (
        # git compares a pattern's literal prefix, then globs the rest on its own: there
        # "/a**" starts with "**" and crosses folders (unlike "*a**", which stays in one).
        {
            ".gitignore": "/a**\n!/a**/keep\nsub/b**/x\n",
            "ab/cd/ef": "",
            "ab/keep": "",
            "ab/cd/keep": "",
            "sub/bx": "",
            "sub/b/x": "",
            "sub/bq/r/x": "",
            "sub/bq/r/y": "",
        },
        "",
    ),
    "escapes-and-globs": (
        {
            ".gitignore": "\\#hash\n\\!bang\ntrailing   \n[ab]?.dat\n# c/a**\n\n*.o\n!ok.o\n",
            "#hash": "",
            "!bang": "",
            "trailing": "",
            "a1.dat": "",
            "c1.dat": "",
            "bb.dat": "",
            "x.o": "",
            "ok.o": "",
            "c/ab": "",
        },
        "",
    ),
}


@needs_git
@pytest.mark.parametrize("scenario", sorted(GIT_SCENARIOS))
def test_matches_git(tmp_path, scenario):
    files, exclude = GIT_SCENARIOS[scenario]
    repo = git_init(tmp_path / "repo")
    make_tree(repo, files)
    (repo / ".git" / "info" / "exclude").write_text(exclude)

    expected = git_files(repo)
    assert list_files(repo) == expected

    # is_ignored agrees with the walk for every file on disk.
    rules = IgnoreRules.for_project(repo)
    kept = {f for f in all_files(repo) if not rules.is_ignored(f, is_dir=False)}
    assert sorted(kept) == expected


GLOB_ATOMS = ["a", "b", "x", "*", "**", "a*", "*b", "?", "[ab]", "[!a]", "c.txt", "a**", "\\a"]


def random_pattern(rng: random.Random) -> str:
    pattern = "/".join(rng.choice(GLOB_ATOMS) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.3:
        pattern = "/" + pattern
    if rng.random() < 0.3:
        pattern += "/"
    return "!" + pattern if rng.random() < 0.3 else pattern


@needs_git
@pytest.mark.parametrize("seed", range(40))
def test_matches_git_on_random_rules(tmp_path, seed):
    """Random trees and ignore files: catches the corners a hand-written list misses."""
    rng = random.Random(seed)
    repo = git_init(tmp_path / "repo")
    folders = [""]
    for _ in range(rng.randint(3, 12)):
        parent = rng.choice(folders)
        child = f"{parent}/{rng.choice('abx')}".lstrip("/")
        if child not in folders:
            folders.append(child)
            (repo / child).mkdir()
    for _ in range(rng.randint(5, 25)):
        path = f"{rng.choice(folders)}/{rng.choice(['a', 'b', 'ab', 'c.txt', 'd.log'])}".lstrip("/")
        if not (repo / path).is_dir():
            (repo / path).write_text("")
    for folder in rng.sample(folders, min(len(folders), rng.randint(1, 3))):
        lines = [random_pattern(rng) for _ in range(rng.randint(1, 5))]
        (repo / folder / ".gitignore").write_text("\n".join(lines) + "\n")
    lines = [random_pattern(rng) for _ in range(rng.randint(0, 3))]
    (repo / ".git" / "info" / "exclude").write_text("\n".join(lines) + "\n")

    expected = git_files(repo)
    assert list_files(repo) == expected
    rules = IgnoreRules.for_project(repo)
    assert [f for f in all_files(repo) if not rules.is_ignored(f, is_dir=False)] == expected


@needs_git
def test_project_in_subdirectory_of_repo_uses_parent_gitignores(tmp_path):
    repo = git_init(tmp_path / "repo")
    make_tree(
        repo,
        {
            ".gitignore": "*.log\n/proj/local/\nproj/generated.txt\n",
            "outside.py": "",
            "ml/.gitignore": "*.ckpt\n!best.ckpt\n",
            "ml/proj/keepsake.yaml": "",
            "ml/proj/train.py": "",
            "ml/proj/run.log": "",
            "ml/proj/model.ckpt": "",
            "ml/proj/best.ckpt": "",
            "ml/proj/generated.txt": "kept: the parent pattern is anchored at the repo root",
            "ml/proj/local/x": "kept: /proj/local/ is relative to the repo root",
            "ml/proj/.gitignore": "!run.log\n",
        },
    )
    project = repo / "ml" / "proj"
    assert list_files(project) == git_files(project)
    assert "run.log" in list_files(project)
    assert "model.ckpt" not in list_files(project)


@needs_git
def test_linked_worktree_uses_common_info_exclude(tmp_path):
    main = git_init(tmp_path / "main")
    make_tree(main, {"README": "", ".gitignore": "*.tmp\n"})
    git(main, "add", "-A")
    git(main, "commit", "-q", "-m", "init")
    (main / ".git" / "info" / "exclude").write_text("secret.txt\n")
    worktree = tmp_path / "wt"
    git(main, "worktree", "add", "-q", str(worktree))
    assert (worktree / ".git").is_file()
    make_tree(worktree, {"secret.txt": "", "train.py": "", "a.tmp": ""})

    assert list_files(worktree) == git_files(worktree) == [".gitignore", "README", "train.py"]


@needs_git
def test_symlinked_gitignore_is_not_followed_like_git(tmp_path):
    repo = git_init(tmp_path / "repo")
    make_tree(repo, {"rules": "x.txt\n", "sub/x.txt": "", "sub/y.txt": ""})
    (repo / "sub" / ".gitignore").symlink_to("../rules")
    assert list_files(repo) == git_files(repo)
    assert "sub/x.txt" in list_files(repo)


def test_not_a_git_repo_still_honours_gitignore(tmp_path):
    make_tree(tmp_path, {".gitignore": "above.txt\n"})  # outside the project: not read
    project = tmp_path / "project"
    make_tree(
        project,
        {
            ".gitignore": "data/\n*.pyc\n",
            "above.txt": "",
            "train.py": "",
            "train.pyc": "",
            "data/big.bin": "",
            "sub/.gitignore": "notes.md\n",
            "sub/notes.md": "",
            "sub/model.py": "",
        },
    )
    assert list_files(project) == [
        ".gitignore",
        "above.txt",
        "sub/.gitignore",
        "sub/model.py",
        "train.py",
    ]


def test_keepsakeignore(tmp_path):
    make_tree(
        tmp_path,
        {
            ".keepsakeignore": "*.ckpt\nscratch/\n!data/\n",
            ".gitignore": "data/\n",
            "train.py": "",
            "model.ckpt": "",
            "sub/other.ckpt": "",
            "scratch/notes": "",
            "data/train.csv": "",
        },
    )
    # .keepsakeignore adds exclusions, and its `!` lines can re-include what git ignores.
    assert list_files(tmp_path) == [".gitignore", ".keepsakeignore", "data/train.csv", "train.py"]
    rules = IgnoreRules.for_project(tmp_path)
    assert rules.is_ignored("sub/other.ckpt", is_dir=False)
    assert not rules.is_ignored("data", is_dir=True)


def test_builtin_skips_at_any_depth(tmp_path):
    make_tree(
        tmp_path,
        {
            "train.py": "",
            ".git/config": "",
            ".keepsake/metadata/x.json": "",
            ".mypy_cache/3.11/a.json": "",
            "venv/pyvenv.cfg": "",
            "venv/lib/site.py": "",
            "env/conda-meta/history": "",
            "env/bin/python": "",
            "sub/.git": "gitdir: elsewhere",
            "sub/code.py": "",
            "sub/.keepsake/y": "",
            "sub/.mypy_cache/z": "",
            "sub/deep/.venv/pyvenv.cfg": "",
            "sub/deep/.venv/lib/m.py": "",
            "sub/deep/conda/conda-meta/history": "",
            "sub/deep/conda/lib/n.py": "",
            "sub/deep/ok.py": "",
        },
    )
    assert list_files(tmp_path) == ["sub/code.py", "sub/deep/ok.py", "train.py"]
    rules = IgnoreRules.for_project(tmp_path)
    for path in (".git/config", "venv/lib/site.py", "sub/deep/conda/lib/n.py", "sub/.mypy_cache/z"):
        assert rules.is_ignored(path, is_dir=False), path
    assert rules.is_ignored("venv", is_dir=True)
    assert not rules.is_ignored("sub/deep/ok.py", is_dir=False)


def test_ignored_directory_is_never_listed(tmp_path, monkeypatch):
    tmp_path = tmp_path / "project"
    make_tree(
        tmp_path,
        {
            ".gitignore": "data/\n",
            "train.py": "",
            "data/shard/0.bin": "",
            "data/shard/1.bin": "",
            "venv/pyvenv.cfg": "",
            "venv/lib/python/site.py": "",
            "src/model.py": "",
        },
    )
    scanned = []
    real_scandir = os.scandir

    def recording_scandir(path="."):
        scanned.append(os.path.relpath(os.fspath(path), tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(snapshot.os, "scandir", recording_scandir)
    assert list_files(tmp_path) == [".gitignore", "src/model.py", "train.py"]
    assert sorted(scanned) == [".", "src", "venv"]  # a venv is recognised by its listing


def test_single_file_is_always_included(tmp_path):
    make_tree(tmp_path, {".gitignore": "*.pth\nweights/\n", "weights/model.pth": ""})
    assert list_files(tmp_path, "weights/model.pth") == ["weights/model.pth"]
    assert list(walk_files(tmp_path, "./weights//model.pth")) == ["weights/model.pth"]
    assert list_files(tmp_path, "missing.pth") == []


def test_subdirectory_path(tmp_path):
    make_tree(
        tmp_path,
        {
            ".gitignore": "*.tmp\ncheckpoints/\n",
            "train.py": "",
            "src/a.py": "",
            "src/b.tmp": "",
            "src/.gitignore": "gen/\n",
            "src/gen/c.py": "",
            "src/pkg/d.py": "",
            "checkpoints/model.pth": "",
            "checkpoints/scratch.tmp": "",
        },
    )
    assert list_files(tmp_path, "src") == ["src/.gitignore", "src/a.py", "src/pkg/d.py"]
    assert list_files(tmp_path, "src/pkg/") == ["src/pkg/d.py"]
    # Naming an ignored folder saves it, but ignore rules still apply inside it.
    assert list_files(tmp_path, "checkpoints") == ["checkpoints/model.pth"]


def test_path_outside_project_is_refused(tmp_path):
    project = tmp_path / "project"
    make_tree(tmp_path, {"secret": "", "project/a.py": ""})
    for bad in ("..", "../secret", "a/../../secret", str(tmp_path / "secret")):
        with pytest.raises(ValueError):
            list_files(project, bad)
        with pytest.raises(ValueError):
            walk_files(project, bad)  # at the call, not at the first next()


def test_symlinks(tmp_path):
    outside = tmp_path / "outside"
    make_tree(outside, {"shared.py": "", "lib/x.py": ""})
    project = tmp_path / "project"
    make_tree(project, {"train.py": "", "real/y.py": ""})
    (project / "link.py").symlink_to(outside / "shared.py")
    (project / "linkdir").symlink_to(outside / "lib", target_is_directory=True)
    (project / "loop").symlink_to(project, target_is_directory=True)
    (project / "broken").symlink_to(project / "nowhere")
    os.mkfifo(project / "fifo")

    assert list_files(project) == ["link.py", "real/y.py", "train.py"]
    assert list_files(project, "linkdir") == []
    assert list_files(project, "linkdir/x.py") == []  # reached through a symlinked folder
    assert list_files(project, "link.py") == ["link.py"]


def test_gitignore_is_read_once_per_rules(tmp_path, monkeypatch):
    make_tree(tmp_path, {".gitignore": "*.tmp\n", "a/b.tmp": "", "a/c.py": "", "d.py": ""})
    rules = IgnoreRules.for_project(tmp_path)
    reads = []
    real_read = snapshot._read_patterns

    def counting(path, base):
        reads.append(path)
        return real_read(path, base)

    monkeypatch.setattr(snapshot, "_read_patterns", counting)
    for _ in range(3):
        assert list_files(tmp_path, rules=rules) == [".gitignore", "a/c.py", "d.py"]
    assert rules.is_ignored("a/b.tmp", is_dir=False)
    # Each folder's .gitignore is read (or found missing) once, however often it is needed.
    assert sorted(reads) == [str(tmp_path / ".gitignore"), str(tmp_path / "a" / ".gitignore")]


def test_checkout_staging_folders_are_never_snapshotted(tmp_path):
    from git_keepsake.snapshot import IgnoreRules, list_files

    (tmp_path / "train.py").write_text("x")
    staging = tmp_path / ".keepsake-checkout-abc123" / "files"
    staging.mkdir(parents=True)
    (staging / "model.pth").write_text("w")
    assert list_files(tmp_path) == ["train.py"]
    rules = IgnoreRules.for_project(tmp_path)
    assert rules.is_ignored(".keepsake-checkout-abc123/files/model.pth", is_dir=False)
    assert rules.is_keepsake_ignored(".keepsake-checkout-abc123/files/model.pth")
