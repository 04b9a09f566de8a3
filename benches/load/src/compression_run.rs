//! `compression-run`: permessage-deflate against a peer that has it. In
//! each cell and repeat, three servers are started fresh in turn and loaded
//! by `load`: wsloop `--echo --deflate` and Node `ws` with
//! `perMessageDeflate` (context takeover, threshold 0), both with `load
//! --deflate` (the client offers `client_no_context_takeover` and sends
//! one pre-compressed text message), and wsloop without compression with
//! `load --text` (the same text), to show what compression costs. Writes
//! `<name>.json` and `<name>.md` into the results directory.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cpu::{CpuPerMessage, micros};
use crate::fanout_run::{free_addr, load_average, start_server};
use crate::load::LoadReport;
use crate::report::{Spread, bytes, count};
use crate::sys;

/// The servers of the compression cells, in report order.
pub const COMPRESSION_SERVERS: [&str; 3] =
    ["wsloop deflate", "node-ws deflate", "wsloop plain text"];

/// (connections, payload, in flight): many small messages pipelined, and
/// many connections with one large message each (the TLS and deflate
/// variant cells of `run`).
const CELLS: [(usize, usize, usize); 2] = [(10, 1024, 16), (100, 16384, 1)];

/// `compression-run` options.
#[derive(Debug, clap::Args)]
pub struct CompressionRunOptions {
    /// Output directory [default: <repo>/benches/results].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Base name of the files written.
    #[arg(long, default_value = "compression")]
    pub name: String,
    /// wsloop binary [default: <repo>/target/release/wsloop].
    #[arg(long)]
    pub wsloop: Option<PathBuf>,
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

/// One server in one cell.
#[derive(Debug, Serialize, Deserialize)]
pub struct CompressionResult {
    pub server: String,
    pub connections: usize,
    pub payload: usize,
    pub in_flight: usize,
    pub msgs_per_sec: Spread,
    pub cpu_per_message: Option<CpuPerMessage>,
    pub errors: u64,
    pub runs: Vec<LoadReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// Everything one `compression-run` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct CompressionResults {
    pub command: String,
    pub wsloop: String,
    pub repeat: usize,
    pub seconds: f64,
    pub warmup: f64,
    pub load_average_before: String,
    pub load_average_after: String,
    pub total_seconds: f64,
    pub results: Vec<CompressionResult>,
}

/// Runs the compression cells and writes the results.
pub fn run(options: CompressionRunOptions) -> io::Result<()> {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| root.join("benches/results"));
    let logs = out.join("logs");
    fs::create_dir_all(&logs)?;
    let wsloop = options
        .wsloop
        .clone()
        .unwrap_or_else(|| root.join("target/release/wsloop"));
    let config = logs.join("wsloop-compression.toml");
    fs::write(
        &config,
        "# Every connection comes from 127.0.0.1.\n[limits]\n\
         max_connections_per_address = 100000\nmax_handshakes_per_address = 100000\n",
    )?;
    let node_script = root.join("benches/load/node/server.mjs");
    let exe = std::env::current_exe()?;
    let load_average_before = load_average();
    let mut results = Vec::new();
    for (connections, payload, in_flight) in CELLS {
        let mut runs: Vec<Vec<LoadReport>> = vec![Vec::new(); COMPRESSION_SERVERS.len()];
        let mut failures: Vec<Vec<String>> = vec![Vec::new(); COMPRESSION_SERVERS.len()];
        for round in 0..options.repeat.max(1) {
            for (index, server) in COMPRESSION_SERVERS.iter().enumerate() {
                let addr = free_addr()?;
                let listen = addr.to_string();
                let port = addr.port().to_string();
                let config_text = config.to_string_lossy();
                let mut wsloop_args = vec![
                    "--echo",
                    "--listen",
                    &listen,
                    "--log-level",
                    "error",
                    "--config",
                    &config_text,
                ];
                let (program, args, load_flag): (&Path, Vec<&str>, &str) = match index {
                    0 => {
                        wsloop_args.push("--deflate");
                        (&wsloop, wsloop_args, "--deflate")
                    }
                    1 => (
                        Path::new("node"),
                        vec![
                            node_script.to_str().unwrap_or_default(),
                            "echo",
                            &port,
                            "--deflate",
                        ],
                        "--deflate",
                    ),
                    _ => (&wsloop, wsloop_args, "--text"),
                };
                eprint!(
                    "{connections} × {} × {in_flight} round {}/{} {server}: ",
                    bytes(payload),
                    round + 1,
                    options.repeat
                );
                let log = logs.join(format!("compression-{}.log", server.replace(' ', "-")));
                let result = start_server(program, &args, (addr, "/"), &log, &options.server_cpu)
                    .and_then(|server| {
                        let output = Command::new("taskset")
                            .args(["-c", &options.client_cpu])
                            .arg(&exe)
                            .arg("load")
                            .args(["--addr", &listen])
                            .args(["--connections", &connections.to_string()])
                            .args(["--payload", &payload.to_string()])
                            .args(["--in-flight", &in_flight.to_string()])
                            .args(["--seconds", &options.seconds.to_string()])
                            .args(["--warmup", &options.warmup.to_string()])
                            .args(["--server-pid", &server.id().to_string()])
                            .arg(load_flag)
                            .stdin(Stdio::null())
                            .output()?;
                        if !output.status.success() {
                            return Err(io::Error::other(format!(
                                "load: {}",
                                String::from_utf8_lossy(&output.stderr).trim()
                            )));
                        }
                        sys::wait_until_quiet(server.id(), Duration::from_secs(2));
                        serde_json::from_slice::<LoadReport>(&output.stdout)
                            .map_err(io::Error::other)
                    });
                match result {
                    Ok(report) => {
                        eprintln!("{} msgs/s", count(report.msgs_per_sec));
                        runs[index].push(report);
                    }
                    Err(error) => {
                        eprintln!("failed: {error}");
                        failures[index].push(error.to_string());
                    }
                }
            }
        }
        for (index, server) in COMPRESSION_SERVERS.iter().enumerate() {
            let runs = std::mem::take(&mut runs[index]);
            results.push(CompressionResult {
                server: server.to_string(),
                connections,
                payload,
                in_flight,
                msgs_per_sec: Spread::of(runs.iter().map(|run| run.msgs_per_sec)),
                cpu_per_message: CpuPerMessage::of_runs(&runs),
                errors: runs.iter().map(|run| run.errors).sum(),
                runs,
                failures: std::mem::take(&mut failures[index]),
            });
        }
    }
    let all = CompressionResults {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        wsloop: wsloop.display().to_string(),
        repeat: options.repeat,
        seconds: options.seconds,
        warmup: options.warmup,
        load_average_before,
        load_average_after: load_average(),
        total_seconds: started.elapsed().as_secs_f64(),
        results,
    };
    let json = serde_json::to_string_pretty(&all).map_err(io::Error::other)?;
    fs::write(out.join(format!("{}.json", options.name)), json + "\n")?;
    fs::write(out.join(format!("{}.md", options.name)), markdown(&all))?;
    Ok(())
}

/// The Markdown table of one compression run.
pub fn markdown(all: &CompressionResults) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Compression: wsloop vs Node ws, both with permessage-deflate\n"
    );
    let _ = writeln!(
        md,
        "`{}` (wsloop: `{}`): {} run(s) per server and cell, {} s measured after {} s warm-up, a fresh \
         server per run. Load average {} before, {} after. Total {:.0} s. Raw numbers: the `.json` \
         beside this file.\n",
        all.command,
        all.wsloop,
        all.repeat,
        all.seconds,
        all.warmup,
        all.load_average_before,
        all.load_average_after,
        all.total_seconds
    );
    let _ = writeln!(
        md,
        "| cell | server | msgs/s (min–max) | server µs per message (user + sys) | server CPU % | client CPU % | errors |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
    for result in &all.results {
        let cpu = result.cpu_per_message.map_or("–".to_string(), |cpu| {
            format!(
                "{} + {} = {}",
                micros(cpu.user_us.median),
                micros(cpu.system_us.median),
                micros(cpu.total_us.median)
            )
        });
        let median = |value: fn(&LoadReport) -> Option<f64>| {
            Spread::of(result.runs.iter().filter_map(value)).median
        };
        let _ = writeln!(
            md,
            "| {} × {} × {} | {} | {} ({}–{}) | {cpu} | {:.0} | {:.0} | {} |",
            result.connections,
            bytes(result.payload),
            result.in_flight,
            result.server,
            count(result.msgs_per_sec.median),
            count(result.msgs_per_sec.min),
            count(result.msgs_per_sec.max),
            median(|run| run.server_cpu_percent),
            median(|run| Some(run.client_cpu_percent)),
            result.errors
        );
    }
    let _ = writeln!(md, "\n## Targets\n");
    let _ = writeln!(
        md,
        "| cell | wsloop deflate / Node ws deflate (msgs/s) | (CPU per message) | wsloop deflate / wsloop plain text (msgs/s) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for (connections, payload, in_flight) in CELLS {
        let find = |server: &str| {
            all.results.iter().find(|r| {
                r.server == server
                    && (r.connections, r.payload, r.in_flight) == (connections, payload, in_flight)
            })
        };
        let rate = |server| {
            find(server)
                .map(|r| r.msgs_per_sec.median)
                .filter(|&v| v > 0.0)
        };
        let cpu = |server| {
            find(server)
                .and_then(|r| r.cpu_per_message)
                .map(|cpu| cpu.total_us.median)
                .filter(|&v| v > 0.0)
        };
        let ratio = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .map_or("–".to_string(), |(a, b)| format!("{:.2}×", a / b))
        };
        let _ = writeln!(
            md,
            "| {connections} × {} × {in_flight} | {} | {} | {} |",
            bytes(payload),
            ratio(rate(COMPRESSION_SERVERS[0]), rate(COMPRESSION_SERVERS[1])),
            ratio(cpu(COMPRESSION_SERVERS[0]), cpu(COMPRESSION_SERVERS[1])),
            ratio(rate(COMPRESSION_SERVERS[0]), rate(COMPRESSION_SERVERS[2])),
        );
    }
    let _ = writeln!(
        md,
        "\nTargets (issue 27): wsloop compressed ≥ 1× Node ws compressed, and ≥ 0.25× wsloop plain at 10 × 1 KiB × 16."
    );
    md
}
