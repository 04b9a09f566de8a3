//! The results: their JSON form (`results.json`, every raw number), the
//! Markdown summary (`results.md`) and the chart (`echo-throughput.svg`,
//! the main matrix only).

use std::collections::BTreeSet;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cpu::CpuPerMessage;
use crate::load::LoadReport;
use crate::orchestrate::{
    EXTRA_REPEATS, EXTRA_REPEATS_FROM, NOISY_SPREAD_PERCENT, STEAL_RETAKE_PERCENT, STEAL_RETAKES,
};

/// Server names, in report order; the first is the one ratios are taken of.
pub const SERVERS: [&str; 3] = ["wsloop", "tokio-tungstenite", "fastwebsockets"];

/// Variant names, in report order: TLS (all three servers), permessage-deflate
/// (wsloop) and, for comparison with it, the same text payload uncompressed.
pub const VARIANTS: [&str; 3] = ["tls", "deflate", "plain-text"];

/// Everything one `run` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub latency: Vec<LatencyResult>,
    pub memory: Vec<MemoryResult>,
    pub cells: Vec<CellResult>,
    /// TLS and compression cells (absent from files written before them).
    #[serde(default)]
    pub variants: Vec<VariantResult>,
}

impl Results {
    /// Every throughput run kept: the main matrix's, then the variants'.
    fn throughput_runs(&self) -> impl Iterator<Item = &LoadReport> {
        self.cells
            .iter()
            .flat_map(|cell| cell.runs.iter())
            .chain(self.variants.iter().flat_map(|cell| cell.runs.iter()))
    }
}

/// How the run was made.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub quick: bool,
    /// `--variants-only`: no latency, memory or main matrix.
    #[serde(default)]
    pub variants_only: bool,
    pub repeat: usize,
    pub cell_seconds: f64,
    pub warmup_seconds: f64,
    pub idle_connections: usize,
    pub server_cpu: String,
    pub client_cpu: String,
    pub wsloop_binary: String,
    pub wsloop_git_rev: Option<String>,
    pub kernel: String,
    pub cpu_model: String,
    /// `net.ipv4.tcp_mem` at the start and during the run; `None` when it
    /// was not recorded (older runs, or unreadable).
    #[serde(default)]
    pub tcp_mem: Option<TcpMemSetting>,
    pub started_unix: u64,
    pub total_seconds: f64,
}

/// The kernel's TCP memory thresholds (`net.ipv4.tcp_mem`, pages) found at
/// the start of a run and in force during it (the same when the run left
/// them alone).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TcpMemSetting {
    pub before: [u64; 3],
    pub during: [u64; 3],
    /// Writing `before` back at the end failed.
    #[serde(default)]
    pub restore_failed: bool,
}

/// Median, minimum and maximum over the repeats of a cell.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Spread of `values` (empty gives zeros).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() {
            return Spread::default();
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        Spread {
            median,
            min: values[0],
            max: values[values.len() - 1],
        }
    }

    /// (max − min) / median, in percent.
    pub fn percent(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median * 100.0
        } else {
            0.0
        }
    }
}

/// One server in one throughput cell: its runs and their medians.
#[derive(Debug, Serialize, Deserialize)]
pub struct CellResult {
    pub connections: usize,
    pub payload: usize,
    pub in_flight: usize,
    pub server: String,
    pub msgs_per_sec: Spread,
    pub mb_per_sec: f64,
    pub server_cpu_percent: Option<f64>,
    /// Median over the runs of the server's time in its own code (utime),
    /// in percent of the window; the rest of its CPU time is the kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_user_percent: Option<f64>,
    pub client_cpu_percent: f64,
    /// Median over the runs of the load generator's time in its own code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_user_percent: Option<f64>,
    /// Median over the runs of the machine's CPU time stolen by the
    /// hypervisor during the window, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal_percent: Option<f64>,
    /// Median over the runs of TCP segments the kernel dropped on arrival
    /// machine-wide (receive memory exhausted, see [`LoadReport::tcp_drops`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_drops: Option<f64>,
    /// Errors summed over the runs.
    pub errors: u64,
    /// Server CPU time per echoed message, user and system apart (absent
    /// from files written before it; `render` fills it in from the runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_per_message: Option<CpuPerMessage>,
    pub runs: Vec<LoadReport>,
}

impl CellResult {
    pub fn from_runs(
        server: &str,
        connections: usize,
        payload: usize,
        in_flight: usize,
        runs: Vec<LoadReport>,
    ) -> Self {
        CellResult {
            connections,
            payload,
            in_flight,
            server: server.to_string(),
            msgs_per_sec: Spread::of(runs.iter().map(|run| run.msgs_per_sec)),
            mb_per_sec: Spread::of(runs.iter().map(|run| run.mb_per_sec)).median,
            server_cpu_percent: median_of(runs.iter().filter_map(|run| run.server_cpu_percent)),
            server_user_percent: median_of(runs.iter().filter_map(|run| run.server_user_percent)),
            client_cpu_percent: Spread::of(runs.iter().map(|run| run.client_cpu_percent)).median,
            client_user_percent: median_of(runs.iter().filter_map(|run| run.client_user_percent)),
            steal_percent: median_of(runs.iter().filter_map(|run| run.steal_percent)),
            tcp_drops: median_of(
                runs.iter()
                    .filter_map(|run| run.tcp_drops.map(|n| n as f64)),
            ),
            errors: runs.iter().map(|run| run.errors).sum(),
            cpu_per_message: CpuPerMessage::of_runs(&runs),
            runs,
        }
    }
}

/// Median of `values`, or `None` when there are none.
fn median_of(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let values: Vec<f64> = values.into_iter().collect();
    (!values.is_empty()).then(|| Spread::of(values).median)
}

/// One server in one variant cell (TLS, compression, or the uncompressed
/// text baseline): its runs and their medians.
#[derive(Debug, Serialize, Deserialize)]
pub struct VariantResult {
    /// One of [`VARIANTS`].
    pub variant: String,
    pub server: String,
    pub connections: usize,
    pub payload: usize,
    pub in_flight: usize,
    /// Median over the runs.
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    /// Median, min and max of msgs/s over the runs.
    pub spread: Spread,
    pub client_cpu_percent: f64,
    pub server_cpu_percent: Option<f64>,
    /// Errors summed over the runs.
    pub errors: u64,
    /// TLS version and cipher suite (TLS cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_suite: Option<String>,
    /// Compressed payload bytes of the message sent (deflate cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_compressed_bytes: Option<usize>,
    /// Median over the runs of the mean compressed echo payload (deflate cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_compressed_bytes: Option<f64>,
    pub runs: Vec<LoadReport>,
}

impl VariantResult {
    /// Summarises the runs of `server` in one variant cell.
    pub fn from_runs(
        variant: &str,
        server: &str,
        (connections, payload, in_flight): (usize, usize, usize),
        runs: Vec<LoadReport>,
    ) -> Self {
        let spread = Spread::of(runs.iter().map(|run| run.msgs_per_sec));
        VariantResult {
            variant: variant.to_string(),
            server: server.to_string(),
            connections,
            payload,
            in_flight,
            msgs_per_sec: spread.median,
            mb_per_sec: Spread::of(runs.iter().map(|run| run.mb_per_sec)).median,
            spread,
            client_cpu_percent: Spread::of(runs.iter().map(|run| run.client_cpu_percent)).median,
            server_cpu_percent: median_of(runs.iter().filter_map(|run| run.server_cpu_percent)),
            errors: runs.iter().map(|run| run.errors).sum(),
            tls_suite: runs.iter().find_map(|run| run.tls_suite.clone()),
            sent_compressed_bytes: runs.iter().find_map(|run| run.sent_compressed_bytes),
            echo_compressed_bytes: median_of(
                runs.iter().filter_map(|run| run.echo_compressed_bytes),
            ),
            runs,
        }
    }
}

/// One server in the latency cell (1 connection, 1 in flight, 20 B).
#[derive(Debug, Serialize, Deserialize)]
pub struct LatencyResult {
    pub server: String,
    pub p50_us: Spread,
    pub p99_us: Spread,
    pub p999_us: Spread,
    pub msgs_per_sec: f64,
    pub server_cpu_percent: Option<f64>,
    pub client_cpu_percent: f64,
    pub errors: u64,
    pub runs: Vec<LoadReport>,
}

impl LatencyResult {
    pub fn from_runs(server: &str, runs: Vec<LoadReport>) -> Self {
        LatencyResult {
            server: server.to_string(),
            p50_us: Spread::of(runs.iter().filter_map(|run| run.p50_us)),
            p99_us: Spread::of(runs.iter().filter_map(|run| run.p99_us)),
            p999_us: Spread::of(runs.iter().filter_map(|run| run.p999_us)),
            msgs_per_sec: Spread::of(runs.iter().map(|run| run.msgs_per_sec)).median,
            server_cpu_percent: median_of(runs.iter().filter_map(|run| run.server_cpu_percent)),
            client_cpu_percent: Spread::of(runs.iter().map(|run| run.client_cpu_percent)).median,
            errors: runs.iter().map(|run| run.errors).sum(),
            runs,
        }
    }
}

/// One server's resident memory before and after the idle connections.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MemoryResult {
    pub server: String,
    pub connections: usize,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    /// (after − before) / connections.
    pub per_connection_bytes: f64,
    /// Time the `idle` client took to open them all.
    pub open_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Writes `results.json`, `results.md` and `echo-throughput.svg` into `dir`.
pub fn write_all(results: &Results, dir: &Path) -> io::Result<()> {
    let json = serde_json::to_string_pretty(results).map_err(io::Error::other)?;
    fs::write(dir.join("results.json"), json + "\n")?;
    fs::write(dir.join("results.md"), markdown(results))?;
    write_charts(results, dir)
}

/// Rewrites `results.md` and (with a main matrix) `echo-throughput.svg` in
/// `dir` from its `results.json`, so the rendering can change without a
/// half-hour rerun.
pub fn render_again(dir: &Path) -> io::Result<()> {
    let path = dir.join("results.json");
    let json = fs::read_to_string(&path)
        .map_err(|error| io::Error::other(format!("{}: {error}", path.display())))?;
    let mut results: Results = serde_json::from_str(&json)
        .map_err(|error| io::Error::other(format!("{}: {error}", path.display())))?;
    if fill_in_derived(&mut results) {
        let json = serde_json::to_string_pretty(&results).map_err(io::Error::other)?;
        fs::write(&path, json + "\n")?;
    }
    fs::write(dir.join("results.md"), markdown(&results))?;
    if !results.cells.is_empty() {
        write_charts(&results, dir)?;
    }
    Ok(())
}

/// Computes from the raw runs what a file written by an older version
/// lacks (CPU per message); true when anything was added.
fn fill_in_derived(results: &mut Results) -> bool {
    let mut added = false;
    for cell in &mut results.cells {
        if cell.cpu_per_message.is_none() {
            cell.cpu_per_message = CpuPerMessage::of_runs(&cell.runs);
            added |= cell.cpu_per_message.is_some();
        }
    }
    added
}

/// Writes both charts of the main matrix into `dir`.
fn write_charts(results: &Results, dir: &Path) -> io::Result<()> {
    for chart in &CHARTS {
        svg(results, &dir.join(chart.file), chart)
            .map_err(|error| io::Error::other(format!("{}: {error}", chart.file)))?;
    }
    Ok(())
}

/// The cell result of `server` for one (connections, payload, in_flight).
pub(crate) fn find<'a>(
    results: &'a Results,
    server: &str,
    key: (usize, usize, usize),
) -> Option<&'a CellResult> {
    results.cells.iter().find(|cell| {
        cell.server == server && (cell.connections, cell.payload, cell.in_flight) == key
    })
}

/// Distinct (connections, payload, in_flight) keys, in measurement order.
pub(crate) fn cell_keys(results: &Results) -> Vec<(usize, usize, usize)> {
    let mut keys = Vec::new();
    for cell in &results.cells {
        let key = (cell.connections, cell.payload, cell.in_flight);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The variant result of `server` in `variant` for one cell.
fn find_variant<'a>(
    results: &'a Results,
    variant: &str,
    server: &str,
    key: (usize, usize, usize),
) -> Option<&'a VariantResult> {
    results.variants.iter().find(|cell| {
        cell.variant == variant
            && cell.server == server
            && (cell.connections, cell.payload, cell.in_flight) == key
    })
}

/// Distinct (connections, payload, in_flight) keys of `variant`, in
/// measurement order.
fn variant_keys(results: &Results, variant: &str) -> Vec<(usize, usize, usize)> {
    let mut keys = Vec::new();
    for cell in results
        .variants
        .iter()
        .filter(|cell| cell.variant == variant)
    {
        let key = (cell.connections, cell.payload, cell.in_flight);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The whole Markdown report.
pub fn markdown(results: &Results) -> String {
    let meta = &results.meta;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Echo benchmark: wsloop vs tokio-tungstenite vs fastwebsockets\n"
    );
    let _ = writeln!(
        md,
        "{} run{}: {} s measured per cell after {} s warm-up, {} run(s) per cell, {EXTRA_REPEATS} more for a cell whose runs spread over {NOISY_SPREAD_PERCENT}% (median shown), \
         servers pinned to CPU {}, load generator pinned to CPU {}; {} ({}), wsloop {} at {}. \
         Total {:.0} s. Raw numbers: `results.json`.\n",
        if meta.quick {
            "Quick (smoke-test)"
        } else {
            "Full"
        },
        if meta.variants_only {
            " of the TLS and compression cells only (`--variants-only`)"
        } else {
            ""
        },
        meta.cell_seconds,
        meta.warmup_seconds,
        meta.repeat,
        meta.server_cpu,
        meta.client_cpu,
        meta.cpu_model,
        meta.kernel,
        meta.wsloop_binary,
        meta.wsloop_git_rev.as_deref().unwrap_or("unknown revision"),
        meta.total_seconds,
    );

    // Summary: one row per cell.
    if !results.cells.is_empty() {
        let _ = writeln!(md, "## Throughput summary (msgs/s, median)\n");
        per_cell_table(
            results,
            &mut md,
            |cell| Some(cell.msgs_per_sec.median),
            |cell| count(cell.msgs_per_sec.median),
        );
        let _ = writeln!(md);
    }

    crate::cpu::markdown(results, &mut md);
    crate::targets::markdown(results, &mut md);

    // Noise, over the main cells and the variant cells alike.
    let _ = writeln!(md, "## Noise\n");
    let spreads = results
        .cells
        .iter()
        .filter(|cell| cell.runs.len() > 1)
        .map(|cell| {
            (
                cell.msgs_per_sec,
                cell.server.clone(),
                (cell.connections, cell.payload, cell.in_flight),
            )
        })
        .chain(
            results
                .variants
                .iter()
                .filter(|cell| cell.runs.len() > 1)
                .map(|cell| {
                    (
                        cell.spread,
                        format!("{} ({})", cell.server, cell.variant),
                        (cell.connections, cell.payload, cell.in_flight),
                    )
                }),
        );
    match spreads.max_by(|a, b| a.0.percent().total_cmp(&b.0.percent())) {
        Some((spread, server, (connections, payload, in_flight))) => {
            let _ = writeln!(
                md,
                "Max spread across repeats: {:.1}% ({server}, {connections} connections × {} × {in_flight} in flight: {}–{} msgs/s). \
                 Spread = (max − min) / median of msgs/s over the runs of a cell ({} planned, {EXTRA_REPEATS} more when any server spread over {NOISY_SPREAD_PERCENT}%).",
                spread.percent(),
                bytes(payload),
                count(spread.min),
                count(spread.max),
                meta.repeat,
            );
        }
        None => {
            let _ = writeln!(
                md,
                "One run per cell (`--repeat 1`): spread across repeats not measured."
            );
        }
    }
    let steals: Vec<f64> = results
        .throughput_runs()
        .filter_map(|run| run.steal_percent)
        .collect();
    if !steals.is_empty() {
        let steal = Spread::of(steals.iter().copied());
        let heavy = steals
            .iter()
            .filter(|&&value| value >= STEAL_RETAKE_PERCENT)
            .count();
        let _ = writeln!(
            md,
            "\nCPU time the hypervisor gave to other guests (steal, `/proc/stat`, share of both CPUs over each measured window): \
             median {:.1}%, max {:.1}% in the runs kept; {heavy} of {} kept runs at {STEAL_RETAKE_PERCENT}% or more. A run with heavy steal is a slow run; each cell's table shows its median steal.",
            steal.median,
            steal.max,
            steals.len(),
        );
        retake_markdown(results, &mut md);
    }
    tcp_pressure_markdown(results, &mut md);
    let extended = results
        .cells
        .iter()
        .filter(|cell| cell.server == SERVERS[0] && cell.runs.len() > meta.repeat)
        .count();
    if meta.repeat >= EXTRA_REPEATS_FROM {
        let _ = writeln!(
            md,
            "\nCells whose runs spread over {NOISY_SPREAD_PERCENT}% for any server got {EXTRA_REPEATS} more rounds: {extended} of {} main cells.",
            results
                .cells
                .iter()
                .filter(|cell| cell.server == SERVERS[0])
                .count(),
        );
    }
    let errors: u64 = results.cells.iter().map(|cell| cell.errors).sum::<u64>()
        + results.latency.iter().map(|cell| cell.errors).sum::<u64>()
        + results.variants.iter().map(|cell| cell.errors).sum::<u64>();
    let _ = writeln!(md, "\nErrors over all runs: {errors}.");

    // Latency.
    if !results.latency.is_empty() {
        let _ = writeln!(md, "\n## Latency (1 connection, 1 in flight, 20 B)\n");
        let _ = writeln!(
            md,
            "| server | p50 µs | p99 µs | p99.9 µs | msgs/s | server CPU % | client CPU % | errors |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for cell in &results.latency {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} | {} |",
                cell.server,
                cell.p50_us.median,
                cell.p99_us.median,
                cell.p999_us.median,
                count(cell.msgs_per_sec),
                opt(cell.server_cpu_percent, |v| format!("{v:.0}")),
                cell.client_cpu_percent,
                cell.errors,
            );
        }
    }

    // Memory.
    if !results.memory.is_empty() {
        let connections = results
            .memory
            .first()
            .map(|m| m.connections)
            .unwrap_or_default();
        let _ = writeln!(md, "\n## Memory ({connections} idle connections)\n");
        let _ = writeln!(md, "| server | RSS before | RSS after | per connection |");
        let _ = writeln!(md, "|---|---:|---:|---:|");
        for cell in &results.memory {
            match &cell.error {
                Some(error) => {
                    let _ = writeln!(
                        md,
                        "| {} | – | – | failed: {} |",
                        cell.server,
                        error.replace('|', "/")
                    );
                }
                None => {
                    let _ = writeln!(
                        md,
                        "| {} | {:.1} MiB | {:.1} MiB | {} B |",
                        cell.server,
                        cell.rss_before_bytes as f64 / 1048576.0,
                        cell.rss_after_bytes as f64 / 1048576.0,
                        count(cell.per_connection_bytes),
                    );
                }
            }
        }
    }

    if !results.variants.is_empty() {
        variants_markdown(results, &mut md);
    }

    // Per-cell detail.
    if !results.cells.is_empty() {
        let _ = writeln!(md, "\n## Cells\n");
    }
    for key in cell_keys(results) {
        let plural = if key.0 == 1 { "" } else { "s" };
        let _ = writeln!(
            md,
            "### {} connection{plural} × {} × {} in flight\n",
            key.0,
            bytes(key.1),
            key.2
        );
        let _ = writeln!(
            md,
            "| server | runs | msgs/s | min–max | MB/s | server CPU % | server user % | client CPU % | steal % | TCP drops | errors | wsloop / this |"
        );
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let ours = find(results, SERVERS[0], key).map(|cell| cell.msgs_per_sec.median);
        for server in SERVERS {
            let Some(cell) = find(results, server, key) else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {}–{} | {:.1} | {} | {} | {:.0} | {} | {} | {} | {} |",
                server,
                cell.runs.len(),
                count(cell.msgs_per_sec.median),
                count(cell.msgs_per_sec.min),
                count(cell.msgs_per_sec.max),
                cell.mb_per_sec,
                opt(cell.server_cpu_percent, |v| format!("{v:.0}")),
                opt(cell.server_user_percent, |v| format!("{v:.1}")),
                cell.client_cpu_percent,
                opt(cell.steal_percent, |v| format!("{v:.0}")),
                opt(cell.tcp_drops, count),
                cell.errors,
                if server == SERVERS[0] {
                    "—".to_string()
                } else {
                    ratio(ours, Some(cell.msgs_per_sec.median))
                },
            );
        }
        let _ = writeln!(md);
    }
    md
}

/// The paragraph on runs taken again for steal.
fn retake_markdown(results: &Results, md: &mut String) {
    let retaken = results
        .throughput_runs()
        .filter(|run| !run.retaken_for_steal.is_empty())
        .count();
    let discarded: Vec<f64> = results
        .throughput_runs()
        .flat_map(|run| run.retaken_for_steal.iter().copied())
        .collect();
    if discarded.is_empty() {
        return;
    }
    let steal = Spread::of(discarded.iter().copied());
    let _ = writeln!(
        md,
        "\nA run with {STEAL_RETAKE_PERCENT}% steal or more was taken again, up to {STEAL_RETAKES} times, and the attempt with the least steal kept \
         (chosen by steal, never by result, for every server alike): {retaken} runs were taken again, {} attempts thrown away \
         (their steal: median {:.1}%, max {:.1}%). The JSON keeps their steal in `retaken_for_steal`.",
        discarded.len(),
        steal.median,
        steal.max,
    );
}

/// How often the kernel ran short of TCP memory during the main matrix:
/// such runs measure the kernel's drops and retransmission timers more
/// than the server.
fn tcp_pressure_markdown(results: &Results, md: &mut String) {
    let runs: Vec<(&CellResult, &LoadReport)> = results
        .cells
        .iter()
        .flat_map(|cell| cell.runs.iter().map(move |run| (cell, run)))
        .filter(|(_, run)| run.tcp_drops.is_some())
        .collect();
    if runs.is_empty() {
        return;
    }
    let hit: Vec<&(&CellResult, &LoadReport)> = runs
        .iter()
        .filter(|(_, run)| run.tcp_drops.unwrap_or(0) > 0 || run.tcp_pressure_ms.unwrap_or(0) > 0)
        .collect();
    let mut cells: Vec<String> = Vec::new();
    for (cell, _) in &hit {
        let name = format!(
            "{}×{}×{}",
            cell.connections,
            bytes(cell.payload),
            cell.in_flight
        );
        if !cells.contains(&name) {
            cells.push(name);
        }
    }
    let _ = writeln!(
        md,
        "\nTCP memory (`/proc/net/netstat`, machine-wide over each measured window): {} of {} runs \
         saw the kernel drop arriving segments for lack of receive memory or run under memory \
         pressure (`net.ipv4.tcp_mem`), with {} segments dropped and {} retransmitted in those \
         runs{}. On loopback nothing else drops a segment, so such a run waits on retransmission \
         timers: it measures the kernel more than the server. The tables show each cell's median drops.",
        hit.len(),
        runs.len(),
        count(
            hit.iter()
                .map(|(_, run)| run.tcp_drops.unwrap_or(0) as f64)
                .sum()
        ),
        count(
            hit.iter()
                .map(|(_, run)| run.tcp_retransmits.unwrap_or(0) as f64)
                .sum()
        ),
        if cells.is_empty() {
            String::new()
        } else {
            format!(" (cells: {})", cells.join(", "))
        },
    );
    let _ = match results.meta.tcp_mem {
        Some(setting) if setting.during != setting.before => writeln!(
            md,
            "For this run `net.ipv4.tcp_mem` was raised from {} to {} pages{}.",
            pages(setting.before),
            pages(setting.during),
            if setting.restore_failed {
                " (restoring it afterwards failed)"
            } else {
                " and restored after"
            },
        ),
        Some(setting) => writeln!(
            md,
            "`net.ipv4.tcp_mem` was left as the machine had it: {} pages.",
            pages(setting.before)
        ),
        None => writeln!(md, "`net.ipv4.tcp_mem` was not recorded for this run."),
    };
}

/// A `tcp_mem` triple as "min / pressure / max".
fn pages(values: [u64; 3]) -> String {
    format!(
        "{} / {} / {}",
        count(values[0] as f64),
        count(values[1] as f64),
        count(values[2] as f64)
    )
}

/// The "TLS and compression" section.
fn variants_markdown(results: &Results, md: &mut String) {
    let [tls, deflate, plain_text] = VARIANTS;
    let _ = writeln!(md, "\n## TLS and compression\n");

    let tls_keys = variant_keys(results, tls);
    if !tls_keys.is_empty() {
        let suite = results
            .variants
            .iter()
            .find_map(|cell| cell.tls_suite.as_deref())
            .unwrap_or("unknown suite");
        let _ = writeln!(
            md,
            "### TLS (msgs/s, median)\n\n\
             All three servers over TLS with the same rustls settings (ring provider, self-signed \
             certificate for `localhost`); the load generator is a rustls client too. Negotiated: \
             {suite}. \"wsloop plain\" is the same cell of the main matrix without TLS, when it \
             was measured in this run.\n"
        );
        let _ = writeln!(
            md,
            "| connections | payload | in flight | wsloop | tokio-tungstenite | fastwebsockets | wsloop / tokio-tungstenite | wsloop / fastwebsockets | wsloop plain | wsloop TLS / plain |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for key in tls_keys {
            let rate =
                |server| find_variant(results, tls, server, key).map(|cell| cell.msgs_per_sec);
            let (ours, tt, fws) = (rate(SERVERS[0]), rate(SERVERS[1]), rate(SERVERS[2]));
            let plain = find(results, SERVERS[0], key).map(|cell| cell.msgs_per_sec.median);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                key.0,
                bytes(key.1),
                key.2,
                opt(ours, count),
                opt(tt, count),
                opt(fws, count),
                ratio(ours, tt),
                ratio(ours, fws),
                opt(plain, count),
                ratio(ours, plain),
            );
        }
        let _ = writeln!(md);
    }

    let deflate_keys = variant_keys(results, deflate);
    if !deflate_keys.is_empty() {
        let _ = writeln!(
            md,
            "### permessage-deflate (wsloop, msgs/s, median)\n\n\
             `wsloop --echo --deflate` against the same server without compression, both with \
             the same JSON-like text payload sent as text frames. The client offers \
             `client_no_context_takeover` and sends one pre-compressed frame; the server \
             inflates it, echoes it compressed with context takeover (so its echoes refer back \
             to the previous ones), and the client inflates and checks every echo. \
             \"sent\" and \"echo\" are the compressed payload sizes on the wire (echo: mean).\n"
        );
        let _ = writeln!(
            md,
            "| connections | payload | in flight | compressed | uncompressed | compressed / uncompressed | sent | echo | server CPU % compressed | server CPU % uncompressed |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for key in deflate_keys {
            let compressed = find_variant(results, deflate, SERVERS[0], key);
            let uncompressed = find_variant(results, plain_text, SERVERS[0], key);
            let cpu = |cell: Option<&VariantResult>| {
                opt(cell.and_then(|cell| cell.server_cpu_percent), |v| {
                    format!("{v:.0}")
                })
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                key.0,
                bytes(key.1),
                key.2,
                opt(compressed.map(|cell| cell.msgs_per_sec), count),
                opt(uncompressed.map(|cell| cell.msgs_per_sec), count),
                ratio(
                    compressed.map(|cell| cell.msgs_per_sec),
                    uncompressed.map(|cell| cell.msgs_per_sec)
                ),
                opt(
                    compressed
                        .and_then(|cell| cell.sent_compressed_bytes)
                        .map(|size| size as f64),
                    |size| format!("{} B ({:.1}×)", count(size), key.1 as f64 / size.max(1.0))
                ),
                opt(
                    compressed.and_then(|cell| cell.echo_compressed_bytes),
                    |size| format!("{} B", count(size))
                ),
                cpu(compressed),
                cpu(uncompressed),
            );
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(md, "### Variant cells\n");
    let _ = writeln!(
        md,
        "| variant | server | connections | payload | in flight | msgs/s | min–max | MB/s | server CPU % | client CPU % | errors |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for cell in &results.variants {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {}–{} | {:.1} | {} | {:.0} | {} |",
            cell.variant,
            cell.server,
            cell.connections,
            bytes(cell.payload),
            cell.in_flight,
            count(cell.msgs_per_sec),
            count(cell.spread.min),
            count(cell.spread.max),
            cell.mb_per_sec,
            opt(cell.server_cpu_percent, |v| format!("{v:.0}")),
            cell.client_cpu_percent,
            cell.errors,
        );
    }
}

/// `1234567.8` → `1,234,568`.
pub(crate) fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A payload size for people: `20 B`, `1 KiB`, `256 KiB`.
pub(crate) fn bytes(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn opt(value: Option<f64>, show: impl Fn(f64) -> String) -> String {
    value.map(show).unwrap_or_else(|| "–".to_string())
}

/// A table with one row per cell of the main matrix: each server's
/// figure as `shown` writes it, then wsloop's `value` over each peer's.
pub(crate) fn per_cell_table(
    results: &Results,
    md: &mut String,
    value: impl Fn(&CellResult) -> Option<f64>,
    shown: impl Fn(&CellResult) -> String,
) {
    let _ = writeln!(
        md,
        "| connections | payload | in flight | wsloop | tokio-tungstenite | fastwebsockets | wsloop / tokio-tungstenite | wsloop / fastwebsockets |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for key in cell_keys(results) {
        let cell = |server| find(results, server, key);
        let figure = |server| cell(server).map_or("–".to_string(), &shown);
        let ours = cell(SERVERS[0]).and_then(&value);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            key.0,
            bytes(key.1),
            key.2,
            figure(SERVERS[0]),
            figure(SERVERS[1]),
            figure(SERVERS[2]),
            ratio(ours, cell(SERVERS[1]).and_then(&value)),
            ratio(ours, cell(SERVERS[2]).and_then(&value)),
        );
    }
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(ours), Some(theirs)) if theirs > 0.0 => format!("{:.2}×", ours / theirs),
        _ => "–".to_string(),
    }
}

/// Bar colours, one per entry of [`SERVERS`].
const COLORS: [RGBColor; 3] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
];
/// X slots per bar group: one per server plus a gap.
const SLOTS: usize = SERVERS.len() + 1;

/// One chart of the main matrix: which figure of a cell it plots.
pub struct Chart {
    /// File name in the results directory.
    pub file: &'static str,
    /// Title, before the run's description.
    title: &'static str,
    /// Y axis label.
    unit: &'static str,
    /// The figure drawn as the bar, per cell.
    value: fn(&CellResult) -> Option<f64>,
    /// A part of it drawn as a darker bar inside it, per cell.
    part: Option<fn(&CellResult) -> Option<f64>>,
}

/// The charts `run` and `render` write.
pub const CHARTS: [Chart; 2] = [
    Chart {
        file: "echo-throughput.svg",
        title: "Echo throughput, msgs/s",
        unit: "msgs/s",
        value: |cell| Some(cell.msgs_per_sec.median),
        part: None,
    },
    Chart {
        file: "cpu-per-message.svg",
        title: "Server CPU per message, µs (dark: user, light: user + system)",
        unit: "µs per message",
        value: |cell| cell.cpu_per_message.map(|cpu| cpu.total_us.median),
        part: Some(|cell| cell.cpu_per_message.map(|cpu| cpu.user_us.median)),
    },
];

/// Grouped bar chart: one panel per payload size, one group of three bars
/// (one per server) per (connections, in flight), `chart`'s figure on a
/// log scale.
pub fn svg(results: &Results, path: &Path, chart_spec: &Chart) -> Result<(), Box<dyn Error>> {
    let payloads: Vec<usize> = results
        .cells
        .iter()
        .map(|cell| cell.payload)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let groups: Vec<(usize, usize)> = results
        .cells
        .iter()
        .map(|cell| (cell.connections, cell.in_flight))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if payloads.is_empty() || groups.is_empty() {
        return Ok(());
    }
    let columns = if payloads.len() > 1 { 2 } else { 1 };
    let rows = payloads.len().div_ceil(columns);
    let width = 760 * columns as u32;
    let height = 70 + 440 * rows as u32;

    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} (log scale, median of {} run{}{}), server on CPU {}, client on CPU {}",
        chart_spec.title,
        results.meta.repeat,
        if results.meta.repeat == 1 { "" } else { "s" },
        if results.meta.repeat >= EXTRA_REPEATS_FROM {
            format!(", {} if noisy", results.meta.repeat + EXTRA_REPEATS)
        } else {
            String::new()
        },
        results.meta.server_cpu,
        results.meta.client_cpu,
    );
    let body = root.titled(&title, ("sans-serif", 22))?;
    let panels = body.split_evenly((rows, columns));

    let last_slot = (groups.len() * SLOTS - 1) as i32;
    for (panel, &payload) in panels.iter().zip(&payloads) {
        let value = |server: &str, (connections, in_flight): (usize, usize)| {
            find(results, server, (connections, payload, in_flight))
                .and_then(chart_spec.value)
                .filter(|rate| *rate > 0.0)
        };
        let rates: Vec<f64> = groups
            .iter()
            .flat_map(|&group| {
                SERVERS
                    .iter()
                    .filter_map(move |server| value(server, group))
            })
            .collect();
        // The axis reaches down to the smallest part drawn inside a bar too.
        let parts = chart_spec.part.into_iter().flat_map(|part| {
            results
                .cells
                .iter()
                .filter(|cell| cell.payload == payload)
                .filter_map(part)
                .filter(|value| *value > 0.0)
        });
        let low = rates
            .iter()
            .copied()
            .chain(parts)
            .fold(f64::INFINITY, f64::min);
        let high = rates.iter().copied().fold(0.0, f64::max);
        let (y_min, y_max) = if rates.is_empty() {
            (1.0, 10.0)
        } else {
            // Headroom above the tallest bar keeps the legend clear of it.
            (
                10f64.powf((low / 2.0).log10().floor()),
                10f64.powf((high * 8.0).log10().ceil()),
            )
        };

        let mut chart = ChartBuilder::on(panel)
            .caption(format!("payload {}", bytes(payload)), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((0..last_slot).into_segmented(), (y_min..y_max).log_scale())?;
        let label_of = |value: &SegmentValue<i32>| match value {
            SegmentValue::CenterOf(slot) if *slot as usize % SLOTS == 1 => {
                let (connections, in_flight) = groups[*slot as usize / SLOTS];
                format!("{connections}/{in_flight}")
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() * SLOTS + 1)
            .x_label_formatter(&label_of)
            .y_label_formatter(&|rate| si(*rate))
            .x_desc("connections / messages in flight per connection")
            .y_desc(chart_spec.unit)
            .label_style(("sans-serif", 13))
            .draw()?;

        for (index, server) in SERVERS.iter().enumerate() {
            let color = COLORS[index];
            // With a part drawn inside, the whole is the lighter bar.
            let whole_style = if chart_spec.part.is_some() {
                color.mix(0.4).filled()
            } else {
                color.filled()
            };
            let bars = groups
                .iter()
                .enumerate()
                .filter_map(|(group_index, &group)| {
                    let rate = value(server, group)?;
                    let slot = (group_index * SLOTS + index) as i32;
                    Some(Rectangle::new(
                        [
                            (SegmentValue::Exact(slot), y_min),
                            (SegmentValue::Exact(slot + 1), rate),
                        ],
                        whole_style,
                    ))
                });
            chart
                .draw_series(bars)?
                .label(*server)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled())
                });
            let Some(part) = chart_spec.part else {
                continue;
            };
            let parts =
                groups
                    .iter()
                    .enumerate()
                    .filter_map(|(group_index, &(connections, in_flight))| {
                        let value = find(results, server, (connections, payload, in_flight))
                            .and_then(part)
                            .filter(|value| *value > y_min)?;
                        let slot = (group_index * SLOTS + index) as i32;
                        Some(Rectangle::new(
                            [
                                (SegmentValue::Exact(slot), y_min),
                                (SegmentValue::Exact(slot + 1), value),
                            ],
                            color.filled(),
                        ))
                    });
            chart.draw_series(parts)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// `12000` → `12k`, `3500000` → `3.5M`.
fn si(value: f64) -> String {
    let (scaled, suffix) = match value {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let text = format!("{scaled:.1}");
    format!("{}{suffix}", text.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed results, when there are any, were written before the
    /// variant cells: they still load, and render without that section.
    #[test]
    fn results_written_before_the_variants_still_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/results.json");
        let Ok(json) = fs::read_to_string(&path) else {
            return;
        };
        let results: Results = serde_json::from_str(&json).expect("old results.json loads");
        if results.variants.is_empty() {
            assert!(!markdown(&results).contains("## TLS and compression"));
        }
    }

    #[test]
    fn variant_results_round_trip_and_render() {
        let run = LoadReport {
            connections: 10,
            payload: 1024,
            in_flight: 16,
            msgs_per_sec: 1000.0,
            deflate: true,
            text: true,
            sent_compressed_bytes: Some(467),
            echo_compressed_bytes: Some(13.0),
            ..LoadReport::default()
        };
        let cell = (10, 1024, 16);
        let results = Results {
            meta: Meta {
                quick: true,
                variants_only: true,
                repeat: 1,
                cell_seconds: 1.0,
                warmup_seconds: 0.5,
                idle_connections: 0,
                server_cpu: "0".to_string(),
                client_cpu: "1".to_string(),
                wsloop_binary: "wsloop".to_string(),
                wsloop_git_rev: None,
                kernel: String::new(),
                cpu_model: String::new(),
                tcp_mem: None,
                started_unix: 0,
                total_seconds: 1.0,
            },
            latency: Vec::new(),
            memory: Vec::new(),
            cells: Vec::new(),
            variants: vec![
                VariantResult::from_runs(VARIANTS[1], SERVERS[0], cell, vec![run.clone()]),
                VariantResult::from_runs(
                    VARIANTS[2],
                    SERVERS[0],
                    cell,
                    vec![LoadReport {
                        msgs_per_sec: 4000.0,
                        ..run
                    }],
                ),
            ],
        };
        let json = serde_json::to_string(&results).unwrap();
        let back: Results = serde_json::from_str(&json).unwrap();
        assert_eq!(back.variants.len(), 2);
        let md = markdown(&back);
        assert!(md.contains("## TLS and compression"), "{md}");
        assert!(
            md.contains("| 10 | 1 KiB | 16 | 1,000 | 4,000 | 0.25× | 467 B (2.2×) | 13 B |"),
            "{md}"
        );
        assert!(!md.contains("## Latency"));
    }
}
