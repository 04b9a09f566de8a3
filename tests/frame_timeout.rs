//! A frame must arrive within `frame_timeout` of its first byte: a peer
//! trickling one is closed with 1008, one that finishes in time is not.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, TestServer, masked_frame, with_limits};
use wsloop::Limits;

#[test]
fn a_trickled_frame_is_closed_with_1008_after_the_frame_timeout() {
    let server = TestServer::echo(with_limits(Limits {
        frame_timeout: Duration::from_secs(1),
        ..Limits::default()
    }));
    let mut slow = RawClient::open(server.addr, "/");
    let mut punctual = RawClient::open(server.addr, "/");
    let trickled = masked_frame(0x82, &[7; 100]);
    let in_time = masked_frame(0x81, b"made it");
    let started = Instant::now();
    let mut code = None;
    // A byte every 100 ms for the slow frame (10 s in all), two for the
    // other (0.7 s).
    for i in 0..50 {
        slow.send_raw(&trickled[i..i + 1]);
        if let Some(bytes) = in_time.chunks(2).nth(i) {
            punctual.send_raw(bytes);
        }
        if let Some(frame) = slow.read_frame_within(Duration::from_millis(100)) {
            code = Some((frame.close_code(), started.elapsed()));
            break;
        }
    }
    let (code, after) = code.expect("no close within 5 s of a 1 s frame timeout");
    assert_eq!(code, 1008);
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    let echo = punctual.read_frame().unwrap();
    assert_eq!(echo.payload, b"made it");
}
