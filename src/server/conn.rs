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
    /// A write failed (peer reset): the next flush removes the connection.
    pub write_failed: bool,
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
            write_failed: false,
        }
    }

    /// Writes `header` then `payload` with one vectored write, as far as the
    /// socket takes them; returns the bytes written. A failure is recorded
    /// in `write_failed`.
    pub fn write_direct(&mut self, header: &[u8], payload: &[u8]) -> usize {
        let total = header.len() + payload.len();
        let mut written = 0;
        while written < total {
            let (head_rest, body_rest) = if written < header.len() {
                (&header[written..], payload)
            } else {
                (&header[..0], &payload[written - header.len()..])
            };
            let parts = [
                std::io::IoSlice::new(head_rest),
                std::io::IoSlice::new(body_rest),
            ];
            match std::io::Write::write_vectored(&mut self.socket, &parts) {
                Ok(0) => {
                    self.write_failed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::debug!("{} {}: write error: {error}", self.id, self.peer);
                    self.write_failed = true;
                    break;
                }
            }
        }
        written
    }

    /// Writes queued output until the socket would block. A failure is
    /// recorded in `write_failed` (the caller decides when to drop the
    /// connection, never in the middle of handling its input).
    pub fn write_pending(&mut self) {
        while !self.write_failed && self.proto.pending_output_len() > 0 {
            match std::io::Write::write(&mut self.socket, self.proto.pending_output()) {
                Ok(0) => self.write_failed = true,
                Ok(n) => self.proto.consume_output(n),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::debug!("{} {}: write error: {error}", self.id, self.peer);
                    self.write_failed = true;
                }
            }
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
