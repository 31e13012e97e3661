"""`make krew`: the krew plugin's release archive and the sha256 its manifest must carry.

The archive holds the launcher (`kubectl-immich_backup`) and the LICENSE krew's index requires. It is built
byte for byte the same on every machine (fixed member order, owners, modes and times; gzip without a
timestamp), so the sha256 in deploy/krew/immich-backup.yaml can be checked against a fresh build by the tests,
and the file attached to the GitHub release is exactly what the manifest names.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import tarfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MANIFEST = HERE / "immich-backup.yaml"
MEMBERS = (("kubectl-immich_backup", 0o755), ("LICENSE", 0o644))
SOURCE_DATE = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed member time keeps the archive reproducible


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def archive_name(release: str | None = None) -> str:
    return f"immich-backup-v{release or version()}.tar.gz"


def build() -> bytes:
    """The .tar.gz, deterministic."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in MEMBERS:
            body = (HERE / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(body), mode, SOURCE_DATE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(body))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def write_manifest(sha256: str) -> None:
    text = MANIFEST.read_text()
    updated, count = re.subn(r"(?m)^(\s*sha256: )\"?[0-9a-fA-F]*\"?$", rf"\g<1>{sha256}", text)
    if count == 0:
        raise SystemExit(f"{MANIFEST}: no `sha256:` line to fill")
    MANIFEST.write_text(updated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the archive (default dist/)")
    parser.add_argument("--write-manifest", action="store_true", help="fill the manifest's sha256 with the build's")
    args = parser.parse_args(argv)
    body = build()
    sha256 = hashlib.sha256(body).hexdigest()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / archive_name()).write_bytes(body)
    if args.write_manifest:
        write_manifest(sha256)
    print(f"{args.out / archive_name()}: sha256 {sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
