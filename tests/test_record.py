"""Recording from a training script: the API, what lands in the repository, and when."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tarfile

import pytest

import git_keepsake as keepsake
from git_keepsake import metadata

from .conftest import run_script

EXPERIMENT_KEYS = [
    "id",
    "created",
    "params",
    "host",
    "user",
    "config",
    "command",
    "path",
    "python_version",
    "python_packages",
    "checkpoints",
    "keepsake_version",
]
CHECKPOINT_KEYS = ["id", "created", "metrics", "step", "path", "primary_metric"]


def read_experiment_file(project, experiment_id):
    path = project / ".keepsake" / "metadata" / "experiments" / f"{experiment_id}.json"
    return path.read_text()


def members(tarball):
    with tarfile.open(tarball, "r:gz") as tar:
        return sorted(m.name for m in tar.getmembers())


def test_default_repository_is_keepsake_dir_in_project(project):
    (project / "train.py").write_text("print(1)\n")
    experiment = keepsake.init(path=".", params={"lr": 0.01})
    experiment.stop()
    repo = project / ".keepsake"
    assert (repo / "repository.json").read_bytes() == b'{"version":1}'
    assert (repo / "experiments" / f"{experiment.id}.tar.gz").is_file()
    assert (repo / "metadata" / "experiments" / f"{experiment.id}.json").is_file()


def test_experiment_json_has_keepsake_fields_in_order(project):
    (project / "train.py").write_text("print(1)\n")
    experiment = keepsake.init(path="train.py", params={"b": 2, "a": {"z": 1, "y": [1, 2]}})
    (project / "model.pth").write_bytes(b"weights")
    experiment.checkpoint(
        path="model.pth", metrics={"loss": 0.5, "acc": 1}, primary_metric=("loss", "minimize")
    )
    experiment.stop()

    text = read_experiment_file(project, experiment.id)
    data = json.loads(text)
    assert list(data)[: len(EXPERIMENT_KEYS)] == EXPERIMENT_KEYS
    assert list(data["checkpoints"][0]) == CHECKPOINT_KEYS
    assert not text.endswith("\n")
    assert text.startswith('{\n "id": ')
    assert list(data["params"]) == ["a", "b"]  # maps sorted, like Go
    assert list(data["params"]["a"]) == ["y", "z"]
    assert data["path"] == "train.py"
    assert data["config"] == {"repository": f"file://{project}/.keepsake", "storage": ""}
    assert data["python_version"].count(".") == 2
    assert data["checkpoints"][0]["primary_metric"] == {"name": "loss", "goal": "minimize"}
    assert list(data["checkpoints"][0]["primary_metric"]) == ["name", "goal"]
    assert data["created"].endswith("Z")
    assert metadata.is_id(data["id"]) and metadata.is_id(data["checkpoints"][0]["id"])


def test_empty_values_are_written_as_keepsake_writes_them(project):
    experiment = keepsake.init()
    experiment.checkpoint()
    experiment.stop()
    data = json.loads(read_experiment_file(project, experiment.id))
    assert data["params"] is None
    assert data["path"] == ""
    chk = data["checkpoints"][0]
    assert chk["metrics"] is None and chk["path"] == "" and chk["primary_metric"] is None
    # No path: no tarballs at all.
    assert not (project / ".keepsake" / "experiments").exists()
    assert not (project / ".keepsake" / "checkpoints").exists()


def test_experiment_without_checkpoints_has_null_checkpoints(project):
    experiment = keepsake.init(params={"x": 1})
    experiment.stop()
    assert json.loads(read_experiment_file(project, experiment.id))["checkpoints"] is None


def test_nan_and_infinities_are_stored_as_keepsake_strings(project):
    experiment = keepsake.init()
    experiment.checkpoint(metrics={"a": float("nan"), "b": float("inf"), "c": -math.inf})
    experiment.stop()
    text = read_experiment_file(project, experiment.id)
    metrics = json.loads(text)["checkpoints"][0]["metrics"]
    assert metrics == {"a": "[NaN]", "b": "[+Infinity]", "c": "[-Infinity]"}
    read_back = keepsake.experiments.get(experiment.id).checkpoints[0].metrics
    assert math.isnan(read_back["a"]) and read_back["b"] == math.inf and read_back["c"] == -math.inf


def test_tarball_members_are_id_slash_relative_path(project):
    (project / "src").mkdir()
    (project / "src" / "model.py").write_text("LAYERS = 2\n")
    (project / "train.py").write_text("print(1)\n")
    (project / "out").mkdir()
    (project / "out" / "w.bin").write_bytes(b"\0" * 100)
    (project / "out" / "sub").mkdir()
    (project / "out" / "sub" / "x.txt").write_text("x")
    experiment = keepsake.init(path=".")
    chk = experiment.checkpoint(path="out")
    experiment.stop()
    repo = project / ".keepsake"
    assert members(repo / "experiments" / f"{experiment.id}.tar.gz") == [
        f"{experiment.id}/out/sub/x.txt",
        f"{experiment.id}/out/w.bin",
        f"{experiment.id}/src/model.py",
        f"{experiment.id}/train.py",
    ]
    assert members(repo / "checkpoints" / f"{chk.id}.tar.gz") == [
        f"{chk.id}/out/sub/x.txt",
        f"{chk.id}/out/w.bin",
    ]


def test_snapshot_honours_gitignore_and_keepsakeignore(project):
    (project / ".gitignore").write_text("data/\n*.log\n")
    (project / ".keepsakeignore").write_text("secret.txt\n")
    (project / "data").mkdir()
    (project / "data" / "big.bin").write_bytes(b"1")
    (project / "run.log").write_text("log")
    (project / "secret.txt").write_text("s")
    (project / "train.py").write_text("t")
    (project / "venv").mkdir()
    (project / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (project / "venv" / "lib.py").write_text("")
    experiment = keepsake.init(path=".")
    experiment.stop()
    names = members(project / ".keepsake" / "experiments" / f"{experiment.id}.tar.gz")
    assert [n.split("/", 1)[1] for n in names] == [".gitignore", ".keepsakeignore", "train.py"]


def test_checkpoint_copies_files_so_the_script_can_overwrite_them(project):
    weights = project / "model.pth"
    weights.write_bytes(b"epoch 0")
    experiment = keepsake.init()
    chk0 = experiment.checkpoint(path="model.pth", quiet=True)
    weights.write_bytes(b"epoch 1 - changed at once")
    chk1 = experiment.checkpoint(path="model.pth", quiet=True)
    weights.unlink()
    experiment.flush()
    assert chk0.open("model.pth").read() == b"epoch 0"
    assert chk1.open("model.pth").read() == b"epoch 1 - changed at once"


def test_step_defaults_to_previous_plus_one(project):
    experiment = keepsake.init()
    steps = [experiment.checkpoint(quiet=True).step for _ in range(3)]
    assert steps == [0, 1, 2]
    assert experiment.checkpoint(step=10, quiet=True).step == 10
    assert experiment.checkpoint(quiet=True).step == 11


def test_numpy_values_are_converted(project):
    np = pytest.importorskip("numpy")
    experiment = keepsake.init(params={"lr": np.float32(0.5), "layers": np.array([1, 2])})
    experiment.checkpoint(step=np.int64(3), metrics={"loss": np.float64(0.25)}, quiet=True)
    experiment.stop()
    data = json.loads(read_experiment_file(project, experiment.id))
    assert data["params"] == {"layers": [1, 2], "lr": 0.5}
    assert data["checkpoints"][0]["step"] == 3
    assert data["checkpoints"][0]["metrics"] == {"loss": 0.25}


def test_list_get_and_prefixes(project):
    first = keepsake.init(params={"n": 1})
    first.checkpoint(metrics={"loss": 1.0}, quiet=True)
    second = keepsake.init(params={"n": 2})
    first.stop()
    second.stop()
    listed = keepsake.experiments.list()
    assert [e.id for e in listed] == [first.id, second.id]
    assert keepsake.experiments.get(first.id[:5]).params == {"n": 1}
    assert keepsake.checkpoints.get(first.checkpoints[0].id[:6]).metrics == {"loss": 1.0}
    only_two = keepsake.experiments.list(filter=lambda e: e.params["n"] == 2)
    assert [e.id for e in only_two] == [second.id]


def test_get_unknown_prefix_is_a_clear_error(project):
    keepsake.init().stop()
    with pytest.raises(keepsake.KeepsakeError, match="'zzz' is not an experiment ID"):
        keepsake.experiments.get("zzz")
    with pytest.raises(keepsake.KeepsakeError, match="no checkpoint matches 'fff0'"):
        keepsake.checkpoints.get("fff0")


def test_ambiguous_prefix_lists_candidates(project, monkeypatch):
    from git_keepsake.errors import Ambiguous

    ids = iter(["ab" + "0" * 62, "ab" + "1" * 62, "cd" + "0" * 62])
    monkeypatch.setattr(metadata, "new_id", lambda: next(ids))
    for _ in range(3):
        keepsake.init().stop()
    with pytest.raises(Ambiguous) as e:
        keepsake.experiments.get("ab")
    assert "ab0000000000" in str(e.value) and "ab1111111111" in str(e.value)
    assert keepsake.experiments.get("AB1").id == "ab" + "1" * 62


def test_best_ignores_missing_and_nan_primary_metric(project):
    experiment = keepsake.init()
    experiment.checkpoint(metrics={"loss": 0.5}, primary_metric=("loss", "minimize"), quiet=True)
    best = experiment.checkpoint(
        metrics={"loss": 0.2}, primary_metric=("loss", "minimize"), quiet=True
    )
    experiment.checkpoint(
        metrics={"loss": float("nan")}, primary_metric=("loss", "minimize"), quiet=True
    )
    experiment.checkpoint(metrics={"other": -100.0}, quiet=True)
    assert experiment.best() == best
    assert experiment.latest().metrics == {"other": -100.0}
    experiment.stop()
    assert keepsake.experiments.get(experiment.id).best().id == best.id


def test_best_maximize(project):
    experiment = keepsake.init()
    for acc in (0.1, 0.9, 0.5):
        experiment.checkpoint(metrics={"acc": acc}, primary_metric=("acc", "maximize"), quiet=True)
    assert experiment.best().metrics["acc"] == 0.9


def test_context_manager_stops_and_heartbeat_goes_at_once(project):
    heartbeats = project / ".keepsake" / "metadata" / "heartbeats"
    with keepsake.init() as experiment:
        experiment.flush()
        assert experiment.is_running()
    assert not experiment.is_running()
    assert not (heartbeats / f"{experiment.id}.json").exists()
    assert not keepsake.experiments.get(experiment.id).is_running()


def test_heartbeat_file_format(project):
    from git_keepsake.project import Project

    experiment = keepsake.init()
    repo = Project().repository
    for _ in range(200):
        if repo.read_heartbeat(experiment.id):
            break
        import time

        time.sleep(0.01)
    raw = (project / ".keepsake" / "metadata" / "heartbeats" / f"{experiment.id}.json").read_text()
    data = json.loads(raw)
    assert list(data) == ["experiment_id", "last_heartbeat"]
    assert data["experiment_id"] == experiment.id
    assert data["last_heartbeat"].endswith("Z")
    experiment.flush()  # the metadata is written in the background
    assert keepsake.experiments.get(experiment.id[:7]).is_running()
    experiment.stop()


def test_disable_heartbeat(project):
    experiment = keepsake.init(disable_heartbeat=True)
    experiment.flush()
    assert not (project / ".keepsake" / "metadata" / "heartbeats").exists()
    experiment.stop()


def test_checkout_and_open_stream(project):
    (project / "weights").mkdir()
    (project / "weights" / "a.bin").write_bytes(b"A" * 5000)
    (project / "weights" / "b.bin").write_bytes(b"B")
    experiment = keepsake.init()
    chk = experiment.checkpoint(path="weights", quiet=True)
    experiment.stop()
    out = project.parent / "out"
    chk = keepsake.checkpoints.get(chk.id)
    written = chk.checkout(str(out), quiet=True)
    assert sorted(written) == ["weights/a.bin", "weights/b.bin"]
    assert (out / "weights" / "a.bin").read_bytes() == b"A" * 5000
    with chk.open("weights/a.bin") as f:
        assert f.read(10) == b"A" * 10
        assert len(f.read()) == 4990


def test_metric_only_checkpoint_cannot_be_opened(project):
    experiment = keepsake.init()
    chk = experiment.checkpoint(metrics={"a": 1}, quiet=True)
    with pytest.raises(keepsake.KeepsakeError, match="has no files"):
        chk.open("model.pth")


def test_duration_and_python_packages(project):
    experiment = keepsake.init()
    assert experiment.duration is None
    experiment.checkpoint(quiet=True)
    assert experiment.duration.total_seconds() >= 0
    assert "git-keepsake" in experiment.python_packages
    experiment.stop()


def test_many_checkpoints_all_land_in_one_file(project):
    experiment = keepsake.init()
    for i in range(2000):
        experiment.checkpoint(metrics={"loss": 1 / (i + 1)}, quiet=True)
    experiment.stop()
    data = json.loads(read_experiment_file(project, experiment.id))
    assert [c["step"] for c in data["checkpoints"]] == list(range(2000))


def test_snapshot_of_a_folder_with_nothing_to_save(project):
    (project / ".keepsakeignore").write_text("*\n")
    experiment = keepsake.init(path=".", params={"a": 1})
    experiment.stop()
    assert (project / ".keepsake" / "experiments" / f"{experiment.id}.tar.gz").is_file()
    assert keepsake.experiments.get(experiment.id).path == "."


def test_command_is_what_to_paste_back_into_a_shell(project):
    (project / "train.py").write_text(
        "import git_keepsake as keepsake\nkeepsake.init(params={'lr': 0.1}).stop()\n"
    )
    result = run_script("import runpy; runpy.run_path('train.py')", cwd=project)
    assert result.returncode == 0, result.stderr
    subprocess.run([sys.executable, "train.py", "--lr", "0.1"], cwd=project, check=True)
    experiments = keepsake.experiments.list()
    # `command` is sys.argv, as Keepsake recorded it; `command_line` is what re-runs it.
    assert [e.command for e in experiments] == [
        "train.py",
        "train.py --lr 0.1",
    ]  # runpy sets argv[0]
    assert experiments[0].command_line.startswith(sys.executable + " -c ")
    assert experiments[1].command_line == f"{sys.executable} train.py --lr 0.1"
