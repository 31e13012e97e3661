"""A quiet night pays for what it does, not for what it might have done.

A backup with nothing to upload sends one ListMultipartUploads, a few ListObjectsV2, one GET (the
files cache) and one PUT (its report), all on the direct path: it must neither build a botocore client
(which loads S3's whole service model) nor import what only restore and verify use. Each run is a fresh
interpreter, as the CronJob's is, so what it imported is what a night costs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import sync_engine
from tests.s3proxy import Proxy

# Modules a quiet night has no use for: botocore's client machinery, restore and verify.
UNNEEDED = (
    "botocore.client",
    "botocore.session",
    "botocore.waiter",
    "botocore.docs",
    "sync_engine.restore",
    "sync_engine.download",
    "sync_engine.verify",
)
SCRIPT = (
    "import json, sys\n"
    "from sync_engine.cli import main\n"
    "code = main(sys.argv[1:])\n"
    f"loaded = [m for m in {UNNEEDED!r} if m in sys.modules]\n"
    "print(json.dumps({'code': code, 'loaded': loaded}), file=sys.stderr)\n"
)


def run_fresh(*argv: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`immich-sync ARGV -o json` in a new interpreter: its report, and what it exited with and imported."""
    env = dict(os.environ, PYTHONPATH=str(Path(sync_engine.__file__).resolve().parent.parent))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv, "-o", "json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("listing", ["incremental", "full"])
def test_a_quiet_night_builds_no_botocore_client(
    run_sync, monkeypatch: pytest.MonkeyPatch, proxy: Proxy, listing: str
) -> None:
    time.sleep(2.2)  # the sample was copied a moment ago: let its ctimes age past the trust margin
    first = run_sync("backup")
    assert first.code == 0, first.err
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    days = "7" if listing == "incremental" else "0"
    report, process = run_fresh("backup", "--full-listing-days", days)
    assert process == {"code": 0, "loaded": []}
    assert report["status"] == "ok" and report["listing"] == listing
    assert report["totals"]["uploaded"] == 0 and report["totals"]["unchanged"] > 0
    requests = report["requests"]
    assert requests["ListMultipartUploads"] == 1 and requests["GetObject"] == 1
    assert requests["ListObjectsV2"] == (1 if listing == "incremental" else 1 + report["units_listed"])
    # every request sent is one the report counts, plus the PUTs of the report (and of a new files
    # cache, when the full listing's run writes one): nothing is sent twice
    puts = 1 + (report["files_cache_key"] != report["files_cache"])
    assert dict(proxy.counts) == {**requests, "PutObject": puts}


def test_a_night_with_uploads_builds_the_client_when_it_needs_it(run_sync, sample) -> None:
    """The sample's 18 MiB video is sent in parts, which botocore starts and completes."""
    report, process = run_fresh("backup")
    assert process["code"] == 0
    assert "botocore.client" in process["loaded"] and "sync_engine.restore" not in process["loaded"]
    assert report["status"] == "ok" and report["totals"]["uploaded"] > 0
    assert report["requests"]["CreateMultipartUpload"] == 1 and report["requests"]["CompleteMultipartUpload"] == 1
