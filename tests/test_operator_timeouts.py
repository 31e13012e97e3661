"""An operator waits on the bucket reads of `status`, the TUI and `offsite`: they give up after a few
tries within seconds, where the nightly engine (nobody waiting, a long night ahead) keeps retrying.

A server that accepts each connection and drops it at once answers every attempt with a reset, so the
attempts the client makes are counted exactly by the connections it opens.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from immich_tui.services.offsite import INTERACTIVE_ATTEMPTS, Offsite, OffsiteUnavailable, resolve_reader
from sync_engine.config import S3Settings


class DroppingServer:
    """Accepts TCP connections and closes each one without a byte: every request fails at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dropping() -> Iterator[DroppingServer]:
    server = DroppingServer()
    yield server
    server.close()


def _env(url: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "AKIAOPERATORVIEW",
        "AWS_SECRET_ACCESS_KEY": "operator-view-secret-not-shown",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": url,
        "BUCKET_NAME": "immich-offsite",
        "MEDIA_PREFIX": "immich/media",
    }


def test_an_operator_read_gives_up_after_a_few_quick_tries(dropping: DroppingServer) -> None:
    reader = resolve_reader(None, "immich", _env(dropping.url))
    engine = S3Settings(bucket="immich-offsite", region="us-east-1")
    assert reader.settings.max_attempts == INTERACTIVE_ATTEMPTS < engine.max_attempts
    assert reader.settings.connect_timeout <= 5 and reader.settings.read_timeout <= 30
    with pytest.raises(OffsiteUnavailable) as failed:
        Offsite(reader).state(listing=False, report_limit=3)
    # the direct reader's one request, which on a transport failure hands over to botocore's attempts
    assert dropping.connections == 1 + INTERACTIVE_ATTEMPTS, dropping.connections
    assert "\n" not in str(failed.value) and "operator-view-secret" not in str(failed.value)
