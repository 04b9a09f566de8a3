//! Reading sockets: when a connection is read, into which buffer, and how
//! much at a time (the read policy), and what the end of a stream or a
//! read error means for it.
//!
//! Every socket is read first into one shared scratch buffer, so idle
//! connections own no receive memory; the start of a frame a read cut is
//! carried at the front of that buffer into the next read when short, and
//! a connection receiving frames too large for it reads into its own
//! buffer (the `InBuffer` its `proto::Connection` keeps between reads and
//! lends out for one), sized by what arrived, never by what the peer
//! declared. What was read goes to `dispatch`.

use std::io;
use std::time::Instant;

use mio::Events;

use super::event_loop::{Driver, Outcome};
use super::sources::SOURCE_TOKEN_BASE;
use super::write::write_tls_alert;
use crate::handler::Handler;
use crate::proto::{HttpResponse, Phase, frame};

/// Leftover input (the start of a frame the last read cut) up to this size
/// is moved to the front of the shared read buffer and read after, rather
/// than read after in the connection's own buffer.
const CARRY_LIMIT: usize = 32 * 1024;

/// Bytes asked for per read when appending to a connection's own buffer.
pub(super) const READ_CHUNK: usize = 128 * 1024;

/// Receive buffers above this size are freed as soon as they empty
/// (smaller ones are kept while the connection is busy, and freed when it
/// goes quiet).
pub(super) const KEEP_INBUF_CAPACITY: usize = 1024 * 1024;

/// Reads per socket per wakeup before other sockets get their turn.
const READS_PER_WAKEUP: usize = 16;

/// Whether a socket's event makes the loop read it: data, or the peer's
/// FIN or an error, which only a read reports.
pub(super) fn calls_for_read(event: &mio::event::Event) -> bool {
    event.is_readable() || event.is_read_closed() || event.is_error()
}

/// The whole length (header and payload) of the frame that `held` starts,
/// once its header is complete; `None` while it is too short to tell, or
/// when it is not a frame start (a request head, or an error the decoder
/// will report).
fn held_frame_len(held: &[u8]) -> Option<u64> {
    match frame::parse_header(held, 0b111) {
        Ok(Some(header)) => Some(header.payload_len.saturating_add(header.header_len as u64)),
        Ok(None) | Err(_) => None,
    }
}

/// Whether a held-back frame of `frame_len` bytes (see [`held_frame_len`])
/// fits in `room` bytes; an unknown one counts as small. A larger frame is
/// read on in the connection's own buffer: carried into the shared one,
/// most of it would have to be copied back out.
fn completes_within(frame_len: Option<u64>, room: usize) -> bool {
    frame_len.is_none_or(|len| len <= room as u64)
}

/// How much to read into a connection's own buffer holding `held_len`
/// bytes of a frame of `frame_len` (see [`held_frame_len`]): the rest of
/// the frame when that is known and at least a chunk, so a large frame
/// ends at the end of the buffer and consuming it empties the buffer
/// (nothing left over to move down before the next one). Never more than
/// twice what has arrived, or the `room` the buffer already has beyond it
/// (grown by earlier frames): the buffer grows as bytes arrive, not to the
/// length the peer declared, so 15 bytes declaring 16 MiB cost 15 bytes,
/// not a chunk-sized buffer. An empty buffer asks for
/// `last_fill` (see [`Socket::last_fill`]; the caller keeps it within the
/// room the buffer already has), so a stream of equal large frames is read a whole
/// frame per call, like the peers that size their reads by the header.
fn own_read_size(held_len: usize, frame_len: Option<u64>, last_fill: usize, room: usize) -> usize {
    let Some(frame_len) = frame_len else {
        return if held_len == 0 {
            last_fill.max(READ_CHUNK)
        } else {
            READ_CHUNK
        };
    };
    let rest = frame_len.saturating_sub(held_len as u64);
    let cap = held_len.saturating_mul(2).max(room);
    usize::try_from(rest)
        .map_or(cap, |rest| rest.min(cap))
        .max(READ_CHUNK.min(cap))
}

impl<H: Handler> Driver<H> {
    /// Whether this batch will read from more than one connection: the
    /// unpaused ones in `read_again` and those with a read event, each
    /// counted once.
    pub(super) fn several_to_read(&self, events: &Events) -> bool {
        let again = self.read_again.iter().copied().filter(|&slot| {
            self.conns
                .get(slot)
                .is_some_and(|conn| !conn.read_paused && !conn.read_closed)
        });
        let readable = events
            .iter()
            .filter(|event| calls_for_read(event))
            .map(|event| event.token().0)
            // The loop's own tokens and the application's sources sit
            // above the connections' slots.
            .filter(|&slot| slot < SOURCE_TOKEN_BASE);
        let mut first = None;
        for slot in again.chain(readable) {
            match first {
                None => first = Some(slot),
                Some(seen) if seen != slot => return true,
                Some(_) => {}
            }
        }
        false
    }

    /// Reads until `WouldBlock` (or the per-wakeup budget), processing as
    /// bytes arrive. With `stop_short`, a read that returns less than asked
    /// ends the turn (the queue is drained and the next arrival raises a
    /// new edge); without it, reading goes on until `WouldBlock` or EOF.
    pub(super) fn on_readable(
        &mut self,
        slot: usize,
        scratch: &mut [u8],
        now: Instant,
        stop_short: bool,
    ) -> Outcome {
        for _ in 0..READS_PER_WAKEUP {
            let Some(conn) = self.conns.get_mut(slot) else {
                return Outcome::Live;
            };
            // A connection with a message left to inflate is not read until
            // it is done (`inflate_next` reads it then).
            if conn.read_paused || conn.read_closed || conn.deferred || conn.proto.inflating() {
                return Outcome::Live;
            }
            let discard = conn.proto.phase() == Phase::Closed;
            // One look at the held-back frame's header serves both the
            // carry decision and the size of a read into the own buffer.
            // (A request head is never a frame start.)
            let mut frame_len = None;
            if conn.proto.input_len() > 0 && conn.proto.phase() != Phase::Handshaking {
                frame_len = held_frame_len(conn.proto.input_mut().data_mut());
                conn.large_frames = !completes_within(frame_len, scratch.len());
            }
            // A short leftover rides at the front of the shared read
            // buffer, so reads keep landing in that one cache-warm buffer
            // instead of walking through every busy connection's own. The
            // read lands after the room it needs; it moves over only once
            // new bytes came to go with it.
            let carried = if discard
                || conn.proto.input_len() == 0
                || conn.proto.input_len() > CARRY_LIMIT
                || conn.large_frames
            {
                0
            } else {
                conn.proto.input_len()
            };
            // A connection receiving frames too large for the shared buffer
            // reads on in its own even between them, so the start of the
            // next one is not copied over from the shared buffer.
            let into_scratch = discard || (conn.proto.input_len() == carried && !conn.large_frames);
            let mut asked = scratch.len() - carried;
            let result = if into_scratch {
                let result = conn.read_into(&mut scratch[carried..]);
                if carried > 0 && matches!(result, Ok(n) if n > 0) {
                    scratch[..carried].copy_from_slice(conn.proto.input_mut().data_mut());
                    conn.proto.input_mut().consume(carried);
                }
                result
            } else {
                // Out of the connection while it reads into it.
                let mut inbuf = conn.proto.take_input();
                // Past frames' size is a hint only within the room the
                // buffer already has: it makes the buffer grow by nothing.
                let last_fill = conn.last_fill.min(inbuf.usable_size());
                let room = inbuf.usable_size().saturating_sub(inbuf.len());
                let want = own_read_size(inbuf.len(), frame_len, last_fill, room);
                let spare = inbuf.spare_mut(want, self.max_inbuf);
                let spare_len = spare.len().min(want);
                let spare = &mut spare[..spare_len];
                if spare.is_empty() {
                    // Cannot happen within the limits (a complete frame is
                    // always consumed); refuse to grow past them regardless.
                    log::warn!("{} {}: receive buffer full", conn.id, conn.peer);
                    return Outcome::Done;
                }
                asked = spare.len();
                let result = conn.read_into(spare);
                conn.proto.restore_input(inbuf);
                result
            };
            match result {
                Ok(0) => return self.on_eof(slot, now),
                Ok(n) => {
                    conn.proto.handle_peer_activity(now);
                    // A TCP read that returns less than asked emptied the
                    // receive queue: the next arrival raises a new edge, so
                    // the usual extra read that ends in EAGAIN is skipped.
                    // (Not so on TLS: one record's plaintext says nothing
                    // about what else the socket holds.)
                    let drained = stop_short && n < asked && conn.tls.is_none();
                    if discard {
                        if drained {
                            return Outcome::Live;
                        }
                        continue;
                    }
                    if into_scratch {
                        let filled = carried + n;
                        let used = self.process(slot, &mut scratch[..filled], now);
                        if used < filled
                            && let Some(conn) = self.conns.get_mut(slot)
                        {
                            conn.proto
                                .input_mut()
                                .extend_from_slice(&scratch[used..filled]);
                        }
                    } else {
                        conn.proto.input_mut().commit(n);
                        let mut inbuf = conn.proto.take_input();
                        let used = self.process(slot, inbuf.data_mut(), now);
                        inbuf.consume(used);
                        inbuf.release_if_empty_over(KEEP_INBUF_CAPACITY);
                        if let Some(conn) = self.conns.get_mut(slot) {
                            // A fill consumed whole that the shared buffer
                            // would have held had only frames it fits (a
                            // connection gone back to small messages, say):
                            // back to the shared one. A larger fill sizes
                            // the next read.
                            if inbuf.is_empty() {
                                if used <= scratch.len() {
                                    conn.large_frames = false;
                                } else {
                                    conn.last_fill = used;
                                }
                            }
                            conn.proto.restore_input(inbuf);
                        }
                    }
                    self.after_io(slot, now);
                    if drained {
                        return self.flush_now(slot);
                    }
                    if self.conns.get(slot).is_some_and(|conn| {
                        conn.proto.pending_output_len() > self.config.limits.write_buffer_soft
                    }) {
                        // Let the flush decide whether to pause reading.
                        if self.flush_now(slot) == Outcome::Done {
                            return Outcome::Done;
                        }
                        self.read_again.push(slot);
                        return Outcome::Live;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if conn.tls.is_some() {
                        // The TLS handshake may have produced records.
                        self.after_io(slot, now);
                    }
                    return self.flush_now(slot);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_)
                    if conn.plaintext_on_tls_port && conn.proto.phase() == Phase::Handshaking =>
                {
                    let response =
                        HttpResponse::text(400, "this port speaks TLS: use https:// or wss://\n");
                    self.refuse(slot, &response, "plain text on the TLS port", now);
                    self.after_io(slot, now);
                    return self.flush_now(slot);
                }
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    log::debug!("{} {}: TLS failure: {error}", conn.id, conn.peer);
                    // Best effort: the alert rustls queued, and nothing else.
                    write_tls_alert(conn);
                    return Outcome::Done;
                }
                Err(error) => {
                    log::debug!("{} {}: read error: {error}", conn.id, conn.peer);
                    return Outcome::Done;
                }
            }
        }
        self.read_again.push(slot);
        Outcome::Live
    }

    /// The peer ended its stream (or the TLS session): finished unless
    /// output still waits to go out.
    pub(super) fn on_eof(&mut self, slot: usize, now: Instant) -> Outcome {
        let conn = &mut self.conns[slot];
        conn.read_closed = true;
        if conn.proto.phase() != Phase::Closed {
            // No closing handshake: an abnormal closure (1006).
            log::debug!("{} {}: peer went away", conn.id, conn.peer);
            conn.proto.abort(now);
        }
        // A TLS peer that closed first is still owed our close_notify.
        let owes_close_notify = conn.tls.as_ref().is_some_and(|tls| !tls.close_notify_sent);
        if conn.write_shutdown || !(conn.has_unsent_output() || owes_close_notify) {
            Outcome::Done
        } else {
            // What is queued still goes out (the peer may only have closed
            // its sending side); the flush removes the connection after.
            self.after_io(slot, now);
            Outcome::Live
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{EncodedHeader, OpCode};

    /// The start of a masked client frame of `payload_len` bytes, with
    /// `held` payload bytes after its header.
    fn frame_start(payload_len: usize, held: usize) -> Vec<u8> {
        let mut bytes = EncodedHeader::new(true, 0, OpCode::Binary, payload_len)
            .as_bytes()
            .to_vec();
        bytes[1] |= 0x80;
        bytes.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        bytes.resize(bytes.len() + held, 0);
        bytes
    }

    fn own_read_size_for(held: &[u8]) -> usize {
        own_read_size(held.len(), held_frame_len(held), 0, 0)
    }

    #[test]
    fn own_reads_stop_at_the_end_of_a_large_frame() {
        // Nothing held, or too little to know the frame: a chunk.
        assert_eq!(own_read_size_for(&[]), READ_CHUNK);
        assert_eq!(own_read_size_for(&[0x82, 0xFF, 0, 0]), READ_CHUNK);
        // 300 KB frame, 100 KB of it held (header 14 bytes): exactly the
        // rest, so consuming it empties the buffer.
        let held = frame_start(300_000, 100_000);
        assert_eq!(own_read_size_for(&held), 200_000);
        // A frame about to end: a whole chunk rather than a tiny read.
        let held = frame_start(300_000, 299_000);
        assert_eq!(own_read_size_for(&held), READ_CHUNK);
        // A declared length far beyond what arrived: the read (and so the
        // buffer's growth) is bounded by twice what came so far.
        let held = frame_start(1 << 40, 10);
        assert_eq!(own_read_size_for(&held), 2 * (10 + 14));
        let held = frame_start(8 << 20, 400_000);
        assert_eq!(own_read_size_for(&held), 800_000 + 2 * 14);
    }

    #[test]
    fn room_the_buffer_already_has_may_be_filled() {
        // A buffer grown by earlier large frames takes the rest of a new
        // one at once, however little of it has arrived.
        let held = frame_start(300_000, 10);
        let frame_len = held_frame_len(&held);
        assert_eq!(own_read_size(held.len(), frame_len, 0, 0), 2 * held.len());
        assert_eq!(
            own_read_size(held.len(), frame_len, 0, 400_000),
            300_000 + 14 - held.len()
        );
    }

    #[test]
    fn an_empty_own_buffer_reads_as_much_as_the_last_fill() {
        // A 256 KiB frame follows one of the same size: one read takes it.
        let frame = 256 * 1024 + 8;
        assert_eq!(own_read_size(0, None, frame, 0), frame);
        // A small last fill still reads a whole chunk.
        assert_eq!(own_read_size(0, None, 1000, 0), READ_CHUNK);
        // Once part of a frame is held, its header decides, not the hint.
        let held = frame_start(300_000, 100_000);
        assert_eq!(
            own_read_size(held.len(), held_frame_len(&held), 10 << 20, 0),
            200_000
        );
    }
}
