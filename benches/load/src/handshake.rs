//! Client side of the WebSocket protocol shared by `load` and `idle`: the
//! opening handshake (done in blocking mode, in batches, optionally over TLS
//! and offering permessage-deflate), building masked client frames and
//! parsing the headers of the server's unmasked frames.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

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
/// RSV1 in the first byte of a frame: with permessage-deflate, "this
/// message is compressed" (RFC 7692 §6).
pub const RSV1: u8 = 0x40;

/// The extension offer of `--deflate`: the client resets its compressor
/// after every message, so one pre-compressed frame serves every send.
const DEFLATE_OFFER: &str = "permessage-deflate; client_no_context_takeover";
/// Name the TLS server certificate is checked against.
pub const TLS_SERVER_NAME: &str = "localhost";

/// Largest response head we accept before giving up.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// Connect, write and read timeout during the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the server and what to ask of it.
#[derive(Clone)]
pub struct Dial {
    /// Server address.
    pub addr: SocketAddr,
    /// Speak TLS with these settings (server name [`TLS_SERVER_NAME`]).
    pub tls: Option<Arc<ClientConfig>>,
    /// Offer permessage-deflate and fail unless the server agrees.
    pub deflate: bool,
    /// Request target of the upgrade (`/ws` for the notebook).
    pub path: &'static str,
}

impl Dial {
    /// Plain TCP, no extensions.
    pub fn plain(addr: SocketAddr) -> Dial {
        Dial {
            addr,
            tls: None,
            deflate: false,
            path: "/",
        }
    }
}

/// TLS client settings that trust exactly the PEM certificate(s) in
/// `ca_file` (the benchmark's self-signed certificate): rustls with the
/// ring provider, TLS 1.2 and 1.3, ALPN `http/1.1` as a browser sends it.
pub fn tls_client_config(ca_file: &Path) -> io::Result<Arc<ClientConfig>> {
    let context = |what: &str, error: &dyn std::fmt::Display| {
        io::Error::other(format!("{}: {what}: {error}", ca_file.display()))
    };
    let mut roots = RootCertStore::empty();
    let certificates =
        CertificateDer::pem_file_iter(ca_file).map_err(|error| context("read", &error))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|error| context("parse", &error))?;
        roots
            .add(certificate)
            .map_err(|error| context("certificate", &error))?;
    }
    if roots.is_empty() {
        return Err(context("certificate", &"no PEM certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An upgraded connection, still in blocking mode.
pub struct Opened {
    pub stream: TcpStream,
    /// The TLS session (with [`Dial::tls`]), handshake done; it may hold
    /// received records or plaintext that have not been read yet.
    pub tls: Option<Box<ClientConnection>>,
    /// Bytes that arrived after the response head (normally none).
    pub leftover: Vec<u8>,
}

/// Opens `count` WebSocket connections to `dial.addr`, `batch` at a time:
/// each batch is connected and sent its upgrade requests before any
/// response is read, so at most `batch` connections wait in the listen
/// backlog. With TLS each connection's TLS handshake completes before its
/// request is sent. `progress` is called with the running total after each
/// batch.
pub fn open_all(
    dial: &Dial,
    count: usize,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> io::Result<Vec<Opened>> {
    let addr = dial.addr;
    let extensions = if dial.deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    let path = dial.path;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
    );
    let server_name = ServerName::try_from(TLS_SERVER_NAME).map_err(io::Error::other)?;
    let mut opened = Vec::with_capacity(count);
    while opened.len() < count {
        let size = batch.max(1).min(count - opened.len());
        let mut pending = Vec::with_capacity(size);
        for _ in 0..size {
            let index = opened.len() + pending.len();
            let labelled = |step: &str, error: io::Error| {
                io::Error::new(error.kind(), format!("connection {index}: {step}: {error}"))
            };
            let mut stream = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)
                .map_err(|error| labelled("connect", error))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
            stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
            let tls = match &dial.tls {
                Some(config) => {
                    let mut tls = Box::new(
                        ClientConnection::new(config.clone(), server_name.clone())
                            .map_err(|error| labelled("tls", io::Error::other(error)))?,
                    );
                    // Blocking: the TLS handshake completes before the
                    // request goes out.
                    let mut tls_stream = rustls::Stream::new(&mut *tls, &mut stream);
                    tls_stream
                        .write_all(request.as_bytes())
                        .and_then(|()| tls_stream.flush())
                        .map_err(|error| labelled("tls", error))?;
                    Some(tls)
                }
                None => {
                    (&stream).write_all(request.as_bytes())?;
                    None
                }
            };
            pending.push((stream, tls));
        }
        for (mut stream, mut tls) in pending {
            let index = opened.len();
            let response = match &mut tls {
                Some(tls) => read_response(&mut rustls::Stream::new(&mut **tls, &mut stream)),
                None => read_response(&mut &stream),
            };
            let leftover = response
                .and_then(|(leftover, extensions)| {
                    check_extensions(&extensions, dial.deflate).map_err(io::Error::other)?;
                    Ok(leftover)
                })
                .map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("connection {index}: handshake: {error}"),
                    )
                })?;
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            opened.push(Opened {
                stream,
                tls,
                leftover,
            });
        }
        progress(opened.len());
    }
    Ok(opened)
}

/// Reads the response head, checks for `101` and the right accept value,
/// and returns whatever followed the head and the values of every
/// `Sec-WebSocket-Extensions` header.
fn read_response(stream: &mut impl Read) -> io::Result<(Vec<u8>, Vec<String>)> {
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
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let accept = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, value)| *value);
    if accept != Some(ACCEPT) {
        return Err(io::Error::other(format!(
            "bad Sec-WebSocket-Accept {accept:?}"
        )));
    }
    let extensions = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, value)| value.to_string())
        .collect();
    Ok((buffer[head_end..].to_vec(), extensions))
}

/// Checks the server's `Sec-WebSocket-Extensions` answer against our
/// offer: nothing when we offered nothing; with `deflate`, exactly
/// permessage-deflate with parameters a client offering
/// [`DEFLATE_OFFER`] can accept (RFC 7692 §7.1).
fn check_extensions(values: &[String], deflate: bool) -> Result<(), String> {
    let extensions: Vec<&str> = values
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|extension| !extension.is_empty())
        .collect();
    if !deflate {
        return match extensions.first() {
            None => Ok(()),
            Some(extension) => Err(format!(
                "server answered an extension not offered: {extension:?}"
            )),
        };
    }
    let [extension] = extensions[..] else {
        return Err(if extensions.is_empty() {
            "server did not agree to permessage-deflate".to_string()
        } else {
            format!("server answered several extensions: {extensions:?}")
        });
    };
    let mut parts = extension.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return Err(format!(
            "server answered an extension not offered: {name:?}"
        ));
    }
    for parameter in parts {
        let (key, value) = match parameter.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim().trim_matches('"'))),
            None => (parameter, None),
        };
        let valid = match (key.to_ascii_lowercase().as_str(), value) {
            ("client_no_context_takeover" | "server_no_context_takeover", None) => true,
            // Our inflater's 15-bit window covers any smaller server window.
            ("server_max_window_bits", Some(bits)) => bits
                .parse::<u8>()
                .is_ok_and(|bits| (8..=15).contains(&bits)),
            _ => false,
        };
        if !valid {
            return Err(format!(
                "server answered a permessage-deflate parameter we cannot accept: {parameter:?}"
            ));
        }
    }
    Ok(())
}

/// A single final (FIN) client frame: `opcode` (which may carry [`RSV1`]),
/// masked with [`MASK`].
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

/// Words the text payload is made of.
const WORDS: [&str; 48] = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "notebook",
    "paragraph",
    "status",
    "running",
    "finished",
    "pending",
    "error",
    "result",
    "table",
    "chart",
    "query",
    "select",
    "from",
    "where",
    "order",
    "limit",
    "user",
    "admin",
    "reader",
    "writer",
    "draft",
    "shared",
];
/// Values of the `status` field.
const STATUSES: [&str; 4] = ["READY", "PENDING", "RUNNING", "FINISHED"];

/// A small linear congruential generator (Knuth's MMIX constants): the
/// same sequence on every run and machine.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, bound: usize) -> usize {
        self.next() as usize % bound
    }

    fn word(&mut self) -> &'static str {
        WORDS[self.below(WORDS.len())]
    }
}

/// Deterministic JSON-like text of exactly `len` ASCII bytes: an array of
/// records (ids, timestamps, names, tags, a sentence) drawn from a small
/// vocabulary, cut at `len`. It compresses about as well as real JSON
/// does (3-5× with deflate), unlike [`payload`], which is either
/// incompressible or trivially so depending on the window.
pub fn text_payload(len: usize) -> Vec<u8> {
    let mut rng = Lcg(0x5eed_1234_abcd_0042);
    let mut text = String::with_capacity(len + 512);
    text.push('[');
    let mut id = 1000 + rng.below(9000);
    while text.len() < len {
        if text.len() > 1 {
            text.push(',');
        }
        id += 1 + rng.below(20);
        let _ = write!(
            text,
            r#"{{"id":{id},"user":"{}.{}","status":"{}","updated":"2024-{:02}-{:02}T{:02}:{:02}:{:02}Z","score":{}.{:03},"count":{},"enabled":{},"tags":["{}","{}"],"text":""#,
            rng.word(),
            rng.word(),
            STATUSES[rng.below(STATUSES.len())],
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(100),
            rng.below(1000),
            rng.below(500),
            rng.below(2) == 0,
            rng.word(),
            rng.word(),
        );
        for index in 0..4 + rng.below(8) {
            if index > 0 {
                text.push(' ');
            }
            text.push_str(rng.word());
        }
        text.push_str(r#""}"#);
    }
    text.push(']');
    text.truncate(len);
    text.into_bytes()
}

/// The header of a server frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1: a compressed message, valid only on the first frame of a data
    /// message and only when permessage-deflate was agreed (the caller checks).
    pub rsv1: bool,
    pub opcode: u8,
    pub payload_len: u64,
    /// Header length in bytes.
    pub len: usize,
}

/// Parses a server frame header from the start of `bytes`: `Ok(None)` when
/// more bytes are needed, `Err` when the frame is not a valid server frame
/// (masked, or RSV2/RSV3 set; RSV1 is reported in [`FrameHeader::rsv1`]).
pub fn parse_server_header(bytes: &[u8]) -> Result<Option<FrameHeader>, &'static str> {
    if bytes.len() < 2 {
        return Ok(None);
    }
    if bytes[0] & 0x30 != 0 {
        return Err("server frame has RSV2 or RSV3 set");
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
        rsv1: bytes[0] & RSV1 != 0,
        opcode: bytes[0] & 0x0f,
        payload_len,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[&str], deflate: bool) -> Result<(), String> {
        let values: Vec<String> = values.iter().map(|value| value.to_string()).collect();
        check_extensions(&values, deflate)
    }

    #[test]
    fn extension_answers_are_checked_against_the_offer() {
        assert!(check(&[], false).is_ok());
        assert!(check(&["permessage-deflate"], false).is_err());
        assert!(check(&[], true).is_err(), "declined");
        assert!(check(&["permessage-deflate; client_no_context_takeover"], true).is_ok());
        assert!(check(&["permessage-deflate"], true).is_ok());
        assert!(
            check(
                &["permessage-deflate; server_no_context_takeover; server_max_window_bits=\"10\""],
                true
            )
            .is_ok()
        );
        assert!(check(&["permessage-deflate; client_max_window_bits=10"], true).is_err());
        assert!(check(&["permessage-deflate; server_max_window_bits=16"], true).is_err());
        assert!(check(&["permessage-deflate", "permessage-deflate"], true).is_err());
        assert!(check(&["x-webkit-deflate-frame"], true).is_err());
    }
}
