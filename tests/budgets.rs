//! Server-wide and per-address budgets: the bytes all connections hold in
//! buffers stay within a budget (the largest holders closed first, a
//! reading client unharmed), and no one client address can take every
//! socket: per-address limits refuse it at accept, and at the socket limit
//! a new client takes the socket of the oldest handshake.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{RawClient, TestServer, closed_without_answer, connect_from, metric, upgrade_request};
use wsloop::{ConnectionId, Context, Handler, HttpRequest, HttpResponse, Message, ServerConfig};

/// The size of every message the test application queues.
const CHUNK: usize = 256 * 1024;
/// A receive buffer small enough that a client that does not read leaves
/// nearly all the server's output in the server.
const SMALL_RECEIVE_BUFFER: usize = 4096;

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// On "fill N", queues N messages of [`CHUNK`] bytes to the sender; on
/// "broadcast", one to every open connection; echoes anything else.
/// Answers `/healthz` and `/metrics`.
struct Filler {
    chunk: Vec<u8>,
}

impl Filler {
    fn new() -> Filler {
        Filler {
            chunk: vec![0x42; CHUNK],
        }
    }
}

impl Handler for Filler {
    fn on_http(&mut self, ctx: &mut Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        match request.target {
            "/healthz" => HttpResponse::text(200, "ok\n"),
            "/metrics" => {
                let mut out = String::new();
                ctx.stats().write_prometheus(&mut out);
                HttpResponse::text(200, out)
            }
            _ => HttpResponse::not_found(),
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnectionId, message: Message<'_>) {
        let text = std::str::from_utf8(message.as_bytes()).unwrap_or("");
        if text == "broadcast" {
            let everyone: Vec<ConnectionId> = ctx.open_connections().collect();
            ctx.broadcast(everyone, Message::Binary(&self.chunk));
        } else if let Some(count) = text.strip_prefix("fill ") {
            for _ in 0..count.parse().unwrap_or(0) {
                if ctx.send_binary(id, &self.chunk).is_err() {
                    break;
                }
            }
        } else {
            let _ = ctx.send(id, message);
        }
    }
}

fn with_budget(bytes: usize) -> ServerConfig {
    ServerConfig {
        max_buffered_total: bytes,
        ..ServerConfig::default()
    }
}

/// A WebSocket client with a small receive buffer, which reads nothing
/// after the `101` until the test says so.
fn open_non_reading(addr: SocketAddr) -> RawClient {
    let stream = connect_from(Ipv4Addr::LOCALHOST, addr, Some(SMALL_RECEIVE_BUFFER));
    let mut client = RawClient::from_stream(stream);
    client.send_raw(upgrade_request("/", "").as_bytes());
    let (status, head, _) = client.read_response_head();
    assert_eq!(status, 101, "{head}");
    client
}

/// Waits until the server has taken `count` data messages in all.
fn wait_for_messages_in(addr: SocketAddr, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(addr, "wsloop_messages_in_total") != Some(count) {
        assert!(
            Instant::now() < deadline,
            "the server never took {count} messages"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn buffered_bytes(addr: SocketAddr) -> u64 {
    metric(addr, "wsloop_buffered_bytes").expect("wsloop_buffered_bytes in /metrics")
}

/// Reads `client`'s frames until its close frame (returning the number of
/// binary frames before it and its code) or until `expected` binary frames
/// came (then the code is `None`: the connection is still open).
fn read_until_close(client: &mut RawClient, expected: usize) -> (usize, Option<u16>) {
    let mut binary = 0;
    while binary < expected {
        let frame = client
            .read_frame()
            .expect("a frame, not the end of the stream");
        match frame.opcode {
            2 => {
                assert_eq!(frame.payload.len(), CHUNK);
                binary += 1;
            }
            8 => return (binary, Some(frame.close_code())),
            other => panic!("unexpected opcode {other}"),
        }
    }
    (binary, None)
}

/// Sends a text message and expects it back.
fn assert_echoes(client: &mut RawClient, text: &str) {
    client.send_frame(0x81, text.as_bytes());
    let frame = client.read_frame().expect("the echo");
    assert_eq!(frame.payload, text.as_bytes());
}

#[test]
fn past_the_budget_the_largest_holder_is_closed_first() {
    const BUDGET: usize = 16 << 20;
    let server = TestServer::start(with_budget(BUDGET), Filler::new());
    let mut reader = RawClient::open(server.addr, "/");
    // 15 MiB for a client that does not read (the per-connection hard
    // limit, 16 MiB, is not reached)...
    let mut big = open_non_reading(server.addr);
    big.send_frame(0x81, b"fill 60");
    wait_for_messages_in(server.addr, 1);
    // ...then 6 MiB for each of a few others, until the total passes the
    // budget. (The kernel takes a few MiB of each: the server holds less.)
    // The one whose queue takes it past is not the largest.
    let mut small = Vec::new();
    while metric(server.addr, "wsloop_budget_closes_total").unwrap_or(0) == 0 {
        assert!(small.len() < 8, "the budget never acted");
        let mut client = open_non_reading(server.addr);
        client.send_frame(0x81, b"fill 24");
        small.push(client);
        wait_for_messages_in(server.addr, 1 + small.len() as u64);
    }
    assert_eq!(metric(server.addr, "wsloop_budget_closes_total"), Some(1));
    assert!(buffered_bytes(server.addr) <= BUDGET as u64);
    assert_echoes(&mut reader, "still served");
    // The big holder got what was on its way, then 1008; the others all
    // of theirs, and they are still open.
    let (received, code) = read_until_close(&mut big, 60);
    assert_eq!(code, Some(1008), "after {received} messages");
    assert!(received < 60);
    for client in &mut small {
        assert_eq!(read_until_close(client, 24), (24, None));
        assert_echoes(client, "still open");
    }
}

#[test]
fn watchers_that_never_read_are_closed_and_the_total_stays_within_the_budget() {
    const BUDGET: usize = 16 << 20;
    const WATCHERS: usize = 16;
    const ROUNDS: usize = 24;
    let server = TestServer::start(with_budget(BUDGET), Filler::new());
    let mut watchers: Vec<RawClient> = (0..WATCHERS)
        .map(|_| open_non_reading(server.addr))
        .collect();
    // 16 x 24 x 256 KiB = 96 MiB for the watchers, none of it read.
    let mut reader = RawClient::open(server.addr, "/");
    for round in 1..=ROUNDS {
        reader.send_frame(0x81, b"broadcast");
        assert_eq!(read_until_close(&mut reader, 1), (1, None), "round {round}");
        let held = buffered_bytes(server.addr);
        assert!(
            held <= BUDGET as u64,
            "{held} bytes held after round {round}"
        );
    }
    assert_echoes(&mut reader, "still served");
    let mut closed = 0;
    for watcher in &mut watchers {
        match read_until_close(watcher, ROUNDS) {
            (_, Some(code)) => {
                assert_eq!(code, 1008);
                closed += 1;
            }
            (received, None) => assert_eq!(received, ROUNDS),
        }
    }
    // Of the 96 MiB sent, the kernel takes a few MiB per watcher and the
    // server may keep 16: 4 watchers' worth here, with 12 closed.
    assert!(closed >= WATCHERS / 2, "{closed} of {WATCHERS} closed");
    let closes = metric(server.addr, "wsloop_budget_closes_total").unwrap();
    assert!(closes >= closed as u64, "{closes} budget closes");
}

/// Opens `count` connections from `from`, each sending the start of a
/// request head and nothing more.
fn slow_handshakes(from: Ipv4Addr, addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = connect_from(from, addr, None);
            std::io::Write::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect()
}

/// `/healthz` from `from` answers 200, then a WebSocket from it opens.
fn assert_served_from(from: Ipv4Addr, addr: SocketAddr) -> RawClient {
    let mut health = RawClient::from_stream(connect_from(from, addr, None));
    health.send_raw(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(health.read_response().0, 200);
    RawClient::open_from(from, addr, "/")
}

/// How many of `streams` the server closed without a word, waiting up to
/// `wait` on each: a refusal that has happened shows at once, so a long
/// wait only costs time on those that are still held.
fn count_refused(streams: &[TcpStream], wait: Duration) -> usize {
    streams
        .iter()
        .filter(|stream| closed_without_answer(stream, wait))
        .count()
}

/// Long enough for a refusal still on its way.
const REFUSAL_ARRIVES: Duration = Duration::from_secs(5);
/// For sockets whose refusal, if any, has arrived already (the server
/// served a later connection since).
const REFUSAL_ARRIVED: Duration = Duration::from_millis(20);

#[test]
fn one_address_cannot_take_the_last_socket() {
    // Two WebSockets at most, so 2 + 0 + 64 = 66 sockets; 64 handshakes
    // per address by default.
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    assert_eq!(config.max_sockets(), 66);
    let server = TestServer::start(config, Filler::new());
    let attacker = slow_handshakes(ATTACKER, server.addr, 70);
    let mut client = assert_served_from(NEIGHBOUR, server.addr);
    assert_echoes(&mut client, "in");
    assert_eq!(count_refused(&attacker, REFUSAL_ARRIVED), 70 - 64);
}

#[test]
fn at_the_socket_limit_a_new_client_takes_the_oldest_handshakes_socket() {
    let config = ServerConfig {
        max_connections: 2,
        max_connections_per_address: 1000,
        max_handshakes_per_address: 1000,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config, Filler::new());
    // One address holds every socket.
    let attacker = slow_handshakes(ATTACKER, server.addr, 70);
    assert_eq!(count_refused(&attacker[66..], REFUSAL_ARRIVES), 4);
    // Young handshakes are not pushed out (those four were refused); once
    // a second old, the oldest are: one for /healthz, one for the
    // WebSocket.
    std::thread::sleep(Duration::from_millis(1500));
    let mut client = assert_served_from(NEIGHBOUR, server.addr);
    assert_echoes(&mut client, "in");
    assert_eq!(count_refused(&attacker[..2], REFUSAL_ARRIVED), 2);
    assert_eq!(count_refused(&attacker[2..66], REFUSAL_ARRIVED), 0);
}

#[test]
fn the_connection_limit_per_address_refuses_the_next_and_not_others() {
    let config = ServerConfig {
        max_connections_per_address: 4,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config, Filler::new());
    let mut open: Vec<RawClient> = (0..4)
        .map(|_| RawClient::open_from(ATTACKER, server.addr, "/"))
        .collect();
    let mut fifth = connect_from(ATTACKER, server.addr, None);
    std::io::Write::write_all(&mut fifth, upgrade_request("/", "").as_bytes()).unwrap();
    assert!(closed_without_answer(&fifth, REFUSAL_ARRIVES));
    let mut other = RawClient::open_from(NEIGHBOUR, server.addr, "/");
    assert_echoes(&mut other, "other address");
    for client in &mut open {
        assert_echoes(client, "still open");
    }
    assert_eq!(
        metric(
            server.addr,
            "wsloop_refused_at_accept_total{reason=\"address_connections\"}"
        ),
        Some(1)
    );
}
