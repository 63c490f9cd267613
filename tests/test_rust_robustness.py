"""Every entry point of ``haske._rust`` fed junk: only ordinary Python exceptions, never a panic.

A Rust panic surfaces as ``pyo3_runtime.PanicException``, a BaseException, so the ``except
Exception`` below lets it fail the test; a crash would take the test run down. Each call must
also succeed or fail exactly as the Python twin does.
"""

from __future__ import annotations

import array
import os
from types import ModuleType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from haske import _backends

RUST: ModuleType | None = (
    _backends.load("handshake", "rust") if "rust" in _backends.available("handshake") else None
)
PURE_HANDSHAKE = _backends.load("handshake", "python")
PURE_MANAGER = _backends.load("broadcast", "python")

MIB = 1 << 20
HANDSHAKE_FUNCTIONS = [
    "websocket_handshake",
    "parse_request",
    "validate_request",
    "build_response",
    "build_rejection",
]
MANAGER_METHODS = [
    "add_connection",
    "remove_connection",
    "has_connection",
    "create_channel",
    "remove_channel",
    "channels",
    "join",
    "leave",
    "members",
    "count",
    "channels_of",
    "fanout",
]


class Bytes(bytes):
    pass


class Text(str):
    pass


class Index:
    def __index__(self) -> int:
        return 7


class BadIndex:
    def __index__(self) -> int:
        raise ValueError("no index")


class Exploding:
    """Raises from every protocol a callee might try."""

    def __iter__(self) -> Any:
        raise RuntimeError("no iteration")

    def __len__(self) -> int:
        raise RuntimeError("no length")


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([-1, -(1 << 63), (1 << 63) - 1, 1 << 63, 1 << 64, -(1 << 64), 10**40]),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["\udc80", "a\x00b", "\r\n", "é", Text("room"), "GET", "1.1"]),
    st.binary(max_size=40),
    st.sampled_from([Bytes(b"x"), bytearray(b"ab"), memoryview(b"mv"), array.array("i", [1])]),
    st.lists(st.binary(max_size=4), max_size=3),
    st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), max_size=3),
    st.sampled_from([[(b"X", "v")], [(b"X",)], [[b"X", b"v"]], {b"X": b"v"}, Exploding()]),
    st.sampled_from([Index(), BadIndex(), object(), print, len, type, lambda x: x]),
)
keywords = st.dictionaries(st.sampled_from(["native", "message", "exclude", "channel"]), junk)


def outcome(function: Any, arguments: tuple[Any, ...], keywords: dict[str, Any]) -> Any:
    """What a call did: its plain result, or the type of the exception it raised."""
    try:
        result = function(*arguments, **keywords)
    except Exception as exc:
        return type(exc)
    return result if isinstance(result, (bytes, str, int, tuple, list, type(None))) else "object"


def same(rust: Any, pure: Any, name: str, *arguments: Any, **keywords: Any) -> None:
    """``rust.name(...)`` and ``pure.name(...)`` succeed or fail alike."""
    expected = outcome(getattr(pure, name), arguments, keywords)
    assert outcome(getattr(rust, name), arguments, keywords) == expected


class TestRustEntryPoints:
    __test__ = RUST is not None  # nothing to collect when haske._rust is not built

    rust: ModuleType = RUST  # type: ignore[assignment]

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=512))
    def test_parse_request_random_bytes(self, data: bytes) -> None:
        same(self.rust, PURE_HANDSHAKE, "parse_request", data)
        same(self.rust, PURE_HANDSHAKE, "parse_request", b"GET / HTTP/1.1\r\n" + data)

    def test_parse_request_one_mebibyte(self) -> None:
        prefix = b"GET / HTTP/1.1\r\nX: "
        for data in (os.urandom(MIB), b"A" * MIB, prefix + b"a" * MIB, b"\r\n" * MIB):
            same(self.rust, PURE_HANDSHAKE, "parse_request", data)
            same(self.rust, PURE_HANDSHAKE, "parse_request", bytearray(data))
            same(self.rust, PURE_HANDSHAKE, "parse_request", memoryview(data))

    @settings(max_examples=300, deadline=None)
    @given(arguments=st.lists(junk, max_size=5))
    def test_every_function_with_junk_arguments(self, arguments: list[Any]) -> None:
        for name in HANDSHAKE_FUNCTIONS:
            same(self.rust, PURE_HANDSHAKE, name, *arguments)

    @settings(max_examples=200, deadline=None)
    @given(method=junk, version=junk, headers=junk)
    def test_validate_request_junk(self, method: Any, version: Any, headers: Any) -> None:
        same(self.rust, PURE_HANDSHAKE, "validate_request", method, version, headers)

    def test_huge_inputs(self) -> None:
        big = "a" * MIB
        headers = [(b"X-%d" % i, b"v" * 100) for i in range(10_000)] + [(b"Host", b"h" * MIB)]
        same(self.rust, PURE_HANDSHAKE, "websocket_handshake", big)
        same(self.rust, PURE_HANDSHAKE, "validate_request", "GET", "1.1", headers)
        same(self.rust, PURE_HANDSHAKE, "build_response", big, None, big, headers)
        same(self.rust, PURE_HANDSHAKE, "build_rejection", 400, big, headers, b"x" * MIB)
        assert self.rust.build_rejection(400, "no", body=b"b" * MIB).endswith(b"b" * MIB)

    @settings(max_examples=200, deadline=None)
    @given(
        calls=st.lists(
            st.tuples(st.sampled_from(MANAGER_METHODS), st.lists(junk, max_size=4), keywords),
            max_size=12,
        )
    )
    def test_manager_with_junk_calls(self, calls: list[tuple[str, list[Any], Any]]) -> None:
        rust_manager = self.rust.BroadcastManager()
        pure_manager = PURE_MANAGER.BroadcastManager()
        for name, arguments, named in calls:
            same(rust_manager, pure_manager, name, *arguments, **named)
        assert rust_manager.members() == pure_manager.members()
        assert rust_manager.channels() == pure_manager.channels()

    def test_manager_with_many_members(self) -> None:
        manager = self.rust.BroadcastManager()
        manager.create_channel("room")
        received: list[Any] = []
        ids = range(-50_000, 50_000, 2)
        for conn_id in ids:
            manager.add_connection(conn_id, received.append, native=conn_id % 4 == 0)
            manager.join(conn_id, "room")
        result = manager.fanout(b"f" * MIB, "room", message="m", exclude=range(50_000))
        assert result == (25_000, [], [])
        assert len(received) == 25_000
        assert all(manager.remove_connection(conn_id) for conn_id in ids)
        assert manager.members("room") == []
