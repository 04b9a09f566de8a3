//! Typed errors of the protocol core, each mapped to what goes on the wire.

use std::fmt;

use super::close_code::CloseCode;

/// A violation found while decoding frames: the connection is failed with
/// the close code [`ProtocolError::close_code`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Opcode 3-7 or 11-15.
    ReservedOpcode(u8),
    /// An RSV bit set without an extension that defines it.
    ReservedBits(u8),
    /// A client frame without the mask bit.
    UnmaskedFrame,
    /// A control frame with more than 125 bytes of payload.
    ControlFrameTooLong,
    /// A control frame without FIN.
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message open.
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still open.
    ExpectedContinuation,
    /// A payload length not in its shortest encoding.
    NonMinimalLength,
    /// A 64-bit payload length with the most significant bit set.
    LengthOverflow,
    /// A frame longer than [`Limits::max_frame_size`](super::Limits).
    FrameTooLarge,
    /// A message longer than [`Limits::max_message_size`](super::Limits).
    MessageTooLarge,
    /// A message in more fragments than [`Limits::max_fragments`](super::Limits).
    TooManyFragments,
    /// Text (or a close reason) that is not valid UTF-8.
    InvalidUtf8,
    /// A close frame with a 1-byte payload.
    CloseFrameTooShort,
    /// A close frame with a code no peer may send.
    InvalidCloseCode(u16),
    /// A compressed message (permessage-deflate) that does not inflate.
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code the connection is failed with.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge
            | ProtocolError::MessageTooLarge
            | ProtocolError::TooManyFragments => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame and the log.
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::ReservedBits(_) => "reserved bits set",
            ProtocolError::UnmaskedFrame => "client frame not masked",
            ProtocolError::ControlFrameTooLong => "control frame too long",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "new message inside a fragmented one",
            ProtocolError::NonMinimalLength => "non-minimal length encoding",
            ProtocolError::LengthOverflow => "payload length over 2^63",
            ProtocolError::FrameTooLarge => "frame too large",
            ProtocolError::MessageTooLarge => "message too large",
            ProtocolError::TooManyFragments => "too many fragments",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::CloseFrameTooShort => "close frame with 1-byte payload",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::ReservedBits(bits) => write!(f, "reserved bits {bits:#05b} set"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why an opening handshake was refused; [`HandshakeError::status`] is the
/// HTTP status of the answer and the `Display` text its one-line body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The request head did not end within the size limit (431).
    HeadTooLarge,
    /// More header fields than the limit (431).
    TooManyHeaders,
    /// httparse rejected the request head (400).
    Malformed,
    /// An upgrade request whose method is not GET (400).
    MethodNotGet,
    /// An upgrade request older than HTTP/1.1 (400).
    HttpVersion,
    /// No `Host` header (400).
    MissingHost,
    /// `Upgrade` lacks the `websocket` token (400).
    MissingUpgrade,
    /// `Connection` lacks the `Upgrade` token (400).
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key`, or more than one (400).
    MissingKey,
    /// A `Sec-WebSocket-Key` that is not base64 of 16 bytes (400).
    InvalidKey,
    /// `Sec-WebSocket-Version` missing or not 13 (426).
    UnsupportedVersion,
}

impl HandshakeError {
    /// The HTTP status code of the refusal.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::HeadTooLarge => "request head too large",
            HandshakeError::TooManyHeaders => "too many header fields",
            HandshakeError::Malformed => "malformed HTTP request",
            HandshakeError::MethodNotGet => "WebSocket upgrade must use GET",
            HandshakeError::HttpVersion => "WebSocket upgrade needs HTTP/1.1 or later",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::MissingUpgrade => "Upgrade header must contain websocket",
            HandshakeError::MissingConnectionUpgrade => "Connection header must contain Upgrade",
            HandshakeError::MissingKey => "exactly one Sec-WebSocket-Key header is required",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version (use 13)",
        })
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_map_to_their_close_codes() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode(1007));
        assert_eq!(ProtocolError::FrameTooLarge.close_code(), CloseCode(1009));
        assert_eq!(ProtocolError::MessageTooLarge.close_code(), CloseCode(1009));
        assert_eq!(
            ProtocolError::TooManyFragments.close_code(),
            CloseCode(1009)
        );
        assert_eq!(ProtocolError::UnmaskedFrame.close_code(), CloseCode(1002));
        assert_eq!(
            ProtocolError::InvalidCloseCode(5).close_code(),
            CloseCode(1002)
        );
        assert!(ProtocolError::ReservedBits(4).reason().len() <= 123);
    }

    #[test]
    fn handshake_errors_map_to_statuses() {
        assert_eq!(HandshakeError::HeadTooLarge.status(), 431);
        assert_eq!(HandshakeError::TooManyHeaders.status(), 431);
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
        assert_eq!(HandshakeError::InvalidKey.status(), 400);
    }
}
