//! The `wsloop` command line.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wsloop::config::{self, Overrides, Settings};
use wsloop::notebook::{NotebookHandler, access};
use wsloop::{EchoHandler, Handler, Server};

/// wsloop: a low-latency RFC 6455 WebSocket server on a single-threaded
/// event loop. Without a subcommand it serves a notebook (Apache
/// Zeppelin's op protocol on /ws, the notebook page on /).
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "By default `wsloop` serves the notebook page at http://127.0.0.1:8081/ \
                  (open it in a browser; WebSocket at ws://127.0.0.1:8081/ws) and keeps notes \
                  and the %sql database in ./notebook. `wsloop --echo` serves the echo \
                  application instead."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Address to listen on: IP:PORT or HOST:PORT (a host name is resolved
    /// at start-up) [default: 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR", value_parser = config::listen_address)]
    listen: Option<SocketAddr>,

    /// Serve the echo application (every message goes back to its sender,
    /// on any path) instead of the notebook server.
    #[arg(long)]
    echo: bool,

    /// Directory holding the notes (`<path>_<id>.zpln`) and the `%sql`
    /// database; created if missing [default: notebook].
    #[arg(long, value_name = "DIR")]
    notebook_dir: Option<PathBuf>,

    /// Serve static files from DIR at `/` (e.g. a build of Zeppelin's web
    /// UI) instead of the built-in page; the API and /ws still win.
    #[arg(long, value_name = "DIR")]
    web_dir: Option<PathBuf>,

    /// Offer permessage-deflate compression (default: on for the notebook,
    /// off with --echo).
    #[arg(long, conflicts_with = "no_deflate")]
    deflate: bool,

    /// Never compress (decline permessage-deflate offers).
    #[arg(long)]
    no_deflate: bool,

    /// PEM certificate chain: serve wss:// and https:// (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// TOML configuration file (limits, timeouts, origins, users,
    /// interpreters); command-line options win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log level: off, error, warn, info, debug or trace [default: info;
    /// RUST_LOG also works].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<log::LevelFilter>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read a password from standard input and print its argon2id hash,
    /// for `password_hash` in the configuration file.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        return hash_password();
    }
    let overrides = Overrides {
        listen: cli.listen,
        echo: cli.echo,
        notebook_dir: cli.notebook_dir,
        log_level: cli.log_level,
        deflate: match (cli.deflate, cli.no_deflate) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        tls_cert: cli.tls_cert,
        tls_key: cli.tls_key,
        web_dir: cli.web_dir,
    };
    let settings = match config::load(cli.config.as_deref(), overrides) {
        Ok(settings) => settings,
        Err(problems) => {
            if let [problem] = problems.0.as_slice() {
                eprintln!("wsloop: invalid configuration: {problem}");
            } else {
                eprintln!(
                    "wsloop: invalid configuration ({} problems):",
                    problems.0.len()
                );
                for problem in &problems.0 {
                    eprintln!("  {problem}");
                }
            }
            return ExitCode::from(2);
        }
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = settings.log_level {
        logger.filter_level(level);
    }
    logger.init();

    if settings.echo {
        return serve(settings, EchoHandler, "echo");
    }
    let dir = settings.notebook.notebook_dir.clone();
    if let Err(error) = check_writable(&dir) {
        eprintln!(
            "wsloop: the notebook directory {} is not writable ({error}): notes could not be saved",
            dir.display()
        );
        return ExitCode::from(1);
    }
    match NotebookHandler::open(settings.notebook.clone()) {
        Ok(handler) => {
            log::info!(
                "notebook: {} note(s) in {}",
                handler.note_count(),
                dir.display()
            );
            serve(settings, handler, "notebook")
        }
        Err(error) => {
            eprintln!(
                "wsloop: cannot open the notebook directory {}: {error}",
                dir.display()
            );
            ExitCode::from(1)
        }
    }
}

/// Creates `dir` if missing and writes and removes a probe file in it, so
/// a directory the server cannot write stops start-up instead of failing
/// the first note someone creates.
fn check_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".wsloop-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

fn hash_password() -> ExitCode {
    eprintln!("password (one line on standard input):");
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!("wsloop: no password given");
        return ExitCode::from(2);
    }
    match access::hash_password(line.trim_end_matches(['\r', '\n'])) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wsloop: cannot hash: {error}");
            ExitCode::from(1)
        }
    }
}

/// Binds, logs the start-up line and runs the loop until shutdown.
fn serve<H: Handler>(settings: Settings, handler: H, application: &str) -> ExitCode {
    let config = settings.server;
    let listen = config.listen;
    let limits = config.limits.clone();
    let max_connections = config.max_connections;
    let tls = config.tls.is_some();
    let compression = match &config.deflate {
        Some(deflate) => format!(
            "permessage-deflate on (messages from {} bytes)",
            deflate.min_compress_size
        ),
        None => "permessage-deflate off".to_owned(),
    };
    let mut server = match Server::bind(config, handler) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("wsloop: cannot listen on {listen}: {error}");
            return ExitCode::from(1);
        }
    };
    let endpoint = if application == "echo" { "" } else { "/ws" };
    let (ws, http) = if tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    log::info!(
        "wsloop {application} listening on {ws}://{}{endpoint} (max {max_connections} connections; frame/message \
         limit {}/{} bytes; write buffer {}/{} bytes; ping every {:?}, pong within {:?}; close timeout {:?}; {compression})",
        server.local_addr(),
        limits.max_frame_size,
        limits.max_message_size,
        limits.write_buffer_soft,
        limits.write_buffer_hard,
        limits.ping_interval,
        limits.pong_timeout,
        limits.close_timeout,
    );
    if application != "echo" {
        log::info!("notebook page: {http}://{}/", server.local_addr());
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsloop: event loop failed: {error}");
            ExitCode::from(1)
        }
    }
}
