"""The Haske application: HTTP and WebSocket routes on one Starlette app, the shared
``@websocket_route`` routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import queue
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from clients import TIMEOUT, receive, recv
from starlette.applications import Starlette
from starlette.exceptions import WebSocketException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import NoMatchFound, Router, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from haske.app import Haske
from haske.broadcast import WebSocketBroadcaster
from haske.ws import WebSocket, default_routes, websocket_route

app_before = Haske()


@websocket_route("/app-tests/shared/{item_id:int}", name="shared")
async def shared_socket(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_json({"item": ws.path_params["item_id"], "type": type(ws).__name__})


def test_haske_is_a_starlette_app_with_http_and_websocket_routes() -> None:
    app = Haske()
    assert isinstance(app, Starlette)

    @app.route("/hello", methods=["GET", "POST"])
    async def hello(request: Request) -> Response:
        return PlainTextResponse(f"hello {request.method}")

    @app.websocket("/echo/{room}")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws:
            await ws.send(f"{ws.path_params['room']}: {message}")

    assert hello.__name__ == "hello" and echo.__name__ == "echo"
    with TestClient(app) as client:
        assert client.get("/hello").text == "hello GET"
        assert client.post("/hello").text == "hello POST"
        assert client.put("/hello").status_code == 405
        with client.websocket_connect("/echo/lobby") as session:
            session.send_text("hi")
            assert receive(session)["text"] == "lobby: hi"


def test_shared_routes_work_in_apps_created_before_and_after_the_decorator() -> None:
    app_after = Haske()
    for app in (app_before, app_after):
        with (
            TestClient(app) as client,
            client.websocket_connect("/app-tests/shared/42") as session,
        ):
            assert receive(session)["text"] == '{"item":42,"type":"WebSocket"}'
    assert app_after.url_path_for("shared", item_id=7) == "/app-tests/shared/7"


def test_a_route_decorated_after_the_app_exists_is_served() -> None:
    app = Haske()

    @websocket_route("/app-tests/late")
    async def late(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("late but here")

    with TestClient(app) as client, client.websocket_connect("/app-tests/late") as session:
        assert receive(session)["text"] == "late but here"


def test_the_decorator_returns_a_route_for_plain_starlette_apps() -> None:
    assert isinstance(shared_socket, WebSocketRoute)
    assert shared_socket.name == "shared"
    assert shared_socket in default_routes.routes
    for app in (Starlette(routes=[shared_socket]), Starlette(routes=[default_routes])):
        with (
            TestClient(app) as client,
            client.websocket_connect("/app-tests/shared/1") as session,
        ):
            assert receive(session)["text"] == '{"item":1,"type":"WebSocket"}'
    with pytest.raises(NoMatchFound):
        Haske().url_path_for("no-such-route")


def test_registering_a_path_again_replaces_the_earlier_route() -> None:
    @websocket_route("/app-tests/replaced")
    async def first(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("first")

    @websocket_route("/app-tests/replaced")
    async def second(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("second")

    assert [r.path for r in default_routes.routes].count("/app-tests/replaced") == 1
    with (
        TestClient(Haske()) as client,
        client.websocket_connect("/app-tests/replaced") as session,
    ):
        assert receive(session)["text"] == "second"


def test_the_apps_own_route_wins_over_a_shared_one_on_the_same_path() -> None:
    app = Haske()

    @app.websocket("/app-tests/shared/{item_id:int}")
    async def own(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("the app's own")

    with TestClient(app) as client, client.websocket_connect("/app-tests/shared/3") as session:
        assert receive(session)["text"] == "the app's own"


def test_middleware_and_lifespan_apply_to_http_and_websocket_routes() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Haske) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "hello from lifespan"}
        events.append("shutdown")

    class TagWebSockets:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "websocket":
                scope.setdefault("state", {})["tag"] = "tagged"
            await self.app(scope, receive, send)

    class AddHeader(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Any) -> Response:
            response = await call_next(request)
            response.headers["x-haske"] = "1"
            return response

    app = Haske(middleware=[Middleware(TagWebSockets)], lifespan=lifespan)
    app.add_middleware(AddHeader)

    @app.route("/state")
    async def state(request: Request) -> Response:
        return JSONResponse({"greeting": request.state.greeting})

    @app.websocket("/state-ws")
    async def state_ws(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"greeting": ws.state.greeting, "tag": ws.state.tag})

    with TestClient(app) as client:
        assert events == ["startup"]
        response = client.get("/state")
        assert response.json() == {"greeting": "hello from lifespan"}
        assert response.headers["x-haske"] == "1"
        with client.websocket_connect("/state-ws") as session:
            assert receive(session)["text"] == '{"greeting":"hello from lifespan","tag":"tagged"}'
    assert events == ["startup", "shutdown"]


def test_an_unknown_websocket_path_is_refused() -> None:
    with (
        TestClient(Haske()) as client,
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/app-tests/nowhere"),
    ):
        pass  # pragma: no cover


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_app_routes_are_tracked_by_their_broadcaster_on_real_servers(
    serve: Any, ws_impl: str
) -> None:
    broadcaster = WebSocketBroadcaster()
    joined: queue.Queue[int] = queue.Queue()
    app = Haske()

    @app.websocket("/tracked/{name}", broadcaster=broadcaster)
    async def tracked(ws: WebSocket) -> None:
        await ws.accept()
        joined.put(ws.connection_id)
        async for message in ws:
            await broadcaster.broadcast(f"{ws.path_params['name']}: {message}")

    @app.route("/count")
    async def count(request: Request) -> Response:
        return JSONResponse({"connections": len(broadcaster)})

    server = serve(app, ws=ws_impl)
    async with (
        websockets.connect(server.url + "/tracked/ada") as ada,
        websockets.connect(server.url + "/tracked/bob") as bob,
    ):
        for _ in range(2):
            await asyncio.to_thread(joined.get, timeout=TIMEOUT)
        await ada.send("hi all")
        for client in (ada, bob):
            assert await recv(client) == "ada: hi all"
    async with httpx.AsyncClient() as http:
        for _ in range(500):
            connections = (await http.get(server.http_url + "/count")).json()["connections"]
            if connections == 0:
                break
            await asyncio.sleep(0.01)
    assert connections == 0


# -- WebSocket dispatch: with or without middleware, the same Starlette semantics ---------------


class Passthrough:
    """A user middleware that only records the scope types it saw."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope["type"])
        await self.app(scope, receive, send)


# Starlette's router puts the matched route in the scope from 0.4x on; Haske's own dispatch
# always does.
ROUTER_SETS_ROUTE = 'scope["route"]' in inspect.getsource(Router.app)


def dispatch_app(seen: list[str] | None, ended: queue.Queue[WebSocketState]) -> Haske:
    """Haske WebSocket routes, a plain Starlette one and exception handlers; with ``seen``, a
    user middleware stands in front of them. ``ended`` gets the client state a receive loop
    leaves Starlette's socket in."""

    async def not_found(websocket: StarletteWebSocket, exc: Exception) -> None:
        await websocket.close(4404, "not found")

    app = Haske(
        middleware=None if seen is None else [Middleware(Passthrough, seen=seen)],
        exception_handlers={LookupError: not_found},
    )

    def item_route() -> Any:
        return next(route for route in app.router.routes if getattr(route, "name", "") == "item")

    @app.websocket("/items/{item_id:int}", name="item")
    async def item(ws: WebSocket) -> None:
        await ws.accept()
        scope = ws.scope
        await ws.send_json(
            {
                "item": ws.path_params["item_id"],
                "app": scope["app"] is app,
                "router": scope["router"] is app.router,
                "route": scope["route"].name if "route" in scope else None,
                "endpoint": scope["endpoint"] is item_route().endpoint,
                "handlers": LookupError in scope["starlette.exception_handlers"][0],
                "url": str(ws.websocket.url_for("item", item_id=7)),
            }
        )
        async for message in ws:
            await ws.send(message)
        ended.put(ws.websocket.client_state)

    async def plain(websocket: StarletteWebSocket) -> None:
        await websocket.accept()
        command = await websocket.receive_text()
        if command == "lookup":
            raise KeyError(command)  # the app's handler closes with 4404
        if command == "policy":
            raise WebSocketException(4001, "policy")  # Starlette's own handler closes with 4001
        if command == "crash":
            raise ValueError(command)  # no handler: the server closes with 1011
        await websocket.send_text(f"plain {websocket.path_params['name']}")

    app.router.routes.insert(0, WebSocketRoute("/plain/{name}", plain))
    return app


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
@pytest.mark.parametrize("with_middleware", [False, True])
async def test_websocket_routes_keep_starlette_semantics_with_and_without_middleware(
    serve: Any, ws_impl: str, with_middleware: bool
) -> None:
    seen: list[str] | None = [] if with_middleware else None
    ended: queue.Queue[WebSocketState] = queue.Queue()
    server = serve(dispatch_app(seen, ended), ws=ws_impl)
    async with websockets.connect(server.url + "/items/5") as client:
        assert json.loads(await recv(client)) == {
            "item": 5,
            "app": True,
            "router": True,
            "route": "item" if ROUTER_SETS_ROUTE or not with_middleware else None,
            "endpoint": True,
            "handlers": True,
            "url": server.url + "/items/7",
        }
        await client.send("echo")
        assert await recv(client) == "echo"
    ended_state = await asyncio.to_thread(ended.get, timeout=TIMEOUT)
    assert ended_state is WebSocketState.DISCONNECTED

    async with websockets.connect(server.url + "/plain/ada") as client:
        await client.send("hello")
        assert await recv(client) == "plain ada"
    # An exception no handler takes reaches the server: Haske's and hypercorn close with 1011,
    # uvicorn's drops the connection (1006).
    crashed = 1006 if ws_impl == "websockets" else 1011
    for command, code in (("lookup", 4404), ("policy", 4001), ("crash", crashed)):
        async with websockets.connect(server.url + "/plain/ada") as client:
            await client.send(command)
            with pytest.raises(websockets.ConnectionClosed):
                await recv(client)
            assert client.close_code == code, command

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(server.url + "/nowhere"):
            pass  # pragma: no cover
    assert refused.value.response.status_code == 403
    if seen is not None:
        assert seen.count("websocket") == 6


async def test_an_idle_connection_waits_through_few_coroutine_frames(serve: Any) -> None:
    """Each coroutine an idle connection waits in stays in memory as long as it is open."""
    waiting: queue.Queue[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = queue.Queue()
    app = Haske()

    @app.websocket("/idle", broadcaster=WebSocketBroadcaster())
    async def idle(ws: WebSocket) -> None:
        await ws.accept()
        task = asyncio.current_task()
        assert task is not None
        waiting.put((asyncio.get_running_loop(), task))
        async for _ in ws:
            pass

    async def chain(task: asyncio.Task[Any]) -> list[str]:
        names, coroutine = [], task.get_coro()
        while hasattr(coroutine, "cr_await"):
            names.append(coroutine.__qualname__)
            coroutine = coroutine.cr_await
        return names

    server = serve(app)
    async with websockets.connect(server.url + "/idle") as client:
        loop, task = await asyncio.to_thread(waiting.get, timeout=TIMEOUT)
        await client.send("wake up")  # the handler is back in its receive loop after this
        await client.ping()
        names = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(chain(task), loop))
    # Nothing of Starlette's or of uvicorn's proxy-headers middleware stays, and the handler
    # awaits the protocol's future without its receive coroutine.
    assert names == ["Haske.__call__", idle.__qualname__, "WebSocket.__anext__"]
