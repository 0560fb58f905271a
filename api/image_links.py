"""Signed, expiring links to a job's images (the OpenAI-compatible gateway's
``response_format: url``): ``/v1/images/content/{job_id}/{index}?expires=…&signature=…``, where
``signature`` is the HMAC-SHA256 of the job, the image and the expiry (Unix seconds) under
``IMGQ_GATEWAY_URL_SECRET``. Such a link opens without an API key until it expires; altered or
expired, it is refused (``LinkRefused``, a 403).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from urllib.parse import urlencode

from imagequeue.settings import Settings

log = logging.getLogger("api.image_links")


class LinkRefused(Exception):
    """A signed link that does not open: ``code`` ``invalid_signature`` or ``link_expired``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def content_path(base_url: str, job_id: str, index: int) -> str:
    return f"{base_url.rstrip('/')}/v1/images/content/{job_id}/{index}"


class ImageLinks:
    def __init__(self, secret: bytes, ttl_s: int, *, own_key: bool = False) -> None:
        self.secret = secret
        self.ttl_s = ttl_s
        self.own_key = own_key  # no IMGQ_GATEWAY_URL_SECRET: a key of this process's own
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLinks:
        secret = settings.gateway_url_secret
        if secret is not None and secret.get_secret_value():
            return cls(secret.get_secret_value().encode(), settings.gateway_url_ttl_s)
        return cls(secrets.token_bytes(32), settings.gateway_url_ttl_s, own_key=True)

    def signature(self, job_id: str, index: int, expires: int) -> str:
        digest = hmac.new(self.secret, f"{job_id}/{index}/{expires}".encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, base_url: str, job_id: str, index: int, now_s: float | None = None) -> str:
        if self.own_key and not self._warned:
            self._warned = True
            log.warning("IMGQ_GATEWAY_URL_SECRET is not set: this API process signs image links "
                        "with a key of its own, so they open only on this process until it "
                        "restarts; set the same secret on every API process")
        expires = int(time.time() if now_s is None else now_s) + self.ttl_s
        query = urlencode({"expires": expires, "signature": self.signature(job_id, index, expires)})
        return f"{content_path(base_url, job_id, index)}?{query}"

    def check(self, job_id: str, index: int, expires: int, signature: str) -> None:
        """Raises LinkRefused unless ``signature`` signs this image until ``expires``, still
        ahead."""
        expected = self.signature(job_id, index, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise LinkRefused("invalid_signature", "This image link is not valid: its signature "
                              "does not match (the link was altered, or signed by another "
                              "server). Fetch the image with your API key, or generate it again.")
        if expires <= time.time():
            raise LinkRefused("link_expired", "This image link has expired. Fetch the image with "
                              "your API key, or generate it again.")
