//! Shared helpers for the integration tests: an in-process server on a free
//! loopback port, and a raw TCP WebSocket client that can send anything.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wsloop::{Handler, Limits, Server, ServerConfig, ShutdownHandle};

/// The default server configuration with `limits` instead of the default
/// limits.
pub fn with_limits(limits: Limits) -> ServerConfig {
    ServerConfig {
        limits,
        ..ServerConfig::default()
    }
}

/// How long any single read in a test may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A server running on its own thread; shut down and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts `handler` on 127.0.0.1 with an OS-chosen port.
    pub fn start<H: Handler + Send + 'static>(mut config: ServerConfig, handler: H) -> TestServer {
        config.listen = "127.0.0.1:0".parse().unwrap();
        let mut server = Server::bind(config, handler).expect("bind");
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run().expect("server loop"));
        TestServer {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    /// An echo server with default settings but `config`'s limits.
    pub fn echo(config: ServerConfig) -> TestServer {
        TestServer::start(config, wsloop::EchoHandler)
    }

    /// Requests a graceful shutdown and waits for the loop to return;
    /// returns how long that took.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.handle.shutdown().unwrap();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread panicked");
        }
        started.elapsed()
    }

    /// Requests a graceful shutdown without waiting for it.
    pub fn request_stop(&self) {
        self.handle.shutdown().unwrap();
    }

    /// Waits for the loop to return (after [`TestServer::request_stop`]).
    pub fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread panicked");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// A valid upgrade request for `path`.
pub fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

/// A masked client frame with first byte `b0` (FIN, RSV, opcode).
pub fn masked_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wsloop::proto::frame::encode_masked_frame(&mut out, b0, [0x11, 0x22, 0x33, 0x44], payload);
    out
}

/// A frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    /// RSV1-3 (RSV1 = 0b100: a compressed message).
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame (1005 when it had none).
    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        if self.payload.len() >= 2 {
            u16::from_be_bytes([self.payload[0], self.payload[1]])
        } else {
            1005
        }
    }
}

/// A WebSocket client over a plain `TcpStream` that can send anything.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A client on an already connected stream (see [`connect_from`]).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects from the loopback address `from` (see [`connect_from`])
    /// and completes an upgrade for `path`.
    pub fn open_from(from: Ipv4Addr, addr: SocketAddr, path: &str) -> RawClient {
        let mut client = RawClient::from_stream(connect_from(from, addr, None));
        client.send_raw(upgrade_request(path, "").as_bytes());
        let (status, head, _) = client.read_response_head();
        assert_eq!(status, 101, "{head}");
        client
    }

    /// Connects and completes an upgrade for `path`.
    pub fn open(addr: SocketAddr, path: &str) -> RawClient {
        let mut client = RawClient::connect(addr);
        client.send_raw(upgrade_request(path, "").as_bytes());
        let (status, head, _) = client.read_response_head();
        assert_eq!(status, 101, "{head}");
        client
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_frame(&mut self, b0: u8, payload: &[u8]) {
        self.send_raw(&masked_frame(b0, payload));
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed (timeout?): {e}"),
        }
    }

    /// Reads an HTTP response head; returns status, head text and any
    /// bytes after it that are already buffered (kept for frame reads).
    pub fn read_response_head(&mut self) -> (u16, String, usize) {
        loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..pos + 4].to_vec()).unwrap();
                self.buf.drain(..pos + 4);
                let status = head[9..12].parse().unwrap();
                return (status, head, self.buf.len());
            }
            assert!(self.fill(), "connection closed before a response head");
        }
    }

    /// Reads a full HTTP response (head and Content-Length body).
    pub fn read_response(&mut self) -> (u16, String, String) {
        let (status, head, _) = self.read_response_head();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("Content-Length");
        while self.buf.len() < length {
            assert!(self.fill(), "connection closed inside the body");
        }
        let body = String::from_utf8(self.buf.drain(..length).collect()).unwrap();
        (status, head, body)
    }

    /// Reads one frame, or `None` at end of stream.
    pub fn read_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if self.buf.len() >= 2 {
                let b0 = self.buf[0];
                let b1 = self.buf[1];
                assert_eq!(b1 & 0x80, 0, "server frames are never masked");
                let (len, header) = match b1 & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if header > 0 && self.buf.len() >= header + len {
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some(ServerFrame {
                        fin: b0 & 0x80 != 0,
                        rsv: (b0 >> 4) & 0b111,
                        opcode: b0 & 0x0F,
                        payload,
                    });
                }
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "stream ended inside a frame");
                return None;
            }
        }
    }

    /// Reads frames until a close frame; returns its code.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            let frame = self
                .read_frame()
                .expect("expected a close frame, got end of stream");
            if frame.opcode == 8 {
                return frame.close_code();
            }
        }
    }

    /// Asserts the server ends the TCP stream (after anything still queued).
    pub fn expect_eof(&mut self) {
        while self.fill() {}
    }
}

/// A running `wsloop` process, killed if the test ends early.
pub struct Wsloop {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Option<JoinHandle<Vec<String>>>,
}

impl Wsloop {
    /// Starts `wsloop ARGS --listen 127.0.0.1:0` under
    /// `sh -c "<prelude> exec wsloop …"` and waits until it listens.
    pub fn start(prelude: &str, args: &[&str]) -> Wsloop {
        let script = format!("{prelude} exec \"$0\" \"$@\" --listen 127.0.0.1:0 --log-level info");
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .arg(env!("CARGO_BIN_EXE_wsloop"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsloop");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("wsloop exited before listening");
            }
            if let Some(rest) = line.split("listening on ws://").nth(1) {
                let address = rest.split(['/', ' ']).next().unwrap();
                break address.parse().unwrap();
            }
        };
        // Keep draining stderr so logging never blocks the server.
        let log = std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect());
        Wsloop {
            child,
            addr,
            log: Some(log),
        }
    }

    /// Sends SIGTERM (asks for a graceful shutdown) and returns at once.
    pub fn send_sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Sends SIGTERM and waits; returns the exit status and the log.
    pub fn terminate(&mut self) -> (ExitStatus, String) {
        self.send_sigterm();
        let status = self.child.wait().unwrap();
        let log = self.log.take().unwrap().join().unwrap().join("\n");
        (status, log)
    }

    /// CPU time (user + system) used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Wsloop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RawClient {
    /// Reads the next frame if one arrives within `wait`; `None` if none does.
    pub fn read_frame_within(&mut self, wait: Duration) -> Option<ServerFrame> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 65536];
        let got = loop {
            if self.has_complete_frame() {
                break true;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break !self.buf.is_empty(),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false;
                }
                Err(e) => panic!("read failed: {e}"),
            }
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        if got { self.read_frame() } else { None }
    }

    fn has_complete_frame(&self) -> bool {
        if self.buf.len() < 2 {
            return false;
        }
        let (len, header) = match self.buf[1] & 0x7F {
            126 if self.buf.len() >= 4 => {
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 if self.buf.len() >= 10 => (
                u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return false,
            n => (n as usize, 2),
        };
        self.buf.len() >= header + len
    }
}

/// A notebook client: JSON text messages over a raw WebSocket.
pub struct JsonClient {
    pub raw: RawClient,
}

impl JsonClient {
    /// Opens `/ws` on `addr`.
    pub fn open(addr: SocketAddr) -> JsonClient {
        JsonClient {
            raw: RawClient::open(addr, "/ws"),
        }
    }

    /// Sends a message exactly as given.
    pub fn send_text(&mut self, text: &str) {
        self.raw.send_frame(0x81, text.as_bytes());
    }

    /// Sends an op with the anonymous envelope.
    pub fn send_op(&mut self, op: &str, data: serde_json::Value) {
        let message = serde_json::json!({
            "op": op, "data": data,
            "principal": "anonymous", "ticket": "anonymous", "roles": "[\"anonymous\"]",
        });
        self.send_text(&message.to_string());
    }

    /// The next JSON message (pings are skipped).
    pub fn recv(&mut self) -> serde_json::Value {
        loop {
            let frame = self.raw.read_frame().expect("a message, got end of stream");
            match frame.opcode {
                1 => return serde_json::from_slice(&frame.payload).expect("JSON text"),
                9 | 10 => continue,
                other => panic!(
                    "unexpected opcode {other}: {:?}",
                    String::from_utf8_lossy(&frame.payload)
                ),
            }
        }
    }

    /// The next message, which must have op `op`; returns its data.
    pub fn expect(&mut self, op: &str) -> serde_json::Value {
        let message = self.recv();
        assert_eq!(message["op"], op, "{message}");
        message["data"].clone()
    }

    /// Asserts nothing arrives for a while.
    pub fn expect_silence(&mut self) {
        if let Some(frame) = self.raw.read_frame_within(Duration::from_millis(300)) {
            panic!(
                "expected no message, got {:?}",
                String::from_utf8_lossy(&frame.payload)
            );
        }
    }
}

/// A TCP connection to `to` from `from`, one of the loopback addresses
/// (all of 127/8 on Linux), so a test can be several client addresses.
/// With `receive_buffer`, the socket's receive buffer is set that small
/// before connecting: a peer that never reads then lets the server's
/// output pile up in the server rather than in this kernel.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr, receive_buffer: Option<usize>) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("{to} is not IPv4");
    };
    // SAFETY: socket(2) takes no pointers; the descriptor it returns is
    // owned by the stream made from it below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is an open socket no one else owns; the stream closes
    // it when dropped, also if an assertion below fails.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if let Some(size) = receive_buffer {
        let size = libc::c_int::try_from(size).unwrap();
        // SAFETY: the option value points at a live c_int and the length
        // passed is its size.
        let result = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(result, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    }
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sockaddr(from, 0);
    // SAFETY: the address points at a live sockaddr_in of `length` bytes.
    let result = unsafe { libc::bind(fd, (&raw const local).cast(), length) };
    assert_eq!(
        result,
        0,
        "bind {from}: {}",
        std::io::Error::last_os_error()
    );
    let remote = sockaddr(*to.ip(), to.port());
    // SAFETY: as for bind.
    let result = unsafe { libc::connect(fd, (&raw const remote).cast(), length) };
    assert_eq!(
        result,
        0,
        "connect {to}: {}",
        std::io::Error::last_os_error()
    );
    stream
}

/// Whether the server closed `stream` without a word (a connection refused
/// at accept): end of stream or a reset within `wait`. Data, or nothing
/// within `wait`, is `false`.
pub fn closed_without_answer(mut stream: &TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    closed
}

/// The value of the metric line `name` (labels included, if any) in the
/// server's `/metrics`; `None` if it has no such line. The server's
/// handler must answer `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let mut client = RawClient::connect(addr);
    client.send_raw(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let (status, _, body) = client.read_response();
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Round trips of a bystander: a WebSocket ping on an open connection to
/// `/ws` every 10 ms until `stop` is set, each timed to its pong. Returns
/// the round-trip times, sorted.
pub fn bystander_round_trips(
    addr: SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<Duration> {
    let mut client = RawClient::open(addr, "/ws");
    let mut times = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let sent = Instant::now();
        client.send_frame(0x89, b"canary");
        loop {
            let frame = client.read_frame().expect("the bystander's pong");
            if frame.opcode == 10 {
                break;
            }
        }
        times.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    times.sort();
    times
}

/// The `q`-quantile (0..=1) of sorted `times`.
pub fn quantile(times: &[Duration], q: f64) -> Duration {
    assert!(!times.is_empty(), "no round trips measured");
    let index = ((times.len() - 1) as f64 * q).round() as usize;
    times[index]
}

/// One plain HTTP request to `addr` (`Host` added, and `Content-Length`
/// when there is a body); returns status, head and body bytes once the
/// server closes the connection.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
    body: Option<&[u8]>,
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let length = body.map_or(String::new(), |body| {
        format!("Content-Length: {}\r\n", body.len())
    });
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{length}{headers}\r\n"
    )
    .unwrap();
    if let Some(body) = body {
        stream.write_all(body).unwrap();
    }
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8(all[..end].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head, all[end..].to_vec())
}

/// The value of header `name` in a response head.
pub fn header_value<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}
