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


class InvalidData(ServiceError):
    """Something read from the cluster or the bucket does not fit its schema: an object whose field has the
    wrong type, a run report that is not one, a Secret whose keys cannot be keys. Unlike a service that is
    merely unavailable (no credentials, no CNPG), this is an error in every section it touches: the status
    names it and exits 2, however healthy the rest looks."""
