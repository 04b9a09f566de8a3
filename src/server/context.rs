//! What a handler may do from inside a callback: send to any connection,
//! broadcast, close.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Instant;

use mio::Registry;
use slab::Slab;

use super::budget::BufferBudget;
use super::gather::Gather;
use super::recorder::Recording;
use super::socket::Socket;
use super::sources::{SourceId, Sources, Watch};
use super::stats::ServerStats;
use super::write::{self, Route};
use crate::handler::ConnectionId;
use crate::proto::deflate::DeflaterPool;
use crate::proto::{CloseCode, EncodedHeader, Message, Phase, SendError};

/// The compression buffer keeps at most this much capacity between sends.
const KEEP_COMPRESSED_CAPACITY: usize = 1024 * 1024;

/// The last compression a broadcast made for recipients that compress
/// each message on its own: their window bits, and the frame header and
/// payload to send them (`None`: it did not shrink, send it plain).
type SharedCompression = (u8, Option<(EncodedHeader, Vec<u8>)>);

/// The connection `id` names, if it still exists (same slot, same
/// generation). A free function so callers can borrow other parts of the
/// context alongside it.
fn conn_mut(conns: &mut Slab<Socket>, id: ConnectionId) -> Option<&mut Socket> {
    conns
        .get_mut(id.index as usize)
        .filter(|conn| conn.id.generation == id.generation)
}

/// What compressing outgoing messages needs, shared by all connections:
/// compressors for connections without context takeover and one buffer
/// that each compressed message is built in before it is queued.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    pub pool: DeflaterPool,
    pub compressed: Vec<u8>,
}

/// Requests the handler put off answering ([`Context::defer`]) and the
/// ones it asked to have offered again ([`Context::resume`]).
#[derive(Debug, Default)]
pub(crate) struct Deferrals {
    /// The request being handled was deferred.
    pub current: bool,
    /// Deferred requests to offer the handler again, in the order asked.
    pub resumed: Vec<ConnectionId>,
}

/// Output the handler holds back (see [`Context::hold_output`]): messages
/// in the order sent, each with its recipients, and how many were taken
/// off the front so far (so positions stay valid as a [`Context::output_mark`]).
#[derive(Debug, Default)]
pub(crate) struct HeldOutput {
    pub queue: std::collections::VecDeque<HeldMessage>,
    pub taken: u64,
    /// Payload bytes held.
    pub bytes: usize,
}

/// One held message.
#[derive(Debug)]
pub(crate) struct HeldMessage {
    to: Vec<ConnectionId>,
    binary: bool,
    payload: Vec<u8>,
}

/// The handler's access to the server's connections during a callback.
/// Sends are queued in the recipients' write buffers and flushed by the
/// loop after the current batch of events, one write per connection; a
/// large message with nothing queued ahead goes straight to the socket,
/// and an echo of 4 KiB or more to the connection whose read is being
/// processed is written from that read: `write` decides which.
pub struct Context<'a> {
    pub(crate) conns: &'a mut Slab<Socket>,
    pub(crate) flush_list: &'a mut Vec<usize>,
    pub(crate) stats: &'a mut ServerStats,
    pub(crate) outbound: &'a mut Outbound,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) tls: bool,
    pub(crate) now: Instant,
    /// The connection whose read ended with the message being handled:
    /// sends to it are written at once from [`write::LONE_DIRECT_WRITE`] rather
    /// than [`write::DIRECT_WRITE`].
    pub(crate) lone: Option<usize>,
    /// Frames written from the read being processed instead of copied.
    pub(crate) gather: &'a mut Gather,
    /// The connection whose request is being handled, and whether that
    /// callback may defer it (`on_http` and `on_upgrade` only).
    pub(crate) request: Option<(ConnectionId, bool)>,
    pub(crate) deferrals: &'a mut Deferrals,
    /// Sends and broadcasts are held (see [`Context::hold_output`]).
    pub(crate) holding: bool,
    pub(crate) held: &'a mut HeldOutput,
    /// The server-wide bound on buffered bytes, kept up to date per send.
    pub(crate) budget: &'a mut BufferBudget,
    /// The poller, to watch the application's own file descriptors.
    pub(crate) registry: &'a Registry,
    pub(crate) sources: &'a mut Sources,
    /// Set in a [`super::Recorder`]'s contexts: sends, broadcasts and
    /// closes are recorded there instead of written.
    pub(crate) recording: Option<&'a mut Recording>,
}

impl<'a> Context<'a> {
    /// The time the loop woke up for this batch of events.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The remote address of the connection whose request is being
    /// handled, in `on_http`, `on_upgrade` and `on_open` (`None` in the
    /// other callbacks).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether the connection whose request is being handled came over
    /// TLS (`https://`, `wss://`), in `on_http`, `on_upgrade` and `on_open`
    /// (`false` in the other callbacks): e.g. to mark cookies `Secure`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The connection whose request is being handled, in `on_http`,
    /// `on_upgrade` and `on_open` (`None` in the other callbacks): the id
    /// [`Context::defer`] returns, to key state about a deferred request.
    pub fn request_id(&self) -> Option<ConnectionId> {
        self.request.map(|(id, _)| id)
    }

    /// Puts off answering the request being handled, from `on_http` or
    /// `on_upgrade`, for work that must not run on the loop (a password
    /// check, say): the response the callback returns is discarded, the
    /// connection is not read meanwhile, and once something calls
    /// [`Context::resume`] with the id returned here the same request is
    /// offered to the handler again from its first byte, to be answered
    /// then (or deferred again). The handshake timeout keeps running, so
    /// a request never resumed is dropped when it expires. `None` (and
    /// nothing deferred) in other callbacks.
    pub fn defer(&mut self) -> Option<ConnectionId> {
        let (id, deferrable) = self.request?;
        if !deferrable {
            return None;
        }
        self.deferrals.current = true;
        Some(id)
    }

    /// Offers a request put off with [`Context::defer`] to the handler
    /// again, right after the current callback. Ignored when that
    /// connection is gone or its request is not deferred.
    pub fn resume(&mut self, id: ConnectionId) {
        self.deferrals.resumed.push(id);
    }

    /// Holds this callback's sends and broadcasts back, in order, until
    /// [`Context::release_output`] lets them go: for an application that
    /// must not acknowledge a change before it is durable (group commit).
    /// Held messages keep their order among themselves; the application
    /// keeps everything it sends held while anything is, so nothing
    /// overtakes. Control frames (pongs, closes) are not held.
    pub fn hold_output(&mut self) {
        self.holding = true;
    }

    /// The position just after the last message held so far.
    pub fn output_mark(&self) -> u64 {
        self.held.taken + self.held.queue.len() as u64
    }

    /// Payload bytes held back, server-wide.
    pub fn held_output_bytes(&self) -> usize {
        self.held.bytes
    }

    /// Sends the held messages up to `mark` (from [`Context::output_mark`]),
    /// in the order they were sent. Recipients gone meanwhile are skipped.
    pub fn release_output(&mut self, mark: u64) {
        let holding = std::mem::replace(&mut self.holding, false);
        while self.held.taken < mark {
            let Some(held) = self.held.queue.pop_front() else {
                break;
            };
            self.held.taken += 1;
            self.held.bytes -= held.payload.len();
            let message = if held.binary {
                Message::Binary(&held.payload)
            } else {
                match std::str::from_utf8(&held.payload) {
                    Ok(text) => Message::Text(text),
                    Err(_) => continue,
                }
            };
            match held.to.as_slice() {
                [one] => {
                    let _ = self.send(*one, message);
                }
                many => {
                    self.broadcast(many.iter().copied(), message);
                }
            }
        }
        self.holding = holding;
    }

    /// Holds `message` for `to` if holding is on; `true` if it was held.
    fn held(&mut self, to: Vec<ConnectionId>, message: Message<'_>) -> bool {
        if !self.holding {
            return false;
        }
        self.held.bytes += message.len();
        self.held.queue.push_back(HeldMessage {
            to,
            binary: matches!(message, Message::Binary(_)),
            payload: message.as_bytes().to_vec(),
        });
        true
    }

    /// Has the loop watch `fd` (a child's pipe, a pidfd), edge-triggered:
    /// [`crate::Handler::on_source_ready`] is called when it becomes
    /// readable or writable, and then not again until the handler has read
    /// or written it up to `WouldBlock`, or asked with
    /// [`Context::call_again`]. The handler keeps owning `fd` (it must be
    /// non-blocking) and must [`Context::unwatch`] it before closing it.
    pub fn watch(&mut self, fd: RawFd, watch: Watch) -> io::Result<SourceId> {
        self.sources.watch(self.registry, fd, watch)
    }

    /// Stops watching a source; unknown ids are ignored.
    pub fn unwatch(&mut self, id: SourceId) {
        self.sources.unwatch(self.registry, id);
    }

    /// Calls [`crate::Handler::on_source_ready`] for `id` again on the
    /// loop's next turn: for a handler that stopped reading before
    /// `WouldBlock` so that one busy source cannot hold the loop.
    pub fn call_again(&mut self, id: SourceId) {
        if self.sources.is_watched(id) && !self.sources.again.contains(&id) {
            self.sources.again.push(id);
        }
    }

    /// Calls [`crate::Handler::on_alarm`] once at or after `at` (the
    /// earliest of the times asked for wins), e.g. to batch output.
    pub fn wake_at(&mut self, at: Instant) {
        self.sources.wake_at(at);
    }

    /// The server's counters, for metrics.
    pub fn stats(&self) -> &ServerStats {
        self.stats
    }

    fn queue_flush(&mut self, id: ConnectionId) {
        if let Some(conn) = conn_mut(self.conns, id) {
            conn.queue_flush(id.index as usize, self.flush_list);
        }
    }

    /// Brings `id`'s share of the buffer budget up to date, closing the
    /// largest holders if that took the total past the budget.
    fn account(&mut self, id: ConnectionId) {
        if let Some(conn) = conn_mut(self.conns, id)
            && self.budget.update(conn)
        {
            self.budget
                .shed(self.conns, self.flush_list, self.stats, self.now);
        }
    }

    /// Queues a message to `to` (compressed, if the connection agreed to
    /// permessage-deflate and the message is not too small to bother).
    pub fn send(&mut self, to: ConnectionId, message: Message<'_>) -> Result<(), SendError> {
        if self.held(vec![to], message) {
            return Ok(());
        }
        if let Some(recording) = self.recording.as_deref_mut() {
            return recording.message(to, message);
        }
        let header = EncodedHeader::new(true, 0, message.opcode(), message.len());
        self.send_message(to, message, &header)
    }

    /// Sends `message` to `to`, with `plain` its uncompressed frame header.
    fn send_message(
        &mut self,
        to: ConnectionId,
        message: Message<'_>,
        plain: &EncodedHeader,
    ) -> Result<(), SendError> {
        let mut out = std::mem::take(&mut self.outbound.compressed);
        let pool = &mut self.outbound.pool;
        let compressed = conn_mut(self.conns, to).and_then(|conn| {
            conn.proto
                .compress(message.opcode(), message.as_bytes(), &mut out, Some(pool))
        });
        let result = match compressed {
            Some(header) => self.send_encoded(to, &header, &out),
            None => self.send_encoded(to, plain, message.as_bytes()),
        };
        if out.capacity() > KEEP_COMPRESSED_CAPACITY {
            out = Vec::new();
        }
        self.outbound.compressed = out;
        result
    }

    /// Queues a text message to `to`.
    pub fn send_text(&mut self, to: ConnectionId, text: &str) -> Result<(), SendError> {
        self.send(to, Message::Text(text))
    }

    /// Queues a binary message to `to`.
    pub fn send_binary(&mut self, to: ConnectionId, bytes: &[u8]) -> Result<(), SendError> {
        self.send(to, Message::Binary(bytes))
    }

    /// Sends one encoded frame to `to` the way `write` decides, and keeps
    /// the counters, the flush list and the buffer budget up to date.
    fn send_encoded(
        &mut self,
        to: ConnectionId,
        header: &EncodedHeader,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let Some(conn) = conn_mut(self.conns, to) else {
            return Err(SendError::NotOpen);
        };
        let slot = to.index as usize;
        let lone = self.lone == Some(slot);
        let (route, result) =
            write::send_frame(conn, slot, header, payload, self.gather, lone, self.now);
        if result.is_ok() {
            self.stats.messages_out += 1;
            self.stats.bytes_out += payload.len() as u64;
        }
        match route {
            // Written from the read it lies in once the read is processed.
            Route::Gathered => {}
            Route::Direct => {
                if conn.has_unsent_output() || conn.write_failed {
                    self.queue_flush(to);
                    self.account(to);
                }
            }
            Route::Queued => {
                if let Err(SendError::Backlogged) = result {
                    log::warn!("{to} ({}): not reading; closing with 1008", conn.peer);
                }
                if conn.has_unsent_output() {
                    self.queue_flush(to);
                }
                self.account(to);
            }
        }
        result
    }

    /// Queues one message to every connection in `to`, encoding its frame
    /// header once. Recipients that agreed to permessage-deflate get it
    /// compressed: once per window size for those compressing each message
    /// on its own, per recipient for those keeping context. Returns how
    /// many recipients accepted it (closed or backlogged ones are skipped).
    pub fn broadcast<I>(&mut self, to: I, message: Message<'_>) -> usize
    where
        I: IntoIterator<Item = ConnectionId>,
    {
        if self.holding {
            let to: Vec<ConnectionId> = to.into_iter().collect();
            let count = to.len();
            self.held(to, message);
            return count;
        }
        if let Some(recording) = self.recording.as_deref_mut() {
            return to
                .into_iter()
                .filter(|id| recording.message(*id, message).is_ok())
                .count();
        }
        let plain = EncodedHeader::new(true, 0, message.opcode(), message.len());
        let mut shared: Option<SharedCompression> = None;
        let mut accepted = 0;
        for id in to {
            let bits = conn_mut(self.conns, id)
                .and_then(|conn| conn.proto.stateless_compression(message.len()));
            let Some(bits) = bits else {
                accepted += usize::from(self.send_message(id, message, &plain).is_ok());
                continue;
            };
            if shared.as_ref().is_none_or(|(cached, _)| *cached != bits) {
                // The first such recipient compresses; its bytes serve the
                // rest of the same window size.
                let mut out = Vec::new();
                let pool = &mut self.outbound.pool;
                let frame = conn_mut(self.conns, id)
                    .and_then(|conn| {
                        conn.proto.compress(
                            message.opcode(),
                            message.as_bytes(),
                            &mut out,
                            Some(pool),
                        )
                    })
                    .map(|header| (header, out));
                shared = Some((bits, frame));
            }
            let result = match shared.as_ref().and_then(|(_, frame)| frame.as_ref()) {
                Some((header, payload)) => self.send_encoded(id, header, payload),
                None => self.send_encoded(id, &plain, message.as_bytes()),
            };
            accepted += usize::from(result.is_ok());
        }
        accepted
    }

    /// Starts the closing handshake with `to`. The close callback follows
    /// when the peer answers (or the close timeout passes).
    pub fn close(&mut self, to: ConnectionId, code: CloseCode, reason: &str) {
        if let Some(recording) = self.recording.as_deref_mut() {
            return recording.close(to, code, reason);
        }
        let now = self.now;
        if let Some(conn) = conn_mut(self.conns, to) {
            conn.proto.close(code, reason, now);
            self.queue_flush(to);
            self.account(to);
        }
    }

    /// Whether `id` names a connection that can still be sent to.
    pub fn is_open(&self, id: ConnectionId) -> bool {
        if let Some(recording) = &self.recording {
            return recording.is_open(id);
        }
        self.conns.get(id.index as usize).is_some_and(|conn| {
            conn.id.generation == id.generation && conn.proto.phase() == Phase::Open
        })
    }

    /// Every connection that can be sent to.
    pub fn open_connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.conns
            .iter()
            .filter(|(_, conn)| conn.proto.phase() == Phase::Open)
            .map(|(_, conn)| conn.id)
            .chain(self.recording.iter().flat_map(|r| r.open().iter().copied()))
    }
}
