"""Cross-process broadcast benchmark: 2 server processes sharing one Redis, N clients on each.

    python bench/bench_redis.py            # N = 1000 clients per process
    python bench/bench_redis.py --quick    # N = 250, fewer messages

A redis-server is started on a free port of 127.0.0.1 (no persistence). For each kind, two
server processes run the same app against it; a receiver process per server holds its N client
sockets (raw asyncio protocols on uvloop), counts frames and samples the delay from each
message's broadcast to its arrival. Messages are 100-byte JSON texts carrying their broadcast
time (``time.monotonic_ns``, the same clock in every process); process A publishes them all, so
half the deliveries are A's own and half cross over through Redis.

Kinds (uvicorn with uvloop and httptools, keepalive pings off):

- ``haske``:            a Haske app on Haske's protocol, ``get_broadcaster()`` configured by
                        ``HASKE_BROADCAST_URL``: each message is delivered by A at once and
                        published once; B encodes it once and writes it to its N connections.
- ``broadcaster``:      Starlette with encode/broadcaster's ``redis://`` backend (one subscriber
                        queue and task per connection), on uvicorn's ``websockets`` protocol.
- ``channels-pubsub``:  Django Channels, a consumer per connection in group "bench",
                        ``channels_redis.pubsub.RedisPubSubChannelLayer``, ``group_send``.
- ``channels-redis``:   the same with ``channels_redis.core.RedisChannelLayer`` (the default
                        layer: Redis lists per channel, capacity raised to the message count).

Two rounds per kind: *throughput* (messages published back to back) and *paced* (``RATE``
messages a second, where latency is read). A round is complete when every client got every
message within 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MESSAGE_SIZE = 100
FRAME_SIZE = MESSAGE_SIZE + 2  # a server text frame of 100 bytes has a 2-byte header
PAD = "x" * (MESSAGE_SIZE - 45)
RATE = 50
KINDS = ["haske", "broadcaster", "channels-pubsub", "channels-redis"]
ROUND_TIMEOUT = 30.0
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


# -- the apps -----------------------------------------------------------------------------------


def haske_app(url: str) -> tuple[Any, Any, Any]:
    os.environ["HASKE_BROADCAST_URL"] = url
    from haske import Haske
    from haske.ws import WebSocket, get_broadcaster

    app = Haske()
    broadcaster = get_broadcaster()

    @app.websocket("/ws")
    async def listen(ws: WebSocket) -> None:
        await ws.accept()
        await broadcaster.subscribe(ws, "bench")
        async for _ in ws:
            pass

    async def publish(text: str) -> None:
        await broadcaster.broadcast(text, channel="bench")

    return (
        app,
        publish,
        lambda: broadcaster.count("bench") if "bench" in broadcaster.channels() else 0,
    )


def broadcaster_app(url: str) -> tuple[Any, Any, Any]:
    from broadcaster import Broadcast
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    hub = Broadcast(url)
    subscribed: set[WebSocket] = set()
    # Two races in broadcaster 0.3.1 would lose messages before any delivery is measured:
    # - when the first subscribers of a channel arrive together, Broadcast.subscribe() lets
    #   each replace the channel's set of queues (it awaits the backend's SUBSCRIBE between
    #   checking and setting it), and the replaced ones never get a message (a fifth of the
    #   clients here): entering subscribe() one at a time avoids it;
    # - its Redis listener wakes up when a channel is subscribed, and stops for good if it
    #   finds no subscription registered yet (the first SUBSCRIBE is still on its way): a
    #   channel subscribed from startup makes sure there always is one.
    entering = asyncio.Lock()

    async def listen(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with entering:
                    subscriber = await stack.enter_async_context(hub.subscribe(channel="bench"))
                subscribed.add(websocket)
                async for event in subscriber:  # type: ignore[attr-defined]
                    await websocket.send_text(event.message)
        except WebSocketDisconnect:
            pass
        finally:
            subscribed.discard(websocket)

    async def publish(text: str) -> None:
        await hub.publish(channel="bench", message=text)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hub, hub.subscribe(channel="warm-up"):
            yield

    app = Starlette(routes=[WebSocketRoute("/ws", listen)], lifespan=lifespan)
    return app, publish, lambda: len(subscribed)


def channels_app(url: str, layer: str, capacity: int) -> tuple[Any, Any, Any]:
    import django
    from django.conf import settings

    config: dict[str, Any] = {"hosts": [url]}
    if layer.endswith("RedisChannelLayer"):
        config["capacity"] = capacity
    settings.configure(
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={"default": {"BACKEND": layer, "CONFIG": config}},
    )
    django.setup()
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.layers import get_channel_layer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    members: set[str] = set()

    class Listener(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            await self.channel_layer.group_add("bench", self.channel_name)
            await self.accept()
            members.add(self.channel_name)

        async def disconnect(self, code: int) -> None:
            members.discard(self.channel_name)
            await self.channel_layer.group_discard("bench", self.channel_name)

        async def bench_message(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

    channel_layer = get_channel_layer()

    async def publish(text: str) -> None:
        await channel_layer.group_send("bench", {"type": "bench.message", "text": text})

    app = ProtocolTypeRouter({"websocket": URLRouter([path("ws", Listener.as_asgi())])})
    return app, publish, lambda: len(members)


def make_app(kind: str, url: str, capacity: int) -> tuple[Any, Any, Any]:
    if kind == "haske":
        return haske_app(url)
    if kind == "broadcaster":
        return broadcaster_app(url)
    layer = {
        "channels-pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "channels-redis": "channels_redis.core.RedisChannelLayer",
    }[kind]
    return channels_app(url, layer, capacity)


async def serve(kind: str, url: str, port: int, control_port: int, capacity: int) -> None:
    """Run a server and a line-based control channel: ``count`` | ``run MESSAGES RATE``."""
    import uvicorn

    app, publish, count = make_app(kind, url, capacity)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws="haske.server:WebSocketProtocol" if kind == "haske" else "websockets",
        http="httptools",
        lifespan="on" if kind == "broadcaster" else "off",
        log_level="error",
        ws_ping_interval=None,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            command, *args = line.decode().split()
            if command == "count":
                reply: Any = count()
            else:
                messages, rate = int(args[0]), float(args[1])
                started = time.monotonic()
                for seq in range(messages):
                    if rate:
                        await asyncio.sleep(max(0.0, started + seq / rate - time.monotonic()))
                    await publish(payload(seq))
                    await asyncio.sleep(0)
                reply = {"sent": messages}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()

    await asyncio.start_server(control, "127.0.0.1", control_port)
    await asyncio.Future()


# -- the receiver -------------------------------------------------------------------------------


class Totals:
    def __init__(self) -> None:
        self.frames = 0
        self.first = 0
        self.last = 0
        self.samples: list[int] = []
        self.target = 0
        self.done = asyncio.Event()


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
            totals.samples.append(now - int(data[7:26]))
            totals.frames += count
            totals.last = now
            if totals.frames >= totals.target:
                totals.done.set()
        self.partial = data[count * FRAME_SIZE :]


async def receive(ports: list[int], clients: int) -> None:
    """Open ``clients`` connections to each port, then per ``expect FRAMES`` line on stdin
    report what arrived."""
    loop = asyncio.get_running_loop()
    totals = Totals()
    transports = []
    gate = asyncio.Semaphore(64)

    async def open_one(port: int) -> None:
        async with gate:
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
    print(json.dumps({"ready": len(transports)}), flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if line.startswith(b"drain"):
            # Frames of a round that ran out of time must not count in the next one.
            deadline = time.monotonic() + ROUND_TIMEOUT
            while time.monotonic() < deadline:
                before = totals.frames
                await asyncio.sleep(QUIET)
                if totals.frames == before:
                    break
            print(json.dumps({"drained": totals.frames}), flush=True)
            continue
        first = totals.frames
        totals.target = first + int(line.split()[1])
        totals.samples = []
        totals.done.clear()
        print(json.dumps({"armed": totals.target}), flush=True)
        try:
            await asyncio.wait_for(totals.done.wait(), ROUND_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        report = {"frames": totals.frames - first, "last": totals.last, "samples": totals.samples}
        print(json.dumps(report), flush=True)


# -- the controller -----------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


class Redis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class Server:
    """A server process and its control channel."""

    def __init__(self, kind: str, url: str, capacity: int) -> None:
        self.port, control_port = free_port(), free_port()
        self.process = spawn("serve", kind, url, str(self.port), str(control_port), str(capacity))
        deadline = time.monotonic() + 30
        while True:
            try:
                self.control = socket.create_connection(("127.0.0.1", control_port), timeout=300)
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    self.process.wait()
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)
        self.lines = self.control.makefile("r")

    def ask(self, command: str) -> Any:
        self.control.sendall(command.encode() + b"\n")
        return json.loads(self.lines.readline())

    def close(self) -> None:
        self.control.close()
        self.process.kill()
        self.process.wait()


class Run:
    """Two servers of one kind, each with a receiver process holding its N clients."""

    def __init__(self, kind: str, redis: Redis, clients: int, capacity: int) -> None:
        self.clients = clients
        self.servers: list[Server] = []
        self.receivers: list[subprocess.Popen[str]] = []
        try:
            self._start(kind, redis, capacity)
        except BaseException:
            self.close()
            raise

    def _start(self, kind: str, redis: Redis, capacity: int) -> None:
        clients = self.clients
        for _ in range(2):
            self.servers.append(Server(kind, redis.url, capacity))
        # A receiver per server: one process reading all 2 × N sockets would add the time it
        # takes to go through them to every delay it measures.
        self.receivers = [spawn("receive", str(clients), str(s.port)) for s in self.servers]
        for receiver in self.receivers:
            assert receiver.stdout is not None
            if not receiver.stdout.readline():
                raise RuntimeError("a receiver could not open its clients")
        deadline = time.monotonic() + 60
        while any(server.ask("count") < clients for server in self.servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the servers did not see every client")
            time.sleep(0.05)

    def tell(self, line: str) -> list[Any]:
        """Send a line to every receiver; their answers."""
        for receiver in self.receivers:
            receiver.stdin.write(line + "\n")  # type: ignore[union-attr]
            receiver.stdin.flush()  # type: ignore[union-attr]
        return [json.loads(receiver.stdout.readline()) for receiver in self.receivers]  # type: ignore[union-attr]

    def round(self, messages: int, rate: float) -> dict[str, float]:
        expected = 2 * self.clients * messages
        # Armed: counting starts before the first message is sent.
        self.tell(f"expect {self.clients * messages}")
        started = time.monotonic_ns()
        self.servers[0].ask(f"run {messages} {rate}")
        reports = [json.loads(receiver.stdout.readline()) for receiver in self.receivers]  # type: ignore[union-attr]
        self.tell("drain")
        frames = sum(report["frames"] for report in reports)
        seconds = max(max(report["last"] for report in reports) - started, 1) / 1e9
        samples = sorted(sample for report in reports for sample in report["samples"]) or [0]
        return {
            "rate": frames / seconds,
            "p50_ms": samples[len(samples) // 2] / 1e6,
            "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1e6,
            "complete": frames == expected,
            "lost": expected - frames,
        }

    def close(self) -> None:
        for receiver in self.receivers:
            receiver.kill()
            receiver.wait()
        for server in self.servers:
            server.close()


def table(results: dict[str, dict[str, dict[str, float]]], clients: int, rate: float) -> None:
    haske = results.get("haske")
    print(
        f"\n2 processes x {clients} clients; throughput: back to back, paced: {rate:g} messages/s"
    )
    print(
        f"{'kind':<16} {'deliveries/s':>13} {'p99 ms':>8} {'paced p50':>10} {'paced p99':>10}"
        f" {'lost':>6} {'haske ÷ it':>11}"
    )
    for kind, rounds in results.items():
        burst, paced = rounds["throughput"], rounds["paced"]
        mark = "" if burst["complete"] and paced["complete"] else "!"
        ratio = ""
        if haske and burst["rate"]:
            ratio = f"{haske['throughput']['rate'] / burst['rate']:>10.2f}x"
        print(
            f"{kind:<16} {burst['rate']:>13,.0f} {burst['p99_ms']:>8.1f} "
            f"{paced['p50_ms']:>10.1f} {paced['p99_ms']:>10.1f} "
            f"{int(burst['lost'] + paced['lost']):>5}{mark or ' '} {ratio}"
        )
    print(
        f"(! = not every message reached every client within {ROUND_TIMEOUT:g} s; lost ="
        " deliveries missing then; the rate of such a round counts what arrived in time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 250 and fewer messages")
    parser.add_argument("--clients", type=int, help="clients per process (default 1000)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="what to compare")
    parser.add_argument("--rate", type=float, default=RATE, help="paced messages per second")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    options = parser.parse_args()
    raise_open_files()
    clients = options.clients or (250 if options.quick else 1000)
    messages = 100 if options.quick else 300
    paced = int(options.rate * (2 if options.quick else 4))
    redis = Redis()
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for kind in options.kinds.split(","):
            redis.flush()
            try:
                run = Run(kind, redis, clients, capacity=messages + paced + 100)
            except RuntimeError as exc:
                print(f"{kind}: could not be set up: {exc}", flush=True)
                continue
            try:
                run.round(10, 0)  # warm up
                results[kind] = {
                    "throughput": run.round(messages, 0),
                    "paced": run.round(paced, options.rate),
                }
            finally:
                run.close()
            print(f"{kind}: {results[kind]}", flush=True)
    finally:
        redis.stop()
    table(results, clients, options.rate)
    if options.json:
        figures = {
            "unit": "deliveries/s",
            "clients": clients,
            "messages": messages,
            "paced_rate": options.rate,
            "results": results,
        }
        options.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        raise_open_files()
        import uvloop

        kind, url, port, control, capacity = sys.argv[2:7]
        uvloop.run(serve(kind, url, int(port), int(control), int(capacity)))
    elif len(sys.argv) > 1 and sys.argv[1] == "receive":
        raise_open_files()
        import uvloop

        uvloop.run(receive([int(port) for port in sys.argv[3:]], int(sys.argv[2])))
    else:
        main()
