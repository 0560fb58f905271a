"""Image bytes in an S3 bucket, or any S3-compatible store (MinIO, Ceph, R2...).

The endpoint, region and credentials come from the usual AWS variables (``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``...), which boto3 reads itself, and ``AWS_REGION``,
which boto3 does not read for a client's region (other AWS SDKs do) and so is passed here, taking
precedence as it does there. ``put`` returns once the
store has answered PutObject, that is once the object is stored: S3 is strongly read-after-write
consistent, so every API process and worker reads it at once and no confirming HEAD is needed.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from storage.blobs import BlobNotFound

# A stuck store fails a call in seconds (then boto3's standard retries, with backoff), instead of
# holding a worker's slot or an API request for botocore's default of a minute per try.
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=30, signature_version="s3v4",
                       retries={"mode": "standard", "max_attempts": 4})
MISSING = {"NoSuchKey", "404", "NotFound"}


class S3BlobStore:
    """Objects under ``prefix`` (``""`` or ending in ``/``) in ``bucket``. One client, built
    here once: boto3 clients are thread-safe (a worker's threads share it), sessions are not."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client or boto3.session.Session().client(
            "s3", region_name=os.environ.get("AWS_REGION") or None, config=CLIENT_CONFIG)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _missing(exc):
                raise BlobNotFound(key) from exc
            raise
        body = answer["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def link(self, key: str, *, ttl_s: int, content_type: str) -> str | None:
        """A presigned GET URL (signed here, no request made) that answers with ``content_type``."""
        url: str = self.client.generate_presigned_url(
            "get_object", ExpiresIn=ttl_s,
            Params={"Bucket": self.bucket, "Key": self._key(key), "ResponseContentType": content_type})
        return url


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in MISSING
