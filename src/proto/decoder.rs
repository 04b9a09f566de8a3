//! Turns received bytes into frames and whole messages, in place.
//!
//! The decoder owns no input buffer: it is handed the received bytes as a
//! mutable slice, unmasks payloads where they lie, and returns events that
//! borrow either that slice (a single-frame message: no copy) or its own
//! assembly buffer (a fragmented message: one copy per fragment).

use super::close_code::CloseCode;
use super::deflate::Inflater;
use super::error::ProtocolError;
use super::frame::{OpCode, parse_header};
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
    /// An event, and the number of input bytes used up through its frame.
    Frame(Frame<'a>, usize),
    /// No complete event yet. The count says how many bytes at the front of
    /// the input were used up (fragments moved into the assembly buffer);
    /// the rest must be offered again, with more bytes appended.
    NeedMore(usize),
}

/// The open fragmented message, if any.
#[derive(Debug, Clone, Copy)]
struct Fragmented {
    text: bool,
    /// The first frame had RSV1: fragments are inflated as they complete.
    compressed: bool,
    frames: usize,
}

/// permessage-deflate state of a connection that negotiated it.
#[derive(Debug)]
struct InflateState {
    window_bits: u8,
    reset_each_message: bool,
    /// Made on the first compressed message; with no context takeover it
    /// is dropped again when the connection goes quiet.
    inflater: Option<Inflater>,
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
    allowed_rsv: u8,
    /// Payload bytes of the frame at the front of the input that have been
    /// unmasked (and UTF-8 checked) already.
    progress: usize,
    fragmented: Option<Fragmented>,
    assembly: Vec<u8>,
    assembly_delivered: bool,
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
            ..Decoder::default()
        }
    }

    /// Accepts compressed messages (RSV1 on their first frame), as agreed
    /// by permessage-deflate: the peer compresses with at most
    /// `window_bits`, and with `no_context_takeover` every message stands
    /// alone. The message size limit applies to the inflated size.
    pub fn enable_inflate(&mut self, window_bits: u8, no_context_takeover: bool) {
        self.allowed_rsv = 0b100;
        self.inflate = Some(Box::new(InflateState {
            window_bits,
            reset_each_message: no_context_takeover,
            inflater: None,
        }));
    }

    /// Bytes of heap memory held between messages.
    pub fn retained_bytes(&self) -> usize {
        self.assembly.capacity()
    }

    /// Bytes of the fragmented message being received, held until its
    /// last fragment arrives (0 when none is open).
    pub fn partial_message_len(&self) -> usize {
        self.fragmented.map_or(0, |_| self.assembly.len())
    }

    /// Frees the assembly buffer if no fragmented message is open.
    pub fn release_idle_memory(&mut self) {
        if self.fragmented.is_none() {
            self.assembly = Vec::new();
            // Without context takeover the next message needs no history.
            if let Some(state) = self.inflate.as_mut()
                && state.reset_each_message
            {
                state.inflater = None;
            }
        }
    }

    /// Inflates one complete fragment of a compressed message onto the
    /// assembly buffer, validating new text as it appears.
    fn inflate_fragment(
        &mut self,
        payload: &[u8],
        text: bool,
        last: bool,
    ) -> Result<(), ProtocolError> {
        let Some(state) = self.inflate.as_mut() else {
            return Err(ProtocolError::ReservedBits(0b100));
        };
        let window_bits = state.window_bits;
        let inflater = state
            .inflater
            .get_or_insert_with(|| Inflater::new(window_bits));
        let before = self.assembly.len();
        inflater.inflate(payload, &mut self.assembly, self.max_message_size)?;
        if last {
            inflater.finish_message(
                &mut self.assembly,
                self.max_message_size,
                state.reset_each_message,
            )?;
        }
        if text {
            self.utf8.feed(&self.assembly[before..])?;
            if last {
                self.utf8.finish()?;
            }
        }
        Ok(())
    }

    /// Decodes from the front of `input`, which must start where the
    /// previous call's used-up bytes ended.
    pub fn decode<'a>(&'a mut self, input: &'a mut [u8]) -> Result<Decoded<'a>, ProtocolError> {
        if self.assembly_delivered {
            self.assembly_delivered = false;
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
            let rsv1 = header.rsv & 0b100 != 0;
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
                    // A compressed message is measured as it inflates.
                    if !compressed && self.assembly.len() + len > self.max_message_size {
                        return Err(ProtocolError::MessageTooLarge);
                    }
                    if open.frames >= self.max_fragments {
                        return Err(ProtocolError::TooManyFragments);
                    }
                    open.text
                }
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                (OpCode::Text | OpCode::Binary, None) => {
                    compressed = rsv1;
                    if !compressed && len > self.max_message_size {
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
                    open.frames += 1;
                    let text = open.text;
                    if compressed {
                        self.inflate_fragment(&input[start..end], text, header.fin)?;
                    } else {
                        self.assembly.extend_from_slice(&input[start..end]);
                        if header.fin && text {
                            self.utf8.finish()?;
                        }
                    }
                    if header.fin {
                        self.fragmented = None;
                        break Ready::Assembled { text };
                    }
                }
                OpCode::Text | OpCode::Binary if compressed => {
                    self.assembly.clear();
                    self.inflate_fragment(&input[start..end], text_stream, header.fin)?;
                    if header.fin {
                        break Ready::Assembled { text: text_stream };
                    }
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
                self.assembly_delivered = true;
                if text {
                    Frame::Text(as_text(&self.assembly)?)
                } else {
                    Frame::Binary(&self.assembly)
                }
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
            Err(ProtocolError::ReservedBits(0b100))
        );
        // On a control frame, and on a continuation.
        let mut input = client_frame(0xC9, b"");
        assert_eq!(
            inflating_decoder(&limits).decode(&mut input),
            Err(ProtocolError::ReservedBits(0b100))
        );
        let mut input = client_frame(0x01, b"a");
        input.extend(client_frame(0xC0, b"b"));
        assert_eq!(
            inflating_decoder(&limits).decode(&mut input),
            Err(ProtocolError::ReservedBits(0b100))
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
