//! `notebook-load`: the notebook application under load, speaking its
//! Zeppelin protocol (JSON ops over `/ws`). C clients, each bound to one
//! of K notes (`GET_NOTE`, so each watches its note), take turns
//! committing an edit (`COMMIT_PARAGRAPH`) and running it (`RUN_PARAGRAPH`
//! of a `%md` paragraph) on their note's first paragraph, each at a fixed
//! rate with at most one op of its own outstanding. Every paragraph text
//! carries a marker `%md op <client> <seq> <send ns>`, so any `PARAGRAPH`
//! message a client receives says whose op it reflects and when that was
//! sent:
//!
//! * the sender's first `PARAGRAPH` for its op is the op's **reply**
//!   (ops/s and reply latency);
//! * every `PARAGRAPH` reaching another watcher is a **broadcast delivery**
//!   (its latency);
//! * one more connection, bound to nothing, is the **bystander**: it sends
//!   a WebSocket ping every [`BYSTANDER_EVERY`] and times the pong, which
//!   the server answers from its event loop: its p99 shows whether disk
//!   writes or other work stall the loop while the others load it.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

use clap::Args;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::handshake::{self, Dial, OP_PING, OP_PONG, OP_TEXT};
use crate::load::percentile_us;
use crate::sys;

/// How often the bystander pings.
const BYSTANDER_EVERY: Duration = Duration::from_millis(5);
/// The bystander's token.
const BYSTANDER: Token = Token(usize::MAX);
/// Largest server message the load generator accepts.
const MAX_MESSAGE: usize = 16 << 20;
/// The marker every paragraph text starts with.
const MARKER: &[u8] = b"%md op ";

/// `notebook-load` options.
#[derive(Args, Debug, Clone)]
pub struct NotebookLoadConfig {
    /// Notebook server address (`wsloop`, notebook application).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Clients.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Notes the clients are spread over.
    #[arg(long, default_value_t = 1)]
    pub notes: usize,
    /// Ops per second each client sends (commit and run alternate).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Unmeasured warm-up, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// The server's pid: its CPU time and memory are measured.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// What one `notebook-load` run measured (one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NotebookReport {
    pub clients: usize,
    pub notes: usize,
    /// Ops per second asked of each client.
    pub rate: f64,
    pub seconds: f64,
    /// Ops sent in the window, and those whose reply came in it.
    pub ops_sent: u64,
    pub ops_replied: u64,
    pub ops_per_sec: f64,
    /// Ops not sent on time because the client's previous op had no reply yet.
    pub ops_late: u64,
    pub reply_p50_us: Option<f64>,
    pub reply_p99_us: Option<f64>,
    pub reply_max_us: Option<f64>,
    /// `PARAGRAPH` messages reaching watchers other than the sender.
    pub deliveries: u64,
    pub delivery_p50_us: Option<f64>,
    pub delivery_p99_us: Option<f64>,
    /// The bystander's ping → pong round trips.
    pub pings: u64,
    pub ping_p50_us: Option<f64>,
    pub ping_p99_us: Option<f64>,
    pub ping_max_us: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    pub server_user_percent: Option<f64>,
    /// Server CPU per op replied, µs.
    pub server_us_per_op: Option<f64>,
    pub client_cpu_percent: f64,
    pub server_rss_end_bytes: Option<u64>,
    /// Error messages (`ERROR_INFO`, unexpected closes) seen, whole run.
    pub errors: u64,
}

/// Bytes of server frames, cut into whole messages.
#[derive(Default)]
struct Messages {
    buffer: Vec<u8>,
}

impl Messages {
    /// Appends `data` and hands every whole message (opcode, payload) to
    /// `each`.
    fn feed(&mut self, data: &[u8], mut each: impl FnMut(u8, &[u8])) -> Result<(), &'static str> {
        self.buffer.extend_from_slice(data);
        let mut at = 0;
        while let Some(header) = handshake::parse_server_header(&self.buffer[at..])? {
            let Ok(len) = usize::try_from(header.payload_len) else {
                return Err("frame too large");
            };
            if len > MAX_MESSAGE || !header.fin {
                return Err("fragmented or oversized message");
            }
            let end = at + header.len + len;
            if self.buffer.len() < end {
                break;
            }
            each(header.opcode, &self.buffer[at + header.len..end]);
            at = end;
        }
        self.buffer.drain(..at);
        Ok(())
    }
}

/// Reads whole messages from a blocking stream until one has `"op":"<op>"`;
/// returns its payload.
fn wait_for_op(stream: &mut StdStream, messages: &mut Messages, op: &str) -> io::Result<String> {
    let needle = format!("\"op\":\"{op}\"");
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Err(io::Error::other(format!("closed while waiting for {op}")));
        }
        let mut found = None;
        messages
            .feed(&buffer[..n], |opcode, payload| {
                if found.is_none() && opcode == OP_TEXT {
                    let text = String::from_utf8_lossy(payload);
                    if text.contains(&needle) {
                        found = Some(text.into_owned());
                    }
                }
            })
            .map_err(io::Error::other)?;
        if let Some(text) = found {
            return Ok(text);
        }
    }
}

/// A masked text frame of `text`.
fn op_frame(op: &str, data: &str) -> Vec<u8> {
    let text = format!(
        "{{\"op\":\"{op}\",\"data\":{data},\"principal\":\"anonymous\",\"ticket\":\"anonymous\",\"roles\":\"[]\"}}"
    );
    handshake::masked_frame(OP_TEXT, text.as_bytes())
}

/// The marker in a `PARAGRAPH` message: (client, seq, send ns).
fn marker(payload: &[u8]) -> Option<(usize, u64, u64)> {
    let at = payload
        .windows(MARKER.len())
        .position(|window| window == MARKER)?;
    let rest = &payload[at + MARKER.len()..];
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let mut parts = text.split(' ');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// One loading client.
struct Client {
    stream: TcpStream,
    messages: Messages,
    out: VecDeque<u8>,
    paragraph: String,
    next_seq: u64,
    /// The op waiting for its reply: (seq, sent).
    outstanding: Option<u64>,
    next_due: Instant,
    alive: bool,
}

impl Client {
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let (front, _) = self.out.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "client")),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Runs one notebook load measurement.
pub fn run(config: &NotebookLoadConfig) -> io::Result<NotebookReport> {
    if config.clients == 0 || config.notes == 0 || config.rate <= 0.0 {
        return Err(io::Error::other(
            "--clients, --notes and --rate must be positive",
        ));
    }
    sys::raise_nofile_limit()?;
    let dial = Dial {
        addr: config.addr,
        tls: None,
        deflate: false,
        path: "/ws",
    };
    // Setup, blocking: one creator makes the notes; every client binds to
    // its note with GET_NOTE.
    let mut opened = handshake::open_all(&dial, config.clients + 1, 100, |_| {})?;
    let bystander = opened
        .pop()
        .map(|opened| opened.stream)
        .ok_or_else(|| io::Error::other("no bystander"))?;
    let mut notes: Vec<(String, String)> = Vec::with_capacity(config.notes);
    {
        let creator = &mut opened[0].stream;
        let mut messages = Messages::default();
        for index in 0..config.notes {
            creator.write_all(&op_frame(
                "NEW_NOTE",
                &format!("{{\"name\":\"load/note-{index}\"}}"),
            ))?;
            let reply = wait_for_op(creator, &mut messages, "NEW_NOTE")?;
            let reply: serde_json::Value =
                serde_json::from_str(&reply).map_err(io::Error::other)?;
            let note = &reply["data"]["note"];
            let (Some(note), Some(paragraph)) =
                (note["id"].as_str(), note["paragraphs"][0]["id"].as_str())
            else {
                return Err(io::Error::other(format!(
                    "NEW_NOTE reply without ids: {reply}"
                )));
            };
            notes.push((note.to_string(), paragraph.to_string()));
        }
    }
    let poll = Poll::new()?;
    let mut clients = Vec::with_capacity(config.clients);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / config.rate);
    for (index, opened) in opened.into_iter().enumerate() {
        let mut stream = opened.stream;
        let (note, paragraph) = &notes[index % notes.len()];
        stream.write_all(&op_frame("GET_NOTE", &format!("{{\"id\":\"{note}\"}}")))?;
        let mut messages = Messages::default();
        wait_for_op(&mut stream, &mut messages, "NOTE")?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        clients.push(Client {
            stream,
            messages: Messages::default(),
            out: VecDeque::new(),
            paragraph: paragraph.clone(),
            next_seq: 0,
            outstanding: None,
            // Spread the clients' first ops over one interval.
            next_due: start + interval.mul_f64(index as f64 / config.clients as f64),
            alive: true,
        });
    }
    bystander.set_nonblocking(true)?;
    let mut bystander = TcpStream::from_std(bystander);
    poll.registry()
        .register(&mut bystander, BYSTANDER, Interest::READABLE)?;
    let mut bystander_messages = Messages::default();
    let mut next_ping = start;

    let mut poll = poll;
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; 256 * 1024];
    let window_start = Instant::now() + Duration::from_secs_f64(config.warmup);
    let window_end = window_start + Duration::from_secs_f64(config.seconds);
    let now_ns = |at: Instant| at.duration_since(start).as_nanos() as u64;
    let (mut replies, mut deliveries, mut pings) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ops_sent, mut ops_late, mut errors) = (0u64, 0u64, 0u64);
    let mut measuring = false;
    let mut mark = None;
    loop {
        let now = Instant::now();
        if !measuring && now >= window_start {
            measuring = true;
            mark = Some(crate::fanout::Mark::take(config.server_pid));
        }
        if now >= window_end {
            break;
        }
        // Ops due.
        let mut next_wake = now + Duration::from_millis(10);
        for (index, client) in clients.iter_mut().enumerate().filter(|(_, c)| c.alive) {
            if client.next_due <= now {
                if client.outstanding.is_some() {
                    ops_late += u64::from(measuring);
                } else {
                    let seq = client.next_seq;
                    let text = format!("%md op {index} {seq} {}", now_ns(now));
                    let frame = if seq % 2 == 0 {
                        op_frame(
                            "COMMIT_PARAGRAPH",
                            &format!(
                                "{{\"id\":\"{}\",\"title\":\"\",\"paragraph\":\"{text}\",\"config\":{{}},\"params\":{{}}}}",
                                client.paragraph
                            ),
                        )
                    } else {
                        op_frame(
                            "RUN_PARAGRAPH",
                            &format!(
                                "{{\"id\":\"{}\",\"paragraph\":\"{text}\",\"config\":{{}},\"params\":{{}}}}",
                                client.paragraph
                            ),
                        )
                    };
                    client.out.extend(frame);
                    client.outstanding = Some(seq);
                    client.next_seq += 1;
                    ops_sent += u64::from(measuring);
                    if client.flush().is_err() {
                        client.alive = false;
                        errors += 1;
                    }
                }
                client.next_due += interval;
            }
            next_wake = next_wake.min(client.next_due);
        }
        if next_ping <= now {
            let stamp = now_ns(now).to_le_bytes();
            let frame = handshake::masked_frame(OP_PING, &stamp);
            // A 14-byte frame into an idle socket: it goes whole or not at all.
            match bystander.write(&frame) {
                Ok(n) if n == frame.len() => {}
                _ => errors += 1,
            }
            next_ping = now + BYSTANDER_EVERY;
        }
        next_wake = next_wake.min(next_ping);
        poll.poll(
            &mut events,
            Some(next_wake.saturating_duration_since(Instant::now())),
        )?;
        for event in events.iter() {
            if event.token() == BYSTANDER {
                loop {
                    match bystander.read(&mut buffer) {
                        Ok(0) => {
                            errors += 1;
                            break;
                        }
                        Ok(n) => {
                            let received = now_ns(Instant::now());
                            let result =
                                bystander_messages.feed(&buffer[..n], |opcode, payload| {
                                    if opcode == OP_PONG && payload.len() == 8 && measuring {
                                        let sent = u64::from_le_bytes(
                                            payload.try_into().unwrap_or_default(),
                                        );
                                        pings.push(received.saturating_sub(sent));
                                    }
                                });
                            if result.is_err() {
                                errors += 1;
                                break;
                            }
                        }
                        Err(error) if error.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                continue;
            }
            let index = event.token().0;
            let Some(client) = clients.get_mut(index).filter(|c| c.alive) else {
                continue;
            };
            if event.is_writable() && client.flush().is_err() {
                client.alive = false;
                errors += 1;
                continue;
            }
            let failed = loop {
                match client.stream.read(&mut buffer) {
                    Ok(0) => break true,
                    Ok(n) => {
                        let received = now_ns(Instant::now());
                        let outstanding = &mut client.outstanding;
                        let result = client.messages.feed(&buffer[..n], |opcode, payload| {
                            if opcode != OP_TEXT {
                                return;
                            }
                            if payload.windows(12).any(|w| w == b"\"ERROR_INFO\"") {
                                errors += 1;
                                return;
                            }
                            if !payload.starts_with(b"{\"op\":\"PARAGRAPH\"") {
                                return;
                            }
                            let Some((from, seq, sent)) = marker(payload) else {
                                return;
                            };
                            let latency = received.saturating_sub(sent);
                            if from == index {
                                if *outstanding == Some(seq) {
                                    *outstanding = None;
                                    if measuring {
                                        replies.push(latency);
                                    }
                                }
                            } else if measuring {
                                deliveries.push(latency);
                            }
                        });
                        if result.is_err() {
                            break true;
                        }
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break false,
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            if failed {
                client.alive = false;
                errors += 1;
            }
        }
    }
    let seconds = Instant::now().duration_since(window_start).as_secs_f64();
    let ops_replied = replies.len() as u64;
    let measured = mark.map(|mark| mark.since(seconds, ops_replied));
    for samples in [&mut replies, &mut deliveries, &mut pings] {
        samples.sort_unstable();
    }
    Ok(NotebookReport {
        clients: config.clients,
        notes: config.notes,
        rate: config.rate,
        seconds,
        ops_sent,
        ops_replied,
        ops_per_sec: ops_replied as f64 / seconds,
        ops_late,
        reply_p50_us: percentile_us(&replies, 0.5),
        reply_p99_us: percentile_us(&replies, 0.99),
        reply_max_us: percentile_us(&replies, 1.0),
        deliveries: deliveries.len() as u64,
        delivery_p50_us: percentile_us(&deliveries, 0.5),
        delivery_p99_us: percentile_us(&deliveries, 0.99),
        pings: pings.len() as u64,
        ping_p50_us: percentile_us(&pings, 0.5),
        ping_p99_us: percentile_us(&pings, 0.99),
        ping_max_us: percentile_us(&pings, 1.0),
        server_cpu_percent: measured.and_then(|m| m.server_cpu_percent),
        server_user_percent: measured.and_then(|m| m.server_user_percent),
        server_us_per_op: measured.and_then(|m| m.user_us.zip(m.system_us).map(|(u, s)| u + s)),
        client_cpu_percent: measured.map_or(0.0, |m| m.client_cpu_percent),
        server_rss_end_bytes: config
            .server_pid
            .and_then(|pid| sys::vm_rss_bytes(pid).ok()),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_server_json() {
        let message = br#"{"op":"PARAGRAPH","data":{"paragraph":{"id":"p-1","text":"%md op 12 7 123456789","status":"READY"}}}"#;
        assert_eq!(marker(message), Some((12, 7, 123_456_789)));
        assert_eq!(marker(br#"{"text":"%md **hi**"}"#), None);
    }

    #[test]
    fn messages_are_cut_whole_across_reads() {
        let mut wire = Vec::new();
        for text in ["first", "second message"] {
            wire.push(0x81);
            wire.push(text.len() as u8);
            wire.extend_from_slice(text.as_bytes());
        }
        for cut in 0..wire.len() {
            let mut messages = Messages::default();
            let mut seen = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                messages
                    .feed(part, |_, payload| seen.push(payload.to_vec()))
                    .unwrap();
            }
            assert_eq!(
                seen,
                [b"first".to_vec(), b"second message".to_vec()],
                "cut at {cut}"
            );
        }
    }
}
