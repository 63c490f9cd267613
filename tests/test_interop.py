"""Real WebSocket clients (websockets, aiohttp, picows, websocket-client) against Haske's protocol."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import picows
import pytest
import websocket as websocket_client
import websockets.asyncio.client
from conformance.app import echo, echo_messages
from conftest import LiveServer
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from haske._backends import frames
from haske.connection import OP_BINARY, OP_CONTINUATION, OP_TEXT

TIMEOUT = 10
LARGE = 16 * 1024 * 1024  # uvicorn's default ws_max_size: the largest message allowed
TEXT = "héllo wörld ✓ " * 3
BINARY = bytes(range(256)) * 4


async def fragments(websocket: WebSocket) -> None:
    """Send one fragmented text and one fragmented binary message, then echo."""
    await websocket.accept()
    ext = websocket.scope["extensions"]["haske.websocket"]
    ext.send_frame(frames.Frame(OP_TEXT, b"frag", fin=False))
    ext.send_frame(frames.Frame(OP_CONTINUATION, "mén".encode(), fin=False))
    ext.send_frame(frames.Frame(OP_CONTINUATION, b"ted"))
    ext.send_frame(frames.Frame(OP_BINARY, b"\x00\x01", fin=False))
    ext.send_frame(frames.Frame(OP_CONTINUATION, b"\x02"))
    await echo_messages(websocket)


async def server_ping(websocket: WebSocket) -> None:
    """Ping the client and report whether its pong came back."""
    await websocket.accept()
    rtt = await websocket.scope["extensions"]["haske.websocket"].ping(b"from server")
    await websocket.send_text("pong received" if rtt >= 0 else "bad rtt")
    await echo_messages(websocket)


APP = Starlette(
    routes=[
        WebSocketRoute("/echo", echo),
        WebSocketRoute("/fragments", fragments),
        WebSocketRoute("/ping", server_ping),
    ]
)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer(APP, "haske").start()
    yield live
    live.stop()


class Client(abc.ABC):
    """The same few operations over each client library."""

    name = ""
    can_fragment = True

    @abc.abstractmethod
    async def connect(self, url: str) -> None: ...

    @abc.abstractmethod
    async def send(self, data: str | bytes) -> None: ...

    async def send_fragments(self, parts: list[str]) -> None:
        raise NotImplementedError(f"{self.name} cannot send a fragmented message")

    @abc.abstractmethod
    async def recv(self) -> str | bytes: ...

    @abc.abstractmethod
    async def ping(self, payload: bytes) -> bytes:
        """Send a ping; return the payload of the pong that answers it."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class WebsocketsClient(Client):
    name = "websockets"

    async def connect(self, url: str) -> None:
        self.ws = await websockets.asyncio.client.connect(url, max_size=None, open_timeout=TIMEOUT)

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def send_fragments(self, parts: list[str]) -> None:
        await self.ws.send(parts)

    async def recv(self) -> str | bytes:
        return await asyncio.wait_for(self.ws.recv(), TIMEOUT)

    async def ping(self, payload: bytes) -> bytes:
        await asyncio.wait_for(await self.ws.ping(payload), TIMEOUT)
        return payload  # websockets resolves the waiter only for a pong with this payload

    async def close(self) -> None:
        await self.ws.close()


class AiohttpClient(Client):
    name = "aiohttp"
    can_fragment = False  # aiohttp has no API to send a fragmented message

    async def connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        # autoping off so that pongs are visible; pings from the server are answered below.
        self.ws = await self.session.ws_connect(url, max_msg_size=0, autoping=False)

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    async def _message(self) -> aiohttp.WSMessage:
        return await asyncio.wait_for(self.ws.receive(), TIMEOUT)

    async def recv(self) -> str | bytes:
        while True:
            message = await self._message()
            if message.type == aiohttp.WSMsgType.PING:
                await self.ws.pong(message.data)
            elif message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                return message.data  # type: ignore[no-any-return]
            else:
                raise AssertionError(f"unexpected {message}")

    async def ping(self, payload: bytes) -> bytes:
        await self.ws.ping(payload)
        message = await self._message()
        assert message.type == aiohttp.WSMsgType.PONG
        return message.data  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


class PicowsClient(Client):
    name = "picows"

    class Listener(picows.WSListener):
        def __init__(self) -> None:
            self.frames: asyncio.Queue[tuple[picows.WSMsgType, bytes, bool]] = asyncio.Queue()

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            self.frames.put_nowait((frame.msg_type, frame.get_payload_as_bytes(), frame.fin))

    async def connect(self, url: str) -> None:
        self.transport, listener = await picows.ws_connect(
            self.Listener, url, max_frame_size=LARGE + 1024
        )
        self.listener: PicowsClient.Listener = listener  # type: ignore[assignment]

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.transport.send(picows.WSMsgType.TEXT, data.encode())
        else:
            self.transport.send(picows.WSMsgType.BINARY, data)

    async def send_fragments(self, parts: list[str]) -> None:
        for i, part in enumerate(parts):
            kind = picows.WSMsgType.TEXT if i == 0 else picows.WSMsgType.CONTINUATION
            self.transport.send(kind, part.encode(), fin=i == len(parts) - 1)

    async def _frame(self) -> tuple[picows.WSMsgType, bytes, bool]:
        return await asyncio.wait_for(self.listener.frames.get(), TIMEOUT)

    async def recv(self) -> str | bytes:
        kind, payload, fin = await self._frame()
        parts = [payload]
        while not fin:  # picows hands over frames; reassemble here
            _, payload, fin = await self._frame()
            parts.append(payload)
        data = b"".join(parts)
        return data.decode() if kind == picows.WSMsgType.TEXT else data

    async def ping(self, payload: bytes) -> bytes:
        self.transport.send_ping(payload)
        kind, data, _ = await self._frame()
        assert kind == picows.WSMsgType.PONG
        return data

    async def close(self) -> None:
        self.transport.send_close(picows.WSCloseCode.OK)
        await asyncio.wait_for(self.transport.wait_disconnected(), TIMEOUT)


class WebsocketClientClient(Client):
    """websocket-client is synchronous: every call runs in a worker thread."""

    name = "websocket-client"

    async def connect(self, url: str) -> None:
        self.ws = await asyncio.to_thread(websocket_client.create_connection, url, timeout=TIMEOUT)

    async def send(self, data: str | bytes) -> None:
        opcode = (
            websocket_client.ABNF.OPCODE_TEXT
            if isinstance(data, str)
            else (websocket_client.ABNF.OPCODE_BINARY)
        )
        await asyncio.to_thread(self.ws.send, data, opcode)

    async def send_fragments(self, parts: list[str]) -> None:
        def send() -> None:
            for i, part in enumerate(parts):
                opcode = (
                    websocket_client.ABNF.OPCODE_TEXT
                    if i == 0
                    else (websocket_client.ABNF.OPCODE_CONT)
                )
                fin = int(i == len(parts) - 1)
                self.ws.send_frame(websocket_client.ABNF.create_frame(part.encode(), opcode, fin))

        await asyncio.to_thread(send)

    async def recv(self) -> str | bytes:
        return await asyncio.to_thread(self.ws.recv)  # type: ignore[no-any-return]

    async def ping(self, payload: bytes) -> bytes:
        def ping() -> bytes:
            self.ws.ping(payload)
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
            assert opcode == websocket_client.ABNF.OPCODE_PONG
            return frame.data  # type: ignore[no-any-return]

        return await asyncio.to_thread(ping)

    async def close(self) -> None:
        await asyncio.to_thread(self.ws.close)


CLIENTS = [WebsocketsClient, AiohttpClient, PicowsClient, WebsocketClientClient]


@pytest.fixture(params=CLIENTS, ids=[c.name for c in CLIENTS])
def client_class(request: pytest.FixtureRequest) -> type[Client]:
    return request.param  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def connected(client_class: type[Client], url: str) -> AsyncIterator[Client]:
    client = client_class()
    await asyncio.wait_for(client.connect(url), TIMEOUT)
    try:
        yield client
    finally:
        await client.close()


async def test_text(server: LiveServer, client_class: type[Client]) -> None:
    async with connected(client_class, f"{server.url}/echo") as client:
        await client.send(TEXT)
        assert await client.recv() == TEXT


async def test_binary(server: LiveServer, client_class: type[Client]) -> None:
    async with connected(client_class, f"{server.url}/echo") as client:
        await client.send(BINARY)
        assert await client.recv() == BINARY
        await client.send(b"")
        assert await client.recv() == b""


async def test_fragmented_from_server(server: LiveServer, client_class: type[Client]) -> None:
    async with connected(client_class, f"{server.url}/fragments") as client:
        assert await client.recv() == "fragménted"
        assert await client.recv() == b"\x00\x01\x02"


FRAGMENTING = [c for c in CLIENTS if c.can_fragment]


@pytest.mark.parametrize("client_class", FRAGMENTING, ids=[c.name for c in FRAGMENTING])
async def test_fragmented_from_client(server: LiveServer, client_class: type[Client]) -> None:
    async with connected(client_class, f"{server.url}/echo") as client:
        await client.send_fragments(["frag", "mén", "", "ted"])
        assert await client.recv() == "fragménted"


@pytest.mark.slow
async def test_large_message(server: LiveServer, client_class: type[Client]) -> None:
    payload = bytes(range(251)) * (LARGE // 251) + b"\xff" * (LARGE % 251)
    async with connected(client_class, f"{server.url}/echo") as client:
        await client.send(payload)
        assert await client.recv() == payload


async def test_client_ping(server: LiveServer, client_class: type[Client]) -> None:
    async with connected(client_class, f"{server.url}/echo") as client:
        assert await client.ping(b"client ping") == b"client ping"
        await client.send("after ping")
        assert await client.recv() == "after ping"


async def test_server_ping(server: LiveServer, client_class: type[Client]) -> None:
    async with connected(client_class, f"{server.url}/ping") as client:
        assert await client.recv() == "pong received"
        await client.send("after")
        assert await client.recv() == "after"
