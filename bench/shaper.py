"""Shaping TCP relay: a household uplink between a backup tool and a local S3 server.

A local S3 server answers in microseconds over loopback, so every tool looks fast and the one that
wins is the one that burns the least CPU. A home uplink is different: one pipe of a few tens of
Mbit/s up, tens of milliseconds to the region, shared by every connection the tool opens. This relay
puts that pipe between the tool and the server, so the bench can compare tools against the physical
floor (bytes ÷ bandwidth + round trips) rather than against each other's CPU.

The model, per direction (up = client to server, down = server to client):

- One bottleneck link shared by all connections. Each chunk read from any connection is serialised
  at the link's bandwidth in arrival order (departure = max(now, link free) + len/bandwidth) and
  delivered RTT/2 later. Chunks are at most 64 KiB, so connections interleave on the link.
- A new connection pays one RTT before its first byte passes (the TCP handshake to a distant region).
- Per-connection backpressure: a connection is not read while its undelivered bytes exceed a window
  (like a socket buffer; at least the link's bandwidth-delay product) or while its destination is not
  keeping up, so memory stays bounded and the sender feels the link.

Bytes are relayed unchanged (Host header included), so SigV4 signatures stay valid.

Every --stats-interval seconds a line `<monotonic s> <up bytes> <down bytes> <connections>` (cumulative
bytes delivered across the link, connections accepted) is appended to --stats and flushed, so a
benchmark can compute the rate over any window; a last line is written on SIGTERM/SIGINT. The
timestamp is CLOCK_MONOTONIC, the same clock as the bench's time.monotonic().

Usage: python bench/shaper.py --upstream 127.0.0.1:7480 [--rtt-ms 40] [--up-mbit 50] [--down-mbit 250]
                              [--window-kib 512] [--stats FILE] [--stats-interval 0.25] [--port 0]
Prints the listening port on the first line of stdout once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

READ_SIZE = 64 * 1024
# Kernel receive buffer of accepted sockets: small, so bytes wait in the sender rather than in a
# multi-megabyte loopback buffer the link model never sees.
RCVBUF = 256 * 1024
# Destination write buffer above which its source connection stops being read.
WRITE_HIGH = 512 * 1024
# Deliveries due within this much of a timer firing go out together (the event loop's timers are
# not finer than about a millisecond anyway).
SLACK_S = 0.0005


@dataclass(frozen=True)
class Sample:
    """One stats line: cumulative bytes delivered across the link at a monotonic time."""

    t: float
    up: int
    down: int
    connections: int = 0


def read_stats(path: Path) -> list[Sample]:
    """Parse a stats file; a torn last line (the writer is live) is ignored."""
    out: list[Sample] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            conns = int(parts[3]) if len(parts) > 3 else 0
            out.append(Sample(float(parts[0]), int(parts[1]), int(parts[2]), conns))
        except (ValueError, IndexError):
            continue
    return out


class Link:
    """One direction of the line: a FIFO serialiser at a fixed bandwidth plus a propagation delay.

    Departures are monotonic, so deliveries are too, and one deque with one timer armed for its head
    schedules every chunk of every connection: no task or timer per chunk.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, mbit: float, rtt_s: float, window: int) -> None:
        self.loop = loop
        self.bytes_per_s = mbit * 1e6 / 8 if mbit > 0 else 0.0
        self.half_rtt_s = rtt_s / 2
        # A connection's window is at least the link's bandwidth-delay product (as TCP autotuning
        # would make it), so one connection alone can fill the line, as it can on a real one.
        self.window = max(window, int(self.bytes_per_s * rtt_s))
        self.free_at = 0.0
        self.delivered = 0
        self.queue: deque[tuple[float, Pipe, bytes | None, Callable[[], None] | None]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def send(self, pipe: Pipe, data: bytes) -> None:
        now = self.loop.time()
        serialise = len(data) / self.bytes_per_s if self.bytes_per_s else 0.0
        depart = max(now, self.free_at) + serialise
        self.free_at = depart
        self._push(depart + self.half_rtt_s, pipe, data, None)

    def send_after(self, pipe: Pipe, action: Callable[[], None]) -> None:
        """Run `action` (EOF or close) once everything this pipe queued before it has been delivered."""
        at = max(self.loop.time(), self.free_at) + self.half_rtt_s
        self._push(at, pipe, None, action)

    def _push(self, at: float, pipe: Pipe, data: bytes | None, action: Callable[[], None] | None) -> None:
        if self.queue and at < self.queue[-1][0]:
            at = self.queue[-1][0]  # never overtake (an unlimited link after a limited chunk)
        self.queue.append((at, pipe, data, action))
        if self.timer is None:
            self.timer = self.loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self.timer = None
        limit = self.loop.time() + SLACK_S
        queue = self.queue
        try:
            while queue and queue[0][0] <= limit:
                _at, pipe, data, action = queue.popleft()
                # A peer that vanished must cost its own connection only, never the link's schedule.
                try:
                    if data is not None:
                        self.delivered += len(data)
                        pipe.deliver(data)
                    elif action is not None:
                        action()
                except OSError:
                    pipe.abort()
        finally:
            if queue and self.timer is None:
                self.timer = self.loop.call_at(queue[0][0], self._fire)


class Pipe:
    """One direction of one connection: reads its source, queues on the link, writes its destination."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.window = link.window
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.pending = 0
        self.dst_blocked = False
        self.open = False  # reading starts only after the connection's handshake RTT
        self.reading = True

    def received(self, data: bytes) -> None:
        self.pending += len(data)
        self.link.send(self, data)
        self.update()

    def deliver(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.dst is not None and not self.dst.is_closing():
            self.dst.write(data)
        self.update()

    def abort(self) -> None:
        for transport in (self.src, self.dst):
            if transport is not None:
                transport.abort()

    def update(self) -> None:
        want = self.open and self.pending < self.window and not self.dst_blocked
        src = self.src
        if src is None or src.is_closing() or want == self.reading:
            return
        self.reading = want
        if want:
            src.resume_reading()
        else:
            src.pause_reading()


class Side(asyncio.BufferedProtocol):
    """One socket of a relayed connection: feeds `out` (the pipe it is the source of) and is written
    to by `into` (the pipe it is the destination of)."""

    def __init__(self, conn: Connection, out: Pipe, into: Pipe) -> None:
        self.conn = conn
        self.out = out
        self.into = into
        self.buf = bytearray(READ_SIZE)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.out.src = transport
        self.into.dst = transport
        self.out.update()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.out.received(bytes(memoryview(self.buf)[:nbytes]))

    def eof_received(self) -> bool:
        # The EOF travels the link behind this side's data, then half-closes the destination.
        pipe = self.out
        pipe.link.send_after(pipe, lambda: self.conn.write_eof(pipe))
        return True  # keep the socket open for the other direction

    def connection_lost(self, exc: Exception | None) -> None:
        # Whatever this side sent before closing still crosses the link; then both sockets close.
        self.out.link.send_after(self.out, self.conn.close)

    def pause_writing(self) -> None:
        self.into.dst_blocked = True
        self.into.update()

    def resume_writing(self) -> None:
        self.into.dst_blocked = False
        self.into.update()


class Connection:
    """A client connection and its upstream twin, joined by an up pipe and a down pipe."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.up = Pipe(relay.up)
        self.down = Pipe(relay.down)
        self.client = Side(self, self.up, self.down)
        self.server = Side(self, self.down, self.up)
        self.closed = False

    def accepted(self) -> None:
        """Pay the handshake RTT, then open the upstream connection and start relaying."""
        loop = self.relay.loop
        loop.call_at(loop.time() + self.relay.rtt_s, lambda: loop.create_task(self._open()))

    async def _open(self) -> None:
        if self.closed:
            return
        host, port = self.relay.upstream
        try:
            await self.relay.loop.create_connection(lambda: self.server, host, port)
        except OSError:
            self.close()
            return
        for pipe in (self.up, self.down):
            pipe.open = True
            pipe.update()

    def write_eof(self, pipe: Pipe) -> None:
        dst = pipe.dst
        if dst is not None and not dst.is_closing() and dst.can_write_eof():
            # The peer may already be gone (reset); then there is nothing left to half-close.
            with contextlib.suppress(OSError):
                dst.write_eof()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.server):
            if side.transport is not None:
                side.transport.close()


class Relay:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstream: tuple[str, int],
        rtt_ms: float,
        up_mbit: float,
        down_mbit: float,
        window: int,
    ) -> None:
        self.loop = loop
        self.upstream = upstream
        self.rtt_s = rtt_ms / 1000
        self.up = Link(loop, up_mbit, self.rtt_s, window)
        self.down = Link(loop, down_mbit, self.rtt_s, window)
        self.connections = 0

    def protocol(self) -> Side:
        self.connections += 1
        conn = Connection(self)
        # Client reads are held (pipe not open) until the handshake RTT has passed.
        self.loop.call_soon(conn.accepted)
        return conn.client

    def stats_line(self) -> str:
        return f"{time.monotonic():.4f} {self.up.delivered} {self.down.delivered} {self.connections}\n"


def listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Set before listen() so accepted sockets inherit it (and the window they advertise).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    up_host, up_port = args.upstream.rsplit(":", 1)
    relay = Relay(loop, (up_host, int(up_port)), args.rtt_ms, args.up_mbit, args.down_mbit, args.window_kib * 1024)
    sock = listening_socket(args.host, args.port)
    server = await loop.create_server(relay.protocol, sock=sock)
    stats: IO[str] | None = open(args.stats, "a", encoding="utf-8") if args.stats else None  # noqa: SIM115
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def write_stats() -> None:
        if stats is not None:
            stats.write(relay.stats_line())
            stats.flush()

    if stats is not None:
        stats.write(
            f"# rtt_ms={args.rtt_ms} up_mbit={args.up_mbit} down_mbit={args.down_mbit} "
            f"window_kib={args.window_kib}\n# monotonic_s up_bytes down_bytes connections\n"
        )
    write_stats()
    print(sock.getsockname()[1], flush=True)

    async def ticker() -> None:
        # Ticks on a fixed grid, so a slow write never makes the series drift.
        nxt = loop.time()
        while True:
            nxt += args.stats_interval
            await asyncio.sleep(max(nxt - loop.time(), 0))
            write_stats()

    tick = loop.create_task(ticker())
    try:
        await stop.wait()
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
        write_stats()
        if stats is not None:
            stats.close()
        server.close()


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    p.add_argument("--upstream", required=True, help="host:port of the S3 server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rtt-ms", type=float, default=40.0, help="round-trip time (default 40)")
    p.add_argument("--up-mbit", type=float, default=50.0, help="upload bandwidth, 0 = unlimited (default 50)")
    p.add_argument("--down-mbit", type=float, default=250.0, help="download bandwidth, 0 = unlimited (default 250)")
    p.add_argument("--window-kib", type=int, default=512, help="per-connection undelivered bytes (default 512)")
    p.add_argument("--stats", help="append cumulative byte counters to this file")
    p.add_argument("--stats-interval", type=float, default=0.25, help="seconds between stats lines")
    args = p.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
