"""`make demo`: the real `immich-sync` on an embedded default world, no cluster or cloud account.

Generates a sample Immich library, starts a local S3 endpoint (moto on 127.0.0.1), then runs the
CronJob's command twice (the second run is the nightly no-op) and a verify, exactly as an operator
would type them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from immich_tui.sandbox import DEMO_KEY_ID, DEMO_SECRET, LocalS3, make_sample_library

BUCKET = "immich-offsite-demo"
PREFIX = "immich/media/"


def _step(title: str, argv: list[str], env: dict[str, str]) -> int:
    bold, off = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}── {title}{off}\n$ immich-sync {' '.join(argv)}", flush=True)
    return subprocess.run([sys.executable, "-m", "sync_engine", *argv], env=env, check=False).returncode


def main() -> int:
    work = Path(os.environ.get("DEMO_DIR", ".demo")).resolve()
    if work.exists():
        shutil.rmtree(work)
    print(f"Generating a sample Immich library in {work / 'library'} …")
    lib = make_sample_library(work / "library")
    print(f"  {len(lib.files)} files, {sum(lib.files.values()) / 1e6:.1f} MB in six folders with .immich markers")
    with LocalS3() as s3:
        s3.client().create_bucket(Bucket=BUCKET)
        print(f"Local S3 endpoint (moto) at {s3.endpoint}, bucket {BUCKET}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=DEMO_KEY_ID,
            AWS_SECRET_ACCESS_KEY=DEMO_SECRET,
            AWS_REGION="us-east-1",
            AWS_ENDPOINT_URL_S3=s3.endpoint,
            BUCKET_NAME=BUCKET,
            MEDIA_PREFIX=PREFIX,
            LIBRARY_ROOT=str(lib.root),
            IMMICH_SYNC_SETTLE_SECONDS="60",
        )
        codes = [
            _step("What is in the library", ["inventory"], env),
            _step("What a backup would upload, and why", ["plan"], env),
            _step("The nightly backup (first run uploads everything)", ["backup", "--quiet"], env),
            _step("The next night: nothing changed, nothing uploaded", ["backup", "--quiet"], env),
            _step("Verify S3 against the recorded manifests", ["verify"], env),
        ]
        print(
            "\n── Where to look\n"
            f"  library      {lib.root}\n"
            f"  media        s3://{BUCKET}/{PREFIX}  (keys = prefix + path under the library)\n"
            f"  run reports  s3://{BUCKET}/immich/sync-reports/  (one JSON per run + manifest)\n"
            f"  try it       LIBRARY_ROOT={lib.root} .venv/bin/immich-sync inventory\n"
        )
        if sys.stdin.isatty():
            print(f"The local S3 endpoint stays up at {s3.endpoint} until you press Enter.")
            with contextlib.suppress(EOFError, KeyboardInterrupt):
                input()
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
