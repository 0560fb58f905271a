"""A real S3 API server as its own process, for the test suite and the benchmarks: moto's server
(``python -m moto.server``, the dev extra) on a free loopback port, holding everything in memory.
A stack gets ``env()`` to keep its images there instead of a local directory."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from cli.stack import free_port, spawn, stop_process, wait_http

# moto accepts any credentials; these only have to be present for boto3 to sign requests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "imgq-test", "AWS_SECRET_ACCESS_KEY": "imgq-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aws_env(self) -> dict[str, str]:
        """The AWS variables that point boto3 (in this process or a child) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, **CREDENTIALS}

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """A stack's environment for a blob store in ``bucket`` under ``prefix``."""
        return {**self.aws_env(), "IMGQ_BLOB_URL": f"s3://{bucket}/{prefix}"}

    def start(self, timeout_s: float = 30.0) -> S3Server:
        """Start it and return once it answers HTTP (RuntimeError with its log if not)."""
        proc = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                     log=self.log)
        try:
            wait_http(f"{self.endpoint_url}/moto-api/", timeout_s, proc=proc)
        except RuntimeError as exc:
            stop_process(proc)
            raise RuntimeError(f"moto.server did not start ({exc}):\n{self.log.read_text()}") from None
        self.proc = proc
        return self

    def client(self) -> Any:
        """A boto3 S3 client of this server, whatever this process's AWS variables say."""
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, bucket: str) -> str:
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
