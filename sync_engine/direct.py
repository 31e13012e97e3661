"""The upload hot path: PutObject and UploadPart signed by botocore, sent straight over urllib3.

A full botocore call spends about a millisecond of CPU on event hooks, endpoint rules, serialisation
and response parsing, which for thousands of small photos costs more than hashing them. These two
requests need none of it: the URL is fixed per key, the body and Content-MD5 are ours, and the answer
is an ETag header. So they are signed with botocore's own SigV4 signer and credentials (refreshable
credentials keep working; the payload is left unsigned, see below), sent on one shared urllib3
pool, and retried like botocore's standard mode: 500/502/503/504, 429 and throttling codes, and
dropped connections, with capped exponential backoff.

The reads every night makes (ListObjectsV2, ListMultipartUploads, the GET of the files cache) go the
same way (`DirectReader`), because building a botocore client at all (S3's service model, endpoint
rules) costs a quiet night more than its requests do; their answers are parsed into exactly what
botocore would return, and anything but a 200 is handed back to botocore to retry and describe.
Everything else, and every other checksum mode, stays on the botocore client.
"""

from __future__ import annotations

import os
import random
import re
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from xml.etree import ElementTree

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.httpsession import get_cert_path

from sync_engine.bwlimit import RateLimiter
from sync_engine.config import S3Settings

PROBE_KEY = "immich-sync-probe"
# What one socket write may carry (urllib3's own block size for file bodies): a 2 Mbit/s line shared by
# 64 workers still moves it in about 4 s, inside the 10 s send timeout.
SEND_PIECE = 16 * 1024
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
_READ = 256 * 1024  # bytes of a streamed body read at a time
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
                response = self._pool.urlopen(
                    "PUT",
                    target,
                    body=self._pieces(body),
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

    def _pieces(self, body: bytes) -> Iterator[memoryview]:
        """The body in SEND_PIECE pieces, released as the bandwidth limit allows (one request with a
        Content-Length all the same; a retry paces its bytes again, as they are sent again).

        urllib3 sends under the connect timeout and one `sendall` must finish within it as a whole, so a
        body handed over in one piece fails whenever the line needs longer than that for it: every large
        file on a slow uplink. In pieces, the timeout means no progress at all for that long."""
        view = memoryview(body)
        for offset in range(0, len(view), SEND_PIECE):
            piece = view[offset : offset + SEND_PIECE]
            if self._limiter is not None:
                self._limiter.take(len(piece))
            yield piece


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


def presigned_base(client: Any, bucket: str) -> str:
    """The base URL of the bucket's objects, read off a URL botocore presigns for a PUT."""
    probe = client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": PROBE_KEY})
    base = str(probe).split("?", 1)[0]
    if not base.endswith("/" + PROBE_KEY):
        raise ValueError(f"unexpected presigned URL layout: {base}")
    return base[: -len(PROBE_KEY)]


# What `presigned_base` would answer, worked out without a client (building one loads S3's whole service
# model: a fifth of a second, for a night that may send only a few LISTs and one PUT). Anything that may
# move S3's endpoint (FIPS, dual-stack, acceleration, endpoint URLs or rules of its own) leaves the answer
# to botocore. tests/test_direct_read.py compares both over a matrix of endpoints, regions and buckets.
_AWS_REGION = re.compile(r"(us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-[0-9]+")
_AWS_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]")
_ENDPOINT_BUCKET = re.compile(r"[A-Za-z0-9._-]+")
_ENDPOINT_PATH = re.compile(r"(?:/[A-Za-z0-9._-]+)*/?")  # botocore re-quotes anything else
_LAYOUT_VARIABLES = ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT")
_LAYOUT_WORDS = ("fips", "dualstack", "accelerate", "regional_endpoint", "endpoint_url", "services", "addressing")


def direct_base_url(settings: S3Settings, environ: Mapping[str, str] = os.environ) -> str | None:
    """The bucket's base URL as `presigned_base` gives it, or None when only botocore can tell."""
    if any(environ.get(name) for name in _LAYOUT_VARIABLES) or environ.get("AWS_DATA_PATH"):
        return None
    if _config_moves_endpoint(environ):
        return None
    bucket = settings.bucket
    if settings.endpoint_url:
        parts = urllib.parse.urlsplit(settings.endpoint_url)
        scheme = parts.scheme.lower()
        if (
            scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or "@" in parts.netloc
            or not _ENDPOINT_PATH.fullmatch(parts.path)
            or not _ENDPOINT_BUCKET.fullmatch(bucket)
            or "--" in bucket  # S3 Express (`--x-s3`) and other suffixed names are botocore's to route
        ):
            return None
        # A custom endpoint: botocore presigns path-style, under the endpoint's own path.
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/{bucket}/"
    if any(name.startswith("AWS_ENDPOINT_URL") or name == "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" for name in environ):
        return None
    region = settings.region
    if not _AWS_REGION.fullmatch(region) or not _AWS_BUCKET.fullmatch(bucket):
        return None
    if bucket.startswith("sthree-") or bucket.endswith("-s3alias"):
        return None
    if not settings.path_style:
        return f"https://{bucket}.s3.amazonaws.com/"
    host = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.amazonaws.com"
    return f"https://{host}/{bucket}/"


def _config_moves_endpoint(environ: Mapping[str, str]) -> bool:
    """True when the AWS config file (if any) may hold a setting that moves S3's endpoint."""
    path = os.path.expanduser(os.path.expandvars(environ.get("AWS_CONFIG_FILE") or "~/.aws/config"))
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().lower()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return any(word in text for word in _LAYOUT_WORDS)


_QUERY_SAFE = "-_.~"
_ISO_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")
# ListObjectsV2 parameters, botocore's name → the query's; `encoding-type=url` is botocore's default too,
# so keys with characters XML 1.0 cannot carry come back percent-encoded, and are decoded alike.
_LIST_PARAMS = {
    "Prefix": "prefix",
    "Delimiter": "delimiter",
    "MaxKeys": "max-keys",
    "StartAfter": "start-after",
    "ContinuationToken": "continuation-token",
}
_UPLOADS_PARAMS = {
    "Prefix": "prefix",
    "MaxUploads": "max-uploads",
    "KeyMarker": "key-marker",
    "UploadIdMarker": "upload-id-marker",
}
_OBJECT_FIELDS = ("Key", "Size", "LastModified", "ETag", "StorageClass")
_UPLOAD_FIELDS = ("Key", "UploadId", "Initiated")


class DirectReader:
    """The reads every night makes (ListObjectsV2, ListMultipartUploads, the GET of the files cache), signed
    and sent on the writer's connection pool, answers parsed into what botocore would return.

    Only a well-formed 200 is taken: any other answer, and any transport failure, returns None, and the
    caller sends the same request through botocore, so retries, redirects and the errors a caller sees
    stay botocore's own."""

    def __init__(self, writer: DirectWriter) -> None:
        self._writer = writer
        base = writer._base
        # Bucket-level requests: `/bucket?…` path-style, `/?…` on a virtual host, as botocore sends them.
        self._bucket_url = base if urllib.parse.urlsplit(base).path == "/" else base[:-1]

    def list_objects_v2(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        query = [("list-type", "2"), *_query(params, _LIST_PARAMS), ("encoding-type", "url")]
        root = _xml(self._get(None, query), "ListBucketResult")
        if root is None:
            return None
        page: dict[str, Any] = {}
        contents: list[dict[str, Any]] = []
        prefixes: list[dict[str, Any]] = []
        for node in root:
            tag = _tag(node)
            if tag == "Contents":
                contents.append(_fields(node, _OBJECT_FIELDS))
            elif tag == "CommonPrefixes":
                prefixes.append(_fields(node, ("Prefix",)))
            elif tag in ("IsTruncated", "NextContinuationToken", "EncodingType"):
                page[tag] = node.text or ""
        try:
            for item in contents:
                if "Size" in item:
                    item["Size"] = int(item["Size"])
                if "LastModified" in item:
                    item["LastModified"] = epoch(item["LastModified"])
        except ValueError:
            return None
        if page.get("EncodingType") == "url":
            for item in contents:
                if "Key" in item:
                    item["Key"] = urllib.parse.unquote_plus(item["Key"])
            for item in prefixes:
                if "Prefix" in item:
                    item["Prefix"] = urllib.parse.unquote_plus(item["Prefix"])
        if contents:
            page["Contents"] = contents
        if prefixes:
            page["CommonPrefixes"] = prefixes
        page["IsTruncated"] = page.get("IsTruncated") == "true"
        return page

    def list_multipart_uploads(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        response = self._get(None, [("uploads", None), *_query(params, _UPLOADS_PARAMS)])
        root = _xml(response, "ListMultipartUploadsResult")
        if root is None or response is None:
            return None
        page: dict[str, Any] = {}
        uploads: list[dict[str, Any]] = []
        for node in root:
            tag = _tag(node)
            if tag == "Upload":
                uploads.append(_fields(node, _UPLOAD_FIELDS))
            elif tag in ("IsTruncated", "NextKeyMarker", "NextUploadIdMarker"):
                page[tag] = node.text or ""
        try:
            for item in uploads:
                if "Initiated" in item:
                    item["Initiated"] = epoch(item["Initiated"])
        except ValueError:
            return None
        if uploads:
            page["Uploads"] = uploads
        page["IsTruncated"] = page.get("IsTruncated") == "true"
        date = response.headers.get("Date")
        page["ResponseMetadata"] = {"HTTPStatusCode": 200, "HTTPHeaders": {"date": date} if date else {}}
        return page

    def bucket_versioning(self) -> str | None:
        """The bucket's versioning Status ("" when never enabled); None: ask botocore."""
        response = self._get(None, [("versioning", None)])
        # S3 answers `<VersioningConfiguration/>` for a bucket that never had versioning; some servers
        # (moto) name that empty answer `GetBucketVersioningResponse`.
        root = _xml(response, "VersioningConfiguration") or _xml(response, "GetBucketVersioningResponse")
        if root is None:
            return None
        return next((node.text or "" for node in root if _tag(node) == "Status"), "")

    def get_object(self, key: str, max_bytes: int | None = None) -> bytes | None:
        """The object's body; None: ask botocore. With `max_bytes`, reading stops one byte past it, so a
        body of any size costs at most that much memory (the caller tells an overlong body by its length)."""
        if max_bytes is None:
            response = self._get(key, [])
            return None if response is None else bytes(response.data)
        response = self._get(key, [], stream=True)
        if response is None:
            return None
        body = bytearray()
        ended = False
        try:
            while len(body) <= max_bytes:
                chunk = response.read(min(_READ, max_bytes + 1 - len(body)))
                if not chunk:
                    ended = True
                    break
                body += chunk
        except (urllib3.exceptions.HTTPError, OSError):
            return None  # botocore reads it again and describes what failed
        finally:
            if ended:
                response.release_conn()  # read to its end: the connection can be reused
            else:
                response.close()  # the rest is never read: the connection cannot carry another request
        return bytes(body)

    def _get(self, key: str | None, query: list[tuple[str, str | None]], *, stream: bool = False) -> Any:
        writer = self._writer
        text = "&".join(
            name if value is None else f"{name}={urllib.parse.quote(value, safe=_QUERY_SAFE)}" for name, value in query
        )
        url = (self._bucket_url if key is None else writer.url(key)) + (f"?{text}" if text else "")
        request = AWSRequest(method="GET", url=url)
        request.context["client_config"] = _UNSIGNED_PAYLOAD
        S3SigV4Auth(writer._credentials.get_frozen_credentials(), "s3", writer._region).add_auth(request)
        parts = urllib.parse.urlsplit(url)
        try:
            response = writer._pool.urlopen(
                "GET",
                parts.path + (f"?{parts.query}" if parts.query else ""),
                headers=dict(request.headers.items()),
                preload_content=not stream,
                decode_content=False,
                redirect=False,
                assert_same_host=False,
            )
        except (urllib3.exceptions.HTTPError, OSError):
            return None
        if response.status != 200:
            if stream:
                response.close()  # botocore asks again and reads the error; this body is never read
            return None
        return response


def _query(params: Mapping[str, Any], names: Mapping[str, str]) -> list[tuple[str, str | None]]:
    return [(names[name], str(value)) for name, value in params.items() if name in names and value is not None]


def _xml(response: Any, root_tag: str) -> ElementTree.Element | None:
    if response is None:
        return None
    try:
        parser = ElementTree.XMLParser(target=ElementTree.TreeBuilder(), encoding="utf-8")
        parser.feed(response.data)
        root = parser.close()
    except ElementTree.ParseError:
        return None
    return root if _tag(root) == root_tag else None


def _tag(node: ElementTree.Element) -> str:
    return node.tag.rpartition("}")[2]


def _fields(node: ElementTree.Element, names: tuple[str, ...]) -> dict[str, Any]:
    """The named child elements' texts (an empty element is "", as botocore reads it)."""
    out: dict[str, Any] = {}
    for child in node:
        tag = _tag(child)
        if tag in names:
            out[tag] = child.text or ""
    return out


def epoch(text: str) -> float:
    """A timestamp as S3 writes it, in epoch seconds exactly as botocore's parser reads it."""
    if _ISO_UTC.fullmatch(text):
        return datetime.fromisoformat(text).timestamp()
    from botocore.utils import parse_timestamp  # any other form S3-compatible servers use

    return float(parse_timestamp(text).timestamp())
