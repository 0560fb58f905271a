"""Where image bytes live: a local directory (here) or an S3-compatible bucket (``storage/s3.py``);
``storage/factory.py`` builds the one the settings ask for."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/svg+xml": "svg"}


class BlobNotFound(KeyError):
    pass


class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def link(self, key: str, *, ttl_s: int, content_type: str) -> str | None:
        """A URL that serves the bytes without us for ``ttl_s`` seconds, or None if the store
        has no such thing (a local directory)."""


def image_key(job_id: str, index: int, content_type: str) -> str:
    return f"{job_id[-2:]}/{job_id}/{index}.{EXTENSIONS.get(content_type, 'bin')}"


class LocalBlobStore:
    """Files under one root directory; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise BlobNotFound(key)
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def link(self, key: str, *, ttl_s: int, content_type: str) -> str | None:
        return None
