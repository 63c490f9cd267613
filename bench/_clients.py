"""The receiving side of the broadcast benchmarks: one process holding many WebSocket clients;
and the line-based control channel through which they drive their server processes.

Each client is a raw asyncio protocol (on uvloop) that counts the fixed-size frames it receives
and samples the delay from a message's broadcast to its arrival: messages are 100-byte JSON texts
carrying their broadcast time (``time.monotonic_ns``, the same clock in every process). A sample
is taken per socket read, for the oldest message of the read, twice:

- *read*: when this process reads the socket. One event loop reading N sockets in turn adds the
  time it took to read the sockets before to every delay it measures, which real clients, each
  on its own, do not have;
- *arrival*: when the event loop learnt that the socket had data, the start of the loop
  iteration that reads it (the socket was ready then, so its oldest message had arrived). One
  iteration takes what one ``epoll_wait`` reports, up to 1024 ready sockets: with more clients
  per process, the later ones' arrivals may be earlier than they were.

``receive()`` opens the clients, prints ``{"ready": N}``, then answers lines on stdin:

- ``expect FRAMES``: ``{"armed": ...}`` at once (counting has started), then, once FRAMES more
  frames arrived or the round's time ran out, ``{"frames", "last", "p50", "p99", "samples",
  "arrival_p50", "arrival_p99", "arrivals"}``: delays at read and at arrival in nanoseconds,
  each sorted;
- ``drain``: ``{"drained": total}`` once no frame arrived for ``QUIET`` seconds, so that the
  stragglers of a round that ran out of time do not count in the next one.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

MESSAGE_SIZE = 100
FRAME_SIZE = MESSAGE_SIZE + 2  # a server text frame of 100 bytes has a 2-byte header
PAD = "x" * (MESSAGE_SIZE - 45)
#: Seconds without a frame after which a round's stragglers are taken to be over.
QUIET = 0.5


def payload(seq: int) -> str:
    """A 100-byte JSON text stamped with the time it is broadcast."""
    return f'{{"t":{time.monotonic_ns():019d},"s":{seq:08d},"p":"{PAD}"}}'


def raise_open_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_control(port: int, commands: dict[str, Callable[..., Any]]) -> None:
    """In a server process: answer each line ``COMMAND ARGS...`` on ``port`` with one JSON line,
    what ``commands[COMMAND](*ARGS)`` returns (awaited if need be); runs until the process ends."""

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            command, *args = line.decode().split()
            reply = commands[command](*args)
            if inspect.isawaitable(reply):
                reply = await reply
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()

    await asyncio.start_server(control, "127.0.0.1", port)
    await asyncio.Future()


class Control:
    """In the controller: a server process and the control channel it answers."""

    def __init__(self, name: str, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        deadline = time.monotonic() + 30
        while True:
            try:
                self.channel = socket.create_connection(("127.0.0.1", port), timeout=300)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    process.wait()
                    raise RuntimeError(f"the {name} server did not start") from None
                time.sleep(0.05)
        self.lines = self.channel.makefile("r")

    def ask(self, command: str) -> Any:
        self.channel.sendall(command.encode() + b"\n")
        return json.loads(self.lines.readline())

    def close(self) -> None:
        self.channel.close()
        self.process.kill()
        self.process.wait()


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """``python script *args`` with Haske importable, talking through its stdin and stdout."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, script, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def pin(cpu: int) -> None:
    """Run this process on ``cpu`` alone, where there is more than one."""
    if len(os.sched_getaffinity(0)) > 1 and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def percentile(samples: list[int], fraction: float) -> int:
    """The value below which ``fraction`` of the sorted ``samples`` fall (0 when empty)."""
    if not samples:
        return 0
    return samples[min(len(samples) - 1, int(len(samples) * fraction))]


class Totals:
    """What every client of the process received."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.frames = 0
        self.last = 0
        self.samples: list[int] = []
        self.arrivals: list[int] = []
        self.target = 0
        self.done = asyncio.Event()
        self.ready_since = 0

    def ready_at(self, now: int) -> int:
        """When the reads of this loop iteration were found ready: the first one's time."""
        if not self.ready_since:
            self.ready_since = now
            # Runs once the iteration's I/O callbacks are done: the next reads are of another.
            self.loop.call_soon(self.next_iteration)
        return self.ready_since

    def next_iteration(self) -> None:
        self.ready_since = 0


class Client(asyncio.Protocol):
    """A WebSocket client that only counts the fixed-size frames it receives."""

    def __init__(self, port: int, totals: Totals, opened: asyncio.Future[None]) -> None:
        self.port, self.totals, self.opened = port, totals, opened
        self.head = b""
        self.partial = b""
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if not self.opened.done():
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                self.refused = True
                self.opened.set_exception(ConnectionRefusedError(head.decode(errors="replace")))
                return
            self.opened.set_result(None)
        data = self.partial + data if self.partial else data
        count = len(data) // FRAME_SIZE
        if count:
            totals = self.totals
            now = time.monotonic_ns()
            if data[0] != 0x81 or data[1] != MESSAGE_SIZE:
                raise RuntimeError(f"unexpected frame header {data[:2]!r}")
            # The oldest message in this read: the longest delay of the read.
            sent = int(data[7:26])
            totals.samples.append(now - sent)
            totals.arrivals.append(totals.ready_at(now) - sent)
            totals.frames += count
            totals.last = now
            if totals.frames >= totals.target:
                totals.done.set()
        self.partial = data[count * FRAME_SIZE :]


async def open_clients(ports: list[int], clients: int, totals: Totals, gate: int) -> int:
    """Open ``clients`` connections to each port, ``gate`` at a time; how many opened."""
    loop = asyncio.get_running_loop()
    transports = []
    opening = asyncio.Semaphore(gate)

    async def open_one(port: int) -> None:
        async with opening:
            for attempt in range(5):
                opened: asyncio.Future[None] = loop.create_future()
                transport, _ = await loop.create_connection(
                    functools.partial(Client, port, totals, opened), "127.0.0.1", port
                )
                try:
                    await asyncio.wait_for(opened, 30)
                except ConnectionRefusedError:
                    # A server that ran out of something (channels_redis: Redis connections
                    # when many consumers connect at once) may take the next attempt.
                    transport.close()
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                transports.append(transport)
                return
            raise RuntimeError(f"port {port} refused the handshake 5 times")

    await asyncio.gather(*(open_one(port) for port in ports for _ in range(clients)))
    return len(transports)


async def round_report(totals: Totals, frames: int, timeout: float) -> dict[str, object]:
    """Wait for ``frames`` more frames (at most ``timeout`` seconds); what arrived meanwhile."""
    first = totals.frames
    totals.target = first + frames
    totals.samples, totals.arrivals = [], []
    totals.done.clear()
    print(json.dumps({"armed": totals.target}), flush=True)
    try:
        await asyncio.wait_for(totals.done.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    samples, arrivals = sorted(totals.samples), sorted(totals.arrivals)
    return {
        "frames": totals.frames - first,
        "last": totals.last,
        "p50": percentile(samples, 0.5),
        "p99": percentile(samples, 0.99),
        "samples": samples,
        "arrival_p50": percentile(arrivals, 0.5),
        "arrival_p99": percentile(arrivals, 0.99),
        "arrivals": arrivals,
    }


async def drain(totals: Totals, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = totals.frames
        await asyncio.sleep(QUIET)
        if totals.frames == before:
            break


async def receive(ports: list[int], clients: int, *, timeout: float, gate: int = 256) -> None:
    """Open ``clients`` connections to each port, then answer the lines on stdin."""
    loop = asyncio.get_running_loop()
    totals = Totals()
    print(json.dumps({"ready": await open_clients(ports, clients, totals, gate)}), flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if line.startswith(b"drain"):
            await drain(totals, timeout)
            print(json.dumps({"drained": totals.frames}), flush=True)
        else:
            report = await round_report(totals, int(line.split()[1]), timeout)
            print(json.dumps(report), flush=True)
