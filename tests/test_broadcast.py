"""WebSocketBroadcaster: the API on Starlette's TestClient against every built manager backend, and
fan-out, bursts, slow consumers and vanished clients on real uvicorn servers."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
import websockets
from clients import TIMEOUT, eventually, receive
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient, WebSocketTestSession

from haske._backends import frames
from haske.app import Haske
from haske.broadcast import ChannelLimitExceeded, ChannelNotFound, WebSocketBroadcaster
from haske.server import _SOCKET_TRANSPORTS as SOCKET_TRANSPORTS
from haske.ws import WebSocket

#: Haske's protocol, uvicorn's own two (broadcast frames go to their transports) and hypercorn.
SERVERS = ["haske", "websockets", "websockets-sansio", "hypercorn"]


@pytest.fixture
def broadcaster(broadcast_impl: ModuleType) -> WebSocketBroadcaster:
    return WebSocketBroadcaster(manager=broadcast_impl.BroadcastManager())


def subscriber_app(broadcaster: WebSocketBroadcaster) -> Haske:
    """``/sub/{name}?channels=a,b``: joins the channels, says "ready", then only listens."""
    app = Haske()

    @app.websocket("/sub/{name}", broadcaster=broadcaster)
    async def subscriber(ws: WebSocket) -> None:
        await ws.accept()
        for channel in filter(None, ws.query_params.get("channels", "").split(",")):
            await broadcaster.subscribe(ws, channel)
        await ws.send_text("ready")
        async for _ in ws:
            pass

    return app


class Clients:
    """Several TestClient WebSocket sessions on one app (one event loop)."""

    def __init__(self, client: TestClient, broadcaster: WebSocketBroadcaster) -> None:
        self.client = client
        self.broadcaster = broadcaster
        self.sessions: dict[str, WebSocketTestSession] = {}

    def connect(self, name: str, channels: str = "") -> WebSocketTestSession:
        session = self.client.websocket_connect(f"/sub/{name}?channels={channels}")
        session.__enter__()
        assert receive(session)["text"] == "ready"
        self.sessions[name] = session
        return session

    def socket(self, name: str) -> WebSocket:
        return next(ws for ws in self.broadcaster.connections() if ws.path_params["name"] == name)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return await function(*args, **kwargs)

        return self.client.portal.call(run)

    def disconnect(self, name: str) -> None:
        self.sessions.pop(name).__exit__(None, None, None)

    def close(self) -> None:
        for name in list(self.sessions):
            self.disconnect(name)


@pytest.fixture
def clients(broadcaster: WebSocketBroadcaster) -> Iterator[Clients]:
    with TestClient(subscriber_app(broadcaster)) as client:
        group = Clients(client, broadcaster)
        yield group
        group.close()


# -- the API ------------------------------------------------------------------------------------


def test_channels_are_created_listed_and_removed(clients: Clients) -> None:
    b = clients.broadcaster
    assert clients.call(b.create_channel, "news") is True
    assert clients.call(b.create_channel, "news") is False
    assert clients.call(b.create_channel, "alerts") is True
    assert b.channels() == ["alerts", "news"]
    clients.connect("ada", "news")
    assert b.count("news") == 1
    assert clients.call(b.remove_channel, "news") is True
    assert clients.call(b.remove_channel, "news") is False
    assert b.channels() == ["alerts"]
    assert len(b) == 1  # members of a removed channel stay connected
    for name in ("", 7):
        with pytest.raises(ValueError, match="non-empty str"):
            clients.call(b.create_channel, name)


def test_broadcast_reaches_everyone_or_a_channel_minus_the_excluded(clients: Clients) -> None:
    b = clients.broadcaster
    ada, bob, cy = (
        clients.connect("ada", "room"),
        clients.connect("bob", "room"),
        clients.connect("cy"),
    )
    assert clients.call(b.broadcast, "to all") == 3
    for session in (ada, bob, cy):
        assert receive(session)["text"] == "to all"

    assert clients.call(b.broadcast, "to room", channel="room") == 2
    assert clients.call(b.broadcast, "not ada", channel="room", exclude=clients.socket("ada")) == 1
    excluded = [clients.socket("ada").connection_id, clients.socket("bob")]
    assert clients.call(b.broadcast, "nobody", channel="room", exclude=excluded) == 0
    assert clients.call(b.broadcast, "end") == 3
    assert [receive(ada)["text"] for _ in range(2)] == ["to room", "end"]
    assert [receive(bob)["text"] for _ in range(3)] == ["to room", "not ada", "end"]
    assert receive(cy)["text"] == "end"
    with pytest.raises(TypeError, match="exclude"):
        clients.call(b.broadcast, "x", exclude=["ada"])


def test_messages_keep_their_kind_and_objects_become_json_text(clients: Clients) -> None:
    b = clients.broadcaster
    session = clients.connect("ada")
    for message, expected in [
        ("héllo", {"text": "héllo"}),
        (b"\x00\x01", {"bytes": b"\x00\x01"}),
        (bytearray(b"ba"), {"bytes": b"ba"}),
        (memoryview(b"mv"), {"bytes": b"mv"}),
        ({"event": "new_post", "id": 1}, {"text": '{"event":"new_post","id":1}'}),
        (["a", {"b": None}], {"text": '["a",{"b":null}]'}),
    ]:
        assert clients.call(b.broadcast, message) == 1
        assert receive(session) == {"type": "websocket.send", **expected}
    for bad in (42, {1, 2}, None):
        with pytest.raises(TypeError, match="str, bytes, a dict or a list"):
            clients.call(b.broadcast, bad)


def test_asking_about_an_unknown_channel_is_a_clear_key_error(clients: Clients) -> None:
    b = clients.broadcaster
    with pytest.raises(ChannelNotFound) as raised:
        b.count("nope")
    assert isinstance(raised.value, KeyError)
    assert raised.value.channel == "nope"
    assert "'nope'" in str(raised.value) and "create_channel('nope')" in str(raised.value)
    with pytest.raises(ChannelNotFound):
        b.get_channel_connections("nope")
    with pytest.raises(ChannelNotFound):
        b.connections("nope")


def test_a_broadcast_to_a_channel_nobody_is_in_counts_zero(clients: Clients) -> None:
    b = clients.broadcaster
    session = clients.connect("ada", "room")
    clients.call(b.create_channel, "lobby")
    clients.call(b.create_channel, "gone")
    clients.call(b.remove_channel, "gone")
    for channel in ("never-created", "lobby", "gone"):
        assert clients.call(b.broadcast, f"to {channel}", channel=channel) == 0
    assert clients.call(b.broadcast, "to room", channel="room") == 1
    assert receive(session)["text"] == "to room"
    assert b.stats()["broadcasts"] == 4 and b.stats()["delivered"] == 1


def test_subscribe_creates_channels_on_demand_up_to_the_limit(broadcast_impl: ModuleType) -> None:
    b = WebSocketBroadcaster(
        manager=broadcast_impl.BroadcastManager(), max_channels_per_connection=2
    )
    with TestClient(subscriber_app(b)) as client:
        group = Clients(client, b)
        group.connect("ada", "one,two")
        ada = group.socket("ada")
        assert b.channels() == ["one", "two"] and b.channels_of(ada) == ["one", "two"]
        assert group.call(b.subscribe, ada, "one") is False
        with pytest.raises(ChannelLimitExceeded, match="max_channels_per_connection"):
            group.call(b.subscribe, ada, "three")
        assert b.channels() == ["one", "two"]
        assert group.call(b.unsubscribe, ada, "one") is True
        assert group.call(b.unsubscribe, ada, "one") is False
        assert group.call(b.unsubscribe, ada, "never-created") is False
        assert group.call(b.subscribe, ada, "three") is True
        assert b.channels_of(ada) == ["three", "two"]
        assert b.channels() == ["three", "two"]  # "one" went with its last member
        with pytest.raises(TypeError, match="WebSocket first"):
            group.call(b.subscribe, "three", ada)
        group.close()


def test_channels_made_on_demand_go_with_their_last_member(clients: Clients) -> None:
    b = clients.broadcaster
    clients.call(b.create_channel, "lobby")
    clients.connect("ada", "lobby,doc:1")
    clients.connect("bob", "doc:1,doc:2")
    assert b.channels() == ["doc:1", "doc:2", "lobby"]
    clients.call(b.unsubscribe, clients.socket("bob"), "doc:2")
    assert b.channels() == ["doc:1", "lobby"]
    clients.disconnect("ada")
    clients.disconnect("bob")
    for _ in range(500):
        if not len(b):
            break
        clients.call(asyncio.sleep, 0.01)
    assert len(b) == 0
    assert b.channels() == ["lobby"]  # created with create_channel(): it stays
    with pytest.raises(ChannelNotFound):
        b.count("doc:1")
    # A handler that still broadcasts to its room after the last member left reaches nobody.
    assert clients.call(b.broadcast, "anyone?", channel="doc:1") == 0


def test_the_original_haske_names_work(clients: Clients) -> None:
    b = clients.broadcaster
    ada, bob = clients.connect("ada"), clients.connect("bob")
    ada_ws, bob_ws = clients.socket("ada"), clients.socket("bob")
    assert set(b.get_all_connections()) == {ada_ws, bob_ws}
    clients.call(b.create_channel, "room")
    clients.call(b.add_to_channel, ada_ws, "room")
    assert b.get_channel_connections("room") == [ada_ws]
    assert clients.call(b.broadcast, "room only", channel="room") == 1
    assert receive(ada)["text"] == "room only"
    clients.call(b.remove_from_channel, ada_ws, "room")
    assert b.get_channel_connections("room") == []
    assert clients.call(b.remove_connection, bob_ws) is True
    assert clients.call(b.remove_connection, bob_ws) is False
    assert bob_ws not in b and ada_ws in b
    assert clients.call(b.broadcast, "tracked only") == 1
    clients.call(b.add_connection, bob_ws, "room")
    assert b.get_channel_connections("room") == [bob_ws]
    assert clients.call(b.broadcast, "back") == 2
    assert [receive(ada)["text"], receive(ada)["text"], receive(bob)["text"]] == [
        "tracked only",
        "back",
        "back",
    ]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="drop_oldest"):
        WebSocketBroadcaster(policy="fastest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        WebSocketBroadcaster(outbound_limit=0)
    with pytest.raises(ValueError, match="at least 1"):
        WebSocketBroadcaster(max_channels_per_connection=0)
    b = WebSocketBroadcaster()
    with pytest.raises(ValueError, match="unknown slow-consumer policy"):
        asyncio.run(b.create_channel("x", policy="never"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="haske WebSocket"):
        asyncio.run(b.add_connection(object()))  # type: ignore[arg-type]


def test_stats_count_connections_channels_and_deliveries(clients: Clients) -> None:
    b = clients.broadcaster
    clients.connect("ada", "room")
    clients.connect("bob")
    clients.call(b.broadcast, "one")
    clients.call(b.broadcast, "two", channel="room")
    assert b.stats() == {
        "connections": 2,
        "channels": 1,
        "broadcasts": 2,
        "delivered": 3,
        "dropped": 0,
        "closed": 0,
        "failed": 0,
    }


def test_a_burst_in_one_loop_turn_is_bounded_in_bytes_not_messages(clients: Clients) -> None:
    b = clients.broadcaster
    sessions = [clients.connect(name) for name in ("ada", "bob", "cy")]

    async def burst() -> list[int]:
        return [await b.broadcast({"seq": seq, "pad": "x" * 80}) for seq in range(1000)]

    assert clients.call(burst) == [3] * 1000
    for session in sessions:
        seqs = [int(receive(session)["text"].split(",")[0][7:]) for _ in range(1000)]
        assert seqs == list(range(1000))
    assert b.stats()["dropped"] == b.stats()["closed"] == 0


def test_a_direct_send_does_not_overtake_queued_broadcasts(clients: Clients) -> None:
    b = clients.broadcaster
    session = clients.connect("ada")
    ada = clients.socket("ada")

    async def broadcast_then_reply() -> None:
        for seq in range(100):
            await b.broadcast(f"broadcast {seq}")
        await ada.send_text("direct")

    clients.call(broadcast_then_reply)
    texts = [receive(session)["text"] for _ in range(101)]
    assert texts == [f"broadcast {seq}" for seq in range(100)] + ["direct"]


# -- real servers -------------------------------------------------------------------------------


class RawClient:
    """A WebSocket client on a plain socket, so that a test can stop reading or vanish."""

    def __init__(self, sock: socket.socket, reader: asyncio.StreamReader, writer: Any) -> None:
        self.sock = sock
        self.reader = reader
        self.writer = writer
        self.decoder = frames.FrameDecoder(require_mask=False, max_frame_size=1 << 24)

    @classmethod
    async def connect(cls, port: int, path: str, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(sock, reader, writer)

    async def frame(self, timeout: float = TIMEOUT) -> Any:
        """The next frame from the server; None at end of stream."""
        return await asyncio.wait_for(self._next_frame(), timeout)

    async def _next_frame(self) -> Any:
        while (frame := self.decoder.next_frame()) is None:
            data = await self.reader.read(65536)
            if not data:
                return None
            self.decoder.feed(data)
        return frame

    def abort(self) -> None:
        """Vanish: reset the TCP connection without a close frame."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def hang_up(self) -> None:
        """Vanish: end the TCP stream without a close frame."""
        self.writer.close()


def seq_of(payload: bytes | str) -> int:
    text = payload if isinstance(payload, str) else payload.decode()
    return int(text[7 : text.index(",")])


@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_a_burst_reaches_every_real_client_in_order(
    serve: Any, ws_impl: str, broadcaster: WebSocketBroadcaster
) -> None:
    app = subscriber_app(broadcaster)

    @app.websocket("/burst", broadcaster=WebSocketBroadcaster())
    async def burst(ws: WebSocket) -> None:
        await ws.accept()
        count = int(await ws.receive_text())
        for seq in range(count):
            await broadcaster.broadcast({"seq": seq, "pad": "x" * 80}, channel="feed")
        await ws.send_json(broadcaster.stats())

    server = serve(app, ws=ws_impl)
    clients = [await websockets.connect(f"{server.url}/sub/c{i}?channels=feed") for i in range(4)]
    try:
        for client in clients:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "ready"
        async with websockets.connect(server.url + "/burst") as control:
            await control.send("800")
            for client in clients:
                seqs = [seq_of(await asyncio.wait_for(client.recv(), TIMEOUT)) for _ in range(800)]
                assert seqs == list(range(800))
            stats = await asyncio.wait_for(control.recv(), TIMEOUT)
        assert '"delivered":3200' in stats and '"dropped":0' in stats and '"closed":0' in stats
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize("turns", ["one turn", "a turn each"])
@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_a_direct_send_waits_behind_broadcasts_a_slow_client_has_not_taken(
    serve: Any, ws_impl: str, broadcast_impl: ModuleType, turns: str
) -> None:
    """In one turn the first broadcast goes straight to the socket and the rest queue behind
    it; a turn each fills the socket buffer with direct writes, the last one only in part."""
    broadcaster = WebSocketBroadcaster(
        manager=broadcast_impl.BroadcastManager(), outbound_limit=64 * 1024 * 1024
    )
    app = subscriber_app(broadcaster)
    count, pad = 2000, "x" * 4000

    @app.websocket("/control", broadcaster=WebSocketBroadcaster())
    async def control(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        (target,) = broadcaster.connections()
        peak_queued = 0
        for seq in range(count):
            await broadcaster.broadcast(f'{{"seq":{seq},"pad":"{pad}"}}')
            if turns == "a turn each":
                await asyncio.sleep(0)
                # Sampled after the writer had its turn: what is left is what the client
                # has not taken yet, wherever it waits (socket buffer or outbound queue).
                peak_queued = max(peak_queued, target.buffered_amount)
        peak_queued = max(peak_queued, target.buffered_amount)
        await target.send_text("direct")
        await ws.send_json({"queued": peak_queued, "stats": broadcaster.stats()})

    server = serve(app, ws=ws_impl)
    slow = await RawClient.connect(server.port, "/sub/slow", rcvbuf=4096)
    try:
        assert (await slow.frame()).payload == b"ready"
        async with websockets.connect(server.url + "/control") as controller:
            await controller.send("go")
            seqs = [seq_of((await slow.frame()).payload) for _ in range(count)]
            assert seqs == list(range(count))
            assert (await slow.frame()).payload == b"direct"
            report = json.loads(await asyncio.wait_for(controller.recv(), TIMEOUT))
        assert report["queued"] > 0  # the sends had to wait for the client
        assert report["stats"]["delivered"] == count
        assert report["stats"]["dropped"] == report["stats"]["closed"] == 0
    finally:
        slow.hang_up()


@pytest.mark.parametrize("compression", ["deflate", None])
@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_broadcasts_and_the_handlers_own_sends_keep_their_order(
    serve: Any, ws_impl: str, broadcast_impl: ModuleType, compression: str | None
) -> None:
    """Broadcast frames go straight to the socket on Haske's protocol, and to the transport on
    uvicorn's own protocols unless per-message deflate was negotiated; the order holds."""
    broadcaster = WebSocketBroadcaster(manager=broadcast_impl.BroadcastManager())
    app = Haske()

    @app.websocket("/mixed", broadcaster=broadcaster)
    async def mixed(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        for seq in range(300):
            if seq % 3 == 0:
                await ws.send_text(f"own {seq}")
            else:
                await broadcaster.broadcast(f"cast {seq}")
            if seq % 7 == 0:
                await asyncio.sleep(0)
        connection = ws._connection
        outlet = connection._outlet if connection is not None else None
        await ws.send_json(
            {
                "direct": outlet.written if outlet is not None else None,
                "transport": type(connection.transport).__name__ if connection else None,
                "frames_written": ws.outbound.frames_written if ws.outbound else None,
            }
        )

    server = serve(app, ws=ws_impl)
    async with websockets.connect(server.url + "/mixed", compression=compression) as client:
        await client.send("go")
        got = [await asyncio.wait_for(client.recv(), TIMEOUT) for _ in range(300)]
        assert got == [f"{'own' if seq % 3 == 0 else 'cast'} {seq}" for seq in range(300)]
        report = json.loads(await asyncio.wait_for(client.recv(), TIMEOUT))
        negotiated = client.protocol.extensions
    if ws_impl == "haske":
        assert report["frames_written"] is None
        assert not negotiated  # Haske's protocol declines per-message deflate
        if report["transport"] in SOCKET_TRANSPORTS:  # on uvloop or selectors
            assert report["direct"] > 0  # some broadcasts went straight to the socket
        else:
            assert report["direct"] is None
    elif ws_impl == "hypercorn":
        assert report["frames_written"] == 0  # another server: every broadcast takes its send
    elif compression is None:
        assert not negotiated
        assert report["frames_written"] > 0  # some broadcasts skipped the server's send
    else:
        assert negotiated  # the server compresses: every broadcast went through its send
        assert report["frames_written"] == 0


@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_a_message_larger_than_the_outbound_limit_reaches_an_idle_connection(
    serve: Any, ws_impl: str, broadcast_impl: ModuleType
) -> None:
    broadcaster = WebSocketBroadcaster(
        manager=broadcast_impl.BroadcastManager(), outbound_limit=1024, policy="drop_newest"
    )
    app = subscriber_app(broadcaster)

    @app.websocket("/control", broadcaster=WebSocketBroadcaster())
    async def control(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        counts = []
        for text in ("x" * 2000, "small"):
            counts.append(await broadcaster.broadcast(text))
            await asyncio.sleep(0)  # each the first of its turn: the direct path is open
        await ws.send_json({"counts": counts, "stats": broadcaster.stats()})

    server = serve(app, ws=ws_impl)
    async with websockets.connect(server.url + "/sub/a") as client:
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "ready"
        async with websockets.connect(server.url + "/control") as controller:
            await controller.send("go")
            report = json.loads(await asyncio.wait_for(controller.recv(), TIMEOUT))
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "x" * 2000
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "small"
    assert report["counts"] == [1, 1]
    assert report["stats"]["dropped"] == 0 and report["stats"]["delivered"] == 2


async def test_a_broadcast_the_kernel_takes_in_part_pauses_the_protocol_cleanly(
    serve: Any, broadcast_impl: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """What the socket does not take goes to the transport, which then pauses the protocol
    (the rest is over its high-water mark) from inside the outlet's write."""
    broadcaster = WebSocketBroadcaster(
        manager=broadcast_impl.BroadcastManager(), outbound_limit=64 * 1024 * 1024
    )
    app = subscriber_app(broadcaster)
    big = "y" * (4 * 1024 * 1024)

    @app.websocket("/control", broadcaster=WebSocketBroadcaster())
    async def control(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        (target,) = broadcaster.connections()
        count = await broadcaster.broadcast(big)
        buffered = target.buffered_amount
        await asyncio.sleep(0)
        await broadcaster.broadcast("after")
        await ws.send_json({"count": count, "buffered": buffered})

    server = serve(app, ws="haske")
    slow = await RawClient.connect(server.port, "/sub/slow", rcvbuf=4096)
    try:
        assert (await slow.frame()).payload == b"ready"
        async with websockets.connect(server.url + "/control") as controller:
            await controller.send("go")
            report = json.loads(await asyncio.wait_for(controller.recv(), TIMEOUT))
            assert report["count"] == 1 and report["buffered"] > 0
            assert (await slow.frame()).payload == big.encode()
            assert (await slow.frame()).payload == b"after"
    finally:
        slow.hang_up()
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures == []


SLOW_LIMIT = 256 * 1024
BATCH = 48
PAD = 4000


@pytest.mark.parametrize("policy", ["close", "drop_newest", "drop_oldest"])
@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_a_stalled_client_never_holds_back_the_others(
    serve: Any, ws_impl: str, policy: str, broadcast_impl: ModuleType
) -> None:
    broadcaster = WebSocketBroadcaster(
        manager=broadcast_impl.BroadcastManager(),
        policy=policy,
        outbound_limit=SLOW_LIMIT,  # type: ignore[arg-type]
    )
    app = subscriber_app(broadcaster)
    peak: list[int] = [0]

    @app.websocket("/control", broadcaster=WebSocketBroadcaster())
    async def control(ws: WebSocket) -> None:
        # "start count": broadcast that batch at once, then report the counters.
        await ws.accept()
        async for command in ws:
            start, count = map(int, str(command).split())
            for seq in range(start, start + count):
                await broadcaster.broadcast(f'{{"seq":{seq},"pad":"{"x" * PAD}"}}', "feed")
                queued = max(c.buffered_amount for c in broadcaster.connections("feed"))
                peak[0] = max(peak[0], queued)
            await ws.send_json(broadcaster.stats())

    server = serve(app, ws=ws_impl)
    stalled = await RawClient.connect(server.port, "/sub/stalled?channels=feed", rcvbuf=4096)
    assert (await stalled.frame()).payload == b"ready"
    healthy = [await websockets.connect(f"{server.url}/sub/h{i}?channels=feed") for i in range(3)]
    controller = await websockets.connect(server.url + "/control")
    tripped_at = None
    sent = 0
    try:
        for client in healthy:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "ready"

        async def batch() -> dict[str, int]:
            nonlocal sent
            await controller.send(f"{sent} {BATCH}")
            for client in healthy:
                got = [seq_of(await asyncio.wait_for(client.recv(), TIMEOUT)) for _ in range(BATCH)]
                assert got == list(range(sent, sent + BATCH))
            sent += BATCH
            return json.loads(await asyncio.wait_for(controller.recv(), TIMEOUT))

        # Flood until the stalled client trips its policy (the kernel buffers a few MB first).
        while tripped_at is None:
            stats = await batch()
            if stats["closed"] or stats["dropped"]:
                tripped_at = sent
            assert sent * (PAD + 20) < 64 * 1024 * 1024, "the stalled client never tripped"
        for _ in range(3):
            stats = await batch()
        assert peak[0] <= SLOW_LIMIT + PAD + 20
        assert stats["failed"] == 0
        if policy == "close":
            assert stats["closed"] == 1 and stats["dropped"] == 0
            assert stats["connections"] == 3 and broadcaster.count("feed") == 3
            seqs = []
            while (frame := await stalled.frame()) is not None and frame.opcode != frames.OP_CLOSE:
                seqs.append(seq_of(frame.payload))
            assert frame is not None, "no close frame"
            assert struct.unpack("!H", frame.payload[:2])[0] == 1013
            assert frame.payload[2:] == b"try again later"
            assert seqs == list(range(len(seqs))) and len(seqs) < sent
        else:
            assert stats["closed"] == 0 and stats["dropped"] > 0
            assert broadcaster.count("feed") == 4
            # Once it reads again it gets newer messages, still in order.
            resumed_from = sent
            seqs = []

            async def catch_up() -> None:
                while not seqs or seqs[-1] < resumed_from:
                    frame = await stalled.frame()
                    assert frame is not None, "the stalled client was disconnected"
                    if frame.opcode == frames.OP_TEXT:
                        seqs.append(seq_of(frame.payload))

            reading = asyncio.create_task(catch_up())
            try:
                while not reading.done():
                    await batch()
                    assert sent - resumed_from < 100 * BATCH, "the stalled client never caught up"
                await reading
            finally:
                reading.cancel()
            assert seqs == sorted(set(seqs))
            assert len(seqs) < sent
    finally:
        for client in [*healthy, controller]:
            await client.close()
        stalled.hang_up()


@pytest.mark.parametrize("policy", ["close", "drop_oldest"])
@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_a_stalled_client_leaves_the_others_latency_within_twice_the_baseline(
    serve: Any, ws_impl: str, policy: str
) -> None:
    """Healthy clients' delay from broadcast to arrival, one message at a time: without a
    stalled client, then with one that the policy has already had to handle (it stays
    connected and overloaded under drop_oldest). The medians may differ by at most 2x, plus
    1 ms for scheduling noise at sub-millisecond delays; a stalled client that held the
    others back would cost them whole seconds."""
    broadcaster = WebSocketBroadcaster(policy=policy, outbound_limit=SLOW_LIMIT)  # type: ignore[arg-type]
    app = subscriber_app(broadcaster)

    @app.websocket("/control", broadcaster=WebSocketBroadcaster())
    async def control(ws: WebSocket) -> None:
        # "cast N": N broadcasts stamped with their time; then the counters.
        await ws.accept()
        async for command in ws:
            for _ in range(int(str(command).split()[1])):
                stamp = time.monotonic_ns()
                await broadcaster.broadcast(f'{{"t":{stamp},"pad":"{"x" * PAD}"}}', "feed")
            await ws.send_json(broadcaster.stats())

    server = serve(app, ws=ws_impl)
    healthy = [await websockets.connect(f"{server.url}/sub/h{i}?channels=feed") for i in range(3)]
    controller = await websockets.connect(server.url + "/control")
    stalled = None

    async def cast(count: int) -> tuple[list[int], dict[str, int]]:
        await controller.send(f"cast {count}")
        delays = []
        for client in healthy:
            for _ in range(count):
                message = await asyncio.wait_for(client.recv(), TIMEOUT)
                delays.append(time.monotonic_ns() - json.loads(message)["t"])
        return delays, json.loads(await asyncio.wait_for(controller.recv(), TIMEOUT))

    async def median_delay() -> float:
        delays = []
        for _ in range(150):
            delays.extend((await cast(1))[0])
        return statistics.median(delays) / 1e6

    try:
        for client in healthy:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "ready"
        await cast(20)  # warm up
        baseline = await median_delay()

        stalled = await RawClient.connect(server.port, "/sub/stalled?channels=feed", rcvbuf=4096)
        assert (await stalled.frame()).payload == b"ready"
        while True:  # fill its buffers until the policy acts
            _, stats = await cast(BATCH)
            if stats["closed"] or stats["dropped"]:
                break
            assert stats["delivered"] < 64 * 1024 * 1024 / PAD, "the stalled client never tripped"
        with_stalled = await median_delay()
        stats = (await cast(1))[1]
        assert stats["connections"] == (3 if policy == "close" else 4)
        assert with_stalled <= 2 * baseline + 1.0, (baseline, with_stalled)
    finally:
        for client in [*healthy, controller]:
            await client.close()
        if stalled is not None:
            stalled.hang_up()


@pytest.mark.parametrize("vanish", ["abort", "hang_up"])
@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_a_client_that_vanishes_without_a_close_is_cleaned_up(
    serve: Any, ws_impl: str, vanish: str, broadcaster: WebSocketBroadcaster
) -> None:
    server = serve(subscriber_app(broadcaster), ws=ws_impl)
    raw = [await RawClient.connect(server.port, f"/sub/r{i}?channels=room") for i in range(3)]
    for client in raw:
        assert (await client.frame()).payload == b"ready"
    assert len(broadcaster) == 3 and broadcaster.count("room") == 3
    for client in raw:
        getattr(client, vanish)()
    await eventually(lambda: len(broadcaster) == 0)
    assert broadcaster.channels() == []  # "room" went with its last member


def quiet_app(broadcaster: WebSocketBroadcaster, release: threading.Event) -> Haske:
    """Subscribers, ``/quiet/{name}`` handlers that never receive, and ``/blast``: a broadcast."""
    app = subscriber_app(broadcaster)

    @app.websocket("/quiet/{name}", broadcaster=broadcaster)
    async def quiet(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        await asyncio.to_thread(release.wait, TIMEOUT * 2)

    @app.route("/blast")
    async def blast(request: Request) -> Response:
        return JSONResponse(
            {"sent": await broadcaster.broadcast("x" * 1000), **broadcaster.stats()}
        )

    return app


@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_connections_lost_while_sending_leave_the_broadcaster(
    serve: Any, ws_impl: str, broadcaster: WebSocketBroadcaster
) -> None:
    """Handlers that never receive only learn of a lost peer from a failed send."""
    release = threading.Event()
    server = serve(quiet_app(broadcaster, release), ws=ws_impl)
    keeper = await websockets.connect(f"{server.url}/sub/keeper")
    try:
        assert await asyncio.wait_for(keeper.recv(), TIMEOUT) == "ready"
        raw = [await RawClient.connect(server.port, f"/quiet/r{i}") for i in range(3)]
        for client in raw:
            assert (await client.frame()).payload == b"ready"
            client.hang_up()
        blasts = 0
        async with httpx.AsyncClient() as http:
            while (stats := (await http.get(server.http_url + "/blast")).json())["connections"] > 1:
                blasts += 1
                assert blasts < 500, stats
                await asyncio.sleep(0.01)
        assert stats["failed"] == 3
        for _ in range(blasts + 1):
            assert await asyncio.wait_for(keeper.recv(), TIMEOUT) == "x" * 1000
    finally:
        release.set()
        await keeper.close()
