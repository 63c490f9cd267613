"""The RFC 6455 §4.2 opening handshake on every built backend, and the twins compared."""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haske import _backends
from haske.exceptions import HandshakeError

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

VALID_HEADERS = [
    (b"Host", b"server.example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", KEY.encode()),
    (b"Origin", b"http://example.com"),
    (b"Sec-WebSocket-Version", b"13"),
]


def head(*lines: bytes, request_line: bytes = b"GET /chat HTTP/1.1") -> bytes:
    return b"\r\n".join([request_line, *lines]) + b"\r\n\r\n"


def header_lines(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name + b": " + value for name, value in headers]


REQUEST = head(*header_lines(VALID_HEADERS))


def replaced(name: bytes, value: bytes | None) -> list[tuple[bytes, bytes]]:
    """VALID_HEADERS with every `name` header dropped, then `value` added when given."""
    headers = [(n, v) for n, v in VALID_HEADERS if n.lower() != name.lower()]
    return headers if value is None else [*headers, (name, value)]


def refused(excinfo: pytest.ExceptionInfo[HandshakeError]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.reason


# Accept key


def test_accept_key_matches_rfc_6455_section_1_3(handshake_impl: ModuleType) -> None:
    assert handshake_impl.websocket_handshake(KEY) == ACCEPT


def test_accept_key_needs_a_string(handshake_impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        handshake_impl.websocket_handshake(KEY.encode())


def test_limits_are_exported(handshake_impl: ModuleType) -> None:
    assert (handshake_impl.MAX_REQUEST_HEAD, handshake_impl.MAX_HEADERS) == (16384, 100)


# Parsing


def test_parses_a_request_head(handshake_impl: ModuleType) -> None:
    data = head(
        *header_lines(VALID_HEADERS), request_line=b"GET /caf%C3%A9/a%20b?room=1&x=%20 HTTP/1.1"
    )
    request = handshake_impl.parse_request(data + b"\x81\x80frame")
    assert request.method == "GET"
    assert request.target == b"/caf%C3%A9/a%20b?room=1&x=%20"
    assert request.path == "/café/a b"
    assert request.query == b"room=1&x=%20"
    assert request.http_version == "1.1"
    assert request.headers == VALID_HEADERS
    assert request.head_size == len(data)
    assert repr(request) == "<Request GET b'/caf%C3%A9/a%20b?room=1&x=%20' HTTP/1.1 (6 headers)>"


def test_header_names_keep_their_case_and_values_lose_surrounding_whitespace(
    handshake_impl: ModuleType,
) -> None:
    request = handshake_impl.parse_request(head(b"x-ONE:  \t spaced out \t", b"Empty:"))
    assert request.headers == [(b"x-ONE", b"spaced out"), (b"Empty", b"")]


def test_accepts_bare_lf_line_ends_and_leading_blank_lines(handshake_impl: ModuleType) -> None:
    data = b"\r\n\nGET / HTTP/1.0\nHost: a\n\n"
    request = handshake_impl.parse_request(data)
    assert (request.http_version, request.headers, request.head_size) == (
        "1.0",
        [(b"Host", b"a")],
        len(data),
    )


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_accepts_bytes_like_input(handshake_impl: ModuleType, kind: type) -> None:
    assert handshake_impl.parse_request(kind(REQUEST)).headers == VALID_HEADERS


@pytest.mark.parametrize("data", ["GET / HTTP/1.1\r\n\r\n", None, 42, [71, 69, 84]])
def test_refuses_non_bytes_input(handshake_impl: ModuleType, data: object) -> None:
    with pytest.raises(TypeError, match="bytes, bytearray or memoryview"):
        handshake_impl.parse_request(data)


def test_every_prefix_of_a_head_is_incomplete(handshake_impl: ModuleType) -> None:
    for end in range(len(REQUEST)):
        assert handshake_impl.parse_request(REQUEST[:end]) is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET /chat HTTP/2.0\r\n\r\n",
        b"GET /chat HTTP/1.2\r\n\r\n",
        b"GET  /chat HTTP/1.1\r\n\r\n",
        b"GET /chat  HTTP/1.1\r\n\r\n",
        b"GET /chat HTTP/1.1 \r\n\r\n",
        b" GET /chat HTTP/1.1\r\n\r\n",
        b"G(T /chat HTTP/1.1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET /a\x7f HTTP/1.1\r\n\r\n",
        b"GET /chat HTTP/1.1\rX\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nHo(st: a\r\n\r\n",
        b"GET /chat HTTP/1.1\r\n: a\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nHost: a\r\n\rX",
        b"\rGET /chat HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_heads_are_400(handshake_impl: ModuleType, data: bytes) -> None:
    with pytest.raises(HandshakeError) as excinfo:
        handshake_impl.parse_request(data)
    assert refused(excinfo) == (400, "malformed HTTP request")


def test_at_most_100_headers(handshake_impl: ModuleType) -> None:
    lines = [b"X-%d: %d" % (i, i) for i in range(100)]
    assert len(handshake_impl.parse_request(head(*lines)).headers) == 100
    with pytest.raises(HandshakeError) as excinfo:
        handshake_impl.parse_request(head(*lines, b"X-Last: 1"))
    assert refused(excinfo) == (400, "more than 100 headers")


def test_head_of_at_most_16_kib(handshake_impl: ModuleType) -> None:
    start = b"GET / HTTP/1.1\r\nX-Big: "
    filler = b"a" * (16384 - len(start) - 4)
    assert handshake_impl.parse_request(start + filler + b"\r\n\r\n").head_size == 16384
    assert handshake_impl.parse_request(start + filler + b"aaaa") is None
    for data in (
        start + filler + b"aaaaa",
        start + filler + b"a\r\n\r\n",
        start + b"a" * (1 << 20),
    ):
        with pytest.raises(HandshakeError) as excinfo:
            handshake_impl.parse_request(data)
        assert refused(excinfo) == (431, "request head is larger than 16384 bytes")


# Validation: RFC 6455 §4.2.1, one rule at a time


def test_accepts_the_rfc_example(handshake_impl: ModuleType) -> None:
    request = handshake_impl.parse_request(REQUEST)
    verdict = handshake_impl.validate_request(request.method, request.http_version, request.headers)
    assert verdict
    assert (verdict.ok, verdict.status, verdict.reason) == (True, 101, "")
    assert (verdict.key, verdict.accept) == (KEY, ACCEPT)
    assert (verdict.subprotocols, verdict.extensions) == ([], [])
    assert repr(verdict) == f"<Validation 101 ok key='{KEY}'>"


def added(name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    return [*VALID_HEADERS, (name, value)]


NOT_GET = (400, "method must be GET")
OLD_HTTP = (400, "HTTP/1.1 or later is required")
NO_HOST = (400, "missing Host header")
MANY_HOSTS = (400, "more than one Host header")
NO_UPGRADE = (400, "Upgrade header must include websocket")
NO_CONNECTION = (400, "Connection header must include upgrade")
BAD_VERSION = (426, "Sec-WebSocket-Version must be 13")
NO_KEY = (400, "missing Sec-WebSocket-Key header")
MANY_KEYS = (400, "more than one Sec-WebSocket-Key header")
BAD_KEY = (400, "Sec-WebSocket-Key must be base64 of 16 bytes")

RULES = [
    ("POST", "1.1", VALID_HEADERS, NOT_GET),
    ("get", "1.1", VALID_HEADERS, NOT_GET),
    ("GET", "1.0", VALID_HEADERS, OLD_HTTP),
    ("GET", "0.9", VALID_HEADERS, OLD_HTTP),
    ("GET", "HTTP/1.1", VALID_HEADERS, OLD_HTTP),
    ("GET", "1.1", replaced(b"Host", None), NO_HOST),
    ("GET", "1.1", added(b"host", b"b"), MANY_HOSTS),
    ("GET", "1.1", replaced(b"Upgrade", None), NO_UPGRADE),
    ("GET", "1.1", replaced(b"Upgrade", b"h2c"), NO_UPGRADE),
    ("GET", "1.1", replaced(b"Upgrade", b"websocket2"), NO_UPGRADE),
    ("GET", "1.1", replaced(b"Connection", None), NO_CONNECTION),
    ("GET", "1.1", replaced(b"Connection", b"keep-alive"), NO_CONNECTION),
    ("GET", "1.1", replaced(b"Connection", b"upgrade-it"), NO_CONNECTION),
    ("GET", "1.1", replaced(b"Sec-WebSocket-Version", None), BAD_VERSION),
    ("GET", "1.1", replaced(b"Sec-WebSocket-Version", b"8"), BAD_VERSION),
    ("GET", "1.1", replaced(b"Sec-WebSocket-Version", b"13, 8"), BAD_VERSION),
    ("GET", "1.1", added(b"Sec-WebSocket-Version", b"13"), BAD_VERSION),
    ("GET", "1.1", replaced(b"Sec-WebSocket-Key", None), NO_KEY),
    ("GET", "1.1", added(b"Sec-WebSocket-Key", KEY.encode()), MANY_KEYS),
    ("GET", "1.1", replaced(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZQ=="), BAD_KEY),
    ("GET", "1.1", replaced(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ"), BAD_KEY),
    ("GET", "1.1", replaced(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZSE="), BAD_KEY),
    ("GET", "1.1", replaced(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25j*Q=="), BAD_KEY),
]


@pytest.mark.parametrize(("method", "version", "headers", "refusal"), RULES)
def test_each_rule_has_its_status_and_reason(
    handshake_impl: ModuleType,
    method: str,
    version: str,
    headers: list[tuple[bytes, bytes]],
    refusal: tuple[int, str],
) -> None:
    verdict = handshake_impl.validate_request(method, version, headers)
    assert not verdict
    assert (verdict.ok, verdict.status, verdict.reason) == (False, *refusal)
    assert (verdict.key, verdict.accept, verdict.subprotocols, verdict.extensions) == (
        "",
        "",
        [],
        [],
    )


@pytest.mark.parametrize(
    "headers",
    [
        [(name.lower(), value) for name, value in VALID_HEADERS],
        [(name.upper(), value) for name, value in VALID_HEADERS],
        replaced(b"Upgrade", b"h2c, WebSocket"),
        [*replaced(b"Upgrade", b"h2c"), (b"Upgrade", b"websocket")],
        replaced(b"Connection", b"keep-alive, Upgrade"),
        replaced(b"Connection", b"keep-alive,upgrade"),
        replaced(b"Sec-WebSocket-Version", b" 13 "),
        replaced(b"Sec-WebSocket-Key", b" " + KEY.encode() + b"\t"),
    ],
)
def test_tokens_and_names_are_case_insensitive(
    handshake_impl: ModuleType, headers: list[tuple[bytes, bytes]]
) -> None:
    assert handshake_impl.validate_request("GET", "1.1", headers).accept == ACCEPT


@pytest.mark.parametrize("version", ["1.1", "1.2", "2", "2.0", "3"])
def test_later_http_versions_are_accepted(handshake_impl: ModuleType, version: str) -> None:
    assert handshake_impl.validate_request("GET", version, VALID_HEADERS)


def test_the_key_is_any_base64_of_16_bytes(handshake_impl: ModuleType) -> None:
    for key in ["AAAAAAAAAAAAAAAAAAAAAA==", "/+/+/+/+/+/+/+/+/+/+/w==", "dGhlIHNhbXBsZSBub25jZR=="]:
        headers = replaced(b"Sec-WebSocket-Key", key.encode())
        verdict = handshake_impl.validate_request("GET", "1.1", headers)
        assert verdict.key == key
        assert verdict.accept == handshake_impl.websocket_handshake(key)


def test_refusal_repr_names_the_reason(handshake_impl: ModuleType) -> None:
    verdict = handshake_impl.validate_request("PUT", "1.1", VALID_HEADERS)
    assert repr(verdict) == "<Validation 400 'method must be GET'>"


@pytest.mark.parametrize(
    "headers",
    [[b"Host"], [(b"Host",)], [(b"Host", "a")], [("Host", b"a")], [(b"a", b"b", b"c")], 5, [5]],
)
def test_headers_must_be_pairs_of_bytes(handshake_impl: ModuleType, headers: Any) -> None:
    with pytest.raises(TypeError):
        handshake_impl.validate_request("GET", "1.1", headers)


def test_method_and_version_must_be_strings(handshake_impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        handshake_impl.validate_request(b"GET", "1.1", VALID_HEADERS)
    with pytest.raises(TypeError):
        handshake_impl.validate_request("GET", 1.1, VALID_HEADERS)


def test_headers_may_be_lists_and_any_iterable(handshake_impl: ModuleType) -> None:
    pairs = iter([[name, value] for name, value in VALID_HEADERS])
    assert handshake_impl.validate_request("GET", "1.1", pairs)


# Subprotocol and extension offers


def test_subprotocol_offers_are_collected_in_order(handshake_impl: ModuleType) -> None:
    headers = [
        *VALID_HEADERS,
        (b"Sec-WebSocket-Protocol", b"chat, , superchat"),
        (b"sec-websocket-protocol", b"v2.json"),
    ]
    verdict = handshake_impl.validate_request("GET", "1.1", headers)
    assert verdict.subprotocols == ["chat", "superchat", "v2.json"]


@pytest.mark.parametrize("value", [b"chat, a b", b"chat/1", b'"chat"', b"caf\xc3\xa9"])
def test_subprotocols_must_be_tokens(handshake_impl: ModuleType, value: bytes) -> None:
    verdict = handshake_impl.validate_request(
        "GET", "1.1", [*VALID_HEADERS, (b"Sec-WebSocket-Protocol", value)]
    )
    assert (verdict.ok, verdict.status, verdict.reason) == (
        False,
        400,
        "invalid Sec-WebSocket-Protocol header",
    )


@pytest.mark.parametrize(
    ("values", "offers"),
    [
        ([b""], []),
        ([b"permessage-deflate"], [("permessage-deflate", [])]),
        (
            [b"permessage-deflate; client_max_window_bits, permessage-deflate; no_takeover"],
            [
                ("permessage-deflate", [("client_max_window_bits", None)]),
                ("permessage-deflate", [("no_takeover", None)]),
            ],
        ),
        (
            [b'x-a ; p = 1 ;q="two"; r="t\\hree"', b", x-b,"],
            [("x-a", [("p", "1"), ("q", "two"), ("r", "three")]), ("x-b", [])],
        ),
    ],
)
def test_extension_offers_are_parsed(
    handshake_impl: ModuleType, values: list[bytes], offers: list[Any]
) -> None:
    headers = [*VALID_HEADERS, *((b"Sec-WebSocket-Extensions", value) for value in values)]
    assert handshake_impl.validate_request("GET", "1.1", headers).extensions == offers


@pytest.mark.parametrize(
    "value",
    [
        *b";a a; a;;b a;=1 a;b= a;b=c,d; a,b;c;d=\x01".split(),
        *(b"a; b=" + value for value in [b"c d", b'"', b'""', b'"c d"', b'"c\\', b'"c"d']),
        b'a; b="\xc3\xa9"',
        b"a b",
    ],
)
def test_malformed_extension_offers_are_400(handshake_impl: ModuleType, value: bytes) -> None:
    verdict = handshake_impl.validate_request(
        "GET", "1.1", [*VALID_HEADERS, (b"Sec-WebSocket-Extensions", value)]
    )
    assert (verdict.status, verdict.reason) == (400, "invalid Sec-WebSocket-Extensions header")


# Responses


def test_builds_the_switching_protocols_response(handshake_impl: ModuleType) -> None:
    assert handshake_impl.build_response(ACCEPT) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + ACCEPT.encode() + b"\r\n\r\n"
    )
    assert handshake_impl.build_response(
        ACCEPT, "chat", "permessage-deflate", [(b"Set-Cookie", b"a=1"), (b"X-Server", b"haske")]
    ) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + ACCEPT.encode() + b"\r\n"
        b"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
        b"Set-Cookie: a=1\r\nX-Server: haske\r\n\r\n"
    )


def test_an_empty_extensions_answer_is_left_out(handshake_impl: ModuleType) -> None:
    assert handshake_impl.build_response(ACCEPT, None, "") == handshake_impl.build_response(ACCEPT)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((ACCEPT + "\r\nSet-Cookie: x",), "must not contain CR, LF or NUL"),
        ((ACCEPT, None, "permessage-deflate\n"), "must not contain CR, LF or NUL"),
        ((ACCEPT, None, "x\x00"), "must not contain CR, LF or NUL"),
        (("café",), "must be ASCII"),
        ((ACCEPT, "chat\r\n"), "subprotocol must be a token"),
        ((ACCEPT, ""), "subprotocol must be a token"),
        ((ACCEPT, None, None, [(b"X-A", b"1\r\nSet-Cookie: x")]), "must not contain CR, LF or NUL"),
        ((ACCEPT, None, None, [(b"X-A", b"1\x00")]), "must not contain CR, LF or NUL"),
        ((ACCEPT, None, None, [(b"X-A\r\nX-B", b"1")]), "must not contain CR, LF or NUL"),
        ((ACCEPT, None, None, [(b"X-A\n", b"1")]), "must not contain CR, LF or NUL"),
        ((ACCEPT, None, None, [(b"", b"1")]), "must not be empty"),
        ((ACCEPT, None, None, [(b"X A", b"1")]), "must be a token"),
        ((ACCEPT, None, None, [(b"X:A", b"1")]), "must be a token"),
    ],
)
def test_header_injection_is_refused(
    handshake_impl: ModuleType, arguments: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        handshake_impl.build_response(*arguments)


def test_builds_a_426_rejection_with_the_supported_version(handshake_impl: ModuleType) -> None:
    verdict = handshake_impl.validate_request(
        "GET", "1.1", replaced(b"Sec-WebSocket-Version", b"8")
    )
    assert handshake_impl.build_rejection(verdict.status, verdict.reason) == (
        b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\n"
        b"Connection: close\r\n\r\nSec-WebSocket-Version must be 13"
    )


def test_rejection_body_headers_and_framing(handshake_impl: ModuleType) -> None:
    response = handshake_impl.build_rejection(
        403,
        "forbidden origin",
        [
            (b"content-type", b"application/json"),
            (b"Content-Length", b"99"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"keep-alive"),
            (b"X-Why", b"origin"),
        ],
        b'{"error": "origin"}',
    )
    assert response == (
        b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nX-Why: origin\r\n"
        b'Content-Length: 19\r\nConnection: close\r\n\r\n{"error": "origin"}'
    )
    assert handshake_impl.build_rejection(400, "café").endswith(
        b"Content-Length: 5\r\nConnection: close\r\n\r\ncaf\xc3\xa9"
    )
    assert handshake_impl.build_rejection(499, "x", body=bytearray(b"y")).startswith(
        b"HTTP/1.1 499 \r\n"
    )


@pytest.mark.parametrize("status", [101, 199, 600, -1, 0])
def test_rejection_status_must_be_a_final_status(handshake_impl: ModuleType, status: int) -> None:
    with pytest.raises(ValueError, match="between 200 and 599"):
        handshake_impl.build_rejection(status, "no")


def test_rejection_refuses_injection_and_wrong_types(handshake_impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        handshake_impl.build_rejection(400, "no", [(b"X", b"a\r\nb")])
    with pytest.raises(TypeError):
        handshake_impl.build_rejection(400, "no", (), "body")
    with pytest.raises(TypeError):
        handshake_impl.build_rejection("400", "no")
    with pytest.raises(OverflowError):
        handshake_impl.build_rejection(1 << 64, "no")


# The twins give the same result on every input

PAIRS = list(itertools.combinations(_backends.available("handshake"), 2))
REQUEST_FIELDS = ("method", "target", "path", "query", "http_version", "headers", "head_size")
VALIDATION_FIELDS = ("ok", "status", "reason", "key", "accept", "subprotocols", "extensions")


def outcome(function: Any, *arguments: Any) -> Any:
    """A call's result as plain data, or its exception's type and details."""
    try:
        result = function(*arguments)
    except HandshakeError as exc:
        return HandshakeError, exc.status, exc.reason
    except ValueError as exc:  # the twins word these alike; TypeErrors only share the type
        return type(exc), str(exc)
    except Exception as exc:
        return type(exc)
    for fields in (REQUEST_FIELDS, VALIDATION_FIELDS):
        if hasattr(result, fields[-1]):
            return {name: getattr(result, name) for name in fields}
    return result


NAMES = [
    *(name for name, _ in VALID_HEADERS),
    b"Sec-WebSocket-Protocol",
    b"Sec-WebSocket-Extensions",
    b"sec-websocket-key",
]
VALUE_PIECES = [
    *(value for _, value in VALID_HEADERS),
    *b"keep-alive 8 chat permessage-deflate x=1 a ==".split(),
    *(bytes([byte]) for byte in b'=;, \t"\\\r\n\x7f\x01\xff'),
    b"\xc3\xa9",
]
TARGET_PIECES = [
    *b"/ chat ? & + %20 %C3%A9 %ff %e2%82 % %4 %zz".split(),
    b"\xc3\xa9",
    b"\xff",
    b" ",
]
LINE_ENDS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""]

header_names = st.sampled_from(NAMES) | st.binary(max_size=6)
header_values = st.lists(st.sampled_from(VALUE_PIECES), max_size=6).map(b"".join)
headers = st.lists(st.tuples(header_names, header_values | st.binary(max_size=8)), max_size=8)
header_sets = st.tuples(st.booleans(), headers).map(
    lambda drawn: (VALID_HEADERS if drawn[0] else []) + drawn[1]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Upgrade requests, mostly almost valid, often cut short or with a byte changed."""
    request_line = b"".join(
        [
            draw(st.sampled_from([b"", b"", b"\r\n", b"\n"])),
            draw(st.sampled_from([b"GET", b"GET", b"POST", b"get", b"G(T", b""])),
            draw(st.sampled_from([b" ", b" ", b"  ", b""])),
            draw(st.lists(st.sampled_from(TARGET_PIECES), max_size=6).map(b"".join)),
            draw(st.sampled_from([b" ", b" ", b"  ", b""])),
            draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1."])),
        ]
    )
    separators = st.sampled_from([b": ", b":", b" : ", b":\t"])
    lines = [request_line] + [name + draw(separators) + value for name, value in draw(header_sets)]
    data = b"".join(line + draw(st.sampled_from(LINE_ENDS)) for line in [*lines, b""])
    if data and draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + draw(st.binary(max_size=2)) + data[at + 1 :]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


text = st.text(st.characters(codec="utf-8") | st.sampled_from("\r\n\x00é\udc80"), max_size=12)
odd_headers = st.sampled_from([None, [(b"X",)], [("X", b"1")]])
extra_headers = st.lists(st.tuples(header_names, header_values), max_size=3) | odd_headers
statuses = st.integers(-5, 700) | st.sampled_from([426, 1 << 70, True])
bodies = st.sampled_from([b"", b"body", bytearray(b"ba"), "s", None])
methods = st.sampled_from(["GET", "GET", "POST", "get", "G\udc80T"])
versions = st.sampled_from(
    ["1.1", "1.1", "1.0", "2", "01.1", "1.", "1.1.1", "\u0661.\u0661", "1.1\udc80", ""]
)


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=["-".join(pair) for pair in PAIRS])
class TestTwinsAgree:
    """Field by field, including the exception type, status and reason of every refusal."""

    __test__ = bool(PAIRS)  # with a single backend there is nothing to compare

    @staticmethod
    def modules(first: str, second: str) -> tuple[ModuleType, ModuleType]:
        return _backends.load("handshake", first), _backends.load("handshake", second)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=requests())
    def test_parse_and_validate(self, first: str, second: str, data: bytes) -> None:
        a, b = self.modules(first, second)
        parsed = outcome(b.parse_request, data)
        assert outcome(a.parse_request, data) == parsed
        if isinstance(parsed, dict):
            arguments = (parsed["method"], parsed["http_version"], parsed["headers"])
            assert outcome(a.validate_request, *arguments) == outcome(
                b.validate_request, *arguments
            )

    @settings(max_examples=200, deadline=None)
    @given(data=st.binary(max_size=64))
    def test_parse_random_bytes(self, first: str, second: str, data: bytes) -> None:
        a, b = self.modules(first, second)
        for chunk in (data, b"GET / HTTP/1.1\r\n" + data):
            assert outcome(a.parse_request, chunk) == outcome(b.parse_request, chunk)

    @settings(max_examples=400, deadline=None)
    @given(method=methods, version=versions, fields=header_sets)
    def test_validate(
        self, first: str, second: str, method: str, version: str, fields: list[Any]
    ) -> None:
        a, b = self.modules(first, second)
        arguments = (method, version, fields)
        assert outcome(a.validate_request, *arguments) == outcome(b.validate_request, *arguments)

    @settings(max_examples=300, deadline=None)
    @given(
        accept=text,
        subprotocol=st.none() | text,
        extensions=st.none() | text,
        extra=extra_headers,
        status=statuses,
        body=bodies,
    )
    def test_responses(
        self,
        first: str,
        second: str,
        accept: str,
        subprotocol: str | None,
        extensions: str | None,
        extra: Any,
        status: int,
        body: Any,
    ) -> None:
        a, b = self.modules(first, second)
        arguments = (accept, subprotocol, extensions, extra)
        assert outcome(a.build_response, *arguments) == outcome(b.build_response, *arguments)
        rejection = (status, accept, extra, body)
        assert outcome(a.build_rejection, *rejection) == outcome(b.build_rejection, *rejection)
        assert outcome(a.websocket_handshake, accept) == outcome(b.websocket_handshake, accept)
