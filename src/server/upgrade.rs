//! The opening handshake on the driver's side: a complete request head goes
//! to the handler (`on_http`, `on_upgrade`, `on_open`), which may defer it
//! and have it offered again later; refusals are counted and logged here.

use std::mem;
use std::time::Instant;

use super::context::Context;
use super::event_loop::Core;
use crate::handler::Handler;
use crate::proto::HttpResponse;
use crate::proto::extensions::negotiate_permessage_deflate;
use crate::proto::handshake::{
    HEADER_SLOTS, header_slots, offered_protocols, parse_request, validate_upgrade, wants_upgrade,
};

impl<H: Handler> Core<H> {
    /// The context for a callback about the request on `slot`, which knows
    /// the peer's address and whether it came over TLS.
    /// With `deferrable`, the callback may put the request off (see
    /// [`Context::defer`]); the caller checks [`Core::take_deferred`].
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
            let mut inbuf = mem::take(&mut conn.inbuf);
            let used = self.process(slot, inbuf.data_mut(), now);
            inbuf.consume(used);
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.inbuf = inbuf;
                if !conn.deferred {
                    self.read_again.push(slot);
                }
            }
            self.after_io(slot, now);
        }
    }

    pub(super) fn process_handshake(&mut self, slot: usize, buf: &[u8], now: Instant) -> usize {
        let limits = &self.config.limits;
        let conn = &mut self.conns[slot];
        let head_len = match conn
            .proto
            .head_scanner()
            .find_end(buf, limits.max_request_head)
        {
            Ok(None) => return 0,
            Ok(Some(len)) => len,
            Err(error) => {
                self.refuse(slot, &HttpResponse::from(error), &error.to_string(), now);
                return buf.len();
            }
        };
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let slot_count = header_slots(limits);
        let request = match parse_request(&buf[..head_len], &mut slots[..slot_count]) {
            Ok(request) => request,
            Err(error) => {
                self.refuse(slot, &HttpResponse::from(error), &error.to_string(), now);
                return buf.len();
            }
        };
        if !wants_upgrade(&request) {
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
            conn.proto.respond(&response, now);
            return buf.len();
        }
        let accept_key = match validate_upgrade(&request) {
            Ok(key) => key,
            Err(error) => {
                self.refuse(slot, &HttpResponse::from(error), &error.to_string(), now);
                return buf.len();
            }
        };
        if self.open_websockets >= self.config.max_connections || self.shutdown_deadline.is_some() {
            let response = HttpResponse::text(503, "server at its connection limit\n");
            self.refuse(slot, &response, "connection limit", now);
            return buf.len();
        }
        let (handler, mut ctx) = self.request_context(slot, true, now);
        let upgrade = handler.on_upgrade(&mut ctx, &request);
        if self.take_deferred(slot) {
            return 0;
        }
        let accept = match upgrade {
            Ok(accept) => accept,
            Err(response) => {
                self.refuse(slot, &response, "refused by the application", now);
                return buf.len();
            }
        };
        // permessage-deflate is the server's business, not the handler's.
        let mut headers = accept.headers;
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("sec-websocket-extensions"));
        let deflate = self.config.deflate.as_ref().and_then(|config| {
            let (params, response) = negotiate_permessage_deflate(&request, config)?;
            headers.push(("Sec-WebSocket-Extensions".to_owned(), response));
            Some((params, config.min_compress_size))
        });
        let conn = &mut self.conns[slot];
        let protocol = accept.protocol.filter(|chosen| {
            let offered = offered_protocols(&request).any(|p| p == chosen);
            if !offered {
                log::warn!(
                    "{}: application chose subprotocol {chosen:?}, which was not offered",
                    conn.id
                );
            }
            offered
        });
        conn.proto
            .accept(&accept_key, protocol.as_deref(), &headers, now);
        if let Some((params, min_compress_size)) = deflate {
            self.stats.compressed_upgrades += 1;
            conn.decoder.enable_inflate(
                params.client_max_window_bits,
                params.client_no_context_takeover,
            );
            conn.proto.enable_deflate(
                params.server_max_window_bits,
                params.server_no_context_takeover,
                min_compress_size,
            );
        }
        let id = conn.id;
        log::debug!("{id} {}: open {}", conn.peer, request.target);
        self.open_websockets += 1;
        self.stats.upgrades += 1;
        let (handler, mut ctx) = self.request_context(slot, false, now);
        handler.on_open(&mut ctx, id, &request);
        head_len
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
