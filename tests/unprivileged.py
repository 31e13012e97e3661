"""Running a test's command without root, while it can still read the checkout wherever that sits.

Two kinds of test need a process that is not root: PostgreSQL refuses to start as root, and root reads a mode-000
file anyway (CAP_DAC_OVERRIDE), so permission bits only count for someone else. The tests themselves run as root in
CI and in containers.

Switching to a real account (`setpriv` or `su` to `postgres` or `nobody`) breaks as soon as the checkout is private:
that account cannot read a clone inside a mode-700 temporary folder, nor exec an interpreter under /root (mode 700,
where pyenv installs it), so the virtualenv's python, the PostgreSQL wheel and the barman scripts are out of its
reach. Opening those folders up, or copying them elsewhere, would change what is being tested.

A new user namespace that maps one unprivileged id onto the caller does what is needed: inside it the process is
uid/gid 65534 with no capabilities at all, so PostgreSQL starts and mode-000 files really are unreadable, while files
root owns appear owned by that id, so the checkout stays readable and PostgreSQL accepts a data folder root created
as its own. Everything the command starts (PostgreSQL's `archive_command` and `restore_command`) inherits the
namespace, and processes in separate namespaces over the same root may still signal each other, so `pg_ctl stop`
from one invocation reaches a server started by another. When the tests do not run as root they already have no
privileges to drop, and commands run as the current user, unprefixed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

UNPRIVILEGED_ID = 65534  # the overflow id, conventionally `nobody`; it owns nothing outside the namespace


class UnprivilegedError(RuntimeError):
    """Root cannot be dropped here, so the tests that need an unprivileged process cannot run as intended."""


@dataclass(frozen=True)
class Unprivileged:
    """The argv prefix that runs a command without privileges; empty when the tests already run without them."""

    prefix: tuple[str, ...]

    def argv(self, command: Sequence[str]) -> list[str]:
        return [*self.prefix, *command]


@functools.cache
def _detect() -> Unprivileged | str:
    """Probed once per process: the answer cannot change while the tests run, and the probe costs a fork."""
    if os.geteuid() != 0:
        return Unprivileged(())
    unshare = shutil.which("unshare") or shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if not unshare:
        return "unshare (util-linux) not found"
    prefix = (
        unshare,
        "--user",
        f"--map-user={UNPRIVILEGED_ID}",
        f"--map-group={UNPRIVILEGED_ID}",
        "--",
    )
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"user namespaces unavailable (unshare: {exc})"
    if probe.returncode != 0:
        reason = probe.stderr.strip() or f"exit status {probe.returncode}"
        return f"user namespaces unavailable (unshare: {reason})"
    return Unprivileged(prefix)


def unprivileged(purpose: str) -> Unprivileged:
    """How to run a command without root; raises naming `purpose` and the reason when root cannot be dropped."""
    found = _detect()
    if isinstance(found, str):
        raise UnprivilegedError(f"cannot drop root for {purpose}: {found}")
    return found
