"""Amazon S3 (and S3-compatible stores such as MinIO) through boto3, imported lazily.

Credentials, region and endpoint come from boto3's own chain: environment variables, profiles,
SSO, instance roles, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` for other S3-compatible
stores. Retries are ours (remote.py): botocore's are turned off so that a failure isn't retried
by two layers, multiplying the wait.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator

from .remote import RemoteStorage

# Big tarballs go up in parts, several at once (boto3's transfer manager). A streamed upload
# holds up to 10 parts in memory, so parts stay at boto3's 8 MiB unless S3's limit of 10,000
# parts per object needs bigger ones; MAX_PARTS leaves room for a size hint that is a bit low.
MiB = 1 << 20
MULTIPART_THRESHOLD = 8 * MiB
PART_SIZE = 8 * MiB
MAX_PARTS = 9000
TRANSFER_THREADS = 10

# Provider error code -> kind of problem (see remote.PROBLEMS).
ERROR_KINDS = {
    "NoSuchKey": "not_found",
    "404": "not_found",
    "NotFound": "not_found",
    "NoSuchBucket": "no_bucket",
    "InvalidAccessKeyId": "bad_credentials",
    "SignatureDoesNotMatch": "bad_credentials",
    "ExpiredToken": "bad_credentials",
    "InvalidToken": "bad_credentials",
    "TokenRefreshRequired": "bad_credentials",
    "AccessDenied": "denied",
    "403": "denied",
    "AllAccessDisabled": "denied",
    "BucketAlreadyOwnedByYou": "exists",
    "SlowDown": "unavailable",
    "Throttling": "unavailable",
    "ThrottlingException": "unavailable",
    "RequestTimeout": "unavailable",
    "InternalError": "unavailable",
    "ServiceUnavailable": "unavailable",
}


class S3Storage(RemoteStorage):
    scheme = "s3"
    credentials_hint = (
        "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws configure`"
    )
    bucket_name_rule = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

    def _connect(self):
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"total_max_attempts": 1},
            max_pool_connections=max(self.concurrency, TRANSFER_THREADS),
            connect_timeout=10,
            read_timeout=60,
        )
        return boto3.session.Session().client("s3", config=config)

    def _transfer_config(self, size: int = 0):
        from boto3.s3.transfer import TransferConfig

        part_size = max(PART_SIZE, math.ceil(size / MAX_PARTS / MiB) * MiB)
        return TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=part_size,
            max_concurrency=TRANSFER_THREADS,
            num_download_attempts=1,
        )

    def _classify(self, error: Exception) -> tuple[str, str] | None:
        from botocore import exceptions as bx

        for e in _causes(error):
            if isinstance(e, bx.ClientError):
                info = e.response.get("Error", {})
                code = str(info.get("Code", ""))
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                detail = info.get("Message") or code
                kind = ERROR_KINDS.get(code)
                if kind is None and (status >= 500 or status == 429):
                    kind = "unavailable"
                return kind or "failed", f"{detail} ({code})" if code not in detail else detail
            if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
                return "no_credentials", str(e)
            if isinstance(e, (bx.ProfileNotFound, bx.NoRegionError, bx.ConfigParseError)):
                return "failed", str(e)
            if isinstance(
                e,
                (
                    bx.ConnectionError,
                    bx.HTTPClientError,
                    bx.IncompleteReadError,
                    bx.ChecksumError,
                ),
            ):
                return "unavailable", str(e)
        return None

    def _bucket_exists(self) -> bool:
        self.client.head_bucket(Bucket=self.bucket)
        return True

    def _create_bucket(self) -> None:
        client = self.client
        region = client.meta.region_name
        args = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(**args)

    # --- the Storage interface ---

    def _upload_stream(self, key: str, stream, size_hint: int) -> None:
        # A failed transfer aborts its multipart upload: no parts are left behind to pay for.
        self.client.upload_fileobj(
            stream, self.bucket, self._key(key), Config=self._transfer_config(size_hint)
        )

    def get_file(self, key: str, local_path: str | os.PathLike) -> None:
        # s3transfer writes to a temporary name beside the target and renames it at the end.
        self._call(
            lambda: self.client.download_file(
                self.bucket, self._key(key), os.fspath(local_path), Config=self._transfer_config()
            ),
            key,
        )

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data),
            key,
            write=True,
        )

    def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

        return self._call(get, key)

    def list(self, prefix: str) -> Iterator[str]:
        return iter(self.list_versions(prefix))

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        """The ETag of each key: S3 lists it with the key, so versions cost nothing extra."""

        def list_all() -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            cut = len(self.prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    out[item["Key"][cut:]] = item.get("ETag")
            return out

        return self._call(list_all, prefix)

    def delete(self, key: str) -> None:
        self._call(
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)),
            key,
            if_missing=None,
        )

    def exists(self, key: str) -> bool:
        # A listing rather than a HEAD: a HEAD's errors have no body, so a refused key and
        # missing permissions would both read "403".
        def listed() -> bool:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
            return any(item["Key"] == self._key(key) for item in page.get("Contents", ()))

        return self._call(listed, key, if_missing=False)


def _causes(error: BaseException):
    """The error and what it wraps: boto3 re-raises transfer failures as other types."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        last = getattr(error, "last_exception", None)  # RetriesExceededError
        error = last or error.__cause__ or error.__context__
