//! WebSocket behaviour over real sockets: a real client crate (tungstenite)
//! for echo, ping, close and subprotocols; raw frames for fragmentation,
//! violations, limits, keepalive, shutdown and callbacks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RawClient, TestServer};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use wsloop::{
    Accept, CloseCode, ConnectionId, Context, Handler, HttpRequest, HttpResponse, Limits, Message,
    ServerConfig,
};

fn echo_server() -> TestServer {
    TestServer::echo(ServerConfig::default())
}

#[test]
fn tungstenite_client_gets_text_and_binary_echoed() {
    let server = echo_server();
    let (mut socket, response) = tungstenite::connect(server.url("/any/path")).unwrap();
    assert_eq!(response.status(), 101);
    socket
        .send(tungstenite::Message::text("hello wsloop"))
        .unwrap();
    assert_eq!(
        socket.read().unwrap(),
        tungstenite::Message::text("hello wsloop")
    );
    for size in [0usize, 125, 126, 65535, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        socket
            .send(tungstenite::Message::binary(payload.clone()))
            .unwrap();
        match socket.read().unwrap() {
            tungstenite::Message::Binary(echoed) => {
                assert_eq!(echoed.as_ref(), payload.as_slice(), "size {size}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    socket.close(None).unwrap();
}

/// Frames cut by TCP at every kind of place: a read ending inside a
/// header, a small leftover (carried at the front of the shared read
/// buffer), a large one (kept in the connection's own buffer), and the
/// switch between the two within one frame. Every echo must come back
/// whole and in order.
#[test]
fn frames_cut_anywhere_across_separate_reads_are_echoed_intact() {
    let server = echo_server();
    let mut client = RawClient::open(server.addr, "/");
    // Frames larger than the shared read buffer (140 KB, 300 KB, 200 KB)
    // switch the connection to reading into its own buffer, and the small
    // ones after them must still be found there.
    let sizes = [
        10usize, 20_000, 50_000, 5, 140_000, 0, 33_000, 300_000, 1, 200_000, 7,
    ];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(n, &size)| (0..size).map(|i| (i * 31 + n * 7) as u8).collect())
        .collect();
    let stream: Vec<u8> = payloads
        .iter()
        .flat_map(|payload| common::masked_frame(0x82, payload))
        .collect();
    let pieces = [7_000, 13, 1, 31_000, 40_000, 3, 1, 9_000, 70_000, 2];
    let mut start = 0;
    for piece in pieces.iter().cycle() {
        if start == stream.len() {
            break;
        }
        let end = (start + piece).min(stream.len());
        client.send_raw(&stream[start..end]);
        start = end;
        // Separate reads on the server, not one coalesced buffer.
        std::thread::sleep(Duration::from_millis(3));
    }
    for (n, payload) in payloads.iter().enumerate() {
        let frame = client.read_frame().expect("echo");
        assert_eq!(frame.opcode, 2);
        assert!(
            frame.payload == *payload,
            "message {n} ({} bytes)",
            payload.len()
        );
    }
}

#[test]
fn tungstenite_ping_gets_pong_and_close_is_echoed() {
    let server = echo_server();
    let (mut socket, _) = tungstenite::connect(server.url("/")).unwrap();
    socket
        .send(tungstenite::Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    assert_eq!(
        socket.read().unwrap(),
        tungstenite::Message::Pong(b"are you there".to_vec().into())
    );
    socket
        .close(Some(CloseFrame {
            code: TCloseCode::from(4001),
            reason: "bye".into(),
        }))
        .unwrap();
    match socket.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected the close echoed, got {other:?}"),
    }
}

#[test]
fn fragmented_message_with_ping_in_between_is_reassembled() {
    let server = echo_server();
    let mut client = RawClient::open(server.addr, "/");
    client.send_frame(0x01, "frag".as_bytes());
    client.send_frame(0x89, b"mid");
    client.send_frame(0x00, "men".as_bytes());
    client.send_frame(0x80, "té".as_bytes());
    let pong = client.read_frame().unwrap();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (0xA, b"mid".as_slice())
    );
    let echo = client.read_frame().unwrap();
    assert!(echo.fin);
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (1, "fragmenté".as_bytes())
    );
}

#[test]
fn violations_close_with_their_codes_over_the_wire() {
    let server = TestServer::echo(ServerConfig {
        limits: Limits {
            max_frame_size: 1024,
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    let oversized = {
        let mut f = vec![0x82, 0x80 | 126];
        f.extend_from_slice(&2000u16.to_be_bytes());
        f.extend_from_slice(&[1, 2, 3, 4]);
        f // header only: the server must not wait for the payload
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved opcode", common::masked_frame(0x83, b""), 1002),
        ("rsv bits", common::masked_frame(0xF1, b"x"), 1002),
        (
            "invalid utf-8",
            common::masked_frame(0x81, b"\xce\xba\xff"),
            1007,
        ),
        (
            "bad close code",
            common::masked_frame(0x88, &999u16.to_be_bytes()),
            1002,
        ),
        ("oversized frame", oversized, 1009),
    ];
    for (name, wire, code) in cases {
        let mut client = RawClient::open(server.addr, "/");
        client.send_raw(&wire);
        assert_eq!(client.expect_close(), code, "{name}");
        client.expect_eof();
    }
}

/// Records every callback, to check there is exactly one open and one close
/// per connection whatever the path.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<(ConnectionId, String)>>>,
}

impl Handler for Recorder {
    fn on_http(&mut self, _ctx: &mut Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        HttpResponse::text(200, format!("you asked for {}\n", request.path()))
    }

    fn on_upgrade(
        &mut self,
        _ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> Result<Accept, HttpResponse> {
        if request.path() == "/forbidden" {
            return Err(HttpResponse::text(403, "not here\n"));
        }
        Ok(Accept::preferring(request, &["superchat", "chat"]))
    }

    fn on_open(&mut self, _ctx: &mut Context<'_>, id: ConnectionId, request: &HttpRequest<'_>) {
        self.events
            .lock()
            .unwrap()
            .push((id, format!("open {}", request.target)));
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnectionId, message: Message<'_>) {
        match message {
            Message::Text("close me") => ctx.close(id, CloseCode(4000), "as you wish"),
            Message::Text("broadcast") => {
                let everyone: Vec<_> = ctx.open_connections().collect();
                ctx.broadcast(everyone, Message::Text("to all"));
            }
            other => {
                let _ = ctx.send(id, other);
            }
        }
    }

    fn on_close(
        &mut self,
        _ctx: &mut Context<'_>,
        id: ConnectionId,
        code: CloseCode,
        _reason: &str,
    ) {
        self.events
            .lock()
            .unwrap()
            .push((id, format!("close {code}")));
    }
}

impl Recorder {
    fn events_for(&self, open_target: &str) -> Vec<String> {
        let events = self.events.lock().unwrap();
        let id = events
            .iter()
            .find(|(_, e)| *e == format!("open {open_target}"))
            .map(|(id, _)| *id)
            .unwrap_or_else(|| panic!("no open for {open_target}: {events:?}"));
        events
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("condition not met within 2 s");
}

#[test]
fn exactly_one_open_and_one_close_per_connection_whatever_the_path() {
    let recorder = Recorder::default();
    let mut server = TestServer::start(
        ServerConfig {
            limits: Limits {
                close_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
            ..ServerConfig::default()
        },
        recorder.clone(),
    );

    let mut peer_close = RawClient::open(server.addr, "/peer-close");
    peer_close.send_frame(0x88, &4100u16.to_be_bytes());
    assert_eq!(peer_close.expect_close(), 4100);

    let mut violation = RawClient::open(server.addr, "/violation");
    violation.send_raw(&[0x81, 0x01, b'x']);
    assert_eq!(violation.expect_close(), 1002);

    let vanish = RawClient::open(server.addr, "/vanish");
    drop(vanish);

    let mut server_close = RawClient::open(server.addr, "/server-close");
    server_close.send_frame(0x81, b"close me");
    assert_eq!(server_close.expect_close(), 4000);
    server_close.send_frame(0x88, &4000u16.to_be_bytes());
    server_close.expect_eof();

    let mut silent = RawClient::open(server.addr, "/silent-at-close");
    let mut shutdown = RawClient::open(server.addr, "/shutdown");

    let refused = {
        let mut c = RawClient::connect(server.addr);
        c.send_raw(common::upgrade_request("/forbidden", "").as_bytes());
        c.read_response()
    };
    assert_eq!(refused.0, 403);

    wait_for(|| recorder.events.lock().unwrap().len() >= 2 * 4 + 2);
    server.request_stop();
    assert_eq!(shutdown.expect_close(), 1001);
    shutdown.send_frame(0x88, &1001u16.to_be_bytes());
    shutdown.expect_eof();
    assert_eq!(silent.expect_close(), 1001);
    // `silent` never answers: the server drops it after the close timeout.
    silent.expect_eof();
    server.join();

    let expect = |target: &str, close: &str| {
        assert_eq!(
            recorder.events_for(target),
            [format!("open {target}"), close.to_owned()],
            "{target}"
        );
    };
    expect("/peer-close", "close 4100");
    expect("/violation", "close 1002");
    expect("/vanish", "close 1006");
    expect("/server-close", "close 4000");
    expect("/shutdown", "close 1001");
    expect("/silent-at-close", "close 1006");
    let events = recorder.events.lock().unwrap();
    assert!(
        events.iter().all(|(_, e)| !e.contains("forbidden")),
        "refused upgrade got callbacks"
    );
    assert_eq!(events.len(), 12);
}

#[test]
fn subprotocol_is_chosen_from_what_was_offered() {
    let server = TestServer::start(ServerConfig::default(), Recorder::default());
    let mut client = RawClient::connect(server.addr);
    client.send_raw(
        common::upgrade_request("/", "Sec-WebSocket-Protocol: chat, superchat\r\n").as_bytes(),
    );
    let (status, head, _) = client.read_response_head();
    assert_eq!(status, 101);
    assert!(
        head.contains("Sec-WebSocket-Protocol: superchat\r\n"),
        "{head}"
    );

    let mut client = RawClient::connect(server.addr);
    client.send_raw(common::upgrade_request("/", "Sec-WebSocket-Protocol: mqtt\r\n").as_bytes());
    let (status, head, _) = client.read_response_head();
    assert_eq!(status, 101);
    assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
}

#[test]
fn http_hook_and_upgrade_refusal_answer_with_the_applications_status() {
    let server = TestServer::start(ServerConfig::default(), Recorder::default());
    let mut client = RawClient::connect(server.addr);
    client.send_raw(b"GET /page?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, _, body) = client.read_response();
    assert_eq!((status, body.as_str()), (200, "you asked for /page\n"));
}

#[test]
fn broadcast_reaches_every_open_connection() {
    let server = TestServer::start(ServerConfig::default(), Recorder::default());
    let mut a = RawClient::open(server.addr, "/a");
    let mut b = RawClient::open(server.addr, "/b");
    let mut c = RawClient::open(server.addr, "/c");
    a.send_frame(0x81, b"ping-all");
    assert_eq!(a.read_frame().unwrap().payload, b"ping-all");
    a.send_frame(0x81, b"broadcast");
    for client in [&mut a, &mut b, &mut c] {
        let frame = client.read_frame().unwrap();
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (1, b"to all".as_slice())
        );
    }
}

#[test]
fn keepalive_pings_a_silent_peer_then_closes_1011() {
    let server = TestServer::echo(ServerConfig {
        limits: Limits {
            ping_interval: Duration::from_millis(200),
            pong_timeout: Duration::from_millis(200),
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    let mut client = RawClient::open(server.addr, "/");
    let ping = client.read_frame().unwrap();
    assert_eq!((ping.opcode, ping.payload.len()), (9, 0));
    assert_eq!(client.expect_close(), 1011);

    // A peer that answers stays open across several intervals.
    let mut lively = RawClient::open(server.addr, "/");
    for _ in 0..3 {
        let ping = lively.read_frame().unwrap();
        assert_eq!(ping.opcode, 9);
        lively.send_frame(0x8A, &ping.payload);
    }
    lively.send_frame(0x81, b"still here");
    loop {
        let frame = lively.read_frame().unwrap();
        if frame.opcode == 1 {
            assert_eq!(frame.payload, b"still here");
            break;
        }
        assert_eq!(frame.opcode, 9);
    }
}

#[test]
fn a_last_message_arriving_with_the_fin_ends_the_connection_at_once() {
    let recorder = Recorder::default();
    let server = TestServer::start(ServerConfig::default(), recorder.clone());
    let mut client = RawClient::open(server.addr, "/half-close");
    // The message and the FIN in one go: one readable + read-closed event.
    let mut wire = common::masked_frame(0x81, b"last words");
    wire.extend(common::masked_frame(0x81, b"and more"));
    client.send_raw(&wire);
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(client.read_frame().unwrap().payload, b"last words");
    assert_eq!(client.read_frame().unwrap().payload, b"and more");
    // Noticed now, not when keepalive gives up 30 s later.
    wait_for(|| recorder.events_for("/half-close").len() == 2);
    assert_eq!(recorder.events_for("/half-close")[1], "close 1006");
}
