//! Client side of the WebSocket protocol shared by `load` and `idle`: the
//! opening handshake (done in blocking mode, in batches), building masked
//! client frames and parsing the headers of the server's unmasked frames.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The `Sec-WebSocket-Key` every connection sends (RFC 6455's example key).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` a correct server answers to [`KEY`].
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Masking key of every client frame. Fixed: masking is mandatory, but its
/// randomness is irrelevant to an echo benchmark.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest response head we accept before giving up.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// Connect, write and read timeout during the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An upgraded connection, still in blocking mode.
pub struct Opened {
    pub stream: TcpStream,
    /// Bytes that arrived after the response head (normally none).
    pub leftover: Vec<u8>,
}

/// Opens `count` WebSocket connections to `addr`, `batch` at a time: each
/// batch is connected and sent its upgrade requests before any response is
/// read, so at most `batch` connections wait in the listen backlog.
/// `progress` is called with the running total after each batch.
pub fn open_all(
    addr: SocketAddr,
    count: usize,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> io::Result<Vec<Opened>> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut opened = Vec::with_capacity(count);
    while opened.len() < count {
        let size = batch.max(1).min(count - opened.len());
        let mut pending = Vec::with_capacity(size);
        for _ in 0..size {
            let index = opened.len() + pending.len();
            let stream = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("connection {index}: connect: {error}"),
                )
            })?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
            stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
            (&stream).write_all(request.as_bytes())?;
            pending.push(stream);
        }
        for stream in pending {
            let index = opened.len();
            let leftover = read_response(&stream).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("connection {index}: handshake: {error}"),
                )
            })?;
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            opened.push(Opened { stream, leftover });
        }
        progress(opened.len());
    }
    Ok(opened)
}

/// Reads the response head, checks for `101` and the right accept value,
/// and returns whatever followed the head.
fn read_response(mut stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut buffer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed before answering",
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buffer.len() > MAX_RESPONSE_HEAD {
            return Err(io::Error::other("response head too long"));
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(io::Error::other(format!("expected 101, got {status:?}")));
    }
    let accept = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, value)| value.trim());
    if accept != Some(ACCEPT) {
        return Err(io::Error::other(format!(
            "bad Sec-WebSocket-Accept {accept:?}"
        )));
    }
    Ok(buffer[head_end..].to_vec())
}

/// A single final (FIN) client frame: `opcode`, masked with [`MASK`].
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ MASK[i % 4]),
    );
    frame
}

/// Deterministic payload of `len` bytes (a byte pattern with period 251, so
/// a shifted or truncated echo never compares equal by accident).
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The header of a server frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: u8,
    pub payload_len: u64,
    /// Header length in bytes.
    pub len: usize,
}

/// Parses a server frame header from the start of `bytes`: `Ok(None)` when
/// more bytes are needed, `Err` when the frame is not a valid server frame
/// (masked, or reserved bits set).
pub fn parse_server_header(bytes: &[u8]) -> Result<Option<FrameHeader>, &'static str> {
    if bytes.len() < 2 {
        return Ok(None);
    }
    if bytes[0] & 0x70 != 0 {
        return Err("server frame has reserved bits set");
    }
    if bytes[1] & 0x80 != 0 {
        return Err("server frame is masked");
    }
    let (payload_len, len) = match bytes[1] & 0x7f {
        126 => match bytes.get(2..4) {
            Some(ext) => (u16::from_be_bytes([ext[0], ext[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(ext) => (u64::from_be_bytes(ext.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        short => (short as u64, 2),
    };
    Ok(Some(FrameHeader {
        fin: bytes[0] & 0x80 != 0,
        opcode: bytes[0] & 0x0f,
        payload_len,
        len,
    }))
}
