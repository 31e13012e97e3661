"""What a failed `immich-sync` command tells the shell: one error root, each error with its exit code.

Every error that can stop a command derives from `EngineError` and carries the exit code the README's
table promises, so the CLI catches the root once and exits with `exc.exit_code`; no caller has to
know which module raised what. The codes themselves live here too, beside the errors that use them.
"""

from __future__ import annotations

EXIT_OK = 0
# The run finished, but some files were not backed up or restored (or verify found differences).
EXIT_PARTIAL = 1
# A setting, the library root, the restore target or the bucket cannot be used: nothing was changed.
EXIT_CONFIG = 2
# S3 unreachable or failing for many files in a row, or SIGTERM/SIGINT: the run stopped part-way.
EXIT_ABORTED = 3
# `restore` only: done, except archived objects S3 is still restoring; run the same command again later.
EXIT_PENDING = 4
# Interrupted before any work started.
EXIT_INTERRUPTED = 130


class EngineError(Exception):
    """Root of the errors that stop a command; the message is one line that says what to fix."""

    exit_code: int = EXIT_CONFIG

    def describe(self) -> str:
        """The line the CLI prints after `immich-sync: error: `."""
        return str(self)


class ConfigError(EngineError):
    """A setting is missing or malformed; the message names it (flag and variable)."""

    exit_code = EXIT_CONFIG

    def describe(self) -> str:
        return f"configuration error: {self}"


class TargetError(ConfigError):
    """The restore target cannot be used as it is (not empty, not a directory, not writable)."""


class StoreError(EngineError):
    """An S3 request failed after retries; the message is one line and names the bucket/key.

    A refusal (credentials, permissions, a missing bucket) is the configuration's fault and exits 2; an
    endpoint that cannot be reached or drops the connection (`transport`) aborts the run with 3, since
    the same command may well work later.
    """

    def __init__(self, message: str, *, code: str = "", transport: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transport = transport  # endpoint unreachable / connection dropped, not a refusal

    @property  # type: ignore[override]
    def exit_code(self) -> int:
        return EXIT_ABORTED if self.transport else EXIT_CONFIG


class ObjectTooLarge(StoreError):
    """An object read from the bucket is larger than the cap for what it should be (a run report, a files
    cache, a backup.info): it was not read, or reading stopped at the cap, so memory holds at most the cap.
    The message names the object and the cap."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="TooLarge")

    @classmethod
    def of(cls, what: str, where: str, cap: int, size: int | None = None) -> ObjectTooLarge:
        """`what` names the kind (`run report`), `where` the object (`s3://bucket/key`); `size` is the
        listed size when the listing already told, None when reading found it out."""
        if size is not None:
            return cls(f"{what} {where} is {size:,} bytes, over the {cap:,}-byte cap for a {what}: not read")
        return cls(f"{what} {where} is larger than the {cap:,}-byte cap for a {what}: reading stopped there")


class SetupError(StoreError):
    """The bucket cannot be used at all, found before anything was changed: credentials refused, bucket
    missing (exit 2), or the endpoint unreachable (exit 3, like every transport failure)."""


class ManifestError(EngineError):
    """A run manifest in the bucket is not what the engine writes (corrupt, truncated, wrong schema).

    Verify counts it as a difference (exit 1 when it ends a run); restore skips the manifest and says so.
    """

    exit_code = EXIT_PARTIAL
