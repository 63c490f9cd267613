"""The broadcast manager, against every built backend, and the twins against each other."""

from __future__ import annotations

import asyncio
import gc
import itertools
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from clients import TIMEOUT
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from haske import _backends

FRAME = b"\x81\x05hello"


class Recorder:
    """A writer that records what it was given and answers as told."""

    def __init__(self, log: list[tuple[int, Any]], conn_id: int, answer: Any = None) -> None:
        self.log = log
        self.conn_id = conn_id
        self.answer = answer

    def __call__(self, payload: Any) -> Any:
        self.log.append((self.conn_id, payload))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


@pytest.fixture
def manager(broadcast_impl: ModuleType) -> Any:
    return broadcast_impl.BroadcastManager()


def connect(
    manager: Any, log: list[tuple[int, Any]], *ids: int, native: bool = False, answer: Any = None
) -> None:
    for conn_id in ids:
        manager.add_connection(conn_id, Recorder(log, conn_id, answer), native=native)


# Registry


def test_connections_are_registered_once(manager: Any) -> None:
    manager.add_connection(1, print)
    assert manager.has_connection(1)
    with pytest.raises(ValueError, match="connection 1 is already registered"):
        manager.add_connection(1, print)
    assert manager.remove_connection(1) is True
    assert manager.remove_connection(1) is False
    assert not manager.has_connection(1)


@pytest.mark.parametrize("writer", [None, 42, "print", b"x"])
def test_writer_must_be_callable(manager: Any, writer: Any) -> None:
    with pytest.raises(TypeError, match="writer must be callable"):
        manager.add_connection(1, writer)
    assert not manager.has_connection(1)


@pytest.mark.parametrize("native", [None, 1, "yes"])
def test_native_must_be_a_bool(manager: Any, native: Any) -> None:
    with pytest.raises(TypeError):
        manager.add_connection(1, print, native=native)


@pytest.mark.parametrize("conn_id", ["1", 1.0, None, b"1"])
def test_ids_must_be_integers(manager: Any, conn_id: Any) -> None:
    with pytest.raises(TypeError):
        manager.add_connection(conn_id, print)


def test_ids_are_signed_64_bit(manager: Any) -> None:
    manager.add_connection(-(1 << 63), print)
    manager.add_connection((1 << 63) - 1, print)
    manager.add_connection(True, print)  # bool is an int: id 1
    assert manager.members() == [-(1 << 63), 1, (1 << 63) - 1]
    for conn_id in (1 << 63, -(1 << 63) - 1, 10**30):
        with pytest.raises(OverflowError):
            manager.add_connection(conn_id, print)


def test_channels_are_created_once_and_listed_sorted(manager: Any) -> None:
    assert manager.create_channel("b") is True
    assert manager.create_channel("a") is True
    assert manager.create_channel("b") is False
    assert manager.create_channel("é") is True
    assert manager.channels() == ["a", "b", "é"]
    assert manager.remove_channel("a") is True
    assert manager.remove_channel("a") is False
    assert manager.channels() == ["b", "é"]


@pytest.mark.parametrize("name", [None, 1, b"room"])
def test_channel_names_must_be_strings(manager: Any, name: Any) -> None:
    with pytest.raises(TypeError):
        manager.create_channel(name)


def test_channel_names_must_be_encodable(manager: Any) -> None:
    with pytest.raises(UnicodeEncodeError):
        manager.create_channel("room\udc80")


def test_membership_is_indexed_both_ways(manager: Any) -> None:
    for conn_id in (3, 1, 2):
        manager.add_connection(conn_id, print)
    manager.create_channel("room")
    manager.create_channel("lobby")
    assert manager.join(3, "room") is True
    assert manager.join(3, "room") is False
    assert manager.join(1, "room") is True
    assert manager.join(3, "lobby") is True
    assert manager.members("room") == [1, 3]
    assert manager.members() == [1, 2, 3]
    assert (manager.count("room"), manager.count("lobby"), manager.count()) == (2, 1, 3)
    assert manager.channels_of(3) == ["lobby", "room"]
    assert manager.channels_of(2) == []
    assert manager.leave(3, "room") is True
    assert manager.leave(3, "room") is False
    assert manager.channels_of(3) == ["lobby"]
    assert manager.members("room") == [1]


def test_leaving_what_was_never_joined_is_false(manager: Any) -> None:
    manager.add_connection(1, print)
    manager.create_channel("room")
    assert manager.leave(1, "room") is False
    assert manager.leave(2, "room") is False
    assert manager.leave(1, "nowhere") is False


def test_unknown_connections_and_channels_are_key_errors(manager: Any) -> None:
    manager.add_connection(1, print)
    manager.create_channel("room")
    with pytest.raises(KeyError) as excinfo:
        manager.join(2, "room")
    assert excinfo.value.args == (2,)
    with pytest.raises(KeyError) as excinfo:
        manager.join(1, "nowhere")
    assert excinfo.value.args == ("nowhere",)
    calls: list[Callable[[], Any]] = [
        lambda: manager.members("nowhere"),
        lambda: manager.count("nowhere"),
        lambda: manager.fanout(FRAME, "nowhere"),
        lambda: manager.channels_of(2),
    ]
    for call in calls:
        with pytest.raises(KeyError):
            call()


def test_removing_a_connection_leaves_every_channel(manager: Any) -> None:
    manager.add_connection(1, print)
    manager.add_connection(2, print)
    for name in ("a", "b"):
        manager.create_channel(name)
        manager.join(1, name)
        manager.join(2, name)
    manager.remove_connection(1)
    assert (manager.members("a"), manager.members("b")) == ([2], [2])
    manager.add_connection(1, print)
    assert manager.channels_of(1) == []


def test_removing_a_channel_keeps_its_members_connected(manager: Any) -> None:
    manager.add_connection(1, print)
    manager.create_channel("room")
    manager.join(1, "room")
    manager.remove_channel("room")
    assert manager.has_connection(1)
    assert manager.channels_of(1) == []
    manager.create_channel("room")
    assert manager.members("room") == []


def test_repr_counts(manager: Any) -> None:
    manager.add_connection(1, print)
    manager.create_channel("room")
    assert repr(manager) == "<BroadcastManager connections=1 channels=1>"


# Fan-out


def test_native_writers_get_the_frame_and_others_the_message(manager: Any) -> None:
    log: list[tuple[int, Any]] = []
    connect(manager, log, 4, 2, native=True)
    connect(manager, log, 3, 1)
    manager.create_channel("room")
    for conn_id in (4, 3, 1):
        manager.join(conn_id, "room")
    assert manager.fanout(FRAME, "room", message="hello") == (3, [], [])
    assert log == [(1, "hello"), (3, "hello"), (4, FRAME)]
    log.clear()
    assert manager.fanout(FRAME) == (4, [], [])
    assert log == [(1, FRAME), (2, FRAME), (3, FRAME), (4, FRAME)]


def test_fanout_reports_overloaded_and_failed_members(manager: Any) -> None:
    log: list[tuple[int, Any]] = []
    connect(manager, log, 1, 6, answer=True)
    connect(manager, log, 2, answer=None)
    connect(manager, log, 5, 3, answer=False)
    connect(manager, log, 4, 7, answer=ConnectionResetError("gone"))
    connect(manager, log, 8, answer=0)  # only False means overloaded
    assert manager.fanout(FRAME) == (4, [3, 5], [4, 7])
    assert [conn_id for conn_id, _ in log] == [1, 2, 3, 4, 5, 6, 7, 8]


class Interrupt(BaseException):
    pass


def test_base_exceptions_propagate(manager: Any) -> None:
    log: list[tuple[int, Any]] = []
    connect(manager, log, 1, 3)
    connect(manager, log, 2, answer=Interrupt())
    with pytest.raises(Interrupt):
        manager.fanout(FRAME)
    assert log == [(1, FRAME), (2, FRAME)]


@pytest.mark.parametrize(
    ("exclude", "reached"),
    [
        (None, [1, 2, 3, 4]),
        (2, [1, 3, 4]),
        (True, [2, 3, 4]),
        (99, [1, 2, 3, 4]),
        ([1, 3], [2, 4]),
        ({4}, [1, 2, 3]),
        ((), [1, 2, 3, 4]),
        (frozenset({1, 2, 3, 4}), []),
        (range(2, 4), [1, 4]),
    ],
)
def test_exclude_forms(manager: Any, exclude: Any, reached: list[int]) -> None:
    log: list[tuple[int, Any]] = []
    connect(manager, log, 1, 2, 3, 4)
    assert manager.fanout(FRAME, exclude=exclude) == (len(reached), [], [])
    assert [conn_id for conn_id, _ in log] == reached


def test_exclude_may_be_any_iterable(manager: Any) -> None:
    log: list[tuple[int, Any]] = []
    connect(manager, log, 1, 2, 3, 4)
    assert manager.fanout(FRAME, exclude=(i for i in [1, 1, 4])) == (2, [], [])
    assert [conn_id for conn_id, _ in log] == [2, 3]


@pytest.mark.parametrize(
    ("exclude", "error"),
    [
        ("1", TypeError),
        (1.5, TypeError),
        ([1, "2"], TypeError),
        ([None], TypeError),
        (1 << 64, OverflowError),
        ([1 << 64], OverflowError),
    ],
)
def test_bad_exclusions_are_errors(manager: Any, exclude: Any, error: type[Exception]) -> None:
    log: list[tuple[int, Any]] = []
    connect(manager, log, 1)
    with pytest.raises(error):
        manager.fanout(FRAME, exclude=exclude)
    assert log == []


@pytest.mark.parametrize("frame", ["text", bytearray(b"x"), None, 1])
def test_frame_must_be_bytes(manager: Any, frame: Any) -> None:
    with pytest.raises(TypeError):
        manager.fanout(frame)


def test_fanout_to_an_empty_channel(manager: Any) -> None:
    manager.create_channel("room")
    assert manager.fanout(FRAME, "room") == (0, [], [])
    assert manager.fanout(FRAME) == (0, [], [])


# Writers that call back into the manager


def test_a_writer_may_remove_members_while_fanout_runs(manager: Any) -> None:
    log: list[tuple[int, Any]] = []

    def evict(payload: Any) -> None:
        log.append((1, payload))
        manager.remove_connection(2)
        manager.remove_connection(1)

    manager.add_connection(1, evict)
    connect(manager, log, 2, 3)
    manager.create_channel("room")
    for conn_id in (1, 2, 3):
        manager.join(conn_id, "room")
    # The fan-out that started keeps its members; the next one sees the change.
    assert manager.fanout(FRAME, "room") == (3, [], [])
    assert [conn_id for conn_id, _ in log] == [1, 2, 3]
    assert manager.members("room") == [3]
    assert manager.fanout(FRAME, "room") == (1, [], [])


def test_a_writer_may_add_members_and_channels_while_fanout_runs(manager: Any) -> None:
    log: list[tuple[int, Any]] = []

    def recruit(payload: Any) -> None:
        log.append((1, payload))
        if not manager.has_connection(5):
            connect(manager, log, 5)
            manager.join(5, "room")
            manager.create_channel("other")
            manager.join(1, "other")

    manager.add_connection(1, recruit)
    manager.create_channel("room")
    manager.join(1, "room")
    assert manager.fanout(FRAME, "room") == (1, [], [])
    assert manager.fanout(FRAME, "room") == (2, [], [])
    assert [conn_id for conn_id, _ in log] == [1, 1, 5]
    assert manager.channels_of(1) == ["other", "room"]


def test_a_writer_may_remove_the_channel_and_fan_out_again(manager: Any) -> None:
    log: list[tuple[int, Any]] = []

    def nested(payload: Any) -> None:
        log.append((1, payload))
        if payload == FRAME:
            assert manager.fanout(b"inner", "room") == (2, [], [])
            manager.remove_channel("room")

    manager.add_connection(1, nested)
    connect(manager, log, 2)
    manager.create_channel("room")
    manager.join(1, "room")
    manager.join(2, "room")
    assert manager.fanout(FRAME, "room") == (2, [], [])
    assert log == [(1, FRAME), (1, b"inner"), (2, b"inner"), (2, FRAME)]
    assert manager.channels() == []


def test_a_finalizer_may_call_back_while_a_connection_is_removed(manager: Any) -> None:
    outcomes: list[Any] = []

    class Writer:
        def __call__(self, payload: Any) -> None:
            pass

    def finalize() -> None:
        try:
            outcomes.append(manager.remove_connection(2))
        except Exception as exc:  # recorded, so that a failure shows what was raised
            outcomes.append(exc)

    writer = Writer()
    weakref.finalize(writer, finalize)
    manager.add_connection(1, writer)
    manager.add_connection(2, print)
    manager.create_channel("room")
    manager.join(1, "room")
    manager.fanout(FRAME, "room")  # caches a snapshot that also holds the writer
    del writer
    assert manager.remove_connection(1) is True
    assert outcomes == [True]
    assert manager.members() == []


def test_a_cycle_through_a_writer_is_collected(broadcast_impl: ModuleType) -> None:
    class Connection:
        def __init__(self, manager: Any) -> None:
            self.manager = manager

        def write(self, payload: Any) -> None:
            pass

    manager = broadcast_impl.BroadcastManager()
    connection = Connection(manager)
    manager.add_connection(1, connection.write)
    manager.create_channel("room")
    manager.join(1, "room")
    manager.fanout(FRAME, "room")
    alive = weakref.ref(connection)
    del manager, connection
    gc.collect()
    assert alive() is None


# Outlets: frames written straight to a real socket


@pytest.fixture
async def socket_transport() -> Any:
    """The server end of a real TCP connection (an asyncio transport) and the client's reader."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = await asyncio.wait_for(accepted, TIMEOUT)
    yield transport, reader
    transport.abort()
    writer.close()
    server.close()
    await server.wait_closed()


def outlet_for(impl: ModuleType, transport: asyncio.Transport) -> Any:
    return impl.Outlet(transport, transport.get_extra_info("socket").fileno())


async def test_an_outlet_writes_only_while_direct(
    broadcast_impl: ModuleType, socket_transport: Any
) -> None:
    transport, reader = socket_transport
    outlet = outlet_for(broadcast_impl, transport)
    assert outlet.direct is False and outlet.written == 0
    assert outlet.write(FRAME) is False
    outlet.direct = True
    assert outlet.write(FRAME) is True
    assert outlet.written == 1
    assert await asyncio.wait_for(reader.readexactly(len(FRAME)), TIMEOUT) == FRAME
    if transport.get_write_buffer_size() == 0:  # all of it went (not so on Windows' proactor)
        assert outlet.direct is True
        assert outlet.write(FRAME) is True and outlet.written == 2
        assert await asyncio.wait_for(reader.readexactly(len(FRAME)), TIMEOUT) == FRAME
    with pytest.raises(TypeError):
        outlet.write("text")


async def test_an_outlet_stops_once_its_transport_closes(
    broadcast_impl: ModuleType, socket_transport: Any
) -> None:
    transport, reader = socket_transport
    outlet = outlet_for(broadcast_impl, transport)
    outlet.direct = True
    transport.close()
    assert outlet.write(FRAME) is False
    assert outlet.direct is False and outlet.written == 0
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""


async def test_what_the_kernel_does_not_take_goes_first_through_the_transport(
    broadcast_impl: ModuleType, socket_transport: Any
) -> None:
    transport, reader = socket_transport
    transport.set_write_buffer_limits(high=64 << 20)
    outlet = outlet_for(broadcast_impl, transport)
    big = bytes(range(256)) * (32 << 12)  # 32 MiB: more than any socket buffer takes at once
    outlet.direct = True
    assert outlet.write(big) is True
    assert transport.get_write_buffer_size() > 0
    assert outlet.direct is False  # the rest waits in the transport: nothing may overtake it
    assert outlet.write(FRAME) is False
    transport.write(FRAME)
    got = await asyncio.wait_for(reader.readexactly(len(big) + len(FRAME)), TIMEOUT)
    assert got == big + FRAME


async def test_fanout_offers_frames_to_outlets_first(
    manager: Any, broadcast_impl: ModuleType, socket_transport: Any
) -> None:
    transport, reader = socket_transport
    log: list[tuple[int, Any]] = []
    outlet = outlet_for(broadcast_impl, transport)
    manager.add_connection(1, Recorder(log, 1), native=True, outlet=outlet)
    connect(manager, log, 2, native=True)
    assert manager.fanout(FRAME, message="hello") == (2, [], [])
    assert log == [(1, FRAME), (2, FRAME)]  # not direct yet: the writer takes it
    log.clear()
    outlet.direct = True
    assert manager.fanout(FRAME, message="hello") == (2, [], [])
    assert log == [(2, FRAME)] and outlet.written == 1
    assert manager.fanout(FRAME, message="hello", direct=False) == (2, [], [])
    assert log == [(2, FRAME), (1, FRAME), (2, FRAME)] and outlet.written == 1
    assert await asyncio.wait_for(reader.readexactly(len(FRAME)), TIMEOUT) == FRAME


async def test_an_outlet_needs_a_native_writer_and_its_own_type(
    manager: Any, broadcast_impl: ModuleType, socket_transport: Any
) -> None:
    transport, _ = socket_transport
    with pytest.raises(ValueError, match="an outlet needs a native writer"):
        manager.add_connection(1, print, outlet=outlet_for(broadcast_impl, transport))
    with pytest.raises(TypeError):
        manager.add_connection(1, print, native=True, outlet=object())
    assert not manager.has_connection(1)


# The twins agree, step by step

BACKENDS = _backends.available("broadcast")
PAIRS = list(itertools.combinations(BACKENDS, 2))


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_the_twins_have_the_same_public_names(first: str, second: str) -> None:
    def public(obj: Any) -> list[str]:
        return sorted(name for name in dir(obj) if not name.startswith("_"))

    one, other = _backends.load("broadcast", first), _backends.load("broadcast", second)
    for name in ("BroadcastManager", "Outlet"):
        assert public(getattr(one, name)) == public(getattr(other, name)), name

ids = st.integers(-2, 6) | st.sampled_from([1 << 63, -(1 << 63)])
names = st.sampled_from(["a", "b", "é", ""]) | st.just("bad\udc80")
channels = st.none() | names
answers = st.sampled_from(["none", "true", "full", "fail", "evict", "join", "zero"])
exclusions = st.none() | ids | st.lists(ids, max_size=3) | st.sampled_from(["x", 1.5, [None]])


def outcome(call: Callable[..., Any], *arguments: Any) -> Any:
    try:
        return call(*arguments)
    except Exception as exc:
        return type(exc), exc.args if isinstance(exc, (KeyError, ValueError)) else ()


class Twins(RuleBasedStateMachine):
    """Drives two managers with the same operations and compares everything they report."""

    modules: tuple[ModuleType, ModuleType]

    def __init__(self) -> None:
        super().__init__()
        self.managers = [module.BroadcastManager() for module in self.modules]
        self.logs: list[list[tuple[int, Any]]] = [[], []]

    def writer(self, side: int, conn_id: int, answer: str) -> Callable[[Any], Any]:
        manager, log = self.managers[side], self.logs[side]

        def write(payload: Any) -> Any:
            log.append((conn_id, payload))
            if answer == "fail":
                raise OSError("broken pipe")
            if answer == "evict":
                manager.remove_connection(conn_id + 1)
            if answer == "join" and manager.channels():
                manager.join(conn_id, manager.channels()[0])
            return {"none": None, "true": True, "full": False, "zero": 0}.get(answer)

        return write

    def both(self, call: Callable[[Any], Any]) -> None:
        first, second = (outcome(call, manager) for manager in self.managers)
        assert first == second
        assert self.logs[0] == self.logs[1]

    @rule(conn_id=ids, native=st.booleans(), answer=answers)
    def add_connection(self, conn_id: int, native: bool, answer: str) -> None:
        writers = iter([self.writer(0, conn_id, answer), self.writer(1, conn_id, answer)])
        self.both(lambda m: m.add_connection(conn_id, next(writers), native=native))

    @rule(conn_id=ids)
    def remove_connection(self, conn_id: int) -> None:
        self.both(lambda m: m.remove_connection(conn_id))

    @rule(name=names)
    def create_channel(self, name: str) -> None:
        self.both(lambda m: m.create_channel(name))

    @precondition(lambda self: self.managers[0].channels())
    @rule(name=names)
    def remove_channel(self, name: str) -> None:
        self.both(lambda m: m.remove_channel(name))

    @rule(conn_id=ids, name=names)
    def join(self, conn_id: int, name: str) -> None:
        self.both(lambda m: m.join(conn_id, name))

    @rule(conn_id=ids, name=names)
    def leave(self, conn_id: int, name: str) -> None:
        self.both(lambda m: m.leave(conn_id, name))

    @rule(channel=channels, message=st.none() | st.just("text"), exclude=exclusions)
    def fanout(self, channel: str | None, message: str | None, exclude: Any) -> None:
        self.both(lambda m: m.fanout(FRAME, channel, message=message, exclude=exclude))

    @invariant()
    def same_state(self) -> None:
        first, second = self.managers
        assert first.channels() == second.channels()
        assert first.members() == second.members()
        assert first.count() == second.count()
        for name in first.channels():
            assert first.members(name) == second.members(name)
            assert first.count(name) == second.count(name)
        for conn_id in first.members():
            assert first.channels_of(conn_id) == second.channels_of(conn_id)


def twin_test_case(pair: tuple[str, str]) -> type:
    modules = tuple(_backends.load("broadcast", backend) for backend in pair)
    machine: type[Twins] = type(f"Twins_{'_'.join(pair)}", (Twins,), {"modules": modules})
    case = machine.TestCase
    case.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
    return case


# One test case per pair of built backends; none at all when only one is built.
for pair in PAIRS:
    globals()[f"TestTwins_{'_'.join(pair)}"] = twin_test_case(pair)
