"""One contract for every blob store: the local directory and S3 (a real S3 API server, moto's, in
its own process), each built by make_blob_store from the settings; and IMGQ_BLOB_URL's checks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from imagequeue.settings import Settings, s3_location
from storage.blobs import BlobNotFound, BlobStore, LocalBlobStore, image_key
from storage.factory import make_blob_store
from storage.s3 import S3BlobStore
from tests.conftest import REPO_ROOT

KEY = image_key("job_01hzzzzzzzzzzzzzzzzzzzzzab", 0, "image/png")


@dataclass
class Backend:
    open: Callable[[str], BlobStore]  # the store at a location ("team/a": a prefix or a directory)
    stored: Callable[[], set[str]]  # every name the backend holds, as it holds it
    kind: type


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "local":
        return Backend(lambda where: make_blob_store(Settings(image_dir=tmp_path / where)),
                       lambda: {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                                if p.is_file()}, LocalBlobStore)
    server: Any = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    for name, value in server.aws_env().items():  # boto3 finds the server as in production
        monkeypatch.setenv(name, value)
    return Backend(lambda where: make_blob_store(Settings(blob_url=f"s3://{bucket}/{where}")),
                   lambda: set(server.keys(bucket)), S3BlobStore)


def test_the_settings_choose_the_store(backend: Backend) -> None:
    assert isinstance(backend.open("images"), backend.kind)


def test_put_then_get_and_exists(backend: Backend) -> None:
    store = backend.open("images")
    assert not store.exists(KEY)
    store.put(KEY, b"\x89PNG fox")
    assert store.exists(KEY)
    assert store.get(KEY) == b"\x89PNG fox"


def test_a_missing_key_is_blob_not_found(backend: Backend) -> None:
    store = backend.open("images")
    with pytest.raises(BlobNotFound):
        store.get("ef/job_missing/0.png")
    assert store.exists("ef/job_missing/0.png") is False


def test_a_put_overwrites(backend: Backend) -> None:
    store = backend.open("images")
    store.put(KEY, b"first")
    store.put(KEY, b"second, longer")
    assert store.get(KEY) == b"second, longer"


def test_keys_live_under_the_prefix_and_stores_do_not_share_them(backend: Backend) -> None:
    team_a, team_b = backend.open("team/a"), backend.open("team/b")
    team_a.put(KEY, b"a's")
    assert backend.stored() == {f"team/a/{KEY}"}
    assert not team_b.exists(KEY)
    with pytest.raises(BlobNotFound):
        team_b.get(KEY)


def test_only_s3_gives_a_link_and_it_serves_the_bytes(backend: Backend) -> None:
    store = backend.open("images")
    store.put(KEY, b"\x89PNG linked")
    url = store.link(KEY, ttl_s=60, content_type="image/png")
    if backend.kind is LocalBlobStore:
        assert url is None
        return
    assert url is not None and "X-Amz-Expires=60" in url
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.content == b"\x89PNG linked"
    assert answer.headers["content-type"] == "image/png"


@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://imgq", "imgq", ""), ("s3://imgq/", "imgq", ""), ("s3://imgq/images", "imgq", "images/"),
    ("s3://my.bucket-1/a/b/", "my.bucket-1", "a/b/"),
])
def test_an_s3_url_names_bucket_and_prefix(url: str, bucket: str, prefix: str) -> None:
    assert s3_location(url) == (bucket, prefix)
    assert Settings(blob_url=url).blob_url == url


@pytest.mark.parametrize("url", ["s3://", "s3:///images", "ftp://x", "imgq/images", "s3:/imgq",
                                 "s3://Imgq_Images/x", "s3://ab", "s3://imgq/x?versionId=1",
                                 "https://s3.amazonaws.com/imgq"])
def test_a_malformed_blob_url_is_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_BLOB_URL", url)
    with pytest.raises(ValidationError, match="blob_url"):
        Settings()


def test_an_empty_blob_url_is_the_local_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMGQ_BLOB_URL", "")
    settings = Settings(image_dir=tmp_path)
    assert settings.blob_url is None
    assert isinstance(make_blob_store(settings), LocalBlobStore)


def test_a_worker_with_a_malformed_blob_url_does_not_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "worker"], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "IMGQ_BLOB_URL": "s3://"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "IMGQ_BLOB_URL='s3://'" in result.stderr
    assert "must look like s3://bucket" in result.stderr
