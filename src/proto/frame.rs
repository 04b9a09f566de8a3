//! The frame codec (RFC 6455 §5.2): a checked view of a frame header over
//! received bytes, and the encoder for the server's own (unmasked) frames.

use super::error::ProtocolError;

/// A frame opcode that RFC 6455 defines. Reserved values never become an
/// `OpCode`: parsing them fails with [`ProtocolError::ReservedOpcode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: the next fragment of a message.
    Continuation,
    /// 0x1: the first frame of a UTF-8 text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the low nibble of a frame's first byte.
    pub fn from_bits(bits: u8) -> Result<OpCode, ProtocolError> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Largest payload a control frame may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest possible frame header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

/// The RSV1 bit as [`FrameHeader::rsv`] and [`EncodedHeader::new`] hold
/// the three RSV bits: set on the first frame of a message compressed
/// with permessage-deflate (RFC 7692).
pub const RSV1: u8 = 0b100;

/// A validated frame header, parsed from the start of a byte buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this frame ends its message.
    pub fin: bool,
    /// The three RSV bits, in the low bits ([`RSV1`] = 0b100).
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key, present on every client frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length as declared; never trusted for allocation.
    pub payload_len: u64,
    /// Bytes the header occupies before the payload.
    pub header_len: usize,
}

/// Parses the frame header at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. Checks that can be made
/// from the first two bytes (opcode, RSV bits outside `allowed_rsv`, control
/// frame rules) fail before the rest of the header arrives.
pub fn parse_header(buf: &[u8], allowed_rsv: u8) -> Result<Option<FrameHeader>, ProtocolError> {
    let Some(&[b0, b1]) = buf.first_chunk::<2>() else {
        return Ok(None);
    };
    let rsv = (b0 >> 4) & 0b111;
    if rsv & !allowed_rsv != 0 {
        return Err(ProtocolError::ReservedBits(rsv));
    }
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let short_len = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if usize::from(short_len) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let (payload_len, mut header_len) = match short_len {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            if len < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            (len, 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut raw = [0u8; 8];
            raw.copy_from_slice(bytes);
            let len = u64::from_be_bytes(raw);
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthOverflow);
            }
            if len <= 0xFFFF {
                return Err(ProtocolError::NonMinimalLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(bytes) = buf.get(header_len..header_len + 4) else {
            return Ok(None);
        };
        header_len += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len,
        header_len,
    }))
}

/// The header of an unmasked server frame, ready to be written before the
/// payload. Returned by value so callers can encode once and copy many times.
#[derive(Debug, Clone, Copy)]
pub struct EncodedHeader {
    bytes: [u8; 10],
    len: u8,
}

impl EncodedHeader {
    /// Encodes a header for a frame of `payload_len` bytes.
    pub fn new(fin: bool, rsv: u8, opcode: OpCode, payload_len: usize) -> EncodedHeader {
        let mut bytes = [0u8; 10];
        bytes[0] = (u8::from(fin) << 7) | ((rsv & 0b111) << 4) | opcode.bits();
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if payload_len <= 0xFFFF {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        EncodedHeader { bytes, len }
    }

    /// The header's wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Appends one complete unmasked frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8]) {
    let header = EncodedHeader::new(fin, 0, opcode, payload.len());
    out.reserve(header.as_bytes().len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
}

/// Appends one masked frame, as a client sends it: `first_byte` carries
/// FIN, RSV and opcode as they go on the wire. For clients, load generators
/// and tests; the server itself never masks.
pub fn encode_masked_frame(out: &mut Vec<u8>, first_byte: u8, key: [u8; 4], payload: &[u8]) {
    let header = EncodedHeader::new(false, 0, OpCode::Continuation, payload.len());
    let header = header.as_bytes();
    out.reserve(header.len() + 4 + payload.len());
    out.push(first_byte);
    out.push(header[1] | 0x80);
    out.extend_from_slice(&header[2..]);
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    super::mask::apply_mask(&mut out[start..], key, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, len_bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        v.extend_from_slice(len_bytes);
        v[1] |= 0x80;
        v.extend_from_slice(&[1, 2, 3, 4]);
        v
    }

    #[test]
    fn parses_short_medium_and_long_lengths() {
        let h = parse_header(&masked(0x81, &[5]), 0).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.header_len),
            (true, OpCode::Text, 5, 6)
        );
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
        let h = parse_header(&masked(0x02, &[126, 0x01, 0x00]), 0)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.header_len),
            (false, OpCode::Binary, 256, 8)
        );
        let h = parse_header(&masked(0x82, &[127, 0, 0, 0, 0, 0, 1, 0, 0]), 0)
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 14));
    }

    #[test]
    fn needs_more_bytes_until_the_header_is_complete() {
        let full = masked(0x82, &[127, 0, 0, 0, 0, 0, 1, 0, 0]);
        for cut in 0..full.len() {
            assert_eq!(parse_header(&full[..cut], 0), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn rejects_every_violation_with_its_error() {
        assert_eq!(
            parse_header(&[0x83, 0x80], 0),
            Err(ProtocolError::ReservedOpcode(3))
        );
        assert_eq!(
            parse_header(&[0x8B, 0x80], 0),
            Err(ProtocolError::ReservedOpcode(0xB))
        );
        assert_eq!(
            parse_header(&[0xC1, 0x80], 0),
            Err(ProtocolError::ReservedBits(RSV1))
        );
        assert_eq!(
            parse_header(&[0x91, 0x80], 0),
            Err(ProtocolError::ReservedBits(0b001))
        );
        assert_eq!(
            parse_header(&[0x09, 0x80], 0),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            parse_header(&[0x89, 0xFE], 0),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(
            parse_header(&[0x82, 0xFE, 0, 125], 0),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            parse_header(&[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF], 0),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            parse_header(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], 0),
            Err(ProtocolError::LengthOverflow)
        );
    }

    #[test]
    fn allowed_rsv_bits_pass() {
        let h = parse_header(&masked(0xC1, &[0]), RSV1).unwrap().unwrap();
        assert_eq!(h.rsv, RSV1);
    }

    #[test]
    fn encodes_minimal_lengths_that_parse_back() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            encode_frame(&mut out, true, OpCode::Binary, &payload);
            let h = parse_header(&out, 0).unwrap().unwrap();
            assert_eq!(h.payload_len as usize, len);
            assert_eq!(h.mask, None);
            assert_eq!(out.len(), h.header_len + len);
        }
    }
}
