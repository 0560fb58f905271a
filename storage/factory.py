"""Building the blob store the settings ask for, in one place for the API and the workers: the
local directory ``image_dir`` unless ``blob_url`` names an S3 location."""

from __future__ import annotations

from imagequeue.settings import Settings, s3_location
from storage.blobs import BlobStore, LocalBlobStore
from storage.s3 import S3BlobStore


def make_blob_store(settings: Settings) -> BlobStore:
    if settings.blob_url is None:
        return LocalBlobStore(settings.image_dir)
    bucket, prefix = s3_location(settings.blob_url)
    return S3BlobStore(bucket, prefix)
