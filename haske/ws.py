"""The public WebSocket API: ``@websocket_route``, the broadcaster, sessions and handshake utilities.

```python
from haske.ws import websocket_route

@websocket_route("/ws")
async def chat_socket(ws):
    await ws.accept()
    async for message in ws:
        await ws.send_text(f"You said: {message}")
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketClose

from haske._backends import handshake as _handshake
from haske.broadcast import (
    ChannelLimitExceeded,
    ChannelNotFound,
    WebSocketBroadcaster,
    get_broadcaster,
)
from haske.exceptions import ConnectionClosed, NotSupportedError
from haske.security import AuthHook, Deny
from haske.sessions import LiveSessionManager
from haske.websocket import Handler, HeadersLike, WebSocket, _raw_headers, websocket_endpoint

__all__ = [
    "ChannelLimitExceeded",
    "ChannelNotFound",
    "ConnectionClosed",
    "Deny",
    "LiveSessionManager",
    "NotSupportedError",
    "SharedRoutes",
    "WebSocket",
    "WebSocketBroadcaster",
    "default_routes",
    "get_broadcaster",
    "is_websocket_upgrade",
    "validate_websocket_request",
    "websocket_handshake",
    "websocket_route",
]


class SharedRoutes(BaseRoute):
    """A live list of WebSocket routes, looked up on every request.

    ``@websocket_route`` adds to :data:`default_routes`, which every ``Haske()`` app includes, so
    a route decorated in any module works in apps created before or after the import. A plain
    Starlette app can include it too: ``Starlette(routes=[default_routes])``.
    """

    def __init__(self) -> None:
        self.routes: list[WebSocketRoute] = []

    def add(self, route: WebSocketRoute) -> None:
        """Add a route; one registered earlier for the same path is replaced."""
        self.routes = [r for r in self.routes if r.path != route.path] + [route]

    def _match(self, scope: Scope) -> tuple[WebSocketRoute | None, Scope]:
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return route, child_scope
        return None, {}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        route, child_scope = self._match(scope)
        return (Match.NONE, {}) if route is None else (Match.FULL, child_scope)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                continue
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, child_scope = self._match(scope)
        if route is None:  # removed between matching and handling
            await WebSocketClose()(scope, receive, send)
            return
        scope.update(child_scope)
        scope["route"] = route
        await route.handle(scope, receive, send)

    def __repr__(self) -> str:
        return f"SharedRoutes({[route.path for route in self.routes]!r})"


#: The routes of every ``@websocket_route`` handler.
default_routes = SharedRoutes()


def websocket_route(
    path: str,
    *,
    name: str | None = None,
    broadcaster: WebSocketBroadcaster | None = None,
    allowed_origins: Sequence[str] | None = None,
    auth: AuthHook | None = None,
) -> Callable[[Handler], WebSocketRoute]:
    """Register ``handler(ws)`` for WebSocket connections to ``path`` in every ``Haske()`` app.

    The handler receives a :class:`WebSocket` (path parameters in ``ws.path_params``), tracked by
    ``broadcaster`` (the default one unless given) from ``accept()`` until it returns. The
    decorator returns the Starlette ``WebSocketRoute`` (its ``endpoint.__wrapped__`` is the
    handler), so it also fits a plain Starlette app: ``Starlette(routes=[chat_socket])``.

    Before the handler runs, a browser page from another site is refused with HTTP 403 unless
    its origin is in ``allowed_origins`` (else the app's ``allowed_origins``; ``["*"]``: any),
    and ``auth(ws)``, when given (else the app's), may refuse the connection by raising
    :class:`Deny` or return the user, which becomes ``ws.user``.
    """

    def decorator(handler: Handler) -> WebSocketRoute:
        tracker = get_broadcaster() if broadcaster is None else broadcaster
        endpoint = websocket_endpoint(
            handler, broadcaster=tracker, allowed_origins=allowed_origins, auth=auth
        )
        route = WebSocketRoute(path, endpoint, name=name)
        default_routes.add(route)
        return route

    return decorator


# -- handshake utilities ----------------------------------------------------------------------


def _header_values(headers: HeadersLike, name: bytes) -> list[bytes]:
    return [value for key, value in _raw_headers(headers) if key == name]


def _tokens(values: list[bytes]) -> set[str]:
    return {
        token.strip().lower() for value in values for token in value.decode("latin-1").split(",")
    }


def websocket_handshake(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return str(_handshake.websocket_handshake(key))


def is_websocket_upgrade(headers: HeadersLike) -> bool:
    """True if the headers ask to upgrade to WebSocket: an ``Upgrade`` token ``websocket`` and a
    ``Connection`` token ``upgrade`` (comma-separated lists, names and tokens case-insensitive).

    ``headers`` is a Starlette ``Headers``, a dict, or a list of ``(name, value)`` pairs (str or
    bytes).
    """
    return "websocket" in _tokens(_header_values(headers, b"upgrade")) and "upgrade" in _tokens(
        _header_values(headers, b"connection")
    )


def validate_websocket_request(
    headers: HeadersLike, method: str = "GET", http_version: str = "1.1"
) -> Any:
    """Check an upgrade request fully (RFC 6455 §4.2.1) and return the handshake ``Validation``.

    It is falsy on failure, with ``.status`` (400, or 426 for an unsupported version) and
    ``.reason``; on success ``.accept`` is the ``Sec-WebSocket-Accept`` value and
    ``.subprotocols`` / ``.extensions`` what the client offered.
    """
    return _handshake.validate_request(method, http_version, _raw_headers(headers))
