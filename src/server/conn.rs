//! The driver's record of one accepted socket: the socket, its protocol
//! state, its receive buffer and the I/O flags the loop needs.

use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use crate::handler::ConnectionId;
use crate::proto::{Connection, Decoder, InBuffer, Limits};

/// One accepted socket.
#[derive(Debug)]
pub(crate) struct Conn {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub id: ConnectionId,
    pub proto: Connection,
    pub inbuf: InBuffer,
    pub decoder: Decoder,
    /// WRITABLE is registered (only while output is pending).
    pub writable_interest: bool,
    /// Reading stopped because too much output is queued.
    pub read_paused: bool,
    /// The peer closed its sending side (read returned 0).
    pub read_closed: bool,
    /// Our sending side is shut down (after the last byte went out).
    pub write_shutdown: bool,
    /// Queued in the loop's list of connections to flush.
    pub flush_queued: bool,
    /// Earliest instant a timer entry is armed for, if any.
    pub timer_at: Option<Instant>,
}

impl Conn {
    pub fn new(
        socket: TcpStream,
        peer: SocketAddr,
        id: ConnectionId,
        limits: &Limits,
        now: Instant,
    ) -> Conn {
        Conn {
            socket,
            peer,
            id,
            proto: Connection::new(limits, now),
            inbuf: InBuffer::default(),
            decoder: Decoder::new(limits),
            writable_interest: false,
            read_paused: false,
            read_closed: false,
            write_shutdown: false,
            flush_queued: false,
            timer_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection owns no buffers, so its footprint is this struct
    /// (in the slab) plus a timer entry; keep it well under the 2 KiB
    /// per-connection budget.
    #[test]
    fn an_idle_connection_record_stays_small() {
        let size = std::mem::size_of::<Conn>();
        println!("size_of::<Conn>() = {size}");
        assert!(size <= 512, "Conn grew to {size} bytes");
    }
}
