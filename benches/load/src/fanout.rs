//! `fanout`: the broadcast load generator. One publisher and N subscriber
//! connections to a server that relays every message to every other
//! connection (wsloop's `examples/broadcast.rs`, `serve-broadcast`, Node
//! `ws`). One thread, one mio `Poll`, like `load`.
//!
//! Every published message is a binary frame whose payload starts with its
//! sequence number and its send time (nanoseconds since the run began,
//! both little-endian `u64`); the rest is filler. A subscriber parses only
//! those 16 bytes of each delivery and skips the rest, so the load
//! generator's cost per delivery stays small. Delivery latency is receive
//! time − send time, on the one clock of this process.
//!
//! Two ways to publish: at a fixed `--rate` (messages per second, on a
//! timer, catching up when late), or flat out: at most `--window`
//! messages not yet delivered to every reading subscriber (a message
//! undelivered after [`GIVE_UP`] stops counting against the window).
//! With `--slow-every K` one subscriber in K never reads (it is not even
//! registered with the poll): the server's queue to it grows, and the
//! report shows the others' latency and the server's resident memory.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::handshake::{self, Dial, MASK, OP_BINARY};
use crate::load::percentile_us;
use crate::sys;

/// Bytes at the start of every payload: sequence number and send time.
const STAMP: usize = 16;
/// Longest server frame header (10) plus the stamp.
const HEAD: usize = 10 + STAMP;
/// A message not delivered to every reading subscriber by then no longer
/// holds a place in the flat-out window.
const GIVE_UP: Duration = Duration::from_secs(1);
/// How often the server's resident memory is sampled during the window.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// Shared read buffer, as in `load`.
const READ_BUFFER: usize = 256 * 1024;

/// `fanout` options.
#[derive(Args, Debug, Clone)]
pub struct FanoutConfig {
    /// Broadcast server address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Subscriber connections (the publisher is one more).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Messages published per second; 0 publishes flat out (see --window).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Flat out: messages published but not yet delivered to every reading
    /// subscriber, at most.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// One subscriber in this many never reads (0: all read).
    #[arg(long, default_value_t = 0)]
    pub slow_every: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Unmeasured warm-up, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// The server's pid: its CPU time and resident memory are measured.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// What one `fanout` run measured (one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutReport {
    pub subscribers: usize,
    /// Of `subscribers`, those that never read.
    pub slow_subscribers: usize,
    pub payload: usize,
    /// Messages per second asked for; `None` flat out.
    pub rate: Option<f64>,
    /// Flat out: the window.
    pub window: Option<usize>,
    /// Length of the measured window actually observed, seconds.
    pub seconds: f64,
    /// Messages published in the window.
    pub published: u64,
    /// Messages received by reading subscribers in the window.
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    /// Sequence numbers a reading subscriber never got (gaps), whole run.
    pub lost: u64,
    /// Reading subscribers the server closed or that failed, whole run.
    pub errors: u64,
    /// Delivery latency percentiles (publisher send → subscriber receive), µs.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    /// Server utime+stime over the window / wall time, percent.
    pub server_cpu_percent: Option<f64>,
    /// Of it, the server's own code (utime), percent.
    pub server_user_percent: Option<f64>,
    /// Server CPU per delivery, user and system, µs.
    pub server_user_us_per_delivery: Option<f64>,
    pub server_system_us_per_delivery: Option<f64>,
    /// The load generator's CPU over the window / wall time, percent.
    pub client_cpu_percent: f64,
    /// Server `VmRSS` at the window's start, its peak (sampled every
    /// 100 ms) and at its end, bytes.
    pub server_rss_start_bytes: Option<u64>,
    pub server_rss_peak_bytes: Option<u64>,
    pub server_rss_end_bytes: Option<u64>,
    /// Share of the machine's CPU the hypervisor stole during the window.
    pub steal_percent: Option<f64>,
}

/// One subscriber.
struct Subscriber {
    stream: TcpStream,
    frames: Frames,
    /// Reading, and not failed.
    alive: bool,
}

/// A subscriber's parse state: deliveries are cut from its bytes across
/// reads.
#[derive(Debug, Clone, Copy)]
struct Frames {
    /// Header and stamp bytes of the frame being read.
    head: [u8; HEAD],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
}

impl Frames {
    fn new() -> Frames {
        Frames {
            head: [0; HEAD],
            have: 0,
            skip: 0,
        }
    }
}

/// A delivery parsed from a subscriber's bytes: (sequence, send time ns).
type Delivery = (u64, u64);

impl Frames {
    /// Parses `data`, calling `deliver` for every whole stamp.
    fn parse(
        &mut self,
        mut data: &[u8],
        mut deliver: impl FnMut(Delivery),
    ) -> Result<(), &'static str> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let before = self.have;
            let take = data.len().min(HEAD - self.have);
            self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            let Some(header) = handshake::parse_server_header(&self.head[..self.have])? else {
                data = &data[take..];
                continue;
            };
            if header.opcode != OP_BINARY || !header.fin || header.rsv1 {
                return Err("not a whole binary message");
            }
            if header.payload_len < STAMP as u64 {
                return Err("payload shorter than its stamp");
            }
            let needed = header.len + STAMP;
            if self.have < needed {
                data = &data[take..];
                continue;
            }
            let stamp = &self.head[header.len..needed];
            let word =
                |at: usize| u64::from_le_bytes(stamp[at..at + 8].try_into().unwrap_or_default());
            deliver((word(0), word(8)));
            data = &data[needed - before..];
            self.have = 0;
            self.skip = header.payload_len - STAMP as u64;
        }
        Ok(())
    }
}

/// The publisher: frames queued and how far they are written.
struct Publisher {
    stream: TcpStream,
    out: Vec<u8>,
    written: usize,
    /// The filler after the stamp, masked once (its mask phase is fixed
    /// because the stamp's length is a multiple of 4).
    masked_filler: Vec<u8>,
    payload: usize,
    next_seq: u64,
}

impl Publisher {
    /// Queues message `next_seq`, stamped `now_ns`.
    fn queue(&mut self, now_ns: u64) {
        let len = self.payload;
        self.out.push(0x80 | OP_BINARY);
        match len {
            0..=125 => self.out.push(0x80 | len as u8),
            126..=65535 => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(&MASK);
        let mut stamp = [0u8; STAMP];
        stamp[..8].copy_from_slice(&self.next_seq.to_le_bytes());
        stamp[8..].copy_from_slice(&now_ns.to_le_bytes());
        self.out
            .extend(stamp.iter().enumerate().map(|(i, byte)| byte ^ MASK[i % 4]));
        self.out.extend_from_slice(&self.masked_filler);
        self.next_seq += 1;
    }

    /// Writes what is queued until done or the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "publisher")),
                Ok(n) => self.written += n,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(())
    }

    fn blocked(&self) -> bool {
        !self.out.is_empty()
    }
}

/// Messages published and not yet delivered to every reading subscriber.
struct Outstanding {
    /// Sequence number of the front entry.
    base: u64,
    /// Per message: deliveries so far and publish time.
    entries: VecDeque<(usize, Instant)>,
}

impl Outstanding {
    fn delivered(&mut self, seq: u64) {
        if let Some(entry) = seq
            .checked_sub(self.base)
            .and_then(|index| self.entries.get_mut(index as usize))
        {
            entry.0 += 1;
        }
    }

    /// Drops complete (or given-up) messages from the front.
    fn settle(&mut self, readers: usize, now: Instant) {
        while let Some(&(count, sent)) = self.entries.front() {
            if count < readers && now.duration_since(sent) < GIVE_UP {
                break;
            }
            self.entries.pop_front();
            self.base += 1;
        }
    }
}

const PUBLISHER: Token = Token(usize::MAX);

/// Runs one fan-out measurement.
pub fn run(config: &FanoutConfig) -> io::Result<FanoutReport> {
    if config.subscribers == 0 || config.payload < STAMP || config.window == 0 {
        return Err(io::Error::other(
            "--subscribers and --window must be at least 1, --payload at least 16",
        ));
    }
    sys::raise_nofile_limit()?;
    let dial = Dial {
        addr: config.addr,
        tls: None,
        deflate: false,
        path: "/",
    };
    let mut opened = handshake::open_all(&dial, config.subscribers + 1, 100, |_| {})?;
    let poll = Poll::new()?;
    let publisher_stream = opened.remove(0).stream;
    publisher_stream.set_nonblocking(true)?;
    let mut publisher_stream = TcpStream::from_std(publisher_stream);
    poll.registry()
        .register(&mut publisher_stream, PUBLISHER, Interest::WRITABLE)?;
    let filler: Vec<u8> = handshake::payload(config.payload - STAMP);
    let mut publisher = Publisher {
        stream: publisher_stream,
        out: Vec::with_capacity(64 * 1024),
        written: 0,
        masked_filler: filler
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ MASK[(STAMP + i) % 4])
            .collect(),
        payload: config.payload,
        next_seq: 0,
    };
    let mut subscribers = Vec::with_capacity(config.subscribers);
    // Per subscriber: the next sequence number it should get.
    let mut expected: Vec<u64> = Vec::with_capacity(config.subscribers);
    let mut slow = 0;
    for (index, opened) in opened.into_iter().enumerate() {
        opened.stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(opened.stream);
        let is_slow = config.slow_every > 0 && (index + 1) % config.slow_every == 0;
        if is_slow {
            slow += 1;
        } else {
            poll.registry()
                .register(&mut stream, Token(index), Interest::READABLE)?;
        }
        subscribers.push(Subscriber {
            stream,
            frames: Frames::new(),
            alive: !is_slow,
        });
        expected.push(0u64);
    }
    let mut readers = config.subscribers - slow;
    let mut poll = poll;
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; READ_BUFFER];

    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(config.warmup);
    let window_end = window_start + Duration::from_secs_f64(config.seconds);
    let mut outstanding = Outstanding {
        base: 0,
        entries: VecDeque::new(),
    };
    let mut next_due = start;
    let interval = (config.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / config.rate));
    let mut samples: Vec<u64> = Vec::new();
    let (mut deliveries, mut published, mut lost, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut measuring = false;
    let mut mark: Option<Mark> = None;
    let mut rss_peak: Option<u64> = None;
    let mut rss_start = None;
    let mut next_rss = window_start;

    loop {
        let now = Instant::now();
        if !measuring && now >= window_start {
            measuring = true;
            mark = Some(Mark::take(config.server_pid));
            rss_start = config
                .server_pid
                .and_then(|pid| sys::vm_rss_bytes(pid).ok());
            rss_peak = rss_start;
        }
        if now >= window_end {
            break;
        }
        if measuring && now >= next_rss {
            if let Some(rss) = config
                .server_pid
                .and_then(|pid| sys::vm_rss_bytes(pid).ok())
            {
                rss_peak = Some(rss_peak.map_or(rss, |peak| peak.max(rss)));
            }
            next_rss = now + RSS_EVERY;
        }
        // Publish what is due.
        outstanding.settle(readers, now);
        let now_ns = |at: Instant| at.duration_since(start).as_nanos() as u64;
        match interval {
            Some(interval) => {
                while next_due <= now && publisher.out.len() < 1 << 20 {
                    publisher.queue(now_ns(now));
                    published += u64::from(measuring);
                    next_due += interval;
                }
            }
            None => {
                while !publisher.blocked() && outstanding.entries.len() < config.window {
                    publisher.queue(now_ns(now));
                    outstanding.entries.push_back((0, now));
                    published += u64::from(measuring);
                }
            }
        }
        publisher.flush()?;
        let timeout = match interval {
            Some(_) => next_due
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10)),
            None => Duration::from_millis(10),
        };
        poll.poll(&mut events, Some(timeout))?;
        for event in events.iter() {
            if event.token() == PUBLISHER {
                publisher.flush()?;
                continue;
            }
            let Some(subscriber) = subscribers.get_mut(event.token().0) else {
                continue;
            };
            if !subscriber.alive {
                continue;
            }
            let Subscriber { stream, frames, .. } = subscriber;
            let next = &mut expected[event.token().0];
            let failed = loop {
                match stream.read(&mut buffer) {
                    Ok(0) => break true,
                    Ok(n) => {
                        let received_ns = now_ns(Instant::now());
                        let result = frames.parse(&buffer[..n], |(seq, sent_ns)| {
                            lost += seq.saturating_sub(*next);
                            *next = seq + 1;
                            if interval.is_none() {
                                outstanding.delivered(seq);
                            }
                            if measuring {
                                deliveries += 1;
                                samples.push(received_ns.saturating_sub(sent_ns));
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
                subscriber.alive = false;
                readers -= 1;
                errors += 1;
                let _ = poll.registry().deregister(&mut subscriber.stream);
            }
        }
    }
    let end = Instant::now();
    let seconds = end.duration_since(window_start).as_secs_f64();
    let rss_end = config
        .server_pid
        .and_then(|pid| sys::vm_rss_bytes(pid).ok());
    let measured = mark.map(|mark| mark.since(seconds, deliveries));
    samples.sort_unstable();
    let percentile = |p| percentile_us(&samples, p);
    Ok(FanoutReport {
        subscribers: config.subscribers,
        slow_subscribers: slow,
        payload: config.payload,
        rate: interval.map(|_| config.rate),
        window: interval.is_none().then_some(config.window),
        seconds,
        published,
        deliveries,
        deliveries_per_sec: deliveries as f64 / seconds,
        lost,
        errors,
        p50_us: percentile(0.5),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        max_us: percentile(1.0),
        server_cpu_percent: measured.and_then(|m| m.server_cpu_percent),
        server_user_percent: measured.and_then(|m| m.server_user_percent),
        server_user_us_per_delivery: measured.and_then(|m| m.user_us),
        server_system_us_per_delivery: measured.and_then(|m| m.system_us),
        client_cpu_percent: measured.map_or(0.0, |m| m.client_cpu_percent),
        server_rss_start_bytes: rss_start,
        server_rss_peak_bytes: rss_peak.max(rss_end),
        server_rss_end_bytes: rss_end,
        steal_percent: measured.and_then(|m| m.steal_percent),
    })
}

/// Counters at the window's start.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    server_pid: Option<u32>,
    server: Option<(u64, u64)>,
    client: (Duration, Duration),
    machine: Option<(u64, u64)>,
}

/// What the window cost; the per-item figures divide by the count given
/// to [`Mark::since`].
#[derive(Clone, Copy)]
pub(crate) struct Measured {
    pub server_cpu_percent: Option<f64>,
    pub server_user_percent: Option<f64>,
    pub user_us: Option<f64>,
    pub system_us: Option<f64>,
    pub client_cpu_percent: f64,
    pub steal_percent: Option<f64>,
}

impl Mark {
    /// Takes the counters now.
    pub(crate) fn take(server_pid: Option<u32>) -> Mark {
        Mark {
            server_pid,
            server: server_pid.and_then(|pid| sys::process_cpu_ticks_split(pid).ok()),
            client: sys::self_cpu_times(),
            machine: sys::machine_cpu_ticks().ok(),
        }
    }

    /// What the `seconds` since the mark cost, per each of `deliveries`.
    pub(crate) fn since(self, seconds: f64, deliveries: u64) -> Measured {
        let tick = 1.0 / sys::clock_ticks_per_second();
        let server = self.server.zip(
            self.server_pid
                .and_then(|pid| sys::process_cpu_ticks_split(pid).ok()),
        );
        let (user, system) = server.map_or((None, None), |((user0, system0), (user1, system1))| {
            (
                Some(user1.saturating_sub(user0) as f64 * tick),
                Some(system1.saturating_sub(system0) as f64 * tick),
            )
        });
        let (client_user, client_system) = sys::self_cpu_times();
        let client = (client_user + client_system).saturating_sub(self.client.0 + self.client.1);
        let steal_percent = self.machine.zip(sys::machine_cpu_ticks().ok()).and_then(
            |((steal0, total0), (steal1, total1))| {
                let total = total1.saturating_sub(total0);
                (total > 0).then(|| steal1.saturating_sub(steal0) as f64 / total as f64 * 100.0)
            },
        );
        let per_delivery = |time: Option<f64>| {
            time.filter(|_| deliveries > 0)
                .map(|time| time * 1e6 / deliveries as f64)
        };
        Measured {
            server_cpu_percent: user.zip(system).map(|(u, s)| (u + s) / seconds * 100.0),
            server_user_percent: user.map(|u| u / seconds * 100.0),
            user_us: per_delivery(user),
            system_us: per_delivery(system),
            client_cpu_percent: client.as_secs_f64() / seconds * 100.0,
            steal_percent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked, binary) carrying `seq` and `sent` and
    /// `filler` more bytes.
    fn frame(seq: u64, sent: u64, filler: usize) -> Vec<u8> {
        let len = STAMP + filler;
        let mut out = vec![0x80 | OP_BINARY];
        if len < 126 {
            out.push(len as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&sent.to_le_bytes());
        out.extend(std::iter::repeat_n(0xAB, filler));
        out
    }

    #[test]
    fn stamps_are_read_from_deliveries_split_anywhere() {
        let mut wire = frame(1, 100, 84);
        wire.extend(frame(2, 200, 4080));
        wire.extend(frame(3, 300, 0));
        for cut in 0..wire.len() {
            let mut frames = Frames::new();
            let mut seen = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                frames.parse(part, |delivery| seen.push(delivery)).unwrap();
            }
            assert_eq!(seen, [(1, 100), (2, 200), (3, 300)], "cut at {cut}");
        }
        let mut text = frame(1, 1, 0);
        text[0] = 0x81;
        assert!(Frames::new().parse(&text, |_| {}).is_err());
        let short = [0x82, 4, 0, 0, 0, 0];
        assert!(Frames::new().parse(&short, |_| {}).is_err());
    }
}
