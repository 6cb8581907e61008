"""Hermetic tests: isolated HOME and git config, strict mode, a fresh project dir per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The installed console script, run as a user would run it.
GIT_KEEPSAKE = str(Path(sys.executable).parent / "git-keepsake")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEEPSAKE_042 = FIXTURES / "keepsake-0.4.2"


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for var, value in {
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Committer",
        "GIT_COMMITTER_EMAIL": "committer@example.com",
    }.items():
        monkeypatch.setenv(var, value)
    # libgit2 reads HOME once, when pygit2 is first imported: point it at this test's HOME.
    import pygit2
    from pygit2.enums import ConfigLevel

    for level, path in {
        ConfigLevel.SYSTEM: home / "etc",
        ConfigLevel.XDG: home / ".config" / "git",
        ConfigLevel.GLOBAL: home,
    }.items():
        pygit2.settings.search_path[level] = str(path)
    monkeypatch.setenv("GIT_KEEPSAKE_STRICT", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    # Cloud SDKs must never look for real credentials or metadata servers (no network here).
    for var in list(os.environ):
        if var.startswith(("AWS_", "GOOGLE_", "GCLOUD_", "CLOUDSDK_")) or var in (
            "STORAGE_EMULATOR_HOST",
            "BOTO_CONFIG",
        ):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    yield
    from git_keepsake import runtime

    for running in list(runtime.running):
        running.stop()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project directory (not a git repo), made the current directory."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def fixture_project(tmp_path):
    """A writable copy of the repository Keepsake 0.4.2 wrote (tests/fixtures)."""
    target = tmp_path / "keepsake-0.4.2"
    shutil.copytree(KEEPSAKE_042, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture
def subdir_project(git_project, monkeypatch):
    """A project in the `ml/` folder of a git work tree (its own keepsake.yaml), made the
    current directory."""
    sub = git_project / "ml"
    sub.mkdir()
    (sub / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    (sub / "model.py").write_text("X = 1\n")
    monkeypatch.chdir(sub)
    return sub


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def git_project(project):
    """A project that is a git work tree with one commit."""
    git("init", "-q", "-b", "main", cwd=project)
    (project / "train.py").write_text("print('train')\n")
    git("add", "train.py", cwd=project)
    git("commit", "-q", "-m", "initial", cwd=project)
    return project


def keepsake_cli(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """`git-keepsake ARGS` in `cwd`; with ok (the default) it must succeed."""
    result = subprocess.run(
        [GIT_KEEPSAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def run_script(code: str, cwd: Path, env: dict | None = None, timeout: float = 60):
    """Run a training script in a fresh interpreter (for exit behaviour and real processes)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- S3 and GCS: real servers on 127.0.0.1, started once per session ---


class _Server:
    """A server on a fixed 127.0.0.1 port that a test may stop and start again."""

    def __init__(self, make):
        self._make = make
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self):
        self._server = self._make(self.port)
        self._server.start()

    def stop(self):
        if self._server is not None:
            self._server.stop()
            self._server = None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = _Server(lambda port: ThreadedMotoServer(ip_address="127.0.0.1", port=port))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    import logging

    from gcp_storage_emulator.server import Server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)

    class Emulator(Server):
        def start(self):
            super().start()
            # It serves one connection at a time behind http.server's listen backlog of 5:
            # our 32 concurrent requests overflowed that, and had connections reset.
            self._api._httpd.socket.listen(128)

    server = _Server(lambda port: Emulator("127.0.0.1", port, in_memory=True))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """boto3 pointed at the moto server, as a MinIO user would point it: AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server


@pytest.fixture
def gcs_env(gcs_server, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    return gcs_server


def new_bucket_name() -> str:
    import uuid

    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["file", "s3", "gs"])
def repository_url(request, tmp_path):
    """A fresh, empty repository URL on each backend (buckets are made by the first write)."""
    if request.param == "file":
        return f"file://{tmp_path / 'repository'}"
    request.getfixturevalue("s3_env" if request.param == "s3" else "gcs_env")
    return f"{request.param}://{new_bucket_name()}"


@pytest.fixture
def mounts():
    """Mount with `mount ARGS...` (a tmpfs, a bind; needs root, as in CI; the test is skipped
    where mount is not permitted); all unmounted afterwards, the last first."""
    made = []

    def mount(*args: str) -> Path:
        done = subprocess.run(["mount", *args], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount: {done.stderr.decode().strip()}")
        made.append(args[-1])
        return Path(args[-1])

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", target], capture_output=True)
