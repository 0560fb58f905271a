"""A small client of our own HTTP API, used by ``imgq submit``, ``status`` and ``demo``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

LOCAL_KEY_FILE = Path("var/local-api-key")
DEFAULT_API_URL = "http://127.0.0.1:8000"
RATE_LIMIT_RETRIES = 5  # a 429 rate_limited is waited out (its Retry-After, at most a minute)


class ApiClientError(Exception):
    pass


def resolve_api_key(explicit: str | None) -> str:
    key = explicit or os.environ.get("IMGQ_API_KEY")
    if not key and LOCAL_KEY_FILE.is_file():
        key = LOCAL_KEY_FILE.read_text().strip()
    if not key:
        raise ApiClientError("no API key: pass --api-key, set IMGQ_API_KEY, or run `imgq up` once "
                             f"(it writes a local key to {LOCAL_KEY_FILE})")
    return key


class ApiClient:
    def __init__(self, base_url: str, api_key: str, timeout_s: float = 30.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {api_key}"})

    def _check(self, response: httpx.Response) -> Any:
        if response.is_error:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ApiClientError(f"HTTP {response.status_code}: {message}")
        return response.json()

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        """One call; over the tenant's requests per minute, wait as the API says and retry."""
        for _ in range(RATE_LIMIT_RETRIES):
            response = self.http.request(method, url, **options)
            if response.status_code != 429 or not _rate_limited(response):
                return response
            time.sleep(min(60.0, float(response.headers.get("Retry-After") or 1)))
        return response

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.request("POST", "/v1/jobs", json=body))  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.request("GET", f"/v1/jobs/{job_id}"))  # type: ignore[no-any-return]

    def image(self, url: str) -> bytes:
        response = self.request("GET", url)
        if response.is_error:
            raise ApiClientError(f"HTTP {response.status_code} fetching {url}")
        return response.content

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 0.5) -> dict[str, Any]:
        from storage.models import TERMINAL_STATUSES  # here: most commands never load SQLAlchemy

        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise ApiClientError(f"job {job_id} still {job['status']} after {timeout_s:.0f}s")
            time.sleep(poll_s)

    def events(self, path: str) -> Iterator[dict[str, Any]]:
        """Server-Sent Events of a job or batch (``/v1/jobs/ID/events``), until the server ends."""
        with self.http.stream("GET", path, timeout=httpx.Timeout(30, read=None)) as response:
            if response.is_error:
                response.read()
                self._check(response)
            for line in response.iter_lines():
                if line.startswith("data:"):
                    yield json.loads(line[5:])

    def close(self) -> None:
        self.http.close()


def _rate_limited(response: httpx.Response) -> bool:
    try:
        return bool(response.json()["error"]["type"] == "rate_limited")
    except (ValueError, KeyError, TypeError):
        return False
