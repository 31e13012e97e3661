"""What a leaked writer key can put under the report prefix: run reports and manifests that look like a run's.

Each helper builds the objects only; the test writes them with whichever keys it is about (the writer's,
to prove the policy lets it, or an admin's where IAM is not the point).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import time
from typing import Any

PREFIX = "immich/media/"
REPORTS = "immich/sync-reports/"
STAMP = "%Y%m%dT%H%M%SZ"


def stamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime(STAMP)


def iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_key(started: float | str, run_id: str = "0badc0de", coverage: str = "00000000", status: str = "ok") -> str:
    """A report key as the engine names one: `<start>-<run id>-<coverage>-<status>-<listing>.json`."""
    text = started if isinstance(started, str) else stamp(started)
    return f"{REPORTS}{text}-{run_id}-{coverage}-{status}-full.json"


def planted_manifest_key(n: int = 0) -> str:
    """A manifest key that sorts after every real run's (larger n sorts later) yet is not from the future.

    A test that plants a bad manifest to see how readers cope needs it to be the newest one they trust:
    a minute or two ahead of now is later than any run the test made and well inside the clock-skew
    allowance, so the manifest is read rather than dismissed as forged.
    """
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    base = _PLANT_BASE.setdefault(test, time.time() + 60)
    return manifest_key(run_key(base + n))


# One base time per test, so every call in a test names the same keys and a later test gets fresh ones.
_PLANT_BASE: dict[str, float] = {}


def manifest_key(report_key: str) -> str:
    return report_key.removesuffix(".json") + ".manifest.jsonl.gz"


def manifest(*lines: dict[str, Any]) -> bytes:
    return gzip.compress(b"".join(json.dumps(line).encode() + b"\n" for line in lines))


def line_for(key: str, data: bytes, mtime: float = 1_700_000_000.0) -> dict[str, Any]:
    """The manifest line a backup would write for `data` uploaded in one PUT."""
    return {"key": key, "size": len(data), "mtime": mtime, "etag": hashlib.md5(data).hexdigest(), "part_size": None}


def report_body(real: dict[str, Any], key: str, started: str, finished: str, **changes: Any) -> bytes:
    """A copy of a real run report, renamed and redated: everything a reader checks looks right."""
    body = dict(real)
    body.update(
        run_id=key.rsplit("/", 1)[1].split("-")[1],
        started_at=started,
        finished_at=finished,
        report_key=key,
        manifest_key=manifest_key(key),
        files_cache_key="",
        **changes,
    )
    return json.dumps(body, indent=2).encode()


def newest_modified(client: Any, bucket: str) -> float:
    """The LastModified of the newest version in the bucket (S3's clock), in epoch seconds."""
    newest = 0.0
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            newest = max(newest, entry["LastModified"].timestamp())
    return newest


def after(moment: float) -> None:
    """Wait until S3's one-second LastModified can tell what is written next from `moment`."""
    wait = int(moment) + 2 - time.time()
    if wait > 0:
        time.sleep(wait)


def assert_verify_names_the_attack(
    data: dict[str, Any], text: str, photo: str, before_attack: float, forged_report: str, forged_manifest: str
) -> None:
    """What `verify` (its JSON `data` and its text output `text`) must say after the leaked-key attack:
    the overwritten original with the dates either side of the attack, and the forged report and
    manifest as untrusted because they are dated in the future — on any S3 server the drill runs on."""
    named = {(p["kind"], p["key"]) for p in data["problems"]}
    hits = [p for p in data["problems"] if p["key"] == PREFIX + photo]
    assert [(p["kind"], p.get("tampered")) for p in hits] == [("size-mismatch", "overwritten")]
    assert hits[0]["first_upload"] <= iso(before_attack) < hits[0]["changed"][0]
    assert ("untrusted-report", forged_report) in named and ("untrusted-manifest", forged_manifest) in named
    assert data["overwritten"] == 1 and data["untrusted_reports"] == 2 and data["size_mismatch"] == 1
    reasons = {p["key"]: p.get("reason") for p in data["problems"] if p["kind"].startswith("untrusted-")}
    assert reasons[forged_report] == reasons[forged_manifest] == "future"
    assert "MISMATCH" in text and photo in text and forged_report in text
