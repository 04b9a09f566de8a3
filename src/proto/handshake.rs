//! The opening handshake (RFC 6455 §4.2): finding the end of the request
//! head incrementally, parsing it once, validating an upgrade and writing
//! the `101 Switching Protocols` answer.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::error::HandshakeError;
use super::http::HttpRequest;
use super::limits::Limits;

/// The GUID RFC 6455 appends to the client's key.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Header slots parsed on the stack; `Limits::max_headers` above this is
/// treated as this.
pub const HEADER_SLOTS: usize = 256;

/// Finds the end of a request head across reads without rescanning: each
/// call looks only at bytes not seen before (plus 3 of overlap).
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    scanned: usize,
}

impl HeadScanner {
    /// Returns the length of the head (through `\r\n\r\n`) once `buf`
    /// contains it; `buf` must hold everything received so far. Errors when
    /// the head outgrows `max_head` bytes.
    pub fn find_end(
        &mut self,
        buf: &[u8],
        max_head: usize,
    ) -> Result<Option<usize>, HandshakeError> {
        let end = buf.len().min(max_head);
        let from = self.scanned.saturating_sub(3).min(end);
        let window = &buf[from..end];
        if let Some(pos) = window.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(from + pos + 4));
        }
        if buf.len() >= max_head {
            return Err(HandshakeError::HeadTooLarge);
        }
        self.scanned = buf.len();
        Ok(None)
    }
}

/// Parses a complete request head (as found by [`HeadScanner`]) into
/// `slots`. Called once per request.
pub fn parse_request<'h>(
    head: &'h [u8],
    slots: &'h mut [httparse::Header<'h>],
) -> Result<HttpRequest<'h>, HandshakeError> {
    let mut request = httparse::Request::new(slots);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HandshakeError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(_) => return Err(HandshakeError::Malformed),
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HandshakeError::Malformed);
    };
    Ok(HttpRequest {
        method,
        target,
        minor_version,
        headers: request.headers,
        body: &[],
    })
}

/// Whether a request asks for a WebSocket at all (as opposed to a plain
/// HTTP request for the HTTP hook): it carries `Upgrade` or any
/// `Sec-WebSocket-Key`/`Sec-WebSocket-Version` header.
pub fn wants_upgrade(request: &HttpRequest<'_>) -> bool {
    request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            || h.name.eq_ignore_ascii_case("sec-websocket-key")
            || h.name.eq_ignore_ascii_case("sec-websocket-version")
    })
}

/// Checks an upgrade request against RFC 6455 §4.2.1 and returns the
/// `Sec-WebSocket-Accept` value for it.
pub fn validate_upgrade(request: &HttpRequest<'_>) -> Result<String, HandshakeError> {
    if request.method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if request.minor_version < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if request.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !request.header_has_token("upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !request.header_has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let mut keys = request.header_values("sec-websocket-key");
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(HandshakeError::MissingKey);
    };
    let key = key.trim_ascii();
    let mut decoded = [0u8; 18];
    match BASE64.decode_slice(key, &mut decoded) {
        Ok(16) => {}
        _ => return Err(HandshakeError::InvalidKey),
    }
    let mut versions = request.header_values("sec-websocket-version");
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.trim_ascii() == b"13" => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    Ok(accept_key(key))
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID);
    BASE64.encode(sha.digest().bytes())
}

/// The subprotocols a client offers in `Sec-WebSocket-Protocol`, in order.
pub fn offered_protocols<'a>(request: &HttpRequest<'a>) -> impl Iterator<Item = &'a str> + 'a {
    request
        .header_values("sec-websocket-protocol")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Appends the `101 Switching Protocols` answer to `out`.
pub fn write_switching_protocols(
    out: &mut Vec<u8>,
    accept: &str,
    protocol: Option<&str>,
    extra_headers: &[(String, String)],
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(protocol) = protocol {
        let _ = write!(out, "Sec-WebSocket-Protocol: {protocol}\r\n");
    }
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The number of header slots to parse with under `limits`.
pub fn header_slots(limits: &Limits) -> usize {
    limits.max_headers.clamp(1, HEADER_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn check(raw: &[u8]) -> Result<String, HandshakeError> {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let request = parse_request(raw, &mut slots)?;
        validate_upgrade(&request)
    }

    fn with_header_replaced(name: &str, line: Option<&str>) -> Vec<u8> {
        let text = std::str::from_utf8(RFC_REQUEST).unwrap();
        let mut out = String::new();
        for l in text.split_inclusive("\r\n") {
            if l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            {
                if let Some(replacement) = line {
                    out.push_str(replacement);
                    out.push_str("\r\n");
                }
            } else {
                out.push_str(l);
            }
        }
        out.into_bytes()
    }

    #[test]
    fn rfc_example_key_gives_rfc_accept() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(check(RFC_REQUEST).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_invalid_field_has_its_error() {
        let cases: &[(&str, Option<&str>, HandshakeError)] = &[
            ("Host", None, HandshakeError::MissingHost),
            (
                "Upgrade",
                Some("Upgrade: h2c"),
                HandshakeError::MissingUpgrade,
            ),
            (
                "Connection",
                Some("Connection: keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
            ),
            ("Sec-WebSocket-Key", None, HandshakeError::MissingKey),
            (
                "Sec-WebSocket-Key",
                Some("Sec-WebSocket-Key: c2hvcnQ="),
                HandshakeError::InvalidKey,
            ),
            (
                "Sec-WebSocket-Key",
                Some("Sec-WebSocket-Key: !!!notbase64!!!!!!!!!!=="),
                HandshakeError::InvalidKey,
            ),
            (
                "Sec-WebSocket-Version",
                Some("Sec-WebSocket-Version: 8"),
                HandshakeError::UnsupportedVersion,
            ),
            (
                "Sec-WebSocket-Version",
                None,
                HandshakeError::UnsupportedVersion,
            ),
        ];
        for (name, line, expected) in cases {
            assert_eq!(
                check(&with_header_replaced(name, *line)),
                Err(*expected),
                "{name} {line:?}"
            );
        }
        let post = [b"POST".as_slice(), &RFC_REQUEST[3..]].concat();
        assert_eq!(check(&post), Err(HandshakeError::MethodNotGet));
        let old = std::str::from_utf8(RFC_REQUEST)
            .unwrap()
            .replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(check(old.as_bytes()), Err(HandshakeError::HttpVersion));
        assert_eq!(
            check(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n"),
            Err(HandshakeError::Malformed)
        );
    }

    #[test]
    fn token_lists_are_case_insensitive() {
        let raw = with_header_replaced("Connection", Some("connection: keep-alive, UPGRADE"));
        let raw = String::from_utf8(raw)
            .unwrap()
            .replace("Upgrade: websocket", "upgrade: WebSocket");
        assert!(check(raw.as_bytes()).is_ok());
    }

    #[test]
    fn too_many_headers_is_its_own_error() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..65 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(check(&raw), Err(HandshakeError::TooManyHeaders));
    }

    #[test]
    fn scanner_finds_the_end_across_any_split_in_linear_work() {
        for split in 1..RFC_REQUEST.len() {
            let mut scanner = HeadScanner::default();
            let mut seen = Vec::new();
            let mut found = None;
            for chunk in RFC_REQUEST.chunks(split) {
                let before = scanner.scanned;
                seen.extend_from_slice(chunk);
                found = scanner.find_end(&seen, 8192).unwrap();
                // Never looks further back than 3 bytes before new data.
                assert!(scanner.scanned >= before);
                if found.is_some() {
                    break;
                }
            }
            assert_eq!(found, Some(RFC_REQUEST.len()), "split {split}");
        }
    }

    #[test]
    fn scanner_rejects_heads_over_the_limit() {
        let mut scanner = HeadScanner::default();
        let big = vec![b'a'; 100];
        assert_eq!(scanner.find_end(&big[..50], 64), Ok(None));
        assert_eq!(
            scanner.find_end(&big, 64),
            Err(HandshakeError::HeadTooLarge)
        );
    }

    #[test]
    fn protocols_are_listed_in_order() {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let request = parse_request(RFC_REQUEST, &mut slots).unwrap();
        assert_eq!(
            offered_protocols(&request).collect::<Vec<_>>(),
            ["chat", "superchat"]
        );
        let mut out = Vec::new();
        write_switching_protocols(&mut out, "abc=", Some("chat"), &[]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: abc=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
