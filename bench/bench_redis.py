"""Cross-process broadcast benchmark: 2 server processes sharing one Redis, N clients on each.

    python bench/bench_redis.py            # N = 1000 clients per process
    python bench/bench_redis.py --quick    # N = 250, fewer messages

A redis-server is started on a free port of 127.0.0.1 (no persistence). For each kind, two
server processes run the same app against it; a receiver process per server holds its N client
sockets (see ``_clients.py``), counts frames and samples the delay from each message's broadcast
to its arrival. Messages are 100-byte JSON texts carrying their broadcast time; process A
publishes them all, so half the deliveries are A's own and half cross over through Redis.
Server A and its receiver run on CPU 0, server B and its receiver on CPU 1 (with 2 CPUs or more;
``--no-pin``: wherever the system puts them).

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

Rounds per kind: *throughput* (messages published back to back), then ``PACED_ROUNDS`` *paced*
rounds (``RATE`` messages a second, on a fixed schedule), where latency is read: the delay to
arrival (when the receiver's event loop found the socket ready), with the delay to the read for
comparison; the round with the median p99 is reported. A round is complete when every client got
every message within 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import _clients
from _clients import free_port, payload, percentile, pin, raise_open_files, receive

RATE = 50
#: Paced rounds per kind; the one with the median p99 is reported.
PACED_ROUNDS = 3
KINDS = ["haske", "broadcaster", "channels-pubsub", "channels-redis"]
ROUND_TIMEOUT = 30.0


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
                async for event in subscriber:  # type: ignore[union-attr]
                    await websocket.send_text(event.message)  # type: ignore[union-attr]
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

    async def run(messages: str, rate: str) -> dict[str, int]:
        per_second = float(rate)
        started = time.monotonic()
        for seq in range(int(messages)):
            if per_second:
                await asyncio.sleep(max(0.0, started + seq / per_second - time.monotonic()))
            await publish(payload(seq))
            await asyncio.sleep(0)
        return {"sent": int(messages)}

    await _clients.serve_control(control_port, {"count": count, "run": run})


# -- the controller -----------------------------------------------------------------------------


#: This script's subcommands in a process of their own.
spawn = functools.partial(_clients.spawn, __file__)


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


class Server(_clients.Control):
    """A server process and its control channel."""

    def __init__(self, kind: str, url: str, capacity: int, cpu: int) -> None:
        self.port, control_port = free_port(), free_port()
        process = spawn(
            "serve", kind, url, str(self.port), str(control_port), str(capacity), str(cpu)
        )
        super().__init__(kind, process, control_port)


class Run:
    """Two servers of one kind, each with a receiver process holding its N clients."""

    def __init__(self, kind: str, redis: Redis, clients: int, capacity: int, pinned: bool) -> None:
        self.clients = clients
        self.servers: list[Server] = []
        self.receivers: list[subprocess.Popen[str]] = []
        try:
            self._start(kind, redis, capacity, pinned)
        except BaseException:
            self.close()
            raise

    def _start(self, kind: str, redis: Redis, capacity: int, pinned: bool) -> None:
        clients = self.clients
        # Server and receiver i on CPU i: the two halves of the fan-out run side by side, each
        # server sharing its CPU only with its own clients. -1: wherever the system puts them.
        cpus = [0, 1] if pinned else [-1, -1]
        for cpu in cpus:
            self.servers.append(Server(kind, redis.url, capacity, cpu))
        # A receiver per server: one process reading all 2 × N sockets would add the time it
        # takes to go through them to every delay it measures.
        self.receivers = [
            spawn("receive", str(cpu), str(clients), str(server.port))
            for cpu, server in zip(cpus, self.servers)
        ]
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
        arrivals = sorted(sample for report in reports for sample in report["arrivals"])
        reads = sorted(sample for report in reports for sample in report["samples"])
        return {
            "rate": frames / seconds,
            "p50_ms": percentile(arrivals, 0.5) / 1e6,
            "p99_ms": percentile(arrivals, 0.99) / 1e6,
            # The publishing process's own clients, and the other's: through Redis.
            "local_p99_ms": reports[0]["arrival_p99"] / 1e6,
            "remote_p99_ms": reports[1]["arrival_p99"] / 1e6,
            "read_p99_ms": percentile(reads, 0.99) / 1e6,
            "complete": frames == expected,
            "lost": expected - frames,
        }

    def close(self) -> None:
        for receiver in self.receivers:
            receiver.kill()
            receiver.wait()
        for server in self.servers:
            server.close()


def paced_rounds(run: Run, messages: int, rate: float) -> dict[str, Any]:
    """The paced round with the median p99 of ``PACED_ROUNDS``, with every round's p99 and the
    deliveries lost in all of them: a burst of other work on the machine spoils one round's p99,
    not the figure."""
    rounds: list[dict[str, Any]] = []
    while len(rounds) < PACED_ROUNDS:
        rounds.append(run.round(messages, rate))
        if not rounds[-1]["complete"]:
            break  # a kind that falls behind at this rate only falls further
    chosen = sorted(rounds, key=lambda result: result["p99_ms"])[len(rounds) // 2]
    return {
        **chosen,
        "p99_ms_rounds": [result["p99_ms"] for result in rounds],
        "complete": all(result["complete"] for result in rounds),
        "lost": sum(result["lost"] for result in rounds),
    }


def table(
    results: dict[str, dict[str, dict[str, float]]], clients: int, rate: float, load: str
) -> None:
    haske = results.get("haske")
    print(
        f"\n2 processes x {clients} clients; throughput: back to back, paced: {rate:g} messages/s"
        f" (median p99 of {PACED_ROUNDS} rounds); load average {load}"
    )
    print(
        f"{'kind':<16} {'deliveries/s':>13} {'p99 ms':>8} {'paced p50':>10} {'paced p99':>10}"
        f" {'local':>6} {'remote':>7} {'at read':>8} {'lost':>6} {'haske ÷ it':>11}"
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
            f"{paced['local_p99_ms']:>6.1f} {paced['remote_p99_ms']:>7.1f} "
            f"{paced['read_p99_ms']:>8.1f} "
            f"{int(burst['lost'] + paced['lost']):>5}{mark or ' '} {ratio}"
        )
    print(
        "(delays from broadcast to arrival at a client; paced p99 of the publishing process's"
        " own clients (local) and of the other's, through Redis (remote); at read: the paced p99"
        " when the receiver got round to reading the socket, its own serial work included;\n"
        f" ! = not every message reached every client within {ROUND_TIMEOUT:g} s; lost ="
        " deliveries missing then; the rate of such a round counts what arrived in time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 250 and fewer messages")
    parser.add_argument("--clients", type=int, help="clients per process (default 1000)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="what to compare")
    parser.add_argument("--rate", type=float, default=RATE, help="paced messages per second")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the system place the processes on CPUs"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    options = parser.parse_args()
    raise_open_files()
    clients = options.clients or (250 if options.quick else 1000)
    messages = 100 if options.quick else 300
    paced = int(options.rate * (2 if options.quick else 4))
    started_load = os.getloadavg()[0]
    redis = Redis()
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for kind in options.kinds.split(","):
            redis.flush()
            try:
                capacity = messages + paced + 100
                run = Run(kind, redis, clients, capacity, pinned=not options.no_pin)
            except RuntimeError as exc:
                print(f"{kind}: could not be set up: {exc}", flush=True)
                continue
            try:
                run.round(10, 0)  # warm up
                results[kind] = {
                    "throughput": run.round(messages, 0),
                    "paced": paced_rounds(run, paced, options.rate),
                }
            finally:
                run.close()
            print(f"{kind}: {results[kind]}", flush=True)
    finally:
        redis.stop()
    load = f"{started_load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    table(results, clients, options.rate, load)
    if options.json:
        figures = {
            "unit": "deliveries/s",
            "clients": clients,
            "messages": messages,
            "paced_rate": options.rate,
            "load_average": load,
            "results": results,
        }
        options.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        raise_open_files()
        import uvloop

        kind, url, port, control, capacity, cpu = sys.argv[2:8]
        if int(cpu) >= 0:
            pin(int(cpu))
        uvloop.run(serve(kind, url, int(port), int(control), int(capacity)))
    elif len(sys.argv) > 1 and sys.argv[1] == "receive":
        raise_open_files()
        import uvloop

        if int(sys.argv[2]) >= 0:
            pin(int(sys.argv[2]))
        ports = [int(port) for port in sys.argv[4:]]
        uvloop.run(receive(ports, int(sys.argv[3]), timeout=ROUND_TIMEOUT, gate=64))
    else:
        main()
