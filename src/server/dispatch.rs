//! Bytes read to the handler: a connection's input goes to the opening
//! handshake (`upgrade`) or to the frame decoder, decoded messages to the
//! handler, and a compressed message too large to inflate at once takes
//! its turn in the inflation queue.

use std::time::Instant;

use super::event_loop::{Driver, Outcome};
use super::read::KEEP_INBUF_CAPACITY;
use crate::handler::Handler;
use crate::proto::{Phase, Received};

impl<H: Handler> Driver<H> {
    /// Gives the first connection of the inflation queue its next slice. Once
    /// its message is whole (and delivered) it leaves the queue, and what
    /// it sent meanwhile is processed: held input first, then the socket;
    /// returns that connection and what reading left it as.
    pub(super) fn inflate_next(
        &mut self,
        scratch: &mut [u8],
        now: Instant,
    ) -> Option<(usize, Outcome)> {
        while let Some(&(slot, generation)) = self.inflate_queue.front() {
            let Some(conn) = self
                .conns
                .get_mut(slot)
                .filter(|conn| conn.id.generation == generation)
            else {
                self.inflate_queue.pop_front();
                continue;
            };
            if matches!(conn.proto.phase(), Phase::Open | Phase::Closing) && conn.proto.inflating()
            {
                self.process_frames(slot, &mut [], now);
                if self
                    .conns
                    .get(slot)
                    .is_some_and(|conn| conn.proto.inflating())
                {
                    self.after_io(slot, now);
                    return None;
                }
            }
            self.inflate_queue.pop_front();
            let conn = self.conns.get_mut(slot)?;
            conn.inflate_queued = false;
            if conn.proto.phase() == Phase::Closed {
                // Failed while inflating, or closed while waiting.
                conn.proto.discard_decoder();
            }
            let mut inbuf = conn.proto.take_input();
            if !inbuf.is_empty() {
                let used = self.process(slot, inbuf.data_mut(), now);
                inbuf.consume(used);
                inbuf.release_if_empty_over(KEEP_INBUF_CAPACITY);
            }
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.proto.restore_input(inbuf);
            }
            self.after_io(slot, now);
            // Reads were skipped since the message came: the edges that
            // announced newer bytes (or the peer's FIN) are spent.
            return Some((slot, self.on_readable(slot, scratch, now, false)));
        }
        None
    }

    /// Hands received bytes to the connection's current phase; returns how
    /// many were used (the rest is kept for the next read).
    pub(super) fn process(&mut self, slot: usize, buf: &mut [u8], now: Instant) -> usize {
        let mut used = 0;
        if self.conns[slot].proto.phase() == Phase::Handshaking {
            used = self.process_handshake(slot, buf, now);
        }
        match self.conns[slot].proto.phase() {
            Phase::Open | Phase::Closing if used < buf.len() => {
                used + self.process_frames(slot, &mut buf[used..], now)
            }
            Phase::Closed => buf.len(),
            _ => used,
        }
    }

    /// Decodes frames from `buf` and hands whole messages to the handler,
    /// recording echoes for a gathered write (see `write`); returns how
    /// many bytes were used.
    pub(super) fn process_frames(&mut self, slot: usize, buf: &mut [u8], now: Instant) -> usize {
        let mut decoder = self.conns[slot].proto.take_decoder();
        let mut pos = 0;
        let len = buf.len();
        if self.conns[slot].tls.is_none() {
            self.gather.start(slot, buf);
        }
        loop {
            let conn = &mut self.conns[slot];
            let id = conn.id;
            match conn.proto.handle_input(&mut decoder, &mut buf[pos..], now) {
                Received::Message(message, used) => {
                    pos += used;
                    self.stats.messages_in += 1;
                    self.stats.bytes_in += message.len() as u64;
                    let (handler, mut ctx) = self.context(now);
                    if pos == len {
                        ctx.lone = Some(slot);
                    }
                    handler.on_message(&mut ctx, id, message);
                    // Output worth a syscall on its own goes out now, so
                    // large echoes stream instead of waiting for the batch.
                    self.write_early(slot, buf);
                }
                Received::Handled(used) => pos += used,
                Received::NeedMore(used) => {
                    pos += used;
                    break;
                }
                Received::Inflating(used) => {
                    pos += used;
                    if !conn.inflate_queued {
                        conn.inflate_queued = true;
                        self.inflate_queue.push_back((slot, id.generation));
                    }
                    break;
                }
                Received::Closed(used) => {
                    pos += used;
                    // (The budget logged its own closes.)
                    if let Some((code, reason)) = conn.proto.failure()
                        && !conn.budget_shed
                    {
                        log::warn!("{id} {}: failed with {code}: {reason}", conn.peer);
                    }
                    break;
                }
            }
        }
        self.conns[slot].proto.restore_decoder(decoder);
        self.gather.finish(self.conns.get_mut(slot), buf);
        pos
    }
}
