"""The Haske application: a Starlette app with route decorators and the shared WebSocket routes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute, Match, Route, Router, WebSocketRoute, websocket_session
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket as StarletteWebSocket

from haske.broadcast import WebSocketBroadcaster, get_broadcaster
from haske.security import AuthHook, OriginPolicy
from haske.websocket import EndpointSteps, Handler, websocket_endpoint
from haske.ws import SharedRoutes, default_routes

__all__ = ["Haske"]

F = TypeVar("F", bound=Callable[..., Any])

# Starlette's ASGI wrapper around a function endpoint: a route whose app runs this code has no
# route middleware, so its endpoint can be called directly.
_SESSION_CODE = websocket_session(lambda websocket: None).__code__  # type: ignore[arg-type, return-value]

Handlers = tuple[dict[Any, Any], dict[int, Any]]


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
        # The middleware stack last checked for direct WebSocket dispatch, and its handlers.
        self._checked_stack: Any = None
        self._direct_handlers: Handlers | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request; a WebSocket bound for a function endpoint goes to it directly.

        Without user middleware, Starlette's layers do nothing to a WebSocket but set scope keys
        and map exceptions to handlers. Calling the endpoint here, with the same scope keys and
        the same handling of exceptions, keeps a dozen coroutine frames and closures out of
        every open connection's memory. Anything else takes Starlette's full path.
        """
        if scope["type"] == "websocket":
            route = self._direct_websocket_route(scope)
            if route is not None:
                websocket = StarletteWebSocket(scope, receive=receive, send=send)
                steps: EndpointSteps | None = getattr(route.endpoint, "_haske_steps", None)
                try:
                    if steps is None:
                        await route.endpoint(websocket)
                    else:
                        # A Haske endpoint's steps, taken here: one frame less again.
                        ws = steps.socket(websocket)
                        if await steps.admit(ws):
                            try:
                                await steps.handler(ws)
                            except Exception as exc:  # noqa: BLE001 - failed() logs it
                                await steps.failed(ws, exc)
                            finally:
                                await steps.finish(ws)
                except Exception as exc:  # noqa: BLE001 - handled as Starlette would
                    await _handle_exception(exc, websocket)
                return
        await super().__call__(scope, receive, send)

    def _direct_websocket_route(self, scope: Scope) -> WebSocketRoute | None:
        """The function-endpoint route for ``scope``, which it updates as Starlette's layers
        would; None when the request must take Starlette's full path."""
        handlers = self._websocket_handlers()
        found = None if handlers is None else self._websocket_target(scope)
        if found is None:
            return None
        route, child_scope = found
        scope["app"] = self
        scope["starlette.exception_handlers"] = handlers
        if "router" not in scope:
            scope["router"] = self.router
        scope["route"] = route
        scope.update(child_scope)
        return route

    def _websocket_handlers(self) -> Handlers | None:
        """The exception handlers of the default middleware stack; None if it has more layers."""
        stack = self.middleware_stack
        if stack is None:
            stack = self.middleware_stack = self.build_middleware_stack()
        if stack is not self._checked_stack:
            self._checked_stack = stack
            self._direct_handlers = _default_stack_handlers(stack, self.router)
        return self._direct_handlers

    def _websocket_target(self, scope: Scope) -> tuple[WebSocketRoute, Scope] | None:
        """The function-endpoint route the router would hand ``scope`` to, and its child scope."""
        for route in self.router.routes:
            if isinstance(route, SharedRoutes):
                found, child_scope = route._match(scope)
                if found is None:
                    continue
                route = found
            else:
                match, child_scope = route.matches(scope)
                if match is Match.NONE:
                    continue
                if match is not Match.FULL:
                    return None
            if isinstance(route, WebSocketRoute) and _calls_endpoint(route):
                return route, child_scope
            return None
        return None

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


def _calls_endpoint(route: WebSocketRoute) -> bool:
    """True if ``route`` only hands requests to its function endpoint (no route middleware)."""
    return type(route) is WebSocketRoute and getattr(route.app, "__code__", None) is _SESSION_CODE


def _default_stack_handlers(stack: Any, router: Router) -> Handlers | None:
    """What ``ExceptionMiddleware`` puts in the scope, if ``stack`` is Starlette's default one."""
    if type(stack) is not ServerErrorMiddleware or type(stack.app) is not ExceptionMiddleware:
        return None
    exceptions = stack.app
    if exceptions.app is not router or type(router) is not Router:
        return None
    if router.middleware_stack != router.app:
        return None
    return (exceptions._exception_handlers, exceptions._status_handlers)


async def _handle_exception(exc: Exception, websocket: StarletteWebSocket) -> None:
    """Handle an exception from an endpoint as Starlette's route and middleware layers would."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    scope, receive, send = websocket.scope, websocket._receive, websocket._send
    route_layer = wrap_app_handling_exceptions(endpoint, websocket)
    middleware_layer = StarletteWebSocket(scope, receive=receive, send=send)
    await wrap_app_handling_exceptions(route_layer, middleware_layer)(scope, receive, send)
