"""Counting reverse proxy in front of the moto S3 server.

Counting on the wire is the only tool-independent way to check how many LIST/PUT requests a client
really sends. Requests are forwarded byte-for-byte with the original Host header, so SigV4 signatures
stay valid. It runs as its own process so its CPU never lands in the client's or the bench's figures.

Control endpoints (bucket names cannot contain '_', so they never collide with S3 paths):
  GET  /__bench__/counts  -> JSON {"LIST": n, "PUT": n, ...}
  POST /__bench__/reset   -> zero the counters

Usage: python bench/countproxy.py --upstream 127.0.0.1:5000 [--port 0] [--log FILE]
Prints the listening port on the first line of stdout once ready.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO
from urllib.parse import parse_qsl, urlsplit

CONTROL = "/__bench__/"
# Hop-by-hop headers, plus Expect: the proxy answers 100-continue itself and SigV4 never signs Expect.
DROP_REQUEST = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "upgrade",
    "expect",
}
DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length"}
LIST_PARAMS = {
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "continuation-token",
    "start-after",
    "marker",
    "encoding-type",
    "fetch-owner",
}


def classify(method: str, target: str, host: str) -> str:
    """Map a request to an S3 operation class; path-style and virtual-host style are both understood."""
    parts = urlsplit(target)
    query = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    path = parts.path.lstrip("/")
    hostname = host.rsplit(":", 1)[0]
    virtual = not (hostname.replace(".", "").isdigit() or hostname == "localhost" or hostname.startswith("["))
    key = path if virtual else (path.split("/", 1)[1] if "/" in path else "")
    bucket_level = key == ""
    if method == "GET" and bucket_level and query <= LIST_PARAMS:
        return "LIST"
    if method == "POST" and "uploads" in query:
        return "POST_CREATE_MULTIPART"
    if method == "PUT" and "uploadId" in query:
        return "PUT_PART"
    if bucket_level:
        return f"{method}_BUCKET"
    return method


class Stats:
    def __init__(self, log: IO[str] | None) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._log = log

    def add(self, kind: str, method: str, target: str, status: int) -> None:
        with self._lock:
            self._counts[kind] += 1
            self._counts["TOTAL"] += 1
            if self._log is not None:
                self._log.write(f"{kind}\t{method}\t{status}\t{target}\n")

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            if self._log is not None:
                self._log.flush()
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], upstream: tuple[str, int], stats: Stats) -> None:
        super().__init__(addr, Handler)
        self.upstream = upstream
        self.stats = stats
        self.local = threading.local()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        """Silence per-request stderr logging; the stats log covers it."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Forward the chunked stream verbatim (aws-chunked payloads are signed chunk by chunk).
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _upstream(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.server.local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(*self.server.upstream, timeout=600)
            self.server.local.conn = conn
        return conn

    def _forward(self, body: bytes) -> http.client.HTTPResponse:
        for attempt in (0, 1):
            conn = self._upstream(fresh=attempt == 1)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in DROP_REQUEST:
                        conn.putheader(name, value)
                conn.endheaders(body or None)
                return conn.getresponse()
            except (ConnectionError, http.client.HTTPException):
                # A kept-alive upstream connection may have been closed by the server; retry once fresh.
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _control(self) -> None:
        if self.path.startswith(CONTROL + "reset"):
            self.server.stats.reset()
            payload = b"{}"
        else:
            payload = json.dumps(self.server.stats.snapshot()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self) -> None:
        if self.path.startswith(CONTROL):
            self._control()
            return
        body = self._read_body()
        try:
            resp = self._forward(body)
            data = resp.read()
        except OSError as exc:
            self.send_error(502, f"upstream error: {exc}")
            return
        kind = classify(self.command, self.path, self.headers.get("Host", ""))
        self.server.stats.add(kind, self.command, self.path, resp.status)
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in DROP_RESPONSE:
                self.send_header(name, value)
        if self.command == "HEAD":
            # HEAD carries the object's length but no body; pass the upstream value through.
            self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
        elif resp.status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--upstream", required=True, help="host:port of the S3 server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", help="append one line per proxied request to this file")
    args = parser.parse_args(argv)
    up_host, up_port = args.upstream.rsplit(":", 1)
    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115 - lives until exit
    server = ProxyServer((args.host, args.port), (up_host, int(up_port)), Stats(log))
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
