"""The RFC 6455 §4.2 opening handshake, server side: the pure-Python twin of ``haske._rust``.

The request parser follows httparse (the parser of the Rust twin) byte for byte, so both twins
accept, refuse and wait for the same inputs.
"""

from __future__ import annotations

import base64
import hashlib
import operator
import re
from collections.abc import Iterable, Sequence
from urllib.parse import unquote_to_bytes

from haske.exceptions import HandshakeError

__all__ = [
    "MAX_HEADERS",
    "MAX_REQUEST_HEAD",
    "Request",
    "Validation",
    "build_rejection",
    "build_response",
    "parse_request",
    "validate_request",
    "websocket_handshake",
]

#: The largest request head accepted, blank line included.
MAX_REQUEST_HEAD = 16384
#: The most header lines a request head may carry.
MAX_HEADERS = 100

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CR, _LF, _SP, _COLON = 13, 10, 32, 58

# Byte classes of httparse: RFC 9110 tchar, request-target bytes and field-value bytes.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]*")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_OWS = re.compile(rb"[ \t]*")
_FULL_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CLIENT_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")
_QUOTED_TEXT = re.compile(rb'[^"\\]*')

_HEAD_TOO_LARGE = (431, "request head is larger than 16384 bytes")
_TOO_MANY_HEADERS = (400, "more than 100 headers")
_MALFORMED = (400, "malformed HTTP request")
_NOT_GET = (400, "method must be GET")
_OLD_HTTP = (400, "HTTP/1.1 or later is required")
_NO_HOST = (400, "missing Host header")
_MANY_HOSTS = (400, "more than one Host header")
_NO_UPGRADE = (400, "Upgrade header must include websocket")
_NO_CONNECTION = (400, "Connection header must include upgrade")
_BAD_VERSION = (426, "Sec-WebSocket-Version must be 13")
_NO_KEY = (400, "missing Sec-WebSocket-Key header")
_MANY_KEYS = (400, "more than one Sec-WebSocket-Key header")
_BAD_KEY = (400, "Sec-WebSocket-Key must be base64 of 16 bytes")
_BAD_PROTOCOL = (400, "invalid Sec-WebSocket-Protocol header")
_BAD_EXTENSIONS = (400, "invalid Sec-WebSocket-Extensions header")

_NOT_PAIRS = "headers must be (name, value) pairs of bytes"

ExtensionOffer = tuple[str, list[tuple[str, str | None]]]


def websocket_handshake(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}")
    digest = hashlib.sha1(key.encode() + _GUID).digest()
    return base64.b64encode(digest).decode()


class Request:
    """A parsed request head. ``headers`` keeps the order and the names as sent."""

    __slots__ = ("method", "target", "path", "query", "http_version", "headers", "head_size")

    def __init__(
        self,
        method: str,
        target: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        head_size: int,
    ) -> None:
        raw_path, _, query = target.partition(b"?")
        self.method = method
        self.target = target
        self.path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.head_size = head_size

    def __repr__(self) -> str:
        return (
            f"<Request {self.method} {self.target!r} HTTP/{self.http_version}"
            f" ({len(self.headers)} headers)>"
        )


class Validation:
    """The verdict on an upgrade request; true when the upgrade can be accepted."""

    __slots__ = ("ok", "status", "reason", "key", "accept", "subprotocols", "extensions")

    def __init__(
        self,
        ok: bool,
        status: int,
        reason: str,
        key: str = "",
        accept: str = "",
        subprotocols: list[str] | None = None,
        extensions: list[ExtensionOffer] | None = None,
    ) -> None:
        self.ok = ok
        self.status = status
        self.reason = reason
        self.key = key
        self.accept = accept
        self.subprotocols = subprotocols if subprotocols is not None else []
        self.extensions = extensions if extensions is not None else []

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        if self.ok:
            return f"<Validation 101 ok key={self.key!r}>"
        return f"<Validation {self.status} {self.reason!r}>"


def _bytes_of(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray):
        return bytes(data)
    if isinstance(data, memoryview):
        return data.tobytes()
    raise TypeError(
        f"parse_request() expects bytes, bytearray or memoryview, not {type(data).__name__}"
    )


def parse_request(data: bytes | bytearray | memoryview) -> Request | None:
    """Parse an HTTP/1.1 request head; None while it is incomplete.

    Raises HandshakeError: 431 for a head over 16 KiB, 400 for more than 100 headers or a
    malformed request line or header.
    """
    data = _bytes_of(data)
    window = data[:MAX_REQUEST_HEAD]
    request = _parse_head(window)
    if request is None and len(data) > MAX_REQUEST_HEAD:
        raise HandshakeError(*_HEAD_TOO_LARGE)
    return request


def _run_end(pattern: re.Pattern[bytes], buf: bytes, pos: int) -> int:
    """Where the run of ``pattern`` bytes that starts at ``pos`` ends (the run may be empty)."""
    match = pattern.match(buf, pos)
    return match.end() if match else pos


def _malformed() -> HandshakeError:
    return HandshakeError(*_MALFORMED)


def _newline(buf: bytes, pos: int) -> int | None:
    """The position after a CRLF or LF at ``pos``; None when the buffer ends first."""
    end = len(buf)
    if pos >= end:
        return None
    if buf[pos] == _LF:
        return pos + 1
    if buf[pos] != _CR:
        raise _malformed()
    if pos + 1 >= end:
        return None
    if buf[pos + 1] != _LF:
        raise _malformed()
    return pos + 2


def _parse_head(buf: bytes) -> Request | None:
    """httparse's request parser: None for Partial, HandshakeError for an error."""
    end = len(buf)
    pos = 0
    while True:  # empty lines before the request line are skipped
        if pos >= end:
            return None
        if buf[pos] not in (_CR, _LF):
            break
        after = _newline(buf, pos)
        if after is None:
            return None
        pos = after

    stop = _run_end(_TOKEN, buf, pos)
    if stop == pos:
        raise _malformed()
    if stop >= end:
        return None
    if buf[stop] != _SP:
        raise _malformed()
    method = buf[pos:stop].decode("ascii")
    pos = stop + 1

    stop = _run_end(_TARGET, buf, pos)
    if stop >= end:
        return None
    if buf[stop] != _SP or stop == pos:
        raise _malformed()
    target = buf[pos:stop]
    try:
        target.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed() from None
    pos = stop + 1

    if end - pos >= 8:
        version = buf[pos : pos + 8]
        if version == b"HTTP/1.1":
            http_version = "1.1"
        elif version == b"HTTP/1.0":
            http_version = "1.0"
        else:
            raise _malformed()
        pos += 8
    else:
        if buf[pos:] != b"HTTP/1."[: end - pos]:
            raise _malformed()
        return None
    after = _newline(buf, pos)
    if after is None:
        return None
    pos = after

    headers: list[tuple[bytes, bytes]] = []
    while True:
        if pos >= end:
            return None
        if buf[pos] in (_CR, _LF):
            after = _newline(buf, pos)
            if after is None:
                return None
            return Request(method, target, http_version, headers, after)

        stop = _run_end(_TOKEN, buf, pos)
        if stop == pos:
            raise _malformed()
        if stop >= end:
            return None
        if buf[stop] != _COLON:
            raise _malformed()
        name = buf[pos:stop]
        pos = _run_end(_OWS, buf, stop + 1)
        if pos >= end:
            return None
        if buf[pos] in (_CR, _LF):
            value = b""
        else:
            stop = _run_end(_VALUE, buf, pos)
            if stop == pos:
                raise _malformed()
            if stop >= end:
                return None
            value = buf[pos:stop].rstrip(b" \t")
            pos = stop
            if buf[pos] not in (_CR, _LF):
                raise _malformed()
        after = _newline(buf, pos)
        if after is None:
            return None
        pos = after
        if len(headers) == MAX_HEADERS:
            raise HandshakeError(*_TOO_MANY_HEADERS)
        headers.append((name, value))


def _header_pairs(headers: Iterable[object]) -> list[tuple[bytes, bytes]]:
    pairs = []
    for item in headers:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(_NOT_PAIRS)
        name, value = item
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError(_NOT_PAIRS)
        pairs.append((name, value))
    return pairs


def _is_http11_or_later(version: str) -> bool:
    major, dot, minor = version.partition(".")

    def digits(part: str) -> bool:
        return part != "" and all(c in "0123456789" for c in part)

    if not digits(major) or (dot and not digits(minor)):
        return False
    major = major.lstrip("0")
    if major == "":
        return False
    if major == "1":
        return minor.strip("0") != ""
    return True


def _list_contains(values: list[bytes], token: bytes) -> bool:
    return any(
        item.strip(b" \t").lower() == token for value in values for item in value.split(b",")
    )


def _parse_subprotocols(values: list[bytes]) -> list[str] | None:
    subprotocols = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if not item:
                continue
            if not _FULL_TOKEN.fullmatch(item):
                return None
            subprotocols.append(item.decode("ascii"))
    return subprotocols


class _ExtensionParser:
    """RFC 6455 §9.1 extension offers in one header value."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def skip_ows(self) -> None:
        self.pos = _run_end(_OWS, self.buf, self.pos)

    def eat(self, char: bytes) -> bool:
        if self.buf[self.pos : self.pos + 1] == char:
            self.pos += 1
            return True
        return False

    def token(self) -> str | None:
        stop = _run_end(_TOKEN, self.buf, self.pos)
        token = self.buf[self.pos : stop]
        self.pos = stop
        return token.decode("ascii") if token else None

    def quoted_token(self) -> str | None:
        """A quoted-string whose unescaped content must be a token."""
        content = bytearray()
        buf = self.buf
        while True:
            stop = _run_end(_QUOTED_TEXT, buf, self.pos)
            chunk = buf[self.pos : stop]
            if any(not (b == 9 or 32 <= b <= 126) for b in chunk):
                return None
            content += chunk
            self.pos = stop
            if stop >= len(buf):
                return None
            self.pos += 1
            if buf[stop] == 0x22:  # the closing quote
                break
            if self.pos >= len(buf):
                return None
            escaped = buf[self.pos]
            if not (escaped == 9 or 32 <= escaped <= 126):
                return None
            content.append(escaped)
            self.pos += 1
        return content.decode("ascii") if _FULL_TOKEN.fullmatch(content) else None

    def parse_into(self, offers: list[ExtensionOffer]) -> bool:
        end = len(self.buf)
        while True:
            self.skip_ows()
            if self.pos >= end:
                return True
            if self.eat(b","):
                continue
            name = self.token()
            if name is None:
                return False
            params: list[tuple[str, str | None]] = []
            self.skip_ows()
            while self.eat(b";"):
                self.skip_ows()
                param = self.token()
                if param is None:
                    return False
                self.skip_ows()
                value: str | None = None
                if self.eat(b"="):
                    self.skip_ows()
                    value = self.quoted_token() if self.eat(b'"') else self.token()
                    if value is None:
                        return False
                self.skip_ows()
                params.append((param, value))
            offers.append((name, params))
            if self.pos < end and not self.eat(b","):
                return False


def _parse_extensions(values: list[bytes]) -> list[ExtensionOffer] | None:
    offers: list[ExtensionOffer] = []
    for value in values:
        if not _ExtensionParser(value).parse_into(offers):
            return None
    return offers


def validate_request(
    method: str, http_version: str, headers: Iterable[tuple[bytes, bytes]]
) -> Validation:
    """Check an upgrade request (RFC 6455 §4.2.1); never raises for a bad request."""
    if not isinstance(method, str):
        raise TypeError(f"method must be str, not {type(method).__name__}")
    if not isinstance(http_version, str):
        raise TypeError(f"http_version must be str, not {type(http_version).__name__}")
    hosts = 0
    found: dict[bytes, list[bytes]] = {
        b"upgrade": [],
        b"connection": [],
        b"sec-websocket-version": [],
        b"sec-websocket-key": [],
        b"sec-websocket-protocol": [],
        b"sec-websocket-extensions": [],
    }
    for name, value in _header_pairs(headers):
        name = name.lower()
        if name == b"host":
            hosts += 1
        elif name in found:
            found[name].append(value)

    refusal = None
    versions = found[b"sec-websocket-version"]
    keys = found[b"sec-websocket-key"]
    if method != "GET":
        refusal = _NOT_GET
    elif not _is_http11_or_later(http_version):
        refusal = _OLD_HTTP
    elif hosts != 1:
        refusal = _NO_HOST if hosts == 0 else _MANY_HOSTS
    elif not _list_contains(found[b"upgrade"], b"websocket"):
        refusal = _NO_UPGRADE
    elif not _list_contains(found[b"connection"], b"upgrade"):
        refusal = _NO_CONNECTION
    elif len(versions) != 1 or versions[0].strip(b" \t") != b"13":
        refusal = _BAD_VERSION
    elif len(keys) != 1:
        refusal = _NO_KEY if not keys else _MANY_KEYS
    elif not _CLIENT_KEY.fullmatch(keys[0].strip(b" \t")):
        refusal = _BAD_KEY
    if refusal is not None:
        return Validation(False, *refusal)

    subprotocols = _parse_subprotocols(found[b"sec-websocket-protocol"])
    if subprotocols is None:
        return Validation(False, *_BAD_PROTOCOL)
    extensions = _parse_extensions(found[b"sec-websocket-extensions"])
    if extensions is None:
        return Validation(False, *_BAD_EXTENSIONS)
    key = keys[0].strip(b" \t").decode("ascii")
    return Validation(True, 101, "", key, websocket_handshake(key), subprotocols, extensions)


def _check_name(name: bytes) -> None:
    if not name:
        raise ValueError("header name must not be empty")
    if b"\r" in name or b"\n" in name or b"\0" in name:
        raise ValueError("header name must not contain CR, LF or NUL")
    if not _FULL_TOKEN.fullmatch(name):
        raise ValueError("header name must be a token")


def _check_value(name: bytes, value: bytes) -> None:
    if b"\r" in value or b"\n" in value or b"\0" in value:
        raise ValueError(f"value of header {name.decode('ascii')} must not contain CR, LF or NUL")


def _check_text(name: str, value: str) -> bytes:
    if not value.isascii():
        raise ValueError(f"value of header {name} must be ASCII")
    encoded = value.encode("ascii")
    _check_value(name.encode("ascii"), encoded)
    return encoded


def _check_headers(pairs: list[tuple[bytes, bytes]]) -> None:
    for name, value in pairs:
        _check_name(name)
        _check_value(name, value)


def _is_token_text(text: str) -> bool:
    return text.isascii() and _FULL_TOKEN.fullmatch(text.encode("ascii")) is not None


def _require_text(argument: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be str, not {type(value).__name__}")
    return value


def build_response(
    accept: str,
    subprotocol: str | None = None,
    extensions: str | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] | None = (),
) -> bytes:
    """The ``101 Switching Protocols`` response; ValueError for a header that would break it."""
    accept = _require_text("accept", accept)
    if subprotocol is not None:
        subprotocol = _require_text("subprotocol", subprotocol)
    if extensions is not None:
        extensions = _require_text("extensions", extensions)
    pairs = _header_pairs(extra_headers) if extra_headers is not None else []

    accept_value = _check_text("Sec-WebSocket-Accept", accept)
    if subprotocol is not None and not _is_token_text(subprotocol):
        raise ValueError("subprotocol must be a token")
    encoded_extensions = _check_text("Sec-WebSocket-Extensions", extensions) if extensions else b""
    _check_headers(pairs)

    lines = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_value + b"\r\n"
    ]
    if subprotocol is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n")
    if encoded_extensions:
        lines.append(b"Sec-WebSocket-Extensions: " + encoded_extensions + b"\r\n")
    lines += [name + b": " + value + b"\r\n" for name, value in pairs]
    lines.append(b"\r\n")
    return b"".join(lines)


_REASON_PHRASES = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}

# Headers whose framing the rejection owns; a caller's copies are left out.
_FRAMING_HEADERS = (b"content-length", b"transfer-encoding", b"connection")
_INT64 = 1 << 63
# CPython's own words, so both twins say the same.
_TOO_LARGE_FOR_INT64 = "Python int too large to convert to C long"


def build_rejection(
    status: int,
    reason: str,
    extra_headers: Sequence[tuple[bytes, bytes]] | None = (),
    body: bytes | bytearray = b"",
) -> bytes:
    """A complete HTTP/1.1 response refusing the upgrade, with ``Connection: close``.

    The body defaults to the reason as UTF-8 text. ``Content-Type`` (and, for 426,
    ``Sec-WebSocket-Version``) are added unless ``extra_headers`` carries them.
    """
    status = operator.index(status)
    if not -_INT64 <= status < _INT64:
        raise OverflowError(_TOO_LARGE_FOR_INT64)
    encoded_reason = _require_text("reason", reason).encode("utf-8")
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError(f"body must be bytes or bytearray, not {type(body).__name__}")
    pairs = _header_pairs(extra_headers) if extra_headers is not None else []
    if not 200 <= status <= 599:
        raise ValueError("status must be between 200 and 599")
    _check_headers(pairs)
    body = bytes(body) or encoded_reason
    names = {name.lower() for name, _ in pairs}
    lines = [f"HTTP/1.1 {status} {_REASON_PHRASES.get(status, '')}\r\n".encode("ascii")]
    lines += [
        name + b": " + value + b"\r\n"
        for name, value in pairs
        if name.lower() not in _FRAMING_HEADERS
    ]
    if status == 426 and b"sec-websocket-version" not in names:
        lines.append(b"Sec-WebSocket-Version: 13\r\n")
    if b"content-type" not in names:
        lines.append(b"Content-Type: text/plain; charset=utf-8\r\n")
    lines.append(b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)
