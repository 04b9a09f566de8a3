//! The opening handshake as a connection runs it: the request head is
//! found across reads, parsed once and classified ([`Connection::handle_head`]);
//! an upgrade the application accepts is answered, permessage-deflate
//! negotiated and switched on in both directions
//! ([`Connection::accept_upgrade`]). The application only sees a valid
//! request and says yes or no; the driver never learns how a handshake or
//! an extension works.

use std::time::Instant;

use super::connection::Connection;
use super::error::HandshakeError;
use super::extensions::{DeflateConfig, negotiate_permessage_deflate};
use super::handshake::{
    header_slots, offered_protocols, parse_request, validate_upgrade, wants_upgrade,
};
use super::http::{HttpRequest, HttpResponse};
use super::limits::Limits;

/// What [`Connection::handle_head`] found in the bytes received so far.
#[derive(Debug)]
pub enum Head<'b> {
    /// The head is not complete yet: call again with more bytes.
    NeedMore,
    /// The head is too large or malformed, or the upgrade breaks RFC 6455:
    /// answer with `HttpResponse::from(error)` ([`Connection::respond`]).
    Invalid(HandshakeError),
    /// A plain HTTP request, with its whole body (by `Content-Length`):
    /// answer it with [`Connection::respond`]; the connection then closes,
    /// so the rest of the input is discarded.
    Http(HttpRequest<'b>),
    /// A plain HTTP request whose body cannot be taken (chunked, a bad
    /// length, past `Limits::max_request_body`): answer with this.
    Refused(HttpResponse),
    /// A valid WebSocket upgrade: accept it with
    /// [`Connection::accept_upgrade`] or refuse it with
    /// [`Connection::respond`].
    Upgrade(HttpRequest<'b>, Upgrade),
}

/// A valid upgrade request's key material, for [`Connection::accept_upgrade`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    accept_key: String,
    head_len: usize,
}

impl Upgrade {
    /// Bytes of input the request head took: frames start after them.
    pub fn head_len(&self) -> usize {
        self.head_len
    }
}

/// What accepting an upgrade agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// permessage-deflate is on, both ways.
    pub compressed: bool,
    /// The subprotocol the application chose, when the client had not
    /// offered it: it was left out of the answer.
    pub unoffered_protocol: Option<String>,
}

impl Connection {
    /// Looks for a complete request head at the start of `input` (all the
    /// bytes received so far; each call scans only what is new) and, once
    /// it is there, parses it into `slots` and says what it asks for.
    /// Call only while [`super::Phase::Handshaking`].
    pub fn handle_head<'b>(
        &mut self,
        input: &'b [u8],
        slots: &'b mut [httparse::Header<'b>],
        limits: &Limits,
    ) -> Head<'b> {
        let head_len = match self.head_scanner().find_end(input, limits.max_request_head) {
            Ok(None) => return Head::NeedMore,
            Ok(Some(len)) => len,
            Err(error) => return Head::Invalid(error),
        };
        let slot_count = header_slots(limits).min(slots.len());
        let request = match parse_request(&input[..head_len], &mut slots[..slot_count]) {
            Ok(request) => request,
            Err(error) => return Head::Invalid(error),
        };
        if !wants_upgrade(&request) {
            let body_len = match declared_body_len(&request, limits.max_request_body) {
                Ok(len) => len,
                Err(refusal) => return Head::Refused(refusal),
            };
            let Some(body) = head_len
                .checked_add(body_len)
                .and_then(|end| input.get(head_len..end))
            else {
                // The rest of the body is still on its way.
                return Head::NeedMore;
            };
            let mut request = request;
            request.body = body;
            return Head::Http(request);
        }
        match validate_upgrade(&request) {
            Ok(accept_key) => Head::Upgrade(
                request,
                Upgrade {
                    accept_key,
                    head_len,
                },
            ),
            Err(error) => Head::Invalid(error),
        }
    }

    /// Accepts `request` (classified as `upgrade` by
    /// [`Connection::handle_head`]): queues `101 Switching Protocols` with
    /// the application's `protocol` (dropped unless the client offered it)
    /// and `headers`, negotiates permessage-deflate when `deflate` is given
    /// (the application's own `Sec-WebSocket-Extensions` headers are
    /// ignored: extensions are the protocol's business), switches it on for
    /// both directions, and opens.
    pub fn accept_upgrade(
        &mut self,
        request: &HttpRequest<'_>,
        upgrade: &Upgrade,
        protocol: Option<&str>,
        mut headers: Vec<(String, String)>,
        deflate: Option<&DeflateConfig>,
        now: Instant,
    ) -> Accepted {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("sec-websocket-extensions"));
        let negotiated = deflate.and_then(|config| {
            let (params, response) = negotiate_permessage_deflate(request, config)?;
            headers.push(("Sec-WebSocket-Extensions".to_owned(), response));
            Some((params, config.min_compress_size))
        });
        let offered = protocol.filter(|chosen| offered_protocols(request).any(|p| p == *chosen));
        let unoffered_protocol = protocol.filter(|_| offered.is_none()).map(str::to_owned);
        self.accept(&upgrade.accept_key, offered, &headers, now);
        if let Some((params, min_compress_size)) = negotiated {
            self.enable_inflate(
                params.client_max_window_bits,
                params.client_no_context_takeover,
            );
            self.enable_deflate(
                params.server_max_window_bits,
                params.server_no_context_takeover,
                min_compress_size,
            );
        }
        Accepted {
            compressed: negotiated.is_some(),
            unoffered_protocol,
        }
    }
}

/// The length of a plain HTTP request's body from its `Content-Length`
/// (0 without one), or the refusal: `411` for a chunked body (clients of
/// the API send lengths), `400` for a malformed length, `413` past
/// `max_body`.
fn declared_body_len(request: &HttpRequest<'_>, max_body: usize) -> Result<usize, HttpResponse> {
    if request.header("transfer-encoding").is_some() {
        return Err(HttpResponse::text(
            411,
            "send the request body with a Content-Length\n",
        ));
    }
    let Some(value) = request.header_str("content-length") else {
        return Ok(0);
    };
    let len: u64 = value
        .parse()
        .map_err(|_| HttpResponse::text(400, "malformed Content-Length\n"))?;
    match usize::try_from(len) {
        Ok(len) if len <= max_body => Ok(len),
        _ => Err(HttpResponse::text(
            413,
            format!("the request body is larger than {max_body} bytes (limits.max_request_body)\n"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decoder::tests::client_frame;
    use crate::proto::frame::{RSV1, parse_header};
    use crate::proto::handshake::HEADER_SLOTS;
    use crate::proto::{Message, Phase, Received};

    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n";

    /// Feeds `head` a byte at a time, as a slow client would send it, and
    /// accepts it with `protocol` and `deflate`; returns the connection
    /// and the bytes it queued.
    fn accept_bytewise(
        head: &str,
        protocol: Option<&str>,
        deflate: Option<&DeflateConfig>,
    ) -> (Connection, Accepted, String) {
        let now = Instant::now();
        let limits = Limits::default();
        let mut conn = Connection::new(&limits, now);
        let head = head.as_bytes();
        for end in 1..head.len() {
            let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
            assert!(matches!(
                conn.handle_head(&head[..end], &mut slots, &limits),
                Head::NeedMore
            ));
        }
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let Head::Upgrade(request, upgrade) = conn.handle_head(head, &mut slots, &limits) else {
            panic!("not an upgrade");
        };
        assert_eq!(upgrade.head_len(), head.len());
        let headers = vec![("Sec-WebSocket-Extensions".to_owned(), "mine".to_owned())];
        let accepted = conn.accept_upgrade(&request, &upgrade, protocol, headers, deflate, now);
        let answer = String::from_utf8(conn.poll_output().to_vec()).unwrap();
        conn.consume_output(answer.len());
        (conn, accepted, answer)
    }

    #[test]
    fn an_upgrade_is_answered_and_opens_from_the_first_byte() {
        let head = format!("{UPGRADE}\r\n");
        let (conn, accepted, answer) = accept_bytewise(&head, Some("chat"), None);
        assert_eq!(conn.phase(), Phase::Open);
        assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        // RFC 6455's example key and its answer.
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(answer.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(!answer.contains("Extensions"), "{answer}");
        assert_eq!(
            accepted,
            Accepted {
                compressed: false,
                unoffered_protocol: None
            }
        );
        // A protocol the client did not offer is left out, and reported.
        let (_, accepted, answer) = accept_bytewise(&head, Some("other"), None);
        assert!(!answer.contains("Sec-WebSocket-Protocol"));
        assert_eq!(accepted.unoffered_protocol.as_deref(), Some("other"));
    }

    #[test]
    fn permessage_deflate_is_negotiated_and_switched_on_both_ways() {
        let head = format!("{UPGRADE}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
        let config = DeflateConfig {
            min_compress_size: 0,
            ..DeflateConfig::default()
        };
        let (mut conn, accepted, answer) = accept_bytewise(&head, None, Some(&config));
        assert!(accepted.compressed);
        assert!(answer.contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"));
        assert!(!answer.contains("mine"), "the application's own is dropped");
        // Inbound: a compressed client message (RSV1) inflates.
        let mut deflater = crate::proto::deflate::Deflater::new(15);
        let mut compressed = Vec::new();
        assert!(deflater.compress_message(b"hello hello hello", &mut compressed, false));
        let mut input = client_frame(0xC1, &compressed);
        let now = Instant::now();
        let mut decoder = conn.take_decoder();
        let got = match conn.handle_input(&mut decoder, &mut input, now) {
            Received::Message(Message::Text(text), _) => text.to_owned(),
            other => panic!("{other:?}"),
        };
        conn.restore_decoder(decoder);
        assert_eq!(got, "hello hello hello");
        // Outbound: messages go out compressed.
        conn.send(Message::Text(&got), now).unwrap();
        let header = parse_header(conn.poll_output(), RSV1).unwrap().unwrap();
        assert_eq!(header.rsv, RSV1);
        // Without an offer, or without the server's consent: off.
        let plain = format!("{UPGRADE}\r\n");
        assert!(!accept_bytewise(&plain, None, Some(&config)).1.compressed);
        assert!(!accept_bytewise(&head, None, None).1.compressed);
    }

    #[test]
    fn plain_requests_and_bad_upgrades_are_told_apart() {
        let limits = Limits::default();
        let now = Instant::now();
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let mut conn = Connection::new(&limits, now);
        let get = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let Head::Http(request) = conn.handle_head(get, &mut slots, &limits) else {
            panic!("not plain HTTP");
        };
        assert_eq!(request.target, "/healthz");
        let bad = UPGRADE.replace("Version: 13", "Version: 8") + "\r\n";
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let mut conn = Connection::new(&limits, now);
        assert!(matches!(
            conn.handle_head(bad.as_bytes(), &mut slots, &limits),
            Head::Invalid(HandshakeError::UnsupportedVersion)
        ));
        let huge = vec![b'a'; limits.max_request_head];
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let mut conn = Connection::new(&limits, now);
        assert!(matches!(
            conn.handle_head(&huge, &mut slots, &limits),
            Head::Invalid(HandshakeError::HeadTooLarge)
        ));
    }
}
