"""Fan-out benchmark: one message broadcast to N real WebSocket clients, across servers.

    python bench/bench_fanout.py            # N = 100, 1000, 5000, then memory at 10,000 clients
    python bench/bench_fanout.py --quick    # N = 100, 1000, fewer messages, memory at 2,000

Every server runs in its own process (pinned to CPU 0 when there are two or more); one receiver
process (pinned to CPU 1) holds all N client sockets on uvloop, counts frames and samples the
delay from each message's broadcast to its arrival. Messages are 100-byte JSON texts carrying
their broadcast time (``time.monotonic_ns``, the same clock in every process).

Servers (all on uvloop; uvicorn with httptools, keepalive pings off):

- ``haske``:        a Haske app on Haske's protocol (``--ws haske.server:WebSocketProtocol``),
                    ``get_broadcaster().broadcast()``: the frame is encoded once, the compiled
                    manager hands it to every connection's corked write buffer.
- ``haske-asgi``:   the same app on uvicorn's ``websockets`` protocol: the frame, encoded once,
                    written to each idle connection's transport; for a connection with data
                    waiting, the ASGI message handed to the server's ``send`` (a send that has
                    to wait goes on in a task, with later messages queued behind it, bounded).
- ``naive``:        Starlette, ``for ws in conns: await ws.send_text(m)``, same uvicorn protocol.
- ``broadcaster``:  Starlette with encode/broadcaster's ``memory://`` backend, same protocol.
- ``websockets``:   the websockets library's server with ``websockets.broadcast()``.
- ``picows``:       picows, one pre-encoded frame written to each transport.
- ``raw``:          hand-made handshake, then ``socket.send`` of the pre-encoded frame to each
                    socket: one system call per message per connection, the ceiling for sending
                    messages one at a time.

Two rounds per server and N, each the best of three runs: *fan-out* (one broadcast per
event-loop turn) and *bursts* (``BURST`` broadcasts per turn, where Haske's protocol writes them
to each socket at once).
Then *memory*: resident memory per idle connection with 10,000 clients connected, for Haske,
a plain Starlette endpoint on Haske's protocol (what the protocol and the ASGI stack cost without
Haske's wrapper and broadcaster), the websockets server and uvicorn's default WebSocket protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _clients
from _clients import free_port, receive

MESSAGE_SIZE = 100
PAD = "x" * (MESSAGE_SIZE - 45)
BURST = 10
REPEAT = 3
FANOUT_KINDS = ["haske", "haske-asgi", "naive", "broadcaster", "websockets", "picows", "raw"]
MEMORY_KINDS = ["haske", "haske-starlette", "websockets", "uvicorn-default"]


def payload(seq: int) -> str:
    """A 100-byte JSON text stamped with the time it is broadcast."""
    return f'{{"t":{time.monotonic_ns():019d},"s":{seq:08d},"p":"{PAD}"}}'


def frame(text: str) -> bytes:
    return b"\x81" + bytes([len(text)]) + text.encode()


def raise_open_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(cpu: int) -> None:
    if len(os.sched_getaffinity(0)) > 1 and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# -- servers ----------------------------------------------------------------------------------------


class Server:
    """One kind of server: how many clients it holds, and how it broadcasts a text."""

    def count(self) -> int:
        raise NotImplementedError

    async def broadcast(self, text: str) -> None:
        raise NotImplementedError

    async def start(self, port: int) -> None:
        raise NotImplementedError


class UvicornServer(Server):
    def __init__(self, app: Any, ws: str, count: Callable[[], int]) -> None:
        self.app, self.ws, self._count = app, ws, count

    def count(self) -> int:
        return self._count()

    async def start(self, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            ws=self.ws,
            http="httptools",
            lifespan="off",
            log_level="error",
            ws_ping_interval=None,
            backlog=4096,
        )
        self.server = uvicorn.Server(config)
        asyncio.get_running_loop().create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)


def haske_server(ws: str) -> Server:
    from haske.app import Haske
    from haske.ws import WebSocket, get_broadcaster

    app = Haske()
    broadcaster = get_broadcaster()

    @app.websocket("/ws")
    async def listen(socket: WebSocket) -> None:
        await socket.accept()
        async for _ in socket:
            pass

    server = UvicornServer(app, ws, lambda: len(broadcaster))

    async def broadcast(text: str) -> None:
        await broadcaster.broadcast(text)

    server.broadcast = broadcast  # type: ignore[method-assign]
    return server


def starlette_server(ws: str, *, use_broadcaster: bool = False) -> Server:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    connections: set[WebSocket] = set()

    if use_broadcaster:
        from broadcaster import Broadcast

        hub = Broadcast("memory://")
        ready = asyncio.Event()

        async def listen(websocket: WebSocket) -> None:
            if not ready.is_set():
                await hub.connect()
                ready.set()
            await websocket.accept()
            connections.add(websocket)
            try:
                async with hub.subscribe(channel="bench") as subscriber:
                    async for event in subscriber:  # type: ignore[union-attr]
                        await websocket.send_text(event.message)
            except WebSocketDisconnect:
                pass
            finally:
                connections.discard(websocket)

        async def broadcast(text: str) -> None:
            await hub.publish(channel="bench", message=text)

    else:

        async def listen(websocket: WebSocket) -> None:
            await websocket.accept()
            connections.add(websocket)
            try:
                async for _ in websocket.iter_text():
                    pass
            finally:
                connections.discard(websocket)

        async def broadcast(text: str) -> None:
            for websocket in list(connections):
                try:
                    await websocket.send_text(text)
                except Exception:  # noqa: BLE001 - a client gone mid-loop
                    connections.discard(websocket)

    server = UvicornServer(
        Starlette(routes=[WebSocketRoute("/ws", listen)]), ws, lambda: len(connections)
    )
    server.broadcast = broadcast  # type: ignore[method-assign]
    return server


class WebsocketsServer(Server):
    def __init__(self) -> None:
        self.connections: set[Any] = set()

    def count(self) -> int:
        return len(self.connections)

    async def start(self, port: int) -> None:
        from websockets.asyncio.server import serve

        async def handler(connection: Any) -> None:
            self.connections.add(connection)
            try:
                await connection.wait_closed()
            finally:
                self.connections.discard(connection)

        self.server = await serve(
            handler, "127.0.0.1", port, ping_interval=None, compression=None, backlog=4096
        )

    async def broadcast(self, text: str) -> None:
        from websockets.asyncio.server import broadcast

        broadcast(self.connections, text)


class PicowsServer(Server):
    def __init__(self) -> None:
        self.transports: set[Any] = set()

    def count(self) -> int:
        return len(self.transports)

    async def start(self, port: int) -> None:
        import picows

        transports = self.transports

        class Listener(picows.WSListener):  # type: ignore[misc]
            def on_ws_connected(self, transport: Any) -> None:
                transports.add(transport.underlying_transport)

            def on_ws_disconnected(self, transport: Any) -> None:
                transports.discard(transport.underlying_transport)

        self.server = await picows.ws_create_server(
            lambda request: Listener(), "127.0.0.1", port, backlog=4096
        )

    async def broadcast(self, text: str) -> None:
        data = frame(text)
        for transport in self.transports:
            transport.write(data)


class RawServer(Server):
    """Accepts and upgrades by hand on a thread; broadcasts with one send() per socket."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def count(self) -> int:
        return len(self.sockets)

    async def start(self, port: int) -> None:
        listener = socket.create_server(("127.0.0.1", port), backlog=4096)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        from haske.ws import websocket_handshake

        while True:
            connection, _ = listener.accept()
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            connection.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + websocket_handshake(key).encode()
                + b"\r\n\r\n"
            )
            # Every other server sets TCP_NODELAY; without it Nagle's algorithm merges sends.
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.setblocking(False)
            self.sockets.append(connection)

    async def broadcast(self, text: str) -> None:
        data = frame(text)
        for sock in self.sockets:
            sock.send(data)


def make_server(kind: str) -> Server:
    factories: dict[str, Callable[[], Server]] = {
        "haske": lambda: haske_server("haske.server:WebSocketProtocol"),
        "haske-asgi": lambda: haske_server("websockets"),
        "naive": lambda: starlette_server("websockets"),
        "broadcaster": lambda: starlette_server("websockets", use_broadcaster=True),
        "uvicorn-default": lambda: starlette_server("auto"),
        "haske-starlette": lambda: starlette_server("haske.server:WebSocketProtocol"),
        "websockets": WebsocketsServer,
        "picows": PicowsServer,
        "raw": RawServer,
    }
    return factories[kind]()


async def serve(kind: str, port: int, control_port: int) -> None:
    """Run a server and a line-based control channel: count | rss | run MESSAGES BURST."""
    server = make_server(kind)
    await server.start(port)

    async def run(messages: str, burst: str) -> dict[str, int]:
        started = time.monotonic_ns()
        for seq in range(int(messages)):
            await server.broadcast(payload(seq))
            if (seq + 1) % int(burst) == 0:
                await asyncio.sleep(0)
        return {"started": started, "ended": time.monotonic_ns()}

    await _clients.serve_control(control_port, {"count": server.count, "rss": rss_kib, "run": run})


# -- the controller ---------------------------------------------------------------------------------


#: This script's subcommands in a process of their own.
spawn = functools.partial(_clients.spawn, __file__)


class Run(_clients.Control):
    """A server process, its control channel, and optionally a receiver process."""

    def __init__(self, kind: str) -> None:
        self.port, control_port = free_port(), free_port()
        super().__init__(
            kind, spawn("serve", kind, str(self.port), str(control_port)), control_port
        )
        self.receiver: subprocess.Popen[str] | None = None

    def connect(self, clients: int) -> None:
        self.receiver = spawn("receive", str(self.port), str(clients))
        assert self.receiver.stdout is not None
        line = self.receiver.stdout.readline()
        if not line:
            raise RuntimeError("the receiver could not open its clients")
        deadline = time.monotonic() + 30
        while self.ask("count") < clients:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not see every client")
            time.sleep(0.02)

    def round(self, clients: int, messages: int, burst: int) -> dict[str, float]:
        receiver = self.receiver
        assert receiver is not None and receiver.stdin and receiver.stdout
        receiver.stdin.write(f"expect {clients * messages}\n")
        receiver.stdin.flush()
        receiver.stdout.readline()  # armed: counting starts before the first message is sent
        sent = self.ask(f"run {messages} {burst}")
        got = json.loads(receiver.stdout.readline())
        seconds = max(got["last"] - sent["started"], 1) / 1e9
        return {
            "rate": got["frames"] / seconds,
            "p99_ms": got["p99"] / 1e6,
            "complete": got["frames"] == clients * messages,
        }

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.kill()
            self.receiver.wait()
        super().close()


def fanout(
    sizes: list[int], deliveries: int, kinds: list[str]
) -> dict[int, dict[str, dict[str, dict[str, float]]]]:
    by_clients: dict[int, dict[str, dict[str, dict[str, float]]]] = {}
    for clients in sizes:
        messages = max(20, deliveries // clients)
        print(f"\nN = {clients} clients, {messages} messages of {MESSAGE_SIZE} bytes")
        results = by_clients[clients] = {}
        for kind in kinds:
            run = Run(kind)
            try:
                run.connect(clients)
                run.round(clients, max(5, messages // 10), 1)  # warm up
                # Best of REPEAT: other processes on the machine only ever slow a round down.
                results[kind] = {
                    name: max(
                        (run.round(clients, messages, burst) for _ in range(REPEAT)),
                        key=lambda result: result["rate"],
                    )
                    for name, burst in (("fan-out", 1), ("bursts", BURST))
                }
            finally:
                run.close()
        table(results)
    return by_clients


def table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    haske = results.get("haske")
    header = f"{'server':<12} {'fan-out/s':>11} {'p99 ms':>8} {'bursts/s':>11} {'p99 ms':>8}"
    print(header + f" {'haske fan-out ÷ it':>19} {'haske bursts ÷ it':>18}")
    for kind, rounds in results.items():
        line = f"{kind:<12}"
        for name in ("fan-out", "bursts"):
            result = rounds[name]
            mark = "" if result["complete"] else "!"
            line += f" {result['rate']:>10,.0f}{mark or ' '}{result['p99_ms']:>8.1f}"
        if haske:
            for name in ("fan-out", "bursts"):
                line += f" {haske[name]['rate'] / rounds[name]['rate']:>18.2f}x"
        print(line)
    if "raw" in results and haske:
        ratio = haske["bursts"]["rate"] / results["raw"]["fan-out"]["rate"]
        print(f"haske bursts ÷ raw one-send-per-message ceiling: {ratio:.2f}x")
    if "haske-asgi" in results and "naive" in results:
        ratio = results["haske-asgi"]["fan-out"]["rate"] / results["naive"]["fan-out"]["rate"]
        print(f"haske-asgi fan-out ÷ naive Starlette loop: {ratio:.2f}x")
    print("(! = not every message arrived within 120 s)")


def memory(clients: int) -> dict[str, float]:
    print(f"\nResident memory per idle connection, {clients} clients")
    kib: dict[str, float] = {}
    print(f"{'server':<16} {'KiB per connection':>19}")
    for kind in MEMORY_KINDS:
        run = Run(kind)
        try:
            # Warm the server up (imports, first-connection allocations) before the baseline.
            run.connect(50)
            assert run.receiver is not None
            run.receiver.kill()
            run.receiver.wait()
            while run.ask("count"):
                time.sleep(0.02)
            before = run.ask("rss")
            run.connect(clients)
            time.sleep(1)
            after = run.ask("rss")
        finally:
            run.close()
        kib[kind] = (after - before) / clients
        print(f"{kind:<16} {kib[kind]:>19.2f}")
    return kib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N and fewer messages")
    parser.add_argument("--kinds", default=",".join(FANOUT_KINDS), help="servers to compare")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--no-fanout", action="store_true", help="only measure memory")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    options = parser.parse_args()
    raise_open_files()
    kinds = options.kinds.split(",")
    from haske import _backends

    print(
        f"Haske backends: {', '.join(f'{c} {_backends.chosen(c)}' for c in _backends.IMPLEMENTATIONS)}"
    )
    figures: dict[str, Any] = {
        "unit": "deliveries/s",
        "message_bytes": MESSAGE_SIZE,
        "burst": BURST,
    }
    if options.no_fanout:
        pass
    elif options.quick:
        figures["fanout"] = fanout([100, 1000], 100_000, kinds)
    else:
        figures["fanout"] = fanout([100, 1000, 5000], 200_000, kinds)
    if not options.no_memory:
        clients = 2000 if options.quick else 10_000
        figures["memory"] = {"clients": clients, "kib_per_connection": memory(clients)}
    if options.json:
        options.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        raise_open_files()
        pin(0)
        import uvloop

        uvloop.run(serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif len(sys.argv) > 1 and sys.argv[1] == "receive":
        raise_open_files()
        pin(1)
        import uvloop

        uvloop.run(receive([int(sys.argv[2])], int(sys.argv[3]), timeout=120))
    else:
        main()
