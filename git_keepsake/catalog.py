"""Finding and reading experiments: git refs first, blob storage for the rest, through a cache.

Two sources hold experiment metadata: `refs/keepsake/metadata/*` in git (fast, offline after a
`git fetch`) and `metadata/experiments/*.json` in blob storage (complete: it also has experiments
recorded outside git or by Keepsake 0.4.2). An experiment found in git is read from git; blob
storage is read only for the rest, so they merge without duplicates.

Listing 10,000 experiments must not parse 10,000 full JSON files with 50 checkpoints each. A local
SQLite index maps (source, id, version) -> a *summary*: the experiment's own fields plus its
best and latest checkpoints. The version is what changes whenever the metadata does (the
metadata commit id in git; inode/mtime/size or ETag in storage), so a cached summary is never
stale. Experiments built from a summary load their full checkpoint list on first use. The index
is only a cache: deleting it costs one slow listing; a broken or locked one is bypassed.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import metadata
from .errors import CorruptRepository, KeepsakeError
from .repository import EXPERIMENTS_PREFIX

if TYPE_CHECKING:
    from .experiment import Experiment
    from .project import Project

INDEX_FILE = "index.sqlite"
SCHEMA = 1


class Catalog:
    def __init__(self, project: Project):
        self.project = project

    # --- where each experiment's metadata is ---

    def _sources(self) -> dict[str, tuple[str, str | None, Callable[[], bytes]]]:
        """{experiment id: (source, version, read full JSON bytes)}; git wins over storage."""
        project = self.project
        repository = project.repository
        out: dict[str, tuple[str, str | None, Callable[[], bytes]]] = {}
        storage = repository.storage
        for key, version in storage.list_versions(EXPERIMENTS_PREFIX).items():
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json") and metadata.is_id(name[:-5]):
                out[name[:-5]] = ("storage", version, _reader(storage.get_bytes, key))
        git = project.git
        if git is not None:
            for experiment_id, commit in git.metadata_refs().items():
                out[experiment_id] = ("git", commit, _reader(git.read_metadata, commit))
        return out

    # --- reading ---

    def list(self) -> list[Experiment]:
        # Building tens of thousands of objects triggers the cyclic GC over and over, and each
        # pass walks everything built so far: half the time of a 10,000-experiment listing.
        # Nothing made here is garbage, so collection waits until the list is built.
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._list()
        finally:
            if paused:
                gc.enable()

    def _list(self) -> list[Experiment]:
        self.project.repository.check_version()
        sources = self._sources()
        index = _Index.open(self.project.state_dir / INDEX_FILE)
        cached = index.load()
        fresh = []
        out = []
        for experiment_id, (source, version, read) in sources.items():
            hit = cached.get(experiment_id)
            if hit is not None and version is not None and hit[:2] == (source, version):
                try:
                    out.append(self._from_summary(json.loads(hit[2]), read))
                    continue
                except (ValueError, KeyError, TypeError):
                    pass  # a damaged row: read the experiment afresh
            try:
                experiment = self._build(_decode(read(), experiment_id))
            except (KeepsakeError, ValueError, KeyError, TypeError) as e:
                _warn(f"skipping unreadable experiment {experiment_id[:7]}: {e}")
                continue
            out.append(experiment)
            if version is not None:
                fresh.append((experiment_id, source, version, summarize(experiment)))
        index.store(fresh, gone=cached.keys() - sources.keys())
        index.close()
        return out

    def get(self, id_or_prefix: str) -> Experiment:
        """The experiment whose id starts with `id_or_prefix`, listing the sources once."""
        from .experiment import resolve_prefix

        self.project.repository.check_version()
        sources = self._sources()
        experiment_id = resolve_prefix(id_or_prefix, sources, "experiment")
        return self._build(_decode(sources[experiment_id][2](), experiment_id))

    def rebuild_notes(self) -> int:
        """Rewrite refs/notes/keepsake from the experiments in git (the notes are only a view of
        them: this is how a notes conflict is resolved). Returns the number of notes written."""
        git = self.project.git
        if git is None:
            return 0
        in_git = git.metadata_refs()
        lines: dict[str, list[str]] = {}
        for experiment in sorted(self.list(), key=lambda e: e.created):
            commit = (experiment._extra.get("git") or {}).get("commit")
            if commit and experiment.id in in_git:
                lines.setdefault(commit, []).append(experiment._note_line())
        git.rebuild_notes(lines)
        return len(lines)

    def _build(self, data: dict[str, Any]) -> Experiment:
        from .experiment import Experiment

        return Experiment.from_json(self.project, data)

    def _from_summary(self, summary: dict[str, Any], read: Callable[[], bytes]) -> Experiment:
        from .checkpoint import Checkpoint
        from .experiment import Experiment

        experiment_id = summary["id"]

        def load() -> list[dict[str, Any]]:
            return _decode(read(), experiment_id).get("checkpoints") or []

        experiment = Experiment.from_json(self.project, summary["experiment"], lazy=load)
        experiment._summary = {
            role: _attach(Checkpoint.from_json(summary[role]), experiment)
            if summary.get(role)
            else None
            for role in ("best", "latest")
        }
        return experiment


def summarize(experiment: Experiment) -> str:
    best, latest = experiment.best(), experiment.latest()
    head = experiment.to_json()
    head.pop("checkpoints", None)
    summary = {
        "id": experiment.id,
        "experiment": head,
        "best": best.to_json() if best else None,
        "latest": latest.to_json() if latest else None,
    }
    # In Keepsake's wire form (NaN as "[NaN]"), as from_json expects it back.
    return json.dumps(metadata.to_wire(summary), separators=(",", ":"), allow_nan=False)


def _attach(checkpoint, experiment):
    checkpoint._experiment = experiment
    return checkpoint


def _reader(read: Callable[[str], bytes], key: str) -> Callable[[], bytes]:
    return lambda: read(key)


def _decode(raw: bytes, experiment_id: str) -> dict[str, Any]:
    try:
        data = metadata.decode(raw, experiment_id)
    except ValueError as e:
        raise CorruptRepository(f"experiment {experiment_id[:7]} metadata is not JSON: {e}") from e
    if not isinstance(data, dict) or data.get("id") != experiment_id:
        raise CorruptRepository(f"experiment {experiment_id[:7]} metadata names another id")
    return data


def _warn(message: str) -> None:
    print(f"git-keepsake: warning: {message}", file=sys.stderr)


class _Index:
    """The SQLite cache. Any failure (read-only disk, lock, corruption) turns it into a no-op."""

    def __init__(self, db: sqlite3.Connection | None):
        self.db = db

    @classmethod
    def open(cls, path: Path) -> _Index:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=2, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS summaries (id TEXT PRIMARY KEY, source TEXT,"
                " version TEXT, summary TEXT)"
            )
            (schema,) = db.execute("PRAGMA user_version").fetchone()
            if schema != SCHEMA:
                db.execute("DELETE FROM summaries")
                db.execute(f"PRAGMA user_version={SCHEMA}")
            return cls(db)
        except (sqlite3.Error, OSError):
            return cls(None)

    def load(self) -> dict[str, tuple[str, str, str]]:
        if self.db is None:
            return {}
        try:
            rows = self.db.execute("SELECT id, source, version, summary FROM summaries")
            return {row[0]: row[1:] for row in rows}
        except sqlite3.Error:
            self.db = None
            return {}

    def store(self, rows: list[tuple[str, str, str, str]], gone=()) -> None:
        """Add or replace rows, and drop those of experiments that no longer exist."""
        if self.db is None or not (rows or gone):
            return
        try:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?)", rows)
            self.db.executemany("DELETE FROM summaries WHERE id = ?", [(i,) for i in gone])
            self.db.execute("COMMIT")
        except sqlite3.Error:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
