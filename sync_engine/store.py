"""The only place that talks to S3. A writer may list, put and abort; nothing here deletes.

HEAD, GET and RestoreObject are for the restore and the reports, run with read-only credentials.

One botocore client is shared by every worker (its connection pool is sized to the worker count), so no
request pays for session or client set-up. It is built on first use: the requests every night makes
(listings, the files cache GET, the multipart-upload check, PUTs) go out on the direct path of
`direct.py` whenever it applies, so a night with nothing to upload builds no client and loads no
botocore service model at all. Listing runs in a prefetch thread (`prefetch.py`) so the planner and
the uploads never wait for the next page.
"""

from __future__ import annotations

import base64
import email.utils
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import botocore.exceptions as bexc

from sync_engine.bwlimit import RateLimiter
from sync_engine.config import S3Settings
from sync_engine.direct import DirectError, DirectReader, DirectWriter, direct_base_url, presigned_base, retryable
from sync_engine.errors import ConfigError, ObjectTooLarge, SetupError, StoreError
from sync_engine.models import RemoteObject
from sync_engine.prefetch import PrefetchedListing
from sync_engine.versions import ObjectVersion, page_versions

# Refusals that mean the bucket cannot be used as configured (rather than one object failing).
SETUP_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "NoSuchBucket",
        "NoCredentials",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "403",
        "301",
    }
)

ACCESS_CODES = {
    "InvalidAccessKeyId": "S3 does not know the access key in AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "S3 rejected the signature: AWS_SECRET_ACCESS_KEY is wrong",
    "AccessDenied": "access denied",
    "InvalidToken": "the session token is invalid",
    "ExpiredToken": "the session token has expired",
}


def _kms(encryption: object) -> bool:
    """SSE-KMS (`aws:kms`) and DSSE-KMS (`aws:kms:dsse`): S3's ETag is then not an MD5 of the bytes."""
    return str(encryption or "").startswith("aws:kms")


class RequestError(StoreError):
    """A failed S3 request, with the HTTP status S3 answered (0 when nothing answered), so that a caller
    can tell S3 being down or overloaded from S3 refusing this one request."""

    def __init__(self, message: str, *, code: str = "", transport: bool = False, status: int = 0) -> None:
        super().__init__(message, code=code, transport=transport)
        self.status = status

    @property
    def outage(self) -> bool:
        return _outage(self.code, self.status, self.transport)


# Refusals that are not about one object: the credentials stopped working (an expiring token, a key
# rotated mid-run, a clock S3 no longer accepts), so every later request fails the same way.
CREDENTIALS_GONE = frozenset(
    {
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "RequestTimeTooSkewed",
    }
)


def _outage(code: str, status: int, transport: bool) -> bool:
    if not status and code.isdigit():
        status = int(code)  # an error without a body (HEAD) is known by its status alone
    return transport or status >= 500 or retryable(status, code) or code in CREDENTIALS_GONE


def is_outage(exc: BaseException) -> bool:
    """True when S3 could not serve the request at all: unreachable, connection dropped, a 5xx or
    throttling, after retries. Only such failures may add up to abandoning a run (see pool.py); a 4xx
    refusal (a key too long, a policy denying one key, an invalid argument) fails that object only,
    and the next object may well succeed."""
    if isinstance(exc, RequestError):
        return exc.outage
    if isinstance(exc, StoreError):
        return _outage(exc.code, 0, exc.transport)
    return False


def _refused(code: str, message: str, what: str, status: int) -> StoreError:
    message = ACCESS_CODES.get(code) or message or code
    if code == "NoSuchBucket":
        message = "the bucket does not exist"
    return RequestError(f"{what}: {message} ({code})", code=code, status=status)


def describe_error(exc: BaseException, what: str) -> StoreError:
    """Turn a botocore exception into one readable line; never includes credentials."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, DirectError):
        if exc.transport:
            return RequestError(f"{what}: {exc}", code=exc.code, transport=True)
        return _refused(exc.code, str(exc), what, exc.status)
    if isinstance(exc, bexc.ClientError):
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(err.get("Code", "")) or str(status)
        return _refused(code, str(err.get("Message") or ""), what, status)
    if isinstance(exc, bexc.EndpointConnectionError | bexc.ConnectionClosedError | bexc.ConnectTimeoutError):
        return RequestError(f"{what}: cannot reach the S3 endpoint ({exc})", code="Unreachable", transport=True)
    if isinstance(exc, bexc.ReadTimeoutError | bexc.HTTPClientError):
        return RequestError(f"{what}: connection to S3 failed ({exc})", code="Connection", transport=True)
    if isinstance(exc, bexc.ResponseStreamingError | bexc.IncompleteReadError):
        # The connection broke while a body was read: a transport failure like any other.
        return RequestError(f"{what}: connection to S3 failed ({exc})", code="Connection", transport=True)
    if isinstance(exc, bexc.NoCredentialsError):
        return RequestError(
            f"{what}: no AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set",
            code="NoCredentials",
        )
    if isinstance(exc, bexc.BotoCoreError):
        return RequestError(f"{what}: {exc}", code=type(exc).__name__)
    raise exc


@dataclass(frozen=True, repr=False)
class StaticCredentials:
    """Keys handed over explicitly (the operator tools read them from a Secret); never printed."""

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return "StaticCredentials(<redacted>)"


# Credentials whose keys are at hand without a request (the others, such as an assumed role's, are fetched
# by botocore when first used and come from AWS, not from a person typing them).
_KEYS_AT_HAND = frozenset({"explicit", "env", "shared-credentials-file", "config-file"})


def key_problem(value: str) -> str:
    """Why `value` cannot be an access key id or session token, or "" when it can be. Both travel in a
    request header, which takes printable ASCII only: anything else (a pasted non-breaking space, a
    newline left by `echo` in a Secret, a non-ASCII letter) would fail inside the HTTP library as a
    traceback, or be sent mangled. The value itself is never part of the answer."""
    for position, char in enumerate(value, start=1):
        if char.isascii() and char.isprintable() and char != " ":
            continue
        what = "a space" if char == " " else "a control character" if char.isascii() else "a non-ASCII character"
        return f"holds {what} at position {position}"
    return ""


def check_keys(access_key: str, token: str | None) -> None:
    """A ConfigError naming the variable when the access key id or session token cannot be sent."""
    for name, value in (("AWS_ACCESS_KEY_ID", access_key), ("AWS_SESSION_TOKEN", token or "")):
        problem = key_problem(value)
        if problem:
            raise ConfigError(
                f"{name} {problem}: it is sent in every request's Authorization header, which takes printable "
                "ASCII only (an S3 access key id is letters and digits)"
            )


def _check_credentials(credentials: Any) -> None:
    if credentials is not None and getattr(credentials, "method", "") in _KEYS_AT_HAND:
        check_keys(str(credentials.access_key or ""), credentials.token)


def _make_client(
    settings: S3Settings, static: StaticCredentials | None = None, profile: str | None = None
) -> tuple[Any, Any]:
    import botocore.session  # with the client machinery it pulls in (waiters, docs): only when needed
    from botocore.config import Config

    try:
        # botocore alone: boto3's import costs a no-op run 60 ms
        session = botocore.session.Session(profile=profile) if profile else botocore.session.get_session()
        if static is not None:
            session.set_credentials(static.access_key, static.secret_key, static.session_token)
        credentials = session.get_credentials()
    except bexc.PartialCredentialsError as exc:
        raise ConfigError(
            f"incomplete AWS credentials: {exc.kwargs.get('cred_var', 'a variable')} is not set"
        ) from None
    except bexc.ProfileNotFound as exc:
        raise ConfigError(f"AWS_PROFILE names a profile that does not exist: {exc}") from None
    if credentials is None:
        raise ConfigError("no AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set")
    _check_credentials(credentials)
    config = Config(
        region_name=settings.region,
        # total_max_attempts counts the first request too; botocore's `max_attempts` would add one more.
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        max_pool_connections=settings.max_connections,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        tcp_keepalive=True,
        parameter_validation=False,
        request_checksum_calculation=settings.checksum_mode,
        response_checksum_validation="when_required",
        s3={"addressing_style": "path" if settings.path_style else "auto"},
    )
    client = session.create_client("s3", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config)
    return client, credentials


def _quick_credentials(static: StaticCredentials | None, profile: str | None) -> Any:
    """The credentials botocore's chain would settle on, when finding them needs no session: keys handed
    over, or the environment's keys while no profile is named (the environment comes first in the chain;
    AWS_CREDENTIAL_EXPIRATION makes them refreshable, as in botocore). None: only a session can tell."""
    from botocore.credentials import Credentials, EnvProvider

    if static is not None:
        return Credentials(static.access_key, static.secret_key, static.session_token, method="explicit")
    if profile or os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE"):
        return None
    try:
        return EnvProvider().load()
    except bexc.PartialCredentialsError as exc:
        raise ConfigError(
            f"incomplete AWS credentials: {exc.kwargs.get('cred_var', 'a variable')} is not set"
        ) from None


class _Connection:
    """Credentials, the direct path's base URL, and the botocore client, built on first use only."""

    def __init__(self, settings: S3Settings, static: StaticCredentials | None, profile: str | None) -> None:
        self._args = (settings, static, profile)
        self._lock = threading.Lock()
        self._client: Any = None
        # Content-MD5 is all the default checksum mode sends, so the hot path can skip botocore's
        # per-call machinery; `when_supported` keeps botocore's own checksum handling.
        direct = settings.checksum_mode == "when_required"
        self.credentials = _quick_credentials(static, profile)
        _check_credentials(self.credentials)
        self.base: str | None = direct_base_url(settings) if direct and self.credentials is not None else None
        if self.base is None or _proxied(self.base):
            self._client, self.credentials = _make_client(settings, static, profile)
            proxied = _proxied(self._client.meta.endpoint_url)
            self.base = presigned_base(self._client, settings.bucket) if direct and not proxied else None

    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _make_client(*self._args)[0]
        return self._client


def _read_capped(stream: Any, max_bytes: int, chunk: int = 256 * 1024) -> bytes:
    """At most `max_bytes` + 1 bytes of a body: enough to tell that it is longer than the cap."""
    body = bytearray()
    while len(body) <= max_bytes:
        piece = stream.read(min(chunk, max_bytes + 1 - len(body)))
        if not piece:
            break
        body += piece
    return bytes(body)


def _seconds(value: Any) -> float:
    """A timestamp of a listing: epoch seconds from the direct path, a datetime from botocore."""
    return value if isinstance(value, float) else float(value.timestamp())


def _proxied(endpoint: str) -> bool:
    """True when HTTP(S)_PROXY applies to the endpoint: botocore honours proxies, the hot path does not."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    scheme = urllib.parse.urlsplit(endpoint).scheme
    return bool(urllib.request.getproxies().get(scheme)) and not urllib.request.proxy_bypass(host)


@dataclass(frozen=True)
class PutResult:
    """What S3 answered to a committed PUT or CompleteMultipartUpload."""

    etag: str
    kms: bool  # SSE-KMS ETags are not MD5s, so they cannot be compared


@dataclass(frozen=True)
class ObjectHead:
    """What a HEAD or GET says about one object (or, with a part number, about that part)."""

    key: str
    size: int  # Content-Length: the whole object, or the part asked for
    etag: str  # without quotes, lower case
    last_modified: float
    storage_class: str = "STANDARD"
    restore: str = ""  # x-amz-restore, e.g. 'ongoing-request="false", expiry-date="…"'; empty if never requested
    parts: int = 0  # PartsCount, sent only when a part number was asked for
    encryption: str = ""  # ServerSideEncryption: an aws:kms ETag is not an MD5

    @classmethod
    def from_response(cls, key: str, resp: dict[str, Any]) -> ObjectHead:
        modified = resp.get("LastModified")
        return cls(
            key=key,
            size=int(resp.get("ContentLength") or 0),
            etag=str(resp.get("ETag", "")).strip('"').lower(),
            last_modified=modified.timestamp() if modified is not None else 0.0,
            storage_class=resp.get("StorageClass") or "STANDARD",
            restore=str(resp.get("Restore") or ""),
            parts=int(resp.get("PartsCount") or 0),
            encryption=str(resp.get("ServerSideEncryption") or ""),
        )


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload S3 holds open: started, never completed nor aborted."""

    key: str
    upload_id: str
    initiated: float | None  # epoch seconds, by S3's clock; None when S3 did not say


@dataclass(frozen=True)
class OpenUploads:
    """The open multipart uploads under a prefix, and S3's clock when it answered (the `Date` header of
    the first page; None when S3 sent none), so their age is judged on one clock."""

    uploads: list[OpenUpload]
    server_time: float | None


def _server_time(resp: dict[str, Any]) -> float | None:
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        return None


class ObjectReader:
    """An open GetObject response: its metadata, and the body read chunk by chunk so memory stays flat."""

    def __init__(self, head: ObjectHead, body: Any, what: str, limiter: RateLimiter | None = None) -> None:
        self.head = head
        self._body = body
        self._what = what
        self._limiter = limiter

    def chunks(self, size: int) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._body.read(size)
            except Exception as exc:
                raise describe_error(exc, self._what) from None
            if not chunk:
                return
            if self._limiter is not None:
                self._limiter.take(len(chunk))  # reading slower makes TCP slow the sender down
            yield chunk

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class ObjectStore:
    """S3 operations the engine uses, with errors turned into `StoreError`."""

    def __init__(
        self, settings: S3Settings, *, credentials: StaticCredentials | None = None, profile: str | None = None
    ) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._connection = _Connection(settings, credentials, profile)
        credentials = self._connection.credentials
        # One limiter per direction for the whole run: every worker draws on the same bandwidth.
        self._up = RateLimiter.upload(settings.bwlimit) if settings.bwlimit else None
        self._down = RateLimiter.download(settings.bwlimit) if settings.bwlimit else None
        self._direct = (
            DirectWriter(self._connection.base, credentials, settings, limiter=self._up)
            if self._connection.base is not None
            else None
        )
        self._reader = DirectReader(self._direct) if self._direct is not None else None
        self._counts: dict[str, int] = {}
        self._count_lock = threading.Lock()

    @property
    def _client(self) -> Any:
        """The botocore client: built when a request first needs it, which a quiet night's never do."""
        return self._connection.client()

    def _list_page(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        page = self._reader.list_objects_v2(kwargs) if self._reader is not None else None
        return page if page is not None else self._client.list_objects_v2(**kwargs)

    def _count(self, operation: str) -> None:
        with self._count_lock:
            self._counts[operation] = self._counts.get(operation, 0) + 1

    def paced_bytes(self) -> tuple[int, int]:
        """Bytes sent and received under the bandwidth limit (0, 0 without one)."""
        return (self._up.taken if self._up else 0, self._down.taken if self._down else 0)

    def request_counts(self) -> dict[str, int]:
        """Operations sent (botocore's own retries not included), for the report."""
        with self._count_lock:
            return dict(self._counts)

    # -- listing ----------------------------------------------------------------------------------
    def list_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[RemoteObject]:
        """All objects under `prefix` in key order, one ListObjectsV2 request per 1,000 keys."""
        for page in self.list_pages(prefix, start_after=start_after):
            yield from page

    def list_pages(
        self, prefix: str, *, delimiter: str | None = None, start_after: str | None = None
    ) -> Iterator[list[RemoteObject]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
        if delimiter:
            kwargs["Delimiter"] = delimiter  # only the objects directly under the prefix
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            try:
                self._count("ListObjectsV2")
                page = self._list_page(kwargs)
            except Exception as exc:
                raise describe_error(exc, f"listing s3://{self.bucket}/{prefix}") from None
            yield [
                RemoteObject(
                    key=item["Key"],
                    size=int(item["Size"]),
                    last_modified=_seconds(item["LastModified"]),
                    etag=str(item.get("ETag", "")).strip('"').lower(),
                    storage_class=item.get("StorageClass") or "STANDARD",
                )
                for item in page.get("Contents", ())
            ]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token
            kwargs.pop("StartAfter", None)

    def list_folders(self, prefix: str, *, first_page_only: bool = False) -> Iterator[str]:
        """Names of the "folders" directly under `prefix` (the CommonPrefixes of a delimited listing)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": 1000}
        while True:
            try:
                self._count("ListObjectsV2")
                page = self._list_page(kwargs)
            except Exception as exc:
                raise describe_error(exc, f"listing s3://{self.bucket}/{prefix}") from None
            for common in page.get("CommonPrefixes") or ():
                yield str(common["Prefix"])[len(prefix) :].rstrip("/")
            token = page.get("NextContinuationToken")
            if first_page_only or not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def list_versions(self, prefix: str, *, page_size: int = 1000) -> Iterator[list[ObjectVersion]]:
        """Every version and delete marker under `prefix` (s3:ListBucketVersions), one ListObjectVersions
        request per `page_size` entries; each page in key order, each key's newest entry first."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page_size}
        while True:
            try:
                self._count("ListObjectVersions")
                page = self._client.list_object_versions(**kwargs)
            except Exception as exc:
                raise describe_error(exc, f"listing the versions of s3://{self.bucket}/{prefix}") from None
            yield page_versions(page)
            key, version = page.get("NextKeyMarker"), page.get("NextVersionIdMarker")
            if not page.get("IsTruncated") or not key:
                return
            kwargs["KeyMarker"] = key
            if version:
                kwargs["VersionIdMarker"] = version
            else:
                kwargs.pop("VersionIdMarker", None)

    def prefetch(self, prefix: str, pages: int = 4, *, delimiter: str | None = None) -> PrefetchedListing:
        return PrefetchedListing(self.list_pages(prefix, delimiter=delimiter), capacity=pages)

    def check_access(self, prefix: str) -> None:
        """One cheap listing up front, so a wrong bucket or key fails before any work starts."""
        try:
            self._count("ListObjectsV2")
            self._list_page({"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1})
        except Exception as exc:
            err = describe_error(exc, f"s3://{self.bucket}")
            raise SetupError(str(err), code=err.code, transport=err.transport) from None

    def bucket_versioning(self) -> str:
        """`Enabled`, `Suspended` or `Off` (never enabled): whether an overwrite leaves the old bytes
        behind as a noncurrent version (s3:GetBucketVersioning, which cannot change anything)."""
        try:
            self._count("GetBucketVersioning")
            status = self._reader.bucket_versioning() if self._reader is not None else None
            if status is None:
                status = str(self._client.get_bucket_versioning(Bucket=self.bucket).get("Status", ""))
        except Exception as exc:
            raise describe_error(exc, f"reading the versioning state of s3://{self.bucket}") from None
        return status if status in ("Enabled", "Suspended") else "Off"

    def list_multipart_uploads(self, prefix: str, *, page_size: int = 1000) -> OpenUploads:
        """Every open multipart upload under `prefix` (s3:ListBucketMultipartUploads), page by page."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxUploads": page_size}
        uploads: list[OpenUpload] = []
        server_time: float | None = None
        first = True
        while True:
            try:
                self._count("ListMultipartUploads")
                page = self._reader.list_multipart_uploads(kwargs) if self._reader is not None else None
                if page is None:
                    page = self._client.list_multipart_uploads(**kwargs)
            except Exception as exc:
                raise describe_error(exc, f"listing the multipart uploads of s3://{self.bucket}/{prefix}") from None
            if first:
                server_time, first = _server_time(page), False
            for item in page.get("Uploads") or ():
                started = item.get("Initiated")
                when = _seconds(started) if started is not None else None
                uploads.append(OpenUpload(str(item["Key"]), str(item["UploadId"]), when))
            key, upload_id = page.get("NextKeyMarker"), page.get("NextUploadIdMarker")
            if not page.get("IsTruncated") or not (key or upload_id):
                return OpenUploads(uploads, server_time)
            kwargs["KeyMarker"], kwargs["UploadIdMarker"] = key or "", upload_id or ""

    # -- writing ----------------------------------------------------------------------------------
    def put_object(self, key: str, body: bytes, md5: bytes, storage_class: str | None) -> PutResult:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentMD5": base64.b64encode(md5).decode(),
            "ContentLength": len(body),
        }
        if storage_class:
            kwargs["StorageClass"] = storage_class
        try:
            self._count("PutObject")
            if self._direct is not None:
                headers = {"x-amz-storage-class": storage_class} if storage_class else None
                got = self._direct.put(key, body, kwargs["ContentMD5"], headers)
                return PutResult(
                    str(got.get("ETag", "")).strip('"').lower(), _kms(got.get("x-amz-server-side-encryption"))
                )
            if self._up is not None:
                self._up.hold(len(body))
            resp = self._client.put_object(**kwargs)
        except Exception as exc:
            raise describe_error(exc, f"uploading {key}") from None
        return PutResult(str(resp.get("ETag", "")).strip('"').lower(), _kms(resp.get("ServerSideEncryption")))

    def create_multipart(self, key: str, storage_class: str | None) -> str:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if storage_class:
            kwargs["StorageClass"] = storage_class
        try:
            self._count("CreateMultipartUpload")
            return str(self._client.create_multipart_upload(**kwargs)["UploadId"])
        except Exception as exc:
            raise describe_error(exc, f"starting multipart upload of {key}") from None

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes, md5: bytes) -> str:
        md5_b64 = base64.b64encode(md5).decode()
        try:
            self._count("UploadPart")
            if self._direct is not None:
                query = urllib.parse.urlencode({"partNumber": number, "uploadId": upload_id})
                return str(self._direct.put(key, body, md5_b64, query=query).get("ETag", ""))
            if self._up is not None:
                self._up.hold(len(body))
            resp = self._client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=md5_b64,
                ContentLength=len(body),
            )
        except Exception as exc:
            raise describe_error(exc, f"uploading part {number} of {key}") from None
        return str(resp["ETag"])

    def complete_multipart(self, key: str, upload_id: str, part_etags: list[str]) -> PutResult:
        parts = [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(part_etags, start=1)]
        try:
            self._count("CompleteMultipartUpload")
            resp = self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except Exception as exc:
            raise describe_error(exc, f"completing multipart upload of {key}") from None
        return PutResult(str(resp.get("ETag", "")).strip('"').lower(), _kms(resp.get("ServerSideEncryption")))

    def listed_etag(self, key: str) -> str | None:
        """The ETag a listing shows for exactly `key` (None: not listed). For servers that commit an
        upload but answer without its ETag (Ceph RGW's CompleteMultipartUpload): the writer may list,
        never read, so a listing is how it confirms what was stored."""
        for page in self.list_pages(key):
            for obj in page:
                if obj.key == key:
                    return obj.etag
                if obj.key > key:
                    return None
            return None  # the exact key sorts first under its own prefix
        return None

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self._count("AbortMultipartUpload")
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:
            raise describe_error(exc, f"aborting multipart upload of {key}") from None

    # -- reading (reports only; needs read credentials) -------------------------------------------
    def get_bytes(self, key: str, *, max_bytes: int | None = None, what: str = "object") -> bytes:
        """The whole body of a small object: a run report, a files cache, a backup.info.

        Everything read from the bucket is untrusted, and the size a listing showed may no longer hold by
        the time of the GET (or no listing sized the object at all). With `max_bytes`, reading stops one
        byte past the cap and an `ObjectTooLarge` naming `what`, the object and the cap is raised: memory
        never holds more than the cap, however large the object is."""
        try:
            self._count("GetObject")
            body = self._reader.get_object(key, max_bytes) if self._reader is not None else None
            if body is None:
                stream = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
                try:
                    body = stream.read() if max_bytes is None else _read_capped(stream, max_bytes)
                finally:
                    stream.close()
        except Exception as exc:
            raise describe_error(exc, f"reading s3://{self.bucket}/{key}") from None
        if max_bytes is not None and len(body) > max_bytes:
            raise ObjectTooLarge.of(what, f"s3://{self.bucket}/{key}", max_bytes)
        return bytes(body)

    # -- restoring (read-only credentials: s3:GetObject, s3:ListBucket, s3:RestoreObject) -----------
    def head_object(self, key: str, *, part_number: int | None = None, version_id: str | None = None) -> ObjectHead:
        """HEAD needs only s3:GetObject; with `part_number` the size is that part's, which is how the
        part size of a multipart object that no manifest describes is learned. `version_id` names one
        version of a versioned object (s3:GetObjectVersion)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if part_number is not None:
            kwargs["PartNumber"] = part_number
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            self._count("HeadObject")
            resp = self._client.head_object(**kwargs)
        except Exception as exc:
            raise describe_error(exc, f"reading the metadata of s3://{self.bucket}/{key}") from None
        return ObjectHead.from_response(key, resp)

    def open_object(self, key: str, *, if_match: str | None = None, version_id: str | None = None) -> ObjectReader:
        """Start a GET and return the streaming body. `if_match` makes S3 refuse (PreconditionFailed)
        when the object is no longer the one listed, so the bytes can only be that object's.
        `version_id` reads that version (s3:GetObjectVersion), which no later write can change."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_match:
            kwargs["IfMatch"] = f'"{if_match}"'
        if version_id:
            kwargs["VersionId"] = version_id
        what = f"downloading s3://{self.bucket}/{key}"
        try:
            self._count("GetObject")
            resp = self._client.get_object(**kwargs)
        except Exception as exc:
            raise describe_error(exc, what) from None
        return ObjectReader(ObjectHead.from_response(key, resp), resp["Body"], what, self._down)

    def restore_object(self, key: str, *, days: int | None, tier: str, version_id: str | None = None) -> bool:
        """Ask S3 for a readable copy of an archived object. True when a restore was started (202);
        False when a restored copy is already there (200, S3 only extends its expiry). A restore
        still running is refused with code RestoreAlreadyInProgress. `days` is None for the archive
        tiers of INTELLIGENT_TIERING, which move the object back instead of copying it."""
        request: dict[str, Any] = {"GlacierJobParameters": {"Tier": tier}}
        if days is not None:
            request["Days"] = days
        try:
            self._count("RestoreObject")
            extra = {"VersionId": version_id} if version_id else {}
            resp = self._client.restore_object(Bucket=self.bucket, Key=key, RestoreRequest=request, **extra)
        except Exception as exc:
            raise describe_error(exc, f"requesting the restore of s3://{self.bucket}/{key}") from None
        return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 202)) != 200
