//! The `wsloop` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wsloop::notebook::{NotebookConfig, NotebookHandler};
use wsloop::{EchoHandler, Handler, Server, ServerConfig};

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

    /// Directory holding the notes (`<path>_<id>.zpln`) and the `%sql`
    /// database; created if missing.
    #[arg(long, default_value = "notebook", value_name = "DIR")]
    notebook_dir: PathBuf,

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
    if cli.echo {
        return serve(config, EchoHandler, "echo");
    }
    let notebook = NotebookConfig {
        notebook_dir: cli.notebook_dir.clone(),
        max_message_size: config.limits.max_message_size,
        ..NotebookConfig::default()
    };
    match NotebookHandler::open(notebook) {
        Ok(handler) => {
            log::info!(
                "notebook: {} note(s) in {}",
                handler.note_count(),
                cli.notebook_dir.display()
            );
            serve(config, handler, "notebook")
        }
        Err(error) => {
            eprintln!(
                "wsloop: cannot open the notebook directory {}: {error}",
                cli.notebook_dir.display()
            );
            ExitCode::from(1)
        }
    }
}

/// Binds, logs the start-up line and runs the loop until shutdown.
fn serve<H: Handler>(config: ServerConfig, handler: H, application: &str) -> ExitCode {
    let listen = config.listen;
    let limits = config.limits.clone();
    let max_connections = config.max_connections;
    let mut server = match Server::bind(config, handler) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("wsloop: cannot listen on {listen}: {error}");
            return ExitCode::from(1);
        }
    };
    let endpoint = if application == "echo" { "" } else { "/ws" };
    log::info!(
        "wsloop {application} listening on ws://{}{endpoint} (max {max_connections} connections, frame/message limit {}/{} bytes, ping every {:?})",
        server.local_addr(),
        limits.max_frame_size,
        limits.max_message_size,
        limits.ping_interval,
    );
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsloop: event loop failed: {error}");
            ExitCode::from(1)
        }
    }
}
