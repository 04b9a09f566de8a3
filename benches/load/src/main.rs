//! `wsloop-bench`: a side-by-side echo load benchmark of wsloop against two
//! Rust WebSocket servers (tokio-tungstenite and fastwebsockets).
//!
//! One binary, four jobs:
//!
//! * `serve` runs one of the two peer echo servers ([`peers`]);
//! * `load` is the single-threaded mio load generator ([`load`]);
//! * `idle` opens many idle WebSocket connections, for the memory cell ([`idle`]);
//! * `run` is the orchestrator: it starts the three servers, drives `load`
//!   and `idle` against each and writes the report ([`orchestrate`], [`report`]).
//!
//! The package has its own `[workspace]` so none of this reaches wsloop's
//! dependency tree or what `cargo test` builds at the repository root.

mod handshake;
mod idle;
mod load;
mod orchestrate;
mod peers;
mod report;
mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wsloop-bench",
    about = "Echo load benchmark: wsloop vs tokio-tungstenite vs fastwebsockets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one of the peer echo servers (single-threaded tokio runtime).
    Serve {
        /// Which peer implementation to serve.
        #[arg(value_enum)]
        peer: peers::Peer,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
    /// Single-threaded mio load generator; prints one JSON line.
    Load {
        /// Echo server address.
        #[arg(long)]
        addr: SocketAddr,
        /// WebSocket connections to open.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Payload size of every message, in bytes.
        #[arg(long, default_value_t = 20)]
        payload: usize,
        /// Messages kept in flight per connection.
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        /// Length of the measured window, in seconds.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Unmeasured warm-up before the window, in seconds.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Record per-message round-trip times and report p50/p99/p99.9.
        #[arg(long)]
        latency: bool,
        /// Also report this process's CPU use over the window (the server's).
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Open many idle WebSocket connections and hold them.
    Idle {
        /// Echo server address.
        #[arg(long)]
        addr: SocketAddr,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// How long to hold them once all are open, in seconds.
        #[arg(long, default_value_t = 10.0)]
        hold_seconds: f64,
    },
    /// Run the whole comparison and write results.json, results.md and the SVG chart.
    Run {
        /// Smoke-test matrix: 1 s cells, fewer cells, one repeat, 1,000 idle connections.
        #[arg(long)]
        quick: bool,
        /// Output directory [default: <repo>/benches/results].
        #[arg(long)]
        out: Option<PathBuf>,
        /// wsloop binary [default: <repo>/target/release/wsloop].
        #[arg(long)]
        wsloop: Option<PathBuf>,
        /// Runs per cell; the median is reported [default: 3, 1 with --quick].
        #[arg(long)]
        repeat: Option<usize>,
        /// Override the measured window per cell, in seconds.
        #[arg(long)]
        seconds: Option<f64>,
        /// Override the warm-up per cell, in seconds.
        #[arg(long)]
        warmup: Option<f64>,
        /// CPUs the servers are pinned to (`taskset -c` list).
        #[arg(long, default_value = "0")]
        server_cpu: String,
        /// CPUs the load generator and the idle client are pinned to.
        #[arg(long, default_value = "1")]
        client_cpu: String,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve { peer, listen } => peers::serve(peer, listen),
        Command::Load {
            addr,
            connections,
            payload,
            in_flight,
            seconds,
            warmup,
            latency,
            server_pid,
        } => {
            let config = load::LoadConfig {
                addr,
                connections,
                payload,
                in_flight,
                seconds,
                warmup,
                latency,
                server_pid,
            };
            load::run(&config).and_then(|report| {
                let line = serde_json::to_string(&report).map_err(std::io::Error::other)?;
                println!("{line}");
                Ok(())
            })
        }
        Command::Idle {
            addr,
            connections,
            hold_seconds,
        } => idle::run(addr, connections, hold_seconds),
        Command::Run {
            quick,
            out,
            wsloop,
            repeat,
            seconds,
            warmup,
            server_cpu,
            client_cpu,
        } => orchestrate::run(orchestrate::RunOptions {
            quick,
            out,
            wsloop,
            repeat,
            seconds,
            warmup,
            server_cpu,
            client_cpu,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsloop-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
