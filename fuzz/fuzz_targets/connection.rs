//! Connection state machine: an accepted connection is driven by a script
//! read from the input, one operation per byte pair (op, arg): bytes arrive
//! and are received as the server does (messages echoed back with `send`),
//! the application sends or closes, time advances and `on_timeout` runs, the
//! socket takes some output, or the peer goes away (`abort`).
//! Checks:
//! - no panic;
//! - the phase only moves forward (Open → Closing → Closed);
//! - `take_close_report` returns `Some` at most once, and only when Closed;
//! - everything written after the `101` response parses as unmasked, final
//!   server frames (`frame::parse_header`), control payloads fit 125 bytes,
//!   close payloads are valid, text is UTF-8, and no frame follows a close;
//! - with permessage-deflate on (top bit of the first input byte; window
//!   bits, context takeover and threshold from its other bits, the script
//!   starts after it), compressed server frames inflate, in order, with one
//!   inflater, and compressed text inflates to UTF-8.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wsloop::proto::decoder::parse_close_payload;
use wsloop::proto::deflate::Inflater;
use wsloop::proto::frame::{OpCode, RSV1, parse_header};
use wsloop::proto::{CloseCode, Connection, Decoder, Limits, Message, Phase, Received};

/// Codes the application may close with.
const CLOSE_CODES: [u16; 8] = [1000, 1001, 1003, 1008, 1011, 3000, 4000, 4999];

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
    conn.accept("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None, &[], now);
    let mut decoder = Decoder::new(&limits);
    let mut data = data;
    let deflate = match data.split_first() {
        Some((&first, rest)) if first & 0x80 != 0 => {
            data = rest;
            let window_bits = 9 + (first & 0x07) % 7;
            let no_context_takeover = first & 0x08 != 0;
            conn.enable_deflate(
                window_bits,
                no_context_takeover,
                usize::from(first & 0x30) * 4,
            );
            decoder.enable_inflate(window_bits, no_context_takeover);
            Some((window_bits, no_context_takeover))
        }
        _ => None,
    };
    let mut received = Vec::new(); // bytes received and not used up yet
    let mut wire = Vec::new(); // everything the socket took
    let mut reports = 0;
    let mut input = data;
    while let Some((&op, rest)) = input.split_first() {
        let (arg, rest) = rest.split_first().map_or((0, rest), |(&a, r)| (a, r));
        input = rest;
        let phase_before = conn.phase();
        match op % 7 {
            0 | 1 => {
                let bytes = take(&mut input, usize::from(arg));
                receive(&mut conn, &mut decoder, &mut received, bytes, now);
            }
            2 => {
                let payload = take(&mut input, usize::from(arg));
                let _ = if op & 0x80 != 0 {
                    conn.send(Message::Binary(payload), now)
                } else {
                    conn.send(Message::Text(&String::from_utf8_lossy(payload)), now)
                };
            }
            3 => {
                let code = CloseCode(CLOSE_CODES[usize::from(op >> 4) % CLOSE_CODES.len()]);
                let reason = String::from_utf8_lossy(take(&mut input, usize::from(arg)));
                conn.close(code, &reason, now);
            }
            4 => {
                now += Duration::from_millis(u64::from(arg) * 500);
                conn.on_timeout(now);
            }
            5 => {
                let n = (usize::from(arg) * 16).min(conn.pending_output_len());
                wire.extend_from_slice(&conn.pending_output()[..n]);
                conn.consume_output(n);
            }
            _ => conn.abort(now),
        }
        assert!(
            conn.phase() as u8 >= phase_before as u8,
            "{phase_before:?} -> {:?}",
            conn.phase()
        );
        if conn.take_close_report().is_some() {
            reports += 1;
            assert_eq!(reports, 1, "close reported twice");
            assert_eq!(conn.phase(), Phase::Closed);
        }
    }
    wire.extend_from_slice(conn.pending_output());
    check_output(&wire, deflate);
});

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
    conn.note_received(now);
    if conn.phase() == Phase::Closed {
        return; // the server discards input once closed
    }
    received.extend_from_slice(bytes);
    let mut pos = 0;
    loop {
        match conn.receive(decoder, &mut received[pos..], now) {
            Received::Message(message, used) => {
                pos += used;
                let _ = conn.send(message, now);
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
fn check_output(wire: &[u8], deflate: Option<(u8, bool)>) {
    let mut inflater = deflate.map(|(window_bits, reset)| (Inflater::new(window_bits), reset));
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
