"""The Keepsake repository layout (version 1) on top of any storage backend."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from . import metadata
from .errors import CorruptRepository, IncompatibleRepository, NotFound
from .storage import Storage

FORMAT_VERSION = 1
VERSION_KEY = "repository.json"
EXPERIMENTS_PREFIX = "metadata/experiments/"
HEARTBEATS_PREFIX = "metadata/heartbeats/"


def experiment_metadata_key(experiment_id: str) -> str:
    return f"{EXPERIMENTS_PREFIX}{experiment_id}.json"


def heartbeat_key(experiment_id: str) -> str:
    return f"{HEARTBEATS_PREFIX}{experiment_id}.json"


def tarball_key(kind: str, object_id: str) -> str:
    """kind is 'experiments' or 'checkpoints'."""
    return f"{kind}/{object_id}.tar.gz"


class Repository:
    """Reads and writes the files of one repository; knows the layout, not the backend."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.url = storage.url
        self._version_checked = False
        self._has_version_file: bool | None = None  # None: not looked for yet
        self._lock = threading.Lock()

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
        ids = []
        for key in self.storage.list(EXPERIMENTS_PREFIX):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json") and metadata.is_id(name[:-5]):
                ids.append(name[:-5])
        return ids

    def read_experiment(self, experiment_id: str) -> dict[str, Any]:
        key = experiment_metadata_key(experiment_id)
        raw = self.storage.get_bytes(key)
        try:
            return metadata.decode(raw, key)
        except ValueError as e:
            raise CorruptRepository(f"{self.url}/{key} is not valid JSON: {e}") from e

    def read_experiments(self) -> list[dict[str, Any]]:
        """Every experiment's metadata; a corrupted file is reported and skipped, not fatal."""
        out = []
        for experiment_id in self.experiment_ids():
            try:
                out.append(self.read_experiment(experiment_id))
            except CorruptRepository as e:
                print(f"git-keepsake: warning: skipping {e}", file=sys.stderr)
            except NotFound:
                pass  # deleted while we listed
        return out

    def delete_experiment(self, experiment_id: str) -> None:
        self.storage.delete(experiment_metadata_key(experiment_id))

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

    def alive_ids(self) -> set[str]:
        """Ids of experiments with a fresh heartbeat. Stopped experiments have no heartbeat
        file, so a listing reads only those of running (or crashed) ones, all at once."""
        from .heartbeat import is_alive

        keys = [
            key
            for key in self.storage.list(HEARTBEATS_PREFIX)
            if key.endswith(".json") and metadata.is_id(key.rsplit("/", 1)[-1][:-5])
        ]
        return {
            key.rsplit("/", 1)[-1][:-5]
            for key, raw in self.storage.get_many(keys).items()
            if is_alive(_heartbeat_time(raw))
        }

    def delete_heartbeat(self, experiment_id: str) -> None:
        self.storage.delete(heartbeat_key(experiment_id))

    # --- tarballs ---

    def tarball_exists(self, kind: str, object_id: str) -> bool:
        return self.storage.exists(tarball_key(kind, object_id))

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
