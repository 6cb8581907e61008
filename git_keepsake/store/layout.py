"""The Keepsake repository layout (version 1) on top of any storage backend: the only place
that knows a key's name."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

from .. import metadata
from ..errors import CorruptRepository, IncompatibleRepository, NotFound
from ..storage import Storage

FORMAT_VERSION = 1
VERSION_KEY = "repository.json"
EXPERIMENTS_PREFIX = "metadata/experiments/"
HEARTBEATS_PREFIX = "metadata/heartbeats/"
# The two kinds of tarball: experiments/<id>.tar.gz (init's path), checkpoints/<id>.tar.gz.
EXPERIMENTS = "experiments"
CHECKPOINTS = "checkpoints"
# Keepsake 0.4.2 calls an experiment running while its heartbeat is younger than this.
RUNNING_WINDOW = dt.timedelta(seconds=30)


def experiment_metadata_key(experiment_id: str) -> str:
    return f"{EXPERIMENTS_PREFIX}{experiment_id}.json"


def heartbeat_key(experiment_id: str) -> str:
    return f"{HEARTBEATS_PREFIX}{experiment_id}.json"


def tarball_key(kind: str, object_id: str) -> str:
    """kind is EXPERIMENTS or CHECKPOINTS."""
    return f"{kind}/{object_id}.tar.gz"


def _id_of(key: str) -> str | None:
    """The experiment ID in a `metadata/.../<id>.json` key; None for anything else."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith(".json") and metadata.is_id(name[:-5]):
        return name[:-5]
    return None


def is_alive(last_heartbeat: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    if last_heartbeat is None:
        return False
    return (now or metadata.now()) - last_heartbeat < RUNNING_WINDOW


class Repository:
    """Reads and writes the files of one repository; knows the layout, not the backend."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.url = storage.url
        self._version_checked = False
        self._has_version_file: bool | None = None  # None: not looked for yet
        self._lock = threading.Lock()

    @property
    def listing_has_versions(self) -> bool:
        """Whether listing experiments gives their versions at no extra cost (a bucket)."""
        return self.storage.listing_has_versions

    @property
    def concurrent(self) -> bool:
        """Whether many reads at once are faster than one after another (a bucket)."""
        return self.storage.concurrency > 1

    def check_version(self) -> None:
        """Refuse repositories from a newer format, and say clearly if repository.json is broken."""
        if self._version_checked:
            return
        try:
            raw = self.storage.get_bytes(VERSION_KEY)
        except NotFound:
            self._has_version_file, self._version_checked = False, True
            return
        self._has_version_file = True
        try:
            version = json.loads(raw)["version"]
            if not isinstance(version, int):
                raise TypeError(version)
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptRepository(
                f"{self.url}/{VERSION_KEY} is corrupted: {raw[:60]!r}",
                hint='it should read {"version":1}',
            ) from e
        if version > FORMAT_VERSION:
            raise IncompatibleRepository(
                f"{self.url} is a version {version} repository; "
                f"this git-keepsake reads version {FORMAT_VERSION}",
                hint="upgrade git-keepsake: pip install -U git-keepsake",
            )
        self._version_checked = True

    def is_present(self) -> bool:
        """Whether anything was ever recorded here (a folder, or a repository.json in a
        bucket): what tells a mistyped URL from a repository with no experiments yet."""
        local = self.storage.local_path("")
        if local is not None:
            return local.is_dir()
        self.check_version()  # which reads repository.json, if there is one
        return bool(self._has_version_file) or any(self.storage.list("metadata/"))

    def ensure_created(self) -> None:
        """Write repository.json (byte-identical to Keepsake's) if this is a new repository.
        Looked for once, not before every write: on a bucket each look is a round trip."""
        with self._lock:
            if self._has_version_file:
                return
            if not self.storage.exists(VERSION_KEY):
                self.storage.put_bytes(VERSION_KEY, b'{"version":1}')
            self._has_version_file = True

    # --- experiments ---

    def write_experiment(self, experiment_id: str, text: str) -> None:
        self.storage.put_bytes(experiment_metadata_key(experiment_id), text.encode())

    def experiment_ids(self) -> list[str]:
        return [i for i in map(_id_of, self.storage.list(EXPERIMENTS_PREFIX)) if i is not None]

    def experiment_versions(self, ids: set[str] | None = None) -> dict[str, str | None]:
        """{experiment id: version of its metadata} (a token that changes whenever the file
        does; None where the storage has none), for every experiment, or those in `ids`."""
        out = {}
        for key, version in self.storage.list_versions(EXPERIMENTS_PREFIX).items():
            experiment_id = _id_of(key)
            if experiment_id is not None and (ids is None or experiment_id in ids):
                out[experiment_id] = version
        return out

    def experiment_bytes(self, experiment_id: str) -> bytes:
        return self.storage.get_bytes(experiment_metadata_key(experiment_id))

    def many_experiment_bytes(self, ids: list[str]) -> dict[str, bytes]:
        """{id: raw metadata} of those that exist, fetched concurrently where that helps."""
        keys = {experiment_metadata_key(i): i for i in ids}
        return {keys[k]: raw for k, raw in self.storage.get_many(keys).items()}

    def has_experiment(self, experiment_id: str) -> bool:
        return self.storage.exists(experiment_metadata_key(experiment_id))

    def read_experiment(self, experiment_id: str) -> dict[str, Any]:
        return metadata.decode(self.experiment_bytes(experiment_id), experiment_id)

    def delete_experiment(self, experiment_id: str, tarballs: list[tuple[str, str]]) -> None:
        """Delete an experiment's metadata first, so no reader sees it with its tarballs half
        gone, then its heartbeat and `tarballs` ((kind, id) pairs), concurrently on a bucket."""
        self.storage.delete_many([experiment_metadata_key(experiment_id)])
        keys = [heartbeat_key(experiment_id), tarball_key(EXPERIMENTS, experiment_id)]
        self.storage.delete_many(keys + [tarball_key(k, i) for k, i in tarballs])

    def delete_tarballs(self, tarballs: list[tuple[str, str]]) -> None:
        self.storage.delete_many([tarball_key(k, i) for k, i in tarballs])

    # --- heartbeats ---

    def write_heartbeat(self, experiment_id: str, when) -> None:
        body = {"experiment_id": experiment_id, "last_heartbeat": metadata.format_time(when)}
        self.storage.put_bytes(
            heartbeat_key(experiment_id), json.dumps(body, separators=(",", ":")).encode()
        )

    def read_heartbeat(self, experiment_id: str):
        """The time of the last heartbeat, or None if there is none (stopped)."""
        try:
            return _heartbeat_time(self.storage.get_bytes(heartbeat_key(experiment_id)))
        except NotFound:
            return None

    def is_running(self, experiment_id: str) -> bool:
        return is_alive(self.read_heartbeat(experiment_id))

    def alive_ids(self) -> set[str]:
        """Ids of experiments with a fresh heartbeat. Stopped experiments have no heartbeat
        file, so a listing reads only those of running (or crashed) ones, all at once."""
        keys = [key for key in self.storage.list(HEARTBEATS_PREFIX) if _id_of(key)]
        return {
            _id_of(key)  # type: ignore[misc]
            for key, raw in self.storage.get_many(keys).items()
            if is_alive(_heartbeat_time(raw))
        }

    def delete_heartbeat(self, experiment_id: str) -> None:
        self.storage.delete(heartbeat_key(experiment_id))

    # --- tarballs ---

    def tarball_name(self, kind: str, object_id: str) -> str:
        """How a tarball is named in messages: its key."""
        return tarball_key(kind, object_id)

    def stored_tarballs(self, tarballs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of `tarballs` ((kind, id) pairs) the repository has."""
        keys = {tarball_key(kind, i): (kind, i) for kind, i in tarballs}
        return {keys[k] for k in self.storage.existing(keys)}

    def is_remote(self, kind: str, object_id: str) -> bool:
        """Whether reading the tarball means a download (it is not on local disk)."""
        return self.storage.local_path(tarball_key(kind, object_id)) is None

    def put_tarball(self, kind: str, object_id: str, produce, size_hint: int = 0) -> None:
        """Store a tarball as `produce(file)` writes it (streamed; see Storage.put_stream)."""
        self.storage.put_stream(tarball_key(kind, object_id), produce, size_hint=size_hint)

    def local_tarball(self, kind: str, object_id: str, download_dir: str | os.PathLike):
        """A local path to a tarball: the file itself on disk storage, else a download into
        `download_dir`; None if the repository doesn't have it."""
        key = tarball_key(kind, object_id)
        local = self.storage.local_path(key)
        if local is not None:
            return local if local.is_file() else None
        target = Path(download_dir) / f"{kind}-{object_id}.tar.gz"
        try:
            self.storage.get_file(key, target)
        except NotFound:
            return None
        return target


def _heartbeat_time(raw: bytes):
    try:
        return metadata.parse_time(json.loads(raw)["last_heartbeat"])
    except (ValueError, KeyError, TypeError):
        return None  # a torn or foreign heartbeat file says nothing about liveness
