//! Opening handshake: bytes arrive in chunks (sizes taken from the first two
//! input bytes) and go through `HeadScanner::find_end` as the server feeds
//! them. Checks:
//! - the incremental scanner agrees with a plain search of the whole buffer:
//!   the head ends at the first `\r\n\r\n`, within the limit; `HeadTooLarge`
//!   exactly when no end lies within the limit and the buffer reached it;
//! - a found head is then parsed with `parse_request`; `wants_upgrade`,
//!   `validate_upgrade` and `offered_protocols` never panic;
//! - an accepted upgrade carries a 28-character base64 SHA-1 accept key
//!   computed from the (single) `Sec-WebSocket-Key`;
//! - offered subprotocols are non-empty, trimmed and contain no comma.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "chunks.rs"]
mod chunks;
use chunks::chunks;
use wsloop::proto::handshake::{
    HeadScanner, accept_key, offered_protocols, parse_request, validate_upgrade, wants_upgrade,
};

const MAX_HEAD: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let Some((sizes, wire)) = data.split_first_chunk::<2>() else {
        return;
    };
    // Where a plain search of everything puts the end of the head.
    let head_end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let mut scanner = HeadScanner::default();
    let mut buf = Vec::new();
    for (i, chunk) in chunks(wire, *sizes).enumerate() {
        buf.extend_from_slice(chunk);
        let first_end = head_end.filter(|&end| end <= buf.len());
        match scanner.find_end(&buf, MAX_HEAD) {
            Ok(Some(len)) => {
                assert_eq!(Some(len), first_end, "chunk {i}");
                assert!(len <= MAX_HEAD && len <= buf.len());
                assert!(buf[..len].ends_with(b"\r\n\r\n"));
                check_head(&buf[..len]);
                return;
            }
            Ok(None) => assert!(first_end.is_none() && buf.len() < MAX_HEAD, "chunk {i}"),
            Err(_) => {
                assert!(first_end.is_none_or(|end| end > MAX_HEAD), "chunk {i}");
                assert!(buf.len() >= MAX_HEAD);
                return;
            }
        }
    }
});

fn check_head(head: &[u8]) {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let Ok(request) = parse_request(head, &mut slots) else {
        return;
    };
    let wants = wants_upgrade(&request);
    if let Ok(accept) = validate_upgrade(&request) {
        assert!(wants, "a valid upgrade must count as wanting one");
        assert_eq!(accept.len(), 28, "{accept:?}");
        assert!(
            accept.ends_with('=') && !accept[..27].contains('='),
            "{accept:?}"
        );
        assert!(
            accept[..27]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
            "{accept:?}"
        );
        let key = request.header("sec-websocket-key").unwrap();
        assert_eq!(accept, accept_key(key.trim_ascii()));
    }
    for protocol in offered_protocols(&request) {
        assert!(
            !protocol.is_empty() && !protocol.contains(','),
            "{protocol:?}"
        );
        assert_eq!(protocol, protocol.trim(), "{protocol:?}");
    }
}
