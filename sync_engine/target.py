"""The directory a media restore writes into: what may be restored into it, and what it must hold after.

A restore never mixes its files into an unrelated directory: the target must be empty, or hold the
progress marker of an unfinished restore of the same bucket and prefix (so re-running after an
interruption needs no `--force`). Whatever happened, Immich refuses to start unless each of its six
folders holds a `.immich` marker, so those are created at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sync_engine import __version__
from sync_engine.config import IMMICH_FOLDERS, RestoreSettings
from sync_engine.errors import TargetError
from sync_engine.report import utc_iso
from sync_engine.scan import printable

PROGRESS_MARKER = ".immich-sync-restore.json"
IMMICH_MARKER = ".immich"
# A fresh ext4 volume is never empty: its lost+found does not make a target "not empty".
_IGNORED_IN_EMPTY_TARGET = frozenset({"lost+found"})


def check_target(settings: RestoreSettings) -> bool:
    """Refuse a target that would mix a restore into unrelated files; True when resuming.

    Nothing is written here: a refused restore leaves the target as it was."""
    target = settings.target
    if target.is_symlink() and not target.exists():
        raise TargetError(f"restore target {target} is a broken symlink")
    if not target.exists():
        return False
    if not target.is_dir():
        raise TargetError(f"restore target {target} is not a directory")
    try:
        entries = sorted(e for e in os.listdir(target) if e not in _IGNORED_IN_EMPTY_TARGET)
    except OSError as exc:
        raise TargetError(f"restore target {target} cannot be read: {exc.strerror or exc}") from None
    if PROGRESS_MARKER in entries:
        previous = _read_marker(target / PROGRESS_MARKER)
        same = previous.get("bucket") == settings.s3.bucket and previous.get("media_prefix") == settings.media_prefix
        if same or settings.force:
            return True
        where = f"s3://{previous.get('bucket', '?')}/{previous.get('media_prefix', '')}"
        raise TargetError(
            f"restore target {target} holds an unfinished restore from {where}; pass --force to restore into it anyway"
        )
    if entries and not settings.force:
        shown = ", ".join(printable(e) for e in entries[:3]) + (", …" if len(entries) > 3 else "")
        raise TargetError(
            f"restore target {target} is not empty ({len(entries)} entries: {shown}); "
            "choose an empty directory or pass --force to restore into it"
        )
    return False


def _read_marker(marker: Path) -> dict[str, object]:
    """The progress marker's fields; an unreadable or foreign file counts as naming no restore."""
    try:
        previous = json.loads(marker.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def write_progress_marker(settings: RestoreSettings, started: float) -> None:
    """Says "a restore is under way here", so re-running after an interruption needs no --force."""
    marker = settings.target / PROGRESS_MARKER
    body = {
        "bucket": settings.s3.bucket,
        "media_prefix": settings.media_prefix,
        "folders": list(settings.folders),
        "started_at": utc_iso(started),
        "engine_version": __version__,
    }
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", "utf-8")
    os.replace(tmp, marker)


def ensure_immich_markers(target: Path) -> list[str]:
    """Immich refuses to start unless every one of its folders holds `.immich`, restored or not."""
    created = []
    for folder in IMMICH_FOLDERS:
        marker = target / folder / IMMICH_MARKER
        if os.path.lexists(marker):
            continue
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        created.append(folder)
    return created
