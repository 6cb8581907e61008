"""Finding and reading experiments: git refs first, blob storage for the rest, through a cache.

Two sources hold experiment metadata: `refs/keepsake/metadata/*` in git (fast, offline after a
`git fetch`) and `metadata/experiments/*.json` in blob storage (complete: it also has experiments
recorded outside git or by Keepsake 0.4.2). An experiment found in git is read from git; blob
storage is read only for the rest, so they merge without duplicates (and for a git copy whose
object is missing). Both are untrusted: `metadata.decode` refuses what is not an experiment.

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
import marshal
import sqlite3
import sys
from collections.abc import Callable, Container
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import metadata
from .errors import (
    Ambiguous,
    CorruptRepository,
    GitError,
    InvalidArgument,
    KeepsakeError,
    NotAnID,
    NotFound,
)
from .records import CheckpointRecord, ExperimentRecord
from .runtime import warn
from .store.journal import STAGING
from .store.layout import Repository

if TYPE_CHECKING:
    from .git.repo import GitRepo

# Builds an experiment from its JSON; with a loader, from a summary (see Catalog._from_summary).
Build = Callable[..., ExperimentRecord]

INDEX_FILE = "index.sqlite"
NOT_UPLOADED = "journal"  # the source of experiments known only from the staging journal
# Bump the first number whenever summarize() or best() change what a summary holds.
SCHEMA = 7 * 10000 + sys.version_info[0] * 100 + sys.version_info[1]


class Catalog:
    """Reads a project's experiments. `git_dir` is the common git dir (None outside git, and
    then `open_git` is never called); `build(data, lazy=None)` makes the experiment objects
    (the API's, for a Project)."""

    def __init__(
        self,
        repository: Repository,
        git_dir: Path | None,
        open_git: Callable[[], GitRepo | None],
        state_dir: Path,
        build: Build,
    ):
        self.repository = repository
        self.git_dir = git_dir
        self._open_git = open_git
        self.index_path = state_dir / INDEX_FILE
        self.staging_root = state_dir / STAGING
        self._build = build
        self._warned: set[str] = set()  # one line per problem, however often it is met

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warn(message)

    # --- where each experiment's metadata is ---

    def _sources(self) -> dict[str, tuple[str, str | None, Callable[[], bytes]]]:
        """{experiment id: (source, version, read full JSON bytes)}; git wins over storage.

        Git refs are read from the ref files (pygit2 is imported only to read a metadata
        commit the index lacks), and blob-storage versions are asked for only when some
        experiment is in storage alone (recorded outside git, or by Keepsake 0.4.2)."""
        out: dict[str, tuple[str, str | None, Callable[[], bytes]]] = {}
        in_git = self.metadata_refs()
        for experiment_id, commit in in_git.items():
            out[experiment_id] = ("git", commit, _reader(self._read_git, commit))
        repository = self.repository
        versions: dict[str, str | None] | None = None
        if repository.listing_has_versions:  # a bucket: the listing carries ETags/generations
            versions = repository.experiment_versions()
            ids = versions.keys()
        else:  # a folder: a stat per file, so only for experiments not in git (below)
            ids = repository.experiment_ids()
        only_in_storage = [i for i in ids if i not in in_git]
        if only_in_storage and versions is None:
            versions = repository.experiment_versions(set(only_in_storage))
        for experiment_id in only_in_storage:
            version = versions.get(experiment_id) if versions else None
            out[experiment_id] = ("storage", version, _BlobReader(repository, experiment_id))
        for experiment_id, data in self._not_uploaded(skip=out).items():
            # Never cached (no version): the journal grows as the run goes on.
            text = json.dumps(data).encode()
            out[experiment_id] = (NOT_UPLOADED, None, lambda text=text: text)
        return out

    def _not_uploaded(self, skip: Container[str]) -> dict[str, dict]:
        """{experiment id: metadata} of the runs of this project that are in its staging
        journal alone (not in `skip`): their writes failed (no credentials, storage
        unreachable) or are still under way. Their refs may exist; `git keepsake sync`
        uploads them."""
        from .store.journal import journaled_experiments

        out = {}
        for experiment_id, data in journaled_experiments(self.staging_root, skip).items():
            config = data.get("config")
            # The staging root is the git repository's: it holds the runs of every project
            # in it, each recorded into the repository its metadata names.
            if isinstance(config, dict) and config.get("repository") == self.repository.url:
                out[experiment_id] = data
        return out

    def metadata_refs(self) -> dict[str, str]:
        """{experiment id: metadata commit} of every experiment in git."""
        if self.git_dir is None:
            return {}
        from .git.refs import METADATA_REFS, read_refs

        found = read_refs(self.git_dir, METADATA_REFS)
        if found is None:  # refs in a format only git reads
            git = self._open_git()
            found = git.metadata_refs() if git is not None else {}
        return {i: c for i, c in found.items() if metadata.is_id(i)}

    def _read_git(self, commit: str) -> bytes:
        git = self._open_git()
        if git is None:
            raise CorruptRepository(f"cannot open the git repository to read {commit[:7]}")
        return git.read_metadata(commit)

    # --- reading ---

    def list(self) -> list[ExperimentRecord]:
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

    def _list(self) -> list[ExperimentRecord]:
        self.repository.check_version()
        sources = self._sources()
        index = _Index.open(self.index_path)
        out = self._read(sources, index)
        index.close()
        alive = self.repository.alive_ids()
        for experiment in out:
            experiment._alive = experiment.id in alive
            experiment.uploaded = sources[experiment.id][0] != NOT_UPLOADED
        return out

    def _read(
        self, sources, index: _Index, all_sources=None, asked: tuple[str, ...] = ()
    ) -> list[ExperimentRecord]:
        """Every experiment in `sources`, from the index where it is current, and the index
        brought up to date with the rest. `all_sources`: every experiment there is, when
        `sources` is only some of them (what the index forgets and fingerprints). An
        experiment that can't be read is skipped with a warning, unless its ID starts with
        one of the prefixes `asked` for: finding it then fails with the same message."""
        all_sources = sources if all_sources is None else all_sources
        cached = index.load()
        fresh = []
        out = []
        complete = True
        _prefetch(
            read
            for experiment_id, (source, version, read) in sources.items()
            if version is None or cached.get(experiment_id, ())[:2] != (source, version)
        )
        for experiment_id, where in sources.items():
            source, version, _ = where
            hit = cached.get(experiment_id)
            if hit is not None and version is not None and hit[:2] == (source, version):
                try:
                    out.append(self._from_summary(marshal.loads(hit[2]), experiment_id, where))
                    continue
                except (ValueError, KeyError, TypeError, EOFError):
                    pass  # a damaged row: read the experiment afresh
            try:
                data, from_source = self._load(experiment_id, where)
                experiment = self._build(data)
            except KeepsakeError as e:
                if not experiment_id.startswith(asked):
                    self._warn_once(f"{e.message} (skipped)")
                complete = False
                continue
            except (ValueError, KeyError, TypeError) as e:
                self._warn_once(f"experiment {experiment_id[:7]} is unreadable (skipped): {e!r}")
                complete = False
                continue
            out.append(experiment)
            if not from_source:
                complete = False  # read from elsewhere: not cached under this source's version
            elif version is not None:
                fresh.append(
                    (
                        (experiment_id, source, version, summarize(experiment)),
                        [c.id for c in experiment.checkpoints],
                    )
                )
        fingerprint = _fingerprint(all_sources) if complete else None
        index.store(fresh, gone=cached.keys() - all_sources.keys(), fingerprint=fingerprint)
        return out

    def get(self, id_or_prefix: str) -> ExperimentRecord:
        """The experiment whose id starts with `id_or_prefix`."""
        return self._find_all([id_or_prefix], ("experiment",))[0]

    def get_checkpoint(self, id_or_prefix: str) -> CheckpointRecord:
        """The checkpoint whose id starts with `id_or_prefix` (through the index: one
        experiment's metadata is read, however many there are)."""
        return self._find_all([id_or_prefix], ("checkpoint",))[0]

    def find(self, id_or_prefix: str) -> ExperimentRecord | CheckpointRecord:
        """The experiment or checkpoint whose id starts with `id_or_prefix`."""
        return self.find_all([id_or_prefix])[0]

    def find_all(self, ids_or_prefixes: list[str]) -> list[ExperimentRecord | CheckpointRecord]:
        """`find` for several IDs (as `diff` and `rm` take), listing the sources once."""
        return self._find_all(ids_or_prefixes, ("experiment", "checkpoint"))

    def _find_all(self, ids_or_prefixes: list[str], kinds: tuple[str, ...]) -> list:
        what = " or ".join(kinds)
        prefixes = [check_prefix(i, what) for i in ids_or_prefixes]
        self.repository.check_version()
        sources = self._sources()
        checkpoint_ids = self._checkpoint_ids(prefixes, sources) if "checkpoint" in kinds else {}
        return [self._find(p, sources, checkpoint_ids, kinds) for p in prefixes]

    def claimants(self, checkpoint_ids: list[str]) -> dict[str, set[str]]:
        """{checkpoint id: the experiments whose records list it}. A tarball is keyed by the
        checkpoint's ID alone, and IDs are public once pushed: a crafted or copied record can
        claim another experiment's checkpoint, whose files `rm` of the claimant must leave."""
        if not checkpoint_ids:
            return {}
        found = self._checkpoint_ids(checkpoint_ids, self._sources())
        return {c: found.get(c, set()) for c in checkpoint_ids}

    def _find(self, prefix: str, sources, checkpoint_ids: dict[str, set[str]], kinds):
        matches = []
        if "experiment" in kinds:
            matches += [("experiment", i) for i in sorted(sources) if i.startswith(prefix)]
        matches += [("checkpoint", i) for i in sorted(checkpoint_ids) if i.startswith(prefix)]
        what = " or ".join(kinds)
        if not matches:
            raise NotFound(f"no {what} matches {prefix!r}", hint="list them with: git keepsake ls")
        if len(matches) > 1:
            shown = ", ".join(f"{kind} {i[:12]}" for kind, i in matches[:10])
            more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
            raise Ambiguous(
                f"{prefix!r} matches {len(matches)} IDs: {shown}{more}",
                hint="give more characters of the ID",
            )
        kind, found = matches[0]
        if kind == "checkpoint" and len(checkpoint_ids[found]) > 1:
            claimants = ", ".join(i[:7] for i in sorted(checkpoint_ids[found]))
            raise Ambiguous(
                f"checkpoint {found[:7]} is claimed by experiments {claimants}",
                hint="one record was copied or crafted: show each experiment to tell which",
            )
        experiment_id = found if kind == "experiment" else next(iter(checkpoint_ids[found]))
        experiment = self._build(self._load(experiment_id, sources[experiment_id])[0])
        if kind == "experiment":
            return experiment
        for checkpoint in experiment.checkpoints:
            if checkpoint.id == found:
                return checkpoint
        raise NotFound(f"checkpoint {found[:7]} is gone from experiment {experiment_id[:7]}")

    def _checkpoint_ids(self, prefixes: list[str], sources) -> dict[str, set[str]]:
        """{checkpoint id starting with one of the prefixes: the experiments listing it}, via
        the index (first brought up to date with the experiments it lacks or holds an older
        version of)."""
        index = _Index.open(self.index_path)
        try:
            if index.db is not None:
                fingerprint = _fingerprint(sources)
                if fingerprint is None or index.fingerprint() != fingerprint:
                    held = index.versions()
                    stale = {i: s for i, s in sources.items() if held.get(i) != s[:2]}
                    self._read(stale, index, all_sources=sources, asked=tuple(prefixes))
                found: dict[str, set[str]] = {}
                for prefix in prefixes:
                    rows = index.checkpoints(prefix)
                    if rows is None:
                        break  # the index broke meanwhile: read everything below
                    for c, e in rows:
                        if e in sources:
                            found.setdefault(c, set()).add(e)
                else:
                    return found
            experiments = self._read(sources, _Index(None), asked=tuple(prefixes))
            found = {}
            for e in experiments:
                for c in e.checkpoints:
                    if any(c.id.startswith(p) for p in prefixes):
                        found.setdefault(c.id, set()).add(e.id)
            return found
        finally:
            index.close()

    def _load(self, experiment_id: str, source) -> tuple[dict[str, Any], bool]:
        """(the experiment's JSON, whether from `source`). A git copy git can't read (its ref
        points at an object that is missing: a fetch or a gc cut short) gives way to the
        storage copy, with a warning; without one, the error says how to repair the ref."""
        kind, commit, read = source
        try:
            return metadata.decode(read(), experiment_id), True
        except GitError as e:
            if kind != "git":
                raise
            git = self._open_git()
            missing = git is not None and not git.has_object(commit)
            problem = "points at a missing object" if missing else f"can't be read ({e.message})"
            from .git.refs import ExperimentRef

            ref = ExperimentRef.metadata(experiment_id)
            problem = f"experiment {experiment_id[:7]}: its git metadata ref {ref} {problem}"
            if not self.repository.has_experiment(experiment_id):
                raise GitError(
                    problem,
                    hint=f"fetch it again (git keepsake pull), or delete the ref: "
                    f"git update-ref -d {ref}",
                ) from e
            self._warn_once(f"{problem}; read from storage instead")
            return metadata.decode(
                self.repository.experiment_bytes(experiment_id), experiment_id
            ), False
        except CorruptRepository as e:
            e.hint = _refused_hint(kind, experiment_id, self.repository.url)
            raise

    def _from_summary(
        self, summary: dict[str, Any], experiment_id: str, source
    ) -> ExperimentRecord:
        def load() -> dict[str, Any]:
            return self._load(experiment_id, source)[0]

        experiment = self._build(summary["experiment"], load)
        make = experiment.checkpoint_type.from_json
        best, latest = summary.get("best"), summary.get("latest")
        latest = experiment.attach(make(latest)) if latest else None
        if best and latest and best["id"] == latest.id:
            best = latest  # often the same checkpoint: build it once
        elif best:
            best = experiment.attach(make(best))
        experiment._summary = {"best": best, "latest": latest}
        experiment._count = summary.get("count")
        return experiment


def check_prefix(id_or_prefix: str, what: str = "experiment or checkpoint") -> str:
    """An ID prefix, lowercased; NotAnID (an InvalidArgument and a NotFound) if it can't be
    one (IDs are hex)."""
    prefix = str(id_or_prefix).strip().lower()
    if not prefix:
        raise InvalidArgument("no ID given", hint="e.g. git keepsake show 3f8a508")
    if len(prefix) > 64 or any(ch not in "0123456789abcdef" for ch in prefix):
        raise NotAnID(
            f"{id_or_prefix!r} is not an {what} ID (IDs are hex, like 3f8a508)",
            hint="list them with: git keepsake ls",
        )
    return prefix


def _refused_hint(kind: str, experiment_id: str, url: str) -> str:
    """What to do about an experiment whose metadata is refused: nothing was done with it."""
    if kind == "git":
        from .git.refs import ExperimentRef

        where = f"delete its ref: git update-ref -d {ExperimentRef.metadata(experiment_id)}"
    else:
        where = f"delete metadata/experiments/{experiment_id}.json in {url}"
    return f"it is damaged or was not written by keepsake; nothing was done with it (to {where})"


def _fingerprint(sources) -> str | None:
    """A digest of every (id, source, version): equal to the one stored with the index exactly
    when the index holds every experiment as it is now (None: a source has no versions)."""
    import hashlib

    lines = []
    for experiment_id, (source, version, _) in sources.items():
        if version is None:
            return None
        lines.append(f"{experiment_id} {source} {version}")
    lines.sort()
    return hashlib.blake2b("\n".join(lines).encode(), digest_size=16).hexdigest()


def summarize(experiment: ExperimentRecord) -> bytes:
    best, latest = experiment.best(), experiment.latest()
    head = experiment.to_json()
    del head["checkpoints"], head["python_packages"]  # read from the full metadata when asked
    summary = {
        "id": experiment.id,
        "experiment": head,
        "best": best.to_json() if best else None,
        "latest": latest.to_json() if latest else None,
        "count": len(experiment.checkpoints),
    }
    # In Keepsake's wire form (NaN as "[NaN]"), as from_json expects it back. marshal, not
    # JSON: it reads back twice as fast, and this is a private cache (SCHEMA has the Python
    # version in it, as marshal's format may change between versions).
    return marshal.dumps(metadata.to_wire(summary))


def _reader(read: Callable[[str], bytes], key: str) -> Callable[[], bytes]:
    return lambda: read(key)


class _BlobReader:
    """Reads one experiment's JSON from blob storage. `_prefetch` fills many at once, with
    concurrent GETs: a cold listing of a bucket is bound by round trips, not bandwidth."""

    __slots__ = ("repository", "experiment_id", "data")

    def __init__(self, repository: Repository, experiment_id: str):
        self.repository = repository
        self.experiment_id = experiment_id
        self.data: bytes | None = None

    def __call__(self) -> bytes:
        data, self.data = self.data, None  # once: a later (lazy) read fetches it anew
        if data is not None:
            return data
        return self.repository.experiment_bytes(self.experiment_id)


def _prefetch(readers) -> None:
    """Fetch the JSON of every blob reader in one concurrent batch (they share the project's
    repository), where the storage gains from it."""
    readers = [r for r in readers if isinstance(r, _BlobReader)]
    if readers and readers[0].repository.concurrent:
        found = readers[0].repository.many_experiment_bytes([r.experiment_id for r in readers])
        for reader in readers:
            reader.data = found.get(reader.experiment_id)


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
            (schema,) = db.execute("PRAGMA user_version").fetchone()
            if schema != SCHEMA:
                db.execute("DROP TABLE IF EXISTS summaries")
                db.execute("DROP TABLE IF EXISTS checkpoints")
                db.execute("DROP TABLE IF EXISTS meta")
            db.execute(
                "CREATE TABLE IF NOT EXISTS summaries (id TEXT PRIMARY KEY, source TEXT,"
                " version TEXT, summary BLOB)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS checkpoints (id TEXT, experiment TEXT,"
                " PRIMARY KEY (id, experiment))"
            )
            db.execute("CREATE INDEX IF NOT EXISTS by_experiment ON checkpoints (experiment)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            if schema != SCHEMA:
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

    def checkpoints(self, prefix: str) -> list[tuple[str, str]] | None:
        """(checkpoint id, experiment id) pairs for ids starting with prefix (None: index
        broken). A checkpoint ID may be listed by several experiments' records."""
        if self.db is None:
            return None
        try:
            rows = self.db.execute(
                "SELECT id, experiment FROM checkpoints WHERE id >= ? AND id < ?",
                (prefix, prefix + "g"),  # ids are lowercase hex: "g" sorts after every digit
            )
            return rows.fetchall()
        except sqlite3.Error:
            self.db = None
            return None

    def versions(self) -> dict[str, tuple[str, str]]:
        """{experiment id: (source, version)} of what the index holds."""
        if self.db is None:
            return {}
        try:
            rows = self.db.execute("SELECT id, source, version FROM summaries")
            return {row[0]: row[1:] for row in rows}
        except sqlite3.Error:
            return {}

    def fingerprint(self) -> str | None:
        """The fingerprint of the sources the index was last brought up to date with."""
        if self.db is None:
            return None
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            return row[0] if row else None
        except sqlite3.Error:
            return None

    def store(
        self,
        rows: list[tuple[tuple[str, str, str, bytes], list[str]]],
        gone=(),
        fingerprint: str | None = None,
    ) -> None:
        """Add or replace experiments (summary row, checkpoint ids), drop those of experiments
        that no longer exist, and record which state of the sources that makes current."""
        if self.db is None:
            return
        if not (rows or gone) and fingerprint == self.fingerprint():
            return
        replaced = [(row[0],) for row, _ in rows] + [(i,) for i in gone]
        try:
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
            self.db.executemany("DELETE FROM checkpoints WHERE experiment = ?", replaced)
            self.db.executemany("DELETE FROM summaries WHERE id = ?", [(i,) for i in gone])
            self.db.executemany(
                "INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?)", [row for row, _ in rows]
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)",
                [(c, row[0]) for row, ids in rows for c in ids],
            )
            self.db.execute("COMMIT")
        except sqlite3.Error:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
