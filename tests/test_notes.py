"""refs/notes/keepsake, checked against the real git binary."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pygit2
import pytest

from git_keepsake.errors import InvalidArgument, NotFound
from git_keepsake.git import notes
from git_keepsake.git.notes import (
    NOTES_REF,
    format_note_line,
    read_note,
    rebuild_notes,
    remove_note_line,
    update_note,
)
from tests.conftest import git

SIG = pygit2.Signature("Test Committer", "committer@example.com")


@pytest.fixture
def repo(tmp_path) -> pygit2.Repository:
    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    for name in ("one", "two", "three"):
        (root / name).write_text(name)
        git("add", name, cwd=root)
        git("commit", "-q", "-m", name, cwd=root)
    return pygit2.Repository(str(root))


def workdir(repo: pygit2.Repository) -> Path:
    return Path(repo.workdir)


def commits(repo: pygit2.Repository) -> list[str]:
    return git("rev-list", "--reverse", "HEAD", cwd=workdir(repo)).split()


def line(experiment_id: str, **params) -> str:
    return format_note_line(experiment_id, params, None)


def notes_head(repo: pygit2.Repository) -> str | None:
    ref = repo.references.get(NOTES_REF)
    return None if ref is None else str(ref.target)


def note_paths(repo: pygit2.Repository) -> list[str]:
    return git("ls-tree", "-r", "--name-only", NOTES_REF, cwd=workdir(repo)).split()


def assert_fsck_clean(repo: pygit2.Repository) -> None:
    result = git("fsck", "--strict", "--no-dangling", cwd=workdir(repo))
    assert "error" not in result and "warning" not in result


# format_note_line


def test_format_note_line_lists_params_and_best_metric():
    text = format_note_line(
        "3f8a508cafe", {"learning_rate": 0.01, "num_epochs": 10}, ("loss", 0.01723456, 7)
    )
    assert text == (
        "keepsake experiment 3f8a508: learning_rate=0.01, num_epochs=10;"
        " best loss=0.01723 at step 7"
    )


def test_format_note_line_without_params_or_step():
    assert format_note_line("abcdef0123", None, None) == "keepsake experiment abcdef0: no params"
    assert (
        format_note_line("abcdef0123", {}, ("accuracy", 0.5, None))
        == "keepsake experiment abcdef0: no params; best accuracy=0.5"
    )


def test_format_note_line_is_one_line_and_truncated():
    text = format_note_line("abcdef0", {"name": "a\nb", "big\rkey": "x" * 500}, ("l\nx", 1.0, 2))
    assert "\n" not in text and "\r" not in text
    assert text.startswith("keepsake experiment abcdef0: name='a\\nb', big key='xxx")
    assert "...; best l x=1 at step 2" in text
    assert len(text) < 260


def test_format_note_line_shows_numpy_values_plainly():
    np = pytest.importorskip("numpy")
    params = {"lr": np.float64(0.01), "epochs": np.int64(3), "flag": np.bool_(True)}
    assert (
        format_note_line("abcdef0", params, ("loss", np.float32(0.25), np.int64(4)))
        == "keepsake experiment abcdef0: lr=0.01, epochs=3, flag=True; best loss=0.25 at step 4"
    )


# update_note, read_note, remove_note_line


def test_update_note_shows_in_git_log_and_git_notes_show(repo):
    head = commits(repo)[-1]
    text = format_note_line("3f8a508cafe", {"learning_rate": 0.01}, ("loss", 0.0172, 7))

    update_note(repo, head, "3f8a508cafe", text, SIG)

    cwd = workdir(repo)
    assert git("notes", "--ref=keepsake", "show", head, cwd=cwd) == text + "\n"
    assert text in git("log", "--notes=keepsake", "-1", cwd=cwd)
    assert read_note(repo, head) == text + "\n"
    assert note_paths(repo) == [f"{head[:2]}/{head[2:]}"]
    notes_commit = repo[repo.references[NOTES_REF].target]
    assert notes_commit.message == f"keepsake: note for {head[:7]}\n"
    assert notes_commit.parents == []
    assert notes_commit.author.name == "Test Committer"
    assert_fsck_clean(repo)


def test_update_note_replaces_the_experiment_line_and_keeps_foreign_lines(repo):
    head = commits(repo)[-1]
    cwd = workdir(repo)
    git("notes", "--ref=keepsake", "add", "-m", "written by hand", head, cwd=cwd)
    assert note_paths(repo) == [head]  # git writes few notes flat
    assert read_note(repo, head) == "written by hand\n"

    update_note(repo, head, "aaaaaaa111", line("aaaaaaa111", lr=0.1), SIG)
    update_note(repo, head, "bbbbbbb222", line("bbbbbbb222", lr=0.2), SIG)
    update_note(repo, head, "aaaaaaa111", line("aaaaaaa111", lr=0.3), SIG)

    assert git("notes", "--ref=keepsake", "show", head, cwd=cwd).splitlines() == [
        "written by hand",
        "keepsake experiment aaaaaaa: lr=0.3",
        "keepsake experiment bbbbbbb: lr=0.2",
    ]
    # The flat note moved under a fan-out directory.
    assert note_paths(repo) == [f"{head[:2]}/{head[2:]}"]
    assert_fsck_clean(repo)


def test_update_note_keeps_notes_on_other_commits(repo):
    first, second, third = commits(repo)
    git("notes", "--ref=keepsake", "add", "-m", "flat one", first, cwd=workdir(repo))

    update_note(repo, second, "aaaaaaa", line("aaaaaaa"), SIG)
    update_note(repo, third, "bbbbbbb", line("bbbbbbb"), SIG)

    assert read_note(repo, first) == "flat one\n"
    assert read_note(repo, second) == "keepsake experiment aaaaaaa: no params\n"
    assert read_note(repo, third) == "keepsake experiment bbbbbbb: no params\n"
    assert sorted(note_paths(repo)) == sorted(
        [first, f"{second[:2]}/{second[2:]}", f"{third[:2]}/{third[2:]}"]
    )
    listed = git("notes", "--ref=keepsake", "list", cwd=workdir(repo)).split()
    assert sorted(listed[1::2]) == sorted([first, second, third])


def test_update_note_reads_and_migrates_deeper_fan_out(repo):
    head = commits(repo)[-1]
    blob = repo.create_blob(b"deep\n")
    inner = repo.TreeBuilder()
    inner.insert(head[4:], blob, pygit2.GIT_FILEMODE_BLOB)
    middle = repo.TreeBuilder()
    middle.insert(head[2:4], inner.write(), pygit2.GIT_FILEMODE_TREE)
    root = repo.TreeBuilder()
    root.insert(head[:2], middle.write(), pygit2.GIT_FILEMODE_TREE)
    oid = repo.create_commit(NOTES_REF, SIG, SIG, "deep", root.write(), [])
    assert read_note(repo, head) == "deep\n"

    update_note(repo, head, "ccccccc", line("ccccccc"), SIG)

    assert read_note(repo, head) == "deep\nkeepsake experiment ccccccc: no params\n"
    assert note_paths(repo) == [f"{head[:2]}/{head[2:]}"]
    assert repo[repo.references[NOTES_REF].target].parent_ids == [oid]
    assert_fsck_clean(repo)


def test_update_note_without_changes_writes_nothing(repo):
    head = commits(repo)[-1]
    update_note(repo, head, "aaaaaaa", line("aaaaaaa", lr=1), SIG)
    before = notes_head(repo)

    update_note(repo, head, "aaaaaaa", line("aaaaaaa", lr=1), SIG)
    remove_note_line(repo, head, "bbbbbbb", SIG)

    assert notes_head(repo) == before


def test_remove_note_line_drops_the_line_then_the_note(repo):
    first, second, _ = commits(repo)
    cwd = workdir(repo)
    update_note(repo, first, "aaaaaaa", line("aaaaaaa"), SIG)
    update_note(repo, first, "bbbbbbb", line("bbbbbbb"), SIG)
    update_note(repo, second, "ccccccc", line("ccccccc"), SIG)

    remove_note_line(repo, first, "aaaaaaa", SIG)
    assert read_note(repo, first) == "keepsake experiment bbbbbbb: no params\n"

    remove_note_line(repo, first, "bbbbbbb", SIG)
    assert read_note(repo, first) is None
    assert git("notes", "--ref=keepsake", "list", cwd=cwd).split() == [
        git("rev-parse", f"{NOTES_REF}:{second[:2]}/{second[2:]}", cwd=cwd).strip(),
        second,
    ]

    remove_note_line(repo, second, "ccccccc", SIG)
    assert git("notes", "--ref=keepsake", "list", cwd=cwd) == ""
    assert git("log", "--notes=keepsake", "--format=%N", "-1", second, cwd=cwd).strip() == ""
    assert_fsck_clean(repo)


def test_remove_note_line_keeps_foreign_lines(repo):
    head = commits(repo)[-1]
    git("notes", "--ref=keepsake", "add", "-m", "mine", head, cwd=workdir(repo))
    update_note(repo, head, "aaaaaaa", line("aaaaaaa"), SIG)

    remove_note_line(repo, head, "aaaaaaa", SIG)

    assert read_note(repo, head) == "mine\n"


def test_update_note_follows_packed_refs(repo):
    first, second, _ = commits(repo)
    update_note(repo, first, "aaaaaaa", line("aaaaaaa"), SIG)
    git("pack-refs", "--all", cwd=workdir(repo))

    update_note(repo, second, "bbbbbbb", line("bbbbbbb"), SIG)

    assert read_note(repo, first) is not None
    assert read_note(repo, second) is not None
    assert_fsck_clean(repo)


def test_notes_in_a_repository_without_commits(tmp_path):
    git("init", "-q", str(tmp_path / "empty"), cwd=tmp_path)
    empty = pygit2.Repository(str(tmp_path / "empty"))
    missing = "1" * 40

    assert read_note(empty, missing) is None
    with pytest.raises(NotFound, match="no such commit"):
        update_note(empty, missing, "aaaaaaa", line("aaaaaaa"), SIG)
    remove_note_line(empty, missing, "aaaaaaa", SIG)
    assert empty.references.get(NOTES_REF) is None


def test_update_note_rejects_bad_input(repo):
    head = commits(repo)[-1]
    with pytest.raises(InvalidArgument, match="not a full commit ID"):
        update_note(repo, head[:10], "aaaaaaa", line("aaaaaaa"), SIG)
    with pytest.raises(InvalidArgument, match="format_note_line"):
        update_note(repo, head, "aaaaaaa", line("bbbbbbb"), SIG)
    with pytest.raises(InvalidArgument, match="experiment ID"):
        update_note(repo, head, "", "keepsake experiment : x", SIG)
    assert repo.references.get(NOTES_REF) is None


# rebuild_notes


def test_rebuild_notes_replaces_everything_on_top_of_the_old_notes(repo):
    first, second, third = commits(repo)
    cwd = workdir(repo)
    update_note(repo, first, "aaaaaaa", line("aaaaaaa"), SIG)
    update_note(repo, second, "bbbbbbb", line("bbbbbbb"), SIG)
    previous = notes_head(repo)

    rebuild_notes(
        repo,
        {
            second: ["keepsake experiment ddddddd: lr=1", "keepsake experiment eeeeeee: lr=2"],
            third.upper(): ["keepsake experiment fffffff: no\nparams"],
            "0" * 40: ["keepsake experiment 0000000: not in this repository"],
            first: [],
        },
        SIG,
    )

    assert read_note(repo, first) is None
    assert git("notes", "--ref=keepsake", "show", second, cwd=cwd).splitlines() == [
        "keepsake experiment ddddddd: lr=1",
        "keepsake experiment eeeeeee: lr=2",
    ]
    assert read_note(repo, third) == "keepsake experiment fffffff: no params\n"
    assert sorted(note_paths(repo)) == sorted(
        [f"{second[:2]}/{second[2:]}", f"{third[:2]}/{third[2:]}"]
    )
    rebuilt = repo[repo.references[NOTES_REF].target]
    assert rebuilt.message == "keepsake: rebuild notes\n"
    assert [str(p) for p in rebuilt.parent_ids] == [previous]
    assert_fsck_clean(repo)

    # Rebuilding to the same notes makes no commit.
    rebuild_notes(
        repo,
        {
            second: ["keepsake experiment ddddddd: lr=1", "keepsake experiment eeeeeee: lr=2"],
            third: ["keepsake experiment fffffff: no params"],
        },
        SIG,
    )
    assert notes_head(repo) == str(rebuilt.id)


def test_rebuild_notes_creates_the_ref(repo):
    head = commits(repo)[-1]

    rebuild_notes(repo, {head: ["keepsake experiment aaaaaaa: no params"]}, SIG)

    assert read_note(repo, head) == "keepsake experiment aaaaaaa: no params\n"
    assert repo[repo.references[NOTES_REF].target].parents == []


# Compare-and-swap


def test_update_note_rebuilds_when_the_ref_moves_underneath(repo, monkeypatch):
    first, second, _ = commits(repo)
    other = pygit2.Repository(repo.path)  # another writer
    real_swap = notes._commit_and_swap
    built_on = []

    def racing_swap(swap_repo, head, *args, **kwargs):
        if swap_repo is repo:
            built_on.append(head)
            if len(built_on) == 1:
                update_note(other, second, "bbbbbbb", line("bbbbbbb"), SIG)
        return real_swap(swap_repo, head, *args, **kwargs)

    monkeypatch.setattr(notes, "_commit_and_swap", racing_swap)
    update_note(repo, first, "aaaaaaa", line("aaaaaaa"), SIG)

    # The first attempt was built on "no notes", lost, and was rebuilt on top of the other write.
    assert built_on[0] is None
    assert len(built_on) == 2
    assert repo[repo.references[NOTES_REF].target].parent_ids == [built_on[1]]
    assert read_note(repo, first) == "keepsake experiment aaaaaaa: no params\n"
    assert read_note(repo, second) == "keepsake experiment bbbbbbb: no params\n"
    assert len(list(repo.walk(repo.references[NOTES_REF].target))) == 2


def test_update_note_waits_for_the_lock(repo):
    head = commits(repo)[-1]
    lock = Path(repo.path) / "refs" / "notes" / "keepsake.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    release = threading.Timer(0.2, lock.unlink)
    release.start()

    update_note(repo, head, "aaaaaaa", line("aaaaaaa"), SIG, timeout=10)

    release.join()
    assert read_note(repo, head) == "keepsake experiment aaaaaaa: no params\n"


def test_update_note_gives_up_on_a_stale_lock(repo):
    head = commits(repo)[-1]
    lock = Path(repo.path) / "refs" / "notes" / "keepsake.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")

    with pytest.raises(notes.NotesError, match="lock") as raised:
        update_note(repo, head, "aaaaaaa", line("aaaaaaa"), SIG, timeout=0.1)

    assert "keepsake.lock" in raised.value.hint
    assert repo.references.get(NOTES_REF) is None


def _concurrent_writer(path: str, barrier, commit_hexes: list[str], experiment_id: str) -> None:
    repo = pygit2.Repository(path)
    signature = pygit2.Signature("Worker", "worker@example.com")
    barrier.wait()
    for commit_hex in commit_hexes:
        update_note(repo, commit_hex, experiment_id, line(experiment_id), signature)


def test_concurrent_processes_lose_no_lines(repo):
    shared = commits(repo)
    tree = repo.TreeBuilder().write()
    workers = 30
    own = [str(repo.create_commit(None, SIG, SIG, f"{i}", tree, [])) for i in range(workers)]
    expected: dict[str, set[str]] = {}
    jobs = []
    for i in range(workers):
        experiment_id = f"{i:07d}"
        targets = [shared[i % len(shared)], own[i]]
        for commit_hex in targets:
            expected.setdefault(commit_hex, set()).add(line(experiment_id))
        jobs.append((targets, experiment_id))

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    processes = [
        context.Process(target=_concurrent_writer, args=(repo.path, barrier, targets, exp))
        for targets, exp in jobs
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * workers

    for commit_hex, lines in expected.items():
        assert set(read_note(repo, commit_hex).splitlines()) == lines
    assert len(note_paths(repo)) == len(expected)
    assert_fsck_clean(repo)


def test_two_thousand_notes_one_at_a_time(repo, capsys):
    tree = repo.TreeBuilder().write()
    targets = [str(repo.create_commit(None, SIG, SIG, f"{i}", tree, [])) for i in range(2000)]

    start = time.perf_counter()
    for i, commit_hex in enumerate(targets):
        experiment_id = f"{i:07x}"
        update_note(repo, commit_hex, experiment_id, line(experiment_id, step=i), SIG)
    elapsed = time.perf_counter() - start

    with capsys.disabled():
        print(f"\n2,000 update_note calls: {elapsed:.2f}s")
    assert len(git("notes", "--ref=keepsake", "list", cwd=workdir(repo)).splitlines()) == 2000
    assert read_note(repo, targets[1234]) == "keepsake experiment 00004d2: step=1234\n"
    assert {len(path) for path in note_paths(repo)} == {41}


def test_a_note_line_carries_no_escape_sequence_or_bidi_override():
    """`git log --notes` prints notes raw: a pulled param must not reorder or recolour them."""
    text = format_note_line("abcdef0", {"evil\u202ekey": 1, "\x1b]0;t\x07k": 2}, None)
    assert text.isprintable(), text
    assert "\u202e" not in text and "\x1b" not in text
