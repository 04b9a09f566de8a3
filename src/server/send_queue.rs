//! How much a socket's kernel send queue still holds: bytes written and not
//! yet acknowledged by the peer. The keepalive reads it to tell a slow peer
//! (still taking data, its pong queued behind ours) from a dead one.

use mio::net::TcpStream;

/// Bytes in `socket`'s send queue not yet acknowledged by the peer; 0 where
/// the system cannot tell (then only the server's own backlog counts).
#[cfg(target_os = "linux")]
pub(crate) fn unacknowledged_bytes(socket: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SIOCOUTQ, which Linux defines as TIOCOUTQ (see tcp(7)).
    // SAFETY: the descriptor belongs to `socket`, open for the whole call
    // (it is borrowed); the request writes one c_int through the pointer,
    // which points at a live local of that type.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if result == 0 {
        usize::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

/// Bytes in `socket`'s send queue not yet acknowledged by the peer; 0 where
/// the system cannot tell (then only the server's own backlog counts).
#[cfg(not(target_os = "linux"))]
pub(crate) fn unacknowledged_bytes(_socket: &TcpStream) -> usize {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn counts_what_the_peer_has_not_acknowledged() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std_client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        let mut client = TcpStream::from_std(std_client);
        assert_eq!(unacknowledged_bytes(&client), 0);
        // The peer's kernel acknowledges on loopback at once, whether or not
        // its application reads: the queue empties again.
        client.write_all(b"hello").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while unacknowledged_bytes(&client) != 0 {
            assert!(std::time::Instant::now() < deadline, "never acknowledged");
            std::thread::yield_now();
        }
    }
}
