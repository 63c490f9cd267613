"""The Redis backend against a real redis-server: broadcasts, exclusion, targeted sends and
presence across two uvicorn worker processes; Redis going away and coming back, a deaf
subscriber, a killed worker; the publish policies, the size cap and the configuration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets
from redis.exceptions import InvalidResponse, ResponseError
from redis_fixtures import (
    BACKOFF,
    LEASE,
    LEAVE_GRACE,
    PROBE_INTERVAL,
    RedisServer,
    Worker,
    free_port,
    running_redis,
    wait_until,
)

from haske import broadcast as broadcast_module
from haske.broadcast import WebSocketBroadcaster, get_broadcaster, node_id
from haske.redis import BackendUnavailable, MessageTooLarge, RedisBackend, RespReader, command

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for these tests; ``stop()`` and ``start()`` it to cut Redis off."""
    yield from running_redis()


@pytest.fixture(scope="module")
def workers(redis_server: RedisServer) -> Iterator[tuple[Worker, Worker]]:
    pair = Worker(redis_server.url), Worker(redis_server.url)
    try:
        yield pair[0].wait_ready(), pair[1].wait_ready()
    finally:
        for worker in pair:
            worker.stop()


class Client:
    """A WebSocket client of a worker that reads JSON messages, never waiting forever."""

    def __init__(self, connection: Any, hello: dict[str, Any] | None = None) -> None:
        self.connection = connection
        self.address = tuple(hello["address"]) if hello else None

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        """The next message: decoded when it is JSON, else the text itself."""
        text = await asyncio.wait_for(self.connection.recv(), timeout)
        try:
            return json.loads(text)
        except ValueError:
            return text

    async def until(self, predicate: Callable[[Any], bool], timeout: float = TIMEOUT) -> list[Any]:
        """Every message up to and including the first that matches."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            seen.append(message := await self.recv(max(0.0, deadline - time.monotonic())))
            if predicate(message):
                return seen

    async def nothing(self, seconds: float = 0.2) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            raise AssertionError(f"unexpected message {await self.recv(seconds)!r}")


@contextlib.asynccontextmanager
async def member(worker: Worker, name: str, channels: str) -> AsyncIterator[Client]:
    async with websockets.connect(f"{worker.url}/ws/{name}?channels={channels}") as connection:
        hello = json.loads(await asyncio.wait_for(connection.recv(), TIMEOUT))
        yield Client(connection, hello)


@contextlib.asynccontextmanager
async def live(worker: Worker, session: str) -> AsyncIterator[Client]:
    async with websockets.connect(f"{worker.url}/live/{session}") as connection:
        yield Client(connection)


async def post(worker: Worker, path: str, body: dict[str, Any]) -> Any:
    async with httpx.AsyncClient(base_url=worker.http, timeout=TIMEOUT) as http:
        return (await http.post(path, json=body)).json()


async def presence(worker: Worker) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=worker.http, timeout=TIMEOUT) as http:
        return (await http.get("/presence")).json()  # type: ignore[no-any-return]


async def eventually(check: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def event(kind: str, session: str | None = None) -> Callable[[Any], bool]:
    return lambda m: m.get("event") == kind and (session is None or m["session_id"] == session)


# -- across processes ---------------------------------------------------------------------------


async def test_a_broadcast_from_either_process_reaches_every_member(
    workers: tuple[Worker, Worker],
) -> None:
    a, b = workers
    async with (
        member(a, "ann", "news") as ann,
        member(b, "bob", "news") as bob,
        member(b, "bea", "news") as bea,
        member(b, "other", "sport") as other,
    ):
        for origin, local in ((a, 1), (b, 2)):
            reply = await post(
                origin, "/broadcast", {"message": {"n": origin.port}, "channel": "news"}
            )
            # The count is the publishing process's own deliveries.
            assert reply == {"delivered": local}
            for client in (ann, bob, bea):
                assert await client.recv() == {"n": origin.port}
        # Without a channel: every connection of every process.
        await post(a, "/broadcast", {"message": "all"})
        for client in (ann, bob, bea, other):
            assert await client.recv() == "all"
        await other.nothing()


async def test_a_burst_published_in_one_turn_arrives_whole_and_in_order(
    workers: tuple[Worker, Worker],
) -> None:
    a, b = workers
    async with member(a, "ivy", "burst") as ivy, member(b, "ike", "burst") as ike:
        await post(a, "/burst", {"channel": "burst", "count": 500})
        for client in (ivy, ike):
            assert [await client.recv() for _ in range(500)] == [{"n": n} for n in range(500)]
        await ike.nothing()
    assert a.health()["dropped"] == 0


async def test_exclude_works_across_processes(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    async with (
        member(a, "ann", "cursors") as ann,
        member(b, "bob", "cursors") as bob,
        member(b, "bea", "cursors") as bea,
    ):
        assert ann.address != bob.address and ann.address[0] != bob.address[0]  # type: ignore[index]
        # A connection leaves itself out: the others, on both processes, get it.
        await ann.connection.send("ann moved")
        assert await bob.recv() == "ann moved"
        assert await bea.recv() == "ann moved"
        # A connection of another process, named by its address.
        body = {"message": "not for bob", "channel": "cursors", "exclude": [bob.address]}
        assert await post(a, "/broadcast", body) == {"delivered": 1}
        assert await bea.recv() == "not for bob"
        await post(b, "/broadcast", {"message": "mark", "channel": "cursors"})
        assert await bob.recv() == "mark"
        assert await ann.until(lambda m: m == "mark") == ["not for bob", "mark"]
        assert await bea.recv() == "mark"


async def test_send_to_reaches_a_session_on_the_other_process(
    workers: tuple[Worker, Worker],
) -> None:
    a, b = workers
    async with live(b, "dave") as dave:
        await dave.until(event("join", "dave"))
        await eventually(lambda: _lists(a, "dave"))
        assert await post(a, "/send_to", {"session": "dave", "message": {"dm": "hi"}}) == {
            "sent": True
        }
        assert await dave.recv() == {"dm": "hi"}
        assert await post(a, "/send_to", {"session": "nobody", "message": "?"}) == {"sent": False}
    await eventually(lambda: _gone(a, "dave"))


async def _lists(worker: Worker, session: str) -> bool:
    return session in [entry["session_id"] for entry in await presence(worker)]


async def test_presence_spans_both_processes_and_each_join_and_leave_arrives_once(
    workers: tuple[Worker, Worker],
) -> None:
    a, b = workers
    async with live(a, "erin") as erin:
        await erin.until(event("join", "erin"))
        async with live(b, "fred") as fred:
            await fred.until(event("join", "fred"))
            # Erin's second tab, on the other process: the session exists, so no join.
            async with live(b, "erin") as erin_tab:
                expected = [
                    {"session_id": "erin", "metadata": {"name": "Erin"}, "connections": 2},
                    {"session_id": "fred", "metadata": {"name": "Fred"}, "connections": 1},
                ]

                async def both_list_everyone() -> bool:
                    return await presence(a) == await presence(b) == expected

                await eventually(both_list_everyone)
                await erin_tab.nothing()
            # Erin still has her tab on A, so closing the one on B is no leave.
        # Fred's last socket closed: one leave, after the grace period.
        await eventually(lambda: _gone(a, "fred"))
        await post(b, "/broadcast", {"message": {"event": "mark"}, "channel": "presence"})
        seen = await erin.until(event("mark"))
        assert [(m["event"], m["session_id"]) for m in seen[:-1]] == [
            ("join", "fred"),
            ("leave", "fred"),
        ]
        assert await presence(b) == [
            {"session_id": "erin", "metadata": {"name": "Erin"}, "connections": 1}
        ]
    await eventually(lambda: _gone(a, "erin"))


async def _gone(worker: Worker, session: str) -> bool:
    return not await _lists(worker, session)


async def test_the_grace_period_holds_across_processes(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    async with live(b, "wes") as wes:
        await wes.until(event("join", "wes"))
        async with live(a, "gil"):
            await wes.until(event("join", "gil"))
        # Gil's tab reloads and lands on the other process, within the grace period: no leave
        # from A, no join from B.
        async with live(b, "gil"):
            await asyncio.sleep(LEAVE_GRACE * 2)
            await post(a, "/broadcast", {"message": {"event": "mark"}, "channel": "presence"})
            await post(b, "/broadcast", {"message": {"event": "mark"}, "channel": "presence"})
            assert await wes.recv() == {"event": "mark"}
            assert await wes.recv() == {"event": "mark"}
            assert await presence(a) == await presence(b)
            assert [entry["connections"] for entry in await presence(a)] == [1, 1]
        assert (await wes.until(event("leave")))[-1]["session_id"] == "gil"
    await eventually(lambda: _gone(a, "wes"))


# -- failures -----------------------------------------------------------------------------------


async def test_delivery_resumes_after_redis_restarts_and_local_delivery_never_stops(
    workers: tuple[Worker, Worker], redis_server: RedisServer
) -> None:
    a, b = workers
    async with member(a, "ria", "r") as ria, member(b, "rob", "r") as rob:
        reconnects = a.health()["reconnects"], b.health()["reconnects"]
        redis_server.stop()
        try:
            await _while_redis_is_away(a, ria)
        finally:
            redis_server.start()
        back = time.monotonic()
        for attempt in range(200):
            await post(b, "/broadcast", {"message": f"after {attempt}", "channel": "r"})
            with contextlib.suppress(asyncio.TimeoutError):
                if str(await ria.recv(0.05)).startswith("after"):
                    break
        else:
            raise AssertionError("no broadcast crossed over after Redis came back")
        # Within the largest backoff step, plus time to connect and resubscribe.
        assert time.monotonic() - back < BACKOFF[1] + 1.5
        wait_until(
            lambda: a.health()["connected"] and b.health()["connected"], TIMEOUT, "both back"
        )
        health = a.health(), b.health()
        assert health[0]["reconnects"] > reconnects[0] and health[1]["reconnects"] > reconnects[1]
        assert health[0]["buffered"] == 0 and health[0]["errors"] >= 1
        await post(a, "/broadcast", {"message": "both ways", "channel": "r"})
        await rob.until(lambda m: m == "both ways")


async def _while_redis_is_away(a: Worker, ria: Client) -> None:
    wait_until(lambda: not a.health()["connected"], TIMEOUT, "A noticing Redis is gone")
    # This process's members still get what it broadcasts; what it publishes waits.
    assert await post(a, "/broadcast", {"message": "during", "channel": "r"}) == {"delivered": 1}
    assert await ria.recv() == "during"
    wait_until(lambda: a.health()["buffered"] == 1, TIMEOUT, "the message waiting")
    assert a.health()["dropped"] == 0


async def test_a_deaf_subscriber_is_found_by_its_probe_and_restarted(
    workers: tuple[Worker, Worker],
) -> None:
    a, b = workers
    async with member(a, "deb", "d") as deb:
        assert isinstance(a.health()["last_probe_rtt"], float)
        reconnects = a.health()["reconnects"]
        await post(a, "/deafen", {})
        await post(b, "/broadcast", {"message": "lost", "channel": "d"})
        await deb.nothing(0.1)
        # The next probe finds no subscription; the subscriber restarts and resubscribes.
        wait_until(
            lambda: a.health()["reconnects"] > reconnects and a.health()["connected"],
            PROBE_INTERVAL * 2 + BACKOFF[1] + 2,
            "the deaf subscriber restarting",
        )
        await post(b, "/broadcast", {"message": "heard", "channel": "d"})
        assert await deb.recv() == "heard"


async def test_a_killed_workers_sessions_leave_within_the_lease(
    workers: tuple[Worker, Worker], redis_server: RedisServer
) -> None:
    a, b = workers
    doomed = Worker(redis_server.url).wait_ready()
    try:
        async with live(a, "watcher") as watcher:
            await watcher.until(event("join", "watcher"))
            async with live(doomed, "ghost"):
                await watcher.until(event("join", "ghost"))
                doomed.kill()
                killed = time.monotonic()
                leave = await watcher.until(event("leave", "ghost"), timeout=LEASE * 3)
                # The lease runs out, then the next sweep (every lease / 3) takes it out.
                assert time.monotonic() - killed < LEASE * 4 / 3 + 1.0
                assert leave[-1]["metadata"] == {"name": "Ghost"}
            assert not await _lists(a, "ghost") and not await _lists(b, "ghost")
            await post(b, "/broadcast", {"message": {"event": "mark"}, "channel": "presence"})
            assert await watcher.recv() == {"event": "mark"}  # one leave, not one per survivor
    finally:
        doomed.stop()


async def test_a_message_over_the_size_cap_is_refused(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    async with member(a, "sam", "big") as sam, member(b, "sue", "big") as sue:
        # A big message crosses over too, read from Redis in several pieces.
        big = "x" * (1 << 19)
        reply = await post(a, "/broadcast", {"message": big, "channel": "big"})
        assert reply == {"delivered": 1}
        assert await sam.recv() == await sue.recv() == big
        reply = await post(a, "/broadcast", {"message": "x" * ((1 << 20) + 1), "channel": "big"})
        assert "over this broadcaster's limit of 1048576 bytes" in reply["error"]
        await sam.nothing()  # refused before any delivery
        await sue.nothing()


# -- in this process ----------------------------------------------------------------------------


def test_the_default_broadcaster_takes_its_backend_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broadcast_module, "_default", None)
    monkeypatch.setenv("HASKE_BROADCAST_URL", "redis://127.0.0.1:1/3")
    backend = get_broadcaster().backend
    assert isinstance(backend, RedisBackend) and backend.url == "redis://127.0.0.1:1/3"
    monkeypatch.setattr(broadcast_module, "_default", None)
    monkeypatch.delenv("HASKE_BROADCAST_URL")
    assert get_broadcaster().backend is None
    assert get_broadcaster().health() == {"backend": "memory", "connected": True}
    with pytest.raises(ValueError, match="unsupported broadcast URL"):
        WebSocketBroadcaster("kafka://127.0.0.1")


def _read_all(reader: RespReader, *pieces: bytes) -> list[Any]:
    replies = []
    for piece in pieces:
        reader.feed(piece)
        while (reply := reader.gets()) is not False:
            replies.append(reply)
    return replies


def test_the_reply_reader_gives_the_same_replies_however_the_bytes_are_split() -> None:
    data = b"\r\n$3\r\n*1\r\n" + bytes(range(256))  # bytes that look like RESP
    stream = (
        command(b"message", b"haske:c:news", data)
        + b":2\r\n+OK\r\n$-1\r\n*-1\r\n$0\r\n\r\n*2\r\n*1\r\n:7\r\n$1\r\nx\r\n"
        + b"-ERR unknown command\r\n"
    )
    expected = [[b"message", b"haske:c:news", data], 2, b"OK", None, None, b"", [[7], b"x"]]
    for cut in range(len(stream) + 1):
        for second in (cut, min(len(stream), cut + 3)):
            replies = _read_all(RespReader(), stream[:cut], stream[cut:second], stream[second:])
            assert replies[:-1] == expected
            assert isinstance(replies[-1], ResponseError)
            assert str(replies[-1]) == "ERR unknown command"
    # One byte at a time: a reply is there as soon as its last byte is.
    reader = RespReader()
    assert _read_all(reader, *[stream[i : i + 1] for i in range(len(stream))])[:-1] == expected
    assert reader.gets() is False
    with pytest.raises(InvalidResponse, match="unexpected reply from Redis"):
        _read_all(RespReader(), b"?what\r\n")


async def test_the_size_cap_is_configurable() -> None:
    broadcaster = WebSocketBroadcaster(
        backend=RedisBackend(f"redis://127.0.0.1:{free_port()}", max_message_size=10)
    )
    try:
        assert await broadcaster.broadcast("x" * 10) == 0
        with pytest.raises(MessageTooLarge, match="12 bytes .* limit of 10 bytes"):
            await broadcaster.broadcast("é" * 6)  # 12 bytes of UTF-8
    finally:
        await broadcaster.close()


async def test_while_redis_is_unreachable_raise_raises_and_buffer_is_bounded() -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}"
    raising = WebSocketBroadcaster(backend=RedisBackend(unreachable, publish_policy="raise"))
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(raising.broadcast("lost"), TIMEOUT)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await raising.broadcast("refused at once, now that Redis is known to be away")
    await raising.close()

    buffering = WebSocketBroadcaster(
        backend=RedisBackend(unreachable, buffer_limit=1000, backoff=(1.0, 1.0))
    )
    for _ in range(20):
        await buffering.broadcast("y" * 200)
    health = buffering.health()
    # 1000 bytes hold 4 messages of 200 bytes and their 14 bytes of header; the oldest went.
    assert health["buffered"] == 4 and health["dropped"] == 16 and not health["connected"]
    await buffering.close()


async def test_a_stalled_redis_holds_a_bounded_backlog_then_gets_the_newest(
    redis_server: RedisServer,
) -> None:
    publisher = RedisBackend(redis_server.url, buffer_limit=1 << 16)
    subscriber = RedisBackend(redis_server.url)
    received: list[bytes] = []
    subscriber.listen(b"stall", received.append, raw=True)
    try:
        assert await subscriber.connect() and await publisher.connect()
        await eventually(lambda: _true(publisher._publisher_writer is not None))
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            # 32 MiB, more than the kernel's socket buffers take while Redis does not read.
            for number in range(4096):
                publisher.publish(b"stall", b"%08d" % number + b"x" * 8184)
                await asyncio.sleep(0)
            health = publisher.health()
            assert health["dropped"] > 0 and 0 < health["buffered"] <= 8
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        await eventually(lambda: _true(received[-1:] and received[-1][:8] == b"00004095"))
        numbers = [int(message[:8]) for message in received]
        assert numbers == sorted(numbers)  # in order, with the oldest of the backlog dropped
        await eventually(lambda: _true(publisher.health()["buffered"] == 0))
    finally:
        await publisher.close()
        await subscriber.close()


async def _true(value: Any) -> bool:
    return bool(value)


async def test_health_and_a_clean_close(redis_server: RedisServer) -> None:
    broadcaster = WebSocketBroadcaster(redis_server.url)
    assert await broadcaster.backend.connect()
    await broadcaster.broadcast("hello")

    async def published() -> bool:
        return broadcaster.health()["published"] == 1

    await eventually(published)
    health = broadcaster.health()
    assert health["connected"] and health["url"] == redis_server.url
    assert health["node"] == node_id().hex() and health["errors"] == 0
    await broadcaster.close()
    assert not broadcaster.health()["connected"]
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("haske-redis")]
