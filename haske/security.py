"""Who may open a WebSocket: the Origin check and the auth hook, both run before ``accept()``.

Browsers send cookies with a WebSocket handshake to any site and do not apply CORS to it, so a
page on another site could talk to an endpoint with the user's session (cross-site WebSocket
hijacking). Haske's routes therefore accept only their own site's pages by default: the
``Origin`` header must name the host the request was sent to (the ``Host`` header, whatever the
scheme), or be in the route's or app's ``allowed_origins``. A request without ``Origin`` comes
from a client that is not a browser page (a script, a mobile app, another server) and is let in;
those clients are not run by a third-party site with the user's cookies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.types import Scope

if TYPE_CHECKING:
    from haske.websocket import WebSocket

__all__ = ["AuthHook", "Deny", "OriginPolicy", "origin_allowed"]

#: ``auth=``: an async callable run before ``accept()``; what it returns becomes ``ws.user``, and
#: it refuses the connection by raising :class:`Deny`.
AuthHook = Callable[["WebSocket"], Awaitable[Any]]

_DEFAULT_PORTS = (":80", ":443")


class Deny(Exception):
    """Refuse a WebSocket handshake: the client gets HTTP ``status`` with ``reason`` as the body.

    Raise it from an ``auth=`` hook:

    ```python
    async def auth(ws):
        user = await users.from_token(ws.query_params.get("token"))
        if user is None:
            raise Deny(401, "login required", headers={"WWW-Authenticate": "Bearer"})
        return user
    ```

    An ASGI server without the denial-response extension (``websocket.http.response``; every
    uvicorn implementation has it) can only answer a refused handshake with 403.
    """

    def __init__(
        self,
        status: int = 403,
        reason: str = "",
        *,
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None = None,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"a handshake is denied with a 4xx or 5xx status, got {status}")
        self.status = status
        self.reason = reason or _phrase(status)
        self.headers = headers
        super().__init__(status, self.reason)

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.reason}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Refused"


def _authority(netloc: str) -> str:
    # Browsers leave out a default port, and so do most Host headers; an explicit one means the
    # same thing.
    netloc = netloc.lower()
    for port in _DEFAULT_PORTS:
        if netloc.endswith(port):
            return netloc[: -len(port)]
    return netloc


def _normalize(origin: str) -> str:
    if origin in ("*", "null"):
        return origin
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise ValueError(
            f"an allowed origin is 'scheme://host[:port]' (like 'https://example.com'), "
            f"'null' or '*', got {origin!r}"
        )
    return f"{parts.scheme.lower()}://{_authority(parts.netloc)}"


class OriginPolicy:
    """Which ``Origin`` headers a route accepts: its own host's, plus ``allowed_origins``.

    ``allowed_origins`` holds exact origins (``"https://app.example.com"``; scheme and host are
    compared without regard to case, a default port may be left out), ``"null"`` for pages
    without an origin of their own (sandboxed frames, ``file:`` pages), or ``"*"`` to accept any
    origin. ``ValueError`` for anything else, such as a bare host name.
    """

    __slots__ = ("allow_all", "origins")

    def __init__(self, allowed_origins: Iterable[str] = ()) -> None:
        if isinstance(allowed_origins, str):
            raise TypeError("allowed_origins is a list of origins, not one str")
        normalized = {_normalize(origin) for origin in allowed_origins}
        self.allow_all = "*" in normalized
        self.origins = frozenset(normalized - {"*"})

    def allows(self, scope: Scope) -> bool:
        """True when the request has no ``Origin``, its own host's, or an allowed one."""
        origin = host = None
        for name, value in scope.get("headers") or ():
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        if origin is None or self.allow_all:
            return True
        try:
            normalized = _normalize(origin.strip())
        except ValueError:
            return False
        if normalized in self.origins:
            return True
        if host is None or normalized == "null":
            return False
        return normalized.partition("://")[2] == _authority(host.strip())

    def __repr__(self) -> str:
        allowed = ["*"] if self.allow_all else sorted(self.origins)
        return f"OriginPolicy(same origin + {allowed!r})"


#: Same origin only: what a route gets when neither it nor its app allows more.
SAME_ORIGIN = OriginPolicy()


def origin_allowed(scope: Scope, allowed_origins: Sequence[str] = ()) -> bool:
    """The check Haske's routes make, for endpoints of your own (a plain Starlette route)."""
    return OriginPolicy(allowed_origins).allows(scope)
