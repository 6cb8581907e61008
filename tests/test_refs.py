"""Reading refs from the files (what `ls` does without importing pygit2) agrees with git."""

from __future__ import annotations

from git_keepsake.git.refs import read_refs

from .conftest import git


def test_read_refs_merges_packed_and_loose_refs_like_git(git_project):
    head = git("rev-parse", "HEAD", cwd=git_project).strip()
    git("commit", "-q", "--allow-empty", "-m", "second", cwd=git_project)
    second = git("rev-parse", "HEAD", cwd=git_project).strip()
    prefix = "refs/keepsake/metadata/"
    for name in ("a" * 64, "b" * 64):
        git("update-ref", prefix + name, head, cwd=git_project)
    git("pack-refs", "--all", cwd=git_project)
    git("update-ref", prefix + "b" * 64, second, cwd=git_project)  # loose, newer than packed
    git("update-ref", prefix + "c" * 64, second, cwd=git_project)  # loose only
    git("update-ref", "refs/keepsake/experiments/" + "d" * 64, head, cwd=git_project)
    (git_project / ".git" / prefix.rstrip("/") / ("e" * 64 + ".lock")).write_text(head + "\n")

    found = read_refs(git_project / ".git", prefix)

    listed = git("for-each-ref", "--format=%(refname) %(objectname)", prefix, cwd=git_project)
    expected = {line.split()[0][len(prefix) :]: line.split()[1] for line in listed.splitlines()}
    assert found == expected
    assert found == {"a" * 64: head, "b" * 64: second, "c" * 64: second}


def test_read_refs_defers_to_git_for_reftable(tmp_path):
    (tmp_path / "reftable").mkdir()
    assert read_refs(tmp_path, "refs/keepsake/metadata/") is None


def test_read_refs_without_any_refs(tmp_path):
    assert read_refs(tmp_path, "refs/keepsake/metadata/") == {}


def test_experiment_ref_prints_and_parses_and_refuses_what_is_not_an_id():
    from git_keepsake.git.refs import ExperimentRef

    eid = "ab" * 32
    ref = ExperimentRef.metadata(eid)
    assert str(ref) == f"refs/keepsake/metadata/{eid}"
    assert ExperimentRef.from_ref(str(ref)) == ref
    fetched = ExperimentRef("experiments", eid, remote="origin")
    assert str(fetched) == f"refs/keepsake-fetched/origin/keepsake/experiments/{eid}"
    assert ExperimentRef.from_ref(str(fetched)) == fetched
    assert fetched.local() == ExperimentRef.snapshot(eid)
    for bad in (
        "refs/keepsake/metadata/notanid",
        f"refs/keepsake/metadata/{eid.upper()}",
        f"refs/keepsake/metadata/{eid}/x",
        f"refs/keepsake/other/{eid}",
        f"refs/heads/{eid}",
        f"refs/keepsake-fetched/origin/metadata/{eid}",
    ):
        assert ExperimentRef.from_ref(bad) is None, bad
