"""Overwrites: the one way a backup run can destroy the good offsite copy of a photo.

A file that changed content locally is either a legitimate edit (rare for originals: Immich never
rewrites them) or damage — a disk fault, ransomware, a script gone wrong — and the backup cannot tell
which. So no object is overwritten while the run is still finding them: the uploads of new files go
ahead, the changed ones are held, and only when the whole library has been compared does the run decide:

- more than `max_percent` of the files already in the bucket changed, and at least `min_files` of them:
  the run is *suspicious* (`suspicious-mass-change`) and overwrites none, until an operator accepts one
  deliberate mass change (`--accept-mass-change`);
- otherwise, with bucket versioning Enabled, the held files are uploaded and each overwrite is recorded
  in the report (the old version stays in S3 as a noncurrent version);
- without versioning (Suspended, never enabled, or unreadable), the original is kept
  (`changed-original-kept`, exit 1) unless `--allow-overwrite` says losing it is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sync_engine.models import PlanItem, UploadResult

ENABLED = "Enabled"
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class OverwritePolicy:
    """The operator's settings that decide what may replace an object already in the bucket."""

    allow_overwrite: bool = False
    accept_mass_change: bool = False
    max_percent: float = 2.0
    min_files: int = 10


@dataclass
class Verdict:
    """What happens to the held files: overwrite them, or keep the originals and say why."""

    overwrite: list[PlanItem] = field(default_factory=list)
    kept: list[UploadResult] = field(default_factory=list)
    kind: str = ""  # why they are kept: suspicious-mass-change | changed-original-kept
    detail: str = ""


def _mass(changed: int, in_bucket: int, policy: OverwritePolicy) -> bool:
    return changed >= policy.min_files and 100.0 * changed / max(in_bucket, 1) > policy.max_percent


def judge(held: list[UploadResult], in_bucket: int, versioning: str, policy: OverwritePolicy) -> Verdict:
    """Decide once the whole library has been compared (see the module docstring)."""
    if not held:
        return Verdict()
    changed = len(held)
    share = 100.0 * changed / max(in_bucket, 1)
    if _mass(changed, in_bucket, policy) and not policy.accept_mass_change:
        return Verdict(
            kept=list(held),
            kind="suspicious-mass-change",
            detail=(
                f"{changed} of {in_bucket} files already in the bucket changed content ({share:.1f}% > "
                f"{policy.max_percent:g}%): none was overwritten; if the change is deliberate, run once with "
                "--accept-mass-change"
            ),
        )
    if versioning == ENABLED or policy.allow_overwrite:
        return Verdict(overwrite=[result.item for result in held])
    state = versioning or "never enabled"
    return Verdict(
        kept=list(held),
        kind="changed-original-kept",
        detail=(
            f"changed content, but bucket versioning is {state}: the object in S3 is the only copy of the "
            "original and was kept (enable versioning, or run with --allow-overwrite to replace it)"
        ),
    )


def mass_change_record(
    held: list[UploadResult], in_bucket: int, policy: OverwritePolicy, tripped: bool
) -> dict[str, object]:
    """The report's account of the run's changed files, with the first examples."""
    examples = [
        {
            "key": result.item.key,
            "old_size": result.item.remote.size if result.item.remote else None,
            "old_etag": result.item.remote.etag if result.item.remote else "",
            "new_size": result.size or result.item.local.size,
        }
        for result in held[:MAX_EXAMPLES]
    ]
    return {
        "tripped": tripped,
        "changed": len(held),
        "in_bucket": in_bucket,
        "max_percent": policy.max_percent,
        "min_files": policy.min_files,
        "accepted": policy.accept_mass_change and _mass(len(held), in_bucket, policy),
        "examples": examples,
    }
