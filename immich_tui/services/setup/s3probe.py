"""Proof that the `.env`'s keys work, and that the bucket keeps old versions, before anything goes into the
cluster (`setup --check-s3`).

The writer lists the media prefix; the archiver lists the database archive's prefix; the restorer, when
given, lists the media prefix; the viewer, when given, lists the run reports and is refused a GET under
the media prefix (of a key that does not exist: S3 answers AccessDenied before it looks for the key when
reading is not allowed, and NoSuchKey when the keys may both list and read there, as the restorer's
policy does; a viewer that could download photos would defeat its purpose, so that stops setup). Then
the writer's keys read the bucket's protection — versioning (`s3:GetBucketVersioning`) and Object Lock
(`s3:GetBucketObjectLockConfiguration`): the writer reads the versioning state on every run anyway, both
reads change nothing, and so the restorer's policy stays exactly what a restore needs. A bucket whose
versioning is not Enabled stops setup unless the operator accepted that (`allow_unversioned`). Only then
does the writer write a marker under the run reports, which the restorer and the viewer read back. A
refusal becomes one line naming the variable to fix, never the key.

A dry run writes nothing anywhere and read-only mode refuses every write, the bucket's too
(`skip_write`): then no marker is put, and the restorer's and the viewer's reads are proven on a marker
key that does not exist instead. S3 checks authorisation before it looks for the key, so NoSuchKey means
s3:GetObject is allowed and AccessDenied that it is not. The writer's put stays unproven, which the
result says.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from immich_tui.services import clock
from immich_tui.services.setup.config import (
    ACCESS_KEY,
    ARCHIVER_ACCESS_KEY,
    ARCHIVER_SECRET_KEY,
    REGION,
    RESTORER_ACCESS_KEY,
    RESTORER_SECRET_KEY,
    SECRET_KEY,
    VIEWER_ACCESS_KEY,
    VIEWER_SECRET_KEY,
    OffsiteConfig,
)
from immich_tui.services.setup.errors import S3CheckError
from sync_engine.config import ConfigError, S3Settings
from sync_engine.report import stamp
from sync_engine.store import ObjectStore, StaticCredentials, StoreError, describe_error

NEVER_ENABLED = "never enabled"
NOT_SUPPORTED = "not supported by the server"
# What a server answers for a bucket without Object Lock, or when it has no Object Lock at all.
_LOCK_OFF_CODES = ("ObjectLockConfigurationNotFoundError", "NotImplemented", "501")


@dataclass(frozen=True)
class BucketProtection:
    """The bucket's versioning state (`Enabled`, `Suspended`, `never enabled`, `not supported by the
    server`) and Object Lock: `object_lock` None when it could not be read (`lock_note` says why)."""

    versioning: str
    object_lock: bool | None
    lock_mode: str | None = None  # GOVERNANCE | COMPLIANCE: the default retention, when one is set
    lock_days: int | None = None
    lock_years: int | None = None
    read_with: str = "writer"
    lock_note: str = ""

    @property
    def versioned(self) -> bool:
        return self.versioning == "Enabled"

    def describe(self) -> str:
        if self.object_lock is None:
            lock = f"Object Lock not read ({self.lock_note})"
        elif not self.object_lock:
            lock = "Object Lock off"
        elif self.lock_mode:
            count, unit = (self.lock_years, "year") if self.lock_years else (self.lock_days, "day")
            period = f"{count} {unit}{'' if count == 1 else 's'}"
            lock = f"Object Lock on, default retention {self.lock_mode} {period}"
        else:
            lock = "Object Lock on, no default retention"
        return f"versioning {self.versioning}; {lock} (read with the {self.read_with} keys)"


@dataclass(frozen=True)
class S3Check:
    """What the keys proved: the writer listed the media prefix and wrote `marker`; the archiver listed
    `archive_prefix`; the restorer (when given) listed the media prefix and read the marker back; the viewer
    (when given, `viewer`) listed `report_prefix`, read the marker back and was refused a read under the
    media prefix; and how the bucket is protected. With `write_skipped` (why: `--dry-run`, `read-only
    mode`) `marker` is None: nothing was written and the readers read a key that does not exist under
    `report_prefix`.
    `warnings` are for the operator (versioning off but accepted, a state that could not be read)."""

    bucket: str
    media_prefix: str
    marker: str | None
    restorer: bool
    archive_prefix: str = ""
    protection: BucketProtection | None = None
    warnings: tuple[str, ...] = field(default=(), repr=False)
    write_skipped: str = ""
    report_prefix: str = ""
    viewer: bool = False  # listed the run reports, read the marker (or the missing key), refused a media GET


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
    try:
        return ObjectStore(_settings(config), credentials=keys)
    except ConfigError as exc:  # the engine names its setting first; what follows may quote a value
        raise S3CheckError(f"S3 check: the sync engine refuses {str(exc).split(':', 1)[0]}") from None


def _settings(config: OffsiteConfig) -> S3Settings:
    return S3Settings(
        bucket=config.bucket,
        region=config.region,
        endpoint_url=config.endpoint_url,
        max_attempts=2,
        connect_timeout=5.0,
        read_timeout=30.0,
        max_connections=2,
    )


def _bucket_client(config: OffsiteConfig, keys: StaticCredentials) -> Any:
    """A plain botocore client for the two bucket-level reads the sync engine's store has no call for."""
    import botocore.session
    from botocore.config import Config

    settings = _settings(config)
    session = botocore.session.get_session()
    session.set_credentials(keys.access_key, keys.secret_key)
    return session.create_client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        ),
    )


def state_text(bucket: str, versioning: str) -> str:
    if versioning == NEVER_ENABLED:
        return f"versioning was never enabled on bucket {bucket}"
    if versioning == NOT_SUPPORTED:
        return f"the server does not support versioning for bucket {bucket}"
    return f"versioning is {versioning} on bucket {bucket}"


def read_protection(config: OffsiteConfig) -> BucketProtection:
    """Versioning and Object Lock, read with the writer's keys (deploy/iam/media-writer.json grants both)."""
    who, keys, ids = "writer", config.writer, (ACCESS_KEY, SECRET_KEY)
    client = _bucket_client(config, keys)
    where = f"s3://{config.bucket}"
    try:
        status = client.get_bucket_versioning(Bucket=config.bucket).get("Status") or NEVER_ENABLED
    except Exception as exc:
        err = describe_error(exc, where)
        if err.code not in ("NotImplemented", "501"):
            raise S3CheckError(
                f"S3 check: the {who} keys cannot read the versioning state of {where} (s3:GetBucketVersioning): "
                f"{_reason(err, *ids)}"
            ) from None
        status = NOT_SUPPORTED
    try:
        lock = client.get_object_lock_configuration(Bucket=config.bucket).get("ObjectLockConfiguration") or {}
    except Exception as exc:
        err = describe_error(exc, where)
        if err.code in _LOCK_OFF_CODES:
            return BucketProtection(status, False, read_with=who)
        note = f"s3:GetBucketObjectLockConfiguration: {_reason(err, *ids)}"
        return BucketProtection(status, None, read_with=who, lock_note=note)
    if lock.get("ObjectLockEnabled") != "Enabled":
        return BucketProtection(status, False, read_with=who)
    retention = (lock.get("Rule") or {}).get("DefaultRetention") or {}
    return BucketProtection(
        status,
        True,
        lock_mode=retention.get("Mode") or None,
        lock_days=retention.get("Days") or None,
        lock_years=retention.get("Years") or None,
        read_with=who,
    )


def check_s3(
    config: OffsiteConfig,
    now: dt.datetime | None = None,
    *,
    allow_unversioned: bool = False,
    skip_write: str = "",
) -> S3Check:
    """Prove the keys and the bucket's versioning before anything is applied: the writer, the archiver and
    the restorer list, the viewer lists the run reports and is refused a media read; versioning must be
    Enabled (unless `allow_unversioned`); then the writer puts a marker and the restorer and the viewer
    read it back. Nothing is written to the bucket when versioning stops setup, nor at all with
    `skip_write` (why nothing may be written: `--dry-run`, `read-only mode`), when the readers' reads are
    proven on a key that does not exist."""
    now = now or clock.now()
    where = f"s3://{config.bucket}/{config.media_prefix}"
    writer = _store(config, config.writer)
    try:
        writer.check_access(config.media_prefix)
    except StoreError as exc:
        raise S3CheckError(
            f"S3 check: the writer keys cannot list {where}: {_reason(exc, ACCESS_KEY, SECRET_KEY)}"
        ) from None
    archive = f"s3://{config.bucket}/{config.archive_prefix}"
    try:
        _store(config, config.archiver).check_access(config.archive_prefix)
    except StoreError as exc:
        raise S3CheckError(
            f"S3 check: the archiver keys cannot list {archive}: "
            f"{_reason(exc, ARCHIVER_ACCESS_KEY, ARCHIVER_SECRET_KEY)}"
        ) from None
    restorer = _store(config, config.restorer) if config.restorer is not None else None
    ids = (RESTORER_ACCESS_KEY, RESTORER_SECRET_KEY)
    if restorer is not None:
        try:
            restorer.check_access(config.media_prefix)
        except StoreError as exc:
            raise S3CheckError(f"S3 check: the restorer keys cannot list {where}: {_reason(exc, *ids)}") from None

    key = marker_key(config, now)
    viewer = _store(config, config.viewer) if config.viewer is not None else None
    if viewer is not None:
        _check_viewer(config, viewer, key)

    protection = read_protection(config)
    warnings: list[str] = []
    if not protection.versioned:
        state = state_text(config.bucket, protection.versioning)
        if not allow_unversioned:
            raise S3CheckError(
                f"S3 check: {state}, so an overwrite or a delete would destroy the only offsite copy: enable it "
                f"(aws s3api put-bucket-versioning --bucket {config.bucket} --versioning-configuration "
                "Status=Enabled; see deploy/README.md) or accept that with --allow-unversioned"
            )
        warnings.append(
            f"{state}, accepted with --allow-unversioned: an overwrite or a delete (a leaked writer or archiver "
            "key, a mistake) replaces or removes the only offsite copy, and no earlier version can be restored"
        )
    if protection.object_lock is None:
        warnings.append(f"Object Lock state of bucket {config.bucket} unknown: {protection.lock_note}")

    if skip_write:
        if restorer is not None:
            _prove_read(config, restorer, key)
        if viewer is not None:
            _prove_read(config, viewer, key, "viewer", (VIEWER_ACCESS_KEY, VIEWER_SECRET_KEY))
        return S3Check(
            config.bucket,
            config.media_prefix,
            None,
            restorer is not None,
            config.archive_prefix,
            protection,
            tuple(warnings),
            write_skipped=skip_write,
            report_prefix=config.report_prefix,
            viewer=viewer is not None,
        )
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
    readers = [("restorer", restorer, ids), ("viewer", viewer, (VIEWER_ACCESS_KEY, VIEWER_SECRET_KEY))]
    for who, store, who_ids in readers:
        if store is None:
            continue
        try:
            read = store.get_bytes(key)
        except StoreError as exc:
            raise S3CheckError(
                f"S3 check: the {who} keys cannot read s3://{config.bucket}/{key}: {_reason(exc, *who_ids)}"
            ) from None
        if read != body:
            raise S3CheckError(f"S3 check: the {who} read back different bytes from s3://{config.bucket}/{key}")
    return S3Check(
        config.bucket,
        config.media_prefix,
        key,
        restorer is not None,
        config.archive_prefix,
        protection,
        tuple(warnings),
        report_prefix=config.report_prefix,
        viewer=viewer is not None,
    )


_MISSING = ("NoSuchKey", "404", "NotFound")


def _prove_read(
    config: OffsiteConfig,
    reader: ObjectStore,
    key: str,
    who: str = "restorer",
    ids: tuple[str, str] = (RESTORER_ACCESS_KEY, RESTORER_SECRET_KEY),
) -> None:
    """A reader's s3:GetObject without a marker to read: a key that does not exist answers NoSuchKey
    when reading is allowed (the reader may list the run reports, so S3 does not hide the key's absence
    behind a 403) and AccessDenied when it is not."""
    try:
        reader.get_bytes(key)
    except StoreError as exc:
        if exc.code in _MISSING:
            return
        raise S3CheckError(
            f"S3 check: the {who} keys cannot read s3://{config.bucket}/{key}: {_reason(exc, *ids)}"
        ) from None


def media_probe_key(config: OffsiteConfig, marker: str) -> str:
    """A key under the media prefix that nothing writes: the marker's name moved there."""
    return f"{config.media_prefix}{marker[len(config.report_prefix) :]}"


def _check_viewer(config: OffsiteConfig, viewer: ObjectStore, marker: str) -> None:
    """The viewer lists the run reports (all that status and the offsite totals need), and may not read a
    photo. The second is asked with a GET of a media key that does not exist, which costs one request and
    writes nothing: AccessDenied means reading there is not allowed. NoSuchKey means the keys may list
    and read the media, as keys with the restorer's policy may; S3 answers AccessDenied for a missing key
    whenever the keys may not list it, so a policy that reads the media but lists nothing there is not
    caught by this."""
    ids = (VIEWER_ACCESS_KEY, VIEWER_SECRET_KEY)
    reports = f"s3://{config.bucket}/{config.report_prefix}"
    try:
        viewer.check_access(config.report_prefix)
    except StoreError as exc:
        raise S3CheckError(f"S3 check: the viewer keys cannot list {reports}: {_reason(exc, *ids)}") from None
    probe = media_probe_key(config, marker)
    try:
        viewer.get_bytes(probe)
    except StoreError as exc:
        if exc.code in ("AccessDenied", "403"):
            return
        if exc.code not in _MISSING:
            raise S3CheckError(
                f"S3 check: the viewer keys could not be checked against s3://{config.bucket}/{probe}: "
                f"{_reason(exc, *ids)}"
            ) from None
    raise S3CheckError(
        f"S3 check: the viewer keys may read under s3://{config.bucket}/{config.media_prefix} (a key that does "
        "not exist there answered NoSuchKey, not AccessDenied), so they could download every photo: give the "
        "viewer's IAM user deploy/iam/viewer.json only"
    )
