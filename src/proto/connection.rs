//! The per-connection state machine: `Handshaking → Open → Closing → Closed`.
//!
//! Sans-IO: the driver hands in received bytes and the current time, and
//! takes out the bytes to write. Control frames (ping, pong, close) are
//! answered here; data messages are handed back for the application.
//!
//! The surface, in the order a driver calls it (`server` is the one in
//! this crate; the fuzz target `connection` is another):
//!
//! 1. **Opening** (while [`Phase::Handshaking`]): each read's bytes, all
//!    held so far, go to [`Connection::handle_head`] until it finds the
//!    request head; the driver asks the application, then calls
//!    [`Connection::accept_upgrade`] or [`Connection::respond`]
//!    (see `opening`).
//! 2. **Input** (once open): for each read, [`Connection::handle_peer_activity`],
//!    then [`Connection::take_decoder`] lends the decoder;
//!    [`Connection::handle_input`] is called until it needs more bytes,
//!    each [`Received::Message`] going to the application (which may send
//!    meanwhile: the message borrows the lent decoder and the input, not
//!    the connection); [`Connection::restore_decoder`] ends the read.
//! 3. **Application commands**, at any time: [`Connection::compress`] then
//!    [`Connection::send_encoded`] (or [`Connection::send`]),
//!    [`Connection::close`], [`Connection::shed`], [`Connection::abort`].
//!    A driver that writes a frame itself may do so only while
//!    [`Connection::can_write_directly`], and then hands over what the
//!    socket did not take: [`Connection::send_encoded_after_direct_write`],
//!    or [`Connection::queue_ahead`] for frames written from elsewhere.
//! 4. **Output**: [`Connection::poll_output`] is what to write next;
//!    [`Connection::consume_output`] what the socket took.
//! 5. **Time**: [`Connection::poll_timeout`] is when to call
//!    [`Connection::handle_timeout`] next (re-read after every call above).
//! 6. **Events for the application**: [`Connection::poll_close_report`]
//!    once, after the connection reached [`Phase::Closed`].

use std::time::{Duration, Instant};

use super::close_code::CloseCode;
use super::decoder::{Decoded, Decoder, Frame};
use super::deflate::{Deflater, DeflaterPool};
use super::error::ProtocolError;
use super::frame::{EncodedHeader, MAX_CONTROL_PAYLOAD, OpCode, RSV1, encode_frame, parse_header};
use super::handshake::{HeadScanner, write_switching_protocols};
use super::http::HttpResponse;
use super::inbuf::InBuffer;
use super::limits::Limits;
use super::message::Message;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for (the rest of) the request head.
    Handshaking,
    /// The WebSocket is open: messages flow both ways.
    Open,
    /// The server sent a close frame and waits for the peer's.
    Closing,
    /// Nothing more is sent or decoded: the driver flushes what is queued,
    /// shuts the socket down and drops the connection.
    Closed,
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is not open (handshaking, closing or closed).
    NotOpen,
    /// The peer is not reading: queued output passed the hard limit. The
    /// connection is being closed with 1008.
    Backlogged,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::NotOpen => "connection is not open",
            SendError::Backlogged => "peer is not reading; connection closed with 1008",
        })
    }
}

impl std::error::Error for SendError {}

/// What one call to [`Connection::handle_input`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A whole message for the application; the count is input bytes used.
    Message(Message<'a>, usize),
    /// A frame the connection handled itself (ping, pong, or data arriving
    /// while closing); keep going after the counted bytes.
    Handled(usize),
    /// More bytes are needed; the count is input bytes used so far.
    NeedMore(usize),
    /// A compressed message is complete but only partly inflated; the
    /// count is input bytes used so far. Call again later (no new bytes
    /// needed) to go on: [`Decoder::inflating`] stays true until then.
    Inflating(usize),
    /// The connection is now [`Phase::Closed`] (the peer's close frame
    /// arrived or the peer broke the protocol); stop decoding.
    Closed(usize),
}

/// What a timer expiry asks the driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutAction {
    /// The deadline has not passed; nothing to do.
    None,
    /// Frames were queued (a keepalive ping or a close): flush them.
    Flush,
    /// Give up on the connection now.
    Drop,
}

/// How the connection ended, for the application's close callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReport {
    /// The peer's close code, 1005 if its close frame had none, the code the
    /// server failed the connection with, or 1006 if it just went away.
    pub code: CloseCode,
    /// The reason that came with the code (empty if none).
    pub reason: String,
}

/// Written bytes at the front of the output buffer are dropped (the rest
/// moved down) once there are at least this many and they are at least
/// half of the buffer.
const COMPACT_OUTPUT_AFTER: usize = 64 * 1024;

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    scanner: HeadScanner,
    /// The frame decoder, lent out for each read ([`Connection::take_decoder`]).
    decoder: Decoder,
    /// Received bytes kept between reads: a request head or a frame still
    /// arriving, lent out for each read ([`Connection::take_input`]).
    input: InBuffer,
    out: Vec<u8>,
    out_pos: usize,
    /// A frame boundary in `out`, for [`Connection::shed`]: at or after
    /// `out_pos`, the bytes between are the rest of what went out in part
    /// (a frame, or the HTTP head) and must follow it whole; before
    /// `out_pos`, the frames from it on are whole in `out` and their
    /// headers lead to the boundary that is. Kept up to date only when
    /// bytes are prepended or the buffer is compacted; found when needed.
    frame_mark: usize,
    close_sent: bool,
    opened: bool,
    close_reported: bool,
    peer_close: Option<(CloseCode, String)>,
    failure: Option<(CloseCode, &'static str)>,
    /// While handshaking, when the handshake must be done; once open, when
    /// the frame (or fragmented message) still arriving must be, if one is
    /// (its first byte's arrival plus `frame_timeout`). One field, as the
    /// two never run at once and connection records are kept small.
    deadline: Option<Instant>,
    last_received: Instant,
    ping_sent_at: Option<Instant>,
    close_deadline: Option<Instant>,
    /// `Limits::frame_timeout` in milliseconds (saturating at 49 days):
    /// 4 bytes that fit in padding, where a `Duration` would add 16.
    frame_timeout_ms: u32,
    ping_interval: Duration,
    pong_timeout: Duration,
    close_timeout: Duration,
    write_buffer_hard: usize,
    /// A drained output buffer keeps up to this much capacity while the
    /// connection is busy (reallocating per large message costs page
    /// faults); a quiet connection gives it all back.
    keep_output_capacity: usize,
    deflate: Option<Box<OutboundDeflate>>,
}

/// How this connection compresses outgoing messages, when the peer agreed
/// to permessage-deflate.
#[derive(Debug)]
struct OutboundDeflate {
    window_bits: u8,
    no_context_takeover: bool,
    min_size: usize,
    /// This connection's own compressor (context takeover), made on the
    /// first compressed message and dropped when the connection is quiet.
    own: Option<Deflater>,
}

impl Connection {
    /// A connection just accepted at `now`, waiting for its request head.
    pub fn new(limits: &Limits, now: Instant) -> Connection {
        Connection {
            phase: Phase::Handshaking,
            scanner: HeadScanner::default(),
            decoder: Decoder::new(limits),
            input: InBuffer::default(),
            out: Vec::new(),
            out_pos: 0,
            frame_mark: 0,
            close_sent: false,
            opened: false,
            close_reported: false,
            peer_close: None,
            failure: None,
            deadline: Some(now + limits.handshake_timeout),
            last_received: now,
            ping_sent_at: None,
            close_deadline: None,
            frame_timeout_ms: u32::try_from(limits.frame_timeout.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            ping_interval: limits.ping_interval,
            pong_timeout: limits.pong_timeout,
            close_timeout: limits.close_timeout,
            write_buffer_hard: limits.write_buffer_hard,
            keep_output_capacity: limits.write_buffer_soft,
            deflate: None,
        }
    }

    /// Compresses outgoing messages of at least `min_size` bytes, as agreed
    /// by permessage-deflate: with at most `window_bits`, and with
    /// `no_context_takeover` each message compressed on its own.
    pub(super) fn enable_deflate(
        &mut self,
        window_bits: u8,
        no_context_takeover: bool,
        min_size: usize,
    ) {
        self.deflate = Some(Box::new(OutboundDeflate {
            window_bits,
            no_context_takeover,
            min_size,
            own: None,
        }));
    }

    /// Whether a message of `len` bytes would go out compressed.
    pub fn compresses(&self, len: usize) -> bool {
        self.phase == Phase::Open && self.deflate.as_ref().is_some_and(|d| len >= d.min_size)
    }

    /// The window size a message of `len` bytes would be compressed with
    /// if it is compressed on its own (no server context takeover): every
    /// such connection with the same window gets the same bytes, so a
    /// broadcast compresses once per window size.
    pub fn stateless_compression(&self, len: usize) -> Option<u8> {
        self.deflate
            .as_ref()
            .filter(|d| d.no_context_takeover && self.compresses(len))
            .map(|d| d.window_bits)
    }

    /// Compresses `payload` into `out` if this connection compresses
    /// messages of its size, and returns the header of the frame that
    /// carries `out` (RSV1 set, `opcode`); `None` means send the payload
    /// as it is. Connections without context takeover borrow a compressor
    /// from `shared` when given. Once this returns a header the message
    /// must be sent: the peer's inflater has to see it to stay in step.
    /// The one place an outgoing message is compressed.
    pub fn compress(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
        shared: Option<&mut DeflaterPool>,
    ) -> Option<EncodedHeader> {
        if !self.compresses(payload.len()) {
            return None;
        }
        let deflate = self.deflate.as_mut()?;
        let reset = deflate.no_context_takeover;
        let deflater = match shared {
            Some(pool) if reset => pool.get(deflate.window_bits),
            _ => {
                let bits = deflate.window_bits;
                deflate.own.get_or_insert_with(|| Deflater::new(bits))
            }
        };
        // Without context takeover nothing depends on this message having
        // been compressed, so an incompressible one goes out as it is.
        let compressed = deflater.compress_message(payload, out, reset)
            && !(reset && out.len() >= payload.len());
        compressed.then(|| EncodedHeader::new(true, RSV1, opcode, out.len()))
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The code and reason the server failed the connection with, if it
    /// did (protocol violation, keepalive timeout, backlog).
    pub fn failure(&self) -> Option<(CloseCode, &'static str)> {
        self.failure
    }

    /// Whether the WebSocket ever opened (and so owes one close report).
    pub fn opened(&self) -> bool {
        self.opened
    }

    /// The incremental scanner for the request head.
    pub(super) fn head_scanner(&mut self) -> &mut HeadScanner {
        &mut self.scanner
    }

    /// Inflates incoming messages compressed with permessage-deflate, as
    /// agreed: the peer compresses with at most `window_bits`, and with
    /// `no_context_takeover` each message on its own.
    pub(super) fn enable_inflate(&mut self, window_bits: u8, no_context_takeover: bool) {
        self.decoder
            .enable_inflate(window_bits, no_context_takeover);
    }

    /// Lends the frame decoder out for one read: pass it to
    /// [`Connection::handle_input`], then give it back with
    /// [`Connection::restore_decoder`]. What `handle_input` returns borrows the
    /// lent decoder and the input, not the connection, so the application
    /// may send on this connection while it holds a message (single-frame
    /// messages stay borrowed from the input, never copied).
    #[inline]
    pub fn take_decoder(&mut self) -> Decoder {
        std::mem::take(&mut self.decoder)
    }

    /// Gives back the decoder lent by [`Connection::take_decoder`].
    #[inline]
    pub fn restore_decoder(&mut self, decoder: Decoder) {
        self.decoder = decoder;
    }

    /// Whether a complete compressed message is only partly inflated: call
    /// [`Connection::handle_input`] again (no new bytes needed) to go on.
    pub fn inflating(&self) -> bool {
        self.decoder.inflating()
    }

    /// Bytes held for a fragmented message not yet complete (and for a
    /// compressed one, what it holds to inflate).
    pub fn partial_message_len(&self) -> usize {
        self.decoder.partial_message_len()
    }

    /// Drops the decoder's state and memory: nothing more is decoded (the
    /// connection is closed, or being dropped for the buffer budget).
    pub fn discard_decoder(&mut self) {
        self.decoder = Decoder::default();
    }

    /// Received bytes not yet processed.
    #[inline]
    pub fn input_len(&self) -> usize {
        self.input.len()
    }

    /// The received bytes kept between reads, to read more into or to
    /// carry a short leftover out of: where a read lands (this buffer or
    /// the driver's shared one) is the driver's choice.
    #[inline]
    pub fn input_mut(&mut self) -> &mut InBuffer {
        &mut self.input
    }

    /// Lends the input buffer out for one read-and-process turn, so its
    /// bytes can be decoded and handed to the application (borrowed, not
    /// copied) while the connection itself is borrowed elsewhere. Give it
    /// back with [`Connection::restore_input`].
    #[inline]
    pub fn take_input(&mut self) -> InBuffer {
        std::mem::take(&mut self.input)
    }

    /// Gives back the buffer lent by [`Connection::take_input`].
    #[inline]
    pub fn restore_input(&mut self, input: InBuffer) {
        self.input = input;
    }

    /// Drops every received byte not yet processed and the decoder's state:
    /// nothing more is read from this peer (closed, or shed for the buffer
    /// budget).
    pub fn discard_input(&mut self) {
        self.input = InBuffer::default();
        self.discard_decoder();
    }

    /// Bytes this connection makes the server hold: output queued and not
    /// yet written, received bytes not yet processed, and the fragments of
    /// a message not yet complete. Bytes held, not capacity.
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.pending_output_len() + self.input.len() + self.partial_message_len()
    }

    /// Completes the handshake: queues `101 Switching Protocols` and opens.
    pub(super) fn accept(
        &mut self,
        accept_key: &str,
        protocol: Option<&str>,
        headers: &[(String, String)],
        now: Instant,
    ) {
        if self.phase != Phase::Handshaking {
            return;
        }
        write_switching_protocols(&mut self.out, accept_key, protocol, headers);
        // The response head goes out whole, whatever is shed after it.
        self.frame_mark = self.out.len();
        self.phase = Phase::Open;
        self.deadline = None;
        self.opened = true;
        self.last_received = now;
    }

    /// Answers a plain HTTP request or refuses a handshake, then closes.
    /// A [`HttpResponse::shared_body`] is the driver's to send after (see
    /// [`Connection::queue_response_body`]).
    pub fn respond(&mut self, response: &HttpResponse, now: Instant) {
        if self.phase != Phase::Handshaking {
            return;
        }
        response.write_to(&mut self.out);
        self.frame_mark = self.out.len();
        self.enter_closed(now);
    }

    /// Answers a `HEAD` request: `response`'s head only, then closes.
    pub fn respond_head(&mut self, response: &HttpResponse, now: Instant) {
        if self.phase != Phase::Handshaking {
            return;
        }
        response.write_head_to(&mut self.out);
        self.frame_mark = self.out.len();
        self.enter_closed(now);
    }

    /// Queues the next piece of a response body after what is pending
    /// (the driver streams a shared body this way as the peer takes it).
    /// Only after [`Connection::respond`].
    pub fn queue_response_body(&mut self, piece: &[u8]) {
        if self.phase == Phase::Closed {
            self.out.extend_from_slice(piece);
            self.frame_mark = self.out.len();
        }
    }

    /// Records that the peer was heard from at `now`: bytes arrived, or (the
    /// driver's judgment) it took output since the keepalive ping. Keeps
    /// keepalive satisfied.
    pub fn handle_peer_activity(&mut self, now: Instant) {
        self.last_received = now;
        self.ping_sent_at = None;
    }

    /// Decodes the next frame from `input` with `decoder`, answering
    /// control frames. The result borrows `decoder` and `input`, not `self`,
    /// so the application may send on this connection while holding it.
    pub fn handle_input<'d>(
        &mut self,
        decoder: &'d mut Decoder,
        input: &'d mut [u8],
        now: Instant,
    ) -> Received<'d> {
        if !matches!(self.phase, Phase::Open | Phase::Closing) {
            return Received::Closed(0);
        }
        // Whether a fragmented message was open before: with what this
        // call uses up, that says whether one is open after it, without
        // looking at the decoder while the result borrows it.
        let open_before = decoder.message_open();
        let arrived = !input.is_empty();
        let (frame, used) = match decoder.decode(input) {
            Ok(Decoded::Frame(frame, used)) => (frame, used),
            Ok(Decoded::NeedMore(used)) => {
                // Bytes of a frame held back, fragments just used up (only
                // a message's non-final frames are used up without an
                // event), or a message open before: the clock runs from the
                // first byte, whatever control frames come in between.
                if arrived || open_before {
                    let timeout = Duration::from_millis(self.frame_timeout_ms.into());
                    self.deadline.get_or_insert(now + timeout);
                } else {
                    self.deadline = None;
                }
                return Received::NeedMore(used);
            }
            Ok(Decoded::Inflating(used)) => {
                // The message is all here; what follows it is not looked at
                // until it is inflated.
                self.deadline = None;
                return Received::Inflating(used);
            }
            Err(error) => {
                self.fail(error, now);
                return Received::Closed(0);
            }
        };
        if matches!(frame, Frame::Text(_) | Frame::Binary(_)) {
            // A whole message: nothing is open. (After a control frame the
            // next call, which ends in `NeedMore`, settles it.)
            self.deadline = None;
        }
        match frame {
            Frame::Text(text) if self.phase == Phase::Open => {
                Received::Message(Message::Text(text), used)
            }
            Frame::Binary(bytes) if self.phase == Phase::Open => {
                Received::Message(Message::Binary(bytes), used)
            }
            Frame::Ping(payload) => {
                if !self.close_sent {
                    encode_frame(&mut self.out, true, OpCode::Pong, payload);
                }
                Received::Handled(used)
            }
            Frame::Close(status) => {
                let (code, reason) = status.unwrap_or((CloseCode::NO_STATUS, ""));
                if !self.close_sent {
                    let echoed = status.map(|(code, _)| code);
                    self.queue_close(echoed, "");
                }
                self.peer_close = Some((code, reason.to_owned()));
                self.enter_closed(now);
                Received::Closed(used)
            }
            // Pongs need no answer (any input already reset the keepalive),
            // and data that arrives after our close frame is dropped.
            _ => Received::Handled(used),
        }
    }

    /// Fails the connection for a protocol violation: close frame with the
    /// error's code, then [`Phase::Closed`].
    pub fn fail(&mut self, error: ProtocolError, now: Instant) {
        if !matches!(self.phase, Phase::Open | Phase::Closing) {
            return;
        }
        let code = error.close_code();
        if !self.close_sent {
            self.queue_close(Some(code), error.reason());
        }
        // Reported even after our own close (no second close frame goes
        // out then): the connection ended on this error, not abnormally.
        if self.failure.is_none() {
            self.failure = Some((code, error.reason()));
        }
        self.enter_closed(now);
    }

    /// Starts the closing handshake with `code` (server-initiated close).
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        if self.phase != Phase::Open {
            return;
        }
        self.queue_close(Some(code), reason);
        self.phase = Phase::Closing;
        self.close_deadline = Some(now + self.close_timeout);
    }

    /// Ends the connection without a closing handshake (EOF, I/O error,
    /// handshake timeout, or the driver dropping it).
    pub fn abort(&mut self, now: Instant) {
        if self.phase != Phase::Closed {
            self.enter_closed(now);
        }
    }

    /// Queues a data message, compressed if permessage-deflate applies.
    pub fn send(&mut self, message: Message<'_>, now: Instant) -> Result<(), SendError> {
        let mut compressed = Vec::new();
        if let Some(header) =
            self.compress(message.opcode(), message.as_bytes(), &mut compressed, None)
        {
            return self.send_encoded(&header, &compressed, now);
        }
        let header = EncodedHeader::new(true, 0, message.opcode(), message.len());
        self.send_encoded(&header, message.as_bytes(), now)
    }

    /// Queues a frame whose header was encoded already, so one encoding can
    /// serve many recipients.
    pub fn send_encoded(
        &mut self,
        header: &EncodedHeader,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        let header = header.as_bytes();
        // The limit is on backlog already queued, so one message of any
        // size the limits allow can always be sent; memory stays below
        // `write_buffer_hard` plus one message (plus, from the driver's
        // gathered writes, at most one read's worth queued ahead).
        if self.pending_output_len() >= self.write_buffer_hard {
            self.failure = Some((CloseCode::POLICY_VIOLATION, "peer is not reading"));
            self.close(CloseCode::POLICY_VIOLATION, "peer is not reading", now);
            return Err(SendError::Backlogged);
        }
        self.out.reserve(header.len() + payload.len());
        self.out.extend_from_slice(header);
        self.out.extend_from_slice(payload);
        Ok(())
    }

    /// Queues the part of a frame the caller could not write directly
    /// (`written` bytes of header-then-payload already went out). Only
    /// valid when [`Connection::can_write_directly`] said so just before.
    pub fn send_encoded_after_direct_write(
        &mut self,
        header: &EncodedHeader,
        payload: &[u8],
        written: usize,
    ) {
        let header = header.as_bytes();
        if written < header.len() {
            self.out.extend_from_slice(&header[written..]);
            self.out.extend_from_slice(payload);
        } else {
            let from = (written - header.len()).min(payload.len());
            self.out.extend_from_slice(&payload[from..]);
        }
        if written > 0 {
            // The rest of a frame that is on the wire in part.
            self.frame_mark = self.out.len();
        }
    }

    /// Queues `pieces` ahead of everything already queued: output that was
    /// due first but written from elsewhere, and not all of it went out.
    pub fn queue_ahead(&mut self, pieces: &[&[u8]]) {
        let pending_in_flight = self.frame_mark.saturating_sub(self.out_pos);
        let pending = self.out.split_off(self.out_pos);
        self.out.clear();
        self.out_pos = 0;
        let len: usize = pieces.iter().map(|piece| piece.len()).sum();
        // The pieces may start inside a frame and end at a frame's end:
        // all of them count as the rest of what is on the wire.
        self.frame_mark = len + pending_in_flight;
        self.out.reserve(len + pending.len());
        for piece in pieces {
            self.out.extend_from_slice(piece);
        }
        self.out.extend_from_slice(&pending);
    }

    /// Whether a data frame may bypass the output buffer and go straight to
    /// the socket: the connection is open and nothing is queued ahead of it.
    pub fn can_write_directly(&self) -> bool {
        self.phase == Phase::Open && self.pending_output_len() == 0
    }

    /// Bytes waiting to be written.
    pub fn poll_output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Number of bytes waiting to be written.
    pub fn pending_output_len(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Records that `n` bytes of [`Connection::poll_output`] were written.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out_pos = 0;
            self.frame_mark = 0;
            self.out.clear();
            if self.out.capacity() > self.keep_output_capacity {
                self.out = Vec::new();
            }
        } else if self.out_pos >= COMPACT_OUTPUT_AFTER
            && self.out_pos >= self.out.len() - self.out_pos
        {
            // A peer that never quite catches up never drains the buffer:
            // drop the written prefix once it is at least half of it, so
            // the buffer holds what is pending, not everything ever sent.
            // Moving at most as many bytes as were written keeps this
            // amortized O(1) per byte.
            self.drop_written();
        }
    }

    /// Drops the written bytes at the front of the output buffer, keeping
    /// the frame mark on a boundary among what is left.
    fn drop_written(&mut self) {
        self.settle_frame_mark();
        self.out.drain(..self.out_pos);
        self.frame_mark -= self.out_pos;
        self.out_pos = 0;
    }

    /// Moves the frame mark to the end of the frame in flight (see
    /// `frame_mark`), reading the headers of the frames written since it
    /// was last placed. Bytes that do not read as a frame header keep
    /// everything after the mark (they are never shed).
    fn settle_frame_mark(&mut self) {
        while self.frame_mark < self.out_pos {
            let next = match parse_header(&self.out[self.frame_mark..], 0b111) {
                Ok(Some(header)) => usize::try_from(header.payload_len)
                    .ok()
                    .and_then(|len| len.checked_add(header.header_len))
                    .and_then(|len| len.checked_add(self.frame_mark)),
                Ok(None) | Err(_) => None,
            };
            self.frame_mark = next.unwrap_or(usize::MAX).min(self.out.len());
        }
    }

    /// Ends the connection to give memory back: drops the queued output
    /// the peer has not started to receive (everything after the frame on
    /// the wire), queues a close frame with `code` and `reason` in its
    /// place (unless one is still queued), frees the emptied buffer and
    /// enters [`Phase::Closed`]. Returns the bytes dropped.
    pub fn shed(&mut self, code: CloseCode, reason: &'static str, now: Instant) -> usize {
        if !self.opened {
            return 0;
        }
        self.settle_frame_mark();
        let dropped = self.out.len().saturating_sub(self.frame_mark);
        if dropped > 0 {
            self.out.truncate(self.frame_mark);
            // Nothing is ever queued after a close frame: if one was
            // queued and not written, it was just dropped.
            self.close_sent = false;
        }
        self.drop_written();
        if !self.close_sent {
            self.queue_close(Some(code), reason);
        }
        if self.out.capacity() > 2 * self.out.len() {
            self.out.shrink_to_fit();
        }
        if self.failure.is_none() {
            self.failure = Some((code, reason));
        }
        if self.phase != Phase::Closed {
            self.enter_closed(now);
        }
        dropped
    }

    /// Heap bytes held by the output buffer.
    pub fn output_capacity(&self) -> usize {
        self.out.capacity()
    }

    /// Frees the input and output buffers if they hold nothing, the
    /// compressor (a fresh one only forgets history, which the peer never
    /// relies on) and what the decoder can give back.
    pub fn release_idle_memory(&mut self) {
        self.input.release_if_empty();
        self.decoder.release_idle_memory();
        if self.pending_output_len() == 0 {
            self.out = Vec::new();
            self.out_pos = 0;
            self.frame_mark = 0;
        }
        if let Some(deflate) = self.deflate.as_mut() {
            deflate.own = None;
        }
    }

    /// The next instant [`Connection::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshaking => self.deadline,
            Phase::Open => {
                let keepalive = self.keepalive_deadline();
                Some(
                    self.frame_deadline()
                        .map_or(keepalive, |at| at.min(keepalive)),
                )
            }
            Phase::Closing | Phase::Closed => self.close_deadline,
        }
    }

    /// When the keepalive pings (or, a ping sent, gives up).
    fn keepalive_deadline(&self) -> Instant {
        match self.ping_sent_at {
            Some(sent) => sent + self.pong_timeout,
            None => self.last_received + self.ping_interval,
        }
    }

    /// When the frame (or fragmented message) still arriving must be
    /// complete, if one is arriving.
    fn frame_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshaking => None,
            _ => self.deadline,
        }
    }

    /// Whether a keepalive ping awaits an answer.
    pub fn awaiting_pong(&self) -> bool {
        self.phase == Phase::Open && self.ping_sent_at.is_some()
    }

    /// Whether the keepalive would close the connection at `now`.
    pub fn pong_overdue(&self, now: Instant) -> bool {
        self.awaiting_pong() && self.keepalive_deadline() <= now
    }

    /// Runs whatever timer has expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> TimeoutAction {
        match self.poll_timeout() {
            Some(deadline) if deadline <= now => {}
            _ => return TimeoutAction::None,
        }
        match self.phase {
            Phase::Handshaking => {
                self.enter_closed(now);
                TimeoutAction::Drop
            }
            Phase::Open if self.frame_deadline().is_some_and(|at| at <= now) => {
                // Not a protocol error (any pace is legal) but a policy:
                // a peer may not hold a frame's state open indefinitely.
                self.failure = Some((CloseCode::POLICY_VIOLATION, "frame timeout"));
                self.close(CloseCode::POLICY_VIOLATION, "frame timeout", now);
                TimeoutAction::Flush
            }
            Phase::Open if self.keepalive_deadline() > now => TimeoutAction::None,
            Phase::Open if self.ping_sent_at.is_some() => {
                self.failure = Some((CloseCode::INTERNAL_ERROR, "keepalive timeout"));
                self.close(CloseCode::INTERNAL_ERROR, "keepalive timeout", now);
                TimeoutAction::Flush
            }
            Phase::Open => {
                encode_frame(&mut self.out, true, OpCode::Ping, b"");
                self.ping_sent_at = Some(now);
                TimeoutAction::Flush
            }
            Phase::Closing | Phase::Closed => {
                self.abort(now);
                TimeoutAction::Drop
            }
        }
    }

    /// Once, after the WebSocket opened and then reached [`Phase::Closed`]:
    /// how it ended, for the application's close callback.
    pub fn poll_close_report(&mut self) -> Option<CloseReport> {
        if !self.opened || self.close_reported || self.phase != Phase::Closed {
            return None;
        }
        self.close_reported = true;
        let (code, reason) = match (&self.peer_close, self.failure) {
            (Some((code, reason)), _) => (*code, reason.clone()),
            (None, Some((code, reason))) => (code, reason.to_owned()),
            (None, None) => (CloseCode::ABNORMAL, String::new()),
        };
        Some(CloseReport { code, reason })
    }

    fn queue_close(&mut self, code: Option<CloseCode>, reason: &str) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match code {
            Some(code) => {
                payload[..2].copy_from_slice(&code.0.to_be_bytes());
                let reason = truncate_utf8(reason, MAX_CONTROL_PAYLOAD - 2);
                payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                2 + reason.len()
            }
            None => 0,
        };
        encode_frame(&mut self.out, true, OpCode::Close, &payload[..len]);
        self.close_sent = true;
    }

    fn enter_closed(&mut self, now: Instant) {
        self.phase = Phase::Closed;
        let linger = now + self.close_timeout;
        self.close_deadline = Some(self.close_deadline.map_or(linger, |d| d.min(linger)));
    }
}

/// The longest prefix of `text` that fits in `max` bytes on a char boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decoder::tests::client_frame;
    use crate::proto::frame::parse_header;
    use crate::proto::handshake::HEADER_SLOTS;
    use crate::proto::opening::Head;

    /// Opens `conn` the way a client does, from the first byte: a request
    /// head, classified and accepted as the driver does.
    fn open(conn: &mut Connection, limits: &Limits, now: Instant) {
        let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n";
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let Head::Upgrade(request, upgrade) = conn.handle_head(head, &mut slots, limits) else {
            panic!("the test's request head is an upgrade");
        };
        conn.accept_upgrade(&request, &upgrade, None, Vec::new(), None, now);
    }

    fn open_connection(now: Instant) -> (Connection, Decoder) {
        let limits = Limits::default();
        let mut conn = Connection::new(&limits, now);
        open(&mut conn, &limits, now);
        let n = conn.pending_output_len();
        conn.consume_output(n);
        let decoder = conn.take_decoder();
        (conn, decoder)
    }

    /// Parses the server's queued output into (opcode, payload) frames.
    fn written_frames(conn: &mut Connection) -> Vec<(OpCode, Vec<u8>)> {
        let mut frames = Vec::new();
        let mut out = conn.poll_output().to_vec();
        conn.consume_output(out.len());
        while !out.is_empty() {
            let h = parse_header(&out, 0).unwrap().unwrap();
            assert!(h.fin && h.mask.is_none());
            let end = h.header_len + h.payload_len as usize;
            frames.push((h.opcode, out[h.header_len..end].to_vec()));
            out.drain(..end);
        }
        frames
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    }

    /// Appends `bytes` to what is held and decodes as the driver does:
    /// returns the messages; used bytes leave `held`.
    fn feed(
        conn: &mut Connection,
        decoder: &mut Decoder,
        held: &mut Vec<u8>,
        bytes: &[u8],
        now: Instant,
    ) -> Vec<String> {
        held.extend_from_slice(bytes);
        let mut messages = Vec::new();
        let mut pos = 0;
        loop {
            match conn.handle_input(decoder, &mut held[pos..], now) {
                Received::Message(m, used) => {
                    messages.push(String::from_utf8_lossy(m.as_bytes()).into_owned());
                    pos += used;
                }
                Received::Handled(used) | Received::Inflating(used) => pos += used,
                Received::NeedMore(used) | Received::Closed(used) => {
                    held.drain(..pos + used);
                    return messages;
                }
            }
        }
    }

    fn receive_all(
        conn: &mut Connection,
        decoder: &mut Decoder,
        input: Vec<u8>,
        now: Instant,
    ) -> Vec<String> {
        feed(conn, decoder, &mut Vec::new(), &input, now)
    }

    #[test]
    fn handshake_then_messages_and_echo() {
        let now = Instant::now();
        let (mut conn, mut decoder) = open_connection(now);
        assert_eq!(conn.phase(), Phase::Open);
        let got = receive_all(&mut conn, &mut decoder, client_frame(0x81, b"hi"), now);
        assert_eq!(got, ["hi"]);
        conn.send(Message::Text("hi"), now).unwrap();
        assert_eq!(written_frames(&mut conn), [(OpCode::Text, b"hi".to_vec())]);
    }

    #[test]
    fn ping_between_fragments_gets_a_pong_with_the_same_payload() {
        let now = Instant::now();
        let (mut conn, mut decoder) = open_connection(now);
        let mut input = client_frame(0x01, b"frag");
        input.extend(client_frame(0x89, b"are you there"));
        input.extend(client_frame(0x80, b"ment"));
        let got = receive_all(&mut conn, &mut decoder, input, now);
        assert_eq!(got, ["fragment"]);
        assert_eq!(
            written_frames(&mut conn),
            [(OpCode::Pong, b"are you there".to_vec())]
        );
    }

    #[test]
    fn sends_are_compressed_from_the_threshold_on() {
        let now = Instant::now();
        let (mut conn, _) = open_connection(now);
        conn.enable_deflate(15, false, 64);
        conn.send(Message::Text("short"), now).unwrap();
        let long = "a long and repetitive message ".repeat(20);
        conn.send(Message::Text(&long), now).unwrap();
        let out = conn.poll_output().to_vec();
        let short = parse_header(&out, RSV1).unwrap().unwrap();
        assert_eq!(short.rsv, 0, "below the threshold: plain");
        let rest = &out[short.header_len + short.payload_len as usize..];
        let h = parse_header(rest, RSV1).unwrap().unwrap();
        assert_eq!(h.rsv, RSV1);
        assert!((h.payload_len as usize) < long.len() / 4);
        let mut inflated = Vec::new();
        let mut inflater = crate::proto::deflate::Inflater::new(15);
        let payload = &rest[h.header_len..h.header_len + h.payload_len as usize];
        inflater.inflate(payload, &mut inflated, 1 << 20).unwrap();
        inflater
            .finish_message(&mut inflated, 1 << 20, false)
            .unwrap();
        assert_eq!(inflated, long.as_bytes());
    }

    #[test]
    fn unsolicited_pong_is_ignored() {
        let now = Instant::now();
        let (mut conn, mut decoder) = open_connection(now);
        let got = receive_all(&mut conn, &mut decoder, client_frame(0x8A, b"x"), now);
        assert!(got.is_empty());
        assert!(written_frames(&mut conn).is_empty());
        assert_eq!(conn.phase(), Phase::Open);
    }

    #[test]
    fn peer_close_is_echoed_and_reported() {
        let now = Instant::now();
        let (mut conn, mut decoder) = open_connection(now);
        receive_all(
            &mut conn,
            &mut decoder,
            client_frame(0x88, &close_payload(4001, "done")),
            now,
        );
        assert_eq!(conn.phase(), Phase::Closed);
        assert_eq!(
            written_frames(&mut conn),
            [(OpCode::Close, 4001u16.to_be_bytes().to_vec())]
        );
        let report = conn.poll_close_report().unwrap();
        assert_eq!(
            (report.code, report.reason.as_str()),
            (CloseCode(4001), "done")
        );
        assert_eq!(conn.poll_close_report(), None, "reported exactly once");
        assert_eq!(
            conn.send(Message::Text("late"), now),
            Err(SendError::NotOpen)
        );
        assert!(
            written_frames(&mut conn).is_empty(),
            "nothing after the close frame"
        );
    }

    #[test]
    fn empty_close_gets_an_empty_close_and_reports_1005() {
        let now = Instant::now();
        let (mut conn, mut decoder) = open_connection(now);
        receive_all(&mut conn, &mut decoder, client_frame(0x88, b""), now);
        assert_eq!(written_frames(&mut conn), [(OpCode::Close, vec![])]);
        assert_eq!(conn.poll_close_report().unwrap().code, CloseCode::NO_STATUS);
    }

    #[test]
    fn every_violation_closes_with_its_code() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (client_frame(0x83, b""), 1002),       // reserved opcode
            (client_frame(0xC1, b"x"), 1002),      // RSV1 without extension
            (vec![0x81, 0x01, b'x'], 1002),        // unmasked
            (client_frame(0x89, &[0; 126]), 1002), // control frame too long
            (client_frame(0x09, b""), 1002),       // fragmented control
            (client_frame(0x80, b"x"), 1002),      // continuation without message
            (
                [client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat(),
                1002,
            ), // new message while fragmented
            (vec![0x82, 0xFE, 0, 5, 1, 2, 3, 4], 1002), // non-minimal length
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                1002,
            ), // > 2^63
            (client_frame(0x81, b"\xff"), 1007),   // invalid UTF-8
            (client_frame(0x88, &[3]), 1002),      // 1-byte close
            (client_frame(0x88, &close_payload(1005, "")), 1002), // invalid close code
            (client_frame(0x88, &[0x03, 0xE8, 0xff]), 1007), // invalid close reason
            (
                vec![0x82, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3, 4],
                1009,
            ), // frame too large
        ];
        for (input, code) in cases {
            let now = Instant::now();
            let (mut conn, mut decoder) = open_connection(now);
            receive_all(&mut conn, &mut decoder, input.clone(), now);
            assert_eq!(conn.phase(), Phase::Closed, "{input:x?}");
            let frames = written_frames(&mut conn);
            assert_eq!(frames.len(), 1, "{input:x?}");
            assert_eq!(frames[0].0, OpCode::Close);
            assert_eq!(
                u16::from_be_bytes([frames[0].1[0], frames[0].1[1]]),
                code,
                "{input:x?}"
            );
            assert_eq!(conn.poll_close_report().unwrap().code, CloseCode(code));
        }
    }

    /// Closes first (1001), feeds the peer's `input`, and returns the close
    /// code reported; the input must end the connection without a second
    /// close frame from us.
    fn report_after_our_close(input: Vec<u8>) -> CloseCode {
        let now = Instant::now();
        let (mut conn, mut decoder) = open_connection(now);
        conn.close(CloseCode::GOING_AWAY, "shutdown", now);
        assert_eq!(conn.phase(), Phase::Closing);
        assert_eq!(
            written_frames(&mut conn),
            [(OpCode::Close, close_payload(1001, "shutdown"))]
        );
        let got = receive_all(&mut conn, &mut decoder, input, now);
        assert!(got.is_empty(), "data after our close is discarded");
        assert_eq!(conn.phase(), Phase::Closed);
        assert!(
            written_frames(&mut conn).is_empty(),
            "no second close frame"
        );
        conn.poll_close_report().unwrap().code
    }

    #[test]
    fn server_close_waits_for_the_peer_then_reports_its_code() {
        let mut input = client_frame(0x81, b"ignored");
        input.extend(client_frame(0x88, &close_payload(1001, "")));
        assert_eq!(report_after_our_close(input), CloseCode::GOING_AWAY);
    }

    #[test]
    fn a_protocol_error_after_our_close_is_reported_with_its_code() {
        // Invalid UTF-8 in a text frame: the peer broke the protocol.
        let input = client_frame(0x81, &[0xC3, 0x28]);
        assert_eq!(report_after_our_close(input), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn close_timeout_drops_a_silent_peer_and_reports_1006() {
        let now = Instant::now();
        let (mut conn, _) = open_connection(now);
        conn.close(CloseCode::NORMAL, "", now);
        let deadline = conn.poll_timeout().unwrap();
        assert_eq!(deadline, now + Limits::default().close_timeout);
        assert_eq!(
            conn.handle_timeout(deadline - Duration::from_millis(1)),
            TimeoutAction::None
        );
        assert_eq!(conn.handle_timeout(deadline), TimeoutAction::Drop);
        assert_eq!(conn.poll_close_report().unwrap().code, CloseCode::ABNORMAL);
    }

    #[test]
    fn keepalive_pings_after_silence_then_closes_1011() {
        let now = Instant::now();
        let limits = Limits::default();
        let (mut conn, _) = open_connection(now);
        let ping_at = now + limits.ping_interval;
        assert_eq!(conn.poll_timeout(), Some(ping_at));
        assert_eq!(conn.handle_timeout(ping_at), TimeoutAction::Flush);
        assert_eq!(written_frames(&mut conn), [(OpCode::Ping, vec![])]);
        let give_up = ping_at + limits.pong_timeout;
        assert_eq!(conn.poll_timeout(), Some(give_up));
        assert_eq!(conn.handle_timeout(give_up), TimeoutAction::Flush);
        assert_eq!(
            written_frames(&mut conn),
            [(OpCode::Close, close_payload(1011, "keepalive timeout"))]
        );
        assert_eq!(conn.phase(), Phase::Closing);
    }

    #[test]
    fn any_input_answers_the_keepalive() {
        let now = Instant::now();
        let limits = Limits::default();
        let (mut conn, _) = open_connection(now);
        let ping_at = now + limits.ping_interval;
        conn.handle_timeout(ping_at);
        conn.handle_peer_activity(ping_at + Duration::from_secs(1));
        assert_eq!(
            conn.poll_timeout(),
            Some(ping_at + Duration::from_secs(1) + limits.ping_interval)
        );
    }

    fn open_with_frame_timeout(now: Instant, frame_timeout: Duration) -> (Connection, Decoder) {
        let limits = Limits {
            frame_timeout,
            ..Limits::default()
        };
        let mut conn = Connection::new(&limits, now);
        open(&mut conn, &limits, now);
        conn.consume_output(conn.pending_output_len());
        let decoder = conn.take_decoder();
        (conn, decoder)
    }

    #[test]
    fn a_trickled_frame_is_closed_with_1008_at_the_frame_deadline() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let (mut conn, mut decoder) = open_with_frame_timeout(start, 10 * second);
        let wire = client_frame(0x81, &[b'a'; 100]);
        let mut held = Vec::new();
        // A byte a second: the keepalive is satisfied, the frame is not.
        for (i, byte) in wire[..9].iter().enumerate() {
            let now = start + i as u32 * second;
            conn.handle_peer_activity(now);
            assert!(feed(&mut conn, &mut decoder, &mut held, &[*byte], now).is_empty());
            assert_eq!(conn.poll_timeout(), Some(start + 10 * second));
        }
        assert_eq!(
            conn.handle_timeout(start + 10 * second - Duration::from_millis(1)),
            TimeoutAction::None
        );
        assert_eq!(
            conn.handle_timeout(start + 10 * second),
            TimeoutAction::Flush
        );
        assert_eq!(
            written_frames(&mut conn),
            [(OpCode::Close, close_payload(1008, "frame timeout"))]
        );
        assert_eq!(conn.phase(), Phase::Closing);
        assert_eq!(
            conn.failure(),
            Some((CloseCode::POLICY_VIOLATION, "frame timeout"))
        );
    }

    #[test]
    fn a_frame_finishing_in_time_is_not_closed_and_the_next_starts_afresh() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let (mut conn, mut decoder) = open_with_frame_timeout(start, 10 * second);
        let wire = client_frame(0x81, b"in time");
        let mut held = Vec::new();
        assert!(feed(&mut conn, &mut decoder, &mut held, &wire[..4], start).is_empty());
        let now = start + 9 * second;
        conn.handle_peer_activity(now);
        let got = feed(&mut conn, &mut decoder, &mut held, &wire[4..], now);
        assert_eq!(got, ["in time"]);
        // Only the keepalive is left, counted from the last byte.
        let keepalive = start + 9 * second + Limits::default().ping_interval;
        assert_eq!(conn.poll_timeout(), Some(keepalive));
        assert_eq!(
            conn.handle_timeout(start + 10 * second),
            TimeoutAction::None
        );
        assert_eq!(conn.phase(), Phase::Open);
        // The next frame's clock starts at its own first byte.
        let later = start + 20 * second;
        assert!(feed(&mut conn, &mut decoder, &mut held, &wire[..3], later).is_empty());
        assert_eq!(conn.poll_timeout(), Some(later + 10 * second));
        assert_eq!(conn.handle_timeout(later + 9 * second), TimeoutAction::None);
        assert_eq!(conn.phase(), Phase::Open);
    }

    /// A connection (frame timeout 10 s, keepalive ping after 3 s of
    /// silence) whose peer sent the first fragment of a text message at
    /// `start`; the bytes held back for it.
    fn with_message_open(start: Instant) -> (Connection, Decoder, Vec<u8>) {
        let limits = Limits {
            frame_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(3),
            ..Limits::default()
        };
        let mut conn = Connection::new(&limits, start);
        open(&mut conn, &limits, start);
        conn.consume_output(conn.pending_output_len());
        let mut decoder = conn.take_decoder();
        let mut held = Vec::new();
        let first = client_frame(0x01, b"part one, ");
        assert!(feed(&mut conn, &mut decoder, &mut held, &first, start).is_empty());
        (conn, decoder, held)
    }

    #[test]
    fn pings_and_pongs_inside_a_fragmented_message_do_not_reset_its_deadline() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let (mut conn, mut decoder, mut held) = with_message_open(start);
        let deadline = start + 10 * second;
        // Our keepalive pings after 3 s of silence; the peer answers, and
        // pings us too, and still sends nothing of the message.
        assert_eq!(
            conn.handle_timeout(start + 3 * second),
            TimeoutAction::Flush
        );
        for (at, control) in [(4, 0x8A), (6, 0x89), (8, 0x8A), (9, 0x89)] {
            let now = start + at * second;
            conn.handle_peer_activity(now);
            let frame = client_frame(control, b"still here");
            assert!(feed(&mut conn, &mut decoder, &mut held, &frame, now).is_empty());
        }
        let just_before = deadline - Duration::from_millis(1);
        assert_eq!(conn.handle_timeout(just_before), TimeoutAction::None);
        assert_eq!(conn.handle_timeout(deadline), TimeoutAction::Flush);
        let frames = written_frames(&mut conn);
        let ops: Vec<OpCode> = frames.iter().map(|(op, _)| *op).collect();
        assert_eq!(
            ops,
            [OpCode::Ping, OpCode::Pong, OpCode::Pong, OpCode::Close]
        );
        assert_eq!(frames[3].1, close_payload(1008, "frame timeout"));
    }

    #[test]
    fn a_fragmented_message_finishing_in_time_is_not_closed() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let (mut conn, mut decoder, mut held) = with_message_open(start);
        let ping = client_frame(0x89, b"");
        let now = start + 5 * second;
        assert!(feed(&mut conn, &mut decoder, &mut held, &ping, now).is_empty());
        let last = client_frame(0x80, b"two");
        let now = start + 9 * second;
        let got = feed(&mut conn, &mut decoder, &mut held, &last, now);
        assert_eq!(got, ["part one, two"]);
        conn.handle_peer_activity(now);
        assert_eq!(
            conn.handle_timeout(start + 10 * second),
            TimeoutAction::None
        );
        assert_eq!(conn.phase(), Phase::Open);
    }

    #[test]
    fn handshake_timeout_drops_without_a_close_report() {
        let now = Instant::now();
        let limits = Limits::default();
        let mut conn = Connection::new(&limits, now);
        assert_eq!(
            conn.handle_timeout(now + limits.handshake_timeout),
            TimeoutAction::Drop
        );
        assert_eq!(conn.phase(), Phase::Closed);
        assert_eq!(conn.poll_close_report(), None);
    }

    #[test]
    fn a_peer_that_never_reads_is_closed_with_1008_at_the_hard_limit() {
        let now = Instant::now();
        let limits = Limits {
            write_buffer_hard: 1000,
            ..Limits::default()
        };
        let mut conn = Connection::new(&limits, now);
        open(&mut conn, &limits, now);
        conn.consume_output(conn.pending_output_len());
        let chunk = [0u8; 300];
        let mut sent = 0;
        let error = loop {
            match conn.send(Message::Binary(&chunk), now) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(error, SendError::Backlogged);
        assert_eq!(sent, 4, "300-byte sends fit until 1000 bytes are queued");
        assert_eq!(conn.phase(), Phase::Closing);
        let frames = written_frames(&mut conn);
        assert_eq!(frames.len(), sent + 1);
        assert_eq!(
            frames[sent],
            (OpCode::Close, close_payload(1008, "peer is not reading"))
        );
        assert_eq!(
            conn.send(Message::Binary(&chunk), now),
            Err(SendError::NotOpen)
        );
    }

    #[test]
    fn a_buffer_that_never_fully_drains_stays_the_size_of_what_is_pending() {
        let now = Instant::now();
        let (mut conn, _) = open_connection(now);
        let chunk = vec![1u8; 16 * 1024];
        let frame_len = chunk.len() + 4;
        for _ in 0..10_000 {
            conn.send(Message::Binary(&chunk), now).unwrap();
            // The peer takes one byte less than was sent each time.
            conn.consume_output(frame_len - 1);
        }
        assert_eq!(conn.pending_output_len(), 10_000);
        assert!(
            conn.output_capacity() < 512 * 1024,
            "{} bytes held for {} pending",
            conn.output_capacity(),
            conn.pending_output_len()
        );
        // What is left is exactly the unwritten tail: the last byte of each
        // of the last 10,000 frames, all payload bytes (1).
        assert!(conn.poll_output().iter().all(|&b| b == 1));
    }

    #[test]
    fn a_partly_written_direct_frame_queues_exactly_its_remainder() {
        let now = Instant::now();
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let header = EncodedHeader::new(true, 0, OpCode::Binary, payload.len());
        let mut whole = header.as_bytes().to_vec();
        whole.extend_from_slice(&payload);
        for written in [0, 1, header.as_bytes().len(), 100, whole.len()] {
            let (mut conn, _) = open_connection(now);
            assert!(conn.can_write_directly());
            conn.send_encoded_after_direct_write(&header, &payload, written);
            assert_eq!(conn.poll_output(), &whole[written..], "written {written}");
        }
        let (mut conn, _) = open_connection(now);
        conn.send(Message::Text("queued"), now).unwrap();
        assert!(!conn.can_write_directly(), "never jump the queue");
    }

    #[test]
    fn output_queued_ahead_goes_before_what_was_pending_and_after_what_was_written() {
        let now = Instant::now();
        let (mut conn, _) = open_connection(now);
        conn.queue_ahead(&[b"first"]);
        assert_eq!(conn.poll_output(), b"first");
        conn.send(Message::Binary(b"later"), now).unwrap();
        // Part of the pending output went out; what comes ahead of the rest
        // must not come ahead of that part.
        conn.consume_output(2);
        conn.queue_ahead(&[b"A", b"", b"BC"]);
        let mut expected = b"ABCrst".to_vec();
        expected.extend_from_slice(&[0x82, 5]);
        expected.extend_from_slice(b"later");
        assert_eq!(conn.poll_output(), &expected[..]);
    }

    /// A connection with `frames` binary frames of 1000 bytes (1004 on
    /// the wire) queued, of which `written` bytes went out in two writes;
    /// returns it and the bytes queued.
    fn with_written_output(frames: usize, written: usize, now: Instant) -> (Connection, Vec<u8>) {
        let (mut conn, _) = open_connection(now);
        for i in 0..frames {
            conn.send(Message::Binary(&[i as u8; 1000]), now).unwrap();
        }
        let queued = conn.poll_output().to_vec();
        conn.consume_output(written / 2);
        conn.consume_output(written - written / 2);
        (conn, queued)
    }

    fn close_frame(code: u16, reason: &str) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            true,
            OpCode::Close,
            &close_payload(code, reason),
        );
        frame
    }

    #[test]
    fn shedding_keeps_the_frame_on_the_wire_and_puts_a_close_after_it() {
        let now = Instant::now();
        const FRAME: usize = 1004;
        // Nothing written; inside the first frame's header and payload; on
        // a boundary; and (100 frames, 70,100 bytes) past a compaction of
        // the buffer, inside frame 69.
        for (frames, written) in [
            (4, 0),
            (4, 1),
            (4, 500),
            (4, FRAME),
            (4, 2500),
            (100, 70_100),
        ] {
            let (mut conn, queued) = with_written_output(frames, written, now);
            let in_flight_end = written.div_ceil(FRAME) * FRAME;
            let dropped = conn.shed(CloseCode::POLICY_VIOLATION, "not reading", now);
            assert_eq!(dropped, queued.len() - in_flight_end, "written {written}");
            let mut expected = queued[written..in_flight_end].to_vec();
            expected.extend(close_frame(1008, "not reading"));
            assert_eq!(conn.poll_output(), &expected[..], "written {written}");
            assert_eq!(conn.phase(), Phase::Closed);
            assert_eq!(conn.poll_close_report().unwrap().code, CloseCode(1008));
            assert!(
                conn.output_capacity() < 64 * 1024,
                "the dropped bytes are freed"
            );
        }
    }

    #[test]
    fn shedding_replaces_a_queued_close_but_never_sends_two() {
        let now = Instant::now();
        // A close queued behind output the peer does not read: replaced.
        let (mut conn, _) = with_written_output(3, 10, now);
        conn.close(CloseCode::GOING_AWAY, "bye", now);
        conn.shed(CloseCode::POLICY_VIOLATION, "not reading", now);
        let pending = conn.poll_output().to_vec();
        assert_eq!(&pending[1004 - 10..], &close_frame(1008, "not reading")[..]);
        // A close frame already on the wire in part: nothing is added.
        let (mut conn, _) = open_connection(now);
        conn.close(CloseCode::GOING_AWAY, "bye", now);
        conn.consume_output(1);
        assert_eq!(conn.shed(CloseCode::POLICY_VIOLATION, "x", now), 0);
        assert_eq!(conn.poll_output(), &close_frame(1001, "bye")[1..]);
    }

    #[test]
    fn shedding_keeps_partly_written_heads_and_frames_written_from_elsewhere() {
        let now = Instant::now();
        let expect_after_shed = |conn: &mut Connection, kept: &[u8]| {
            conn.shed(CloseCode::MESSAGE_TOO_BIG, "too big", now);
            let mut expected = kept.to_vec();
            expected.extend(close_frame(1009, "too big"));
            assert_eq!(conn.poll_output(), &expected[..]);
        };
        // The 101 response, five bytes of it written.
        let mut conn = Connection::new(&Limits::default(), now);
        open(&mut conn, &Limits::default(), now);
        let head = conn.poll_output()[5..].to_vec();
        conn.consume_output(5);
        conn.send(Message::Text("dropped"), now).unwrap();
        expect_after_shed(&mut conn, &head);
        // The rest of a frame written directly in part.
        let (mut conn, _) = open_connection(now);
        let payload = [7u8; 300];
        let header = EncodedHeader::new(true, 0, OpCode::Binary, payload.len());
        conn.send_encoded_after_direct_write(&header, &payload, 10);
        conn.send(Message::Text("dropped"), now).unwrap();
        expect_after_shed(&mut conn, &payload[10 - header.as_bytes().len()..]);
        // Gathered frames queued ahead of the rest.
        let (mut conn, _) = open_connection(now);
        conn.send(Message::Text("dropped"), now).unwrap();
        conn.queue_ahead(&[b"rest of ", b"gathered frames"]);
        expect_after_shed(&mut conn, b"rest of gathered frames");
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        assert_eq!(truncate_utf8("ééé", 5), "éé");
        assert_eq!(truncate_utf8("abc", 5), "abc");
    }
}
