"""The direct read path answers exactly as botocore does, and leaves every failure to botocore.

A quiet night's requests (ListObjectsV2, ListMultipartUploads, the GET of the files cache) are sent by
`direct.DirectReader` rather than through a botocore client, which is then never built. Each test runs
the same operation on two stores against the same bucket: one on the direct path, one whose checksum
mode keeps every request on botocore. Listings of awkward keys, more than one page, delimited listings
and open multipart uploads must come out identical; every refusal (a missing bucket or key, a wrong
secret or key id, a policy denying the request, an unreachable endpoint) must raise the same error,
with the same one-line message and exit code. The URL layout worked out without a client must be
the one botocore presigns, over a matrix of endpoints, regions and buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3, bucket_policy
from sync_engine.config import S3Settings
from sync_engine.direct import direct_base_url, epoch, presigned_base
from sync_engine.errors import EngineError
from sync_engine.store import ObjectStore, StaticCredentials, _make_client, is_outage
from tests.conftest import use_sync_env
from tests.s3proxy import Proxy, fail

PREFIX = "immich/media/"
# Every character class a key can hold that XML or a URL treats specially (moto refuses "\n" in a key).
AWKWARD = [
    "a b.jpg",
    "plus+sign.jpg",
    "per%cent.jpg",
    "pct%2Fslash.jpg",
    "q?u=1&x.jpg",
    "hash#.jpg",
    "~tilde.jpg",
    "ünïcødé/ファイル.jpg",
    "emoji 😀.jpg",
    "dir/sub dir/x.jpg",
    " leading",
    "trailing ",
    "a//double.jpg",
    "quote\"'.jpg",
    "back\\slash",
    "amp&lt;.jpg",
    "<tag>.jpg",
    "]]>.jpg",
    "cr\rx.jpg",
    "tab\tx.jpg",
    "ctl\x01.jpg",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    use_sync_env(monkeypatch, {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"})
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def pair(
    endpoint: str, bucket: str, keys: tuple[str, str] = (DEMO_KEY_ID, DEMO_SECRET), **extra: Any
) -> tuple[ObjectStore, ObjectStore]:
    """A store on the direct path and one on botocore alone, for the same bucket."""
    settings = S3Settings(bucket=bucket, region="us-east-1", endpoint_url=endpoint, max_attempts=2, **extra)
    direct = ObjectStore(settings, credentials=StaticCredentials(*keys))
    boto = ObjectStore(replace(settings, checksum_mode="when_supported"), credentials=StaticCredentials(*keys))
    return direct, boto


def built(store: ObjectStore) -> bool:
    """Whether the store has built its botocore client."""
    return store._connection._client is not None


def alike(op: Callable[[ObjectStore], Any], direct: ObjectStore, boto: ObjectStore) -> tuple[Any, ...]:
    """The operation's outcome on the direct store, asserted equal to the botocore store's."""
    got, want = outcome(lambda: op(direct)), outcome(lambda: op(boto))
    assert got == want, op.__name__
    return got


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", call())
    except EngineError as exc:
        code = getattr(exc, "code", "")
        status = getattr(exc, "status", None)
        transport = getattr(exc, "transport", None)
        return ("error", type(exc).__name__, str(exc), code, status, transport, exc.exit_code, is_outage(exc))


def listing(store: ObjectStore, prefix: str = PREFIX, **kwargs: Any) -> list[list[Any]]:
    return list(store.list_pages(prefix, **kwargs))


def put_many(s3: LocalS3, bucket: str, keys: list[str]) -> None:
    client = s3.client()  # thread-safe once built
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=k.encode()[-7:]), keys))


# -- answers ---------------------------------------------------------------------------------------


def test_awkward_keys_list_exactly_as_botocore_lists_them(s3: LocalS3, bucket: str) -> None:
    put_many(s3, bucket, [PREFIX + k for k in AWKWARD] + ["elsewhere/x"])
    direct, boto = pair(s3.endpoint, bucket)
    got = listing(direct)
    assert got == listing(boto)
    assert sorted(o.key for page in got for o in page) == sorted(PREFIX + k for k in AWKWARD)
    assert all(o.etag and o.size and o.last_modified > 0 for page in got for o in page)
    for after in (PREFIX + "a b.jpg", PREFIX + "q?u=1&x.jpg", PREFIX + "ü"):
        assert listing(direct, start_after=after) == listing(boto, start_after=after)
    assert listing(direct, delimiter="/") == listing(boto, delimiter="/")
    folders = list(direct.list_folders(PREFIX))
    assert folders == list(boto.list_folders(PREFIX))
    assert folders == ["a", "dir", "ünïcødé"]
    for key in (PREFIX + "plus+sign.jpg", PREFIX + "cr\rx.jpg", PREFIX + "missing"):
        assert direct.listed_etag(key) == boto.listed_etag(key)
    assert direct.get_bytes(PREFIX + "emoji 😀.jpg") == boto.get_bytes(PREFIX + "emoji 😀.jpg")
    direct.check_access(PREFIX)
    boto.check_access(PREFIX)
    assert not built(direct), "the direct path answered all of these"
    assert direct.request_counts() == boto.request_counts()


def test_more_than_a_page_is_followed_by_continuation_token(s3: LocalS3, bucket: str) -> None:
    keys = [f"{PREFIX}upload/u/{n:05d} +%.jpg" for n in range(1003)] + [f"{PREFIX}library/{n}/x" for n in range(3)]
    put_many(s3, bucket, keys)
    direct, boto = pair(s3.endpoint, bucket)
    got = listing(direct)
    assert [len(page) for page in got] == [1000, 6]
    assert got == listing(boto)
    assert [o.key for page in got for o in page] == sorted(keys)
    assert listing(direct, start_after=keys[500]) == listing(boto, start_after=keys[500])
    assert not built(direct)
    assert direct.request_counts() == boto.request_counts() == {"ListObjectsV2": 3}


def test_open_multipart_uploads_page_by_page(s3: LocalS3, bucket: str) -> None:
    from tests.test_orphans import Forwarder  # pages the answer by max-uploads, as S3 does

    client = s3.client()
    for key in ("b", "a b", "a b", "plus+", "ü/ファイル", "c"):
        client.create_multipart_upload(Bucket=bucket, Key=PREFIX + key)
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/x")
    forwarder = Forwarder(s3.endpoint)
    try:
        direct, boto = pair(forwarder.endpoint, bucket)
        for page_size in (2, 1000):
            got = direct.list_multipart_uploads(PREFIX, page_size=page_size)
            want = boto.list_multipart_uploads(PREFIX, page_size=page_size)
            assert got.uploads == want.uploads
            assert len(got.uploads) == 6
            assert got.server_time is not None and want.server_time is not None
            assert abs(got.server_time - want.server_time) < 5
        assert not built(direct)
        assert direct.request_counts() == boto.request_counts() == {"ListMultipartUploads": 3 + 1}
    finally:
        forwarder.close()


def test_a_server_that_ignores_encoding_type_is_read_as_botocore_reads_it(
    s3: LocalS3, bucket: str, proxy: Proxy
) -> None:
    """Without <EncodingType> in the answer, keys are taken as they come, by both paths alike."""
    put_many(s3, bucket, [PREFIX + k for k in ("a b.jpg", "plus+sign.jpg", "ünï.jpg")])
    proxy.rules.append(lambda r: ("body", (rb"<EncodingType>url</EncodingType>", b"")))
    direct, boto = pair(proxy.endpoint, bucket)
    got = listing(direct)
    assert got == listing(boto)
    assert "a%20b.jpg" in {o.key.removeprefix(PREFIX) for page in got for o in page}
    assert not built(direct)


def test_spaces_written_as_plus_are_decoded_as_botocore_decodes_them(s3: LocalS3, bucket: str, proxy: Proxy) -> None:
    """AWS's url encoding writes a space as "+" (and "+" as "%2B"); the local server writes "%20"."""
    put_many(s3, bucket, [PREFIX + k for k in ("a b.jpg", "plus+sign.jpg", "dir x/y z.jpg")])
    proxy.rules.append(lambda r: ("body", (rb"%20", b"+")) if r.op == "ListObjectsV2" else None)
    direct, boto = pair(proxy.endpoint, bucket)
    got = listing(direct)
    assert got == listing(boto)
    assert {o.key.removeprefix(PREFIX) for page in got for o in page} == {"a b.jpg", "plus+sign.jpg", "dir x/y z.jpg"}
    assert list(direct.list_folders(PREFIX)) == list(boto.list_folders(PREFIX)) == ["dir x"]
    assert not built(direct)


def test_timestamps_read_as_botocore_reads_them() -> None:
    from botocore.utils import parse_timestamp

    for text in (
        "2026-12-01T13:20:10.000Z",
        "2026-12-01T13:20:10Z",
        "2026-12-01T13:20:10.1Z",
        "2026-12-01T13:20:10.123456Z",
        "2026-12-01T13:20:10.123456789Z",
        "2026-12-01T13:20:10+02:00",
        "Tue, 01 Dec 2026 13:20:10 GMT",
        "1796131210",
    ):
        assert epoch(text) == parse_timestamp(text).timestamp(), text


# -- failures: botocore's own ----------------------------------------------------------------------


def test_a_failed_direct_read_is_sent_again_through_botocore(s3: LocalS3, bucket: str, proxy: Proxy) -> None:
    """A 503, a dropped connection: botocore retries (and would describe the failure) as before."""
    put_many(s3, bucket, [PREFIX + "x.jpg", "immich-sync-reports/r.json"])
    direct, boto = pair(proxy.endpoint, bucket)
    proxy.rules.append(fail(lambda r: r.op == "ListObjectsV2", ("error", (503, "SlowDown")), times=1))
    proxy.rules.append(fail(lambda r: r.op == "GetObject", ("drop", None), times=1))
    assert listing(direct) == listing(boto)
    assert direct.get_bytes("immich-sync-reports/r.json") == boto.get_bytes("immich-sync-reports/r.json")
    assert built(direct)
    assert direct.request_counts() == boto.request_counts() == {"ListObjectsV2": 1, "GetObject": 1}


def test_missing_bucket_and_key_fail_alike(s3: LocalS3, bucket: str) -> None:
    put_many(s3, bucket, [PREFIX + "x.jpg"])
    for name in (bucket, f"{bucket}-missing"):
        direct, boto = pair(s3.endpoint, name)
        for op in OPERATIONS:
            alike(op, direct, boto)
    direct, _ = pair(s3.endpoint, f"{bucket}-missing")
    (_, kind, message, code, *_) = outcome(lambda: listing(direct))
    assert (kind, code) == ("RequestError", "NoSuchBucket") and "the bucket does not exist" in message


def test_an_unreachable_endpoint_fails_alike(bucket: str) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed
    direct, boto = pair(endpoint, bucket, connect_timeout=2.0)
    for op in OPERATIONS:
        got = alike(op, direct, boto)
        assert got[0] == "error" and got[5] is True and got[6] == 3  # transport: exit 3


def _list(store: ObjectStore) -> Any:
    return listing(store)


def _folders(store: ObjectStore) -> Any:
    return list(store.list_folders(PREFIX))


def _uploads(store: ObjectStore) -> Any:
    return store.list_multipart_uploads(PREFIX).uploads


def _get(store: ObjectStore) -> Any:
    return store.get_bytes(PREFIX + "x.jpg")


def _get_missing(store: ObjectStore) -> Any:
    return store.get_bytes(PREFIX + "missing.jpg")


def _access(store: ObjectStore) -> Any:
    return store.check_access(PREFIX)


OPERATIONS = (_list, _folders, _uploads, _get, _get_missing, _access)

IAM_BUCKET = "immich-offsite-direct-iam"
WRITER_POLICY = (
    (Path(__file__).parent.parent / "deploy/iam/media-writer.json").read_text().replace("BUCKET_NAME", IAM_BUCKET)
)


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[tuple[LocalS3, dict[str, tuple[str, str]]]]:
    with LocalS3() as server:
        server.client().create_bucket(Bucket=IAM_BUCKET)
        server.client().put_object(Bucket=IAM_BUCKET, Key=PREFIX + "x.jpg", Body=b"x")
        keys = {
            "writer": server.iam_user("direct-writer", WRITER_POLICY),
            "lister": server.iam_user("direct-lister", bucket_policy(IAM_BUCKET, ["s3:ListBucket"])),
            "nobody": server.iam_user("direct-nobody", None),
        }
        server.enforce_iam()
        yield server, keys


@pytest.mark.parametrize(
    ("who", "codes"),
    [
        ("writer", {"AccessDenied"}),  # lists, never reads media
        ("lister", {"AccessDenied"}),
        ("nobody", {"AccessDenied"}),
        ("wrong-secret", {"SignatureDoesNotMatch"}),
        ("unknown-key", {"InvalidAccessKeyId"}),
    ],
)
def test_refusals_fail_alike(iam_s3: tuple[LocalS3, dict[str, tuple[str, str]]], who: str, codes: set[str]) -> None:
    server, keys = iam_s3
    key = {
        "wrong-secret": (keys["writer"][0], "not-the-secret"),
        "unknown-key": ("AKIAUNKNOWN000000000", "x"),
    }.get(who) or keys[who]
    direct, boto = pair(server.endpoint, IAM_BUCKET, keys=key)
    seen = set()
    for op in OPERATIONS:
        got = alike(op, direct, boto)
        if got[0] == "error":
            seen.add(got[3])
            assert "not-the-secret" not in got[2]
    assert codes <= seen


# -- where requests go -----------------------------------------------------------------------------

ENDPOINTS = [
    None,
    "http://127.0.0.1:9000",
    "http://localhost:9000/",
    "https://minio.example.com",
    "https://s3.eu-central-003.backblazeb2.com",
    "https://host.example/base/",
    "https://host.example:8443/base",
    "http://[::1]:9000",
    "HTTPS://Mixed.Example.com",
    "https://s3.amazonaws.com",
]
REGIONS = ["us-east-1", "eu-central-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1", "eusc-de-east-1"]
BUCKETS = [
    "mybucket",
    "a-b-c",
    "ab",
    "abc",
    "my.bucket",
    "My_Bucket",
    "1bucket",
    "a" * 63,
    "a" * 64,
    "xn--abc",
    "sthree-abc",
    "abc-s3alias",
    "abc--ol-s3",
    "abc--x-s3",
    "192.168.1.1",
    "a-.b",
]


def test_the_layout_without_a_client_is_the_one_botocore_presigns(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.session

    shared = botocore.session.get_session()  # one session, so S3's model is loaded once, not per client
    monkeypatch.setattr(botocore.session, "get_session", lambda: shared)
    covered = 0
    for endpoint in ENDPOINTS:
        for region in REGIONS:
            for path_style in (False, True):
                settings = S3Settings(bucket="probe", region=region, endpoint_url=endpoint, path_style=path_style)
                client, _ = _make_client(settings, StaticCredentials("AKIAEXAMPLE", "secret"))
                for bucket in BUCKETS:
                    ours = direct_base_url(replace(settings, bucket=bucket))
                    if ours is None:
                        continue
                    covered += 1
                    assert ours == presigned_base(client, bucket), (endpoint, region, path_style, bucket)
    assert covered > 300
    # the common settings are all covered: any S3-compatible endpoint, AWS's own regions
    for endpoint, region in [("https://minio.example.com", "garage"), (None, "us-east-1"), (None, "eu-central-1")]:
        for path_style in (False, True):
            assert direct_base_url(S3Settings("my-bucket", region, endpoint, path_style)) is not None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AWS_USE_FIPS_ENDPOINT", "true"),
        ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
        ("AWS_S3_US_EAST_1_REGIONAL_ENDPOINT", "regional"),
        ("AWS_DATA_PATH", "/somewhere"),
        ("AWS_ENDPOINT_URL", "https://elsewhere.example"),
        ("AWS_ENDPOINT_URL_S3", "https://elsewhere.example"),
    ],
)
def test_what_moves_the_endpoint_leaves_the_layout_to_botocore(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert direct_base_url(S3Settings("my-bucket", "eu-central-1")) is None


def test_a_config_file_that_may_move_the_endpoint_leaves_the_layout_to_botocore(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    settings = S3Settings("my-bucket", "eu-central-1", "https://minio.example.com")
    config.write_text("[default]\nregion = eu-central-1\n")
    assert direct_base_url(settings) == "https://minio.example.com/my-bucket/"
    config.write_text("[default]\ns3 =\n  use_accelerate_endpoint = true\n")
    assert direct_base_url(settings) is None
    config.write_text("[default]\nuse_fips_endpoint = true\n")
    assert direct_base_url(settings) is None
