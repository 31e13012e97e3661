"""S3 misbehaving: throttling, server errors, dropped connections, a dying endpoint, SIGTERM.

Transient faults are retried with backoff and the run succeeds; persistent ones fail the file (or
the run) with a summary, and no multipart upload is ever left open in the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.config import MiB
from tests.conftest import list_keys, open_multipart_uploads
from tests.s3proxy import Proxy, Request, fail, hold

PREFIX = "immich/media/"
BIG = "library/b41e9d22-anna/2024/05/VID_0002.mp4"  # the sample's 18 MiB video: two parts


def backed_up(sample: SampleLibrary) -> dict[str, int]:
    return {PREFIX + k: v for k, v in sample.files.items() if k.startswith(("upload/", "library/", "profile/"))}


@pytest.fixture
def via_proxy(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str]) -> Proxy:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    return proxy


def test_throttling_errors_and_resets_are_retried(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    injected = [
        fail(lambda r: r.op == "PutObject", ("error", (503, "SlowDown")), times=3),
        fail(lambda r: r.op == "UploadPart", ("error", (500, "InternalError")), times=1),
        fail(lambda r: r.op == "PutObject", ("drop", None), times=2),
        fail(
            lambda r: r.op == "ListObjectsV2" and "continuation-token" not in r.query, ("error", (503, "SlowDown")), 1
        ),
    ]
    via_proxy.rules.extend(injected)
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    assert result.json()["totals"]["failed"] == 0
    assert {k: o["Size"] for k, o in list_keys(s3, bucket, PREFIX).items()} == backed_up(sample)
    files = len(backed_up(sample))
    # every fault cost exactly one extra request: retried, not skipped
    # one file is multipart; + manifest, files cache, report
    assert via_proxy.counts["PutObject"] == files - 1 + 3 + 3 + 2
    assert open_multipart_uploads(s3, bucket) == []


def test_persistent_part_failure_fails_that_file_and_aborts_its_upload(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    via_proxy.rules.append(
        fail(lambda r: r.op == "UploadPart" and r.key == PREFIX + BIG, ("error", (500, "InternalError")))
    )
    result = run_sync("backup", "-o", "json")
    report = result.json()
    assert result.code == 1  # partial: the rest is backed up, this file is not
    assert report["status"] == "partial"
    assert report["totals"]["failed"] == 1
    assert report["problems"][0]["path"] == BIG and "InternalError" in report["problems"][0]["detail"]
    keys = list_keys(s3, bucket, PREFIX)
    assert PREFIX + BIG not in keys and len(keys) == len(backed_up(sample)) - 1
    assert len(via_proxy.ops("AbortMultipartUpload")) == 1
    assert open_multipart_uploads(s3, bucket) == []
    assert "failed" in run_sync("backup").out  # the summary names failures in text form too


def test_s3_failing_everything_aborts_the_run_with_a_summary(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """Writes keep failing (listing still works): the run stops early instead of failing every file."""
    via_proxy.rules.append(fail(lambda r: r.op in ("PutObject", "UploadPart"), ("drop", None)))
    result = run_sync("backup", "-o", "json", "--workers", "2")
    report = result.json()
    assert result.code == 3
    assert report["status"] == "aborted"
    assert "S3 keeps failing" in report["error"]
    assert report["totals"]["failed"] < len(backed_up(sample)) / 2
    assert "run aborted" in result.err
    assert open_multipart_uploads(s3, bucket) == []
    assert list_keys(s3, bucket) == {}


def test_sigterm_mid_multipart_aborts_it_and_reports(
    sync_env: dict[str, str], proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """Kubernetes stops a pod with SIGTERM (activeDeadlineSeconds, node drain)."""
    rel = "library/huge.mp4"
    with (sample.root / rel).open("wb") as fh:
        fh.write(os.urandom(48 * MiB))
    old = time.time() - 3600
    os.utime(sample.root / rel, (old, old))
    env = dict(os.environ, AWS_ENDPOINT_URL_S3=proxy.endpoint, IMMICH_SYNC_WORKERS="1")
    started = threading.Event()
    release = threading.Event()

    def pause(_: Request) -> None:
        started.set()
        release.wait(30)

    proxy.rules.append(hold(lambda r: r.op == "UploadPart" and r.key == PREFIX + rel, pause))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync_engine", "backup", "-o", "json", "--only", "library"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert started.wait(60), "the multipart upload never started"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    release.set()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    report = json.loads(out)
    assert report["status"] == "aborted" and "interrupted" in report["error"]
    assert open_multipart_uploads(s3, bucket) == []
    assert PREFIX + rel not in list_keys(s3, bucket, PREFIX)
    assert report["report_key"]  # the record of what did get uploaded survives the interruption


def test_etag_mismatch_is_retried_then_reported(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """S3's answer must prove it stored our bytes: a wrong ETag is retried, and a persistent one fails."""
    once = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
    always = PREFIX + "profile/b41e9d22-anna/avatar.jpg"
    via_proxy.rules.append(fail(lambda r: r.op == "PutObject" and r.key == once, ("etag", "0" * 32), times=1))
    via_proxy.rules.append(fail(lambda r: r.op == "PutObject" and r.key == always, ("etag", "f" * 32)))
    result = run_sync("backup", "-o", "json", "--only", "profile")
    report = result.json()
    assert result.code == 1
    assert len([r for r in via_proxy.ops("PutObject") if r.key == once]) == 2
    assert len([r for r in via_proxy.ops("PutObject") if r.key == always]) == 3
    assert report["totals"]["failed"] == 1 and report["totals"]["uploaded"] == 2
    assert report["problems"][0]["path"] == "profile/b41e9d22-anna/avatar.jpg"
    assert "expected" in report["problems"][0]["detail"]


def test_http_proxy_from_the_environment_is_honoured(
    run_sync, monkeypatch: pytest.MonkeyPatch, proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """Clusters often reach S3 only through an egress proxy: every request, uploads included, uses it."""
    monkeypatch.setenv("HTTP_PROXY", proxy.endpoint)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    result = run_sync("backup", "-o", "json", "--only", "profile")
    assert result.code == 0, result.err
    assert len(proxy.ops("PutObject")) == result.json()["totals"]["uploaded"] + 3  # + manifest, files cache, report
    assert proxy.counts["ListObjectsV2"] >= 1
