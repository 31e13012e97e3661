"""The upload hot path: PutObject and UploadPart signed by botocore, sent straight over urllib3.

A full botocore call spends about a millisecond of CPU on event hooks, endpoint rules, serialisation
and response parsing, which for thousands of small photos costs more than hashing them. These two
requests need none of it: the URL is fixed per key, the body and Content-MD5 are ours, and the answer
is an ETag header. So they are signed with botocore's own SigV4 signer and credentials (refreshable
credentials keep working; the payload is left unsigned, see below), sent on one shared urllib3
pool, and retried like botocore's standard mode: 500/502/503/504, 429 and throttling codes, and
dropped connections, with capped exponential backoff. Everything else, and every other checksum mode,
stays on the botocore client.
"""

from __future__ import annotations

import os
import random
import re
import time
import urllib.parse
from typing import Any

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.httpsession import get_cert_path

from sync_engine.bwlimit import RateLimiter
from sync_engine.config import S3Settings

PROBE_KEY = "immich-sync-probe"
# The body is protected by Content-MD5, which is a signed header and checked by S3 on arrival, so a
# second, SHA-256 digest of every body (what SigV4 payload signing adds) buys nothing but CPU.
_UNSIGNED_PAYLOAD = Config(s3={"payload_signing_enabled": False})
# What botocore's standard retry mode retries, so both paths judge an answer alike; the same sets tell
# an outage (worth abandoning a run over) from a refusal of one request (see store.is_outage).
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
THROTTLING_STATUS = frozenset({429})
THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
    }
)
TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalError", "ServiceUnavailable"}
)
_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


class DirectError(Exception):
    """A direct PUT failed after retries; `store.describe_error` turns it into a StoreError."""

    def __init__(self, code: str, message: str, *, transport: bool = False, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.transport = transport
        self.status = status  # S3's HTTP status; 0 when nothing answered


class DirectWriter:
    """Signs and sends PUTs of object bodies and parts; safe to share between threads."""

    def __init__(
        self, client: Any, credentials: Any, settings: S3Settings, *, limiter: RateLimiter | None = None
    ) -> None:
        # `client`: the bucket's base URL (see `direct_base_url`), or a botocore client to learn it from
        self._base = client if isinstance(client, str) else presigned_base(client, settings.bucket)
        self._credentials = credentials
        self._region = settings.region
        self._attempts = settings.max_attempts
        timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout)
        tls = (
            {"ca_certs": os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)}
            if self._base.startswith("https")
            else {}
        )
        # One host, so one connection pool: no per-request URL parsing or pool lookup.
        self._pool = urllib3.connection_from_url(
            self._base, maxsize=settings.max_connections, block=False, retries=False, timeout=timeout, **tls
        )
        self._base_path = urllib.parse.urlsplit(self._base).path
        self._limiter = limiter

    def url(self, key: str, query: str = "") -> str:
        return self._base + urllib.parse.quote(key, safe="/~") + (f"?{query}" if query else "")

    def put(self, key: str, body: bytes, md5_b64: str, headers: dict[str, str] | None = None, query: str = "") -> Any:
        """PUT the body; returns the response headers. Raises DirectError after retries."""
        url = self.url(key, query)
        target = self._base_path + url[len(self._base) :]
        extra = {"Content-MD5": md5_b64, "Content-Length": str(len(body)), **(headers or {})}
        for attempt in range(1, self._attempts + 1):
            request = AWSRequest(method="PUT", url=url, data=body, headers=extra)
            request.context["client_config"] = _UNSIGNED_PAYLOAD
            S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(request)
            try:
                # Paced, the body goes out in pieces as the bandwidth limit allows (one request with a
                # Content-Length all the same); a retry paces its bytes again, as they are sent again.
                response = self._pool.urlopen(
                    "PUT",
                    target,
                    body=body if self._limiter is None else self._limiter.paced(body),
                    headers=dict(request.headers.items()),
                    preload_content=True,
                    redirect=False,
                    assert_same_host=False,
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                error = DirectError("Connection", f"connection to S3 failed ({exc.__class__.__name__})", transport=True)
            else:
                if response.status == 200:
                    return response.headers
                code, message = _parse_error(response.data, response.status)
                error = DirectError(code, message, status=response.status)
                if not retryable(response.status, code):
                    raise error
            if attempt == self._attempts:
                raise error
            throttled = error.code in THROTTLING_CODES or error.status in THROTTLING_STATUS
            time.sleep(min(20.0, random.random() * (1.0 if throttled else 0.05) * 2**attempt))
        raise AssertionError("unreachable")


def retryable(status: int, code: str) -> bool:
    """A server error or throttling: the same request may well succeed later."""
    return (
        status in TRANSIENT_STATUS or status in THROTTLING_STATUS or code in TRANSIENT_CODES or code in THROTTLING_CODES
    )


def _parse_error(body: bytes, status: int) -> tuple[str, str]:
    code = _CODE.search(body or b"")
    message = _MESSAGE.search(body or b"")
    return (
        code.group(1).decode() if code else str(status),
        message.group(1).decode() if message else f"HTTP {status}",
    )
