"""Why setup stops: one family of errors, so `kubectl immich-backup setup` reports any of them the same way.

Each message is one line that names what to fix. A value from the `.env` appears in it only when it is a
short word that cannot be a key (`'frankfurt'`); anything else is described, never quoted.
"""

from __future__ import annotations

from immich_tui.services.errors import ServiceError


class SetupError(ServiceError):
    """Setup cannot go on; the one-line message names what to fix and never a value that could be a key."""


class EnvFileError(SetupError):
    """The `.env` file is missing, unreadable, malformed, or a variable in it is wrong."""


class S3CheckError(SetupError):
    """The keys could not do in the bucket what the sync or the restore will need."""
