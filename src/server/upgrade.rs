//! The opening handshake on the driver's side: a complete request head goes
//! to the handler (`on_http`, `on_upgrade`, `on_open`), which may defer it
//! and have it offered again later; refusals are counted and logged here.

use std::mem;
use std::time::Instant;

use super::context::Context;
use super::event_loop::Driver;
use crate::handler::Handler;
use crate::proto::handshake::HEADER_SLOTS;
use crate::proto::{Head, HttpResponse};

impl<H: Handler> Driver<H> {
    /// The context for a callback about the request on `slot`, which knows
    /// the peer's address and whether it came over TLS.
    /// With `deferrable`, the callback may put the request off (see
    /// [`Context::defer`]); the caller checks [`Driver::take_deferred`].
    pub(super) fn request_context(
        &mut self,
        slot: usize,
        deferrable: bool,
        now: Instant,
    ) -> (&mut H, Context<'_>) {
        let conn = &self.conns[slot];
        let (peer, tls, id) = (conn.peer, conn.tls.is_some(), conn.id);
        self.deferrals.current = false;
        let (handler, mut ctx) = self.context(now);
        ctx.peer = Some(peer);
        ctx.tls = tls;
        ctx.request = Some((id, deferrable));
        (handler, ctx)
    }

    /// Whether the callback just made deferred the request on `slot`; if
    /// so, the connection stops being read until it is resumed, and its
    /// request stays unconsumed in its input.
    pub(super) fn take_deferred(&mut self, slot: usize) -> bool {
        if !mem::take(&mut self.deferrals.current) {
            return false;
        }
        let conn = &mut self.conns[slot];
        conn.deferred = true;
        log::debug!("{} {}: request deferred", conn.id, conn.peer);
        true
    }

    /// Offers the requests the handler asked to resume to it again: the
    /// held input is processed as if it had just arrived, then the socket
    /// is read for whatever came meanwhile.
    /// One pass: a request the handler resumes again while it is offered
    /// waits for the next turn of the loop.
    pub(super) fn resume_deferred(&mut self, now: Instant) {
        for id in mem::take(&mut self.deferrals.resumed) {
            let slot = id.index as usize;
            let Some(conn) = self
                .conns
                .get_mut(slot)
                .filter(|conn| conn.id == id && conn.deferred)
            else {
                continue;
            };
            conn.deferred = false;
            let mut inbuf = conn.proto.take_input();
            let used = self.process(slot, inbuf.data_mut(), now);
            inbuf.consume(used);
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.proto.restore_input(inbuf);
                if !conn.deferred {
                    self.read_again.push(slot);
                }
            }
            self.after_io(slot, now);
        }
    }

    /// Hands the request head in `buf` (all input held so far) to the
    /// protocol, and a complete request to the handler; returns the bytes
    /// used (0 while the head is incomplete or the request deferred).
    pub(super) fn process_handshake(&mut self, slot: usize, buf: &[u8], now: Instant) -> usize {
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let head = self.conns[slot]
            .proto
            .handle_head(buf, &mut slots, &self.config.limits);
        let (request, upgrade) = match head {
            Head::NeedMore => return 0,
            Head::Invalid(error) => {
                self.refuse(slot, &HttpResponse::from(error), &error.to_string(), now);
                return buf.len();
            }
            Head::Refused(response) => {
                self.refuse(slot, &response, "request body refused", now);
                return buf.len();
            }
            Head::Http(request) => {
                let (handler, mut ctx) = self.request_context(slot, true, now);
                let response = handler.on_http(&mut ctx, &request);
                if self.take_deferred(slot) {
                    return 0;
                }
                self.stats.http_requests += 1;
                let conn = &mut self.conns[slot];
                log::debug!(
                    "{} {}: {} {} -> {}",
                    conn.id,
                    conn.peer,
                    request.method,
                    request.target,
                    response.status
                );
                if request.method == "HEAD" {
                    conn.proto.respond_head(&response, now);
                } else {
                    conn.proto.respond(&response, now);
                    conn.body_tail = response.shared_body.map(|body| Box::new((body, 0)));
                }
                return buf.len();
            }
            Head::Upgrade(request, upgrade) => (request, upgrade),
        };
        if self.open_websockets >= self.config.max_connections || self.shutdown_deadline.is_some() {
            let response = HttpResponse::text(503, "server at its connection limit\n");
            self.refuse(slot, &response, "connection limit", now);
            return buf.len();
        }
        let (handler, mut ctx) = self.request_context(slot, true, now);
        let answer = handler.on_upgrade(&mut ctx, &request);
        if self.take_deferred(slot) {
            return 0;
        }
        let accept = match answer {
            Ok(accept) => accept,
            Err(response) => {
                self.refuse(slot, &response, "refused by the application", now);
                return buf.len();
            }
        };
        let conn = &mut self.conns[slot];
        let accepted = conn.proto.accept_upgrade(
            &request,
            &upgrade,
            accept.protocol.as_deref(),
            accept.headers,
            self.config.deflate.as_ref(),
            now,
        );
        if let Some(chosen) = accepted.unoffered_protocol {
            log::warn!(
                "{}: application chose subprotocol {chosen:?}, which was not offered",
                conn.id
            );
        }
        if accepted.compressed {
            self.stats.compressed_upgrades += 1;
        }
        let id = conn.id;
        log::debug!("{id} {}: open {}", conn.peer, request.target);
        self.open_websockets += 1;
        self.stats.upgrades += 1;
        let (handler, mut ctx) = self.request_context(slot, false, now);
        handler.on_open(&mut ctx, id, &request);
        upgrade.head_len()
    }

    pub(super) fn refuse(&mut self, slot: usize, response: &HttpResponse, why: &str, now: Instant) {
        *self
            .stats
            .rejected_handshakes
            .entry(response.status)
            .or_default() += 1;
        let conn = &mut self.conns[slot];
        log::warn!(
            "{} {}: handshake refused with {}: {why}",
            conn.id,
            conn.peer,
            response.status
        );
        conn.proto.respond(response, now);
    }
}
