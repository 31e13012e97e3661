"""The one root of every operator-side failure: a message that fits on one line, and the exit code it means.

The plugin prints `kubectl immich-backup: error: <message>` (a missing CNPG without `error:`) and exits
with `exit_code`; the TUI shows the message as a banner; the status command turns it into a section's
error. Every service raises a subclass, so each caller catches `ServiceError` once and never has to know
which service failed.
"""

from __future__ import annotations

ERROR = 2  # the plugin's exit code for "could not do it": cluster, RBAC, configuration, bucket


class ServiceError(Exception):
    """A failure the operator can act on; `str()` is the whole one-line message."""

    exit_code: int = ERROR
