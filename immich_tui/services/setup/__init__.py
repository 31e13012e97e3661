"""The offsite Secrets, made from a `.env` file and kept in step with it (`kubectl immich-backup setup`).

One job per module, in the order setup runs them: `envfile` reads the `.env`, `config` validates its
`OFFSITE_BACKUP_*` variables, `s3probe` proves the keys and the bucket's versioning (`--check-s3`), and `secrets`
plans, clears and writes the Secrets in the cluster. The names the plugin and the tests use are
re-exported here.
"""

from __future__ import annotations

from immich_tui.services.setup.config import VARIABLES, OffsiteConfig, credential_values, load_config
from immich_tui.services.setup.envfile import env_file_warnings, parse_env, read_env_file
from immich_tui.services.setup.errors import EnvFileError, S3CheckError, SetupError
from immich_tui.services.setup.s3probe import BucketProtection, S3Check, check_s3
from immich_tui.services.setup.secrets import (
    SecretChange,
    SecretPlan,
    SecretSetup,
    build_secrets,
    redacted,
    stale_writer_warning,
)

__all__ = [
    "VARIABLES",
    "BucketProtection",
    "EnvFileError",
    "OffsiteConfig",
    "S3Check",
    "S3CheckError",
    "SecretChange",
    "SecretPlan",
    "SecretSetup",
    "SetupError",
    "build_secrets",
    "check_s3",
    "credential_values",
    "env_file_warnings",
    "load_config",
    "parse_env",
    "read_env_file",
    "redacted",
    "stale_writer_warning",
]
