"""Google Cloud Storage through google-cloud-storage, imported lazily.

Credentials are Application Default Credentials (`gcloud auth application-default login`,
GOOGLE_APPLICATION_CREDENTIALS, or the metadata server on GCP); the project for creating a bucket
comes with them or from GOOGLE_CLOUD_PROJECT. `STORAGE_EMULATOR_HOST` points the client at an
emulator. Retries are ours (remote.py): every call passes retry=None so the library's own
two-minute retry deadline doesn't stack on top.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from .remote import RemoteStorage

# Files above 8 MB go up as resumable uploads, in chunks of this size (a multiple of 256 KiB).
CHUNK_SIZE = 32 << 20
TIMEOUT = (10, 120)  # connect, read (seconds)

# HTTP status -> kind of problem (see remote.PROBLEMS).
STATUS_KINDS = {
    404: "not_found",
    401: "bad_credentials",
    403: "denied",
    409: "exists",
    408: "unavailable",
    429: "unavailable",
}


class GCSStorage(RemoteStorage):
    scheme = "gs"
    credentials_hint = (
        "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
        "to a service account key file"
    )
    bucket_name_rule = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")

    def _connect(self):
        import requests
        from google.cloud import storage

        client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
        # Enough pooled connections for our concurrent requests (requests keeps 10).
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.concurrency)
        client._http.mount("https://", adapter)
        client._http.mount("http://", adapter)
        return client

    def _classify(self, error: Exception) -> tuple[str, str] | None:
        import google.auth.exceptions as auth
        import requests
        from google.api_core import exceptions as api

        if isinstance(error, api.GoogleAPICallError):
            status = error.code or 0
            kind = STATUS_KINDS.get(status) or ("unavailable" if status >= 500 else "failed")
            return kind, error.message or str(error)
        if isinstance(error, auth.DefaultCredentialsError):
            return "no_credentials", str(error)
        if isinstance(error, auth.RefreshError):
            return "bad_credentials", str(error)
        if isinstance(error, auth.TransportError):
            return "unavailable", str(error)
        if isinstance(error, requests.exceptions.RequestException):
            return "unavailable", str(error)
        from google.resumable_media import common

        if isinstance(error, common.InvalidResponse):
            status = getattr(error.response, "status_code", 0)
            kind = STATUS_KINDS.get(status) or ("unavailable" if status >= 500 else "failed")
            return kind, str(error)
        if isinstance(error, common.DataCorruption):
            return "unavailable", str(error)
        if isinstance(error, ValueError) and "project" in str(error).lower():
            return "failed", f"{error} (set GOOGLE_CLOUD_PROJECT)"
        return None

    def _blob(self, key: str, **kwargs):
        return self.client.bucket(self.bucket).blob(self._key(key), **kwargs)

    def _bucket_exists(self) -> bool:
        self.client.get_bucket(self.bucket, retry=None, timeout=TIMEOUT)
        return True

    def _create_bucket(self) -> None:
        self.client.create_bucket(self.bucket, retry=None, timeout=TIMEOUT)

    # --- the Storage interface ---

    def _upload_stream(self, key: str, stream, size_hint: int) -> None:
        # A resumable upload of unknown size, one chunk in memory at a time; if it fails, the
        # unfinished session never becomes an object.
        blob = self._blob(key, chunk_size=CHUNK_SIZE)
        blob.upload_from_file(stream, retry=None, timeout=TIMEOUT)

    def get_file(self, key: str, local_path: str | os.PathLike) -> None:
        target = os.fspath(local_path)
        partial = f"{target}.part"

        def download() -> None:
            self._blob(key).download_to_filename(partial, retry=None, timeout=TIMEOUT)
            os.replace(partial, target)

        self._call(download, key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(
            lambda: self._blob(key).upload_from_string(data, retry=None, timeout=TIMEOUT),
            key,
            write=True,
        )

    def get_bytes(self, key: str) -> bytes:
        return self._call(
            lambda: self._blob(key).download_as_bytes(retry=None, timeout=TIMEOUT), key
        )

    def list(self, prefix: str) -> Iterator[str]:
        return iter(self.list_versions(prefix))

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        """The generation of each key: it changes on every write, and comes with the listing."""

        def list_all() -> dict[str, str | None]:
            blobs = self.client.list_blobs(
                self.bucket,
                prefix=self._key(prefix),
                fields="items(name,generation),nextPageToken",
                retry=None,
                timeout=TIMEOUT,
            )
            cut = len(self.prefix)
            return {b.name[cut:]: str(b.generation) for b in blobs}

        return self._call(list_all, prefix)

    def delete(self, key: str) -> None:
        self._call(
            lambda: self._blob(key).delete(retry=None, timeout=TIMEOUT), key, if_missing=None
        )

    def exists(self, key: str) -> bool:
        return self._call(lambda: self._blob(key).exists(retry=None, timeout=TIMEOUT), key)
