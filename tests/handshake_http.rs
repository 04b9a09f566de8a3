//! Raw TCP tests of the opening handshake: every HTTP refusal, the HTTP
//! hook, byte-at-a-time delivery and frames pipelined behind the request.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, TestServer, masked_frame, upgrade_request};
use wsloop::{Limits, ServerConfig};

fn server() -> TestServer {
    TestServer::echo(ServerConfig::default())
}

/// Sends `request`, returns (status, head, body), and checks the server
/// closes the connection afterwards.
fn exchange(server: &TestServer, request: &[u8]) -> (u16, String, String) {
    let mut client = RawClient::connect(server.addr);
    client.send_raw(request);
    let response = client.read_response();
    client.expect_eof();
    response
}

fn replace_line(request: &str, prefix: &str, replacement: &str) -> String {
    request
        .split_inclusive("\r\n")
        .map(|line| {
            if line.starts_with(prefix) {
                replacement
            } else {
                line
            }
        })
        .collect()
}

#[test]
fn each_invalid_upgrade_gets_its_status_and_a_one_line_reason() {
    let server = server();
    let valid = upgrade_request("/", "");
    let cases: Vec<(String, u16, &str)> = vec![
        (
            replace_line(&valid, "Host:", ""),
            400,
            "missing Host header",
        ),
        (
            replace_line(&valid, "Upgrade:", "Upgrade: h2c\r\n"),
            400,
            "Upgrade header must contain websocket",
        ),
        (
            replace_line(&valid, "Connection:", "Connection: keep-alive\r\n"),
            400,
            "Connection header must contain Upgrade",
        ),
        (
            replace_line(&valid, "Sec-WebSocket-Key:", ""),
            400,
            "exactly one Sec-WebSocket-Key",
        ),
        (
            replace_line(
                &valid,
                "Sec-WebSocket-Key:",
                "Sec-WebSocket-Key: dG9vIHNob3J0\r\n",
            ),
            400,
            "base64 of 16 bytes",
        ),
        (valid.replacen("GET", "POST", 1), 400, "must use GET"),
        (
            valid.replacen("HTTP/1.1", "HTTP/1.0", 1),
            400,
            "HTTP/1.1 or later",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_owned(),
            400,
            "malformed HTTP request",
        ),
    ];
    for (request, status, reason) in cases {
        let (got, head, body) = exchange(&server, request.as_bytes());
        assert_eq!(got, status, "{request:?} -> {head}");
        assert!(body.contains(reason), "{request:?} -> {body:?}");
        assert_eq!(body.lines().count(), 1, "one-line body: {body:?}");
        assert!(head.contains("Connection: close"));
    }
}

#[test]
fn wrong_version_gets_426_naming_version_13() {
    let server = server();
    let request = replace_line(
        &upgrade_request("/", ""),
        "Sec-WebSocket-Version:",
        "Sec-WebSocket-Version: 8\r\n",
    );
    let (status, head, _) = exchange(&server, request.as_bytes());
    assert_eq!(status, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
}

#[test]
fn oversized_head_and_too_many_headers_get_431() {
    let server = server();
    let big = upgrade_request("/", &format!("X-Padding: {}\r\n", "a".repeat(9000)));
    let (status, _, _) = exchange(&server, big.as_bytes());
    assert_eq!(status, 431);

    let many: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _, body) = exchange(&server, upgrade_request("/", &many).as_bytes());
    assert_eq!(status, 431);
    assert!(body.contains("too many header fields"));
}

#[test]
fn plain_http_goes_to_the_http_hook_default_404() {
    let server = server();
    let (status, _, body) = exchange(&server, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 404);
    assert_eq!(body, "not found\n");
}

#[test]
fn request_delivered_one_byte_at_a_time_still_upgrades_and_echoes() {
    let server = server();
    let mut client = RawClient::connect(server.addr);
    let mut wire = upgrade_request("/slow", "").into_bytes();
    wire.extend(masked_frame(0x81, b"drip"));
    for byte in wire {
        client.send_raw(&[byte]);
    }
    let (status, head, _) = client.read_response_head();
    assert_eq!(status, 101);
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    let frame = client.read_frame().unwrap();
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (1, b"drip".as_slice())
    );
}

#[test]
fn frames_pipelined_behind_the_request_are_processed() {
    let server = server();
    let mut client = RawClient::connect(server.addr);
    let mut wire = upgrade_request("/", "").into_bytes();
    wire.extend(masked_frame(0x81, b"first"));
    wire.extend(masked_frame(0x82, b"second"));
    wire.extend(masked_frame(0x88, &1000u16.to_be_bytes()));
    client.send_raw(&wire);
    assert_eq!(client.read_response_head().0, 101);
    assert_eq!(client.read_frame().unwrap().payload, b"first");
    assert_eq!(client.read_frame().unwrap().payload, b"second");
    assert_eq!(client.expect_close(), 1000);
    client.expect_eof();
}

#[test]
fn silent_client_is_dropped_after_the_handshake_timeout() {
    let config = ServerConfig {
        limits: Limits {
            handshake_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let server = TestServer::echo(config);
    let mut client = RawClient::connect(server.addr);
    client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let started = Instant::now();
    client.expect_eof();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "dropped too early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "not dropped: {waited:?}");
}

#[test]
fn upgrades_beyond_max_connections_get_503() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let server = TestServer::echo(config);
    let _first = RawClient::open(server.addr, "/");
    let mut second = RawClient::open(server.addr, "/");
    let mut third = RawClient::connect(server.addr);
    third.send_raw(upgrade_request("/", "").as_bytes());
    assert_eq!(third.read_response().0, 503);
    // A slot frees up when a connection closes.
    second.send_frame(0x88, &1000u16.to_be_bytes());
    assert_eq!(second.expect_close(), 1000);
    second.expect_eof();
    let mut fourth = RawClient::open(server.addr, "/");
    fourth.send_frame(0x81, b"in");
    assert_eq!(fourth.read_frame().unwrap().payload, b"in");
}
