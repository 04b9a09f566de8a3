//! A length a peer declares is never allocated: the server's memory follows
//! the bytes that arrived. Measured on the real binary, from its resident
//! size, with many peers that each declare a large frame and send a byte.

mod common;

use std::io::{ErrorKind, Read};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{RawClient, Wsloop};

/// Peers that each start an 8 MiB frame.
const PEERS: usize = 300;

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn a_few_bytes_declaring_a_large_frame_cost_a_few_bytes() {
    let server = Wsloop::start("", &["--echo"]);
    // From two loopback addresses: one may hold at most 256 sockets.
    let mut peers: Vec<RawClient> = (0..PEERS)
        .map(|index| {
            let from = Ipv4Addr::new(127, 0, 0, 1 + (index % 2) as u8);
            RawClient::open_from(from, server.addr, "/")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let before = resident_kib(server.child.id());

    // The header of a masked 8 MiB binary frame (within the default
    // frame limit), then, read separately, one payload byte.
    let mut header = vec![0x82, 0xFF];
    header.extend_from_slice(&(8u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    for peer in &mut peers {
        peer.send_raw(&header);
    }
    std::thread::sleep(Duration::from_millis(200));
    for peer in &mut peers {
        peer.send_raw(&[0xAA]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = resident_kib(server.child.id());

    // A read buffer sized from the declared length (or a fixed chunk of a
    // hundred KiB or more per peer) would add tens of MiB here.
    let grown_kib = after.saturating_sub(before);
    assert!(
        grown_kib < 8 * 1024,
        "{PEERS} peers holding 15 bytes each grew the server by {grown_kib} KiB"
    );
    // Every peer is still connected, its frame merely incomplete: nothing
    // to read (a close frame or the end of the stream would be).
    for (index, peer) in peers.iter_mut().enumerate() {
        peer.stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        match peer.stream.read(&mut byte) {
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            other => panic!("peer {index}: expected an open, quiet connection, got {other:?}"),
        }
    }
    drop(peers);
}
