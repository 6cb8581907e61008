"""Finding the project and its keepsake.yaml."""

from __future__ import annotations

import pytest

import git_keepsake as keepsake
from git_keepsake import Project
from git_keepsake.errors import ConfigError


def test_no_config_outside_git_uses_cwd(project):
    assert Project().directory == project
    assert Project().repository.url == f"file://{project}/.keepsake"


def test_no_config_in_git_uses_work_tree_root(git_project, monkeypatch):
    (git_project / "src").mkdir()
    monkeypatch.chdir(git_project / "src")
    assert Project().directory == git_project


def test_config_found_upward(project, monkeypatch):
    (project / "keepsake.yml").write_text('repository: "file://runs"\n')
    (project / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(project / "a" / "b")
    assert Project().directory == project
    assert Project().repository.url == f"file://{project}/runs"


def test_repository_argument_wins(project, tmp_path):
    (project / "keepsake.yaml").write_text('repository: "file://runs"\n')
    assert Project(repository=f"file://{tmp_path}/elsewhere").repository.url == (
        f"file://{tmp_path}/elsewhere"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ('repository: "file://.keepsake"\nrepo: x\n', "unknown setting.*repo"),
        ('repository: "ftp://host/x"\n', "unknown scheme 'ftp'"),
        ('repository: "not a url"\n', "is not a URL"),
        ("repository: 3\n", "must be a non-empty string"),
        ("- a\n- b\n", "must be a mapping"),
        ("repository: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_config_is_a_clear_error_naming_the_file(project, content, message):
    (project / "keepsake.yaml").write_text(content)
    with pytest.raises(ConfigError, match=message) as e:
        keepsake.init()
    assert "keepsake.yaml" in str(e.value)
    assert not (project / ".keepsake").exists()


def test_repository_inside_project_is_not_snapshotted(project):
    (project / "keepsake.yaml").write_text('repository: "file://runs/ks"\n')
    (project / "train.py").write_text("x")
    first = keepsake.init(path=".")
    first.stop()
    second = keepsake.init(path=".")
    second.stop()
    import tarfile

    tarball = project / "runs" / "ks" / "experiments" / f"{second.id}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers()]
    assert sorted(names) == ["keepsake.yaml", "train.py"]


def test_constructing_a_project_never_fails(tmp_path):
    Project(directory=tmp_path / "missing")  # resolved lazily
    with pytest.raises(ConfigError, match="does not exist"):
        Project(directory=tmp_path / "missing").experiments.list()
