//! `run`: the whole comparison.
//!
//! 0. As root, `net.ipv4.tcp_mem` is raised for the length of the run
//!    (not with `--keep-tcp-mem` or `--variants-only`) and restored after;
//!    the thresholds in force are recorded either way.
//! 1. Memory: for each server, a fresh instance; its RSS before and after
//!    `idle` opens the idle connections.
//! 2. All three servers are started (each pinned to CPU 0 by default, with
//!    a raised fd limit, on its own free loopback port) and stay up for the
//!    rest.
//! 3. Latency cell, then the throughput matrix. For each cell and repeat the
//!    three servers are measured back to back, so slow drift of the machine
//!    affects all three alike. The load generator runs pinned to CPU 1 (by
//!    default) and samples the server's CPU time itself over its measured
//!    window; after each run we wait for the server to go quiet before the
//!    next one.
//! 4. Variant cells, each repeat measuring the servers of a group back to
//!    back like the main cells: TLS (all three servers with a self-signed
//!    certificate made for the run) and permessage-deflate (wsloop
//!    `--deflate` against wsloop uncompressed, with the same text payload).
//!    `--variants-only` runs just these.
//! 5. `results.json`, `results.md`, `echo-throughput.svg`.
//!
//! Every child process is held in a [`ChildGuard`], so it is stopped on any
//! return path, error or panic included.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustls::ClientConfig;

use crate::handshake::{self, Dial};
use crate::load::LoadReport;
use crate::report::{
    self, CellResult, LatencyResult, MemoryResult, Meta, Results, SERVERS, Spread, VARIANTS,
    VariantResult,
};
use crate::sys::{self, ChildGuard};

/// Raise the server's fd limit (as root the hard one too), then exec it.
pub(crate) const SERVER_SHELL: &str =
    r#"ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@""#;

/// Command-line options of `run`.
#[derive(Debug, clap::Args)]
pub struct RunOptions {
    /// Smoke-test matrix: 1 s cells, fewer cells, one repeat, 1,000 idle connections.
    #[arg(long)]
    pub quick: bool,
    /// Run only the TLS and compression cells (no memory, latency or main matrix).
    #[arg(long)]
    pub variants_only: bool,
    /// Output directory [default: <repo>/benches/results].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// wsloop binary [default: <repo>/target/release/wsloop].
    #[arg(long)]
    pub wsloop: Option<PathBuf>,
    /// Runs per cell; the median is reported [default: 3, 1 with --quick].
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Override the measured window per cell, in seconds.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Override the warm-up per cell, in seconds.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// CPUs the servers are pinned to (`taskset -c` list).
    #[arg(long, default_value = "0")]
    pub server_cpu: String,
    /// CPUs the load generator and the idle client are pinned to.
    #[arg(long, default_value = "1")]
    pub client_cpu: String,
    /// Leave `net.ipv4.tcp_mem` alone (by default a run as root raises it
    /// for its length, so the largest cell measures the servers rather than
    /// the kernel's drops, and restores it after).
    #[arg(long)]
    pub keep_tcp_mem: bool,
}

/// The variant cells: many small messages pipelined, and many connections
/// with one large message each.
const VARIANT_CELLS: [(usize, usize, usize); 2] = [(10, 1024, 16), (100, 16384, 1)];

/// The matrix and timings of one run.
struct Plan {
    connections: Vec<usize>,
    payloads: Vec<usize>,
    in_flight: Vec<usize>,
    seconds: f64,
    warmup: f64,
    repeat: usize,
    idle_connections: usize,
    /// Cells of the TLS and compression variants.
    variant_cells: Vec<(usize, usize, usize)>,
}

impl Plan {
    fn new(options: &RunOptions) -> Plan {
        let mut plan = if options.quick {
            Plan {
                connections: vec![1, 100],
                payloads: vec![20, 16384],
                in_flight: vec![1, 16],
                seconds: 1.0,
                warmup: 0.5,
                repeat: 1,
                idle_connections: 1_000,
                variant_cells: VARIANT_CELLS.to_vec(),
            }
        } else {
            Plan {
                connections: vec![1, 10, 100, 500],
                payloads: vec![20, 1024, 16384, 262144],
                in_flight: vec![1, 16],
                seconds: 3.0,
                warmup: 1.0,
                repeat: 3,
                idle_connections: 10_000,
                variant_cells: VARIANT_CELLS.to_vec(),
            }
        };
        plan.repeat = options.repeat.unwrap_or(plan.repeat).max(1);
        plan.seconds = options.seconds.unwrap_or(plan.seconds);
        plan.warmup = options.warmup.unwrap_or(plan.warmup);
        plan
    }

    fn cells(&self) -> Vec<(usize, usize, usize)> {
        let mut cells = Vec::new();
        for &connections in &self.connections {
            for &payload in &self.payloads {
                for &in_flight in &self.in_flight {
                    cells.push((connections, payload, in_flight));
                }
            }
        }
        cells
    }
}

/// Paths every step needs.
struct Context {
    /// This binary (peers, `load`, `idle`).
    exe: PathBuf,
    wsloop: PathBuf,
    logs: PathBuf,
    server_cpu: String,
    client_cpu: String,
    /// wsloop's configuration file for the run, if it takes one (see
    /// [`write_wsloop_config`]).
    wsloop_config: Option<PathBuf>,
    /// The run's self-signed certificate (PEM) and its key, for the TLS cells.
    tls_cert: PathBuf,
    tls_key: PathBuf,
    /// Client settings trusting `tls_cert` (the servers' readiness check).
    tls_client: Arc<ClientConfig>,
}

/// How a server is run and loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// The main matrix: plain TCP, binary payload.
    Plain,
    /// TLS on the server and in the load generator.
    Tls,
    /// wsloop `--deflate`, load generator `--deflate` (text payload).
    Deflate,
    /// No compression, the text payload of `Deflate` (`--text`).
    PlainText,
}

impl Variant {
    /// Name in the results ([`VARIANTS`]); the main matrix has none.
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Tls => VARIANTS[0],
            Variant::Deflate => VARIANTS[1],
            Variant::PlainText => VARIANTS[2],
        }
    }

    /// The server's log file name.
    fn log_name(self, server: Server) -> String {
        match self {
            Variant::Plain => format!("{}.log", server.name()),
            variant => format!("{}-{}.log", server.name(), variant.name()),
        }
    }
}

/// The benchmarked servers.
#[derive(Clone, Copy, Debug)]
enum Server {
    Wsloop,
    TokioTungstenite,
    Fastwebsockets,
}

impl Server {
    const ALL: [Server; 3] = [
        Server::Wsloop,
        Server::TokioTungstenite,
        Server::Fastwebsockets,
    ];

    fn name(self) -> &'static str {
        match self {
            Server::Wsloop => SERVERS[0],
            Server::TokioTungstenite => SERVERS[1],
            Server::Fastwebsockets => SERVERS[2],
        }
    }
}

/// A running server, stopped (SIGTERM, then SIGKILL) when dropped.
struct ServerProcess {
    server: Server,
    variant: Variant,
    addr: SocketAddr,
    process: ChildGuard,
}

impl ServerProcess {
    /// Starts `server` as `variant` asks on a free loopback port, pinned to
    /// the server CPU with a raised fd limit, and waits until it completes
    /// a WebSocket handshake (over TLS, or with deflate agreed, likewise).
    fn start(server: Server, variant: Variant, context: &Context) -> io::Result<ServerProcess> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let listen = addr.to_string();
        let wsloop_config = context
            .wsloop_config
            .as_ref()
            .map(|path| path.to_string_lossy());
        let (program, mut args): (&Path, Vec<&str>) = match server {
            Server::Wsloop => {
                let mut args = vec!["--echo", "--listen", &listen, "--log-level", "error"];
                if let Some(config) = &wsloop_config {
                    args.extend(["--config", config]);
                }
                (&context.wsloop, args)
            }
            Server::TokioTungstenite => (
                &context.exe,
                vec!["serve", "tokio-tungstenite", "--listen", &listen],
            ),
            Server::Fastwebsockets => (
                &context.exe,
                vec!["serve", "fastwebsockets", "--listen", &listen],
            ),
        };
        let (cert, key) = (
            context.tls_cert.to_string_lossy(),
            context.tls_key.to_string_lossy(),
        );
        match variant {
            Variant::Plain | Variant::PlainText => {}
            Variant::Tls => args.extend(["--tls-cert", &cert, "--tls-key", &key]),
            Variant::Deflate if matches!(server, Server::Wsloop) => args.push("--deflate"),
            Variant::Deflate => {
                return Err(io::Error::other(format!(
                    "{} has no permessage-deflate variant",
                    server.name()
                )));
            }
        }
        let dial = Dial {
            addr,
            tls: (variant == Variant::Tls).then(|| context.tls_client.clone()),
            deflate: variant == Variant::Deflate,
            path: "/",
        };
        let log_path = context.logs.join(variant.log_name(server));
        let log = File::options().create(true).append(true).open(&log_path)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(SERVER_SHELL)
            .arg("sh")
            .args(["taskset", "-c", &context.server_cpu])
            .arg(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut process = ChildGuard::new(child);

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = process.child().try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited at start ({status}); see {}",
                    server.name(),
                    log_path.display()
                )));
            }
            let probe = handshake::open_all(&dial, 1, 1, |_| {});
            if probe.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{} ({}) did not come up on {addr}: {}",
                    server.name(),
                    variant.name(),
                    probe
                        .err()
                        .map(|error| error.to_string())
                        .unwrap_or_default()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let affinity = cpus_allowed(process.id()).unwrap_or_default();
        if affinity != context.server_cpu {
            eprintln!(
                "warning: {} runs on CPUs {affinity:?}, not {}",
                server.name(),
                context.server_cpu
            );
        }
        Ok(ServerProcess {
            server,
            variant,
            addr,
            process,
        })
    }

    /// Progress label: the server, and its variant unless plain.
    fn label(&self) -> String {
        match self.variant {
            Variant::Plain => self.server.name().to_string(),
            variant => format!("{} {}", self.server.name(), variant.name()),
        }
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }

    /// `Err` with a reason when the server is no longer running.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.process.child().try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} is not running ({status})", self.server.name())),
            Err(error) => Err(format!("{}: {error}", self.server.name())),
        }
    }
}

/// A port nobody listens on right now.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `Cpus_allowed_list` of a process.
fn cpus_allowed(pid: u32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|line| line.starts_with("Cpus_allowed_list:"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Runs everything and writes the report.
pub fn run(options: RunOptions) -> io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| root.join("benches/results"));
    let wsloop = options
        .wsloop
        .clone()
        .unwrap_or_else(|| root.join("target/release/wsloop"));
    if !wsloop.is_file() {
        return Err(io::Error::other(format!(
            "{} not found: run `cargo build --release` at the repository root first (or pass --wsloop)",
            wsloop.display()
        )));
    }
    let logs = out.join("logs");
    fs::create_dir_all(&logs)?;
    for server in Server::ALL {
        // Server logs are appended to within a run; start each run afresh.
        for variant in [
            Variant::Plain,
            Variant::Tls,
            Variant::Deflate,
            Variant::PlainText,
        ] {
            let _ = fs::remove_file(logs.join(variant.log_name(server)));
        }
    }
    let (tls_cert, tls_key) = write_certificate(&logs)?;
    let wsloop = wsloop.canonicalize()?;
    let wsloop_config = write_wsloop_config(&logs, &wsloop)?;
    let context = Context {
        exe: std::env::current_exe()?,
        wsloop,
        tls_client: handshake::tls_client_config(&tls_cert)?,
        tls_cert,
        tls_key,
        logs,
        server_cpu: options.server_cpu.clone(),
        client_cpu: options.client_cpu.clone(),
        wsloop_config,
    };
    let plan = Plan::new(&options);
    let cells = if options.variants_only {
        Vec::new()
    } else {
        plan.cells()
    };
    let main_runs = if options.variants_only {
        0
    } else {
        (cells.len() + 1) * plan.repeat * Server::ALL.len()
    };
    let variant_groups = variant_groups();
    let variant_runs =
        plan.variant_cells.len() * plan.repeat * variant_groups.iter().map(Vec::len).sum::<usize>();
    let runs_total = main_runs + variant_runs;
    let (scope, memory, per_run_overhead) = if options.variants_only {
        (
            format!("{} variant cells", plan.variant_cells.len()),
            String::new(),
            0.6,
        )
    } else {
        (
            format!(
                "{} cells + latency cell + {} variant cells",
                cells.len(),
                plan.variant_cells.len()
            ),
            format!(
                "; memory with {} idle connections first",
                plan.idle_connections
            ),
            0.4,
        )
    };
    eprintln!(
        "{scope}, {} repeat(s), {} s + {} s warm-up each: {} load runs, roughly {:.0} s{memory}. \
         Server logs: {}",
        plan.repeat,
        plan.seconds,
        plan.warmup,
        runs_total,
        runs_total as f64 * (plan.seconds + plan.warmup + per_run_overhead),
        context.logs.display(),
    );
    // The thresholds in force are recorded whatever happens to them.
    let tcp_mem_found = sys::read_tcp_mem().ok();
    let tcp_mem = match tcp_mem_found {
        Some(before) if !options.keep_tcp_mem && !options.variants_only => {
            match sys::TcpMemRaise::apply(before) {
                Ok(Some(raised)) => {
                    let show = sys::tcp_mem_text;
                    eprintln!(
                        "net.ipv4.tcp_mem raised from \"{}\" to \"{}\" pages for this run; it is \
                         restored at the end (if the run is killed: sysctl -w net.ipv4.tcp_mem=\"{}\")",
                        show(raised.before),
                        show(raised.during),
                        show(raised.before),
                    );
                    Some(raised)
                }
                Ok(None) => None,
                Err(error) => {
                    eprintln!(
                        "net.ipv4.tcp_mem left as it is ({error}); the largest cells may see the \
                         kernel drop segments"
                    );
                    None
                }
            }
        }
        _ => None,
    };
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut progress = Progress {
        done: 0,
        total: runs_total,
    };

    let (memory, latency, results_cells) = if options.variants_only {
        (Vec::new(), Vec::new(), Vec::new())
    } else {
        main_matrix(&context, &plan, &cells, &mut progress)?
    };
    let variants = variant_cells(&context, &plan, &variant_groups, &mut progress)?;
    let tcp_mem_setting = tcp_mem_found.map(|before| {
        let during = tcp_mem.as_ref().map_or(before, |raised| raised.during);
        let restore_failed = match tcp_mem.map(sys::TcpMemRaise::restore) {
            Some(Err(error)) => {
                eprintln!("could not restore net.ipv4.tcp_mem: {error}");
                true
            }
            _ => false,
        };
        report::TcpMemSetting {
            before,
            during,
            restore_failed,
        }
    });

    // 5. Report.
    let results = Results {
        meta: Meta {
            quick: options.quick,
            variants_only: options.variants_only,
            repeat: plan.repeat,
            cell_seconds: plan.seconds,
            warmup_seconds: plan.warmup,
            idle_connections: if options.variants_only {
                0
            } else {
                plan.idle_connections
            },
            server_cpu: context.server_cpu.clone(),
            client_cpu: context.client_cpu.clone(),
            wsloop_binary: context.wsloop.display().to_string(),
            wsloop_git_rev: git_revision(&root),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cpu_model: cpu_model(),
            tcp_mem: tcp_mem_setting,
            started_unix,
            total_seconds: started.elapsed().as_secs_f64(),
        },
        latency,
        memory,
        cells: results_cells,
        variants,
    };
    report::write_all(&results, &out)?;
    if results.cells.is_empty() {
        eprintln!(
            "wrote {}/results.json and results.md (no main matrix: echo-throughput.svg left as it was)",
            out.display()
        );
    } else {
        eprintln!(
            "wrote {}/results.json, results.md, echo-throughput.svg",
            out.display()
        );
    }
    Ok(())
}

/// Steps 1 to 3: memory, then the latency cell and the throughput matrix.
fn main_matrix(
    context: &Context,
    plan: &Plan,
    cells: &[(usize, usize, usize)],
    progress: &mut Progress,
) -> io::Result<(Vec<MemoryResult>, Vec<LatencyResult>, Vec<CellResult>)> {
    // 1. Memory, each on a fresh server.
    let memory: Vec<MemoryResult> = Server::ALL
        .iter()
        .map(|&server| memory_cell(server, context, plan.idle_connections))
        .collect();

    // 2. All three servers up for the load runs.
    let mut servers = Server::ALL
        .iter()
        .map(|&server| ServerProcess::start(server, Variant::Plain, context))
        .collect::<io::Result<Vec<_>>>()?;

    // 3a. Latency cell.
    let latency_runs = repeat_cell(context, &mut servers, (1, 20, 1), plan, true, progress);
    let latency = servers
        .iter()
        .zip(latency_runs)
        .map(|(server, runs)| LatencyResult::from_runs(server.server.name(), runs))
        .collect();

    // 3b. Throughput matrix.
    let mut results_cells = Vec::new();
    for &cell in cells {
        let runs = repeat_cell(context, &mut servers, cell, plan, false, progress);
        for (server, runs) in servers.iter().zip(runs) {
            results_cells.push(CellResult::from_runs(
                server.server.name(),
                cell.0,
                cell.1,
                cell.2,
                runs,
            ));
        }
    }
    Ok((memory, latency, results_cells))
}

/// Spread (max − min over median of msgs/s) above which a cell counts as
/// noisy and gets [`EXTRA_REPEATS`] more rounds.
pub const NOISY_SPREAD_PERCENT: f64 = 25.0;

/// Rounds added to a noisy cell (with at least [`EXTRA_REPEATS_FROM`]
/// planned), so its median rests on five runs per server instead of three.
pub const EXTRA_REPEATS: usize = 2;

/// Planned repeats from which noisy cells get extra rounds (a single-run
/// smoke test has no spread to judge).
pub const EXTRA_REPEATS_FROM: usize = 3;

/// Steal (percent of both CPUs over a run's window) from which a run is
/// thrown away and taken again: such runs came out at about three quarters
/// of their cell's median, whichever server they measured.
pub const STEAL_RETAKE_PERCENT: f64 = 10.0;

/// How many times one run is taken again for steal at most.
pub const STEAL_RETAKES: usize = 2;

/// Whether the hypervisor stole so much during `run` that it is taken again.
fn stolen_from(run: &LoadReport) -> bool {
    run.failure.is_none()
        && run
            .steal_percent
            .is_some_and(|steal| steal >= STEAL_RETAKE_PERCENT)
}

/// Of the attempts at one run, the one with the least steal (the first of
/// equals), with the others' steal recorded in it. The choice looks at the
/// machine, never at the result, so it favours no server.
fn least_stolen(attempts: Vec<LoadReport>) -> LoadReport {
    let steal = |run: &LoadReport| run.steal_percent.unwrap_or(0.0);
    let kept = attempts
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| steal(a).total_cmp(&steal(b)))
        .map_or(0, |(index, _)| index);
    let discarded = attempts
        .iter()
        .enumerate()
        .filter(|&(index, _)| index != kept)
        .map(|(_, run)| steal(run))
        .collect();
    let mut run = attempts.into_iter().nth(kept).unwrap_or_default();
    run.retaken_for_steal = discarded;
    run
}

/// Runs `cell` `plan.repeat` times on every server, the servers back to
/// back within each repeat (so slow drifts of the machine hit all alike),
/// recording round-trip times with `latency`; returns the runs per server.
/// When any server's runs spread more than [`NOISY_SPREAD_PERCENT`], every
/// server gets [`EXTRA_REPEATS`] more rounds before the medians are taken.
/// A run with [`STEAL_RETAKE_PERCENT`] or more steal is taken again, up to
/// [`STEAL_RETAKES`] times, and the attempt with the least steal is kept.
fn repeat_cell(
    context: &Context,
    servers: &mut [ServerProcess],
    cell: (usize, usize, usize),
    plan: &Plan,
    latency: bool,
    progress: &mut Progress,
) -> Vec<Vec<LoadReport>> {
    let server_count = servers.len();
    let mut runs: Vec<Vec<LoadReport>> = vec![Vec::new(); server_count];
    let mut round = |runs: &mut Vec<Vec<LoadReport>>, progress: &mut Progress| {
        for (index, server) in servers.iter_mut().enumerate() {
            let mut attempts = vec![run_load(context, server, cell, plan, latency)];
            while attempts.len() <= STEAL_RETAKES
                && attempts.last().is_some_and(stolen_from)
                && plan.repeat >= EXTRA_REPEATS_FROM
            {
                progress.retake(server, cell, attempts.last().expect("one attempt at least"));
                attempts.push(run_load(context, server, cell, plan, latency));
            }
            let run = least_stolen(attempts);
            progress.report(server, cell, &run);
            runs[index].push(run);
        }
    };
    for _ in 0..plan.repeat {
        round(&mut runs, progress);
    }
    let noisy = runs.iter().any(|server_runs| {
        Spread::of(server_runs.iter().map(|run| run.msgs_per_sec)).percent() > NOISY_SPREAD_PERCENT
    });
    if plan.repeat >= EXTRA_REPEATS_FROM && noisy {
        progress.extend(EXTRA_REPEATS * server_count);
        for _ in 0..EXTRA_REPEATS {
            round(&mut runs, progress);
        }
    }
    runs
}

/// The variant groups: the servers of a group are up together and measured
/// back to back within each repeat of a cell, like the main matrix.
fn variant_groups() -> Vec<Vec<(Server, Variant)>> {
    vec![
        Server::ALL
            .iter()
            .map(|&server| (server, Variant::Tls))
            .collect(),
        vec![
            (Server::Wsloop, Variant::Deflate),
            (Server::Wsloop, Variant::PlainText),
        ],
    ]
}

/// Step 4: the TLS and compression cells, group by group.
fn variant_cells(
    context: &Context,
    plan: &Plan,
    groups: &[Vec<(Server, Variant)>],
    progress: &mut Progress,
) -> io::Result<Vec<VariantResult>> {
    let mut results = Vec::new();
    for group in groups {
        let mut servers = group
            .iter()
            .map(|&(server, variant)| ServerProcess::start(server, variant, context))
            .collect::<io::Result<Vec<_>>>()?;
        for &cell in &plan.variant_cells {
            let runs = repeat_cell(context, &mut servers, cell, plan, false, progress);
            for (server, runs) in servers.iter().zip(runs) {
                results.push(VariantResult::from_runs(
                    server.variant.name(),
                    server.server.name(),
                    cell,
                    runs,
                ));
            }
        }
    }
    Ok(results)
}

/// The configuration key that tells a wsloop binary with per-address
/// limits (one built before them rejects a file that sets it).
const PER_ADDRESS_KEY: &[u8] = b"max_connections_per_address";

/// Writes wsloop's configuration for the run into `dir` if the binary
/// `wsloop` has per-address limits: its defaults but those limits, which a
/// load generator connecting from one address passes (10,000 connections
/// in the memory step, handshakes 100 at a time; the peers have no such
/// limits). Whether it has them is read from the binary, which holds the
/// names of its configuration keys.
pub(crate) fn write_wsloop_config(dir: &Path, wsloop: &Path) -> io::Result<Option<PathBuf>> {
    let binary = fs::read(wsloop)?;
    if !binary
        .windows(PER_ADDRESS_KEY.len())
        .any(|window| window == PER_ADDRESS_KEY)
    {
        return Ok(None);
    }
    let path = dir.join("wsloop.toml");
    fs::write(
        &path,
        "# Every connection comes from 127.0.0.1.\n\
         [limits]\n\
         max_connections_per_address = 100000\n\
         max_handshakes_per_address = 100000\n",
    )?;
    Ok(Some(path))
}

/// Makes a self-signed certificate for `localhost` and writes it and its
/// key (PEM) into `dir`; returns their paths.
fn write_certificate(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let generated =
        rcgen::generate_simple_self_signed(vec![handshake::TLS_SERVER_NAME.to_string()])
            .map_err(io::Error::other)?;
    let cert = dir.join("tls-cert.pem");
    let key = dir.join("tls-key.pem");
    fs::write(&cert, generated.cert.pem())?;
    let _ = fs::remove_file(&key);
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)?
        .write_all(generated.signing_key.serialize_pem().as_bytes())?;
    Ok((cert, key))
}

/// Progress lines on stderr.
struct Progress {
    done: usize,
    total: usize,
}

impl Progress {
    /// Counts `runs` more runs than planned (a noisy cell's extra rounds).
    fn extend(&mut self, runs: usize) {
        self.total += runs;
    }

    /// Reports an attempt thrown away for steal; one more run to go.
    fn retake(&mut self, server: &ServerProcess, cell: (usize, usize, usize), run: &LoadReport) {
        self.total += 1;
        let head = self.line_head(server, cell, run);
        eprintln!(
            "{head}  steal {:>2.0}%: taken again",
            run.steal_percent.unwrap_or(f64::NAN)
        );
    }

    fn report(&mut self, server: &ServerProcess, cell: (usize, usize, usize), run: &LoadReport) {
        let head = self.line_head(server, cell, run);
        let latency = run
            .p50_us
            .map(|p50| format!("  p50 {p50:.1} µs"))
            .unwrap_or_default();
        eprintln!(
            "{head} {:>8.1} MB/s  server {:>3.0}%  client {:>3.0}%  steal {:>2.0}%  tcp drops {}  errors {}{latency}{}",
            run.mb_per_sec,
            run.server_cpu_percent.unwrap_or(f64::NAN),
            run.client_cpu_percent,
            run.steal_percent.unwrap_or(f64::NAN),
            run.tcp_drops.map_or("?".to_string(), |n| n.to_string()),
            run.errors,
            run.failure
                .as_deref()
                .map(|failure| format!("  FAILED: {failure}"))
                .unwrap_or_default(),
        );
    }

    /// Counts one run done and gives the start of its line: the count,
    /// the server, the cell and the rate.
    fn line_head(
        &mut self,
        server: &ServerProcess,
        (connections, payload, in_flight): (usize, usize, usize),
        run: &LoadReport,
    ) -> String {
        self.done += 1;
        format!(
            "[{:>3}/{}] {:<28} c={:<3} p={:<6} k={:<2} {:>10.0} msg/s",
            self.done,
            self.total,
            server.label(),
            connections,
            payload,
            in_flight,
            run.msgs_per_sec,
        )
    }
}

/// One `load` run against `server`; a failed run is returned as a report
/// with `failure` set and every connection counted as an error.
fn run_load(
    context: &Context,
    server: &mut ServerProcess,
    (connections, payload, in_flight): (usize, usize, usize),
    plan: &Plan,
    latency: bool,
) -> LoadReport {
    let failed = |why: String| LoadReport {
        connections,
        payload,
        in_flight,
        errors: connections as u64,
        failure: Some(why),
        ..LoadReport::default()
    };
    if let Err(why) = server.check_alive() {
        return failed(why);
    }
    let mut command = Command::new("taskset");
    command
        .args(["-c", &context.client_cpu])
        .arg(&context.exe)
        .arg("load")
        .args(["--addr", &server.addr.to_string()])
        .args(["--connections", &connections.to_string()])
        .args(["--payload", &payload.to_string()])
        .args(["--in-flight", &in_flight.to_string()])
        .args(["--seconds", &plan.seconds.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if latency {
        command.arg("--latency");
    }
    match server.variant {
        Variant::Plain => {}
        Variant::Tls => {
            command.arg("--tls").arg("--tls-ca").arg(&context.tls_cert);
        }
        Variant::Deflate => {
            command.arg("--deflate");
        }
        Variant::PlainText => {
            command.arg("--text");
        }
    }
    let result =
        (|| -> io::Result<Result<LoadReport, String>> {
            let mut client = ChildGuard::new(command.spawn()?);
            let limit = Duration::from_secs_f64(plan.seconds + plan.warmup + 60.0);
            let deadline = Instant::now() + limit;
            let status = loop {
                if let Some(status) = client.child().try_wait()? {
                    break status;
                }
                if Instant::now() > deadline {
                    return Ok(Err(format!("load generator still running after {limit:?}")));
                }
                thread::sleep(Duration::from_millis(10));
            };
            let mut stdout = String::new();
            let mut stderr = String::new();
            if let Some(mut pipe) = client.child().stdout.take() {
                pipe.read_to_string(&mut stdout)?;
            }
            if let Some(mut pipe) = client.child().stderr.take() {
                pipe.read_to_string(&mut stderr)?;
            }
            if !status.success() {
                return Ok(Err(format!(
                    "load generator failed ({status}): {}",
                    stderr.trim()
                )));
            }
            if !stderr.trim().is_empty() {
                eprintln!("{}", stderr.trim_end());
            }
            let line = stdout.lines().last().unwrap_or_default();
            Ok(serde_json::from_str(line)
                .map_err(|error| format!("bad load output {line:?}: {error}")))
        })();
    sys::wait_until_quiet(server.pid(), Duration::from_secs(3));
    match result {
        Ok(Ok(report)) => report,
        Ok(Err(why)) => failed(why),
        Err(error) => failed(error.to_string()),
    }
}

/// RSS of a fresh `server` before and after `idle` opens `connections`
/// idle WebSocket connections to it.
fn memory_cell(server: Server, context: &Context, connections: usize) -> MemoryResult {
    eprintln!(
        "memory: {} with {connections} idle connections",
        server.name()
    );
    let mut result = MemoryResult {
        server: server.name().to_string(),
        connections,
        ..MemoryResult::default()
    };
    if let Err(error) = measure_memory(server, context, &mut result) {
        eprintln!("memory: {}: {error}", server.name());
        result.error = Some(error.to_string());
    }
    result
}

fn measure_memory(server: Server, context: &Context, result: &mut MemoryResult) -> io::Result<()> {
    let process = ServerProcess::start(server, Variant::Plain, context)?;
    if let Some(limit) = sys::open_files_limit(process.pid())
        && limit < result.connections as u64 + 64
    {
        return Err(io::Error::other(format!(
            "the server may open only {limit} files, too few for {} connections",
            result.connections
        )));
    }
    thread::sleep(Duration::from_millis(300));
    result.rss_before_bytes = sys::vm_rss_bytes(process.pid())?;

    let mut idle = ChildGuard::new(
        Command::new("taskset")
            .args(["-c", &context.client_cpu])
            .arg(&context.exe)
            .arg("idle")
            .args(["--addr", &process.addr.to_string()])
            .args(["--connections", &result.connections.to_string()])
            .args(["--hold-seconds", "600"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    // Wait for the "open" line without blocking forever on a stuck client.
    let stdout = idle
        .child()
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no idle stdout"))?;
    let (lines_tx, lines_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let opened = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(wait) {
            Ok(line) if line.contains(r#""event":"open""#) => break line,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(io::Error::other("idle client timed out"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = idle.child().wait()?;
                return Err(io::Error::other(format!(
                    "idle client exited ({status}) before opening everything"
                )));
            }
        }
    };
    let opened: serde_json::Value = serde_json::from_str(&opened).map_err(io::Error::other)?;
    result.open_seconds = opened["seconds"].as_f64().unwrap_or_default();
    // Let the server finish whatever the last handshakes started.
    thread::sleep(Duration::from_secs(1));
    result.rss_after_bytes = sys::vm_rss_bytes(process.pid())?;
    result.per_connection_bytes = (result.rss_after_bytes as f64 - result.rss_before_bytes as f64)
        / result.connections as f64;
    eprintln!(
        "memory: {}: {:.1} MiB -> {:.1} MiB, {:.0} B per connection",
        server.name(),
        result.rss_before_bytes as f64 / 1048576.0,
        result.rss_after_bytes as f64 / 1048576.0,
        result.per_connection_bytes
    );
    drop(idle);
    drop(process);
    Ok(())
}

/// Short git revision of the repository's HEAD, if git is there. Read-only
/// (no index refresh), so it never races with other git users of the tree.
fn git_revision(root: &Path) -> Option<String> {
    let output = Command::new("git")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(msgs_per_sec: f64, steal: f64) -> LoadReport {
        LoadReport {
            msgs_per_sec,
            steal_percent: Some(steal),
            ..LoadReport::default()
        }
    }

    #[test]
    fn the_attempt_with_the_least_steal_is_kept_whatever_its_result() {
        // The slowest attempt is kept: it had the least steal.
        let kept = least_stolen(vec![
            attempt(900.0, 30.0),
            attempt(500.0, 2.0),
            attempt(1000.0, 12.0),
        ]);
        assert_eq!(kept.msgs_per_sec, 500.0);
        assert_eq!(kept.retaken_for_steal, [30.0, 12.0]);
        // A single attempt is kept as it is.
        let kept = least_stolen(vec![attempt(700.0, 40.0)]);
        assert_eq!(kept.msgs_per_sec, 700.0);
        assert!(kept.retaken_for_steal.is_empty());
    }

    #[test]
    fn only_runs_with_heavy_steal_are_taken_again() {
        assert!(stolen_from(&attempt(1.0, STEAL_RETAKE_PERCENT)));
        assert!(!stolen_from(&attempt(1.0, STEAL_RETAKE_PERCENT - 0.1)));
        assert!(!stolen_from(&LoadReport::default()));
        let failed = LoadReport {
            failure: Some("server gone".into()),
            ..attempt(0.0, 50.0)
        };
        assert!(!stolen_from(&failed));
    }
}
