"""Multipart uploads a killed run left open (SIGKILL, OOM): found, aborted when old, kept when young.

S3 bills the parts of an open multipart upload until it is aborted, and a run killed with SIGKILL never
gets to abort its own. The age of an upload is judged on S3's clock alone (its `Initiated` against the
`Date` of the same answer), never against the pod's. The forwarder below sits between the store and
the local S3 server like a real HTTP hop: it can set the `Date` S3 answers with, and it pages the
ListMultipartUploads answer the way S3 does (the local server answers with one page).
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import pytest

from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from sync_engine.config import S3Settings
from sync_engine.store import ObjectStore, StaticCredentials
from tests.conftest import list_keys, open_multipart_uploads
from tests.s3proxy import Proxy, fail

PREFIX = "immich/media/"


class Forwarder:
    """Forwards every request to `upstream` unchanged; answers with `date` as its Date header when set,
    and pages ListMultipartUploads answers by `max-uploads` and the two markers."""

    def __init__(self, upstream: str) -> None:
        self.date: datetime | None = None
        self.no_date = False
        self.pages = 0
        up = urlsplit(upstream)
        forwarder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def send_header(self, keyword: str, value: str) -> None:
                if keyword.lower() == "date" and forwarder.no_date:
                    return
                if keyword.lower() == "date" and forwarder.date is not None:
                    value = format_datetime(forwarder.date, usegmt=True)
                super().send_header(keyword, value)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
                if self.command == "GET" and "uploads" in query and resp.status == 200:
                    data = forwarder.page(data, query)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def page(self, data: bytes, query: dict[str, list[str]]) -> bytes:
        """S3's paging of the uploads (sorted by key, then upload id) after the markers, as the server
        sent them all at once."""
        self.pages += 1
        text = data.decode()
        uploads = re.findall(r"<Upload>.*?</Upload>", text, re.S)

        def order(upload: str) -> tuple[str, str]:
            key = re.search(r"<Key>(.*?)</Key>", upload)
            upload_id = re.search(r"<UploadId>(.*?)</UploadId>", upload)
            assert key is not None and upload_id is not None
            return key[1], upload_id[1]

        uploads.sort(key=order)
        key_marker = query.get("key-marker", [""])[0]
        id_marker = query.get("upload-id-marker", [""])[0]
        if key_marker:
            uploads = [u for u in uploads if order(u) > (escape(key_marker), id_marker or "\uffff")]
        limit = int(query.get("max-uploads", ["1000"])[0])
        page, truncated = uploads[:limit], len(uploads) > limit
        nxt = ""
        if truncated:
            key, upload_id = order(page[-1])
            nxt = f"<NextKeyMarker>{key}</NextKeyMarker><NextUploadIdMarker>{upload_id}</NextUploadIdMarker>"
        head = text[: text.index("<IsTruncated>")] if "<IsTruncated>" in text else text[: text.index("<Upload>")]
        return (
            f"{head}<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{nxt}"
            f"{''.join(page)}</ListMultipartUploadsResult>"
        ).encode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def forwarder(s3: LocalS3) -> Iterator[Forwarder]:
    f = Forwarder(s3.endpoint)
    yield f
    f.close()


def store_at(endpoint: str, bucket: str) -> ObjectStore:
    settings = S3Settings(bucket=bucket, region="us-east-1", endpoint_url=endpoint, max_attempts=1)
    return ObjectStore(settings, credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET))


def start_upload(s3: LocalS3, bucket: str, key: str) -> str:
    """A multipart upload with one part sent, as a run killed mid-file leaves it."""
    client = s3.client()
    upload_id = str(client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"p" * 1024)
    return upload_id


def open_keys(s3: LocalS3, bucket: str) -> list[str]:
    return sorted(u["Key"] for u in open_multipart_uploads(s3, bucket))


def initiated(s3: LocalS3, bucket: str) -> datetime:
    (first, *_) = open_multipart_uploads(s3, bucket)
    value: Any = first["Initiated"]
    return value.astimezone(UTC)


def test_uploads_older_than_the_limit_are_aborted_and_only_under_the_prefix(s3: LocalS3, bucket: str) -> None:
    from sync_engine.orphans import abort_orphans

    start_upload(s3, bucket, PREFIX + "library/u/2024/VID_0001.mp4")
    start_upload(s3, bucket, PREFIX + "upload/u/VID_0002.mp4")
    start_upload(s3, bucket, "immich/postgres/base/data.tar")  # the database archive's own: not ours

    report = abort_orphans(store_at(s3.endpoint, bucket), PREFIX, 0)
    assert (report.found, report.aborted, report.kept_recent, report.errors) == (2, 2, 0, [])
    assert report.note == ""
    assert open_keys(s3, bucket) == ["immich/postgres/base/data.tar"]


def test_age_is_judged_on_s3s_clock_not_the_pods(s3: LocalS3, bucket: str, forwarder: Forwarder) -> None:
    """S3's Date says the upload started ten minutes ago, whatever the pod's clock says (here: years
    later): with a one-hour limit it may belong to a run still going, so it is kept and counted."""
    from sync_engine.orphans import abort_orphans

    start_upload(s3, bucket, PREFIX + "library/u/big.mp4")
    forwarder.date = initiated(s3, bucket) + timedelta(minutes=10)
    store = store_at(forwarder.endpoint, bucket)

    listing = store.list_multipart_uploads(PREFIX)
    assert listing.server_time == pytest.approx(forwarder.date.timestamp())
    (upload,) = listing.uploads
    assert upload.key == PREFIX + "library/u/big.mp4"
    assert upload.initiated == pytest.approx(initiated(s3, bucket).timestamp())

    kept = abort_orphans(store, PREFIX, 3600)
    assert (kept.found, kept.aborted, kept.kept_recent, kept.errors) == (1, 0, 1, [])
    assert open_keys(s3, bucket) == [PREFIX + "library/u/big.mp4"]

    aborted = abort_orphans(store, PREFIX, 300)
    assert (aborted.found, aborted.aborted, aborted.kept_recent, aborted.errors) == (1, 1, 0, [])
    assert open_keys(s3, bucket) == []


def test_without_s3s_time_nothing_is_aborted(s3: LocalS3, bucket: str, forwarder: Forwarder) -> None:
    """No Date header, no way to tell an orphan from an upload still going without the pod's clock."""
    from sync_engine.orphans import abort_orphans

    start_upload(s3, bucket, PREFIX + "library/u/big.mp4")
    forwarder.no_date = True
    report = abort_orphans(store_at(forwarder.endpoint, bucket), PREFIX, 0)
    assert (report.found, report.aborted, report.kept_recent) == (1, 0, 1)
    assert "Date" in report.note
    assert open_keys(s3, bucket) == [PREFIX + "library/u/big.mp4"]


def test_the_listing_is_read_page_by_page(s3: LocalS3, bucket: str, forwarder: Forwarder) -> None:
    """Two uploads of the same key and more uploads than one page holds: each is found exactly once."""
    from sync_engine.orphans import abort_orphans

    keys = [f"{PREFIX}upload/u/IMG_{n:04}.jpg" for n in range(5)]
    for key in [*keys, keys[2]]:
        start_upload(s3, bucket, key)
    store = store_at(forwarder.endpoint, bucket)
    listing = store.list_multipart_uploads(PREFIX, page_size=2)
    assert forwarder.pages == 3
    assert sorted(u.key for u in listing.uploads) == sorted([*keys, keys[2]])
    assert len({u.upload_id for u in listing.uploads}) == 6

    report = abort_orphans(store, PREFIX, 0)
    assert (report.found, report.aborted) == (6, 6)
    assert open_keys(s3, bucket) == []


def test_a_listing_not_granted_is_a_note_not_an_error(s3: LocalS3, bucket: str, proxy: Proxy) -> None:
    from sync_engine.orphans import abort_orphans

    start_upload(s3, bucket, PREFIX + "upload/u/a.mp4")
    proxy.rules.append(fail(lambda r: r.op == "ListMultipartUploads", ("error", (403, "AccessDenied"))))
    report = abort_orphans(store_at(proxy.endpoint, bucket), PREFIX, 0)
    assert (report.found, report.aborted, report.kept_recent, report.errors) == (0, 0, 0, [])
    assert report.note == "s3:ListBucketMultipartUploads not granted: orphaned uploads not checked"
    assert open_keys(s3, bucket) == [PREFIX + "upload/u/a.mp4"]


def test_an_abort_that_fails_is_one_line_and_the_others_are_still_aborted(
    s3: LocalS3, bucket: str, proxy: Proxy
) -> None:
    from sync_engine.orphans import abort_orphans

    refused = PREFIX + "upload/u/a.mp4"
    start_upload(s3, bucket, refused)
    start_upload(s3, bucket, PREFIX + "upload/u/b.mp4")
    proxy.rules.append(
        fail(lambda r: r.op == "AbortMultipartUpload" and r.key == refused, ("error", (403, "AccessDenied")))
    )
    report = abort_orphans(store_at(proxy.endpoint, bucket), PREFIX, 0)
    assert (report.found, report.aborted, len(report.errors)) == (2, 1, 1)
    assert refused in report.errors[0] and "\n" not in report.errors[0]
    assert open_keys(s3, bucket) == [refused]


def test_an_outage_while_aborting_stops_the_check_with_one_line(s3: LocalS3, bucket: str, proxy: Proxy) -> None:
    from sync_engine.orphans import abort_orphans

    for name in ("a", "b", "c"):
        start_upload(s3, bucket, f"{PREFIX}upload/u/{name}.mp4")
    proxy.rules.append(fail(lambda r: r.op == "AbortMultipartUpload", ("error", (503, "ServiceUnavailable"))))
    report = abort_orphans(store_at(proxy.endpoint, bucket), PREFIX, 0)
    assert (report.found, report.aborted, len(report.errors)) == (3, 0, 1)
    assert report.note == "stopped by an S3 outage: 2 open uploads not judged"
    assert len(proxy.ops("AbortMultipartUpload")) == 1


def test_only_the_uploads_a_shard_owns_are_touched(s3: LocalS3, bucket: str) -> None:
    """Shards of an Indexed Job run side by side under one prefix: each judges only its own keys."""
    from sync_engine.orphans import abort_orphans

    mine, theirs = PREFIX + "upload/u/mine.mp4", PREFIX + "upload/u/theirs.mp4"
    start_upload(s3, bucket, mine)
    start_upload(s3, bucket, theirs)
    report = abort_orphans(store_at(s3.endpoint, bucket), PREFIX, 0, owns=lambda key: key == mine)
    assert (report.found, report.aborted) == (1, 1)
    assert open_keys(s3, bucket) == [theirs]


def test_a_run_killed_mid_upload_leaves_an_upload_the_next_check_aborts(
    s3: LocalS3, bucket: str, tmp_path: Any
) -> None:
    """The real thing: a process sending a multipart upload is SIGKILLed between parts."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "killed.py"
    script.write_text(
        "import sys, time, hashlib\n"
        "from sync_engine.config import S3Settings\n"
        "from sync_engine.store import ObjectStore, StaticCredentials\n"
        f"s = ObjectStore(S3Settings(bucket={bucket!r}, region='us-east-1', endpoint_url={s3.endpoint!r}),"
        f" credentials=StaticCredentials({DEMO_KEY_ID!r}, {DEMO_SECRET!r}))\n"
        f"key = {PREFIX + 'library/u/killed.mp4'!r}\n"
        "uid = s.create_multipart(key, None)\n"
        "body = b'k' * (5 * 1024 * 1024)\n"
        "s.upload_part(key, uid, 1, body, hashlib.md5(body).digest())\n"
        "print('sent', flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.getcwd()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "sent"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert open_keys(s3, bucket) == [PREFIX + "library/u/killed.mp4"]

    from sync_engine.orphans import abort_orphans

    report = abort_orphans(store_at(s3.endpoint, bucket), PREFIX, 0)
    assert (report.found, report.aborted) == (1, 1)
    assert open_keys(s3, bucket) == []
    assert list_keys(s3, bucket) == {}  # the part sent never became an object
