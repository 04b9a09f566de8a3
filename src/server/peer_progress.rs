//! What the kernel knows of a peer taking our output: bytes it has
//! acknowledged so far, and bytes still waiting in the send queue. The
//! keepalive reads both to tell a slow peer (still taking data, with our
//! ping queued behind it or its pong unread while we pause reading) from a
//! dead one.

use mio::net::TcpStream;

/// Bytes of this connection the peer has acknowledged, ever (a counter
/// that only grows); `None` where the system cannot tell.
#[cfg(all(target_os = "linux", not(target_env = "uclibc")))]
pub(crate) fn bytes_acknowledged(socket: &TcpStream) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero bytes are a valid `tcp_info` (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor belongs to `socket`, open for the whole call
    // (it is borrowed); the kernel writes at most `len` bytes into `info`,
    // a live local of that size, and stores the length it wrote in `len`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    // Kernels before 4.1 end the structure before this field.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
    (result == 0 && len as usize >= needed).then_some(info.tcpi_bytes_acked)
}

/// Bytes in `socket`'s send queue: written and not yet acknowledged.
#[cfg(target_os = "linux")]
pub(crate) fn bytes_unacknowledged(socket: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SIOCOUTQ, which Linux defines as TIOCOUTQ (see tcp(7)).
    // SAFETY: the descriptor belongs to `socket`, open for the whole call
    // (it is borrowed); the request writes one c_int through the pointer,
    // which points at a live local of that type.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if result == 0 {
        u64::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

/// Bytes of this connection the peer has acknowledged, ever; `None` where
/// the system cannot tell (the keepalive then goes by pongs alone).
#[cfg(not(all(target_os = "linux", not(target_env = "uclibc"))))]
pub(crate) fn bytes_acknowledged(_socket: &TcpStream) -> Option<u64> {
    None
}

/// Bytes in `socket`'s send queue: written and not yet acknowledged.
#[cfg(not(target_os = "linux"))]
pub(crate) fn bytes_unacknowledged(_socket: &TcpStream) -> u64 {
    0
}

#[cfg(all(test, target_os = "linux", not(target_env = "uclibc")))]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Write};

    #[test]
    fn acknowledged_grows_and_the_queue_fills_when_the_peer_stops_reading() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std_client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_never_reads, _) = listener.accept().unwrap();
        std_client.set_nonblocking(true).unwrap();
        let mut client = TcpStream::from_std(std_client);
        let start = bytes_acknowledged(&client).expect("TCP_INFO with tcpi_bytes_acked");
        // Written until the peer's receive buffer and our send queue are
        // full: what its kernel took is acknowledged, the rest is queued.
        let chunk = [0x55u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match client.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => panic!("write: {error}"),
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let acked = bytes_acknowledged(&client).unwrap() - start;
            let queued = bytes_unacknowledged(&client);
            if acked + queued == written && acked > 0 {
                assert!(queued > 0, "a full send queue reads as empty");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{acked} + {queued} != {written}"
            );
            std::thread::yield_now();
        }
    }
}
