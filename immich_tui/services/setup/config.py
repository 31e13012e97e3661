"""The `OFFSITE_BACKUP_*` variables of the `.env`, validated into the one configuration setup works from.

Every problem is one line that names the variable and what is wrong with it. A value appears in a
message only when it is a short word that cannot be a key (`'frankfurt'`); anything longer, or shaped
like a token, is described (its length) instead, since a key pasted onto the wrong line must not reach a
terminal, a CI log or a bug report. A value shaped like an access key ID or a secret is refused outright
in the variables that are printed later (region, bucket, media prefix, endpoint). What is accepted is
exactly what the sync engine will accept from the Secrets (its own `s3_settings` decides), plus the
shape checks that catch the usual paste mistakes in keys before they reach a cluster.

Up to four identities, one key pair each: the media writer (the nightly sync), the archiver (CNPG's WAL
archive and base backups), the restorer (reads everything, writes nothing) and, optionally, the viewer
(the run reports only, for status and the offsite totals). No two may share an access key ID or a
secret: the writer must not be able to touch the database archive, the archiver not the media, the
restorer nothing at all, and the viewer not download a photo or the database archive.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from immich_tui.services.offsite import ARCHIVER_SECRET, RESTORER_SECRET
from immich_tui.services.setup.envfile import PREFIX
from immich_tui.services.setup.errors import EnvFileError
from sync_engine.config import ConfigError, S3Settings, default_report_prefix, normalize_prefix, s3_settings
from sync_engine.store import StaticCredentials

DEFAULT_MEDIA_PREFIX = "immich/media/"

ACCESS_KEY = "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID"
SECRET_KEY = "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY"
REGION = "OFFSITE_BACKUP_AWS_REGION"
BUCKET = "OFFSITE_BACKUP_BUCKET_NAME"
MEDIA_PREFIX = "OFFSITE_BACKUP_MEDIA_PREFIX"
ARCHIVER_ACCESS_KEY = "OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID"
ARCHIVER_SECRET_KEY = "OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY"
RESTORER_ACCESS_KEY = "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID"
RESTORER_SECRET_KEY = "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY"
VIEWER_ACCESS_KEY = "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID"
VIEWER_SECRET_KEY = "OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY"
ENDPOINT = "OFFSITE_BACKUP_ENDPOINT_URL"

# Every variable setup understands; any other OFFSITE_BACKUP_* name is a typo and refused.
VARIABLES: dict[str, str] = {
    ACCESS_KEY: "writer access key ID (deploy/iam/media-writer.json: put, abort, list; read only its reports)",
    SECRET_KEY: "writer secret access key",
    REGION: "bucket region, e.g. eu-central-1",
    BUCKET: "bucket name",
    MEDIA_PREFIX: f"key prefix of the media (default {DEFAULT_MEDIA_PREFIX})",
    ARCHIVER_ACCESS_KEY: "CNPG archiver access key ID (deploy/iam/cnpg-writer.json: the database archive only)",
    ARCHIVER_SECRET_KEY: "CNPG archiver secret access key",
    RESTORER_ACCESS_KEY: "restorer access key ID, read-only (deploy/iam/restorer.json)",
    RESTORER_SECRET_KEY: "restorer secret access key",
    VIEWER_ACCESS_KEY: "viewer access key ID, run reports only (deploy/iam/viewer.json)",
    VIEWER_SECRET_KEY: "viewer secret access key",
    ENDPOINT: "S3-compatible endpoint (MinIO, Ceph, Garage, B2, …); unset for AWS",
}
REQUIRED = (ACCESS_KEY, SECRET_KEY, REGION, BUCKET)
CREDENTIALS = (
    ACCESS_KEY,
    SECRET_KEY,
    ARCHIVER_ACCESS_KEY,
    ARCHIVER_SECRET_KEY,
    RESTORER_ACCESS_KEY,
    RESTORER_SECRET_KEY,
    VIEWER_ACCESS_KEY,
    VIEWER_SECRET_KEY,
)
ENDPOINT_KEY = "AWS_ENDPOINT_URL_S3"  # the Secret key an S3-compatible endpoint goes under (boto3's own variable)

_AWS_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_OTHER_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # S3-compatible stores: `auto`, `garage`, …
_AWS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
_AWS_SECRET = re.compile(r"[A-Za-z0-9/+]{40}")

# What keys look like wherever they were issued: AWS and MinIO IDs (`AKIA…`, 20 capitals and digits),
# Garage IDs (`GK` and 24 hex digits), AWS and MinIO secrets (40 characters), R2 and Garage hex secrets.
_KEY_ID_LIKE = re.compile(r"(?<![A-Za-z0-9])(?:GK[0-9a-f]{24}|[A-Z0-9]{16,128})(?![A-Za-z0-9])")
_SECRET_LIKE = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40}(?![A-Za-z0-9+/=])")
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9+=]{20,}")  # a run without the separators that join words
_SHORT_TOKEN = re.compile(r"[A-Za-z0-9]{8,}")  # `minio123`: short, and a default secret all the same
SHOWN_MAX = 16  # a value is quoted only up to this length: a region, a short bucket name, a short prefix


@dataclass(frozen=True)
class OffsiteConfig:
    """The validated `.env`. Keys live only in `StaticCredentials`, whose repr never shows them."""

    bucket: str
    region: str
    media_prefix: str
    endpoint_url: str | None
    writer: StaticCredentials = field(repr=False)
    archiver: StaticCredentials = field(repr=False)
    restorer: StaticCredentials | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()
    viewer: StaticCredentials | None = field(default=None, repr=False)

    @property
    def report_prefix(self) -> str:
        return default_report_prefix(self.media_prefix)

    @property
    def archive_prefix(self) -> str:
        """Where CNPG archives: `postgres/` beside the media prefix (`immich/postgres/`), the prefix of
        deploy/iam/cnpg-writer.json and of the CNPG components' destinationPath."""
        parent = self.media_prefix.rstrip("/").rpartition("/")[0]
        return f"{parent}/postgres/" if parent else "postgres/"

    def secret_values(self) -> list[str]:
        """Every key and secret, so output can be checked and scrubbed against them."""
        keys = [self.writer, self.archiver, *(k for k in (self.restorer, self.viewer) if k is not None)]
        return [v for k in keys for v in (k.access_key, k.secret_key)]

    def secret_data(self, keys: StaticCredentials, *, media: bool = True) -> dict[str, str]:
        """A Secret's keys; `media=False` for the archiver's, which CNPG reads without a media prefix."""
        data = {
            "AWS_ACCESS_KEY_ID": keys.access_key,
            "AWS_SECRET_ACCESS_KEY": keys.secret_key,
            "AWS_REGION": self.region,
            "BUCKET_NAME": self.bucket,
        }
        if media:
            data["MEDIA_PREFIX"] = self.media_prefix
        if self.endpoint_url:
            data[ENDPOINT_KEY] = self.endpoint_url
        return data


def credential_values(values: Mapping[str, str]) -> list[str]:
    """The raw key values of a parsed file, for scrubbing messages before the file is validated: those of
    the key variables, and any value of another setup variable that is shaped like a key."""
    keys = [values[name] for name in CREDENTIALS if len(values.get(name, "").strip()) >= 4]
    misplaced = [v for k, v in values.items() if k in VARIABLES and k not in CREDENTIALS and key_shape(v)]
    return keys + misplaced


def _mixed(text: str) -> bool:
    return any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)


def key_shape(value: str) -> str | None:
    """What `value` looks like when it looks like a key ("an access key ID", "a secret access key", "an
    access key or a secret"), else None. Regions, bucket names and prefixes are words joined by `-`, `.`,
    `_` or `/`; keys are long runs of letters and digits with no such joints."""
    for match in _KEY_ID_LIKE.finditer(value):
        token = match.group()
        if token.startswith("GK") or (any(c.isdigit() for c in token) and any(c.isalpha() for c in token)):
            return "an access key ID"
    if any(_mixed(m.group()) for m in _SECRET_LIKE.finditer(value)):
        return "a secret access key"
    for match in _TOKEN_LIKE.finditer(value):
        token = match.group()
        if _mixed(token):
            return "an access key or a secret"
    # a hex key (R2, Garage) is the whole value: a bucket name may well end in a hex suffix of its own
    if len(value) >= 32 and all(c in "0123456789abcdef" for c in value) and not value.isdigit():
        return "an access key or a secret"
    return None


def _quotable(value: str) -> bool:
    """Short words only: nothing longer than a region, nothing token-like, nothing but printable text."""
    return (
        len(value) <= SHOWN_MAX
        and value.isprintable()
        and not any(any(c.isdigit() for c in t) and any(c.isalpha() for c in t) for t in _SHORT_TOKEN.findall(value))
        and key_shape(value) is None
    )


def _problem(var: str, value: str, problem: str) -> EnvFileError:
    """`VAR 'value' problem` for a short word; otherwise `VAR problem` and only the value's length."""
    if _quotable(value):
        return EnvFileError(f"{var} {value!r} {problem}")
    return EnvFileError(f"{var} {problem}; its value ({len(value)} characters) is not shown, as it may be a key")


def _misplaced_key(ours: Mapping[str, str]) -> None:
    """A key on the line of a variable that is printed later (in a message, in the S3 check's report) is
    refused before anything else reads it. An endpoint is a URL: only a value without `://` is judged,
    as hostnames such as R2's hold a long hex account ID."""
    lines = (
        (ENDPOINT, "an http(s) URL"),
        (BUCKET, "a bucket name"),
        (REGION, "a region"),
        (MEDIA_PREFIX, "a key prefix"),
    )
    for var, what in lines:
        value = ours.get(var, "").strip()
        if not value or (var == ENDPOINT and "://" in value):
            continue
        shape = key_shape(value)
        if shape:
            raise EnvFileError(f"{var} looks like {shape}, not {what} (is a key on the wrong line?)")


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
    _misplaced_key(ours)

    endpoint = ours.get(ENDPOINT)
    if endpoint is not None:
        endpoint = endpoint.strip()
        if "@" in endpoint.split("//", 1)[-1].split("/", 1)[0]:
            raise EnvFileError(
                f"{ENDPOINT} must not carry credentials (user:password@); the keys have their own variables"
            )
        if not _engine_accepts({"AWS_ENDPOINT_URL_S3": endpoint}):
            raise EnvFileError(f"{ENDPOINT} is not an http(s) URL ({_url_hint(endpoint)})")

    bucket = ours[BUCKET].strip()
    if not _engine_accepts({"BUCKET_NAME": bucket}):
        raise _problem(
            BUCKET,
            bucket,
            "is not a valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens, starting and ending "
            "with a letter or digit)",
        )
    region = ours[REGION].strip()
    if endpoint is None and not _AWS_REGION.fullmatch(region):
        raise _problem(REGION, region, "does not look like an AWS region (such as eu-central-1)")
    if endpoint is not None and not _OTHER_REGION.fullmatch(region):
        raise _problem(REGION, region, "is not a region name (such as us-east-1, or auto)")

    media_prefix = _media_prefix(ours.get(MEDIA_PREFIX, DEFAULT_MEDIA_PREFIX))

    aws = endpoint is None
    writer = _keys(ours, ACCESS_KEY, SECRET_KEY, aws=aws)
    archiver_given = [n for n in (ARCHIVER_ACCESS_KEY, ARCHIVER_SECRET_KEY) if n in ours]
    if not archiver_given:
        raise EnvFileError(
            f"{ARCHIVER_ACCESS_KEY} and {ARCHIVER_SECRET_KEY} are not set in {source}: CNPG needs keys of its own "
            f"(an IAM user with deploy/iam/cnpg-writer.json only, stored in Secret {ARCHIVER_SECRET}), no longer "
            "the media writer's; add them (see .env.example)"
        )
    if len(archiver_given) == 1:
        missing = ARCHIVER_SECRET_KEY if archiver_given[0] == ARCHIVER_ACCESS_KEY else ARCHIVER_ACCESS_KEY
        raise EnvFileError(f"{missing} is not set but {archiver_given[0]} is: give both archiver keys")
    archiver = _keys(ours, ARCHIVER_ACCESS_KEY, ARCHIVER_SECRET_KEY, aws=aws)
    warnings: list[str] = []
    restorer = _optional_keys(ours, RESTORER_ACCESS_KEY, RESTORER_SECRET_KEY, "restorer", aws=aws)
    if restorer is None:
        warnings.append(
            f"no restorer keys ({RESTORER_ACCESS_KEY}, {RESTORER_SECRET_KEY}): Secret {RESTORER_SECRET} is "
            "neither created nor changed; media restore, verify and db catalog need it"
            + ("" if VIEWER_ACCESS_KEY in ours else ", and status and offsite without a viewer Secret")
        )
    viewer = _optional_keys(ours, VIEWER_ACCESS_KEY, VIEWER_SECRET_KEY, "viewer", aws=aws)
    identities = [
        ("the media writer", ACCESS_KEY, SECRET_KEY, writer),
        ("the archiver", ARCHIVER_ACCESS_KEY, ARCHIVER_SECRET_KEY, archiver),
    ]
    if restorer is not None:
        identities.append(("the restorer", RESTORER_ACCESS_KEY, RESTORER_SECRET_KEY, restorer))
    if viewer is not None:
        identities.append(("the viewer", VIEWER_ACCESS_KEY, VIEWER_SECRET_KEY, viewer))
    _distinct(identities)
    config = OffsiteConfig(
        bucket, region, media_prefix, endpoint, writer, archiver, restorer, tuple(warnings), viewer=viewer
    )
    _engine_settings(config)
    return config


def _optional_keys(
    values: Mapping[str, str], id_var: str, secret_var: str, who: str, *, aws: bool
) -> StaticCredentials | None:
    """An optional identity's key pair: both variables or neither (half a pair is a paste gone wrong)."""
    given = [n for n in (id_var, secret_var) if n in values]
    if len(given) == 1:
        missing = secret_var if given[0] == id_var else id_var
        raise EnvFileError(f"{missing} is not set but {given[0]} is: give both {who} keys, or neither")
    return _keys(values, id_var, secret_var, aws=aws) if given else None


def _distinct(identities: list[tuple[str, str, str, StaticCredentials]]) -> None:
    """One key pair per identity: no access key ID and no secret shared by two of them (the viewer's keys
    would otherwise carry the restorer's reach, or worse). Only the variables are named, never a value."""
    for i, (who, id_var, secret_var, keys) in enumerate(identities):
        for earlier, earlier_id, earlier_secret, other in identities[:i]:
            if keys.access_key == other.access_key:
                same = (id_var, earlier_id)
            elif keys.secret_key == other.secret_key:
                same = (secret_var, earlier_secret)
            else:
                continue
            raise EnvFileError(
                f"{same[0]} is the same as {same[1]}: {who} needs keys of its own, not {earlier}'s "
                "(one IAM user per identity: media writer, archiver, restorer, viewer)"
            )


def _engine_accepts(values: dict[str, str]) -> bool:
    """The engine's own rules (`s3_settings`), so setup accepts exactly what the CronJob will."""
    try:
        s3_settings(None, {"BUCKET_NAME": "immich-offsite", "AWS_REGION": "us-east-1", **values})
    except ConfigError:
        return False
    return True


def _url_hint(endpoint: str) -> str:
    """The scheme when there is one (never the rest: a URL can carry a token), else an example."""
    scheme, sep, _ = endpoint.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", scheme):
        return f"its scheme is {scheme!r}"
    return "such as https://minio.example:9000"


def _engine_settings(config: OffsiteConfig) -> S3Settings:
    try:
        return s3_settings(None, config.secret_data(config.writer))
    except ConfigError as exc:  # every field was checked above; this only guards the two from drifting
        # the engine's message names its setting first and may quote the value after it: keep the name
        raise EnvFileError(f"the sync engine would refuse {str(exc).split(':', 1)[0]}") from None


def _media_prefix(raw: str) -> str:
    prefix = raw.strip()
    if prefix != raw or any(ch.isspace() or not ch.isprintable() for ch in prefix):
        raise EnvFileError(f"{MEDIA_PREFIX} contains whitespace or control characters")
    if prefix.startswith("/"):
        raise _problem(MEDIA_PREFIX, prefix, "starts with '/': S3 keys have none (write immich/media/)")
    if "\\" in prefix:
        raise _problem(MEDIA_PREFIX, prefix, "contains a backslash: S3 key prefixes use '/'")
    segments = prefix.rstrip("/").split("/")
    if any(s in (".", "..") for s in segments):
        raise _problem(MEDIA_PREFIX, prefix, "contains a '.' or '..' segment")
    if any(not s for s in segments):
        raise _problem(MEDIA_PREFIX, prefix, "contains an empty segment ('//')")
    return normalize_prefix(prefix)


def _keys(values: Mapping[str, str], id_var: str, secret_var: str, *, aws: bool) -> StaticCredentials:
    """Shape checks that catch the usual paste mistakes; S3 itself is asked only with --check-s3."""
    key_id, secret = values[id_var], values[secret_var]
    for var, value in ((id_var, key_id), (secret_var, secret)):
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise EnvFileError(f"{var} contains whitespace or control characters (a stray space or line break?)")
        if value[0] in "\"'" or value[-1] in "\"'":
            raise EnvFileError(f"{var} begins or ends with a quote character (quoted twice?)")
        if not value.isascii():  # no store hands one out; signing a request with it fails or is mangled
            raise EnvFileError(
                f"{var} contains a character that is not ASCII (a typographic quote or a look-alike letter "
                "pasted from a document?)"
            )
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
