"""A slow uplink must make uploads slow, not fail them.

urllib3 sends a request under the *connect* timeout (10 s) and only switches to the read timeout for
the answer, and since Python 3.5 one `sendall` must finish within that timeout as a whole. A body handed
over in one piece therefore fails whenever the line needs more than 10 s for it: on a home uplink shared
by 16 workers that is every large photo or video part, every night. Bodies go out in small pieces, so
the timeout means what it should: no progress at all for that long.

The hop here reads request bodies at a fixed rate with a small receive buffer, and the connect timeout
is shortened so that a body needing a few seconds shows the failure; what is asserted is the outcome
and the bytes stored, not a duration.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from immich_tui.demo.s3 import LocalS3
from sync_engine.bwlimit import BandwidthSchedule
from sync_engine.config import S3Settings
from sync_engine.store import ObjectStore, StaticCredentials
from tests.conftest import SECRET
from tests.s3proxy import Proxy

MiB = 1024 * 1024


@pytest.mark.parametrize("checksum_mode", ["when_required", "when_supported"])  # direct path, botocore's
@pytest.mark.parametrize("bwlimit", [None, "64M"], ids=["unlimited", "paced"])
def test_a_body_slower_than_the_connect_timeout_still_uploads(
    s3: LocalS3, bucket: str, bwlimit: str | None, checksum_mode: str
) -> None:
    slow = Proxy(s3.endpoint, read_rate=16 * MiB)
    try:
        settings = S3Settings(
            bucket=bucket,
            region="us-east-1",
            endpoint_url=slow.endpoint,
            path_style=True,
            connect_timeout=0.25,  # the body below needs about 1.5 s on this line
            max_attempts=1,
            checksum_mode=checksum_mode,
            bwlimit=BandwidthSchedule.parse(bwlimit) if bwlimit else None,
        )
        store = ObjectStore(settings, credentials=StaticCredentials("AKIATESTWRITER", SECRET))
        body = os.urandom(24 * MiB)
        digest = hashlib.md5(body).digest()
        result = store.put_object("immich/media/upload/big.mp4", body, digest, None)
        assert result.etag == digest.hex()
        part = body[: 8 * MiB]
        upload_id = store.create_multipart("immich/media/upload/huge.mp4", None)
        etag = store.upload_part("immich/media/upload/huge.mp4", upload_id, 1, part, hashlib.md5(part).digest())
        assert etag.strip('"') == hashlib.md5(part).hexdigest()
        store.abort_multipart("immich/media/upload/huge.mp4", upload_id)
    finally:
        slow.close()
    stored = s3.client().get_object(Bucket=bucket, Key="immich/media/upload/big.mp4")["Body"].read()
    assert stored == body
    assert slow.counts["PutObject"] == 1 and slow.counts["UploadPart"] == 1
