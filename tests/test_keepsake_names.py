"""Keepsake 0.4.2's public names a Keepsake user relies on (issue 14, "Names that are missing")."""

from __future__ import annotations

import subprocess
import sys

import pytest

import git_keepsake as keepsake
from git_keepsake import errors

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
