//! The HTTP/1.1 pieces the server speaks before (or instead of) a
//! WebSocket: a borrowed view of a parsed request, and responses.

use std::io::Write as _;
use std::sync::Arc;

use super::error::HandshakeError;

/// A parsed request head, borrowing the bytes it was parsed from.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The request target as sent: path and optional `?query`.
    pub target: &'a str,
    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Header fields in the order received.
    pub headers: &'a [httparse::Header<'a>],
    /// The body, as long as its `Content-Length` says (empty without
    /// one). The driver waits for all of it, up to
    /// `Limits::max_request_body`, before the application sees the request.
    pub body: &'a [u8],
}

impl<'a> HttpRequest<'a> {
    /// The target without its query string. An absolute-form target
    /// (`GET ws://host:port/ws?x HTTP/1.1`, which servers must accept, RFC
    /// 7230 §5.3.2) gives its path (`/ws`).
    pub fn path(&self) -> &'a str {
        let origin_form = match self.target.split_once("://") {
            Some((scheme, rest)) if !scheme.contains('/') => {
                rest.find('/').map_or("/", |at| &rest[at..])
            }
            _ => self.target,
        };
        origin_form
            .split_once('?')
            .map_or(origin_form, |(path, _)| path)
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The value of the query parameter `name` (first occurrence, not
    /// percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The first value of header `name`, if present.
    pub fn header(&self, name: &'a str) -> Option<&'a [u8]> {
        self.header_values(name).next()
    }

    /// The first value of header `name` as trimmed UTF-8 text.
    pub fn header_str(&self, name: &'a str) -> Option<&'a str> {
        self.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Whether any value of header `name`, read as a comma-separated list,
    /// contains `token` (case-insensitive), as `Connection: keep-alive,
    /// Upgrade` contains `upgrade`.
    pub fn header_has_token(&self, name: &'a str, token: &str) -> bool {
        self.header_values(name).any(|value| {
            value
                .split(|&b| b == b',')
                .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

/// A complete HTTP response the server writes and then closes the
/// connection after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code, e.g. 404.
    pub status: u16,
    /// Extra header fields; `Content-Length` and `Connection: close` are
    /// always added by [`HttpResponse::write_to`].
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// A body shared with other responses (a cached file), sent instead of
    /// `body` when present: the driver streams it to the socket in slices
    /// as the peer takes them, so no connection holds a copy of all of it.
    pub shared_body: Option<Arc<[u8]>>,
}

impl HttpResponse {
    /// A response with a `text/plain` body.
    pub fn text(status: u16, body: impl Into<String>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![(
                "Content-Type".to_owned(),
                "text/plain; charset=utf-8".to_owned(),
            )],
            body: body.into().into_bytes(),
            shared_body: None,
        }
    }

    /// A response with `body` of type `content_type`.
    pub fn with_body(status: u16, content_type: &str, body: Vec<u8>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body,
            shared_body: None,
        }
    }

    /// The length of the body this response announces.
    pub fn body_len(&self) -> usize {
        self.shared_body
            .as_ref()
            .map_or(self.body.len(), |shared| shared.len())
    }

    /// `404 Not Found`, the default answer to plain HTTP requests.
    pub fn not_found() -> HttpResponse {
        HttpResponse::text(404, "not found\n")
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Serializes status line, headers and body into `out`. A
    /// [`HttpResponse::shared_body`] is left out (its length is announced):
    /// the caller sends it after.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_head_to(out);
        if self.shared_body.is_none() {
            out.extend_from_slice(&self.body);
        }
    }

    /// Serializes status line and headers only, announcing the body's
    /// length (the answer to a `HEAD` request).
    pub fn write_head_to(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let _ = write!(
            out,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body_len()
        );
    }
}

impl From<HandshakeError> for HttpResponse {
    fn from(error: HandshakeError) -> HttpResponse {
        let response = HttpResponse::text(error.status(), format!("{error}\n"));
        if error == HandshakeError::UnsupportedVersion {
            response.with_header("Sec-WebSocket-Version", "13")
        } else {
            response
        }
    }
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_length_and_close() {
        let mut out = Vec::new();
        HttpResponse::text(404, "nope\n").write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nnope\n"));
    }

    #[test]
    fn version_refusal_names_the_supported_version() {
        let response = HttpResponse::from(HandshakeError::UnsupportedVersion);
        assert_eq!(response.status, 426);
        assert!(
            response
                .headers
                .contains(&("Sec-WebSocket-Version".to_owned(), "13".to_owned()))
        );
    }

    #[test]
    fn tokens_and_query_parameters() {
        let headers = [
            httparse::Header {
                name: "Connection",
                value: b"keep-alive, Upgrade",
            },
            httparse::Header {
                name: "upgrade",
                value: b"WebSocket",
            },
        ];
        let req = HttpRequest {
            method: "GET",
            target: "/ws?principal=alice&ticket=t1&flag",
            minor_version: 1,
            headers: &headers,
            body: &[],
        };
        assert!(req.header_has_token("connection", "upgrade"));
        assert!(req.header_has_token("Upgrade", "websocket"));
        assert!(!req.header_has_token("Connection", "keep"));
        assert_eq!(req.path(), "/ws");
        for (target, path) in [
            ("ws://10.96.111.130:8081/ws", "/ws"),
            ("http://example.com", "/"),
            ("https://example.com/a/b?c=d://e", "/a/b"),
            ("/x?next=http://y/z", "/x"),
        ] {
            let absolute = HttpRequest { target, ..req };
            assert_eq!(absolute.path(), path, "{target}");
        }
        assert_eq!(req.query_param("ticket"), Some("t1"));
        assert_eq!(req.query_param("flag"), Some(""));
        assert_eq!(req.query_param("missing"), None);
    }
}
