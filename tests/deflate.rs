//! permessage-deflate over real sockets: negotiation answers, compressed
//! echoes, the threshold, and a zip bomb closing with 1009.

mod common;

use common::{RawClient, TestServer, upgrade_request};
use wsloop::proto::deflate::{Deflater, Inflater};
use wsloop::proto::extensions::DeflateConfig;
use wsloop::server::ServerConfig;

fn compressing_echo(config: DeflateConfig) -> TestServer {
    TestServer::echo(ServerConfig {
        deflate: Some(config),
        ..ServerConfig::default()
    })
}

/// Opens with `offer` as `Sec-WebSocket-Extensions`; returns the client
/// and the server's answer to it (`None`: no extension agreed).
fn open_offering(server: &TestServer, offer: &str) -> (RawClient, Option<String>) {
    open_path_offering(server, "/", offer)
}

fn open_path_offering(server: &TestServer, path: &str, offer: &str) -> (RawClient, Option<String>) {
    let mut client = RawClient::connect(server.addr);
    let extra = format!("Sec-WebSocket-Extensions: {offer}\r\n");
    client.send_raw(upgrade_request(path, &extra).as_bytes());
    let (status, head, _) = client.read_response_head();
    assert_eq!(status, 101, "{head}");
    let answer = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    });
    (client, answer)
}

/// Inflates one whole compressed message from the server.
fn inflate(inflater: &mut Inflater, payload: &[u8], reset: bool) -> Vec<u8> {
    let mut out = Vec::new();
    inflater.inflate(payload, &mut out, 1 << 24).unwrap();
    inflater.finish_message(&mut out, 1 << 24, reset).unwrap();
    out
}

fn compress(deflater: &mut Deflater, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(deflater.compress_message(payload, &mut out, false));
    out
}

#[test]
fn the_browser_offer_gets_compressed_echoes_with_context_kept() {
    let server = compressing_echo(DeflateConfig {
        min_compress_size: 32,
        ..DeflateConfig::default()
    });
    let (mut client, answer) = open_offering(&server, "permessage-deflate; client_max_window_bits");
    assert_eq!(answer.as_deref(), Some("permessage-deflate"));

    let mut deflater = Deflater::new(15);
    let mut inflater = Inflater::new(15);
    let text =
        r#"{"op":"PARAGRAPH","data":{"paragraph":{"status":"FINISHED","text":"%md hello"}}}"#;
    let mut sizes = Vec::new();
    for _ in 0..3 {
        client.send_frame(0xC1, &compress(&mut deflater, text.as_bytes()));
        let frame = client.read_frame().unwrap();
        assert_eq!(
            (frame.opcode, frame.rsv),
            (1, 0b100),
            "compressed text echo"
        );
        let inflated = inflate(&mut inflater, &frame.payload, false);
        assert_eq!(inflated, text.as_bytes());
        sizes.push(frame.payload.len());
    }
    assert!(
        sizes[1] < sizes[0],
        "context takeover shrinks repeats: {sizes:?}"
    );

    // Below the threshold the echo goes out plain; uncompressed input is fine.
    client.send_frame(0x81, b"tiny");
    let frame = client.read_frame().unwrap();
    assert_eq!((frame.rsv, frame.payload.as_slice()), (0, &b"tiny"[..]));
    client.send_frame(0x88, &1000u16.to_be_bytes());
    assert_eq!(client.expect_close(), 1000);
}

#[test]
fn no_context_takeover_and_small_windows_are_honoured() {
    let server = compressing_echo(DeflateConfig {
        min_compress_size: 0,
        ..DeflateConfig::default()
    });
    let (mut client, answer) = open_offering(
        &server,
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9, permessage-deflate",
    );
    assert_eq!(
        answer.as_deref(),
        Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9")
    );
    let (mut client2, answer) = open_offering(
        &server,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    );
    assert_eq!(
        answer.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let text = "the same words again and again, ".repeat(8);
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let mut out = Vec::new();
        assert!(Deflater::new(9).compress_message(text.as_bytes(), &mut out, true));
        client2.send_frame(0xC1, &out);
        let frame = client2.read_frame().unwrap();
        assert_eq!(frame.rsv, 0b100);
        payloads.push(frame.payload);
    }
    assert_eq!(payloads[0], payloads[1], "each message compressed alone");
    let mut inflater = Inflater::new(9);
    let inflated = inflate(&mut inflater, &payloads[1], true);
    assert_eq!(inflated, text.as_bytes());

    let mut deflater = Deflater::new(9);
    client.send_frame(0xC2, &compress(&mut deflater, &[7u8; 5000]));
    let frame = client.read_frame().unwrap();
    assert_eq!((frame.opcode, frame.rsv), (2, 0b100));
    let mut inflater = Inflater::new(10);
    let inflated = inflate(&mut inflater, &frame.payload, false);
    assert_eq!(inflated, vec![7u8; 5000]);
}

#[test]
fn unacceptable_offers_and_a_server_without_deflate_decline() {
    let server = compressing_echo(DeflateConfig::default());
    let (_, answer) = open_offering(&server, "permessage-deflate; mystery_param");
    assert_eq!(answer, None);
    let (mut client, answer) =
        open_offering(&server, "permessage-deflate; server_max_window_bits=8");
    assert_eq!(answer, None);
    // Without the extension, RSV1 is a protocol error.
    client.send_frame(0xC1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(client.expect_close(), 1002);

    let plain = TestServer::echo(ServerConfig::default());
    let (_, answer) = open_offering(&plain, "permessage-deflate; client_max_window_bits");
    assert_eq!(answer, None);
}

#[test]
fn a_zip_bomb_closes_with_1009_and_the_server_carries_on() {
    let limit = 256 * 1024;
    let mut config = ServerConfig {
        deflate: Some(DeflateConfig::default()),
        ..ServerConfig::default()
    };
    config.limits.max_message_size = limit;
    let server = TestServer::echo(config);
    let (mut client, _) = open_offering(&server, "permessage-deflate");
    // 64 MiB of zeros in a few hundred KiB on the wire.
    let mut deflater = Deflater::new(15);
    let bomb = compress(&mut deflater, &vec![0u8; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    client.send_frame(0xC2, &bomb);
    assert_eq!(client.expect_close(), 1009);

    let (mut next, _) = open_offering(&server, "permessage-deflate");
    let mut deflater = Deflater::new(15);
    next.send_frame(0xC1, &compress(&mut deflater, b"still here"));
    let frame = next.read_frame().unwrap();
    assert_eq!(
        (frame.rsv, frame.payload.as_slice()),
        (0, &b"still here"[..])
    );
}

#[test]
fn the_notebook_exchange_runs_compressed_both_ways() {
    let dir = std::env::temp_dir().join(format!("wsloop-deflate-notebook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let handler = wsloop::notebook::NotebookHandler::open(wsloop::notebook::NotebookConfig {
        notebook_dir: dir.clone(),
        ..Default::default()
    })
    .unwrap();
    let server = TestServer::start(
        ServerConfig {
            deflate: Some(DeflateConfig::default()),
            ..ServerConfig::default()
        },
        handler,
    );
    let (mut client, answer) =
        open_path_offering(&server, "/ws", "permessage-deflate; client_max_window_bits");
    assert_eq!(answer.as_deref(), Some("permessage-deflate"));
    let mut deflater = Deflater::new(15);
    let mut inflater = Inflater::new(15);
    let run = include_str!("fixtures/seed_run_paragraph.json");
    client.send_frame(0xC1, &compress(&mut deflater, run.as_bytes()));
    let mut statuses = Vec::new();
    let mut compressed = 0;
    while statuses.len() < 3 {
        let frame = client.read_frame().unwrap();
        assert_eq!(frame.opcode, 1);
        let text = if frame.rsv == 0b100 {
            compressed += 1;
            inflate(&mut inflater, &frame.payload, false)
        } else {
            frame.payload
        };
        let message: serde_json::Value = serde_json::from_slice(&text).unwrap();
        if message["op"] == "NOTES_INFO" && statuses.is_empty() {
            // The scratch note the run creates on a fresh server.
            continue;
        }
        assert_eq!(message["op"], "PARAGRAPH", "{message}");
        statuses.push(
            message["data"]["paragraph"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(statuses, ["PENDING", "RUNNING", "FINISHED"]);
    assert!(compressed >= 1, "PARAGRAPH messages are over the threshold");
    let mut http = RawClient::connect(server.addr);
    http.send_raw(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let (status, _, metrics) = http.read_response();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("\nwsloop_compressed_upgrades_total 1\n"),
        "{metrics}"
    );
    drop(client);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends every message to every open connection.
struct Broadcaster;

impl wsloop::Handler for Broadcaster {
    fn on_message(
        &mut self,
        ctx: &mut wsloop::Context<'_>,
        _from: wsloop::ConnectionId,
        message: wsloop::Message<'_>,
    ) {
        let everyone: Vec<_> = ctx.open_connections().collect();
        assert_eq!(ctx.broadcast(everyone, message), 4);
    }
}

#[test]
fn a_broadcast_reaches_each_recipient_in_its_own_terms() {
    let server = TestServer::start(
        ServerConfig {
            deflate: Some(DeflateConfig {
                min_compress_size: 64,
                ..DeflateConfig::default()
            }),
            ..ServerConfig::default()
        },
        Broadcaster,
    );
    let stateless = "permessage-deflate; server_no_context_takeover";
    let (mut a, _) = open_offering(&server, stateless);
    let (mut b, _) = open_offering(&server, stateless);
    let (mut c, answer) = open_offering(&server, "permessage-deflate");
    assert_eq!(answer.as_deref(), Some("permessage-deflate"));
    let mut plain = common::RawClient::open(server.addr, "/");
    let (mut a_in, mut b_in, mut c_in) = (Inflater::new(15), Inflater::new(15), Inflater::new(15));
    for round in 0..2 {
        let text = format!("round {round}: ").repeat(40);
        a.send_frame(0x81, text.as_bytes());
        let fa = a.read_frame().unwrap();
        let fb = b.read_frame().unwrap();
        let fc = c.read_frame().unwrap();
        let fp = plain.read_frame().unwrap();
        assert_eq!((fa.rsv, fb.rsv, fc.rsv, fp.rsv), (0b100, 0b100, 0b100, 0));
        assert_eq!(fa.payload, fb.payload, "one compression for both stateless");
        assert_eq!(inflate(&mut a_in, &fa.payload, true), text.as_bytes());
        assert_eq!(inflate(&mut b_in, &fb.payload, true), text.as_bytes());
        assert_eq!(inflate(&mut c_in, &fc.payload, false), text.as_bytes());
        assert_eq!(fp.payload, text.as_bytes());
    }
    // Short messages go out plain to everyone.
    a.send_frame(0x81, b"hi");
    for client in [&mut a, &mut b, &mut c, &mut plain] {
        let frame = client.read_frame().unwrap();
        assert_eq!((frame.rsv, frame.payload.as_slice()), (0, &b"hi"[..]));
    }
}
