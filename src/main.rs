//! The `wsloop` command line.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use wsloop::{EchoHandler, Server, ServerConfig};

/// wsloop: a low-latency RFC 6455 WebSocket server on a single-threaded
/// event loop.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
    listen: SocketAddr,

    /// Serve the echo application (every message goes back to its sender,
    /// on any path) instead of the notebook server.
    #[arg(long)]
    echo: bool,

    /// Log level: error, warn, info, debug or trace (RUST_LOG also works).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<log::LevelFilter>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = cli.log_level {
        logger.filter_level(level);
    }
    logger.init();

    let config = ServerConfig {
        listen: cli.listen,
        handle_signals: true,
        ..ServerConfig::default()
    };
    if !cli.echo {
        eprintln!(
            "wsloop: the notebook application is not part of this build yet; run with --echo"
        );
        return ExitCode::from(2);
    }
    let limits = config.limits.clone();
    let max_connections = config.max_connections;
    let mut server = match Server::bind(config, EchoHandler) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("wsloop: cannot listen on {}: {error}", cli.listen);
            return ExitCode::from(1);
        }
    };
    log::info!(
        "wsloop echo listening on ws://{} (max {} connections, frame/message limit {}/{} bytes)",
        server.local_addr(),
        max_connections,
        limits.max_frame_size,
        limits.max_message_size
    );
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsloop: event loop failed: {error}");
            ExitCode::from(1)
        }
    }
}
