"""Presence across processes: the sessions of a LiveSessionManager, registered in Redis.

Every process records, per session, how many of its sockets are open, under a lease it renews
every ``lease / 3`` seconds. Lua scripts make each change atomic and tell the one process whose
change made a session appear (a join) or disappear (a leave), so that each is announced once for
the whole cluster. Each change is also published with a version number, from which every process
keeps its own copy of the registry (reloaded after a reconnection or a gap), so ``presence()``
needs no round trip. A process whose lease ran out is taken out by the first other process to
notice, which announces the leaves.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from haske import _json

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from haske.redis import RedisBackend
    from haske.sessions import LiveSessionManager

__all__ = ["RedisPresence"]

# Every script gets ARGV: the namespace, this process, the lease key prefix, the lease in ms.
_PRELUDE = """
local base, node, lease, lease_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function metadata(sid)
  local flat = redis.call('HGETALL', base .. ':m:' .. sid)
  local parts = {}
  for i = 1, #flat, 2 do parts[#parts + 1] = cjson.encode(flat[i]) .. ':' .. flat[i + 1] end
  return '{' .. table.concat(parts, ',') .. '}'
end
local function describe(sid, version, gone)
  local head = '{"v":' .. version .. ',"s":' .. cjson.encode(sid)
  if gone then return head .. ',"m":' .. gone .. '}' end
  local sockets = 0
  for _, count in ipairs(redis.call('HVALS', base .. ':s:' .. sid)) do
    sockets = sockets + tonumber(count)
  end
  return head .. ',"o":' .. redis.call('ZSCORE', base .. ':o', sid) .. ',"n":' .. sockets
    .. ',"m":' .. metadata(sid) .. '}'
end
local function changed(sid, gone)
  local event = describe(sid, redis.call('INCR', base .. ':v'), gone)
  redis.call('PUBLISH', base .. ':e', event)
  return event
end
local function drop(sid, holder)
  if redis.call('HDEL', base .. ':s:' .. sid, holder) == 0 then return nil, false end
  if redis.call('EXISTS', base .. ':s:' .. sid) == 1 then return changed(sid), false end
  local gone = metadata(sid)
  redis.call('DEL', base .. ':m:' .. sid)
  redis.call('ZREM', base .. ':o', sid)
  return changed(sid, gone), true
end
"""

_SCRIPTS = {
    # ARGV[5] session, ARGV[6] sockets here, then metadata field / JSON value pairs.
    "update": """
local sid = ARGV[5]
local joined = redis.call('EXISTS', base .. ':s:' .. sid) == 0
redis.call('SET', lease .. node, '1', 'PX', lease_ms, 'NX')
redis.call('HSET', base .. ':s:' .. sid, node, ARGV[6])
redis.call('SADD', base .. ':n:' .. node, sid)
redis.call('SADD', base .. ':nodes', node)
for i = 7, #ARGV, 2 do redis.call('HSET', base .. ':m:' .. sid, ARGV[i], ARGV[i + 1]) end
if joined then redis.call('ZADD', base .. ':o', redis.call('INCR', base .. ':seq'), sid) end
return {joined and 1 or 0, changed(sid)}
""",
    # ARGV[5] session: this process holds no socket of it any more.
    "drop": """
redis.call('SREM', base .. ':n:' .. node, ARGV[5])
local event, left = drop(ARGV[5], node)
return {left and 1 or 0, event}
""",
    # Take out every other process whose lease ran out; the leaves that made.
    "sweep": """
local left = {}
for _, other in ipairs(redis.call('SMEMBERS', base .. ':nodes')) do
  if other ~= node and redis.call('EXISTS', lease .. other) == 0 then
    for _, sid in ipairs(redis.call('SMEMBERS', base .. ':n:' .. other)) do
      local event, gone = drop(sid, other)
      if gone then left[#left + 1] = event end
    end
    redis.call('DEL', base .. ':n:' .. other)
    redis.call('SREM', base .. ':nodes', other)
  end
end
return left
""",
    "snapshot": """
local version = redis.call('GET', base .. ':v') or '0'
local out = {version}
for _, sid in ipairs(redis.call('ZRANGE', base .. ':o', 0, -1)) do
  out[#out + 1] = describe(sid, version)
end
return out
""",
}

#: A session as this process knows it: version of that knowledge, join order, open sockets in
#: the cluster, metadata.
Entry = tuple[int, float, int, dict[str, Any]]


class RedisPresence:
    """The cluster-wide registry of one :class:`~haske.sessions.LiveSessionManager`.

    ``name`` keeps the registries of several managers on one Redis apart.
    """

    def __init__(self, backend: RedisBackend, manager: LiveSessionManager, name: str) -> None:
        self.backend = backend
        self.manager = manager
        self.name = name
        self._base = backend.key("p", name)
        self._view: dict[str, Entry] = {}
        # Sessions seen leaving, until the stream of changes has caught up with that version.
        self._gone: dict[str, int] = {}
        self._version = 0
        # Until the first snapshot, and during each reload, changes wait here.
        self._syncing = True
        self._pending: list[dict[str, Any]] = []
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        backend.presences.append(self)
        backend.on_connect(self._connected)
        backend.listen(self._base + b":e", self._on_change, raw=True)
        backend.listen(self.everyone, self._on_everyone)

    def __repr__(self) -> str:
        return f"<RedisPresence {self.name!r} sessions={len(self._view)}>"

    # -- names ---------------------------------------------------------------------------------

    @property
    def everyone(self) -> bytes:
        """The channel of messages to every session."""
        return self._base + b":a"

    def channel_of(self, session_id: str) -> bytes:
        """The channel of messages to one session."""
        return self._base + b":to:" + session_id.encode()

    # -- the registry, as this process knows it ------------------------------------------------

    def presence(self) -> list[dict[str, Any]]:
        """Every session of the cluster, in order of joining."""
        self.backend.start_if_running()  # reading the registry is a first use too
        entries = sorted(self._view.items(), key=lambda item: item[1][1])
        return [
            {"session_id": session_id, "metadata": dict(metadata), "connections": sockets}
            for session_id, (_, _, sockets, metadata) in entries
        ]

    def session_ids(self) -> list[str]:
        """Every session id of the cluster, in order of joining."""
        return [entry["session_id"] for entry in self.presence()]

    def sockets(self, session_id: str) -> int:
        """Open sockets of a session in the whole cluster (0 if unknown)."""
        entry = self._view.get(session_id)
        return 0 if entry is None else entry[2]

    def __contains__(self, session_id: object) -> bool:
        self.backend.start_if_running()
        return session_id in self._view

    def __len__(self) -> int:
        self.backend.start_if_running()
        return len(self._view)

    # -- changes made here ---------------------------------------------------------------------

    async def sync(
        self, session_id: str, metadata: dict[str, Any] | None = None
    ) -> tuple[bool, dict[str, Any]] | None:
        """Record this process's part of a session in Redis: its open sockets here (``metadata``
        merged in), or none once the manager no longer has the session.

        Returns whether that made the session join or leave the cluster, with its metadata; None
        while Redis is unreachable (the registration is then redone on reconnection).
        """
        backend = self.backend
        backend.start()
        if not backend.subscribed:
            return None
        async with self._guard():
            session = self.manager.get(session_id)
            try:
                if session is not None:
                    # Subscribed before it is registered: a session others can see hears them.
                    await backend.subscribe(
                        self.channel_of(session_id), functools.partial(self._on_session, session_id)
                    )
                    fields: list[Any] = [session_id, len(session.sockets)]
                    for key, value in (metadata or {}).items():
                        fields += [key, _json.dumps(value)]
                    reply = await self._run("update", *fields)
                else:
                    backend.unlisten(self.channel_of(session_id))
                    reply = await self._run("drop", session_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis went away: redone on reconnection
                backend._failed(exc)
                return None
        if len(reply) < 2:
            return False, {}
        event = _json.loads(reply[1])
        self._apply_local(event)
        return bool(reply[0]), event["m"]

    def _guard(self) -> asyncio.Lock:
        # One change at a time, each writing the manager's state as it is when it runs: changes
        # spawned from synchronous code cannot overtake each other with stale counts.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    async def _run(self, name: str, *args: Any) -> Any:
        client = self.backend.client
        script = self._scripts.get(name)
        if script is None or script.registered_client is not client:
            script = self._scripts[name] = client.register_script(_PRELUDE + _SCRIPTS[name])
        lease: list[Any] = [self.backend.lease_key(""), int(self.backend.lease * 1000)]
        return await script(args=[self._base, self.backend.node, *lease, *args])

    async def _restore(self) -> None:
        """Register every session of this process again (Redis may have lost them)."""
        for session_id, session in list(self.manager._sessions.items()):
            outcome = await self.sync(session_id, session.metadata)
            if outcome is not None and outcome[0]:
                await self.manager._announce_logged("join", session_id, outcome[1])

    async def tick(self, renewed: bool) -> None:
        """Every lease/3 seconds: register again if the lease had run out; take out the
        processes whose lease ran out and announce the leaves."""
        if not renewed:
            await self._restore()
        for raw in await self._run("sweep"):
            event = _json.loads(raw)
            self._apply_local(event)
            await self.manager._announce_logged("leave", event["s"], event["m"])

    # -- changes made anywhere -----------------------------------------------------------------

    def _connected(self) -> Coroutine[Any, Any, None]:
        # Called as soon as the subscription is back: changes are held until the reload.
        self._syncing = True
        self._pending = []
        return self._reconnected()

    async def _reconnected(self) -> None:
        try:
            await self.backend.renew_lease()
            await self._restore()
        except Exception as exc:  # noqa: BLE001 - Redis went away again: next reconnection
            self.backend._failed(exc)
        await self._reload()

    async def _reload(self) -> None:
        try:
            reply = await self._run("snapshot")
        except Exception as exc:  # noqa: BLE001 - the next change shows a gap and retries
            self.backend._failed(exc)
            self._syncing, self._pending = False, []
            return
        version = int(reply[0])
        view: dict[str, Entry] = {}
        for raw in reply[1:]:
            event = _json.loads(raw)
            view[event["s"]] = (version, event["o"], event["n"], event["m"])
        self._view, self._gone, self._version = view, {}, version
        pending, self._pending = self._pending, []
        self._syncing = False
        for event in pending:
            self._take(event)

    def _on_change(self, data: bytes) -> None:
        event = _json.loads(data)
        if self._syncing:
            self._pending.append(event)
        else:
            self._take(event)

    def _take(self, event: dict[str, Any]) -> None:
        version = event["v"]
        if version <= self._version:
            return
        if version != self._version + 1:
            # A change went missing (a lost subscription): reload, keeping what follows.
            self._syncing = True
            self._pending = [event]
            self._spawn(self._reload())
            return
        self._version = version
        self._apply(event)
        if self._gone:
            self._gone = {sid: seen for sid, seen in self._gone.items() if seen > version}

    def _apply_local(self, event: dict[str, Any]) -> None:
        # The reply to a change made here may arrive after the published change itself.
        if event["v"] > self._version:
            self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        session_id, version = event["s"], event["v"]
        entry = self._view.get(session_id)
        if (entry is not None and entry[0] >= version) or self._gone.get(session_id, 0) >= version:
            return
        if "o" in event:
            self._view[session_id] = (version, event["o"], event["n"], event["m"])
            self._gone.pop(session_id, None)
        else:
            self._view.pop(session_id, None)
            self._gone[session_id] = version

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- messages from other processes ---------------------------------------------------------

    def _on_session(self, session_id: str, opcode: int, options: Any, payload: bytes) -> None:
        session = self.manager.get(session_id)
        if session is not None and session.sockets:
            self.manager.broadcaster._receive_for(list(session.sockets), opcode, payload)

    def _on_everyone(self, opcode: int, options: Any, payload: bytes) -> None:
        skip = set(options.get("xs", ())) if options else set()
        sockets = self.manager._sockets_except(skip)
        if sockets:
            self.manager.broadcaster._receive_for(sockets, opcode, payload)
