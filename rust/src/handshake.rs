//! The RFC 6455 §4.2 opening handshake, server side, without Python.
//!
//! `haske/_pure/handshake.py` is the reference twin of this module: every input gives the same
//! result, status and reason in both.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// The largest request head accepted, blank line included.
pub const MAX_REQUEST_HEAD: usize = 16384;
/// The most header lines a request head may carry.
pub const MAX_HEADERS: usize = 100;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request is refused: the HTTP status to answer and a short explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

pub const HEAD_TOO_LARGE: Refusal = refuse(431, "request head is larger than 16384 bytes");
pub const TOO_MANY_HEADERS: Refusal = refuse(400, "more than 100 headers");
pub const MALFORMED: Refusal = refuse(400, "malformed HTTP request");
pub const NOT_GET: Refusal = refuse(400, "method must be GET");
pub const OLD_HTTP: Refusal = refuse(400, "HTTP/1.1 or later is required");
pub const NO_HOST: Refusal = refuse(400, "missing Host header");
pub const MANY_HOSTS: Refusal = refuse(400, "more than one Host header");
pub const NO_UPGRADE: Refusal = refuse(400, "Upgrade header must include websocket");
pub const NO_CONNECTION: Refusal = refuse(400, "Connection header must include upgrade");
pub const BAD_VERSION: Refusal = refuse(426, "Sec-WebSocket-Version must be 13");
pub const NO_KEY: Refusal = refuse(400, "missing Sec-WebSocket-Key header");
pub const MANY_KEYS: Refusal = refuse(400, "more than one Sec-WebSocket-Key header");
pub const BAD_KEY: Refusal = refuse(400, "Sec-WebSocket-Key must be base64 of 16 bytes");
pub const BAD_PROTOCOL: Refusal = refuse(400, "invalid Sec-WebSocket-Protocol header");
pub const BAD_EXTENSIONS: Refusal = refuse(400, "invalid Sec-WebSocket-Extensions header");

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    BASE64.encode(sha1.digest().bytes())
}

/// A complete request head, borrowing from the bytes it was parsed from.
#[derive(Debug)]
pub struct Head<'b> {
    pub method: &'b str,
    pub target: &'b [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (httparse knows no other).
    pub minor_version: u8,
    pub headers: Vec<(&'b str, &'b [u8])>,
    /// Bytes the head occupies; whatever follows belongs to the connection.
    pub size: usize,
}

impl<'b> Head<'b> {
    /// The target up to `?`.
    pub fn raw_path(&self) -> &'b [u8] {
        split_target(self.target).0
    }

    /// The target after `?` (empty when there is none).
    pub fn query(&self) -> &'b [u8] {
        split_target(self.target).1
    }

    /// The path percent-decoded, then read as UTF-8 with U+FFFD for bad sequences.
    pub fn path(&self) -> String {
        String::from_utf8_lossy(&percent_decode(self.raw_path())).into_owned()
    }
}

fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    let mut parts = target.splitn(2, |&b| b == b'?');
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}

/// Parses a request head; `Ok(None)` means more bytes are needed.
///
/// Only the first [`MAX_REQUEST_HEAD`] bytes are looked at, so a head that does not end within
/// them is refused with 431 however much more data there is.
pub fn parse_head(data: &[u8]) -> Result<Option<Head<'_>>, Refusal> {
    let window = data.get(..MAX_REQUEST_HEAD).unwrap_or(data);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(window, &mut slots) {
        Ok(httparse::Status::Complete(size)) => {
            let (Some(method), Some(target), Some(minor_version)) =
                (request.method, request.path, request.version)
            else {
                return Err(MALFORMED);
            };
            Ok(Some(Head {
                method,
                target: target.as_bytes(),
                minor_version,
                headers: request.headers.iter().map(|h| (h.name, h.value)).collect(),
                size,
            }))
        }
        Ok(httparse::Status::Partial) if data.len() > MAX_REQUEST_HEAD => Err(HEAD_TOO_LARGE),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(TOO_MANY_HEADERS),
        Err(_) => Err(MALFORMED),
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        if let [b'%', high, low, after @ ..] = rest {
            if let (Some(high), Some(low)) = (hex_digit(*high), hex_digit(*low)) {
                decoded.push(high << 4 | low);
                rest = after;
                continue;
            }
        }
        decoded.push(byte);
        rest = tail;
    }
    Cow::Owned(decoded)
}

/// RFC 9110 `tchar`.
pub fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_token_byte(b))
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn list_contains(values: &[&[u8]], token: &[u8]) -> bool {
    values
        .iter()
        .flat_map(|value| value.split(|&b| b == b','))
        .any(|item| trim_ows(item).eq_ignore_ascii_case(token))
}

/// True for `major[.minor]` version strings of HTTP/1.1 or later ("1.1", "2", "3.0").
pub fn is_http11_or_later(version: &str) -> bool {
    let (major, minor) = match version.split_once('.') {
        Some((major, minor)) => (major, Some(minor)),
        None => (version, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !minor.is_none_or(digits) {
        return false;
    }
    match major.trim_start_matches('0') {
        "" => false,
        "1" => minor.is_some_and(|minor| minor.bytes().any(|b| b != b'0')),
        _ => true,
    }
}

fn is_client_key(key: &[u8]) -> bool {
    let is_base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    matches!(key, [chars @ .., b'=', b'='] if chars.len() == 22 && chars.iter().all(is_base64))
}

/// One offered extension: its name and its parameters, each with an optional value.
pub type ExtensionOffer = (String, Vec<(String, Option<String>)>);

/// What a valid upgrade request asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Offer {
    pub key: String,
    pub accept: String,
    pub subprotocols: Vec<String>,
    pub extensions: Vec<ExtensionOffer>,
}

/// Checks an upgrade request against RFC 6455 §4.2.1, in a fixed order.
pub fn validate(method: &str, version: &str, headers: &[(&[u8], &[u8])]) -> Result<Offer, Refusal> {
    let mut hosts = 0usize;
    let mut upgrade: Vec<&[u8]> = Vec::new();
    let mut connection: Vec<&[u8]> = Vec::new();
    let mut versions: Vec<&[u8]> = Vec::new();
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut protocols: Vec<&[u8]> = Vec::new();
    let mut extensions: Vec<&[u8]> = Vec::new();
    for &(name, value) in headers {
        let list = if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            continue;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            &mut upgrade
        } else if name.eq_ignore_ascii_case(b"connection") {
            &mut connection
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            &mut versions
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            &mut keys
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
            &mut protocols
        } else if name.eq_ignore_ascii_case(b"sec-websocket-extensions") {
            &mut extensions
        } else {
            continue;
        };
        list.push(value);
    }
    if method != "GET" {
        return Err(NOT_GET);
    }
    if !is_http11_or_later(version) {
        return Err(OLD_HTTP);
    }
    match hosts {
        0 => return Err(NO_HOST),
        1 => {}
        _ => return Err(MANY_HOSTS),
    }
    if !list_contains(&upgrade, b"websocket") {
        return Err(NO_UPGRADE);
    }
    if !list_contains(&connection, b"upgrade") {
        return Err(NO_CONNECTION);
    }
    if !matches!(versions.as_slice(), [version] if trim_ows(version) == b"13") {
        return Err(BAD_VERSION);
    }
    let key = match keys.as_slice() {
        [] => return Err(NO_KEY),
        [key] => trim_ows(key),
        _ => return Err(MANY_KEYS),
    };
    if !is_client_key(key) {
        return Err(BAD_KEY);
    }
    let subprotocols = parse_subprotocols(&protocols).ok_or(BAD_PROTOCOL)?;
    let extensions = parse_extensions(&extensions).ok_or(BAD_EXTENSIONS)?;
    Ok(Offer {
        key: ascii(key),
        accept: accept_key(key),
        subprotocols,
        extensions,
    })
}

/// Text of bytes already checked to be ASCII.
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Comma-separated tokens across every header line; empty list elements are skipped.
pub fn parse_subprotocols(values: &[&[u8]]) -> Option<Vec<String>> {
    let mut subprotocols = Vec::new();
    for item in values.iter().flat_map(|value| value.split(|&b| b == b',')) {
        let item = trim_ows(item);
        if item.is_empty() {
            continue;
        }
        if !is_token(item) {
            return None;
        }
        subprotocols.push(ascii(item));
    }
    Some(subprotocols)
}

/// RFC 6455 §9.1 extension offers across every header line.
pub fn parse_extensions(values: &[&[u8]]) -> Option<Vec<ExtensionOffer>> {
    let mut offers = Vec::new();
    for value in values {
        ExtensionParser { rest: value }.parse_into(&mut offers)?;
    }
    Some(offers)
}

struct ExtensionParser<'a> {
    rest: &'a [u8],
}

impl<'a> ExtensionParser<'a> {
    fn skip_ows(&mut self) {
        while let [b' ' | b'\t', rest @ ..] = self.rest {
            self.rest = rest;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        match self.rest.split_first() {
            Some((&first, rest)) if first == byte => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    fn token(&mut self) -> Option<String> {
        let length = self.rest.iter().take_while(|&&b| is_token_byte(b)).count();
        let (token, rest) = self.rest.split_at(length);
        self.rest = rest;
        is_token(token).then(|| ascii(token))
    }

    /// A quoted-string whose unescaped content must be a token (RFC 6455 §9.1).
    fn quoted_token(&mut self) -> Option<String> {
        let mut content = Vec::new();
        loop {
            let (&byte, rest) = self.rest.split_first()?;
            self.rest = rest;
            match byte {
                b'"' => break,
                b'\\' => {
                    let (&escaped, rest) = self.rest.split_first()?;
                    if !(escaped == b'\t' || (b' '..=b'~').contains(&escaped)) {
                        return None;
                    }
                    content.push(escaped);
                    self.rest = rest;
                }
                b'\t' | b' '..=b'~' => content.push(byte),
                _ => return None,
            }
        }
        is_token(&content).then(|| ascii(&content))
    }

    fn parse_into(mut self, offers: &mut Vec<ExtensionOffer>) -> Option<()> {
        loop {
            self.skip_ows();
            if self.rest.is_empty() {
                return Some(());
            }
            if self.eat(b',') {
                continue;
            }
            let name = self.token()?;
            let mut params = Vec::new();
            self.skip_ows();
            while self.eat(b';') {
                self.skip_ows();
                let param = self.token()?;
                self.skip_ows();
                let value = if self.eat(b'=') {
                    self.skip_ows();
                    Some(if self.eat(b'"') {
                        self.quoted_token()?
                    } else {
                        self.token()?
                    })
                } else {
                    None
                };
                self.skip_ows();
                params.push((param, value));
            }
            offers.push((name, params));
            if !self.rest.is_empty() && !self.eat(b',') {
                return None;
            }
        }
    }
}

/// A header that cannot be written without breaking the response.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidHeader(pub String);

fn has_crlf_or_nul(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

fn check_name(name: &[u8]) -> Result<(), InvalidHeader> {
    if name.is_empty() {
        Err(InvalidHeader("header name must not be empty".into()))
    } else if has_crlf_or_nul(name) {
        Err(InvalidHeader(
            "header name must not contain CR, LF or NUL".into(),
        ))
    } else if !is_token(name) {
        Err(InvalidHeader("header name must be a token".into()))
    } else {
        Ok(())
    }
}

fn check_value(name: &[u8], value: &[u8]) -> Result<(), InvalidHeader> {
    if has_crlf_or_nul(value) {
        return Err(InvalidHeader(format!(
            "value of header {} must not contain CR, LF or NUL",
            ascii(name)
        )));
    }
    Ok(())
}

fn check_text(name: &str, value: &str) -> Result<(), InvalidHeader> {
    if !value.is_ascii() {
        return Err(InvalidHeader(format!(
            "value of header {name} must be ASCII"
        )));
    }
    check_value(name.as_bytes(), value.as_bytes())
}

fn check_headers(headers: &[(&[u8], &[u8])]) -> Result<(), InvalidHeader> {
    headers.iter().try_for_each(|&(name, value)| {
        check_name(name)?;
        check_value(name, value)
    })
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The `101 Switching Protocols` response.
pub fn build_response(
    accept: &str,
    subprotocol: Option<&str>,
    extensions: Option<&str>,
    extra_headers: &[(&[u8], &[u8])],
) -> Result<Vec<u8>, InvalidHeader> {
    check_text("Sec-WebSocket-Accept", accept)?;
    if let Some(subprotocol) = subprotocol {
        if !is_token(subprotocol.as_bytes()) {
            return Err(InvalidHeader("subprotocol must be a token".into()));
        }
    }
    let extensions = extensions.filter(|value| !value.is_empty());
    if let Some(extensions) = extensions {
        check_text("Sec-WebSocket-Extensions", extensions)?;
    }
    check_headers(extra_headers)?;
    let mut out = Vec::with_capacity(160 + accept.len());
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    push_header(&mut out, b"Sec-WebSocket-Accept", accept.as_bytes());
    if let Some(subprotocol) = subprotocol {
        push_header(&mut out, b"Sec-WebSocket-Protocol", subprotocol.as_bytes());
    }
    if let Some(extensions) = extensions {
        push_header(&mut out, b"Sec-WebSocket-Extensions", extensions.as_bytes());
    }
    for &(name, value) in extra_headers {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// The standard reason phrase of a status code, empty for an unregistered one.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// Headers whose framing the rejection owns; a caller's copies are left out.
const FRAMING_HEADERS: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"connection"];

/// A complete HTTP/1.1 response refusing the upgrade; the connection closes after it.
///
/// The body defaults to the reason as UTF-8 text. `Content-Type` (and, for 426,
/// `Sec-WebSocket-Version`) are added unless `extra_headers` carries them.
pub fn build_rejection(
    status: i64,
    reason: &str,
    extra_headers: &[(&[u8], &[u8])],
    body: &[u8],
) -> Result<Vec<u8>, InvalidHeader> {
    let status = u16::try_from(status)
        .ok()
        .filter(|status| (200..=599).contains(status))
        .ok_or_else(|| InvalidHeader("status must be between 200 and 599".into()))?;
    check_headers(extra_headers)?;
    let body = if body.is_empty() {
        reason.as_bytes()
    } else {
        body
    };
    let has = |wanted: &[u8]| {
        extra_headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(wanted))
    };
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    for &(name, value) in extra_headers {
        if !FRAMING_HEADERS
            .iter()
            .any(|framing| name.eq_ignore_ascii_case(framing))
        {
            push_header(&mut out, name, value);
        }
    }
    if status == 426 && !has(b"sec-websocket-version") {
        push_header(&mut out, b"Sec-WebSocket-Version", b"13");
    }
    if !has(b"content-type") {
        push_header(&mut out, b"Content-Type", b"text/plain; charset=utf-8");
    }
    push_header(
        &mut out,
        b"Content-Length",
        body.len().to_string().as_bytes(),
    );
    push_header(&mut out, b"Connection", b"close");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    type Headers = Vec<(&'static [u8], &'static [u8])>;

    fn headers<'b>(head: &Head<'b>) -> Vec<(&'b [u8], &'b [u8])> {
        head.headers
            .iter()
            .map(|&(name, value)| (name.as_bytes(), value))
            .collect()
    }

    fn valid_headers() -> Headers {
        vec![
            (b"Host", b"example.com"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"keep-alive, Upgrade"),
            (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"Sec-WebSocket-Version", b"13"),
        ]
    }

    fn with(name: &'static [u8], value: &'static [u8]) -> Headers {
        let mut headers: Vec<_> = valid_headers()
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .collect();
        headers.push((name, value));
        headers
    }

    fn without(name: &[u8]) -> Headers {
        valid_headers()
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .collect()
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_a_complete_head() {
        let mut data = REQUEST.to_vec();
        data.extend_from_slice(b"\x81\x00");
        let head = parse_head(&data).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, b"/chat?room=1");
        assert_eq!(head.raw_path(), b"/chat");
        assert_eq!(head.query(), b"room=1");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.headers.len(), 5);
        assert_eq!(head.headers[0], ("Host", &b"server.example.com"[..]));
        assert_eq!(head.size, REQUEST.len());
    }

    #[test]
    fn every_prefix_of_a_head_is_incomplete() {
        for end in 0..REQUEST.len() {
            assert!(
                parse_head(&REQUEST[..end]).unwrap().is_none(),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn malformed_heads_are_refused() {
        for data in [
            &b"GET /chat HTTP/2.0\r\n\r\n"[..],
            b"GET  /chat HTTP/1.1\r\n\r\n",
            b"GET /chat HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /chat HTTP/1.1\r\nHost: x\x01\r\n\r\n",
            b"GET /chat HTTP/1.1\r\n folded\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"\rGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(data).unwrap_err(), MALFORMED, "{data:?}");
        }
    }

    #[test]
    fn header_count_is_limited() {
        let mut data = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            data.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        let mut complete = data.clone();
        complete.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_head(&complete).unwrap().unwrap().headers.len(),
            MAX_HEADERS
        );
        data.extend_from_slice(b"X-Last: 1\r\n\r\n");
        assert_eq!(parse_head(&data).unwrap_err(), TOO_MANY_HEADERS);
    }

    #[test]
    fn head_size_is_limited() {
        let mut data = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        data.resize(MAX_REQUEST_HEAD - 4, b'a');
        data.extend_from_slice(b"\r\n\r\n");
        assert_eq!(data.len(), MAX_REQUEST_HEAD);
        assert!(parse_head(&data).unwrap().is_some());
        let mut data = data[..MAX_REQUEST_HEAD - 4].to_vec();
        data.resize(MAX_REQUEST_HEAD, b'a');
        assert!(parse_head(&data).unwrap().is_none());
        data.push(b'a');
        assert_eq!(parse_head(&data).unwrap_err(), HEAD_TOO_LARGE);
    }

    #[test]
    fn path_is_percent_decoded() {
        let head = parse_head(b"GET /a%20b%zz%e2%82%ac%ff?q=%20 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.path(), "/a b%zz\u{20ac}\u{fffd}");
        assert_eq!(head.query(), b"q=%20");
        assert_eq!(&*percent_decode(b"%%41%4"), b"%A%4");
    }

    #[test]
    fn validates_the_rfc_example() {
        let head = parse_head(REQUEST).unwrap().unwrap();
        let offer = validate(head.method, "1.1", &headers(&head)).unwrap();
        assert_eq!(offer.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(offer.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(offer.subprotocols.is_empty());
        assert!(offer.extensions.is_empty());
    }

    #[test]
    fn each_rule_has_its_refusal() {
        let cases: Vec<(&str, &str, Headers, Refusal)> = vec![
            ("POST", "1.1", valid_headers(), NOT_GET),
            ("get", "1.1", valid_headers(), NOT_GET),
            ("GET", "1.0", valid_headers(), OLD_HTTP),
            ("GET", "x", valid_headers(), OLD_HTTP),
            ("GET", "1.1", without(b"host"), NO_HOST),
            (
                "GET",
                "1.1",
                [valid_headers(), vec![(b"HOST", b"b")]].concat(),
                MANY_HOSTS,
            ),
            ("GET", "1.1", without(b"upgrade"), NO_UPGRADE),
            ("GET", "1.1", with(b"upgrade", b"h2c"), NO_UPGRADE),
            (
                "GET",
                "1.1",
                with(b"connection", b"keep-alive"),
                NO_CONNECTION,
            ),
            ("GET", "1.1", without(b"sec-websocket-version"), BAD_VERSION),
            (
                "GET",
                "1.1",
                with(b"sec-websocket-version", b"8"),
                BAD_VERSION,
            ),
            ("GET", "1.1", without(b"sec-websocket-key"), NO_KEY),
            (
                "GET",
                "1.1",
                with(b"sec-websocket-key", b"dGhlIHNhbXBsZQ=="),
                BAD_KEY,
            ),
            (
                "GET",
                "1.1",
                with(b"sec-websocket-protocol", b"chat, a b"),
                BAD_PROTOCOL,
            ),
            (
                "GET",
                "1.1",
                with(b"sec-websocket-extensions", b"x; y=\"a b\""),
                BAD_EXTENSIONS,
            ),
        ];
        for (method, version, headers, refusal) in cases {
            assert_eq!(validate(method, version, &headers).unwrap_err(), refusal);
        }
    }

    #[test]
    fn later_http_versions_are_accepted() {
        for version in ["1.1", "1.2", "2", "2.0", "3", "01.1", "10"] {
            assert!(is_http11_or_later(version), "{version}");
        }
        for version in [
            "1", "1.0", "0.9", "", "1.", ".1", "1.1.1", "HTTP/1.1", "1.x",
        ] {
            assert!(!is_http11_or_later(version), "{version}");
        }
    }

    #[test]
    fn parses_offers() {
        let headers = [
            valid_headers(),
            vec![
                (b"Sec-WebSocket-Protocol", b"chat, , superchat"),
                (b"sec-websocket-protocol", b"v2"),
                (
                    b"Sec-WebSocket-Extensions",
                    b"permessage-deflate; client_max_window_bits, x-foo ; a=1;b=\"t\\ok\"",
                ),
            ],
        ]
        .concat();
        let offer = validate("GET", "1.1", &headers).unwrap();
        assert_eq!(offer.subprotocols, ["chat", "superchat", "v2"]);
        assert_eq!(
            offer.extensions,
            vec![
                (
                    "permessage-deflate".to_string(),
                    vec![("client_max_window_bits".to_string(), None)]
                ),
                (
                    "x-foo".to_string(),
                    vec![
                        ("a".to_string(), Some("1".to_string())),
                        ("b".to_string(), Some("tok".to_string())),
                    ]
                ),
            ]
        );
    }

    #[test]
    fn malformed_extension_offers_are_refused() {
        for value in [
            &b"a b"[..],
            b"a;",
            b"a;=1",
            b"a; b=",
            b"a; b=\"",
            b"a; b=\"\"",
            b"a; b=\"x\\",
            b"a; b=\"\xc3\xa9\"",
            b";a",
        ] {
            assert_eq!(parse_extensions(&[value]), None, "{value:?}");
        }
    }

    #[test]
    fn builds_the_switching_response() {
        let response = build_response(
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            Some("chat"),
            Some("permessage-deflate"),
            &[(b"X-Server", b"haske")],
        )
        .unwrap();
        assert_eq!(
            response,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\
              X-Server: haske\r\n\r\n"
        );
    }

    #[test]
    fn header_injection_is_refused() {
        assert!(build_response("a\r\nb", None, None, &[]).is_err());
        assert!(build_response("a", Some("a\nb"), None, &[]).is_err());
        assert!(build_response("a", None, Some("a\0"), &[]).is_err());
        assert!(build_response("a", None, None, &[(b"X-A", b"1\r\nSet-Cookie: x")]).is_err());
        assert!(build_response("a", None, None, &[(b"X-A\r\n", b"1")]).is_err());
        assert!(build_response("a", None, None, &[(b"", b"1")]).is_err());
        assert!(build_response("a", None, None, &[(b"X A", b"1")]).is_err());
        assert!(build_rejection(400, "no", &[(b"X", b"\n")], b"").is_err());
    }

    #[test]
    fn builds_rejections() {
        let response = build_rejection(426, "Sec-WebSocket-Version must be 13", &[], b"").unwrap();
        assert_eq!(
            response,
            b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\
              Content-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\n\
              Connection: close\r\n\r\nSec-WebSocket-Version must be 13"
        );
        let response = build_rejection(
            403,
            "ignored",
            &[
                (b"content-type", b"application/json"),
                (b"Content-Length", b"99"),
            ],
            b"{}",
        )
        .unwrap();
        assert_eq!(
            response,
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        assert!(build_rejection(101, "", &[], b"").is_err());
        assert!(build_rejection(600, "", &[], b"").is_err());
        assert!(build_rejection(499, "", &[], b"")
            .unwrap()
            .starts_with(b"HTTP/1.1 499 \r\n"));
    }
}
