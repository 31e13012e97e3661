"""A real HTTP hop between the engine and moto that counts requests and injects faults.

Nothing in the client is patched: the engine talks to this proxy exactly as it would to S3, and the
proxy forwards bytes unchanged (Host header included, so SigV4 signatures stay valid). Rules let a
test answer with an S3 error, drop the connection, or hold a request until the test has changed the
file being uploaded, which is how "file rewritten mid-upload" is made deterministic.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str  # decoded, path-style: /bucket/key
    query: dict[str, list[str]]
    op: str

    @property
    def key(self) -> str:
        return self.path.split("/", 2)[2] if self.path.count("/") >= 2 else ""


def classify(method: str, path: str, query: dict[str, list[str]]) -> str:
    has_key = path.count("/") >= 2 and path.split("/", 2)[2] != ""
    if method == "GET" and not has_key and "versioning" in query:
        return "GetBucketVersioning"
    if method == "GET" and not has_key:
        return (
            "ListObjectsV2"
            if query.get("list-type") == ["2"]
            else ("ListMultipartUploads" if "uploads" in query else "ListObjects")
        )
    if method == "PUT" and has_key:
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


SLOW_PIECE = 64 * 1024

# A rule sees each request and returns None (forward it) or an action.
# ("error", (status, code)) | ("drop", None) | ("etag", "forged ETag") | ("body", (regex, replacement))
Action = tuple[str, object]
Rule = Callable[[Request], Action | None]


@dataclass
class Proxy:
    upstream: str  # http://127.0.0.1:port
    rules: list[Rule] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    log: list[Request] = field(default_factory=list)
    # Bytes per second at which request bodies are read: a slow uplink as the sender feels it. The
    # proxy's receive buffer is then kept small too, or the kernel would absorb megabytes at once.
    read_rate: float | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        up = urlsplit(self.upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self._read_body(length)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query, keep_blank_values=True)
                req = Request(
                    self.command, unquote(parts.path), query, classify(self.command, unquote(parts.path), query)
                )
                with proxy._lock:
                    proxy.counts[req.op] += 1
                    proxy.log.append(req)
                    rules = list(proxy.rules)
                forged_etag = None
                rewrites: list[tuple[bytes, bytes]] = []
                for rule in rules:
                    action = rule(req)
                    if action is None:
                        continue
                    kind, arg = action
                    if kind == "etag":
                        forged_etag = str(arg)
                        continue
                    if kind == "body":
                        rewrites.append(arg)  # type: ignore[arg-type]
                        continue
                    if kind == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if kind == "error":
                        status, code = arg  # type: ignore[misc]
                        payload = (
                            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                            f"<Message>injected by test proxy</Message></Error>"
                        ).encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                for pattern, replacement in rewrites:
                    data = re.sub(pattern, replacement, data)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, f'"{forged_etag}"' if forged_etag and k.lower() == "etag" else v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def _read_body(self, length: int) -> bytes:
                if not length or proxy.read_rate is None:
                    return self.rfile.read(length) if length else b""
                pieces: list[bytes] = []
                started, got = time.monotonic(), 0
                while got < length:
                    piece = self.rfile.read(min(SLOW_PIECE, length - got))
                    if not piece:
                        break
                    pieces.append(piece)
                    got += len(piece)
                    time.sleep(max(0.0, started + got / proxy.read_rate - time.monotonic()))
                return b"".join(pieces)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        if self.read_rate is not None:
            self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_PIECE)
        self._server.server_bind()
        self._server.server_activate()
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def ops(self, op: str) -> list[Request]:
        with self._lock:
            return [r for r in self.log if r.op == op]

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.log.clear()
            self.rules.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def hold(predicate: Callable[[Request], bool], on_hold: Callable[[Request], None], times: int = 1) -> Rule:
    """Run `on_hold` (e.g. rewrite a file) before forwarding the first `times` matching requests."""
    remaining = [times]
    lock = threading.Lock()

    def rule(req: Request) -> Action | None:
        with lock:
            if remaining[0] <= 0 or not predicate(req):
                return None
            remaining[0] -= 1
        on_hold(req)
        return None

    return rule


def fail(predicate: Callable[[Request], bool], action: Action, times: int | None = None) -> Rule:
    """Answer matching requests with `action`, `times` times (None: always)."""
    remaining = [times]
    lock = threading.Lock()

    def rule(req: Request) -> Action | None:
        with lock:
            if not predicate(req) or remaining[0] == 0:
                return None
            if remaining[0] is not None:
                remaining[0] -= 1
        return action

    return rule
