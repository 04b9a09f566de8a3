//! `wsloop-bench`: a side-by-side echo load benchmark of wsloop against two
//! Rust WebSocket servers (tokio-tungstenite and fastwebsockets).
//!
//! One binary, four jobs:
//!
//! * `serve` runs one of the two peer echo servers, optionally over TLS ([`peers`]);
//! * `load` is the single-threaded mio load generator, optionally over TLS
//!   and with permessage-deflate ([`load`], [`deflate`]);
//! * `idle` opens many idle WebSocket connections, for the memory cell ([`idle`]);
//! * `run` is the orchestrator: it starts the three servers, drives `load`
//!   and `idle` against each and writes the report ([`orchestrate`], [`report`]).
//!
//! The package has its own `[workspace]` so none of this reaches wsloop's
//! dependency tree or what `cargo test` builds at the repository root.

mod broadcast_peers;
mod compression_run;
mod cpu;
mod deflate;
mod fanout;
mod fanout_run;
mod handshake;
mod idle;
mod load;
mod notebook_load;
mod notebook_run;
mod orchestrate;
mod peers;
mod report;
mod sys;
mod targets;

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
        /// PEM certificate chain: serve TLS only (with --tls-key).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Run one of the peer broadcast servers (every message to every other
    /// connection; single-threaded tokio runtime).
    ServeBroadcast {
        /// Which peer implementation to serve.
        #[arg(value_enum)]
        peer: peers::Peer,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
    /// Single-threaded mio load generator; prints one JSON line.
    Load(load::LoadConfig),
    /// The notebook under load: C clients editing and running paragraphs of K
    /// notes, and a bystander timing pings; prints one JSON line.
    NotebookLoad(notebook_load::NotebookLoadConfig),
    /// Broadcast fan-out load: one publisher, N subscribers; prints one JSON line.
    Fanout(fanout::FanoutConfig),
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
    /// Run the permessage-deflate cells against Node ws; writes compression.json and .md.
    CompressionRun(compression_run::CompressionRunOptions),
    /// Run the notebook under load (10, 100, 1,000 clients); writes notebook.json and .md.
    NotebookRun(notebook_run::NotebookRunOptions),
    /// Run the broadcast fan-out comparison; writes fanout.json and fanout.md.
    FanoutRun(fanout_run::FanoutRunOptions),
    /// Run the whole comparison and write results.json, results.md and the SVG chart.
    Run(orchestrate::RunOptions),
    /// Rewrite results.md and the SVG chart from an earlier run's results.json.
    Render {
        /// Directory holding results.json.
        #[arg(long, default_value = "benches/results")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve {
            peer,
            listen,
            tls_cert,
            tls_key,
        } => {
            let tls = tls_cert.zip(tls_key);
            peers::serve(
                peer,
                listen,
                tls.as_ref().map(|(cert, key)| (&**cert, &**key)),
            )
        }
        Command::ServeBroadcast { peer, listen } => broadcast_peers::serve(peer, listen),
        Command::NotebookLoad(config) => notebook_load::run(&config).and_then(|report| {
            let line = serde_json::to_string(&report).map_err(std::io::Error::other)?;
            println!("{line}");
            Ok(())
        }),
        Command::Fanout(config) => fanout::run(&config).and_then(|report| {
            let line = serde_json::to_string(&report).map_err(std::io::Error::other)?;
            println!("{line}");
            Ok(())
        }),
        Command::Load(config) => load::run(&config).and_then(|report| {
            let line = serde_json::to_string(&report).map_err(std::io::Error::other)?;
            println!("{line}");
            Ok(())
        }),
        Command::Idle {
            addr,
            connections,
            hold_seconds,
        } => idle::run(addr, connections, hold_seconds),
        Command::Run(options) => orchestrate::run(options),
        Command::FanoutRun(options) => fanout_run::run(options),
        Command::NotebookRun(options) => notebook_run::run(options),
        Command::CompressionRun(options) => compression_run::run(options),
        Command::Render { dir } => report::render_again(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsloop-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
