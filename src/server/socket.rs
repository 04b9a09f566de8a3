//! The driver's record of one accepted socket: the TCP stream, its protocol
//! state, its receive buffer and the I/O flags the loop needs.

use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::peer_progress;
use super::tls::{self, FirstByte, TlsState};
use crate::handler::ConnectionId;
use crate::proto::{Connection, Limits};

/// One accepted socket.
#[derive(Debug)]
pub(crate) struct Socket {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub id: ConnectionId,
    pub proto: Connection,
    /// WRITABLE is registered (only while output is pending).
    pub writable_interest: bool,
    /// Reading stopped because too much output is queued.
    pub read_paused: bool,
    /// The peer closed its sending side (read returned 0).
    pub read_closed: bool,
    /// The handler deferred this connection's request (see
    /// `Context::defer`): it is not read until resumed.
    pub deferred: bool,
    /// Our sending side is shut down (after the last byte went out).
    pub write_shutdown: bool,
    /// The last frame held back in the connection's input was too large for the shared
    /// read buffer: frames are read in the connection's own buffer until
    /// a smaller one is held back.
    pub large_frames: bool,
    /// Bytes the last fill of the connection's input held when it was consumed whole, if
    /// more than a chunk: the length of the large frames this connection
    /// streams. A read into the empty buffer asks for that much (within
    /// the room the buffer already has), so it takes a whole frame in
    /// one call and ends at its end.
    pub last_fill: usize,
    /// Queued in the loop's list of connections to flush.
    pub flush_queued: bool,
    /// Earliest instant a timer entry is armed for, if any.
    pub timer_at: Option<Instant>,
    /// A write failed (peer reset): the next flush removes the connection.
    pub write_failed: bool,
    /// TLS state, on a TLS listener.
    pub tls: Option<Box<TlsState>>,
    /// A client spoke something other than TLS to the TLS port: it gets a
    /// plain-text HTTP refusal (TLS state dropped) and is closed.
    pub plaintext_on_tls_port: bool,
    /// What the peer had taken when the outstanding keepalive ping was
    /// queued, if the system tells.
    pub progress_at_ping: Option<PingProgress>,
    /// This connection's share of the server's buffered bytes, as last
    /// reported to the budget (see [`Socket::held_bytes`]).
    pub accounted: usize,
    /// Closed for the buffer budget already: if it still holds too much,
    /// it is dropped next time.
    pub budget_shed: bool,
    /// Counted among its address's handshakes: it has not become a
    /// WebSocket (yet).
    pub in_handshake: bool,
    /// In the loop's queue of connections with a compressed message left
    /// to inflate (see `Decoder::inflating`).
    pub inflate_queued: bool,
    /// The rest of a shared HTTP response body (a cached file) and how
    /// much of it was queued: moved to the output buffer a slice at a
    /// time as the peer takes it (see `write::write_queued`). Boxed: a
    /// rare state should not grow every connection's record.
    pub body_tail: Option<Box<(std::sync::Arc<[u8]>, usize)>>,
}

/// The peer's acknowledged-bytes counter (see
/// [`peer_progress::bytes_acknowledged`]) at a keepalive ping, and the
/// output then waiting, the ping included.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PingProgress {
    acknowledged: u64,
    queued: u64,
}

/// The most an empty ping takes on the wire, in a TLS record included:
/// output queued beyond this was ahead of the ping.
const PING_ON_THE_WIRE: u64 = 64;

impl Socket {
    pub fn new(
        socket: TcpStream,
        peer: SocketAddr,
        id: ConnectionId,
        limits: &Limits,
        tls: Option<Box<TlsState>>,
        now: Instant,
    ) -> Socket {
        Socket {
            stream: socket,
            peer,
            id,
            proto: Connection::new(limits, now),
            writable_interest: false,
            read_paused: false,
            read_closed: false,
            deferred: false,
            write_shutdown: false,
            large_frames: false,
            last_fill: 0,
            flush_queued: false,
            timer_at: None,
            write_failed: false,
            tls,
            plaintext_on_tls_port: false,
            progress_at_ping: None,
            accounted: 0,
            budget_shed: false,
            in_handshake: true,
            inflate_queued: false,
            body_tail: None,
        }
    }

    /// Bytes this connection holds in its buffers, as the buffer budget
    /// counts them: output queued and not yet written, received bytes not
    /// yet processed, and the fragments of a message not yet complete.
    /// Bytes held, not capacity: what the peer makes the server keep.
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.proto.held_bytes()
    }

    /// Puts this connection, in `slot`, on the loop's list to flush, once.
    pub fn queue_flush(&mut self, slot: usize, flush_list: &mut Vec<usize>) {
        if !self.flush_queued {
            self.flush_queued = true;
            flush_list.push(slot);
        }
    }

    /// Records, right after a keepalive ping was queued, how much the peer
    /// has taken and how much output waits (here and in the kernel) up to
    /// and including the ping.
    pub fn note_ping_queued(&mut self) {
        // The queue is read first: an acknowledgment landing between the
        // two reads then makes the queue look longer, never shorter.
        let queued = self.proto.pending_output_len() as u64
            + peer_progress::bytes_unacknowledged(&self.stream);
        self.progress_at_ping =
            peer_progress::bytes_acknowledged(&self.stream).map(|acknowledged| PingProgress {
                acknowledged,
                queued,
            });
    }

    /// Whether a peer whose pong is overdue is alive all the same: it took
    /// output since the ping, and either the ping went out behind other
    /// output (the pong waits behind it, there or in the peer's receive
    /// buffer) or its answer waits unread because reading is paused. A peer
    /// whose kernel took a ping with nothing ahead of it and whose
    /// application never answered is not: its kernel acknowledging proves
    /// only the kernel alive. Each reprieve needs new acknowledgments, so a
    /// frozen peer is closed once its receive window is full.
    pub fn took_output_since_ping(&self) -> bool {
        let (Some(at_ping), Some(now)) = (
            self.progress_at_ping,
            peer_progress::bytes_acknowledged(&self.stream),
        ) else {
            return false;
        };
        now > at_ping.acknowledged && (at_ping.queued > PING_ON_THE_WIRE || self.read_paused)
    }

    /// Reads received bytes (decrypted, on TLS) into `buf`. `Ok(0)` is the
    /// end of the stream; on TLS, `InvalidData` is a TLS failure, or plain
    /// text on the TLS port when `plaintext_on_tls_port` is set.
    pub fn read_into(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(state) = self.tls.as_mut() else {
            return std::io::Read::read(&mut self.stream, buf);
        };
        if !state.checked {
            match tls::peek_first_byte(&self.stream)? {
                FirstByte::NotYet => return Err(std::io::ErrorKind::WouldBlock.into()),
                FirstByte::Closed => return Ok(0),
                FirstByte::Tls => state.checked = true,
                FirstByte::NotTls => {
                    self.plaintext_on_tls_port = true;
                    self.tls = None;
                    return Err(std::io::ErrorKind::InvalidData.into());
                }
            }
        }
        tls::read_plaintext(&mut state.session, &mut self.stream, buf)
    }

    /// Whether anything waits to go out: queued frames, or TLS records
    /// (handshake messages, alerts, encrypted data) not yet written.
    pub fn has_unsent_output(&self) -> bool {
        self.proto.pending_output_len() > 0
            || self.body_tail.is_some()
            || self
                .tls
                .as_ref()
                .is_some_and(|tls| tls.session.wants_write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection owns no buffers, so its footprint is this struct
    /// (in the slab) plus a timer entry; keep it well under the 2 KiB
    /// per-connection budget. (520: 512 until the boxed shared response
    /// body, one pointer.)
    #[test]
    fn an_idle_connection_record_stays_small() {
        let size = std::mem::size_of::<Socket>();
        println!("size_of::<Socket>() = {size}");
        assert!(size <= 520, "Socket grew to {size} bytes");
    }
}
