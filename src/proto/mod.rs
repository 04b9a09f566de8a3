//! The sans-IO protocol core: bytes and the current time in, events and
//! bytes to write out. Nothing here touches a socket or reads a clock, so
//! every behaviour is unit-tested deterministically.

pub mod close_code;
pub mod connection;
pub mod decoder;
pub mod deflate;
pub mod error;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod inbuf;
pub mod limits;
pub mod mask;
pub mod message;
pub mod opening;
pub mod utf8;

pub use close_code::CloseCode;
pub use connection::{CloseReport, Connection, Phase, Received, SendError, TimeoutAction};
pub use decoder::{Decoded, Decoder, Frame};
pub use error::{HandshakeError, ProtocolError};
pub use frame::{EncodedHeader, FrameHeader, OpCode};
pub use http::{HttpRequest, HttpResponse};
pub use inbuf::InBuffer;
pub use limits::Limits;
pub use message::Message;
pub use opening::{Accepted, Head, Upgrade};
