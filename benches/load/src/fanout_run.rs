//! `fanout-run`: the broadcast fan-out comparison. For every cell and
//! repeat, each of the four broadcast servers is started fresh (pinned to
//! the server CPU), `fanout` runs against it (pinned to the client CPU)
//! and the server is stopped; the servers take turns within a repeat so
//! slow drift of the machine hits all alike. Writes `fanout.json` (every
//! run) and `fanout.md` (medians, with min–max) into the results directory.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fanout::FanoutReport;
use crate::handshake::{self, Dial};
use crate::orchestrate::SERVER_SHELL;
use crate::report::{Spread, bytes, count};
use crate::sys::{self, ChildGuard};

/// The broadcast servers, in report order; the first is the one ratios are
/// taken of.
pub const FANOUT_SERVERS: [&str; 4] = ["wsloop", "tokio-tungstenite", "fastwebsockets", "node-ws"];

/// Deliveries per second the fixed-rate cells ask for (the rate is this
/// divided by the subscribers): well within every server's reach, so their
/// latency is measured unloaded.
const FIXED_DELIVERIES_PER_SEC: f64 = 50_000.0;

/// `fanout-run` options.
#[derive(Debug, clap::Args)]
pub struct FanoutRunOptions {
    /// Smoke test: 100 and 1,000 subscribers, 100 B, one repeat of 1 s.
    #[arg(long)]
    pub quick: bool,
    /// Output directory [default: <repo>/benches/results].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// wsloop's broadcast example [default: <repo>/target/release/examples/broadcast].
    #[arg(long)]
    pub broadcast: Option<PathBuf>,
    /// Runs per cell and server; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Measured window per run, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Unmeasured warm-up per run, seconds.
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// CPUs the servers are pinned to (`taskset -c` list).
    #[arg(long, default_value = "0")]
    pub server_cpu: String,
    /// CPUs the load generator is pinned to.
    #[arg(long, default_value = "1")]
    pub client_cpu: String,
}

/// One cell of the fan-out matrix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FanoutCell {
    pub subscribers: usize,
    pub payload: usize,
    /// Published messages per second; `None` flat out.
    pub rate: Option<f64>,
    /// One subscriber in this many never reads (0: none).
    pub slow_every: usize,
}

impl FanoutCell {
    fn name(&self) -> String {
        format!(
            "{} × {} {}{}",
            count(self.subscribers as f64),
            bytes(self.payload),
            match self.rate {
                Some(rate) => format!("at {} msgs/s", count(rate)),
                None => format!("flat out (window {FLAT_OUT_WINDOW})"),
            },
            if self.slow_every > 0 {
                format!(", 1 in {} not reading", count(self.slow_every as f64))
            } else {
                String::new()
            }
        )
    }
}

/// The cells with subscribers that do not read are measured this many
/// times longer, so the server's queues to them outgrow the kernel's
/// socket buffers (several MiB on loopback).
const SLOW_CELL_LONGER: f64 = 3.0;

/// Flat-out cells: messages not yet delivered everywhere, at most.
const FLAT_OUT_WINDOW: usize = 4;

/// One server in one cell.
#[derive(Debug, Serialize, Deserialize)]
pub struct FanoutResult {
    pub server: String,
    pub cell: FanoutCell,
    pub deliveries_per_sec: Spread,
    pub p50_us: Spread,
    pub p99_us: Spread,
    pub p999_us: Spread,
    pub user_us_per_delivery: Spread,
    pub system_us_per_delivery: Spread,
    pub server_cpu_percent: Spread,
    pub client_cpu_percent: Spread,
    pub server_rss_peak_bytes: Spread,
    pub lost: u64,
    pub errors: u64,
    pub runs: Vec<FanoutReport>,
    /// Runs that failed, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl FanoutResult {
    fn from_runs(
        server: &str,
        cell: FanoutCell,
        runs: Vec<FanoutReport>,
        failures: Vec<String>,
    ) -> Self {
        let spread =
            |value: fn(&FanoutReport) -> Option<f64>| Spread::of(runs.iter().filter_map(value));
        FanoutResult {
            server: server.to_string(),
            cell,
            deliveries_per_sec: spread(|run| Some(run.deliveries_per_sec)),
            p50_us: spread(|run| run.p50_us),
            p99_us: spread(|run| run.p99_us),
            p999_us: spread(|run| run.p999_us),
            user_us_per_delivery: spread(|run| run.server_user_us_per_delivery),
            system_us_per_delivery: spread(|run| run.server_system_us_per_delivery),
            server_cpu_percent: spread(|run| run.server_cpu_percent),
            client_cpu_percent: spread(|run| Some(run.client_cpu_percent)),
            server_rss_peak_bytes: spread(|run| run.server_rss_peak_bytes.map(|b| b as f64)),
            lost: runs.iter().map(|run| run.lost).sum(),
            errors: runs.iter().map(|run| run.errors).sum(),
            runs,
            failures,
        }
    }
}

/// Everything one `fanout-run` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct FanoutResults {
    pub command: String,
    pub repeat: usize,
    pub seconds: f64,
    pub warmup: f64,
    pub server_cpu: String,
    pub client_cpu: String,
    pub load_average_before: String,
    pub load_average_after: String,
    pub total_seconds: f64,
    pub results: Vec<FanoutResult>,
}

/// The cells of a full run (or of `--quick`).
fn cells(quick: bool) -> Vec<FanoutCell> {
    let mut cells = Vec::new();
    let subscribers: &[usize] = if quick {
        &[100, 1000]
    } else {
        &[100, 1000, 10_000]
    };
    let payloads: &[usize] = if quick { &[100] } else { &[100, 4096] };
    for &n in subscribers {
        for &payload in payloads {
            for rate in [Some(FIXED_DELIVERIES_PER_SEC / n as f64), None] {
                cells.push(FanoutCell {
                    subscribers: n,
                    payload,
                    rate,
                    slow_every: 0,
                });
            }
        }
    }
    // Flat out and longest payload, so that the queues to the subscribers
    // that do not read grow as fast as the server can make them grow.
    for &n in subscribers.iter().filter(|&&n| n >= 1000) {
        cells.push(FanoutCell {
            subscribers: n,
            payload: *payloads.last().unwrap_or(&100),
            rate: None,
            slow_every: 1000,
        });
    }
    cells
}

/// Runs the fan-out comparison and writes `fanout.json` and `fanout.md`.
pub fn run(options: FanoutRunOptions) -> io::Result<()> {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| root.join("benches/results"));
    let logs = out.join("logs");
    fs::create_dir_all(&logs)?;
    let broadcast = options
        .broadcast
        .clone()
        .unwrap_or_else(|| root.join("target/release/examples/broadcast"));
    let exe = std::env::current_exe()?;
    let node_script = root.join("benches/load/node/server.mjs");
    let (repeat, seconds, warmup) = if options.quick {
        (1, 1.0, 0.5)
    } else {
        (options.repeat.max(1), options.seconds, options.warmup)
    };
    let load_average_before = load_average();
    let mut results = Vec::new();
    for cell in cells(options.quick) {
        let mut runs: Vec<Vec<FanoutReport>> = vec![Vec::new(); FANOUT_SERVERS.len()];
        let mut failures: Vec<Vec<String>> = vec![Vec::new(); FANOUT_SERVERS.len()];
        for round in 0..repeat {
            for (index, server) in FANOUT_SERVERS.iter().enumerate() {
                let addr = free_addr()?;
                let port = addr.port();
                let listen = addr.to_string();
                let port_text = port.to_string();
                let (program, args): (&Path, Vec<&str>) = match index {
                    0 => (&broadcast, vec![&listen]),
                    1 => (
                        &exe,
                        vec!["serve-broadcast", "tokio-tungstenite", "--listen", &listen],
                    ),
                    2 => (
                        &exe,
                        vec!["serve-broadcast", "fastwebsockets", "--listen", &listen],
                    ),
                    _ => (
                        Path::new("node"),
                        vec![
                            node_script.to_str().unwrap_or_default(),
                            "broadcast",
                            &port_text,
                        ],
                    ),
                };
                eprint!("{} round {}/{repeat} {server}: ", cell.name(), round + 1);
                match measure(
                    program,
                    &args,
                    addr,
                    &logs.join(format!("fanout-{server}.log")),
                    &options,
                    &exe,
                    cell,
                    seconds,
                    warmup,
                ) {
                    Ok(report) => {
                        eprintln!(
                            "{} deliveries/s, p99 {} µs, {:.2} µs CPU per delivery",
                            count(report.deliveries_per_sec),
                            report.p99_us.map_or("–".to_string(), |p| format!("{p:.0}")),
                            report.server_user_us_per_delivery.unwrap_or(0.0)
                                + report.server_system_us_per_delivery.unwrap_or(0.0)
                        );
                        runs[index].push(report);
                    }
                    Err(error) => {
                        eprintln!("failed: {error}");
                        failures[index].push(error.to_string());
                    }
                }
            }
        }
        for (index, server) in FANOUT_SERVERS.iter().enumerate() {
            results.push(FanoutResult::from_runs(
                server,
                cell,
                std::mem::take(&mut runs[index]),
                std::mem::take(&mut failures[index]),
            ));
        }
    }
    let all = FanoutResults {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        repeat,
        seconds,
        warmup,
        server_cpu: options.server_cpu.clone(),
        client_cpu: options.client_cpu.clone(),
        load_average_before,
        load_average_after: load_average(),
        total_seconds: started.elapsed().as_secs_f64(),
        results,
    };
    let json = serde_json::to_string_pretty(&all).map_err(io::Error::other)?;
    fs::write(out.join("fanout.json"), json + "\n")?;
    fs::write(out.join("fanout.md"), markdown(&all))?;
    eprintln!("wrote {}", out.join("fanout.md").display());
    Ok(())
}

/// Starts one server, runs `fanout` against it, stops it.
#[allow(clippy::too_many_arguments)]
fn measure(
    program: &Path,
    args: &[&str],
    addr: SocketAddr,
    log: &Path,
    options: &FanoutRunOptions,
    exe: &Path,
    cell: FanoutCell,
    seconds: f64,
    warmup: f64,
) -> io::Result<FanoutReport> {
    let mut server = start_server(program, args, (addr, "/"), log, &options.server_cpu)?;
    let mut command = Command::new("taskset");
    command
        .args(["-c", &options.client_cpu])
        .arg(exe)
        .arg("fanout")
        .args(["--addr", &addr.to_string()])
        .args(["--subscribers", &cell.subscribers.to_string()])
        .args(["--payload", &cell.payload.to_string()])
        .args(["--rate", &cell.rate.unwrap_or(0.0).to_string()])
        .args(["--window", &FLAT_OUT_WINDOW.to_string()])
        .args(["--slow-every", &cell.slow_every.to_string()])
        .args([
            "--seconds",
            &if cell.slow_every > 0 {
                seconds * SLOW_CELL_LONGER
            } else {
                seconds
            }
            .to_string(),
        ])
        .args(["--warmup", &warmup.to_string()])
        .args(["--server-pid", &server.id().to_string()])
        .stdin(Stdio::null());
    let output = command.output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "fanout: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    if server.child().try_wait()?.is_some() {
        return Err(io::Error::other("server exited during the run"));
    }
    sys::wait_until_quiet(server.id(), Duration::from_secs(2));
    serde_json::from_slice(&output.stdout).map_err(io::Error::other)
}

/// Starts `program args` pinned to `cpu` with a raised fd limit, its output
/// appended to `log`, and waits (up to 10 s) until it completes a
/// WebSocket handshake on `addr` at `path`.
pub(crate) fn start_server(
    program: &Path,
    args: &[&str],
    (addr, path): (SocketAddr, &'static str),
    log: &Path,
    cpu: &str,
) -> io::Result<ChildGuard> {
    let log = File::options().create(true).append(true).open(log)?;
    let child = Command::new("sh")
        .arg("-c")
        .arg(SERVER_SHELL)
        .arg("sh")
        .args(["taskset", "-c", cpu])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut server = ChildGuard::new(child);
    let dial = Dial {
        addr,
        tls: None,
        deflate: false,
        path,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while handshake::open_all(&dial, 1, 1, |_| {}).is_err() {
        if Instant::now() > deadline || server.child().try_wait()?.is_some() {
            return Err(io::Error::other(format!(
                "{} did not come up",
                program.display()
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// A loopback address with a port nobody listens on right now.
pub(crate) fn free_addr() -> io::Result<SocketAddr> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `/proc/loadavg`'s first three figures.
pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// `fanout.md`.
pub fn markdown(all: &FanoutResults) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Broadcast fan-out: wsloop vs tokio-tungstenite vs fastwebsockets vs Node ws\n"
    );
    let _ = writeln!(
        md,
        "`{}`: {} run(s) per server and cell, {} s measured after {} s warm-up, a fresh server per run \
         pinned to CPU {}, the load generator (`fanout`: 1 publisher, N subscribers, one thread) to CPU {}. \
         Load average {} before, {} after (the machine is shared). Total {:.0} s. Raw numbers: `fanout.json`.\n",
        all.command,
        all.repeat,
        all.seconds,
        all.warmup,
        all.server_cpu,
        all.client_cpu,
        all.load_average_before,
        all.load_average_after,
        all.total_seconds,
    );
    let _ = writeln!(
        md,
        "Every server relays each message from the publisher to every other connection: wsloop \
         `examples/broadcast.rs` (`Context::broadcast`, header encoded once), tokio-tungstenite and \
         fastwebsockets through one `tokio::sync::broadcast` channel (reader and writer task per \
         connection, `current_thread`), Node `ws` with the broadcast loop of its documentation. \
         Fixed-rate cells publish {} deliveries/s in all (rate = that / N); flat-out cells keep \
         {FLAT_OUT_WINDOW} messages not yet delivered to every reading subscriber. Latency: publisher \
         send → subscriber receive, every delivery in the window. CPU per delivery: server utime and \
         stime over the window ÷ deliveries. Figures are medians over the runs, min–max in brackets \
         for deliveries/s. Cells with subscribers that do not read are measured {SLOW_CELL_LONGER}× longer \
         (their queues must outgrow the kernel's socket buffers to test the server's limits); compare \
         the others' p99 with the same cell without them.\n",
        count(FIXED_DELIVERIES_PER_SEC)
    );
    let mut cells: Vec<FanoutCell> = Vec::new();
    for result in &all.results {
        if !cells.contains(&result.cell) {
            cells.push(result.cell);
        }
    }
    targets_markdown(all, &cells, &mut md);
    for cell in &cells {
        let _ = writeln!(md, "## {}\n", cell.name());
        let _ = writeln!(
            md,
            "| server | deliveries/s | p50 µs | p99 µs | p99.9 µs | server µs per delivery (user + sys) | server CPU % | client CPU % | server RSS peak | lost | errors | wsloop / this (deliveries/s) |"
        );
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let ours = find(all, FANOUT_SERVERS[0], cell).map(|r| r.deliveries_per_sec.median);
        for server in FANOUT_SERVERS {
            let Some(result) = find(all, server, cell) else {
                continue;
            };
            if result.runs.is_empty() {
                let _ = writeln!(
                    md,
                    "| {server} | failed: {} |||||||||||",
                    result.failures.join("; ").replace('|', "/")
                );
                continue;
            }
            let _ = writeln!(
                md,
                "| {server} | {} ({}–{}) | {:.0} | {:.0} | {:.0} | {:.2} + {:.2} = {:.2} | {:.0} | {:.0} | {:.1} MiB | {} | {} | {} |",
                count(result.deliveries_per_sec.median),
                count(result.deliveries_per_sec.min),
                count(result.deliveries_per_sec.max),
                result.p50_us.median,
                result.p99_us.median,
                result.p999_us.median,
                result.user_us_per_delivery.median,
                result.system_us_per_delivery.median,
                result.user_us_per_delivery.median + result.system_us_per_delivery.median,
                result.server_cpu_percent.median,
                result.client_cpu_percent.median,
                result.server_rss_peak_bytes.median / 1048576.0,
                result.lost,
                result.errors,
                if server == FANOUT_SERVERS[0] {
                    "—".to_string()
                } else {
                    ours.filter(|_| result.deliveries_per_sec.median > 0.0)
                        .map_or("–".to_string(), |ours| {
                            format!("{:.2}×", ours / result.deliveries_per_sec.median)
                        })
                },
            );
        }
        let _ = writeln!(md);
    }
    md
}

fn find<'a>(all: &'a FanoutResults, server: &str, cell: &FanoutCell) -> Option<&'a FanoutResult> {
    all.results
        .iter()
        .find(|result| result.server == server && result.cell == *cell)
}

/// Issue 27's fan-out targets: ≥ 2× tokio-tungstenite's deliveries/s flat
/// out with 1,000 subscribers or more, and p99 below every peer's.
fn targets_markdown(all: &FanoutResults, cells: &[FanoutCell], md: &mut String) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | met | missed |");
    let _ = writeln!(md, "|---|---:|---|");
    let mut rows: Vec<(String, usize, Vec<String>)> = Vec::new();
    // Throughput: flat-out cells, N ≥ 1,000, all reading.
    let mut checked = 0;
    let mut missed = Vec::new();
    for cell in cells
        .iter()
        .filter(|c| c.rate.is_none() && c.subscribers >= 1000 && c.slow_every == 0)
    {
        checked += 1;
        let ours = find(all, FANOUT_SERVERS[0], cell).map(|r| r.deliveries_per_sec.median);
        let theirs = find(all, FANOUT_SERVERS[1], cell).map(|r| r.deliveries_per_sec.median);
        match (ours, theirs) {
            (Some(ours), Some(theirs)) if theirs > 0.0 && ours / theirs >= 2.0 => {}
            (Some(ours), Some(theirs)) if theirs > 0.0 => {
                missed.push(format!("{}: {:.2}×", cell.name(), ours / theirs))
            }
            _ => missed.push(format!("{}: no result", cell.name())),
        }
    }
    rows.push((
        "≥ 2× tokio-tungstenite deliveries/s, flat out, N ≥ 1,000".to_string(),
        checked,
        missed,
    ));
    // Latency: every cell, against each peer.
    let mut checked = 0;
    let mut missed = Vec::new();
    for cell in cells {
        let Some(ours) = find(all, FANOUT_SERVERS[0], cell).filter(|r| !r.runs.is_empty()) else {
            continue;
        };
        for peer in &FANOUT_SERVERS[1..] {
            checked += 1;
            match find(all, peer, cell).filter(|r| !r.runs.is_empty()) {
                Some(theirs) if ours.p99_us.median <= theirs.p99_us.median => {}
                Some(theirs) => missed.push(format!(
                    "{} vs {peer}: {:.0} µs vs {:.0} µs",
                    cell.name(),
                    ours.p99_us.median,
                    theirs.p99_us.median
                )),
                None => {}
            }
        }
    }
    rows.push((
        "p99 delivery latency at or below every peer, every cell".to_string(),
        checked,
        missed,
    ));
    for (text, checked, missed) in rows {
        let _ = writeln!(
            md,
            "| {text} | {} of {checked} | {} |",
            checked - missed.len(),
            if missed.is_empty() {
                "–".to_string()
            } else {
                missed.join("; ")
            }
        );
    }
    let _ = writeln!(md);
}
