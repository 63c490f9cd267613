"""The Haske application: a Starlette app with route decorators and the shared WebSocket routes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route, WebSocketRoute

from haske.broadcast import WebSocketBroadcaster, get_broadcaster
from haske.security import AuthHook, OriginPolicy
from haske.websocket import Handler, websocket_endpoint
from haske.ws import default_routes

__all__ = ["Haske"]

F = TypeVar("F", bound=Callable[..., Any])


class Haske(Starlette):
    """A Starlette application hosting HTTP and WebSocket routes on one instance.

    It takes every Starlette argument (``routes``, ``middleware``, ``lifespan``,
    ``exception_handlers``, ``debug``...) and also serves every ``@websocket_route`` handler, as
    registered at request time, after its own routes.

    ``allowed_origins`` and ``auth`` are the defaults of every Haske WebSocket route it serves
    that sets none of its own: the origins accepted besides the app's own site (``["*"]``: any;
    see :mod:`haske.security`), and an async ``auth(ws)`` hook run before ``accept()``.

    ```python
    app = Haske()

    @app.route("/")
    async def home(request):
        return PlainTextResponse("hello")

    @app.websocket("/echo/{room}")
    async def echo(ws):
        await ws.accept()
        async for message in ws:
            await ws.send(message)
    ```
    """

    def __init__(
        self,
        *args: Any,
        allowed_origins: Sequence[str] | None = None,
        auth: AuthHook | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.origin_policy = OriginPolicy(allowed_origins or ())
        self.auth = auth
        self.router.routes.append(default_routes)

    def _add(self, route: BaseRoute) -> None:
        # The app's own routes come before the shared ones, so they win on the same path.
        routes = self.router.routes
        index = routes.index(default_routes) if default_routes in routes else len(routes)
        routes.insert(index, route)

    def route(
        self,
        path: str,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> Callable[[F], F]:
        """Register an HTTP endpoint (a request handler or an ``HTTPEndpoint`` class)."""

        def decorator(endpoint: F) -> F:
            self._add(
                Route(
                    path,
                    endpoint,
                    methods=list(methods) if methods is not None else None,
                    name=name,
                    include_in_schema=include_in_schema,
                )
            )
            return endpoint

        return decorator

    def websocket(
        self,
        path: str,
        name: str | None = None,
        *,
        broadcaster: WebSocketBroadcaster | None = None,
        allowed_origins: Sequence[str] | None = None,
        auth: AuthHook | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register a WebSocket handler; it receives a :class:`haske.ws.WebSocket`, tracked by
        ``broadcaster`` (the default one unless given) once accepted. ``allowed_origins`` and
        ``auth`` replace the app's for this route."""

        def decorator(handler: Handler) -> Handler:
            self.add_websocket_handler(
                path,
                handler,
                name=name,
                broadcaster=broadcaster,
                allowed_origins=allowed_origins,
                auth=auth,
            )
            return handler

        return decorator

    def add_websocket_handler(
        self,
        path: str,
        handler: Handler,
        name: str | None = None,
        *,
        broadcaster: WebSocketBroadcaster | None = None,
        allowed_origins: Sequence[str] | None = None,
        auth: AuthHook | None = None,
    ) -> None:
        """Register a WebSocket handler without the decorator."""
        tracker = get_broadcaster() if broadcaster is None else broadcaster
        endpoint = websocket_endpoint(
            handler, broadcaster=tracker, allowed_origins=allowed_origins, auth=auth
        )
        self._add(WebSocketRoute(path, endpoint, name=name))
