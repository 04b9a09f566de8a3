//! Frame decoder: bytes from a client arrive in chunks (sizes taken from the
//! first two input bytes) and are decoded as the server does: appended to a
//! buffer, decoded until `NeedMore` or an error, used-up prefix dropped.
//! Checks:
//! - `decode` never panics and never reports more bytes used than it got;
//! - text is valid UTF-8, data messages fit `max_message_size`, control
//!   payloads fit 125 bytes, close codes are valid on the wire;
//! - the chunking does not matter: the same bytes decoded in one piece give
//!   the same events and the same final error.
//!
//! When the first size byte has its top bit set, the decoder runs with
//! permessage-deflate agreed (window bits and context takeover from the
//! second), so RSV1 messages are inflated: the size limit must then hold
//! for the inflated size.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "chunks.rs"]
mod chunks;
use chunks::chunks;
use wsloop::proto::{Decoded, Decoder, Frame, Limits, ProtocolError};

fn limits() -> Limits {
    Limits {
        max_frame_size: 1 << 16,
        max_message_size: 1 << 17,
        max_fragments: 64,
        // Small enough that compressed messages inflate in several slices.
        inflate_slice: 4096,
        ..Limits::default()
    }
}

/// An owned copy of a decoded frame, to compare two decodings.
#[derive(Debug, PartialEq)]
enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, wire)) = data.split_first_chunk::<2>() else {
        return;
    };
    let deflate = (sizes[0] & 0x80 != 0).then(|| (9 + sizes[1] % 7, sizes[1] & 0x80 != 0));
    let chunked = decode_stream(chunks(wire, *sizes), deflate);
    let whole = decode_stream(std::iter::once(wire), deflate);
    assert_eq!(chunked, whole, "chunked vs whole");
});

/// Decodes chunks as they arrive; returns the events and the error that
/// ended the stream, if any.
fn decode_stream<'a>(
    chunks: impl Iterator<Item = &'a [u8]>,
    deflate: Option<(u8, bool)>,
) -> (Vec<Event>, Option<ProtocolError>) {
    let limits = limits();
    let mut decoder = Decoder::new(&limits);
    if let Some((window_bits, no_context_takeover)) = deflate {
        decoder.enable_inflate(window_bits, no_context_takeover);
    }
    let mut pending = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        loop {
            let len = pending.len();
            let resumed = decoder.inflating();
            match decoder.decode(&mut pending) {
                Ok(Decoded::Frame(frame, used)) => {
                    // A message whose inflation an earlier call left
                    // pending used its bytes then.
                    assert!((used > 0 || resumed) && used <= len, "used {used} of {len}");
                    events.push(check(frame, &limits));
                    pending.drain(..used);
                }
                Ok(Decoded::Inflating(used)) => {
                    assert!(used <= len, "used {used} of {len}");
                    pending.drain(..used);
                }
                Ok(Decoded::NeedMore(used)) => {
                    assert!(used <= len, "used {used} of {len}");
                    pending.drain(..used);
                    break;
                }
                Err(error) => return (events, Some(error)),
            }
        }
    }
    (events, None)
}

fn check(frame: Frame<'_>, limits: &Limits) -> Event {
    match frame {
        Frame::Text(text) => {
            assert!(std::str::from_utf8(text.as_bytes()).is_ok());
            assert!(text.len() <= limits.max_message_size);
            Event::Text(text.to_owned())
        }
        Frame::Binary(bytes) => {
            assert!(bytes.len() <= limits.max_message_size);
            Event::Binary(bytes.to_vec())
        }
        Frame::Ping(payload) => {
            assert!(payload.len() <= 125);
            Event::Ping(payload.to_vec())
        }
        Frame::Pong(payload) => {
            assert!(payload.len() <= 125);
            Event::Pong(payload.to_vec())
        }
        Frame::Close(status) => Event::Close(status.map(|(code, reason)| {
            assert!(code.is_valid_on_wire(), "{code}");
            assert!(reason.len() <= 123);
            (code.0, reason.to_owned())
        })),
    }
}
