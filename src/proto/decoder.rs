//! Turns received bytes into frames and whole messages, in place.
//!
//! The decoder owns no input buffer: it is handed the received bytes as a
//! mutable slice, unmasks payloads where they lie, and returns events that
//! borrow either that slice (a single-frame message: no copy) or its own
//! assembly buffer (a fragmented or compressed message).
//!
//! Compressed messages (permessage-deflate) are where a peer's few bytes
//! can cost the server a lot, so two rules apply to them:
//!
//! - Until its last frame arrives, a compressed message is kept as the
//!   compressed bytes that arrived, not inflated: an unfinished message
//!   costs what the peer sent (15 KB of zeros stays 15 KB, not the 15 MiB
//!   it inflates to), and it is inflated once, whole, when it is complete.
//!   Inflating fragments as they came would need a per-connection cap on
//!   inflated partial output, and any cap well below the message limit
//!   would refuse legitimate large messages. (Context takeover is
//!   unaffected: messages are still inflated in order.)
//! - A complete message is inflated a slice at a time
//!   ([`Limits::inflate_slice`] bytes of output per call): [`Decoded::Inflating`]
//!   tells the caller that work is left and that calling again, later, goes
//!   on with it, so the driver can serve other connections in between.

use super::close_code::CloseCode;
use super::deflate::Inflater;
use super::error::ProtocolError;
use super::frame::{OpCode, RSV1, parse_header};
use super::limits::Limits;
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// A complete unit decoded from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole text message, UTF-8 validated.
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping with its payload.
    Ping(&'a [u8]),
    /// A pong with its payload.
    Pong(&'a [u8]),
    /// A close frame: its validated code and reason, or `None` when empty.
    Close(Option<(CloseCode, &'a str)>),
}

/// What one call to [`Decoder::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// An event, and the number of input bytes used up through its frame
    /// (zero for a compressed message whose inflation an earlier call left
    /// [`Decoded::Inflating`]: its bytes were used up then).
    Frame(Frame<'a>, usize),
    /// No complete event yet. The count says how many bytes at the front of
    /// the input were used up (fragments moved into the assembly buffer);
    /// the rest must be offered again, with more bytes appended.
    NeedMore(usize),
    /// A compressed message is complete but only partly inflated. The
    /// count says how many bytes at the front of the input were used up;
    /// the next call goes on inflating (no new bytes needed) before it
    /// looks at the rest of the input.
    Inflating(usize),
}

/// The open fragmented message, if any.
#[derive(Debug, Clone, Copy)]
struct Fragmented {
    text: bool,
    /// The first frame had RSV1: fragments are kept compressed until the
    /// last one arrives.
    compressed: bool,
    /// Frames so far (32 bits keep the decoder small; the count stops at
    /// `max_fragments` long before it could wrap).
    frames: u32,
}

/// permessage-deflate state of a connection that negotiated it.
#[derive(Debug)]
struct InflateState {
    window_bits: u8,
    reset_each_message: bool,
    /// Made on the first compressed message; with no context takeover it
    /// is dropped again when the connection goes quiet.
    inflater: Option<Inflater>,
    /// The open compressed message's payload as it arrived (fragments not
    /// yet inflated), or, while [`InflateState::pending`] is set, what is
    /// left of it to inflate.
    compressed: Vec<u8>,
    /// A complete compressed message being inflated a slice at a time.
    pending: Option<PendingInflate>,
}

/// A complete compressed message not yet fully inflated.
#[derive(Debug, Clone, Copy)]
struct PendingInflate {
    text: bool,
    /// Bytes at the front of [`InflateState::compressed`] inflated already.
    used: usize,
}

/// Where the payload of the event being returned lies.
enum Ready {
    Input {
        opcode: OpCode,
        start: usize,
        end: usize,
    },
    Assembled {
        text: bool,
    },
}

/// Assembly buffers larger than this are released after their message is
/// delivered, so a burst of large messages does not pin memory.
const KEEP_ASSEMBLY_CAPACITY: usize = 64 * 1024;

/// Per-connection frame and message decoding state.
#[derive(Debug, Default)]
pub struct Decoder {
    max_frame_size: u64,
    max_message_size: usize,
    max_fragments: usize,
    inflate_slice: usize,
    allowed_rsv: u8,
    /// Payload bytes of the frame at the front of the input that have been
    /// unmasked (and UTF-8 checked) already.
    progress: usize,
    fragmented: Option<Fragmented>,
    assembly: Vec<u8>,
    /// The last call's event was delivered from the assembly buffer (to be
    /// cleared before the next frame), or a message is still inflating into
    /// it (to go on with first).
    assembly_in_use: bool,
    utf8: Utf8Validator,
    inflate: Option<Box<InflateState>>,
}

impl Decoder {
    /// A decoder enforcing `limits`, accepting no RSV bits.
    pub fn new(limits: &Limits) -> Decoder {
        Decoder {
            max_frame_size: limits.max_frame_size as u64,
            max_message_size: limits.max_message_size,
            max_fragments: limits.max_fragments,
            inflate_slice: limits.inflate_slice.max(1),
            ..Decoder::default()
        }
    }

    /// Accepts compressed messages (RSV1 on their first frame), as agreed
    /// by permessage-deflate: the peer compresses with at most
    /// `window_bits`, and with `no_context_takeover` every message stands
    /// alone. The message size limit applies to the inflated size.
    pub fn enable_inflate(&mut self, window_bits: u8, no_context_takeover: bool) {
        self.allowed_rsv = RSV1;
        self.inflate = Some(Box::new(InflateState {
            window_bits,
            reset_each_message: no_context_takeover,
            inflater: None,
            compressed: Vec::new(),
            pending: None,
        }));
    }

    /// Bytes of heap memory held for messages: the assembly buffer and the
    /// compressed bytes of an unfinished compressed message.
    pub fn retained_bytes(&self) -> usize {
        self.assembly.capacity()
            + self
                .inflate
                .as_ref()
                .map_or(0, |state| state.compressed.capacity())
    }

    /// Bytes held for the message being received: the fragments of an
    /// open message and, for a compressed one, its payload as it arrived
    /// and what was inflated of it so far (0 when none is open).
    pub fn partial_message_len(&self) -> usize {
        let compressed = self
            .inflate
            .as_ref()
            .map_or(0, |state| state.compressed.len());
        if self.fragmented.is_some() || self.inflating() {
            self.assembly.len() + compressed
        } else {
            compressed
        }
    }

    /// Whether a fragmented message is open (its first frame arrived, its
    /// last has not).
    pub fn message_open(&self) -> bool {
        self.fragmented.is_some()
    }

    /// Whether a complete compressed message waits to be inflated further:
    /// [`Decoder::decode`] then goes on with it, and needs no new input.
    pub fn inflating(&self) -> bool {
        self.inflate
            .as_ref()
            .is_some_and(|state| state.pending.is_some())
    }

    /// Frees the message buffers if no message is open or being inflated.
    pub fn release_idle_memory(&mut self) {
        if self.fragmented.is_none() && !self.inflating() {
            self.assembly = Vec::new();
            if let Some(state) = self.inflate.as_mut() {
                state.compressed = Vec::new();
                // Without context takeover the next message needs no history.
                if state.reset_each_message {
                    state.inflater = None;
                }
            }
        }
    }

    /// The most compressed bytes a message may take: its inflated limit and
    /// then some, as a compressed message can be a little larger than what
    /// it inflates to (stored blocks cost 5 bytes per 64 KiB).
    fn max_compressed_size(&self) -> usize {
        self.max_message_size
            .saturating_add(self.max_message_size / 1024)
            .saturating_add(1024)
    }

    /// Keeps one non-final fragment of a compressed message as it came.
    fn hold_compressed(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let Some(state) = self.inflate.as_mut() else {
            return Err(ProtocolError::ReservedBits(RSV1));
        };
        state.compressed.extend_from_slice(payload);
        Ok(())
    }

    /// The last frame of a compressed message arrived with `payload`:
    /// inflates the first slice of the message. `true` when it is whole;
    /// `false` when slices are left (kept pending, with whatever compressed
    /// bytes they need).
    fn inflate_last_frame(&mut self, payload: &[u8], text: bool) -> Result<bool, ProtocolError> {
        let Some(state) = self.inflate.as_mut() else {
            return Err(ProtocolError::ReservedBits(RSV1));
        };
        let in_place = state.compressed.is_empty();
        if !in_place {
            state.compressed.extend_from_slice(payload);
        }
        state.pending = Some(PendingInflate { text, used: 0 });
        // A single-frame message (the usual case) inflates straight from
        // the input; only what a slice leaves over is copied.
        let result = self.inflate_pending(in_place.then_some(payload));
        match result {
            Ok(true) => {}
            // The next call goes on with it.
            Ok(false) => self.assembly_in_use = true,
            Err(_) => self.drop_pending(),
        }
        result
    }

    /// Goes on with the message an earlier call left inflating: `Some`
    /// (whether it is text) once it is whole.
    fn continue_inflating(&mut self) -> Result<Option<bool>, ProtocolError> {
        let text = self
            .inflate
            .as_ref()
            .and_then(|state| state.pending)
            .is_some_and(|pending| pending.text);
        match self.inflate_pending(None) {
            Ok(whole) => Ok(whole.then_some(text)),
            Err(error) => {
                self.drop_pending();
                Err(error)
            }
        }
    }

    /// Inflates one slice of the pending message, from `input` (the rest of
    /// it) or else from the compressed bytes held, validating new text;
    /// `true` once it is whole.
    fn inflate_pending(&mut self, input: Option<&[u8]>) -> Result<bool, ProtocolError> {
        let Some(state) = self.inflate.as_deref_mut() else {
            return Err(ProtocolError::ReservedBits(RSV1));
        };
        let Some(pending) = state.pending else {
            return Ok(false);
        };
        let window_bits = state.window_bits;
        let inflater = state
            .inflater
            .get_or_insert_with(|| Inflater::new(window_bits));
        let source = input.unwrap_or(&state.compressed[pending.used..]);
        let before = self.assembly.len();
        let step = inflater.inflate_some(
            source,
            &mut self.assembly,
            self.max_message_size,
            self.inflate_slice,
        )?;
        if step.done {
            inflater.finish_message(
                &mut self.assembly,
                self.max_message_size,
                state.reset_each_message,
            )?;
        } else if let Some(input) = input {
            state.compressed.clear();
            state.compressed.extend_from_slice(&input[step.used..]);
        } else {
            state.pending = Some(PendingInflate {
                used: pending.used + step.used,
                ..pending
            });
        }
        if pending.text {
            self.utf8.feed(&self.assembly[before..])?;
        }
        if !step.done {
            return Ok(false);
        }
        self.drop_pending();
        if pending.text {
            self.utf8.finish()?;
        }
        Ok(true)
    }

    /// Forgets the pending inflation (done or failed) and the compressed
    /// bytes it held.
    fn drop_pending(&mut self) {
        if let Some(state) = self.inflate.as_mut() {
            state.pending = None;
            if state.compressed.capacity() > KEEP_ASSEMBLY_CAPACITY {
                state.compressed = Vec::new();
            } else {
                state.compressed.clear();
            }
        }
    }

    /// Decodes from the front of `input`, which must start where the
    /// previous call's used-up bytes ended.
    pub fn decode<'a>(&'a mut self, input: &'a mut [u8]) -> Result<Decoded<'a>, ProtocolError> {
        // One test on the path of single-frame messages for both cases.
        if self.assembly_in_use {
            if self.inflating() {
                return Ok(match self.continue_inflating()? {
                    Some(text) => Decoded::Frame(self.assembled(text)?, 0),
                    None => Decoded::Inflating(0),
                });
            }
            self.assembly_in_use = false;
            if self.assembly.capacity() > KEEP_ASSEMBLY_CAPACITY {
                self.assembly = Vec::new();
            } else {
                self.assembly.clear();
            }
        }
        let mut consumed = 0;
        let ready = loop {
            let buf = &mut input[consumed..];
            let Some(header) = parse_header(buf, self.allowed_rsv)? else {
                return Ok(Decoded::NeedMore(consumed));
            };
            let Some(key) = header.mask else {
                return Err(ProtocolError::UnmaskedFrame);
            };
            if header.payload_len > self.max_frame_size {
                return Err(ProtocolError::FrameTooLarge);
            }
            let len = header.payload_len as usize;
            let rsv1 = header.rsv & RSV1 != 0;
            if rsv1 && !matches!(header.opcode, OpCode::Text | OpCode::Binary) {
                // Only the first frame of a data message may say
                // "compressed" (RFC 7692 §6.1).
                return Err(ProtocolError::ReservedBits(header.rsv));
            }
            let mut compressed = false;
            let text_stream = match (header.opcode, self.fragmented) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Continuation, Some(open)) => {
                    compressed = open.compressed;
                    // A compressed message is measured as it arrives
                    // (compressed) and again as it inflates.
                    let (held, limit) = if compressed {
                        let held = self
                            .inflate
                            .as_ref()
                            .map_or(0, |state| state.compressed.len());
                        (held, self.max_compressed_size())
                    } else {
                        (self.assembly.len(), self.max_message_size)
                    };
                    if held + len > limit {
                        return Err(ProtocolError::MessageTooLarge);
                    }
                    if open.frames as usize >= self.max_fragments {
                        return Err(ProtocolError::TooManyFragments);
                    }
                    open.text
                }
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                (OpCode::Text | OpCode::Binary, None) => {
                    compressed = rsv1;
                    if len > self.max_message_size
                        && (!compressed || len > self.max_compressed_size())
                    {
                        return Err(ProtocolError::MessageTooLarge);
                    }
                    header.opcode == OpCode::Text
                }
                _ => false,
            };
            let arrived = (buf.len() - header.header_len).min(len);
            if arrived > self.progress {
                let fresh =
                    &mut buf[header.header_len + self.progress..header.header_len + arrived];
                apply_mask(fresh, key, self.progress);
                // A whole single-frame text message is validated once, below;
                // anything arriving in pieces is checked as it comes, so bad
                // UTF-8 fails the connection without waiting for the end.
                let whole_single = self.progress == 0 && arrived == len && header.fin;
                if text_stream && !compressed && !(whole_single && self.fragmented.is_none()) {
                    self.utf8.feed(fresh)?;
                }
                self.progress = arrived;
            }
            if arrived < len {
                return Ok(Decoded::NeedMore(consumed));
            }
            self.progress = 0;
            let start = consumed + header.header_len;
            let end = start + len;
            consumed = end;
            match header.opcode {
                OpCode::Continuation => {
                    let Some(open) = self.fragmented.as_mut() else {
                        return Err(ProtocolError::UnexpectedContinuation);
                    };
                    open.frames = open.frames.saturating_add(1);
                    let text = open.text;
                    if header.fin {
                        self.fragmented = None;
                    }
                    if compressed && header.fin {
                        if !self.inflate_last_frame(&input[start..end], text)? {
                            return Ok(Decoded::Inflating(consumed));
                        }
                        break Ready::Assembled { text };
                    } else if compressed {
                        self.hold_compressed(&input[start..end])?;
                    } else {
                        self.assembly.extend_from_slice(&input[start..end]);
                        if header.fin {
                            if text {
                                self.utf8.finish()?;
                            }
                            break Ready::Assembled { text };
                        }
                    }
                }
                OpCode::Text | OpCode::Binary if compressed => {
                    self.assembly.clear();
                    if let Some(state) = self.inflate.as_mut() {
                        state.compressed.clear();
                    }
                    if header.fin {
                        if !self.inflate_last_frame(&input[start..end], text_stream)? {
                            return Ok(Decoded::Inflating(consumed));
                        }
                        break Ready::Assembled { text: text_stream };
                    }
                    self.hold_compressed(&input[start..end])?;
                    self.fragmented = Some(Fragmented {
                        text: text_stream,
                        compressed: true,
                        frames: 1,
                    });
                }
                OpCode::Text | OpCode::Binary if !header.fin => {
                    self.assembly.clear();
                    self.assembly.extend_from_slice(&input[start..end]);
                    self.fragmented = Some(Fragmented {
                        text: text_stream,
                        compressed: false,
                        frames: 1,
                    });
                }
                opcode => {
                    if opcode == OpCode::Text {
                        self.utf8.finish()?;
                    }
                    break Ready::Input { opcode, start, end };
                }
            }
        };
        let frame = match ready {
            Ready::Assembled { text } => {
                self.assembly_in_use = true;
                self.assembled(text)?
            }
            Ready::Input { opcode, start, end } => {
                let payload = &input[start..end];
                match opcode {
                    OpCode::Text => Frame::Text(as_text(payload)?),
                    OpCode::Binary => Frame::Binary(payload),
                    OpCode::Ping => Frame::Ping(payload),
                    OpCode::Pong => Frame::Pong(payload),
                    OpCode::Close => Frame::Close(parse_close_payload(payload)?),
                    OpCode::Continuation => return Err(ProtocolError::UnexpectedContinuation),
                }
            }
        };
        Ok(Decoded::Frame(frame, consumed))
    }

    /// The message in the assembly buffer.
    fn assembled(&self, text: bool) -> Result<Frame<'_>, ProtocolError> {
        Ok(if text {
            Frame::Text(as_text(&self.assembly)?)
        } else {
            Frame::Binary(&self.assembly)
        })
    }
}

fn as_text(bytes: &[u8]) -> Result<&str, ProtocolError> {
    std::str::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8)
}

/// Validates a close frame's payload: empty, or a wire-valid code followed
/// by a UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            Ok(Some((code, as_text(reason)?)))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    pub(crate) fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::proto::frame::encode_masked_frame(&mut out, b0, [0x37, 0xfa, 0x21, 0x3d], payload);
        out
    }

    fn decoder() -> Decoder {
        Decoder::new(&Limits::default())
    }

    #[test]
    fn single_frame_text_borrows_the_input() {
        let mut d = decoder();
        let mut input = client_frame(0x81, b"Hello");
        let total = input.len();
        let base = input.as_ptr() as usize;
        match d.decode(&mut input).unwrap() {
            Decoded::Frame(Frame::Text(text), used) => {
                assert_eq!(text, "Hello");
                assert_eq!(used, total);
                assert_eq!(text.as_ptr() as usize, base + 6, "payload not copied");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn fragments_with_interleaved_ping_assemble_one_message() {
        let mut d = decoder();
        let mut input = client_frame(0x01, b"Hel");
        input.extend(client_frame(0x89, b"p"));
        input.extend(client_frame(0x00, b"lo "));
        input.extend(client_frame(0x80, "wörld".as_bytes()));
        let (ping_used, ping) = match d.decode(&mut input).unwrap() {
            Decoded::Frame(Frame::Ping(p), used) => (used, p.to_vec()),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(ping, b"p");
        match d.decode(&mut input[ping_used..]).unwrap() {
            Decoded::Frame(Frame::Text(text), _) => assert_eq!(text, "Hello wörld"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn byte_at_a_time_delivery_yields_the_same_message() {
        let mut d = decoder();
        let wire = client_frame(0x81, "byte by byte ✓".as_bytes());
        let mut buffer = Vec::new();
        for (i, &b) in wire.iter().enumerate() {
            buffer.push(b);
            match d.decode(&mut buffer).unwrap() {
                Decoded::NeedMore(0) => assert!(i + 1 < wire.len()),
                Decoded::Frame(Frame::Text(t), used) => {
                    assert_eq!(t, "byte by byte ✓");
                    assert_eq!(used, wire.len());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_completes() {
        let mut d = decoder();
        let mut payload = b"valid prefix ".to_vec();
        payload.extend_from_slice(b"\xed\xa0\x80");
        payload.extend_from_slice(&[b'a'; 200]);
        let wire = client_frame(0x81, &payload);
        // Deliver only up to just past the bad sequence.
        let mut partial = wire[..4 + 4 + 16].to_vec();
        assert_eq!(d.decode(&mut partial), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn invalid_utf8_across_fragments_is_caught_in_the_fragment() {
        let mut d = decoder();
        let mut input = client_frame(0x01, b"ok \xce");
        input.extend(client_frame(0x00, b"\xff rest"));
        assert_eq!(d.decode(&mut input), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn message_state_violations_close_with_1002() {
        let mut d = decoder();
        let mut input = client_frame(0x80, b"orphan");
        assert_eq!(
            d.decode(&mut input),
            Err(ProtocolError::UnexpectedContinuation)
        );

        let mut d = decoder();
        let mut input = client_frame(0x01, b"a");
        input.extend(client_frame(0x81, b"b"));
        assert_eq!(
            d.decode(&mut input),
            Err(ProtocolError::ExpectedContinuation)
        );

        let mut d = decoder();
        let mut input = vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'];
        assert_eq!(d.decode(&mut input), Err(ProtocolError::UnmaskedFrame));
    }

    #[test]
    fn limits_close_with_1009_from_the_header_alone() {
        let limits = Limits {
            max_frame_size: 100,
            max_message_size: 150,
            max_fragments: 3,
            ..Limits::default()
        };
        // Only the header of a 200-byte frame: rejected before any payload.
        let mut d = Decoder::new(&limits);
        let mut header = client_frame(0x82, &[0; 200])[..8].to_vec();
        assert_eq!(d.decode(&mut header), Err(ProtocolError::FrameTooLarge));

        let mut d = Decoder::new(&limits);
        let mut input = client_frame(0x02, &[0; 100]);
        input.extend(client_frame(0x80, &[0; 60]));
        assert_eq!(d.decode(&mut input), Err(ProtocolError::MessageTooLarge));

        let mut d = Decoder::new(&limits);
        let mut input = client_frame(0x02, b"1");
        input.extend(client_frame(0x00, b"2"));
        input.extend(client_frame(0x00, b"3"));
        input.extend(client_frame(0x80, b"4"));
        assert_eq!(d.decode(&mut input), Err(ProtocolError::TooManyFragments));
    }

    #[test]
    fn huge_declared_length_allocates_nothing() {
        let mut d = decoder();
        let mut header = vec![0x82, 0xFF, 0, 0, 0, 0x10, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(d.decode(&mut header), Err(ProtocolError::FrameTooLarge));
        assert_eq!(d.retained_bytes(), 0);
    }

    #[test]
    fn close_payloads_are_validated() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(
            parse_close_payload(&[3]),
            Err(ProtocolError::CloseFrameTooShort)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, b'b', b'y', b'e']),
            Ok(Some((CloseCode(1000), "bye")))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xED]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xff]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    /// A compressed message as a client's deflater would send it
    /// (sync-flush tail stripped), context taken over across calls.
    fn deflated(compressor: &mut crate::proto::deflate::Deflater, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(compressor.compress_message(text, &mut out, false));
        out
    }

    fn inflating_decoder(limits: &Limits) -> Decoder {
        let mut d = Decoder::new(limits);
        d.enable_inflate(15, false);
        d
    }

    fn decode_text(d: &mut Decoder, input: &mut [u8]) -> Result<String, ProtocolError> {
        let total = input.len();
        match d.decode(input)? {
            Decoded::Frame(Frame::Text(text), used) => {
                assert_eq!(used, total);
                Ok(text.to_owned())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn compressed_messages_inflate_whole_and_fragmented() {
        let mut compressor = crate::proto::deflate::Deflater::new(15);
        let mut d = inflating_decoder(&Limits::default());
        let text = "compressible ".repeat(100);
        let wire = deflated(&mut compressor, text.as_bytes());
        let mut input = client_frame(0xC1, &wire);
        assert_eq!(decode_text(&mut d, &mut input).unwrap(), text);
        // The next message refers back to the first (context takeover), in
        // three fragments: RSV1 on the first only.
        let wire = deflated(&mut compressor, text.as_bytes());
        let third = wire.len() / 3;
        let mut input = client_frame(0x41, &wire[..third]);
        input.extend(client_frame(0x00, &wire[third..2 * third]));
        input.extend(client_frame(0x80, &wire[2 * third..]));
        assert_eq!(decode_text(&mut d, &mut input).unwrap(), text);
        // Uncompressed messages still pass on a compressing connection.
        let mut input = client_frame(0x81, b"plain");
        assert_eq!(decode_text(&mut d, &mut input).unwrap(), "plain");
    }

    #[test]
    fn rsv1_is_refused_where_it_means_nothing() {
        let limits = Limits::default();
        // Not negotiated.
        let mut input = client_frame(0xC1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(
            decoder().decode(&mut input),
            Err(ProtocolError::ReservedBits(RSV1))
        );
        // On a control frame, and on a continuation.
        let mut input = client_frame(0xC9, b"");
        assert_eq!(
            inflating_decoder(&limits).decode(&mut input),
            Err(ProtocolError::ReservedBits(RSV1))
        );
        let mut input = client_frame(0x01, b"a");
        input.extend(client_frame(0xC0, b"b"));
        assert_eq!(
            inflating_decoder(&limits).decode(&mut input),
            Err(ProtocolError::ReservedBits(RSV1))
        );
        // Other RSV bits stay reserved.
        let mut input = client_frame(0xE1, b"x");
        assert_eq!(
            inflating_decoder(&limits).decode(&mut input),
            Err(ProtocolError::ReservedBits(0b110))
        );
    }

    #[test]
    fn a_zip_bomb_closes_with_1009_without_growing_past_the_limit() {
        let limits = Limits {
            max_message_size: 64 * 1024,
            ..Limits::default()
        };
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let wire = deflated(&mut crate::proto::deflate::Deflater::new(15), &zeros);
        let mut d = inflating_decoder(&limits);
        let mut input = client_frame(0xC2, &wire);
        let error = d.decode(&mut input).unwrap_err();
        assert_eq!(error, ProtocolError::MessageTooLarge);
        assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
        assert!(
            d.retained_bytes() <= 64 * 1024 + 1,
            "{}",
            d.retained_bytes()
        );
    }

    #[test]
    fn compressed_text_is_utf8_checked_after_inflating() {
        let mut compressor = crate::proto::deflate::Deflater::new(15);
        let wire = deflated(&mut compressor, b"bad \xff byte");
        let mut input = client_frame(0xC1, &wire);
        assert_eq!(
            inflating_decoder(&Limits::default()).decode(&mut input),
            Err(ProtocolError::InvalidUtf8)
        );
        let mut input = client_frame(0xC1, &[0xff; 16]);
        assert_eq!(
            inflating_decoder(&Limits::default()).decode(&mut input),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    /// Decodes `input` to its first message, going on through every
    /// [`Decoded::Inflating`]; returns the message, the input bytes used
    /// and how many calls said "inflating".
    fn decode_through_inflation(d: &mut Decoder, input: &mut [u8]) -> (Vec<u8>, usize, usize) {
        let mut used = 0;
        let mut inflating = 0;
        loop {
            match d.decode(&mut input[used..]).unwrap() {
                Decoded::Frame(Frame::Text(text), n) => return (text.into(), used + n, inflating),
                Decoded::Frame(Frame::Binary(bytes), n) => {
                    return (bytes.to_vec(), used + n, inflating);
                }
                Decoded::Inflating(n) => {
                    assert!(d.inflating());
                    used += n;
                    inflating += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// `data` compressed as hard as DEFLATE can: an attacker's choice.
    fn deflated_best(data: &[u8]) -> Vec<u8> {
        deflated(
            &mut crate::proto::deflate::Deflater::with_level(15, 9),
            data,
        )
    }

    #[test]
    fn an_unfinished_compressed_message_holds_what_arrived_not_what_it_inflates_to() {
        // 15 MiB of zeros in about 15 KB: the first fragment of a message
        // that never ends (in this test, until much later).
        let zeros = vec![0u8; 15 * 1024 * 1024];
        let wire = deflated_best(&zeros);
        assert!(wire.len() < 20_000, "{}", wire.len());
        let mut d = inflating_decoder(&Limits::default());
        let mut input = client_frame(0x42, &wire);
        let total = input.len();
        assert_eq!(d.decode(&mut input).unwrap(), Decoded::NeedMore(total));
        assert!(
            d.retained_bytes() <= 2 * wire.len(),
            "{} bytes held for {} received",
            d.retained_bytes(),
            wire.len()
        );
        assert!(d.message_open() && !d.inflating());
        // The end of it: the whole message arrives, intact.
        let mut input = client_frame(0x80, b"");
        let (message, used, _) = decode_through_inflation(&mut d, &mut input);
        assert_eq!(used, input.len());
        assert!(message == zeros);
    }

    #[test]
    fn fragments_of_a_compressed_message_count_against_the_limit_as_they_arrive() {
        let limits = Limits {
            max_message_size: 10_000,
            ..Limits::default()
        };
        // Empty stored blocks inflate to nothing: only their own size can
        // stop them.
        let mut d = inflating_decoder(&limits);
        let mut input = client_frame(0x42, &[0x00, 0x00, 0x00, 0xff, 0xff]);
        for _ in 0..3000 {
            input.extend(client_frame(0x00, &[0x00, 0x00, 0x00, 0xff, 0xff]));
        }
        assert_eq!(d.decode(&mut input), Err(ProtocolError::MessageTooLarge));
        assert!(d.retained_bytes() <= 32 * 1024, "{}", d.retained_bytes());
        // A single compressed frame beyond it is refused from its header.
        let mut d = inflating_decoder(&limits);
        let mut header = client_frame(0xC2, &[0; 20_000])[..8].to_vec();
        assert_eq!(d.decode(&mut header), Err(ProtocolError::MessageTooLarge));
    }

    #[test]
    fn a_large_compressed_message_inflates_a_slice_per_call_and_arrives_intact() {
        let limits = Limits {
            inflate_slice: 64 * 1024,
            ..Limits::default()
        };
        let text: String = (0..40_000)
            .map(|i| format!("{{\"op\":\"PING\",\"n\":{i}}}"))
            .collect();
        let mut compressor = crate::proto::deflate::Deflater::new(15);
        // Compressed in three fragments, followed by a plain message that
        // must wait until the compressed one is delivered.
        let wire = deflated(&mut compressor, text.as_bytes());
        let third = wire.len() / 3;
        let mut input = client_frame(0x41, &wire[..third]);
        input.extend(client_frame(0x00, &wire[third..2 * third]));
        input.extend(client_frame(0x80, &wire[2 * third..]));
        let message_len = input.len();
        input.extend(client_frame(0x81, b"after"));
        let mut d = inflating_decoder(&limits);
        let (message, used, slices) = decode_through_inflation(&mut d, &mut input);
        assert!(message == text.as_bytes());
        assert_eq!(used, message_len, "the next message is not touched");
        assert!(!d.inflating());
        assert!(
            slices >= text.len() / (64 * 1024),
            "{slices} slices for {} bytes",
            text.len()
        );
        assert_eq!(decode_text(&mut d, &mut input[used..]).unwrap(), "after");
        // Context was taken over: a second message referring to the first
        // inflates as well, here in one frame.
        let wire = deflated(&mut compressor, text.as_bytes());
        let mut input = client_frame(0xC1, &wire);
        let (message, used, slices) = decode_through_inflation(&mut d, &mut input);
        assert!(message == text.as_bytes());
        assert_eq!(used, input.len());
        assert!(slices >= text.len() / (64 * 1024));
    }

    #[test]
    fn bad_utf8_and_bombs_fail_in_the_slice_that_finds_them() {
        let limits = Limits {
            inflate_slice: 16 * 1024,
            max_message_size: 200_000,
            ..Limits::default()
        };
        // Decodes one compressed message through its slices.
        let outcome = |b0: u8, payload: &[u8]| {
            let mut compressor = crate::proto::deflate::Deflater::new(15);
            let mut input = client_frame(b0, &deflated(&mut compressor, payload));
            let mut d = inflating_decoder(&limits);
            let mut result = d.decode(&mut input).map(|_| ());
            while d.inflating() && result.is_ok() {
                result = d.decode(&mut []).map(|_| ());
            }
            assert!(!d.inflating(), "nothing left pending after a failure");
            result
        };
        let mut text = "x".repeat(100_000).into_bytes();
        text.extend_from_slice(b"\xff");
        assert_eq!(outcome(0xC1, &text), Err(ProtocolError::InvalidUtf8));
        let zeros = vec![0u8; 1024 * 1024];
        assert_eq!(outcome(0xC2, &zeros), Err(ProtocolError::MessageTooLarge));
    }

    #[test]
    fn many_tiny_fragments_cost_only_their_payload() {
        let mut d = decoder();
        let mut input = client_frame(0x02, b"x");
        for _ in 0..65_534 {
            input.extend(client_frame(0x00, b"x"));
        }
        input.extend(client_frame(0x80, b"x"));
        match d.decode(&mut input).unwrap() {
            Decoded::Frame(Frame::Binary(b), _) => assert_eq!(b.len(), 65_536),
            other => panic!("unexpected {other:?}"),
        }
        assert!(d.retained_bytes() <= 2 * 65_536);
    }
}
