"""Keepsake 0.4.2's public names a Keepsake user relies on (issue 14, "Names that are missing")."""

from __future__ import annotations

import subprocess
import sys

import pytest

import git_keepsake as keepsake
from git_keepsake import errors

from .conftest import keepsake_cli
from .reference import keepsake_cli as reference_cli
from .reference import keepsake_python, requires_keepsake

KEEPSAKE_EXCEPTIONS = [
    "DoesNotExist",
    "ReadError",
    "WriteError",
    "RepositoryConfigurationError",
    "IncompatibleRepositoryVersion",
    "CorruptedRepositorySpec",
    "ConfigNotFound",
]


def test_exceptions_module_has_keepsakes_names_in_our_tree():
    import git_keepsake.exceptions as exceptions

    assert keepsake.exceptions is exceptions
    for name in KEEPSAKE_EXCEPTIONS:
        assert issubclass(getattr(exceptions, name), errors.KeepsakeError), name
    assert issubclass(errors.NotFound, exceptions.DoesNotExist)
    assert issubclass(errors.ConfigError, exceptions.RepositoryConfigurationError)
    assert issubclass(errors.IncompatibleRepository, exceptions.IncompatibleRepositoryVersion)
    assert issubclass(errors.CorruptRepository, exceptions.CorruptedRepositorySpec)
    assert issubclass(errors.StorageError, exceptions.ReadError)
    assert issubclass(errors.StorageError, exceptions.WriteError)


def test_exceptions_import_stays_light():
    code = (
        "import sys, git_keepsake, git_keepsake.exceptions\n"
        "print(sorted(m for m in sys.modules if m.startswith('git_keepsake.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == ["git_keepsake.errors", "git_keepsake.exceptions"]


@pytest.mark.parametrize("bad_id", ["0123abc", "not-hex!"])
def test_get_unknown_or_non_hex_id_raises_does_not_exist(project, bad_id):
    experiment = keepsake.init(path=None, params={"a": 1})
    experiment.stop()
    with pytest.raises(keepsake.exceptions.DoesNotExist):
        keepsake.experiments.get(bad_id)


@requires_keepsake
@pytest.mark.parametrize("bad_id", ["0123abc", "not-hex!"])
def test_keepsake_raises_does_not_exist_for_the_same_ids(project, bad_id):
    (project / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    out = keepsake_python(
        "import keepsake\n"
        "keepsake.init(path=None, params={'a': 1}).stop()\n"
        "try:\n"
        f"    keepsake.experiments.get({bad_id!r})\n"
        "except keepsake.exceptions.DoesNotExist:\n"
        "    print('DoesNotExist')\n",
        cwd=project,
    )
    assert out.strip().endswith("DoesNotExist")


def test_init_and_project_accept_debug(project):
    assert keepsake.Project(debug=True).experiments.list() == []
    experiment = keepsake.init(path=None, params={"a": 1}, debug=True)
    experiment.stop()
    assert [e.id for e in keepsake.experiments.list()] == [experiment.id]


@requires_keepsake
def test_keepsake_accepts_debug(project):
    (project / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    keepsake_python(
        "import keepsake\n"
        "keepsake.Project(debug=True)\n"
        "keepsake.init(path=None, params={'a': 1}, debug=True).stop()\n",
        cwd=project,
    )


def _two_experiments(project):
    (project / "model.pth").write_bytes(b"weights")
    ids = []
    for lr in (0.1, 0.2):
        experiment = keepsake.init(path=".", params={"lr": lr})
        experiment.checkpoint(path="model.pth", metrics={"loss": lr})
        experiment.stop()
        ids.append(experiment.id)
    return ids


def test_experiment_delete_removes_it_as_rm_does(project):
    first, second = _two_experiments(project)
    keepsake.experiments.get(first).delete()
    assert [e.id for e in keepsake.experiments.list()] == [second]
    assert not list((project / ".keepsake" / "experiments").glob(f"{first}*"))
    result = keepsake_cli("show", first, cwd=project, ok=False)
    assert result.returncode == 1 and "no experiment" in result.stderr


def test_experiment_list_delete_removes_all(project):
    _two_experiments(project)
    keepsake.experiments.list().delete()
    assert keepsake.experiments.list() == []
    assert keepsake_cli("ls", "--json", cwd=project).stdout.strip() == "[]"


def test_delete_of_a_running_experiment_is_refused(project):
    experiment = keepsake.init(path=None, params={"a": 1})
    with pytest.raises(errors.InvalidArgument, match="running"):
        experiment.delete()
    experiment.stop()
    assert [e.id for e in keepsake.experiments.list()] == [experiment.id]


def test_refresh_sees_a_running_experiments_new_checkpoints(project):
    script = (
        "import sys, git_keepsake as keepsake\n"
        "e = keepsake.init(path=None, params={'a': 1})\n"
        "e.checkpoint(metrics={'loss': 1.0})\n"
        "e.flush()\n"
        "print(e.id, flush=True)\n"
        "sys.stdin.readline()\n"
        "e.checkpoint(metrics={'loss': 0.5})\n"
        "e.flush()\n"
        "print('done', flush=True)\n"
        "sys.stdin.readline()\n"
        "e.stop()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        experiment_id = proc.stdout.readline().strip()
        watched = keepsake.experiments.get(experiment_id)
        assert [c.metrics["loss"] for c in watched.checkpoints] == [1.0]
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        watched.refresh()
        assert [c.metrics["loss"] for c in watched.checkpoints] == [1.0, 0.5]
        assert watched.latest().experiment is watched
        assert watched.is_running()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
        watched.refresh()
        assert not watched.is_running()
    finally:
        proc.kill()
        proc.wait()


@requires_keepsake
def test_keepsake_delete_and_refresh_behave_the_same(project):
    (project / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    out = keepsake_python(
        "import keepsake\n"
        "a = keepsake.init(path=None, params={'lr': 0.1}); a.checkpoint(metrics={'loss': 1.0})\n"
        "b = keepsake.init(path=None, params={'lr': 0.2}); b.checkpoint(metrics={'loss': 1.0})\n"
        "a.stop(); b.stop()\n"
        "keepsake.experiments.get(a.id).delete()\n"
        "print([e.id for e in keepsake.experiments.list()] == [b.id])\n"
        "c = keepsake.experiments.get(b.id); c.refresh(); print(len(c.checkpoints))\n"
        "keepsake.experiments.list().delete()\n"
        "print(len(keepsake.experiments.list()))\n",
        cwd=project,
    )
    assert out.split()[-3:] == ["True", "1", "0"]


def test_keepsake_cli_names_are_aliases(project):
    ids = _two_experiments(project)
    assert keepsake_cli("list", "--json", cwd=project).stdout == (
        keepsake_cli("ls", "--json", cwd=project).stdout
    )
    assert keepsake_cli("processes", cwd=project).stdout == keepsake_cli("ps", cwd=project).stdout
    keepsake_cli("delete", "-f", ids[0], cwd=project)
    assert [e.id for e in keepsake.experiments.list()] == [ids[1]]
    main_help = keepsake_cli("-h", cwd=project).stdout
    assert "list (ls), delete (rm), processes (ps)" in " ".join(main_help.split())
    assert "list" not in main_help.partition("Commands:")[2].split()


FILTER_SCRIPT = (
    "import {module} as keepsake\n"
    "a = keepsake.init(path=None, params={{'lr': 0.1}})\n"
    "for step in range(60):\n"
    "    a.checkpoint(step=step, metrics={{'loss': 1 / (step + 1)}},\n"
    "                 primary_metric=('loss', 'minimize'), quiet=True)\n"
    "b = keepsake.init(path=None, params={{'lr': 0.2}})\n"
    "b.checkpoint(step=1, metrics={{'loss': 1.0}}, quiet=True)\n"
    "a.stop(); b.stop()\n"
    "found = keepsake.experiments.list(filter=lambda e: e.best().step >= 50)\n"
    "print([e.id for e in found] == [a.id], b.short_id())\n"
)


def test_list_filter_that_raises_warns_and_skips(project):
    code = FILTER_SCRIPT.format(module="git_keepsake")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr  # strict mode (conftest) included
    ok, b_short = result.stdout.split()
    assert ok == "True"
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert warnings == [
        f"git-keepsake: warning: failed to apply filter to experiment {b_short} (skipped): "
        "AttributeError: 'NoneType' object has no attribute 'step'"
    ]


@requires_keepsake
def test_keepsake_filter_that_raises_warns_and_skips(project):
    (project / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    out = keepsake_python(FILTER_SCRIPT.format(module="keepsake"), cwd=project)
    assert out.split()[-2] == "True"


@requires_keepsake
def test_keepsake_has_the_same_aliases(project):
    (project / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    experiment_id = keepsake_python(
        "import keepsake\ne = keepsake.init(path=None, params={'a': 1}); e.stop(); print(e.id)\n",
        cwd=project,
    ).split()[-1]
    assert experiment_id in reference_cli("list", "-q", cwd=project)
    reference_cli("processes", cwd=project)
    reference_cli("delete", "-f", experiment_id, cwd=project)
    assert experiment_id not in reference_cli("ls", "-q", cwd=project)
