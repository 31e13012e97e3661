"""The offsite Secrets, made from a `.env` file and kept in step with it.

The `.env` holds the `OFFSITE_BACKUP_*` variables. From them come `immich-offsite-writer` — in the
Immich namespace for the nightly sync, and in the database namespace, where CNPG's `s3Credentials`
reference it — and `immich-offsite-restorer` in the Immich namespace: read-only keys for the operator
tools and the media restore Job. Both carry the keys the engine reads (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `BUCKET_NAME`, `MEDIA_PREFIX`, optional `AWS_ENDPOINT_URL_S3`).

Every problem is one line that names the variable; no value ever appears in a message. A Secret is
written only when what it holds differs from the `.env`, nothing is ever deleted, and every write goes
through `Kube.write` (read-only mode, then RBAC).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import difflib
import hashlib
import json
import re
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immich_tui.services import clock
from immich_tui.services.kube import Access, ClusterError, Forbidden, Kube, NotFound, ReadOnly
from immich_tui.services.offsite import READER_SECRET, WRITER_SECRET
from sync_engine.config import ConfigError, S3Settings, default_report_prefix, normalize_prefix, s3_settings
from sync_engine.report import stamp
from sync_engine.store import ObjectStore, StaticCredentials, StoreError

PREFIX = "OFFSITE_BACKUP_"
DEFAULT_MEDIA_PREFIX = "immich/media/"

ACCESS_KEY = "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID"
SECRET_KEY = "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY"
REGION = "OFFSITE_BACKUP_AWS_REGION"
BUCKET = "OFFSITE_BACKUP_BUCKET_NAME"
MEDIA_PREFIX = "OFFSITE_BACKUP_MEDIA_PREFIX"
RESTORER_ACCESS_KEY = "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID"
RESTORER_SECRET_KEY = "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY"
ENDPOINT = "OFFSITE_BACKUP_ENDPOINT_URL"

# Every variable setup understands; any other OFFSITE_BACKUP_* name is a typo and refused.
VARIABLES: dict[str, str] = {
    ACCESS_KEY: "writer access key ID (s3:PutObject, s3:AbortMultipartUpload, s3:ListBucket)",
    SECRET_KEY: "writer secret access key",
    REGION: "bucket region, e.g. eu-central-1",
    BUCKET: "bucket name",
    MEDIA_PREFIX: f"key prefix of the media (default {DEFAULT_MEDIA_PREFIX})",
    RESTORER_ACCESS_KEY: "restorer access key ID, read-only (s3:GetObject, s3:ListBucket, s3:RestoreObject)",
    RESTORER_SECRET_KEY: "restorer secret access key",
    ENDPOINT: "S3-compatible endpoint (MinIO, Ceph, Garage, B2, …); unset for AWS",
}
REQUIRED = (ACCESS_KEY, SECRET_KEY, REGION, BUCKET)
CREDENTIALS = (ACCESS_KEY, SECRET_KEY, RESTORER_ACCESS_KEY, RESTORER_SECRET_KEY)

LABELS = {"app.kubernetes.io/managed-by": "immich-backup", "app.kubernetes.io/part-of": "immich-offsite-backup"}
# The Secret keys setup owns. Other keys someone added by hand are left as they are.
MANAGED_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "BUCKET_NAME", "MEDIA_PREFIX")
ENDPOINT_KEY = "AWS_ENDPOINT_URL_S3"
MERGE_PATCH = "application/merge-patch+json"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AWS_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_OTHER_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # S3-compatible stores: `auto`, `garage`, …
_AWS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
_AWS_SECRET = re.compile(r"[A-Za-z0-9/+]{40}")


class SetupError(ClusterError):
    """Setup cannot go on; the one-line message names what to fix and never holds a value."""


class EnvFileError(SetupError):
    """The `.env` file is missing, unreadable, malformed, or a variable in it is wrong."""


class S3CheckError(SetupError):
    """The keys could not do in the bucket what the sync or the restore will need."""


# The .env file ---------------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    """The file's variables. Only the file counts: the shell's environment never fills a gap."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EnvFileError(f"env file {path} does not exist (start from .env.example)") from None
    except IsADirectoryError:
        raise EnvFileError(f"env file {path} is a directory") from None
    except OSError as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EnvFileError(f"{path}:{line}: not valid UTF-8") from None
    return parse_env(text, str(path))


def parse_env(text: str, source: str = ".env") -> dict[str, str]:
    """`NAME=VALUE` lines as shells and Docker Compose write them: blank lines, `#` comments, an optional
    `export `, values bare (a ` #` starts a comment) or in single (literal) or double quotes (`\\"` and
    `\\\\` escaped). Anything else is refused rather than guessed, and no message quotes the line: it
    may hold a key."""
    values: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("export ", "export\t")):
            line = line[len("export") :].lstrip()
        name, sep, rest = line.partition("=")
        name = name.strip()
        where = f"{source}:{number}"
        if not sep or not _NAME.fullmatch(name):
            raise EnvFileError(f"{where}: expected NAME=VALUE")
        if name in seen and name.startswith(PREFIX):
            raise EnvFileError(f"{where}: {name} is set twice (also on line {seen[name]})")
        seen[name] = number
        values[name] = _value(rest, where, name)
    return values


def _value(rest: str, where: str, name: str) -> str:
    text = rest.strip()
    if text[:1] in ('"', "'"):
        quote, chars, i = text[0], [], 1
        while i < len(text):
            ch = text[i]
            if quote == '"' and ch == "\\" and text[i + 1 : i + 2] in ('"', "\\"):
                chars.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                tail = text[i + 1 :].strip()
                if tail and not tail.startswith("#"):
                    raise EnvFileError(f"{where}: unexpected text after the closing quote of {name}")
                return "".join(chars)
            chars.append(ch)
            i += 1
        raise EnvFileError(f"{where}: the value of {name} has no closing {quote}")
    return re.split(r"(?:^|\s)#", rest, maxsplit=1)[0].strip()


def env_file_warnings(path: Path) -> list[str]:
    """The `.env` holds both key pairs: one that others can read is worth a word."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return []
    if mode & 0o077:
        return [f"{path} is readable by other users (mode {mode:04o}) and holds S3 keys: chmod 600 {path}"]
    return []


# Validation ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OffsiteConfig:
    """The validated `.env`. Keys live only in `StaticCredentials`, whose repr never shows them."""

    bucket: str
    region: str
    media_prefix: str
    endpoint_url: str | None
    writer: StaticCredentials = field(repr=False)
    restorer: StaticCredentials | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def report_prefix(self) -> str:
        return default_report_prefix(self.media_prefix)

    def secret_values(self) -> list[str]:
        """Every key and secret, so output can be checked and scrubbed against them."""
        keys = [self.writer] + ([self.restorer] if self.restorer else [])
        return [v for k in keys for v in (k.access_key, k.secret_key)]

    def secret_data(self, keys: StaticCredentials) -> dict[str, str]:
        data = {
            "AWS_ACCESS_KEY_ID": keys.access_key,
            "AWS_SECRET_ACCESS_KEY": keys.secret_key,
            "AWS_REGION": self.region,
            "BUCKET_NAME": self.bucket,
            "MEDIA_PREFIX": self.media_prefix,
        }
        if self.endpoint_url:
            data[ENDPOINT_KEY] = self.endpoint_url
        return data


def credential_values(values: Mapping[str, str]) -> list[str]:
    """The raw key values of a parsed file, for scrubbing messages before the file is validated."""
    return [values[name] for name in CREDENTIALS if len(values.get(name, "").strip()) >= 4]


def load_config(values: Mapping[str, str], source: str = ".env") -> OffsiteConfig:
    """Validate the `OFFSITE_BACKUP_*` variables; other variables in the file belong to others and are ignored."""
    ours = {k: v for k, v in values.items() if k.startswith(PREFIX)}
    for name in sorted(ours):
        if name not in VARIABLES:
            close = difflib.get_close_matches(name, list(VARIABLES), n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}?" if close else "see .env.example for the variables"
            raise EnvFileError(f"{name} in {source} is not a setup variable ({hint})")
    for name in VARIABLES:
        if name in ours and not ours[name].strip():
            raise EnvFileError(f"{name} is empty in {source} (remove the line to leave it unset)")
    for name in REQUIRED:
        if name not in ours:
            raise EnvFileError(f"{name} is not set in {source}")

    endpoint = ours.get(ENDPOINT)
    if endpoint is not None:
        endpoint = endpoint.strip()
        if "@" in endpoint.split("//", 1)[-1].split("/", 1)[0]:
            raise EnvFileError(
                f"{ENDPOINT} must not carry credentials (user:password@); the keys have their own variables"
            )
        if not _engine_accepts({"AWS_ENDPOINT_URL_S3": endpoint}):
            raise EnvFileError(f"{ENDPOINT} {endpoint!r} is not an http(s) URL")

    bucket = ours[BUCKET].strip()
    if not _engine_accepts({"BUCKET_NAME": bucket}):
        raise EnvFileError(
            f"{BUCKET} {bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit)"
        )
    region = ours[REGION].strip()
    if endpoint is None and not _AWS_REGION.fullmatch(region):
        raise EnvFileError(f"{REGION} {region!r} does not look like an AWS region (such as eu-central-1)")
    if endpoint is not None and not _OTHER_REGION.fullmatch(region):
        raise EnvFileError(f"{REGION} {region!r} is not a region name (such as us-east-1, or auto)")

    media_prefix = _media_prefix(ours.get(MEDIA_PREFIX, DEFAULT_MEDIA_PREFIX))

    aws = endpoint is None
    writer = _keys(ours, ACCESS_KEY, SECRET_KEY, aws=aws)
    restorer: StaticCredentials | None = None
    warnings: list[str] = []
    given = [n for n in (RESTORER_ACCESS_KEY, RESTORER_SECRET_KEY) if n in ours]
    if len(given) == 1:
        missing = RESTORER_SECRET_KEY if given[0] == RESTORER_ACCESS_KEY else RESTORER_ACCESS_KEY
        raise EnvFileError(f"{missing} is not set but {given[0]} is: give both restorer keys, or neither")
    if given:
        restorer = _keys(ours, RESTORER_ACCESS_KEY, RESTORER_SECRET_KEY, aws=aws)
        if restorer.access_key == writer.access_key:
            raise EnvFileError(
                f"{RESTORER_ACCESS_KEY} is the writer's key: the restorer needs its own read-only keys "
                "(s3:GetObject, s3:ListBucket, s3:RestoreObject)"
            )
        if restorer.secret_key == writer.secret_key:
            raise EnvFileError(f"{RESTORER_SECRET_KEY} is the same as {SECRET_KEY}: the restorer needs its own keys")
    else:
        warnings.append(
            f"no restorer keys ({RESTORER_ACCESS_KEY}, {RESTORER_SECRET_KEY}): Secret {READER_SECRET} is "
            "neither created nor changed; status, offsite and media restore need it"
        )
    config = OffsiteConfig(bucket, region, media_prefix, endpoint, writer, restorer, tuple(warnings))
    _engine_settings(config)
    return config


def _engine_accepts(values: dict[str, str]) -> bool:
    """The engine's own rules (`s3_settings`), so setup accepts exactly what the CronJob will."""
    try:
        s3_settings(None, {"BUCKET_NAME": "immich-offsite", "AWS_REGION": "us-east-1", **values})
    except ConfigError:
        return False
    return True


def _engine_settings(config: OffsiteConfig) -> S3Settings:
    try:
        return s3_settings(None, config.secret_data(config.writer))
    except ConfigError as exc:  # every field was checked above; this only guards the two from drifting
        raise EnvFileError(f"the sync engine would refuse these settings: {exc}") from None


def _media_prefix(raw: str) -> str:
    prefix = raw.strip()
    if prefix != raw or any(ch.isspace() or not ch.isprintable() for ch in prefix):
        raise EnvFileError(f"{MEDIA_PREFIX} contains whitespace or control characters")
    if prefix.startswith("/"):
        raise EnvFileError(f"{MEDIA_PREFIX} {prefix!r} starts with '/': S3 keys have none (write immich/media/)")
    if "\\" in prefix:
        raise EnvFileError(f"{MEDIA_PREFIX} {prefix!r} contains a backslash: S3 key prefixes use '/'")
    segments = prefix.rstrip("/").split("/")
    if any(s in (".", "..") for s in segments):
        raise EnvFileError(f"{MEDIA_PREFIX} {prefix!r} contains a '.' or '..' segment")
    if any(not s for s in segments):
        raise EnvFileError(f"{MEDIA_PREFIX} {prefix!r} contains an empty segment ('//')")
    return normalize_prefix(prefix)


def _keys(values: Mapping[str, str], id_var: str, secret_var: str, *, aws: bool) -> StaticCredentials:
    """Shape checks that catch the usual paste mistakes; S3 itself is asked only with --check-s3."""
    key_id, secret = values[id_var], values[secret_var]
    for var, value in ((id_var, key_id), (secret_var, secret)):
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise EnvFileError(f"{var} contains whitespace or control characters (a stray space or line break?)")
        if value[0] in "\"'" or value[-1] in "\"'":
            raise EnvFileError(f"{var} begins or ends with a quote character (quoted twice?)")
    if key_id == secret:
        raise EnvFileError(f"{id_var} and {secret_var} are identical")
    if aws:
        if _AWS_SECRET.fullmatch(key_id) and not _AWS_KEY_ID.fullmatch(key_id):
            raise EnvFileError(f"{id_var} looks like a secret access key: are {id_var} and {secret_var} swapped?")
        if not _AWS_KEY_ID.fullmatch(key_id):
            raise EnvFileError(
                f"{id_var} does not look like an AWS access key ID (20 characters, A-Z and 0-9, starting with AKIA)"
            )
        if key_id.startswith("ASIA"):
            raise EnvFileError(
                f"{id_var} is a temporary key (ASIA…) that expires and needs a session token: use an IAM user's "
                "key (AKIA…)"
            )
        if not _AWS_SECRET.fullmatch(secret):
            raise EnvFileError(
                f"{secret_var} does not look like an AWS secret access key (40 characters of A-Z, a-z, 0-9, / "
                f"and +; it has {len(secret)})"
            )
    else:
        if not 3 <= len(key_id) <= 128:
            raise EnvFileError(f"{id_var} has {len(key_id)} characters: an access key ID has 3 to 128")
        if not 8 <= len(secret) <= 256:
            raise EnvFileError(f"{secret_var} has {len(secret)} characters: a secret key has 8 to 256")
    return StaticCredentials(key_id, secret)


# The Secrets -----------------------------------------------------------------------------------------
def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def build_secrets(config: OffsiteConfig, namespace: str, db_namespace: str) -> list[dict[str, Any]]:
    """The writer in the Immich and the database namespace (once if they are the same), the restorer
    in the Immich namespace when its keys were given."""
    wanted = [(WRITER_SECRET, namespace, config.writer)]
    if db_namespace != namespace:
        wanted.append((WRITER_SECRET, db_namespace, config.writer))
    if config.restorer is not None:
        wanted.append((READER_SECRET, namespace, config.restorer))
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns, "labels": dict(LABELS)},
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in config.secret_data(keys).items()},
        }
        for name, ns, keys in wanted
    ]


def redacted(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest safe to print: each value replaced by its length."""
    copy = json.loads(json.dumps(manifest))
    copy["data"] = {k: f"<redacted: {len(base64.b64decode(v))} chars>" for k, v in manifest.get("data", {}).items()}
    return copy


@dataclass(frozen=True)
class SecretChange:
    """What setup did, or in a dry run would do, to one Secret; `keys` names what differs, never a value."""

    name: str
    namespace: str
    action: str  # created | updated | unchanged
    keys: tuple[str, ...] = ()


@dataclass
class SecretPlan:
    manifest: dict[str, Any] = field(repr=False)
    change: SecretChange
    patch: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def access(self) -> Access:
        c = self.change
        if c.action == "created":
            return Access("create", "secrets", c.namespace)
        return Access("patch", "secrets", c.namespace, name=c.name)


def _decoded(data: Mapping[str, str] | None) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError):
            out[key] = None  # unreadable: differs from anything setup would write
    return out


class SecretSetup:
    """Plan (reads only), preflight (read-only mode and RBAC for every planned write), apply."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _require_namespace(self, namespace: str) -> None:
        try:
            self.kube.call(Access("get", "namespaces", "", name=namespace), self.kube.core.read_namespace, namespace)
        except NotFound:
            raise SetupError(
                f"namespace {namespace} does not exist (create it, or choose another with -n/--db-namespace)"
            ) from None
        except Forbidden:
            return  # may not read namespaces; a missing one would still stop the first write

    def plan(self, manifests: list[dict[str, Any]]) -> list[SecretPlan]:
        plans: list[SecretPlan] = []
        for namespace in dict.fromkeys(m["metadata"]["namespace"] for m in manifests):
            self._require_namespace(namespace)
        for manifest in manifests:
            name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
            try:
                existing = self.kube.call(
                    Access("get", "secrets", namespace, name=name),
                    self.kube.core.read_namespaced_secret,
                    name,
                    namespace,
                )
            except NotFound:
                plans.append(SecretPlan(manifest, SecretChange(name, namespace, "created", tuple(manifest["data"]))))
                continue
            plans.append(self._compare(manifest, existing))
        return plans

    @staticmethod
    def _compare(manifest: dict[str, Any], existing: dict[str, Any]) -> SecretPlan:
        """Only the keys setup owns are compared; a managed key the `.env` no longer sets (the endpoint)
        is removed so the sync never talks to a store the operator has left."""
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        kind = existing.get("type") or "Opaque"
        if kind != "Opaque":
            raise SetupError(f"Secret {namespace}/{name} exists with type {kind}; setup only manages Opaque Secrets")
        current = _decoded(existing.get("data"))
        wanted = {k: base64.b64decode(v) for k, v in manifest["data"].items()}
        differing = [
            k
            for k in (*MANAGED_KEYS, ENDPOINT_KEY)
            if (k in wanted or k in current) and wanted.get(k) != current.get(k)
        ]
        meta = existing.get("metadata") or {}
        labels = meta.get("labels") or {}
        relabel = any(labels.get(k) != v for k, v in LABELS.items())
        if not differing and not relabel:
            return SecretPlan(manifest, SecretChange(name, namespace, "unchanged"))
        patch_meta: dict[str, Any] = {"labels": dict(LABELS)}
        if meta.get("resourceVersion"):
            patch_meta["resourceVersion"] = meta["resourceVersion"]  # a concurrent edit fails instead of being lost
        patch = {"metadata": patch_meta, "data": {k: manifest["data"].get(k) for k in differing}}
        keys = tuple(differing) + (("labels",) if relabel else ())
        return SecretPlan(manifest, SecretChange(name, namespace, "updated", keys), patch)

    def preflight(self, plans: list[SecretPlan]) -> None:
        """Every planned write is allowed, or none is made: three Secrets are never left half set up."""
        writes = [p for p in plans if p.change.action != "unchanged"]
        if writes and self.kube.read_only:
            raise ReadOnly(f"read-only mode: refusing to {writes[0].access}")
        for plan in writes:
            ok, reason = self.kube.allowed(plan.access)
            if not ok:
                raise Forbidden(f"RBAC denies {plan.access}" + (f": {reason}" if reason else ""))

    def apply(self, plans: list[SecretPlan]) -> list[SecretChange]:
        """The planned writes in order. Should one fail midway (the cluster went away), the message says
        which were made; running setup again finishes the rest, as every write is idempotent."""
        done: list[str] = []
        for plan in plans:
            c = plan.change
            try:
                if c.action == "created":
                    self.kube.write(plan.access, self.kube.core.create_namespaced_secret, c.namespace, plan.manifest)
                elif c.action == "updated":
                    self.kube.write(
                        plan.access,
                        self.kube.core.patch_namespaced_secret,
                        c.name,
                        c.namespace,
                        plan.patch,
                        _content_type=MERGE_PATCH,  # the client would label a dict body as a JSON Patch
                    )
                else:
                    continue
            except ClusterError as exc:
                if not done:
                    raise
                raise type(exc)(f"{exc} (already {'; '.join(done)}: run setup again to finish)") from None
            done.append(f"{c.action} {c.namespace}/{c.name}")
        return [p.change for p in plans]


# The S3 check ----------------------------------------------------------------------------------------
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
