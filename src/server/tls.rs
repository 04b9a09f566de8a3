//! TLS (wss:// and https://) with rustls: loading the certificate and key,
//! and moving bytes between a non-blocking socket and a connection's TLS
//! state. The loop stays single-threaded: rustls is a sans-IO state machine
//! like the WebSocket core, fed from the same edge-triggered reads.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be used.
#[derive(Debug)]
pub enum TlsSetupError {
    /// The certificate chain file is unreadable or not PEM certificates.
    Certificate(PathBuf, String),
    /// The key file is unreadable or holds no private key.
    Key(PathBuf, String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    Rejected(String),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::Certificate(path, why) => {
                write!(f, "certificate {}: {why}", path.display())
            }
            TlsSetupError::Key(path, why) => write!(f, "private key {}: {why}", path.display()),
            TlsSetupError::Rejected(why) => write!(f, "certificate and key rejected: {why}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// The TLS settings every connection of a server shares.
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// Builds the server's TLS settings from a PEM certificate chain (leaf
/// first) and a PEM private key (PKCS#8, PKCS#1 or SEC1). TLS 1.2 and 1.3,
/// ring's cipher suites; ALPN offers `http/1.1`, what browsers ask for on
/// a wss:// or https:// connection.
pub fn load_tls_config(cert: &Path, key: &Path) -> Result<TlsConfig, TlsSetupError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsSetupError::Certificate(cert.to_owned(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsSetupError::Certificate(
            cert.to_owned(),
            "no PEM certificate in the file".to_owned(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsSetupError::Key(key.to_owned(), e.to_string()))?;
    tls_config_from_der(chain, private_key)
}

/// Builds the server's TLS settings from DER values already in memory.
pub fn tls_config_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rejected(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Rejected(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Outcome of looking at the first byte a client sent to the TLS port.
pub(crate) enum FirstByte {
    /// Nothing has arrived yet.
    NotYet,
    /// A TLS handshake record: go on with TLS.
    Tls,
    /// Something else, most likely plain HTTP: answer in plain text.
    NotTls,
    /// The peer closed before sending anything.
    Closed,
}

/// A socket's TLS state, on a TLS listener: the session and the two
/// facts the driver tracks about it.
#[derive(Debug)]
pub(crate) struct TlsState {
    pub session: ServerConnection,
    /// The first byte was checked to be a TLS handshake record.
    pub checked: bool,
    /// close_notify was queued after the last bytes of a closed
    /// connection.
    pub close_notify_sent: bool,
}

impl TlsState {
    /// A session not yet started.
    pub fn new(session: ServerConnection) -> TlsState {
        TlsState {
            session,
            checked: false,
            close_notify_sent: false,
        }
    }
}

/// Peeks at the first byte without consuming it, so a plain-HTTP client
/// can be told (in plain HTTP) that this port speaks TLS.
pub(crate) fn peek_first_byte(socket: &mio::net::TcpStream) -> io::Result<FirstByte> {
    let mut byte = [0u8; 1];
    match socket.peek(&mut byte) {
        Ok(0) => Ok(FirstByte::Closed),
        Ok(_) if byte[0] == TLS_HANDSHAKE_RECORD => Ok(FirstByte::Tls),
        Ok(_) => Ok(FirstByte::NotTls),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(FirstByte::NotYet),
        Err(e) => Err(e),
    }
}

/// Reads decrypted bytes into `buf`, pulling records from `socket` as
/// needed. `Ok(0)` is the end of the stream (close_notify or TCP EOF);
/// `WouldBlock` means the socket is drained and no plaintext is buffered.
/// A TLS failure is `InvalidData`; the alert it queued goes out with the
/// next [`write_tls`].
pub(crate) fn read_plaintext(
    tls: &mut ServerConnection,
    socket: &mut mio::net::TcpStream,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // TCP closed without close_notify: an end all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        if tls.read_tls(socket)? == 0 {
            return Ok(0);
        }
        if let Err(error) = tls.process_new_packets() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
    }
}

/// Encrypts as much of `plaintext` as rustls buffers and writes records
/// until the socket would block. Returns the plaintext bytes taken.
pub(crate) fn write_tls(
    tls: &mut ServerConnection,
    socket: &mut mio::net::TcpStream,
    plaintext: &[u8],
) -> io::Result<usize> {
    let mut taken = 0;
    loop {
        if taken < plaintext.len() && !tls.is_handshaking() {
            taken += tls.writer().write(&plaintext[taken..])?;
        }
        if !tls.wants_write() {
            return Ok(taken);
        }
        match tls.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
