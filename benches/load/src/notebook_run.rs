//! `notebook-run`: the notebook under load. For every cell (C clients over
//! K = C / 10 notes, each client at a fixed op rate) and repeat, wsloop's
//! notebook application is started fresh on an empty notebook directory
//! (pinned to the server CPU) and `notebook-load` runs against it (pinned
//! to the client CPU). Writes `notebook.json` and `notebook.md`.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fanout_run::{free_addr, load_average, start_server};
use crate::notebook_load::NotebookReport;
use crate::report::{Spread, count};

/// `notebook-run` options.
#[derive(Debug, clap::Args)]
pub struct NotebookRunOptions {
    /// Output directory [default: <repo>/benches/results].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Base name of the files written.
    #[arg(long, default_value = "notebook")]
    pub name: String,
    /// wsloop binary [default: <repo>/target/release/wsloop].
    #[arg(long)]
    pub wsloop: Option<PathBuf>,
    /// Clients per cell, comma-separated; the notes are a tenth of them.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
    pub clients: Vec<usize>,
    /// Ops per second of each client.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Runs per cell; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Measured window per run, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Unmeasured warm-up per run, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// CPUs the server is pinned to (`taskset -c` list).
    #[arg(long, default_value = "0")]
    pub server_cpu: String,
    /// CPUs the load generator is pinned to.
    #[arg(long, default_value = "1")]
    pub client_cpu: String,
}

/// One cell's runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct NotebookCell {
    pub clients: usize,
    pub notes: usize,
    pub runs: Vec<NotebookReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// Everything one `notebook-run` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct NotebookResults {
    pub command: String,
    pub wsloop: String,
    pub rate: f64,
    pub repeat: usize,
    pub seconds: f64,
    pub warmup: f64,
    pub load_average_before: String,
    pub load_average_after: String,
    pub total_seconds: f64,
    pub cells: Vec<NotebookCell>,
}

/// Runs the notebook cells and writes the results.
pub fn run(options: NotebookRunOptions) -> io::Result<()> {
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
    // Raised per-address limits, for a binary that has them (an older one
    // runs with its defaults).
    let config = crate::orchestrate::write_wsloop_config(&logs, &wsloop)?;
    let exe = std::env::current_exe()?;
    let load_average_before = load_average();
    let mut cells = Vec::new();
    for &clients in &options.clients {
        let notes = (clients / 10).max(1);
        let mut cell = NotebookCell {
            clients,
            notes,
            runs: Vec::new(),
            failures: Vec::new(),
        };
        for round in 0..options.repeat.max(1) {
            eprint!("{clients} clients, {notes} notes, round {}: ", round + 1);
            let dir =
                std::env::temp_dir().join(format!("wsloop-bench-notebook-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            let addr = free_addr()?;
            let (listen, dir_text) = (addr.to_string(), dir.to_string_lossy().into_owned());
            let config_text = config.as_ref().map(|path| path.to_string_lossy());
            let mut args = vec![
                "--listen",
                &listen,
                "--notebook-dir",
                &dir_text,
                "--log-level",
                "error",
            ];
            if let Some(config) = &config_text {
                args.extend(["--config", config]);
            }
            let result = start_server(
                &wsloop,
                &args,
                (addr, "/ws"),
                &logs.join("notebook-wsloop.log"),
                &options.server_cpu,
            )
            .and_then(|server| {
                let output = Command::new("taskset")
                    .args(["-c", &options.client_cpu])
                    .arg(&exe)
                    .arg("notebook-load")
                    .args(["--addr", &listen])
                    .args(["--clients", &clients.to_string()])
                    .args(["--notes", &notes.to_string()])
                    .args(["--rate", &options.rate.to_string()])
                    .args(["--seconds", &options.seconds.to_string()])
                    .args(["--warmup", &options.warmup.to_string()])
                    .args(["--server-pid", &server.id().to_string()])
                    .stdin(Stdio::null())
                    .output()?;
                if !output.status.success() {
                    return Err(io::Error::other(format!(
                        "notebook-load: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    )));
                }
                serde_json::from_slice::<NotebookReport>(&output.stdout).map_err(io::Error::other)
            });
            let _ = fs::remove_dir_all(&dir);
            match result {
                Ok(report) => {
                    eprintln!(
                        "{:.0} ops/s, reply p99 {} µs, bystander ping p99 {} µs",
                        report.ops_per_sec,
                        report
                            .reply_p99_us
                            .map_or("–".into(), |v| format!("{v:.0}")),
                        report.ping_p99_us.map_or("–".into(), |v| format!("{v:.0}")),
                    );
                    cell.runs.push(report);
                }
                Err(error) => {
                    eprintln!("failed: {error}");
                    cell.failures.push(error.to_string());
                }
            }
        }
        cells.push(cell);
    }
    let all = NotebookResults {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        wsloop: wsloop.display().to_string(),
        rate: options.rate,
        repeat: options.repeat,
        seconds: options.seconds,
        warmup: options.warmup,
        load_average_before,
        load_average_after: load_average(),
        total_seconds: started.elapsed().as_secs_f64(),
        cells,
    };
    let json = serde_json::to_string_pretty(&all).map_err(io::Error::other)?;
    fs::write(out.join(format!("{}.json", options.name)), json + "\n")?;
    fs::write(out.join(format!("{}.md", options.name)), markdown(&all))?;
    Ok(())
}

/// The Markdown table of one notebook run.
pub fn markdown(all: &NotebookResults) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# The notebook under load\n");
    let _ = writeln!(
        md,
        "`{}` (wsloop: `{}`): {} run(s) per cell, {} s measured after {} s warm-up, a fresh server \
         on an empty notebook directory per run. Each client sends {} ops/s, commit and run of a `%md` \
         paragraph alternating, at most one outstanding; the bystander pings every 5 ms. Load average \
         {} before, {} after. Total {:.0} s. Medians over the runs; raw numbers in the `.json` beside \
         this file.\n",
        all.command,
        all.wsloop,
        all.repeat,
        all.seconds,
        all.warmup,
        all.rate,
        all.load_average_before,
        all.load_average_after,
        all.total_seconds
    );
    let _ = writeln!(
        md,
        "| clients | notes | ops/s (min–max) | late ops | reply p50 / p99 µs | broadcast p50 / p99 µs | bystander ping p50 / p99 / max µs | server µs per op | server CPU % | errors |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for cell in &all.cells {
        let spread = |value: fn(&NotebookReport) -> Option<f64>| {
            Spread::of(cell.runs.iter().filter_map(value))
        };
        let ops = spread(|run| Some(run.ops_per_sec));
        let _ = writeln!(
            md,
            "| {} | {} | {} ({}–{}) | {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.0} | {:.0} | {} |",
            cell.clients,
            cell.notes,
            count(ops.median),
            count(ops.min),
            count(ops.max),
            spread(|run| Some(run.ops_late as f64)).median,
            spread(|run| run.reply_p50_us).median,
            spread(|run| run.reply_p99_us).median,
            spread(|run| run.delivery_p50_us).median,
            spread(|run| run.delivery_p99_us).median,
            spread(|run| run.ping_p50_us).median,
            spread(|run| run.ping_p99_us).median,
            spread(|run| run.ping_max_us).median,
            spread(|run| run.server_us_per_op).median,
            spread(|run| run.server_cpu_percent).median,
            cell.runs.iter().map(|run| run.errors).sum::<u64>(),
        );
    }
    for cell in all.cells.iter().filter(|cell| !cell.failures.is_empty()) {
        let _ = writeln!(
            md,
            "\n{} clients: failed runs: {}",
            cell.clients,
            cell.failures.join("; ")
        );
    }
    md
}
