"""The origin check and the auth hook: refused handshakes get an HTTP status before any upgrade,
and the handler never runs; on real servers, with raw sockets."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from clients import TIMEOUT, upgrade
from starlette.routing import WebSocketRoute

from haske import Haske
from haske.security import OriginPolicy, origin_allowed
from haske.ws import Deny, WebSocket, default_routes, websocket_route

SERVERS = ["haske", "websockets-sansio", "hypercorn"]


async def handshake(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send an upgrade request; the status, the response headers and, for a refusal, the body."""
    reader, writer, head = await upgrade(port, path, headers)
    try:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        response = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        body = b"" if status == 101 else await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    return status, response, body


class Seen:
    """What the handlers running on the server's thread saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def app(self, **options: Any) -> Haske:
        app = Haske(**options)

        @app.websocket("/ws")
        async def plain(ws: WebSocket) -> None:
            self.calls.append(("plain", ws.user))
            await ws.accept()
            await ws.send_json({"user": ws.user})
            await ws.close()

        return app


def without_denial_responses(app: Any) -> Any:
    """The app as a server without the denial-response extension would run it."""

    async def stripped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {}}
        await app(scope, receive, send)

    return stripped


def origin(port: int, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{port}"


@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_a_page_of_another_site_is_refused_before_the_handler_runs(
    serve: Any, ws_impl: str
) -> None:
    seen = Seen()
    server = serve(seen.app(), ws=ws_impl)
    status, _, body = await handshake(server.port, "/ws", {"Origin": "https://evil.example"})
    assert (status, body) == (403, b"origin not allowed")
    # Same host, other port: another origin.
    status, _, _ = await handshake(server.port, "/ws", {"Origin": "http://127.0.0.1:1"})
    assert status == 403
    assert seen.calls == []


@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_same_origin_in_any_scheme_and_no_origin_are_accepted(
    serve: Any, ws_impl: str
) -> None:
    seen = Seen()
    server = serve(seen.app(), ws=ws_impl)
    for headers in (
        {"Origin": origin(server.port)},
        {"Origin": origin(server.port, "https").upper()},
        {},  # not a browser page: a script, an app, another server
    ):
        status, _, _ = await handshake(server.port, "/ws", headers)
        assert status == 101, headers
    assert len(seen.calls) == 3


@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_the_apps_allow_list_and_a_routes_own(serve: Any, ws_impl: str) -> None:
    seen = Seen()
    app = seen.app(allowed_origins=["https://app.example", "null"])

    @app.websocket("/partners", allowed_origins=["https://partner.example:8443"])
    async def partners(ws: WebSocket) -> None:
        seen.calls.append(("partners", None))
        await ws.accept()
        await ws.close()

    @app.websocket("/public", allowed_origins=["*"])
    async def public(ws: WebSocket) -> None:
        seen.calls.append(("public", None))
        await ws.accept()
        await ws.close()

    @websocket_route("/security-tests/shared", allowed_origins=[])
    async def shared(ws: WebSocket) -> None:
        seen.calls.append(("shared", None))
        await ws.accept()
        await ws.close()

    server = serve(app, ws=ws_impl)
    try:
        cases = [
            ("/ws", "https://app.example", 101),
            ("/ws", "HTTPS://APP.EXAMPLE:443", 101),
            ("/ws", "null", 101),
            ("/ws", "https://partner.example:8443", 403),
            ("/partners", "https://partner.example:8443", 101),
            ("/partners", "https://app.example", 403),  # the route's list replaces the app's
            ("/partners", origin(server.port), 101),  # its own site, always
            ("/public", "https://anyone.example", 101),
            ("/public", "null", 101),
            ("/security-tests/shared", "https://app.example", 403),
            ("/security-tests/shared", origin(server.port), 101),
        ]
        for path, page, expected in cases:
            status, _, _ = await handshake(server.port, path, {"Origin": page})
            assert status == expected, (path, page)
    finally:
        default_routes.routes.remove(shared)
    assert [name for name, _ in seen.calls] == [
        "plain",
        "plain",
        "plain",
        "partners",
        "partners",
        "public",
        "public",
        "shared",
    ]


async def test_a_plain_starlette_app_gets_the_same_origin_default(serve: Any) -> None:
    from starlette.applications import Starlette

    seen = Seen()

    @websocket_route("/security-tests/starlette")
    async def route(ws: WebSocket) -> None:
        seen.calls.append(("route", None))
        await ws.accept()
        await ws.close()

    default_routes.routes.remove(route)
    assert isinstance(route, WebSocketRoute)
    server = serve(Starlette(routes=[route]))
    refused, _, _ = await handshake(server.port, route.path, {"Origin": "https://evil.example"})
    accepted, _, _ = await handshake(server.port, route.path, {"Origin": origin(server.port)})
    assert (refused, accepted) == (403, 101)
    assert len(seen.calls) == 1


@pytest.mark.parametrize("denial", [True, False], ids=["denial-response", "close"])
@pytest.mark.parametrize("ws_impl", SERVERS)
async def test_auth_refuses_with_its_status_or_attaches_the_user(
    serve: Any, ws_impl: str, denial: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def auth(ws: WebSocket) -> dict[str, str]:
        token = ws.query_params.get("token")
        if token == "boom":
            raise RuntimeError("the user store is down")
        if token is None:
            raise Deny(401, "login required", headers={"WWW-Authenticate": "Bearer"})
        if token != "secret":
            raise Deny(403)
        return {"name": "ana"}

    seen = Seen()
    app = seen.app(auth=auth)
    # Without the extension a refusal can only be a close before accept(): HTTP 403.
    server = serve(app if denial else without_denial_responses(app), ws=ws_impl)

    status, headers, body = await handshake(server.port, "/ws")
    assert status == (401 if denial else 403)
    if denial:
        assert (headers["www-authenticate"], body) == ("Bearer", b"login required")

    status, _, body = await handshake(server.port, "/ws?token=wrong")
    assert status == 403 and (body == b"Forbidden" or not denial)

    with caplog.at_level(logging.ERROR, logger="haske.ws"):
        status, _, _ = await handshake(server.port, "/ws?token=boom")
    assert status == (500 if denial else 403)
    assert "the user store is down" in caplog.text

    # The origin check runs first: a hostile page never reaches the auth hook.
    status, _, _ = await handshake(
        server.port, "/ws?token=secret", {"Origin": "https://evil.example"}
    )
    assert status == 403
    assert seen.calls == []

    status, _, _ = await handshake(server.port, "/ws?token=secret")
    assert status == 101
    assert seen.calls == [("plain", {"name": "ana"})]


async def test_a_routes_auth_replaces_the_apps(serve: Any) -> None:
    async def nobody(ws: WebSocket) -> None:
        raise Deny(403, "closed")

    async def guest(ws: WebSocket) -> str:
        return "guest"

    seen = Seen()
    app = seen.app(auth=nobody)

    @app.websocket("/lobby", auth=guest)
    async def lobby(ws: WebSocket) -> None:
        seen.calls.append(("lobby", ws.user))
        await ws.accept()
        await ws.close()

    server = serve(app)
    assert (await handshake(server.port, "/ws"))[0] == 403
    assert (await handshake(server.port, "/lobby"))[0] == 101
    assert seen.calls == [("lobby", "guest")]


def scope(origin: str | None, host: str = "example.com") -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "headers": headers}


def test_origin_matching_rules() -> None:
    assert origin_allowed(scope(None))
    assert origin_allowed(scope("https://example.com"))
    assert origin_allowed(scope("http://EXAMPLE.com:443"))  # a default port may be spelled out
    assert origin_allowed(scope("https://example.com"), []) and origin_allowed(scope("x"), ["*"])
    assert origin_allowed(scope("http://[::1]:8000", "[::1]:8000"))
    assert not origin_allowed(scope("https://example.com.evil.example"))
    assert not origin_allowed(scope("https://example.com:8443"))
    assert not origin_allowed(scope("null"))  # sandboxed frames and file: pages
    assert not origin_allowed(scope("not a url"))
    assert not origin_allowed({"type": "websocket", "headers": [(b"origin", b"https://a.b")]})
    assert origin_allowed(scope("https://b.example"), ["https://B.example/"])
    assert not origin_allowed(scope("https://b.example:444"), ["https://b.example"])


def test_settings_are_checked_when_they_are_made() -> None:
    for wrong in ("example.com", "https://example.com/app", "https://example.com?x=1"):
        with pytest.raises(ValueError, match="scheme://host"):
            OriginPolicy([wrong])
    with pytest.raises(TypeError, match="list of origins"):
        OriginPolicy("https://example.com")
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Deny(302)
    assert (Deny().status, Deny().reason, str(Deny(401))) == (
        403,
        "Forbidden",
        "HTTP 401: Unauthorized",
    )
    with pytest.raises(ValueError, match="scheme://host"):
        Haske(allowed_origins=["localhost:8000"])
    with pytest.raises(ValueError, match="scheme://host"):

        @websocket_route("/security-tests/never", allowed_origins=["*.example.com"])
        async def never(ws: WebSocket) -> None:
            pass  # pragma: no cover


CONFIGURATION = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


async def test_the_configuration_references_example_runs(serve: Any) -> None:
    blocks = re.findall(r"```python\n(.*?)```", CONFIGURATION.read_text(), re.DOTALL)
    (source,) = [block for block in blocks if "app = Haske(" in block]
    namespace: dict[str, Any] = {}
    exec(compile(source, str(CONFIGURATION), "exec"), namespace)  # noqa: S102
    server = serve(namespace["app"])
    status, headers, body = await handshake(server.port, "/widget")
    assert (status, headers["www-authenticate"], body) == (401, "Bearer", b"login required")
    status, _, _ = await handshake(
        server.port, "/widget?token=s3cret", {"Origin": "https://x.example"}
    )
    assert status == 101
