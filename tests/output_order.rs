//! The order of what the server writes: echoes written straight from the
//! read they arrived in, frames copied into the output buffer, control
//! frames and the handler's own messages reach the peer in the order they
//! were sent, whichever way each one took to the socket.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{RawClient, TestServer, masked_frame, with_limits};
use wsloop::{ConnectionId, Context, Handler, Limits, Message, ServerConfig};

/// Message `index` of the ordering test: its size cycles through sizes
/// that are written from the read they arrived in (9 KiB, 20 KiB, 40 KiB)
/// and sizes copied into the output buffer (3 KiB, 700 B), and every byte
/// says which message it belongs to.
fn numbered_payload(index: usize) -> Vec<u8> {
    const SIZES: [usize; 5] = [9 * 1024, 20 * 1024, 3 * 1024, 40 * 1024, 700];
    let size = SIZES[index % SIZES.len()] + index;
    (0..size).map(|i| (index * 31 + i) as u8).collect()
}

#[test]
fn echoes_keep_their_order_whether_written_at_once_or_queued() {
    // A peer that reads late, then slowly: once the kernel's buffers are
    // full the server's writes end part way, its output waits, reading
    // pauses at the soft limit, and echoes written from the read they
    // arrived in and echoes copied into the output buffer all have to
    // come out in the order they were sent.
    let server = TestServer::echo(with_limits(Limits {
        write_buffer_soft: 128 * 1024,
        ..Limits::default()
    }));
    let mut client = RawClient::open(server.addr, "/");
    const MESSAGES: usize = 600;
    let mut writer = client.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for index in 0..MESSAGES {
            writer
                .write_all(&masked_frame(0x82, &numbered_payload(index)))
                .unwrap();
            // Every third group of five goes one message per read (each
            // the last of its read); the others as a burst, so one read
            // holds frames written from it followed by frames copied.
            let alone = (index / 5) % 3 == 0;
            if alone || index % 5 == 4 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    });
    // Not reading for a while lets the socket fill up first; reading
    // slowly then keeps it nearly full, so the output buffer drains and
    // fills again many times.
    std::thread::sleep(Duration::from_millis(300));
    for index in 0..MESSAGES {
        if index % 8 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let echo = client.read_frame().expect("echo");
        assert_eq!(echo.opcode, 2);
        let expected = numbered_payload(index);
        assert!(
            echo.payload == expected,
            "echo {index}: {} bytes, expected {} (first byte {:?}, expected {})",
            echo.payload.len(),
            expected.len(),
            echo.payload.first(),
            expected[0]
        );
    }
    sender.join().unwrap();
}

#[test]
fn a_pong_keeps_its_place_between_echoes_written_from_the_read() {
    let server = TestServer::echo(ServerConfig::default());
    let mut client = RawClient::open(server.addr, "/");
    let first = vec![0xA1; 9 * 1024];
    let second = vec![0xB2; 10 * 1024];
    // One write, so the server most likely reads all three together: the
    // first echo is written from the read, the pong is queued, and the
    // second echo must then queue behind the pong.
    let mut bytes = masked_frame(0x82, &first);
    bytes.extend_from_slice(&masked_frame(0x89, b"between"));
    bytes.extend_from_slice(&masked_frame(0x82, &second));
    client.send_raw(&bytes);
    let frames: Vec<(u8, Vec<u8>)> = (0..3)
        .map(|_| {
            let frame = client.read_frame().expect("a frame");
            (frame.opcode, frame.payload)
        })
        .collect();
    assert_eq!(
        frames,
        vec![(2, first), (0xA, b"between".to_vec()), (2, second)],
        "echo, pong, echo"
    );
}

/// Echoes each message, then sends a large message of its own (not part
/// of any read, so it may go straight to an idle socket).
struct EchoThenOwn;

const OWN_LEN: usize = 40 * 1024;

impl Handler for EchoThenOwn {
    fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnectionId, message: Message<'_>) {
        ctx.send_binary(id, message.as_bytes()).unwrap();
        let own = vec![message.as_bytes()[0] ^ 0xFF; OWN_LEN];
        ctx.send_binary(id, &own).unwrap();
    }
}

#[test]
fn a_large_message_of_the_handlers_own_waits_behind_an_echo_written_from_the_read() {
    let server = TestServer::start(ServerConfig::default(), EchoThenOwn);
    let mut client = RawClient::open(server.addr, "/");
    for round in 0..20u8 {
        let payload = vec![round; 12 * 1024];
        client.send_frame(0x82, &payload);
        let echo = client.read_frame().expect("the echo");
        assert_eq!(echo.payload, payload, "round {round}: the echo first");
        let own = client.read_frame().expect("the handler's own message");
        assert_eq!(own.payload, vec![round ^ 0xFF; OWN_LEN], "round {round}");
    }
}

#[test]
fn echoes_keep_their_order_for_peers_read_in_the_same_batch() {
    // Several peers sending bursts at once, so one wakeup reads several
    // connections: each read's echoes go out together at its end, and
    // every peer still gets its own echoes, whole and in order.
    let server = TestServer::echo(ServerConfig::default());
    const PEERS: usize = 4;
    const MESSAGES: usize = 150;
    let peers: Vec<_> = (0..PEERS)
        .map(|peer| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut client = RawClient::open(addr, "/");
                let mut writer = client.stream.try_clone().unwrap();
                let sender = std::thread::spawn(move || {
                    for burst in 0..MESSAGES / 5 {
                        let mut bytes = Vec::new();
                        for index in burst * 5..burst * 5 + 5 {
                            bytes.extend(masked_frame(0x82, &numbered_payload(index + peer)));
                        }
                        writer.write_all(&bytes).unwrap();
                    }
                });
                for index in 0..MESSAGES {
                    let echo = client.read_frame().expect("echo");
                    assert!(
                        echo.payload == numbered_payload(index + peer),
                        "peer {peer}, echo {index}: {} bytes",
                        echo.payload.len()
                    );
                }
                sender.join().unwrap();
            })
        })
        .collect();
    for peer in peers {
        peer.join().unwrap();
    }
}
