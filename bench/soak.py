"""Soak test: a Haske app under mixed load for a long time, watching for leaks.

    python bench/soak.py                  # 30 minutes
    python bench/soak.py --seconds 60     # the CI run
    python bench/soak.py --ws websockets  # the same app on uvicorn's own websockets protocol

The server is a Haske app on Haske's protocol (``haske.run``) in a subprocess, or with ``--ws`` on
one of uvicorn's own protocols (where the handshake timeout is uvicorn's: none). The load, all at
once for the whole run:

- churn: short-lived chat connections that join a room (a channel and a session with presence),
  send a few messages and leave; one in ten vanishes without a close;
- chat members that stay a while, read everything, talk, and reconnect (presence joins/leaves);
- feed readers of a channel the server broadcasts to many times a second;
- slow clients that subscribe to a heavy stream (the "firehose") and stop reading, for the
  slow-consumer policy to close (1013) before keepalive does;
- garbage: random bytes instead of a request, random frames after a valid handshake, request
  heads that never end (for the handshake timeout), wrong WebSocket versions.

Every few seconds the server's RSS and TCP connections (psutil) and its /stats route (the
broadcaster's counters and the session counts) are sampled. At the end the run passes (exit
status 0) when the RSS after warm-up stayed flat (the median of the last three samples under
load is less than max(10 MB, 10 %) above the median of the first three after warm-up), the
broadcaster, its channels and every session are empty once the clients left, the server logged
no traceback, messages flowed and the slow-consumer policy closed the slow clients; otherwise
it fails (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from haske._backends import frames

ROOMS = [f"room{i}" for i in range(5)]
USERS = 200
FEED = "feed"
#: Feed broadcasts per second, and the size of each.
FEED_RATE = 50
FEED_PAD = 1000
#: The slow clients' channel gets this blob at the feed's rate: about 3 MB/s.
FIREHOSE = "firehose"
FIREHOSE_BLOB = bytes(64 * 1024)
#: Per-connection outbound limit of the soak app's broadcaster, small so slow clients go fast.
OUTBOUND_LIMIT = 64 * 1024
#: The server's keepalive and handshake settings (shorter than the defaults, to exercise them).
PING_INTERVAL = 5.0
HANDSHAKE_TIMEOUT = 2.0

CHURN_WORKERS = 6
CHAT_MEMBERS = 15
FEED_READERS = 8
MAX_SLOW = 3
GARBAGE_EVERY = 0.2
MB = 1024 * 1024
TIMEOUT = 10.0
#: /stats counts that must come back to zero once every client left.
EMPTY_AT_END = ("connections", "members", "sessions", "session_sockets")


# -- the server ---------------------------------------------------------------------------------


def soak_app() -> Any:
    """Chat rooms with presence, a feed channel, and /stats."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from haske import Haske
    from haske.ws import LiveSessionManager, WebSocket, WebSocketBroadcaster

    broadcaster = WebSocketBroadcaster(outbound_limit=OUTBOUND_LIMIT)
    rooms = {
        room: LiveSessionManager(broadcaster, presence_channel=f"presence:{room}", leave_grace=0.2)
        for room in ROOMS
    }

    async def pump() -> None:
        seq = 0
        while True:
            seq += 1
            await broadcaster.broadcast({"seq": seq, "pad": "x" * FEED_PAD}, channel=FEED)
            await broadcaster.broadcast(FIREHOSE_BLOB, channel=FIREHOSE)
            await asyncio.sleep(1 / FEED_RATE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Haske) -> AsyncIterator[None]:
        task = asyncio.create_task(pump())
        yield
        task.cancel()

    app = Haske(lifespan=lifespan)

    @app.websocket("/chat/{room}", broadcaster=broadcaster)
    async def chat(ws: WebSocket) -> None:
        sessions = rooms.get(ws.path_params["room"])
        if sessions is None:
            await ws.close(1008)
            return
        channel = f"chat:{ws.path_params['room']}"
        user = ws.query_params.get("user", "anonymous")
        await ws.accept()
        await broadcaster.subscribe(ws, channel)
        await sessions.add(user, ws, name=user)
        await ws.send_text("ready")
        async for message in ws:
            await broadcaster.broadcast(message, channel=channel)

    @app.websocket("/feed", broadcaster=broadcaster)
    async def feed(ws: WebSocket) -> None:
        await ws.accept()
        await broadcaster.subscribe(ws, FEED)
        await ws.send_text("ready")
        async for message in ws:
            if message == FIREHOSE:
                await broadcaster.subscribe(ws, FIREHOSE)

    @app.route("/stats")
    async def stats(request: Request) -> JSONResponse:
        members = 0
        for name in broadcaster.channels():
            members += broadcaster.count(name)
        return JSONResponse(
            {
                **broadcaster.stats(),
                "members": members,
                "sessions": sum(len(sessions) for sessions in rooms.values()),
                "session_sockets": sum(
                    entry["connections"]
                    for sessions in rooms.values()
                    for entry in sessions.presence()
                ),
            }
        )

    return app


def serve(port: int, ws: str) -> None:
    if ws != "haske":
        import uvicorn

        uvicorn.run(
            soak_app(),
            host="127.0.0.1",
            port=port,
            ws=ws,
            log_level="error",
            ws_ping_interval=PING_INTERVAL,
            ws_ping_timeout=PING_INTERVAL,
        )
        return
    import haske

    haske.run(
        soak_app(),
        port=port,
        # Not uvicorn's warning for every garbage request: the log is for errors.
        log_level="error",
        handshake_timeout=HANDSHAKE_TIMEOUT,
        ws_ping_interval=PING_INTERVAL,
        ws_ping_timeout=PING_INTERVAL,
    )


# -- the load -----------------------------------------------------------------------------------


@dataclass
class Totals:
    connections: int = 0
    refused: int = 0
    vanished: int = 0
    chat_sent: int = 0
    chat_received: int = 0
    feed_received: int = 0
    slow_started: int = 0
    garbage: int = 0
    client_errors: dict[str, int] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.client_errors[name] = self.client_errors.get(name, 0) + 1


class Load:
    """The clients: every worker runs until ``stop`` is set."""

    def __init__(self, port: int, seed: int) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.stop = asyncio.Event()
        self.totals = Totals()
        self.rng = random.Random(seed)

    def connect(self, path: str) -> Any:
        from websockets.asyncio.client import connect

        # max_queue=None: a client that reads its messages late still answers pings meanwhile.
        return connect(
            self.url + path,
            open_timeout=TIMEOUT,
            close_timeout=5,
            max_queue=None,
            ping_interval=None,
        )

    async def guarded(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` again and again until the end, counting what goes wrong."""
        from websockets.exceptions import InvalidStatus, WebSocketException

        while not self.stop.is_set():
            try:
                await work()
            except InvalidStatus:
                self.totals.refused += 1
            except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
                self.totals.error(exc)
            await asyncio.sleep(0.01)

    async def ready(self, ws: Any) -> None:
        while await asyncio.wait_for(ws.recv(), TIMEOUT) != "ready":
            pass  # presence events come first

    async def churn(self) -> None:
        room, user = self.rng.choice(ROOMS), f"user{self.rng.randrange(USERS)}"
        async with self.connect(f"/chat/{room}?user={user}") as ws:
            self.totals.connections += 1
            await self.ready(ws)
            for _ in range(self.rng.randint(0, 3)):
                await ws.send(f"churn from {user}")
                self.totals.chat_sent += 1
            await asyncio.sleep(self.rng.uniform(0, 0.5))
            if self.rng.random() < 0.1:
                self.totals.vanished += 1
                ws.transport.abort()

    async def member(self) -> None:
        room, user = self.rng.choice(ROOMS), f"member{self.rng.randrange(USERS)}"
        async with self.connect(f"/chat/{room}?user={user}") as ws:
            self.totals.connections += 1
            await self.ready(ws)

            async def read() -> None:
                async for message in ws:
                    if not message.startswith('{"event"'):
                        self.totals.chat_received += 1

            reader = asyncio.create_task(read())
            try:
                leave_at = time.monotonic() + self.rng.uniform(10, 40)
                while time.monotonic() < leave_at and not self.stop.is_set():
                    await ws.send(f"hello from {user}")
                    self.totals.chat_sent += 1
                    await self.pause(self.rng.uniform(0.5, 1.5))
            finally:
                reader.cancel()

    async def feed_reader(self) -> None:
        async with self.connect("/feed") as ws:
            self.totals.connections += 1
            await self.ready(ws)
            leave_at = time.monotonic() + self.rng.uniform(30, 60)
            while time.monotonic() < leave_at and not self.stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.recv(), 1)
                    self.totals.feed_received += 1

    async def slow(self) -> None:
        """A feed reader with a tiny receive buffer that asks for the firehose, then stops
        reading."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port)), TIMEOUT
        )
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(upgrade_request("/feed", self.port))
            await asyncio.wait_for(reader.readuntil(b"ready"), TIMEOUT)
            writer.write(frames.encode_frame(frames.OP_TEXT, FIREHOSE.encode(), mask=True))
            self.totals.connections += 1
            self.totals.slow_started += 1
            await self.pause(20)
        finally:
            writer.transport.abort()

    async def garbage(self) -> None:
        kind = self.rng.randrange(4)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), TIMEOUT
        )
        self.totals.garbage += 1
        try:
            if kind == 0:  # not HTTP at all
                writer.write(self.rng.randbytes(self.rng.randrange(1, 512)) + b"\r\n\r\n")
            elif kind == 1:  # a valid handshake, then random frames
                writer.write(
                    upgrade_request(f"/chat/{self.rng.choice(ROOMS)}?user=junk", self.port)
                )
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
                for _ in range(self.rng.randrange(1, 5)):
                    head = bytes([self.rng.randrange(256), 0x80 | self.rng.randrange(126)])
                    writer.write(head + self.rng.randbytes(self.rng.randrange(4, 130)))
            elif kind == 2:  # a request head that never ends
                writer.write(b"GET /feed HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            else:  # a WebSocket version the server does not speak
                writer.write(upgrade_request("/feed", self.port).replace(b": 13\r", b": 8\r"))
            # The server answers and hangs up: read until it does.
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                while await asyncio.wait_for(reader.read(65536), HANDSHAKE_TIMEOUT + 3):
                    pass
        finally:
            writer.transport.abort()

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def run(self) -> None:
        workers = [self.guarded(self.churn) for _ in range(CHURN_WORKERS)]
        workers += [self.guarded(self.member) for _ in range(CHAT_MEMBERS)]
        workers += [self.guarded(self.feed_reader) for _ in range(FEED_READERS)]
        workers += [
            self.staggered(self.slow, 10, MAX_SLOW),
            self.staggered(self.garbage, GARBAGE_EVERY, 20),
        ]
        await asyncio.gather(*workers)

    async def staggered(self, work: Callable[[], Awaitable[None]], every: float, most: int) -> None:
        """Start ``work`` every ``every`` seconds, at most ``most`` at a time."""
        running: set[asyncio.Task[None]] = set()
        while not self.stop.is_set():
            if len(running) < most:
                task = asyncio.create_task(self.guarded_once(work))
                running.add(task)
                task.add_done_callback(running.discard)
            await self.pause(every)
        await asyncio.gather(*running)

    async def guarded_once(self, work: Callable[[], Awaitable[None]]) -> None:
        from websockets.exceptions import WebSocketException

        try:
            await work()
        except (
            OSError,
            asyncio.TimeoutError,
            asyncio.IncompleteReadError,
            WebSocketException,
        ) as exc:
            self.totals.error(exc)


def upgrade_request(path: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# -- the driver ---------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float
    rss: int
    tcp: int
    stats: dict[str, int]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=TIMEOUT) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


async def sample(server: Any, port: int, start: float) -> Sample:
    stats = await asyncio.to_thread(get_stats, port)
    tcp = sum(1 for conn in server.net_connections(kind="tcp") if conn.status == "ESTABLISHED")
    return Sample(time.monotonic() - start, server.memory_info().rss, tcp, stats)


async def wait_for_server(port: int, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            await asyncio.to_thread(get_stats, port)
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


async def soak(seconds: float, every: float, warmup: float, seed: int, ws: str) -> bool:
    import psutil  # type: ignore[import-untyped]

    # Stopped from outside, still stop the server: SIGTERM cancels the run, which cleans up (a
    # second SIGTERM kills at once).
    loop, main = asyncio.get_running_loop(), asyncio.current_task()
    assert main is not None

    def terminated() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
        main.cancel()

    with contextlib.suppress(NotImplementedError):  # Windows
        loop.add_signal_handler(signal.SIGTERM, terminated)
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="haske-soak-", suffix=".log", delete=False) as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "serve", str(port), ws, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            await wait_for_server(port, process)
            server = psutil.Process(process.pid)
            load = Load(port, seed)
            start = time.monotonic()
            running = asyncio.create_task(load.run())
            samples: list[Sample] = []
            while (elapsed := time.monotonic() - start) < seconds:
                await asyncio.sleep(min(every, seconds - elapsed))
                if running.done():
                    running.result()  # a bug in the load itself: raise it
                samples.append(latest := await sample(server, port, start))
                print(
                    f"{latest.at:7.0f}s  rss {latest.rss / MB:6.1f} MB  tcp {latest.tcp:4d}  "
                    f"tracked {latest.stats['connections']:4d}  "
                    f"sessions {latest.stats['sessions']:3d}  "
                    f"delivered {latest.stats['delivered']:9d}",
                    flush=True,
                )
            load.stop.set()
            await asyncio.wait_for(running, 60)

            # Everyone left: the server must forget them all.
            drained = await sample(server, port, start)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(drained.stats[key] for key in EMPTY_AT_END):
                await asyncio.sleep(0.5)
                drained = await sample(server, port, start)
            alive = process.returncode is None
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except asyncio.TimeoutError:
                    process.kill()
                    await process.wait()

    server_log = Path(log.name).read_text(errors="replace")
    return report(load.totals, samples, drained, warmup, alive, server_log, log.name)


def report(
    totals: Totals,
    samples: list[Sample],
    drained: Sample,
    warmup: float,
    alive: bool,
    server_log: str,
    log_path: str,
) -> bool:
    after_warmup = [s for s in samples if s.at >= warmup] or samples[-1:]
    start_rss = statistics.median(s.rss for s in after_warmup[:3])
    end_rss = statistics.median(s.rss for s in samples[-3:])
    growth = end_rss - start_rss
    bound = max(10 * MB, 0.10 * start_rss)
    peak = max(s.rss for s in samples)
    tracebacks = server_log.count("Traceback")
    stats = drained.stats
    checks = {
        "server alive to the end": alive,
        f"RSS growth after warm-up below {bound / MB:.1f} MB": growth < bound,
        "broadcaster, channels and sessions empty after the clients left": not any(
            stats[key] for key in EMPTY_AT_END
        ),
        "no traceback in the server log": tracebacks == 0,
        "messages delivered": totals.chat_received > 0 and totals.feed_received > 0,
    }
    if totals.slow_started:
        checks["slow clients closed by the slow-consumer policy"] = stats["closed"] > 0

    print()
    print(
        f"duration                 {samples[-1].at:.0f} s ({len(samples)} samples, warm-up {warmup:.0f} s)"
    )
    print(
        f"connections made         {totals.connections} (+ {totals.garbage} garbage, "
        f"{totals.refused} refused, {totals.vanished} vanished without a close)"
    )
    print(
        f"chat messages            {totals.chat_sent} sent, {totals.chat_received} received by members"
    )
    print(f"feed messages received   {totals.feed_received}")
    print(f"server deliveries        {stats['delivered']} in {stats['broadcasts']} broadcasts")
    print(
        f"slow clients             {totals.slow_started} started, {stats['closed']} closed with 1013, "
        f"{stats['dropped']} messages dropped"
    )
    print(f"client-side errors       {totals.client_errors or 'none'}")
    print(
        f"RSS                      {start_rss / MB:.1f} MB after warm-up -> {end_rss / MB:.1f} MB at the "
        f"end ({growth / MB:+.1f} MB), peak {peak / MB:.1f} MB, {drained.rss / MB:.1f} MB idle"
    )
    print(
        f"after the clients left   {stats['connections']} tracked, {stats['members']} channel members, "
        f"{stats['sessions']} sessions, {drained.tcp} TCP connections"
    )
    print(f"server log               {log_path} ({tracebacks} tracebacks)")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1800, help="how long (default 30 min)")
    parser.add_argument("--every", type=float, default=5, help="seconds between samples")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds before RSS is watched (default: a quarter, at most 5 min)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--ws",
        default="haske",
        help="haske (default), or a uvicorn WebSocket implementation: websockets, "
        "websockets-sansio, wsproto",
    )
    options = parser.parse_args()
    warmup = options.warmup if options.warmup is not None else min(options.seconds / 4, 300)
    runner: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    try:
        return 0 if runner(soak(options.seconds, options.every, warmup, options.seed, options.ws)) else 1
    except asyncio.CancelledError:
        print("stopped before the end", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit(main())
