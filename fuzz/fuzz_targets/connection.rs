//! Connection state machine, driven from the first byte as the server
//! drives it: a request head (with a permessage-deflate offer when the top
//! bit of the first input byte is set; window bits, context takeover and
//! threshold of the server's config from its other bits) arrives in chunks
//! (size from the second byte) through `handle_head` and is accepted with
//! `accept_upgrade`; then a script read from the input, one operation per
//! byte pair (op, arg): bytes arrive and are received as the server does
//! (messages echoed back), the application sends the three ways the
//! server's writer sends (queued; direct, the socket taking part of the
//! frame; gathered, frames written from elsewhere with the rest queued
//! ahead), or closes, time advances and `handle_timeout` runs, the socket takes
//! some output, the buffer budget sheds the connection, or the peer goes
//! away (`abort`).
//! Checks:
//! - no panic;
//! - the phase only moves forward (Open → Closing → Closed);
//! - `poll_close_report` returns `Some` at most once, and only when Closed;
//! - everything written after the `101` response parses as unmasked, final
//!   server frames (`frame::parse_header`), control payloads fit 125 bytes,
//!   close payloads are valid, text is UTF-8, and no frame follows a close;
//! - with permessage-deflate on, compressed server frames inflate, in order,
//!   with one inflater, and compressed text inflates to UTF-8.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wsloop::proto::decoder::parse_close_payload;
use wsloop::proto::deflate::Inflater;
use wsloop::proto::extensions::DeflateConfig;
use wsloop::proto::frame::{EncodedHeader, OpCode, RSV1, parse_header};
use wsloop::proto::handshake::HEADER_SLOTS;
use wsloop::proto::{
    CloseCode, Connection, Decoder, Head, Limits, Message, Phase, Received,
};

/// Codes the application may close with.
const CLOSE_CODES: [u16; 8] = [1000, 1001, 1003, 1008, 1011, 3000, 4000, 4999];

/// The client's request head, before its last empty line.
const REQUEST: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n";

/// Frames recorded for a gathered write: written from elsewhere later,
/// ahead of whatever was queued meanwhile.
type Recorded = Vec<(EncodedHeader, Vec<u8>)>;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame_size: 1 << 16,
        max_message_size: 1 << 17,
        max_fragments: 64,
        // Small enough that compressed messages inflate in several slices.
        inflate_slice: 4096,
        write_buffer_hard: 1024,
        ..Limits::default()
    };
    let mut now = Instant::now();
    let mut conn = Connection::new(&limits, now);
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let mut request = REQUEST.to_owned();
    let deflate = (first & 0x80 != 0).then(|| {
        request.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
        DeflateConfig {
            server_max_window_bits: 9 + (first & 0x07) % 7,
            server_no_context_takeover: first & 0x08 != 0,
            min_compress_size: usize::from(first & 0x30) * 4,
            ..DeflateConfig::default()
        }
    });
    request.push_str("\r\n");
    if !open(&mut conn, request.as_bytes(), usize::from(chunk).max(1), deflate.as_ref(), &limits, now) {
        return;
    }
    let mut decoder = conn.take_decoder();
    let mut received = Vec::new(); // bytes received and not used up yet
    let mut wire = Vec::new(); // everything the socket took
    let mut recorded = Recorded::new();
    let mut reports = 0;
    let mut input = data;
    while let Some((&op, rest)) = input.split_first() {
        let (arg, rest) = rest.split_first().map_or((0, rest), |(&a, r)| (a, r));
        input = rest;
        let phase_before = conn.phase();
        match op % 9 {
            0 | 1 => {
                let bytes = take(&mut input, usize::from(arg));
                receive(&mut conn, &mut decoder, &mut received, bytes, now);
            }
            2 => {
                let payload = take(&mut input, usize::from(arg));
                let text = String::from_utf8_lossy(payload);
                let message = if op & 0x80 != 0 {
                    Message::Binary(payload)
                } else {
                    Message::Text(&text)
                };
                match (op >> 4) & 0x03 {
                    0 | 1 => send_queued(&mut conn, message, now),
                    2 if recorded.is_empty() => {
                        send_direct(&mut conn, message, usize::from(op >> 6), &mut wire)
                    }
                    2 => send_queued(&mut conn, message, now),
                    _ => record(&mut conn, message, &mut recorded),
                }
            }
            3 => {
                let code = CloseCode(CLOSE_CODES[usize::from(op >> 4) % CLOSE_CODES.len()]);
                let reason = String::from_utf8_lossy(take(&mut input, usize::from(arg)));
                conn.close(code, &reason, now);
            }
            4 => {
                now += Duration::from_millis(u64::from(arg) * 500);
                conn.handle_timeout(now);
            }
            5 => {
                // The writer never writes the output buffer while
                // recorded frames wait: they go first.
                write_recorded(&mut conn, &mut recorded, usize::from(arg) * 16, &mut wire);
                let n = (usize::from(arg) * 16).min(conn.pending_output_len());
                wire.extend_from_slice(&conn.poll_output()[..n]);
                conn.consume_output(n);
            }
            6 => write_recorded(&mut conn, &mut recorded, usize::from(arg) * 16, &mut wire),
            7 => {
                conn.shed(CloseCode::POLICY_VIOLATION, "not reading", now);
            }
            _ => conn.abort(now),
        }
        assert!(
            conn.phase() as u8 >= phase_before as u8,
            "{phase_before:?} -> {:?}",
            conn.phase()
        );
        if conn.poll_close_report().is_some() {
            reports += 1;
            assert_eq!(reports, 1, "close reported twice");
            assert_eq!(conn.phase(), Phase::Closed);
        }
    }
    write_recorded(&mut conn, &mut recorded, 0, &mut wire);
    wire.extend_from_slice(conn.poll_output());
    let agreed = deflate.map(|config| config.server_no_context_takeover);
    check_output(&wire, agreed);
});

/// Feeds the request head `chunk` bytes at a time as the server does and
/// accepts it; `false` if it did not open (it always should).
fn open(
    conn: &mut Connection,
    request: &[u8],
    chunk: usize,
    deflate: Option<&DeflateConfig>,
    limits: &Limits,
    now: Instant,
) -> bool {
    let mut end = 0;
    while end < request.len() {
        end = (end + chunk).min(request.len());
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        match conn.handle_head(&request[..end], &mut slots, limits) {
            Head::NeedMore => assert!(end < request.len(), "a complete head not found"),
            Head::Upgrade(head, upgrade) => {
                assert_eq!(upgrade.head_len(), request.len());
                let accepted = conn.accept_upgrade(&head, &upgrade, None, Vec::new(), deflate, now);
                assert_eq!(accepted.compressed, deflate.is_some());
                return conn.phase() == Phase::Open;
            }
            other => panic!("a valid upgrade classified as {other:?}"),
        }
    }
    false
}

/// The frame `message` goes out as: compressed when the connection
/// compresses messages of its size.
fn encode(conn: &mut Connection, message: Message<'_>) -> (EncodedHeader, Vec<u8>) {
    let mut compressed = Vec::new();
    match conn.compress(message.opcode(), message.as_bytes(), &mut compressed, None) {
        Some(header) => (header, compressed),
        None => (
            EncodedHeader::new(true, 0, message.opcode(), message.len()),
            message.as_bytes().to_vec(),
        ),
    }
}

/// The queued way: into the output buffer.
fn send_queued(conn: &mut Connection, message: Message<'_>, now: Instant) {
    if conn.phase() != Phase::Open {
        return;
    }
    let (header, payload) = encode(conn, message);
    let _ = conn.send_encoded(&header, &payload, now);
}

/// The direct way: with nothing queued (and no frames recorded), the
/// socket takes `taken` thirds of header and payload, the rest is queued.
fn send_direct(conn: &mut Connection, message: Message<'_>, taken: usize, wire: &mut Vec<u8>) {
    if !conn.can_write_directly() {
        return;
    }
    let (header, payload) = encode(conn, message);
    let mut frame = header.as_bytes().to_vec();
    frame.extend_from_slice(&payload);
    let written = frame.len() * taken / 3;
    wire.extend_from_slice(&frame[..written]);
    conn.send_encoded_after_direct_write(&header, &payload, written);
}

/// The gathered way: recorded while nothing is queued ahead (else queued),
/// written later.
fn record(conn: &mut Connection, message: Message<'_>, recorded: &mut Recorded) {
    if conn.can_write_directly() {
        recorded.push(encode(conn, message));
    }
}

/// Writes the recorded frames: the socket takes `n` bytes, the rest is
/// queued ahead of everything queued since they were recorded.
fn write_recorded(conn: &mut Connection, recorded: &mut Recorded, n: usize, wire: &mut Vec<u8>) {
    if recorded.is_empty() {
        return;
    }
    let mut frames = Vec::new();
    for (header, payload) in recorded.drain(..) {
        frames.extend_from_slice(header.as_bytes());
        frames.extend_from_slice(&payload);
    }
    let n = n.min(frames.len());
    wire.extend_from_slice(&frames[..n]);
    if n < frames.len() {
        conn.queue_ahead(&[&frames[n..]]);
    }
}

/// Takes up to `n` bytes off the front of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (taken, rest) = input.split_at(n.min(input.len()));
    *input = rest;
    taken
}

/// Bytes arrive: decode what can be decoded, echo messages, keep the rest.
fn receive(
    conn: &mut Connection,
    decoder: &mut Decoder,
    received: &mut Vec<u8>,
    bytes: &[u8],
    now: Instant,
) {
    conn.handle_peer_activity(now);
    if conn.phase() == Phase::Closed {
        return; // the server discards input once closed
    }
    received.extend_from_slice(bytes);
    let mut pos = 0;
    loop {
        match conn.handle_input(decoder, &mut received[pos..], now) {
            Received::Message(message, used) => {
                pos += used;
                send_queued(conn, message, now);
            }
            // The driver goes on with an inflation on a later turn; here,
            // at once.
            Received::Handled(used) | Received::Inflating(used) => pos += used,
            Received::NeedMore(used) | Received::Closed(used) => {
                pos += used;
                break;
            }
        }
    }
    received.drain(..pos);
}

/// Checks what the server wrote: the `101` head, then well-formed frames,
/// nothing after a close frame.
fn check_output(wire: &[u8], deflate: Option<bool>) {
    let mut inflater = deflate.map(|reset| (Inflater::new(15), reset));
    assert!(wire.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut frames = &wire[head_end..];
    let mut closed = false;
    while !frames.is_empty() {
        assert!(!closed, "frame written after the close frame");
        let allowed_rsv = if deflate.is_some() { RSV1 } else { 0 };
        let header = parse_header(frames, allowed_rsv)
            .expect("server frame must be valid")
            .expect("server frame must be complete");
        assert!(header.fin && header.mask.is_none());
        let end = header.header_len + usize::try_from(header.payload_len).unwrap();
        assert!(end <= frames.len(), "truncated server frame");
        let mut payload = &frames[header.header_len..end];
        let inflated;
        if header.rsv != 0 {
            assert!(matches!(header.opcode, OpCode::Text | OpCode::Binary));
            let (inflater, reset) = inflater.as_mut().expect("RSV1 only with deflate");
            let mut out = Vec::new();
            inflater
                .inflate(payload, &mut out, 1 << 24)
                .expect("server output inflates");
            inflater
                .finish_message(&mut out, 1 << 24, *reset)
                .expect("server output inflates");
            inflated = out;
            payload = &inflated;
        }
        match header.opcode {
            OpCode::Close => {
                closed = true;
                let status = parse_close_payload(payload).expect("valid close payload");
                assert!(status.is_none_or(|(code, _)| code.is_valid_on_wire()));
            }
            OpCode::Text => assert!(std::str::from_utf8(payload).is_ok()),
            _ => {}
        }
        frames = &frames[end..];
    }
}
