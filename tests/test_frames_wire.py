"""The frame codec on real sockets, against the ``websockets`` library as the peer.

Server role: a minimal echo server built on ``FrameDecoder`` and ``encode_frame`` serves a real
``websockets`` client. Client role: masked frames from ``encode_frame`` go to a real
``websockets`` server, which fails the connection on any framing mistake.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 10
SIZES = [0, 1, 125, 126, 65535, 65536, (1 << 20) + 3]


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The HTTP head up to the blank line, and whatever bytes followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("peer closed during the handshake")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


class EchoServer:
    """One connection: the handshake by hand, then every frame echoed, pings answered."""

    def __init__(self, frames: ModuleType) -> None:
        self.frames = frames
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.received: list[Any] = []
        self.thread = threading.Thread(target=self.serve, name="haske-frames-echo", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        frames = self.frames
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            head, rest = read_head(conn)
            match = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head)
            assert match is not None, head
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_key(match.group(1))
                + b"\r\n\r\n"
            )
            decoder = frames.FrameDecoder()
            decoder.feed(rest)
            while True:
                for frame in decoder:
                    self.received.append(frame)
                    if frame.opcode == frames.OP_PING:
                        conn.sendall(frames.encode_frame(frames.OP_PONG, frame.payload))
                    elif frame.opcode == frames.OP_CLOSE:
                        conn.sendall(frames.encode_frame(frames.OP_CLOSE, frame.payload))
                        return
                    elif len(frame.payload) > 65536:
                        header = frames.frame_header(
                            frame.opcode, len(frame.payload), fin=frame.fin
                        )
                        conn.sendmsg([header, frame.payload])
                    else:
                        conn.sendall(
                            frames.encode_frame(frame.opcode, frame.payload, fin=frame.fin)
                        )
                data = conn.recv(65536)
                if not data:
                    return
                decoder.feed(data)

    def close(self) -> None:
        self.thread.join(TIMEOUT)
        self.listener.close()


@pytest.fixture
def echo_server(frames_impl: ModuleType) -> Iterator[EchoServer]:
    server = EchoServer(frames_impl)
    yield server
    server.close()
    assert not server.thread.is_alive()


def test_server_role_with_a_real_client(frames_impl: ModuleType, echo_server: EchoServer) -> None:
    """A ``websockets`` client gets every message, fragment, pong and close back intact."""
    messages = [os.urandom(size) for size in SIZES]
    with connect(f"ws://127.0.0.1:{echo_server.port}", compression=None, max_size=None) as client:
        for message in messages:
            client.send(message)
            assert client.recv(timeout=TIMEOUT) == message
        client.send("héllo wörld")
        assert client.recv(timeout=TIMEOUT) == "héllo wörld"
        client.send([b"frag", b"mented"])
        assert client.recv(timeout=TIMEOUT) == b"fragmented"
        assert client.ping(b"are you there").wait(TIMEOUT)
    assert client.close_code == 1000
    received = echo_server.received
    Frame = frames_impl.Frame
    assert received[: len(SIZES)] == [Frame(frames_impl.OP_BINARY, m) for m in messages]
    text, *fragments, ping, close = received[len(SIZES) :]
    assert text == Frame(frames_impl.OP_TEXT, "héllo wörld".encode())
    assert [f.opcode for f in fragments] == [2] + [0] * (len(fragments) - 1)
    assert [f.fin for f in fragments] == [False] * (len(fragments) - 1) + [True]
    assert b"".join(f.payload for f in fragments) == b"fragmented"
    assert ping == Frame(frames_impl.OP_PING, b"are you there")
    assert close == Frame(frames_impl.OP_CLOSE, b"\x03\xe8")


@pytest.fixture
def websockets_echo() -> Iterator[int]:
    def echo(connection: ServerConnection) -> None:
        for message in connection:
            connection.send(message)

    with serve(echo, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None) as server:
        thread = threading.Thread(target=server.serve_forever, name="websockets-echo", daemon=True)
        thread.start()
        yield server.socket.getsockname()[1]
        server.shutdown()
        thread.join(TIMEOUT)


def test_client_role_with_a_real_server(frames_impl: ModuleType, websockets_echo: int) -> None:
    """Masked frames from ``encode_frame`` pass a ``websockets`` server; its replies decode."""
    frames = frames_impl
    with socket.create_connection(("127.0.0.1", websockets_echo), timeout=TIMEOUT) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101")
        assert accept_key(key) in head
        decoder = frames.FrameDecoder(require_mask=False)
        decoder.feed(rest)

        def receive() -> object:
            while (frame := decoder.next_frame()) is None:
                data = sock.recv(65536)
                assert data, "the server closed the connection"
                decoder.feed(data)
            return frame

        for size in SIZES:
            payload = os.urandom(size)
            sock.sendall(frames.encode_frame(frames.OP_BINARY, payload, mask=True))
            assert receive() == frames.Frame(frames.OP_BINARY, payload)
        sock.sendall(frames.encode_frame(frames.OP_TEXT, b"par", fin=False, mask=True))
        sock.sendall(frames.encode_frame(frames.OP_PING, b"!", mask=True))
        sock.sendall(frames.encode_frame(frames.OP_CONTINUATION, b"tial", mask=True))
        assert receive() == frames.Frame(frames.OP_PONG, b"!")
        assert receive() == frames.Frame(frames.OP_TEXT, b"partial")
        sock.sendall(frames.encode_frame(frames.OP_CLOSE, b"\x03\xe8bye", mask=True))
        assert receive() == frames.Frame(frames.OP_CLOSE, b"\x03\xe8bye")
