"""Fuzz the opening handshake: parse, validate and answer an upgrade request on both twins.

Usage: python fuzz/fuzz_handshake.py [libFuzzer options] [corpus dir...]

The input is the request head as the client sent it. Checked on every input: ``parse_request``
raises nothing but ``HandshakeError``, ``validate_request`` nothing at all, ``build_response`` and
``build_rejection`` nothing but ``ValueError``; and the twins agree field by field, down to the
status and reason of every refusal and the bytes of every response.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import common

with common.instrumented():
    from haske.exceptions import HandshakeError

    BACKENDS = common.backends("handshake")

REFERENCE = "python"
REQUEST_FIELDS = ("method", "target", "path", "query", "http_version", "headers", "head_size")
VALIDATION_FIELDS = ("ok", "status", "reason", "key", "accept", "subprotocols", "extensions")
#: Headers the response builds itself; the others are echoed back as extra headers.
OWN_HEADERS = {b"upgrade", b"connection", b"sec-websocket-accept"}


def outcome(allowed: tuple[type[Exception], ...], function: Callable[..., Any], *args: Any) -> Any:
    """A call's result as plain data, or the details of an exception it is allowed to raise."""
    try:
        result = function(*args)
    except HandshakeError as exc:
        if HandshakeError not in allowed:
            raise
        return ("HandshakeError", exc.status, exc.reason)
    except ValueError as exc:
        if ValueError not in allowed:
            raise
        return ("ValueError", str(exc))
    for fields in (REQUEST_FIELDS, VALIDATION_FIELDS):
        if hasattr(result, fields[-1]):
            return {name: getattr(result, name) for name in fields}
    return result


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of a header, as text that may hold any character."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def calls(raw: bytes) -> list[tuple[str, Any]]:
    """Every step of one handshake on the reference twin, as (name, arguments) to replay."""
    steps: list[tuple[str, Any]] = [
        ("parse_request", (raw,)),
        ("parse_request", (bytearray(raw),)),
        ("parse_request", (memoryview(raw),)),
    ]
    parsed = outcome((HandshakeError,), BACKENDS[REFERENCE].parse_request, raw)
    if not isinstance(parsed, dict):
        return steps
    headers = parsed["headers"]
    steps.append(("validate_request", (parsed["method"], parsed["http_version"], headers)))
    verdict = outcome((), BACKENDS[REFERENCE].validate_request, *steps[-1][1])
    # The percent-decoded path can hold CR, LF and NUL: header injection attempts.
    extra = [(n, v) for n, v in headers if n.lower() not in OWN_HEADERS]
    extra.append((b"X-Path", parsed["path"].encode()))
    offered = verdict["subprotocols"]
    steps += [
        ("build_response", (verdict["accept"], offered[0] if offered else None, None, extra)),
        (
            "build_response",
            (
                parsed["path"],
                header(headers, b"sec-websocket-protocol"),
                header(headers, b"sec-websocket-extensions"),
                [],
            ),
        ),
        ("build_rejection", (verdict["status"], verdict["reason"], extra, parsed["query"])),
        ("build_rejection", (426, parsed["path"], [], b"")),
    ]
    if (key := header(headers, b"sec-websocket-key")) is not None:
        steps.append(("websocket_handshake", (key,)))
    return steps


ALLOWED = {
    "parse_request": (HandshakeError,),
    "validate_request": (),
    "build_response": (ValueError,),
    "build_rejection": (ValueError,),
    "websocket_handshake": (),
}


def test_one_input(raw: bytes) -> None:
    logs: dict[str, list[Any]] = {name: [] for name in BACKENDS}
    for name, args in calls(raw):
        for backend, module in BACKENDS.items():
            logs[backend].append((name, outcome(ALLOWED[name], getattr(module, name), *args)))
    for backend, log in logs.items():
        common.same(backend, log, REFERENCE, logs[REFERENCE])


if __name__ == "__main__":
    print("handshake backends:", common.describe(BACKENDS), flush=True)
    common.main(test_one_input, sys.argv)
