"""Proof that the `.env`'s keys work before they go into the cluster (`setup --check-s3`).

The writer lists the media prefix and writes a marker under the run reports (where its policy allows
puts); the restorer, when given, lists the media prefix and reads the marker back. A refusal becomes one
line naming the variable to fix, never the key itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

from immich_tui.services import clock
from immich_tui.services.setup.config import (
    ACCESS_KEY,
    REGION,
    RESTORER_ACCESS_KEY,
    RESTORER_SECRET_KEY,
    SECRET_KEY,
    OffsiteConfig,
)
from immich_tui.services.setup.errors import S3CheckError
from sync_engine.config import ConfigError, S3Settings
from sync_engine.report import stamp
from sync_engine.store import ObjectStore, StaticCredentials, StoreError


@dataclass(frozen=True)
class S3Check:
    """What the keys proved: the writer listed the media prefix and wrote `marker`; the restorer (when
    given) listed the media prefix and read the marker back."""

    bucket: str
    media_prefix: str
    marker: str
    restorer: bool


def marker_key(config: OffsiteConfig, now: dt.datetime) -> str:
    """Under the run reports, where the writer's policy allows puts. Not `.json`: nothing that reads run
    reports may take it for one."""
    return f"{config.report_prefix}setup-check/{stamp(now.timestamp())}-{uuid.uuid4().hex[:8]}.marker"


def _reason(exc: StoreError, id_var: str, secret_var: str, region_var: str = REGION) -> str:
    reasons = {
        "InvalidAccessKeyId": f"S3 does not know the access key in {id_var}",
        "SignatureDoesNotMatch": f"S3 rejected the signature: {secret_var} is wrong",
        "AccessDenied": "access denied",
        "403": "access denied",
        "NoSuchBucket": "the bucket does not exist",
        "PermanentRedirect": f"the bucket is not in {region_var}",
        "301": f"the bucket is not in {region_var}",
        "AuthorizationHeaderMalformed": f"the bucket is not in {region_var}",
    }
    text = reasons.get(exc.code)
    return f"{text} ({exc.code})" if text else str(exc).split(": ", 1)[-1]


def _store(config: OffsiteConfig, keys: StaticCredentials) -> ObjectStore:
    settings = S3Settings(
        bucket=config.bucket,
        region=config.region,
        endpoint_url=config.endpoint_url,
        max_attempts=2,
        connect_timeout=5.0,
        read_timeout=30.0,
        max_connections=2,
    )
    try:
        return ObjectStore(settings, credentials=keys)
    except ConfigError as exc:
        raise S3CheckError(f"S3 check: {exc}") from None


def check_s3(config: OffsiteConfig, now: dt.datetime | None = None) -> S3Check:
    """Prove the keys before anything is applied: the writer lists and puts, the restorer lists and reads."""
    now = now or clock.now()
    where = f"s3://{config.bucket}/{config.media_prefix}"
    writer = _store(config, config.writer)
    try:
        writer.check_access(config.media_prefix)
    except StoreError as exc:
        raise S3CheckError(
            f"S3 check: the writer keys cannot list {where}: {_reason(exc, ACCESS_KEY, SECRET_KEY)}"
        ) from None
    key = marker_key(config, now)
    body = json.dumps(
        {
            "written_by": "kubectl immich-backup setup --check-s3",
            "at": clock.iso(now),
            "bucket": config.bucket,
            "media_prefix": config.media_prefix,
        },
        indent=2,
    ).encode()
    try:
        writer.put_object(key, body, hashlib.md5(body, usedforsecurity=False).digest(), None)
    except StoreError as exc:
        raise S3CheckError(
            f"S3 check: the writer keys cannot write s3://{config.bucket}/{key}: {_reason(exc, ACCESS_KEY, SECRET_KEY)}"
        ) from None
    if config.restorer is None:
        return S3Check(config.bucket, config.media_prefix, key, restorer=False)
    restorer = _store(config, config.restorer)
    ids = (RESTORER_ACCESS_KEY, RESTORER_SECRET_KEY)
    try:
        restorer.check_access(config.media_prefix)
    except StoreError as exc:
        raise S3CheckError(f"S3 check: the restorer keys cannot list {where}: {_reason(exc, *ids)}") from None
    try:
        read = restorer.get_bytes(key)
    except StoreError as exc:
        raise S3CheckError(
            f"S3 check: the restorer keys cannot read s3://{config.bucket}/{key}: {_reason(exc, *ids)}"
        ) from None
    if read != body:
        raise S3CheckError(f"S3 check: the restorer read back different bytes from s3://{config.bucket}/{key}")
    return S3Check(config.bucket, config.media_prefix, key, restorer=True)
