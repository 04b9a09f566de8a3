//! What compressed messages may cost the server: an unfinished one costs
//! the bytes that arrived, not what they inflate to, and inflating a large
//! one does not stop the loop from serving everyone else.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{RawClient, TestServer, Wsloop, masked_frame, upgrade_request};
use wsloop::proto::deflate::{Deflater, Inflater};
use wsloop::proto::extensions::DeflateConfig;
use wsloop::{ConnectionId, Context, Handler, Limits, Message, ServerConfig};

/// `data` compressed as hard as DEFLATE can, as an attacker would.
fn deflated_best(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(Deflater::with_level(15, 9).compress_message(data, &mut out, true));
    out
}

/// Opens a WebSocket offering permessage-deflate, which must be agreed.
fn open_compressed(addr: std::net::SocketAddr) -> RawClient {
    let mut client = RawClient::connect(addr);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    client.send_raw(upgrade_request("/", offer).as_bytes());
    let (status, head, _) = client.read_response_head();
    assert_eq!(status, 101, "{head}");
    assert!(head.contains("permessage-deflate"), "{head}");
    client
}

/// Resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_hundred_unfinished_compressed_messages_cost_what_arrived() {
    // 15 MiB of zeros compress to about 15 KB: before, each first
    // fragment was inflated on arrival, 1.5 GiB for the hundred.
    let zeros = vec![0u8; 15 * 1024 * 1024];
    let bomb = deflated_best(&zeros);
    assert!(bomb.len() < 20_000, "{} bytes", bomb.len());
    let server = Wsloop::start("", &["--echo", "--deflate"]);
    let pid = server.child.id();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut client = open_compressed(server.addr);
        // First fragment (RSV1, no FIN), then a ping: its pong says the
        // fragment was processed.
        client.send_frame(0x42, &bomb);
        client.send_frame(0x89, b"processed?");
        let pong = client.read_frame().unwrap();
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (10, &b"processed?"[..])
        );
        clients.push(client);
    }
    let resident = resident_bytes(pid);
    eprintln!(
        "{} MiB resident with 100 unfinished messages",
        resident >> 20
    );
    assert!(
        resident < 300 * 1024 * 1024,
        "{} MiB resident with 100 unfinished messages",
        resident >> 20
    );
    // The messages are still deliverable whole: finish one, get its echo.
    let client = &mut clients[0];
    client.send_frame(0x80, b"");
    let echo = client.read_frame().unwrap();
    assert_eq!((echo.opcode, echo.rsv), (2, 0b100));
    let mut inflated = Vec::new();
    let mut inflater = Inflater::new(15);
    inflater
        .inflate(&echo.payload, &mut inflated, 16 << 20)
        .unwrap();
    inflater
        .finish_message(&mut inflated, 16 << 20, false)
        .unwrap();
    assert!(inflated == zeros, "{} bytes echoed", inflated.len());
    drop(clients);
    drop(server);
}

/// Counts the messages it gets and does nothing else.
struct Sink(Arc<AtomicUsize>);

impl Handler for Sink {
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnectionId, message: Message<'_>) {
        assert!(message.len() > 15 << 20);
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends `frame` over and over until `stop`, a write at a time so that a
/// stalled write (the server not reading) can notice the stop without
/// cutting a frame short.
fn send_until(mut stream: TcpStream, frame: &[u8], stop: &AtomicBool) {
    stream
        .set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut pending = frame;
    while !stop.load(Ordering::Relaxed) {
        match stream.write(pending) {
            Ok(n) => {
                pending = &pending[n..];
                if pending.is_empty() {
                    pending = frame;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

#[test]
fn a_bystander_is_served_while_four_peers_send_inflation_bombs() {
    let delivered = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(
        ServerConfig {
            deflate: Some(DeflateConfig::default()),
            limits: Limits {
                close_timeout: Duration::from_secs(1),
                ..Limits::default()
            },
            ..ServerConfig::default()
        },
        Sink(delivered.clone()),
    );
    // 15 MiB of JSON text in about 15 KB.
    let mut json = String::from(r#"{"op":"PING","data":""#);
    json.push_str(&"a".repeat(15 * 1024 * 1024));
    json.push_str(r#""}"#);
    let frame = masked_frame(0xC1, &deflated_best(json.as_bytes()));
    assert!(frame.len() < 20_000, "{} bytes", frame.len());

    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let stream = open_compressed(server.addr).stream;
            let (frame, stop) = (frame.clone(), stop.clone());
            std::thread::spawn(move || send_until(stream, &frame, &stop))
        })
        .collect();

    // One small round trip every 10 ms, for four seconds.
    let mut bystander = RawClient::open(server.addr, "/");
    let mut round_trips = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let sent = Instant::now();
        bystander.send_frame(0x89, b"rtt");
        let pong = bystander.read_frame().unwrap();
        assert_eq!(pong.opcode, 10);
        round_trips.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
    round_trips.sort();
    let p99 = round_trips[round_trips.len() * 99 / 100];
    let max = *round_trips.last().unwrap();
    let delivered = delivered.load(Ordering::Relaxed);
    eprintln!(
        "{} round trips: median {:?}, p99 {p99:?}, max {max:?}; {delivered} messages of 15 MiB delivered",
        round_trips.len(),
        round_trips[round_trips.len() / 2],
    );
    assert!(
        delivered >= 4,
        "the bombs were inflated, {delivered} of them"
    );
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    assert!(max < Duration::from_millis(500), "max {max:?}");
}
