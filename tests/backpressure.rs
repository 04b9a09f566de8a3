//! A peer that stops reading must not make the server buffer without bound:
//! reading pauses at the soft limit, nothing is lost when the peer resumes,
//! and an application that keeps writing past the hard limit gets 1008.

mod common;

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use common::{RawClient, ServerFrame, TestServer, masked_frame, with_limits};
use wsloop::{ConnectionId, Context, Handler, Limits, Message};

#[test]
fn client_that_stops_reading_is_paused_and_loses_nothing() {
    let server = TestServer::echo(with_limits(Limits {
        write_buffer_soft: 256 * 1024,
        ..Limits::default()
    }));
    let mut client = RawClient::open(server.addr, "/");
    let payload: Vec<u8> = (0..16 * 1024).map(|i| (i % 253) as u8).collect();
    let frame = masked_frame(0x82, &payload);

    // Push echo requests without reading any reply. Once the server has
    // queued its soft limit it stops reading, the kernel buffers fill, and
    // our writes stall. Without backpressure they would go on forever.
    client.stream.set_nonblocking(true).unwrap();
    let budget: usize = 512 * 1024 * 1024;
    let mut written = 0usize;
    let mut stalled_since: Option<Instant> = None;
    let mut pending = &frame[..];
    let mut frames_sent = 0usize;
    while written < budget {
        match client.stream.write(pending) {
            Ok(n) => {
                written += n;
                pending = &pending[n..];
                if pending.is_empty() {
                    frames_sent += 1;
                    pending = &frame[..];
                }
                stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(
        written < budget,
        "the server kept reading {written} bytes from a peer that never read"
    );
    // Finish the partial frame, then read everything back, in order.
    client.stream.set_nonblocking(false).unwrap();
    if pending.len() != frame.len() {
        let reader = client.stream.try_clone().unwrap();
        let rest = pending.to_vec();
        let writer = std::thread::spawn(move || {
            let mut s = reader;
            s.write_all(&rest).unwrap();
        });
        frames_sent += 1;
        for i in 0..frames_sent {
            let echo = client.read_frame().expect("echo");
            assert_eq!(echo.payload, payload, "echo {i} of {frames_sent}");
        }
        writer.join().unwrap();
    } else {
        for i in 0..frames_sent {
            let echo = client.read_frame().expect("echo");
            assert_eq!(echo.payload, payload, "echo {i} of {frames_sent}");
        }
    }
    // And the connection still works normally.
    client.send_frame(0x81, b"after");
    assert_eq!(client.read_frame().unwrap().payload, b"after");
}

#[test]
fn a_slow_reader_with_its_input_paused_is_not_taken_for_dead() {
    // Keepalive far shorter than the time the peer needs to take the
    // stream: while the backlog pauses reading, its pongs sit unread, and
    // only its taking the output shows it is alive.
    let limits = Limits {
        write_buffer_soft: 256 * 1024,
        write_buffer_hard: 32 * 1024 * 1024,
        ping_interval: Duration::from_millis(300),
        pong_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start(with_limits(limits), Streamer);
    let mut client = RawClient::open(server.addr, "/");
    client.send_frame(0x81, b"200");
    let mut received = 0;
    let started = Instant::now();
    while received < 200 {
        let frame = next_answering_pings(&mut client);
        match frame.opcode {
            2 => received += 1,
            8 => panic!(
                "closed with {} after {received} messages and {:?}",
                frame.close_code(),
                started.elapsed()
            ),
            other => panic!("unexpected opcode {other}"),
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    // The connection is still open and served.
    client.send_frame(0x81, b"1");
    let frame = next_answering_pings(&mut client);
    assert_eq!(frame.opcode, 2, "close code {}", frame.close_code());
}

/// The next frame that is not a ping; pings met on the way are answered,
/// as a live client's library does.
fn next_answering_pings(client: &mut RawClient) -> ServerFrame {
    loop {
        let frame = client.read_frame().expect("a frame");
        if frame.opcode != 9 {
            return frame;
        }
        client.send_frame(0x8A, &frame.payload);
    }
}

/// On a text message "N", queues N messages of 64 KiB at once.
struct Streamer;

impl Handler for Streamer {
    fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnectionId, message: Message<'_>) {
        let count: usize = std::str::from_utf8(message.as_bytes())
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0);
        let chunk = vec![0x3C; 64 * 1024];
        for _ in 0..count {
            ctx.send_binary(id, &chunk).expect("within the hard limit");
        }
    }
}

/// On "flood", sends 256 KiB messages until the server refuses.
struct Flooder;

impl Handler for Flooder {
    fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnectionId, _message: Message<'_>) {
        let chunk = vec![0x5A; 256 * 1024];
        for _ in 0..1000 {
            if ctx.send_binary(id, &chunk).is_err() {
                return;
            }
        }
        panic!("sends were never refused");
    }
}

#[test]
fn application_writing_past_the_hard_limit_closes_with_1008() {
    let limits = Limits {
        write_buffer_soft: 512 * 1024,
        write_buffer_hard: 2 * 1024 * 1024,
        close_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let server = TestServer::start(with_limits(limits), Flooder);
    let mut client = RawClient::open(server.addr, "/");
    client.send_frame(0x81, b"flood");
    let mut binary_frames = 0;
    let code = loop {
        let frame = client.read_frame().expect("frames then a close");
        match frame.opcode {
            2 => {
                assert_eq!(frame.payload.len(), 256 * 1024);
                binary_frames += 1;
            }
            8 => break frame.close_code(),
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(code, 1008);
    // Whole frames up to the limit (2 MiB queued, plus what the kernel's
    // socket buffers took), then the close: far fewer than the 1,000 sent.
    assert!(
        (8..=100).contains(&binary_frames),
        "{binary_frames} frames before the close"
    );
}
