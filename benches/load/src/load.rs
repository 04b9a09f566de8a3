//! The load generator: one thread, one mio `Poll`, N WebSocket connections,
//! exactly K messages in flight on each.
//!
//! Every message is the same pre-built masked binary frame, so sending costs
//! no copying: all frames due on a connection go out in one `writev` of
//! slices of that one buffer. Each echo is parsed from the connection's read
//! buffer as it arrives and its payload compared (memcmp) with what was sent;
//! every completed echo releases one more send. Nothing is counted during the
//! warm-up; the measured window is bracketed by `getrusage` (our CPU) and,
//! when asked, `/proc/PID/stat` of the server.
//!
//! Two variants change the wire, not the loop:
//!
//! * `--tls`: every connection is a rustls `ClientConnection`. Queued frames
//!   go into its writer as one vectored write (rustls cuts records of up to
//!   16 KiB from them), records go out with `write_tls` until the socket
//!   would block; reads run `read_tls` and `process_new_packets` and drain
//!   the plaintext until the socket would block.
//! * `--deflate`: permessage-deflate is negotiated and the one frame sent is
//!   pre-compressed (RSV1); compressed echoes are collected, inflated at FIN
//!   by the connection's inflater and compared with the payload
//!   ([`crate::deflate`]).
//!
//! The plain path does none of this: one branch per read or flush call.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::mem;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;
use serde::{Deserialize, Serialize};

use crate::deflate::{self, EchoInflater};
use crate::handshake::{self, Dial, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_TEXT, RSV1};
use crate::sys;

/// The one read buffer every connection reads into. Payload bytes are
/// verified and dropped as they arrive (only an incomplete frame header is
/// carried to the next read, in the connection's `held`), so one buffer
/// serves all connections and stays hot in this core's cache. At
/// 100 × 256 KiB × 16 it reads an echo in 1.07 `recv`s and the load
/// generator runs at 87-88% of its core; a cold 64 KiB buffer per
/// connection took 3.97 `recv`s per echo, at 92-99%.
const READ_BUFFER: usize = 512 * 1024;
/// Most frames handed to one `writev`.
const MAX_IOV: usize = 64;
/// Connections opened per handshake batch.
const CONNECT_BATCH: usize = 100;
/// Connection errors printed to stderr (the rest are only counted).
const MAX_LOGGED_ERRORS: u64 = 10;

/// What to run (the options of `wsloop-bench load`).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadConfig {
    /// Echo server address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// WebSocket connections to open.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Payload size of every message, in bytes.
    #[arg(long, default_value_t = 20)]
    pub payload: usize,
    /// Messages kept in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Unmeasured warm-up before the window, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Record per-message round-trip times and report p50/p99/p99.9.
    #[arg(long)]
    pub latency: bool,
    /// Also report this process's CPU use over the window (the server's).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Connect with TLS (rustls), trusting only the certificate of --tls-ca
    /// for the name "localhost".
    #[arg(long, requires = "tls_ca")]
    pub tls: bool,
    /// PEM certificate to trust with --tls (the server's self-signed one).
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// Offer permessage-deflate (client_no_context_takeover), fail unless the
    /// server agrees, and send the text payload compressed (implies --text).
    #[arg(long)]
    pub deflate: bool,
    /// Send a JSON-like text payload as text frames instead of the binary
    /// byte pattern.
    #[arg(long)]
    pub text: bool,
}

/// The JSON line `load` prints; also what the orchestrator stores per run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub connections: usize,
    pub payload: usize,
    pub in_flight: usize,
    /// Length of the measured window actually observed, in seconds.
    pub seconds: f64,
    /// Echoes received (and verified) in the window.
    pub messages: u64,
    pub msgs_per_sec: f64,
    /// Payload bytes echoed per second, MB = 10^6 bytes.
    pub mb_per_sec: f64,
    /// Connections lost: handshake failures, resets, wrong echoes, closes.
    pub errors: u64,
    /// Round-trip percentiles in microseconds (with `--latency` only).
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    /// Our user+sys CPU time over the window / window wall time, in percent.
    pub client_cpu_percent: f64,
    /// Of `client_cpu_percent`, the part spent in our own code (the rest
    /// is the kernel's); absent from runs recorded before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_user_percent: Option<f64>,
    /// The server's utime+stime over the window / wall time, in percent
    /// (with `--server-pid` only).
    pub server_cpu_percent: Option<f64>,
    /// Of `server_cpu_percent`, the part spent in the server's own code
    /// (utime); the rest is the kernel working for it (stime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_user_percent: Option<f64>,
    /// Share of the whole machine's CPU time the hypervisor stole during
    /// the window, in percent (`/proc/stat`; 0 on bare metal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal_percent: Option<f64>,
    /// TCP segments retransmitted machine-wide during the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_retransmits: Option<u64>,
    /// TCP segments the kernel dropped on arrival (receive memory)
    /// machine-wide during the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_drops: Option<u64>,
    /// Milliseconds of the window the kernel spent under TCP memory
    /// pressure (`net.ipv4.tcp_mem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_pressure_ms: Option<u64>,
    /// Set by the orchestrator: the steal (percent) of earlier attempts
    /// at this run that were thrown away and taken again because the
    /// hypervisor stole too much during them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retaken_for_steal: Vec<f64>,
    /// Set by the orchestrator when the run itself failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The run used TLS (`--tls`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls: bool,
    /// TLS version and cipher suite the server chose (first connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_suite: Option<String>,
    /// The run used permessage-deflate (`--deflate`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub deflate: bool,
    /// The payload was the JSON-like text, sent as text frames.
    #[serde(default, skip_serializing_if = "is_false")]
    pub text: bool,
    /// With `--deflate`: compressed payload bytes of the message sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_compressed_bytes: Option<usize>,
    /// With `--deflate`: mean compressed payload bytes of the compressed
    /// echoes received in the window (the server takes context over, so
    /// these differ from message to message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_compressed_bytes: Option<f64>,
    /// With `--deflate`: echoes in the window that came back uncompressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_echoes: Option<u64>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Counters shared by all connections.
struct Stats {
    measuring: bool,
    /// Connections still open.
    alive: usize,
    messages: u64,
    errors: u64,
    /// Round-trip times in nanoseconds (only with `--latency`).
    latencies: Vec<u64>,
    /// Compressed echoes and their compressed payload bytes (`--deflate`).
    compressed_echoes: u64,
    compressed_bytes: u64,
}

impl Stats {
    fn error(&mut self, token: usize, what: &dyn std::fmt::Display) {
        if self.errors < MAX_LOGGED_ERRORS {
            eprintln!("connection {token}: {what}");
        }
        self.errors += 1;
    }
}

/// Where the parser is within the server's byte stream.
#[derive(Debug, Clone, Copy)]
enum Parse {
    /// Expecting a frame header.
    Header,
    /// Inside a data frame's payload.
    Data { remaining: u64, fin: bool },
    /// Inside a control frame's payload (ping/pong), which is skipped.
    Skip { remaining: u64 },
}

/// One WebSocket connection of the generator.
struct Conn {
    stream: TcpStream,
    /// The TLS session (`--tls` only).
    tls: Option<Box<ClientConnection>>,
    /// The inflater of compressed echoes (`--deflate` only).
    inflater: Option<Box<EchoInflater>>,
    /// The current echo is compressed (RSV1 on its first frame).
    compressed: bool,
    alive: bool,
    /// The start of a frame header the last read cut off, put back in
    /// front of the next read (at most a header's length).
    held: Vec<u8>,
    parse: Parse,
    /// A data message has started and not finished (fragmented echoes).
    in_message: bool,
    /// Bytes of the current echo verified so far.
    message_offset: usize,
    /// Frames queued and not yet completely written.
    to_send: usize,
    /// Bytes of the first queued frame already written.
    sent_offset: usize,
    /// Messages sent (or queued) whose echo has not arrived.
    awaiting: usize,
    /// Send time of each awaiting message, oldest first (`--latency`).
    sent_at: VecDeque<Instant>,
}

/// The frame to send and the payload every echo must equal.
struct Message {
    frame: Vec<u8>,
    payload: Vec<u8>,
}

/// Runs the generator and returns its report.
pub fn run(config: &LoadConfig) -> io::Result<LoadReport> {
    if config.connections == 0 || config.in_flight == 0 {
        return Err(io::Error::other(
            "--connections and --in-flight must be at least 1",
        ));
    }
    sys::raise_nofile_limit()?;
    let text = config.text || config.deflate;
    let (payload, opcode) = if text {
        (handshake::text_payload(config.payload), OP_TEXT)
    } else {
        (handshake::payload(config.payload), OP_BINARY)
    };
    let (frame, sent_compressed_bytes) = if config.deflate {
        let compressed = deflate::compress_message(&payload)?;
        (
            handshake::masked_frame(opcode | RSV1, &compressed),
            Some(compressed.len()),
        )
    } else {
        (handshake::masked_frame(opcode, &payload), None)
    };
    let message = Message { frame, payload };

    let dial = Dial {
        addr: config.addr,
        tls: match (&config.tls, &config.tls_ca) {
            (true, Some(ca)) => Some(handshake::tls_client_config(ca)?),
            (true, None) => return Err(io::Error::other("--tls needs --tls-ca")),
            (false, _) => None,
        },
        deflate: config.deflate,
        path: "/",
    };
    let opened = handshake::open_all(&dial, config.connections, CONNECT_BATCH, |_| {})?;
    let tls_suite = opened
        .first()
        .and_then(|opened| opened.tls.as_deref())
        .and_then(|tls| {
            Some(format!(
                "{:?} {:?}",
                tls.protocol_version()?,
                tls.negotiated_cipher_suite()?.suite()
            ))
        });
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(opened.len());
    for (index, opened) in opened.into_iter().enumerate() {
        opened.stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(opened.stream);
        poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut conn = Conn::new(stream, opened.leftover);
        conn.tls = opened.tls;
        conn.inflater = config
            .deflate
            .then(|| Box::new(EchoInflater::new(message.payload.len())));
        if config.latency {
            conn.sent_at.reserve(config.in_flight);
        }
        conns.push(conn);
    }

    let mut stats = Stats {
        measuring: false,
        alive: conns.len(),
        messages: 0,
        errors: 0,
        latencies: Vec::with_capacity(if config.latency { 1 << 20 } else { 0 }),
        compressed_echoes: 0,
        compressed_bytes: 0,
    };

    let mut read_buffer = vec![0u8; READ_BUFFER].into_boxed_slice();
    // Fill the pipe: K messages per connection.
    let start = Instant::now();
    for (token, conn) in conns.iter_mut().enumerate() {
        for _ in 0..config.in_flight {
            conn.queue(config.latency, start);
        }
        if let Err(error) = conn.flush(&message.frame) {
            conn.fail(token, &mut stats, &error);
        }
        // Anything that arrived with the handshake response.
        if conn.alive
            && !conn.held.is_empty()
            && let Err(error) = conn.parse_held(&message, config.latency, &mut stats, start)
        {
            conn.fail(token, &mut stats, &error);
        }
        // With TLS, rustls may already hold records or plaintext read
        // during the handshake, which no readiness event will announce.
        if conn.alive
            && conn.tls.is_some()
            && let Err(error) = conn.read(&mut read_buffer, &message, config.latency, &mut stats)
        {
            conn.fail(token, &mut stats, &error);
        }
    }

    // The warm-up counts from the first send (the initial fill of large
    // messages can itself take a while); the window always lasts the full
    // `seconds` from the moment it actually starts.
    let window_start_at = start + Duration::from_secs_f64(config.warmup.max(0.0));
    let window_length = Duration::from_secs_f64(config.seconds.max(0.0));
    type Snapshot = (
        Instant,
        (Duration, Duration),
        Option<(u64, u64)>,
        Option<(u64, u64)>,
        Option<sys::TcpTrouble>,
    );
    let mut window: Option<Snapshot> = None;
    let mut window_end_at: Option<Instant> = None;
    let snapshot = || {
        (
            Instant::now(),
            sys::self_cpu_times(),
            config
                .server_pid
                .and_then(|pid| sys::process_cpu_ticks_split(pid).ok()),
            sys::machine_cpu_ticks().ok(),
            sys::tcp_trouble().ok(),
        )
    };

    let mut events = Events::with_capacity(1024);
    let window_end = loop {
        let now = Instant::now();
        if window.is_none() && now >= window_start_at {
            let opened = snapshot();
            window_end_at = Some(opened.0 + window_length);
            window = Some(opened);
            stats.measuring = true;
        }
        if window_end_at.is_some_and(|end| now >= end) || stats.alive == 0 {
            stats.measuring = false;
            break snapshot();
        }
        let deadline = window_end_at.unwrap_or(window_start_at);
        match poll.poll(&mut events, Some(deadline.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in events.iter() {
            let token = event.token().0;
            let conn = &mut conns[token];
            if !conn.alive {
                continue;
            }
            if (event.is_readable() || event.is_read_closed() || event.is_error())
                && let Err(error) =
                    conn.read(&mut read_buffer, &message, config.latency, &mut stats)
            {
                conn.fail(token, &mut stats, &error);
                continue;
            }
            if conn.wants_flush()
                && let Err(error) = conn.flush(&message.frame)
            {
                conn.fail(token, &mut stats, &error);
            }
        }
    };

    let (started, cpu_start, server_start, machine_start, tcp_start) = window.unwrap_or(window_end);
    let (ended, cpu_end, server_end, machine_end, tcp_end) = window_end;
    let tcp = tcp_start.zip(tcp_end).map(|(start, end)| start.since(end));
    let seconds = ended.duration_since(started).as_secs_f64().max(1e-9);
    stats.latencies.sort_unstable();
    let percentile = |p: f64| percentile_us(&stats.latencies, p).filter(|_| config.latency);
    let (p50_us, p99_us, p999_us) = (percentile(0.50), percentile(0.99), percentile(0.999));
    let ticks_percent = |ticks: u64| ticks as f64 / sys::clock_ticks_per_second() / seconds * 100.0;
    let (server_cpu_percent, server_user_percent) = match (server_start, server_end) {
        (Some((user_a, system_a)), Some((user_b, system_b))) => {
            let user = user_b.saturating_sub(user_a);
            let system = system_b.saturating_sub(system_a);
            (
                Some(ticks_percent(user + system)),
                Some(ticks_percent(user)),
            )
        }
        _ => (None, None),
    };
    let client_user = cpu_end.0.saturating_sub(cpu_start.0).as_secs_f64();
    let client_system = cpu_end.1.saturating_sub(cpu_start.1).as_secs_f64();
    let steal_percent = match (machine_start, machine_end) {
        (Some((steal_a, total_a)), Some((steal_b, total_b))) if total_b > total_a => {
            Some(steal_b.saturating_sub(steal_a) as f64 / (total_b - total_a) as f64 * 100.0)
        }
        _ => None,
    };
    Ok(LoadReport {
        connections: config.connections,
        payload: config.payload,
        in_flight: config.in_flight,
        seconds,
        messages: stats.messages,
        msgs_per_sec: stats.messages as f64 / seconds,
        mb_per_sec: stats.messages as f64 * config.payload as f64 / seconds / 1e6,
        errors: stats.errors,
        p50_us,
        p99_us,
        p999_us,
        client_cpu_percent: (client_user + client_system) / seconds * 100.0,
        client_user_percent: Some(client_user / seconds * 100.0),
        server_cpu_percent,
        server_user_percent,
        steal_percent,
        tcp_retransmits: tcp.map(|tcp| tcp.retransmitted),
        tcp_drops: tcp.map(|tcp| tcp.dropped),
        tcp_pressure_ms: tcp.map(|tcp| tcp.pressure_ms),
        failure: None,
        tls: config.tls,
        tls_suite,
        deflate: config.deflate,
        text,
        sent_compressed_bytes,
        echo_compressed_bytes: (stats.compressed_echoes > 0)
            .then(|| stats.compressed_bytes as f64 / stats.compressed_echoes as f64),
        uncompressed_echoes: config
            .deflate
            .then(|| stats.messages - stats.compressed_echoes),
        retaken_for_steal: Vec::new(),
    })
}

/// The `p` quantile of sorted `samples` (nanoseconds), in microseconds.
pub(crate) fn percentile_us(samples: &[u64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1] as f64 / 1e3)
}

impl Conn {
    /// A plain connection with nothing in flight; `leftover` is what came
    /// after the handshake response.
    fn new(stream: TcpStream, leftover: Vec<u8>) -> Self {
        Conn {
            stream,
            tls: None,
            inflater: None,
            compressed: false,
            alive: true,
            held: leftover,
            parse: Parse::Header,
            in_message: false,
            message_offset: 0,
            to_send: 0,
            sent_offset: 0,
            awaiting: 0,
            sent_at: VecDeque::new(),
        }
    }

    /// Queues one more message (sent by the next [`Conn::flush`]).
    fn queue(&mut self, latency: bool, now: Instant) {
        self.to_send += 1;
        self.awaiting += 1;
        if latency {
            self.sent_at.push_back(now);
        }
    }

    /// Whether [`Conn::flush`] has anything to do: queued frames, or (TLS)
    /// records rustls still holds.
    fn wants_flush(&self) -> bool {
        self.to_send > 0 || self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// Marks `written` more bytes of the queued frames as sent.
    fn advance(&mut self, written: usize, frame_len: usize) {
        let total = self.sent_offset + written;
        self.to_send -= total / frame_len;
        self.sent_offset = total % frame_len;
    }

    /// Writes every queued frame with as few `writev` calls (a `send` for
    /// a single frame) as the socket allows, stopping at `WouldBlock` (the
    /// WRITABLE event resumes it).
    fn flush(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.tls.is_some() {
            return self.flush_tls(frame);
        }
        while self.to_send > 0 {
            let count = self.to_send.min(MAX_IOV);
            let mut slices = [IoSlice::new(frame); MAX_IOV];
            slices[0] = IoSlice::new(&frame[self.sent_offset..]);
            // One frame (every send with one in flight): a plain `send`,
            // which skips the iovec import and file-write hooks of `writev`.
            let result = if count == 1 {
                self.stream.write(&slices[0])
            } else {
                self.stream.write_vectored(&slices[..count])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written, frame.len()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// [`Conn::flush`] over TLS: the queued frames go into rustls as one
    /// vectored write (as much as its buffer limit takes), and its records
    /// are written until the socket would block; a WRITABLE event resumes
    /// while rustls still wants to write.
    fn flush_tls(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            while self.to_send > 0 {
                let count = self.to_send.min(MAX_IOV);
                let mut slices = [IoSlice::new(frame); MAX_IOV];
                slices[0] = IoSlice::new(&frame[self.sent_offset..]);
                let Some(tls) = self.tls.as_mut() else {
                    return Ok(());
                };
                let written = tls.writer().write_vectored(&slices[..count])?;
                if written == 0 {
                    // rustls' buffer is full until records go out.
                    break;
                }
                self.advance(written, frame.len());
            }
            let Some(tls) = self.tls.as_mut() else {
                return Ok(());
            };
            if !tls.wants_write() {
                return Ok(());
            }
            match tls.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads until the socket is drained, verifying and counting echoes as
    /// they complete. A read that returns less than asked drained the
    /// receive queue (edge-triggered: the next arrival raises a new event),
    /// so the read that would end in `WouldBlock` is skipped: it would cost
    /// a syscall per message and make the client the bottleneck.
    fn read(
        &mut self,
        buffer: &mut [u8],
        message: &Message,
        latency: bool,
        stats: &mut Stats,
    ) -> io::Result<()> {
        if self.tls.is_some() {
            return self.read_tls(buffer, message, latency, stats);
        }
        loop {
            let carried = self.put_back_held(buffer);
            let asked = buffer.len() - carried;
            match self.stream.read(&mut buffer[carried..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
                Ok(n) => {
                    // One clock read per read() call, not per message.
                    let now = Instant::now();
                    self.parse(&buffer[..carried + n], message, latency, stats, now)?;
                    if n < asked {
                        return Ok(());
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// [`Conn::read`] over TLS: drains rustls' plaintext into the read
    /// buffer, then reads and decrypts records, until the socket would
    /// block. A short read proves nothing here (a record may be cut in
    /// two), so the read that ends in `WouldBlock` is always made.
    fn read_tls(
        &mut self,
        buffer: &mut [u8],
        message: &Message,
        latency: bool,
        stats: &mut Stats,
    ) -> io::Result<()> {
        loop {
            loop {
                let carried = self.put_back_held(buffer);
                let Some(tls) = self.tls.as_mut() else {
                    return Ok(());
                };
                match tls.reader().read(&mut buffer[carried..]) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "server closed the TLS session",
                        ));
                    }
                    Ok(n) => {
                        let now = Instant::now();
                        self.parse(&buffer[..carried + n], message, latency, stats, now)?;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "server closed the connection without close_notify",
                        ));
                    }
                    Err(error) => return Err(error),
                }
            }
            let Some(tls) = self.tls.as_mut() else {
                return Ok(());
            };
            match tls.read_tls(&mut self.stream) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
                Ok(_) => {
                    tls.process_new_packets()
                        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Copies the held bytes (an incomplete frame header) to the front of
    /// `buffer`, where the next read continues them; returns their length.
    /// They stay held until [`Conn::parse`] replaces them: a read that
    /// brings nothing (`WouldBlock`, or a TLS record still incomplete)
    /// must not lose them, since the next connection's read overwrites
    /// the shared buffer.
    fn put_back_held(&mut self, buffer: &mut [u8]) -> usize {
        let carried = self.held.len();
        buffer[..carried].copy_from_slice(&self.held);
        carried
    }

    /// Parses what the handshake left over (bytes that came with the
    /// server's response).
    fn parse_held(
        &mut self,
        message: &Message,
        latency: bool,
        stats: &mut Stats,
        now: Instant,
    ) -> io::Result<()> {
        let held = mem::take(&mut self.held);
        self.parse(&held, message, latency, stats, now)
    }

    /// Consumes everything parseable in `bytes` (which start with the held
    /// bytes, if any); holds only an incomplete frame header back for the
    /// next read, in place of what was held.
    fn parse(
        &mut self,
        bytes: &[u8],
        message: &Message,
        latency: bool,
        stats: &mut Stats,
        now: Instant,
    ) -> io::Result<()> {
        let mut pos = 0;
        while pos < bytes.len() {
            match self.parse {
                Parse::Header => {
                    let header = match handshake::parse_server_header(&bytes[pos..]) {
                        Ok(Some(header)) => header,
                        Ok(None) => break,
                        Err(what) => return Err(io::Error::other(what)),
                    };
                    pos += header.len;
                    if header.rsv1
                        && (self.inflater.is_none()
                            || self.in_message
                            || !matches!(header.opcode, OP_TEXT | OP_BINARY))
                    {
                        return Err(io::Error::other(
                            "RSV1 set without permessage-deflate or not on a message's first frame",
                        ));
                    }
                    match header.opcode {
                        OP_TEXT | OP_BINARY if !self.in_message => {
                            self.in_message = true;
                            self.message_offset = 0;
                            self.compressed = header.rsv1;
                            if let (true, Some(inflater)) = (header.rsv1, &mut self.inflater) {
                                inflater.start();
                            }
                        }
                        OP_CONTINUATION if self.in_message => {}
                        OP_CLOSE => return Err(io::Error::other("server sent a close frame")),
                        opcode if opcode >= 0x8 => {
                            self.parse = Parse::Skip {
                                remaining: header.payload_len,
                            };
                            continue;
                        }
                        opcode => {
                            return Err(io::Error::other(format!("unexpected opcode {opcode:#x}")));
                        }
                    }
                    self.parse = Parse::Data {
                        remaining: header.payload_len,
                        fin: header.fin,
                    };
                    if header.payload_len == 0 {
                        self.end_frame(header.fin, message, latency, stats, now)?;
                    }
                }
                Parse::Data { remaining, fin } => {
                    let take = (remaining.min((bytes.len() - pos) as u64)) as usize;
                    if self.compressed {
                        // Collected here, inflated and compared at FIN.
                        if let Some(inflater) = &mut self.inflater {
                            inflater
                                .push(&bytes[pos..pos + take])
                                .map_err(io::Error::other)?;
                        }
                    } else {
                        let end = self.message_offset + take;
                        if end > message.payload.len() {
                            return Err(io::Error::other("echo longer than the message sent"));
                        }
                        if bytes[pos..pos + take] != message.payload[self.message_offset..end] {
                            return Err(io::Error::other(
                                "echo payload differs from the message sent",
                            ));
                        }
                        self.message_offset = end;
                    }
                    pos += take;
                    let remaining = remaining - take as u64;
                    self.parse = Parse::Data { remaining, fin };
                    if remaining == 0 {
                        self.end_frame(fin, message, latency, stats, now)?;
                    }
                }
                Parse::Skip { remaining } => {
                    let take = remaining.min((bytes.len() - pos) as u64);
                    pos += take as usize;
                    self.parse = if take == remaining {
                        Parse::Header
                    } else {
                        Parse::Skip {
                            remaining: remaining - take,
                        }
                    };
                }
            }
        }
        self.held.clear();
        self.held.extend_from_slice(&bytes[pos..]);
        Ok(())
    }

    /// A data frame's payload is complete; on FIN the echo is complete too.
    fn end_frame(
        &mut self,
        fin: bool,
        message: &Message,
        latency: bool,
        stats: &mut Stats,
        now: Instant,
    ) -> io::Result<()> {
        self.parse = Parse::Header;
        if !fin {
            return Ok(());
        }
        if self.compressed {
            let Some(inflater) = &mut self.inflater else {
                return Err(io::Error::other("compressed echo without an inflater"));
            };
            let compressed = inflater
                .finish(&message.payload)
                .map_err(io::Error::other)?;
            if stats.measuring {
                stats.compressed_echoes += 1;
                stats.compressed_bytes += compressed as u64;
            }
        } else if self.message_offset != message.payload.len() {
            return Err(io::Error::other("echo shorter than the message sent"));
        }
        if self.awaiting == 0 {
            return Err(io::Error::other("echo of a message never sent"));
        }
        self.in_message = false;
        self.message_offset = 0;
        self.compressed = false;
        self.awaiting -= 1;
        let sent = self.sent_at.pop_front();
        if stats.measuring {
            stats.messages += 1;
            if let (true, Some(sent)) = (latency, sent) {
                stats
                    .latencies
                    .push(now.duration_since(sent).as_nanos() as u64);
            }
        }
        // Keep exactly K in flight: every echo releases the next message.
        self.queue(latency, now);
        Ok(())
    }

    /// Drops a broken connection and counts it as an error.
    fn fail(&mut self, token: usize, stats: &mut Stats, error: &io::Error) {
        stats.error(token, error);
        stats.alive -= 1;
        self.alive = false;
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: the load generator's end (mio,
    /// nonblocking) and a std socket playing the server.
    fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        (TcpStream::from_std(client), server)
    }

    fn stats() -> Stats {
        Stats {
            measuring: true,
            alive: 1,
            messages: 0,
            errors: 0,
            latencies: Vec::new(),
            compressed_echoes: 0,
            compressed_bytes: 0,
        }
    }

    /// Reads until the echo is counted or a second has passed.
    fn read_until_counted(
        conn: &mut Conn,
        buffer: &mut [u8],
        message: &Message,
        stats: &mut Stats,
    ) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while stats.messages == 0 && Instant::now() < deadline {
            conn.read(buffer, message, false, stats).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_header_cut_by_a_read_survives_a_read_that_brings_nothing() {
        let (stream, mut server) = pair();
        let payload = handshake::payload(300);
        let message = Message {
            frame: handshake::masked_frame(OP_BINARY, &payload),
            payload: payload.clone(),
        };
        // The server's echo: unmasked, a 16-bit length (4-byte header).
        let mut echo = vec![0x80 | OP_BINARY, 126, 1, 44];
        echo.extend_from_slice(&payload);
        let mut conn = Conn::new(stream, Vec::new());
        conn.queue(false, Instant::now());
        let mut stats = stats();
        let mut buffer = vec![0u8; 1024];

        // Two bytes of the header arrive and are read.
        server.write_all(&echo[..2]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        while conn.held.is_empty() && Instant::now() < deadline {
            conn.read(&mut buffer, &message, false, &mut stats).unwrap();
        }
        assert_eq!(conn.held, echo[..2]);
        // A read with nothing to read; meanwhile another connection
        // reads into the shared buffer.
        conn.read(&mut buffer, &message, false, &mut stats).unwrap();
        buffer.fill(0xAA);
        assert_eq!(conn.held, echo[..2]);
        // The rest arrives: the echo is whole and counted.
        server.write_all(&echo[2..]).unwrap();
        read_until_counted(&mut conn, &mut buffer, &message, &mut stats);
        assert_eq!(stats.messages, 1);
        assert_eq!(stats.errors, 0);
        assert!(conn.held.is_empty());
        assert_eq!(conn.awaiting, 1, "the echo released the next message");
    }

    #[test]
    fn echoes_split_anywhere_across_reads_are_all_verified() {
        let payload = handshake::payload(70_000);
        let message = Message {
            frame: handshake::masked_frame(OP_BINARY, &payload),
            payload: payload.clone(),
        };
        // 64-bit length (10-byte header), then a 20 B one (2-byte header).
        let mut echo = vec![0x80 | OP_BINARY, 127];
        echo.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        echo.extend_from_slice(&payload);
        for cut in [1, 5, 9, 10, 11, 40_000] {
            let (stream, mut server) = pair();
            let mut conn = Conn::new(stream, echo[..cut.min(3)].to_vec());
            conn.queue(false, Instant::now());
            let mut stats = stats();
            let mut buffer = vec![0u8; 4096];
            conn.parse_held(&message, false, &mut stats, Instant::now())
                .unwrap();
            let sent = cut.min(3);
            server.write_all(&echo[sent..cut]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            conn.read(&mut buffer, &message, false, &mut stats).unwrap();
            conn.read(&mut buffer, &message, false, &mut stats).unwrap();
            server.write_all(&echo[cut..]).unwrap();
            read_until_counted(&mut conn, &mut buffer, &message, &mut stats);
            assert_eq!((stats.messages, stats.errors), (1, 0), "cut at {cut}");
        }
    }
}
