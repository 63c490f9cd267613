"""The broadcast manager: the pure-Python twin of ``haske._rust.BroadcastManager``.

Connections and channels are indexed both ways, so joining and leaving are O(1) and removing a
connection is O(its channels). Fan-out walks a snapshot: the members of a channel with their
writers, sorted by id, built on first use and kept until the membership changes. A snapshot is an
immutable tuple, so a writer that changes the manager while a fan-out runs does not disturb it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Container, Iterable
from typing import Any

__all__ = ["BroadcastManager", "Outlet"]

Writer = Callable[[Any], "bool | None"]
_Member = tuple[int, Writer, bool, "Outlet | None"]
_Snapshot = tuple[_Member, ...]

_INT64 = 1 << 63
# CPython's own words, so both twins say the same.
_TOO_LARGE_FOR_INT64 = "Python int too large to convert to C long"


def _conn_id(value: object) -> int:
    """A connection id: any integer that fits in 64 bits, as in the Rust twin."""
    conn_id = operator.index(value)  # type: ignore[arg-type]
    if not -_INT64 <= conn_id < _INT64:
        raise OverflowError(_TOO_LARGE_FOR_INT64)
    return conn_id


def _channel_name(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"channel name must be str, not {type(value).__name__}")
    if not value.isascii():
        value.encode()  # lone surrogates raise UnicodeEncodeError, as in the Rust twin
    return value if type(value) is str else str.__str__(value)


def _optional_channel(value: object) -> str | None:
    return None if value is None else _channel_name(value)


def _exclusions(exclude: object) -> Container[int]:
    """None, one id, or any iterable of ids."""
    if exclude is None:
        return ()
    try:
        return (_conn_id(exclude),)
    except TypeError:
        pass
    return {_conn_id(item) for item in exclude}  # type: ignore[attr-defined]


def _by_id(member: _Member) -> int:
    return member[0]


class Outlet:
    """Writes pre-encoded frames straight to a connection's transport while its outbound path
    is idle.

    The protocol that owns the transport sets ``direct`` to True only while nothing waits to be
    written (no queued frame, an empty transport buffer, writing not paused) and to False as soon
    as it queues something, so a direct write never overtakes queued bytes. ``write`` takes a
    frame, or returns False, untouched, when the caller must queue it the usual way. (The Rust
    twin hands the frame to the socket itself; this one to the transport.)
    """

    __slots__ = ("_fd", "_transport", "direct", "written")

    def __init__(self, transport: Any, fd: int) -> None:
        self._transport = transport
        self._fd = fd
        #: Writes may bypass the protocol's queue.
        self.direct = False
        #: Frames written directly so far.
        self.written = 0

    def write(self, frame: bytes) -> bool:
        """Write ``frame`` now and return True, or return False without taking it."""
        if not isinstance(frame, bytes):
            raise TypeError(f"frame must be bytes, not {type(frame).__name__}")
        if not self.direct:
            return False
        transport = self._transport
        if transport.is_closing():
            self.direct = False
            return False
        transport.write(frame)
        if transport.get_write_buffer_size():
            self.direct = False  # what the kernel did not take now goes first
        self.written += 1
        return True

    def __repr__(self) -> str:
        return f"<Outlet fd={self._fd} direct={self.direct} written={self.written}>"


class _Connection:
    __slots__ = ("writer", "native", "outlet", "channels")

    def __init__(self, writer: Writer, native: bool, outlet: Outlet | None) -> None:
        self.writer = writer
        self.native = native
        self.outlet = outlet
        self.channels: set[str] = set()


class _Channel:
    __slots__ = ("members", "snapshot")

    def __init__(self) -> None:
        self.members: set[int] = set()
        self.snapshot: _Snapshot | None = None


class BroadcastManager:
    """Connections and channels, and the fan-out of one payload to every member of a channel."""

    __slots__ = ("_connections", "_channels", "_everyone", "__weakref__")

    def __init__(self) -> None:
        self._connections: dict[int, _Connection] = {}
        self._channels: dict[str, _Channel] = {}
        self._everyone: _Snapshot | None = None

    def add_connection(
        self, conn_id: int, writer: Writer, *, native: bool = False, outlet: Outlet | None = None
    ) -> None:
        """Register a connection; ``native`` writers take pre-encoded frames, which fan-out
        offers to the connection's ``outlet`` first when it has one."""
        conn_id = _conn_id(conn_id)
        if native is not True and native is not False:
            raise TypeError(f"native must be bool, not {type(native).__name__}")
        if not callable(writer):
            raise TypeError(f"writer must be callable, not {type(writer).__name__}")
        if outlet is not None:
            if not native:
                raise ValueError(f"an outlet needs a native writer (got {type(outlet).__name__})")
            if not isinstance(outlet, Outlet):
                raise TypeError(f"'{type(outlet).__name__}' object is not an instance of 'Outlet'")
        if conn_id in self._connections:
            raise ValueError(f"connection {conn_id} is already registered")
        self._connections[conn_id] = _Connection(writer, native, outlet)
        self._everyone = None

    def remove_connection(self, conn_id: int) -> bool:
        """Unregister a connection and take it out of every channel; False if it was unknown."""
        conn_id = _conn_id(conn_id)
        connection = self._connections.pop(conn_id, None)
        if connection is None:
            return False
        self._everyone = None
        for name in connection.channels:
            channel = self._channels[name]
            channel.members.discard(conn_id)
            channel.snapshot = None
        return True

    def has_connection(self, conn_id: int) -> bool:
        return _conn_id(conn_id) in self._connections

    def create_channel(self, name: str) -> bool:
        """Create a channel; False if it existed."""
        name = _channel_name(name)
        if name in self._channels:
            return False
        self._channels[name] = _Channel()
        return True

    def remove_channel(self, name: str) -> bool:
        """Delete a channel (its members stay connected); False if it was unknown."""
        name = _channel_name(name)
        channel = self._channels.pop(name, None)
        if channel is None:
            return False
        for conn_id in channel.members:
            self._connections[conn_id].channels.discard(name)
        return True

    def channels(self) -> list[str]:
        """Channel names, sorted."""
        return sorted(self._channels)

    def join(self, conn_id: int, channel: str) -> bool:
        """Add a connection to a channel; False if it was a member already."""
        conn_id = _conn_id(conn_id)
        channel = _channel_name(channel)
        connection = self._connections.get(conn_id)
        if connection is None:
            raise KeyError(conn_id)
        found = self._channels.get(channel)
        if found is None:
            raise KeyError(channel)
        if conn_id in found.members:
            return False
        found.members.add(conn_id)
        found.snapshot = None
        connection.channels.add(channel)
        return True

    def leave(self, conn_id: int, channel: str) -> bool:
        """Take a connection out of a channel; False if it was not a member."""
        conn_id = _conn_id(conn_id)
        channel = _channel_name(channel)
        found = self._channels.get(channel)
        if found is None or conn_id not in found.members:
            return False
        found.members.discard(conn_id)
        found.snapshot = None
        self._connections[conn_id].channels.discard(channel)
        return True

    def members(self, channel: str | None = None) -> list[int]:
        """Sorted ids of a channel's members, or of every connection."""
        channel = _optional_channel(channel)
        if channel is None:
            return sorted(self._connections)
        return sorted(self._channel(channel).members)

    def count(self, channel: str | None = None) -> int:
        channel = _optional_channel(channel)
        if channel is None:
            return len(self._connections)
        return len(self._channel(channel).members)

    def channels_of(self, conn_id: int) -> list[str]:
        """Sorted names of the channels a connection has joined."""
        conn_id = _conn_id(conn_id)
        connection = self._connections.get(conn_id)
        if connection is None:
            raise KeyError(conn_id)
        return sorted(connection.channels)

    def fanout(
        self,
        frame: bytes,
        channel: str | None = None,
        *,
        message: Any = None,
        exclude: int | Iterable[int] | None = None,
        direct: bool = True,
    ) -> tuple[int, list[int], list[int]]:
        """Call each member's writer once, in id order.

        Native writers get ``frame``, the others ``message`` (or ``frame`` when it is None). With
        ``direct``, a member whose outlet writes ``frame`` straight to its transport counts as
        delivered without a call.
        Returns ``(delivered, overloaded_ids, failed_ids)``: a writer that returned False is
        overloaded, one that raised an Exception failed; BaseExceptions such as
        KeyboardInterrupt propagate.
        """
        if not isinstance(frame, bytes):
            raise TypeError(f"frame must be bytes, not {type(frame).__name__}")
        channel = _optional_channel(channel)
        excluded = _exclusions(exclude)
        snapshot = self._snapshot(channel)
        payload = frame if message is None else message
        if direct is not True and direct is not False:
            raise TypeError(f"direct must be bool, not {type(direct).__name__}")
        delivered = 0
        overloaded: list[int] = []
        failed: list[int] = []
        for conn_id, writer, native, outlet in snapshot:
            if excluded and conn_id in excluded:
                continue
            try:
                if direct and outlet is not None and outlet.write(frame):
                    delivered += 1
                    continue
                result = writer(frame if native else payload)
            except Exception:
                failed.append(conn_id)
                continue
            if result is False:
                overloaded.append(conn_id)
            else:
                delivered += 1
        return delivered, overloaded, failed

    def _channel(self, name: str) -> _Channel:
        found = self._channels.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def _snapshot(self, channel: str | None) -> _Snapshot:
        connections = self._connections
        if channel is None:
            if self._everyone is None:
                everyone = [(i, c.writer, c.native, c.outlet) for i, c in connections.items()]
                self._everyone = tuple(sorted(everyone, key=_by_id))
            return self._everyone
        found = self._channel(channel)
        if found.snapshot is None:
            members = []
            for i in found.members:
                member = connections[i]
                members.append((i, member.writer, member.native, member.outlet))
            found.snapshot = tuple(sorted(members, key=_by_id))
        return found.snapshot

    def __repr__(self) -> str:
        return (
            f"<BroadcastManager connections={len(self._connections)}"
            f" channels={len(self._channels)}>"
        )
