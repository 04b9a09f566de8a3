//! The results: their JSON form (`results.json`, every raw number), the
//! Markdown summary (`results.md`) and the chart (`echo-throughput.svg`).

use std::collections::BTreeSet;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::load::LoadReport;

/// Server names, in report order; the first is the one ratios are taken of.
pub const SERVERS: [&str; 3] = ["wsloop", "tokio-tungstenite", "fastwebsockets"];

/// Everything one `run` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub latency: Vec<LatencyResult>,
    pub memory: Vec<MemoryResult>,
    pub cells: Vec<CellResult>,
}

/// How the run was made.
#[derive(Debug, Serialize, Deserialize)]
pub struct Meta {
    pub quick: bool,
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
    pub started_unix: u64,
    pub total_seconds: f64,
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
    pub client_cpu_percent: f64,
    /// Errors summed over the runs.
    pub errors: u64,
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
        let server_cpu: Vec<f64> = runs
            .iter()
            .filter_map(|run| run.server_cpu_percent)
            .collect();
        CellResult {
            connections,
            payload,
            in_flight,
            server: server.to_string(),
            msgs_per_sec: Spread::of(runs.iter().map(|run| run.msgs_per_sec)),
            mb_per_sec: Spread::of(runs.iter().map(|run| run.mb_per_sec)).median,
            server_cpu_percent: (!server_cpu.is_empty()).then(|| Spread::of(server_cpu).median),
            client_cpu_percent: Spread::of(runs.iter().map(|run| run.client_cpu_percent)).median,
            errors: runs.iter().map(|run| run.errors).sum(),
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
        let server_cpu: Vec<f64> = runs
            .iter()
            .filter_map(|run| run.server_cpu_percent)
            .collect();
        LatencyResult {
            server: server.to_string(),
            p50_us: Spread::of(runs.iter().filter_map(|run| run.p50_us)),
            p99_us: Spread::of(runs.iter().filter_map(|run| run.p99_us)),
            p999_us: Spread::of(runs.iter().filter_map(|run| run.p999_us)),
            msgs_per_sec: Spread::of(runs.iter().map(|run| run.msgs_per_sec)).median,
            server_cpu_percent: (!server_cpu.is_empty()).then(|| Spread::of(server_cpu).median),
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
    svg(results, &dir.join("echo-throughput.svg"))
        .map_err(|error| io::Error::other(format!("svg: {error}")))?;
    Ok(())
}

/// The cell result of `server` for one (connections, payload, in_flight).
fn find<'a>(
    results: &'a Results,
    server: &str,
    key: (usize, usize, usize),
) -> Option<&'a CellResult> {
    results.cells.iter().find(|cell| {
        cell.server == server && (cell.connections, cell.payload, cell.in_flight) == key
    })
}

/// Distinct (connections, payload, in_flight) keys, in measurement order.
fn cell_keys(results: &Results) -> Vec<(usize, usize, usize)> {
    let mut keys = Vec::new();
    for cell in &results.cells {
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
        "{} run: {} s measured per cell after {} s warm-up, {} run(s) per cell (median shown), \
         servers pinned to CPU {}, load generator pinned to CPU {}; {} ({}), wsloop {} at {}. \
         Total {:.0} s. Raw numbers: `results.json`.\n",
        if meta.quick {
            "Quick (smoke-test)"
        } else {
            "Full"
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
    let _ = writeln!(md, "## Throughput summary (msgs/s, median)\n");
    let _ = writeln!(
        md,
        "| connections | payload | in flight | wsloop | tokio-tungstenite | fastwebsockets | wsloop / tokio-tungstenite | wsloop / fastwebsockets |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for key in cell_keys(results) {
        let rate = |server| find(results, server, key).map(|cell| cell.msgs_per_sec.median);
        let (ours, tt, fws) = (rate(SERVERS[0]), rate(SERVERS[1]), rate(SERVERS[2]));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            key.0,
            bytes(key.1),
            key.2,
            opt(ours, count),
            opt(tt, count),
            opt(fws, count),
            ratio(ours, tt),
            ratio(ours, fws),
        );
    }

    // Noise.
    let _ = writeln!(md, "\n## Noise\n");
    let spreads = results.cells.iter().filter(|cell| cell.runs.len() > 1);
    match spreads.max_by(|a, b| {
        a.msgs_per_sec
            .percent()
            .total_cmp(&b.msgs_per_sec.percent())
    }) {
        Some(worst) => {
            let _ = writeln!(
                md,
                "Max spread across repeats: {:.1}% ({}, {} connections × {} × {} in flight: {}–{} msgs/s). \
                 Spread = (max − min) / median of msgs/s over the {} runs of a cell.",
                worst.msgs_per_sec.percent(),
                worst.server,
                worst.connections,
                bytes(worst.payload),
                worst.in_flight,
                count(worst.msgs_per_sec.min),
                count(worst.msgs_per_sec.max),
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
    let errors: u64 = results.cells.iter().map(|cell| cell.errors).sum::<u64>()
        + results.latency.iter().map(|cell| cell.errors).sum::<u64>();
    let _ = writeln!(md, "\nErrors over all runs: {errors}.");

    // Latency.
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

    // Memory.
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

    // Per-cell detail.
    let _ = writeln!(md, "\n## Cells\n");
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
            "| server | msgs/s | min–max | MB/s | server CPU % | client CPU % | errors | wsloop / this |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let ours = find(results, SERVERS[0], key).map(|cell| cell.msgs_per_sec.median);
        for server in SERVERS {
            let Some(cell) = find(results, server, key) else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {} | {} | {}–{} | {:.1} | {} | {:.0} | {} | {} |",
                server,
                count(cell.msgs_per_sec.median),
                count(cell.msgs_per_sec.min),
                count(cell.msgs_per_sec.max),
                cell.mb_per_sec,
                opt(cell.server_cpu_percent, |v| format!("{v:.0}")),
                cell.client_cpu_percent,
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

/// `1234567.8` → `1,234,568`.
fn count(value: f64) -> String {
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
fn bytes(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn opt(value: Option<f64>, show: impl Fn(f64) -> String) -> String {
    value.map(show).unwrap_or_else(|| "–".to_string())
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

/// Grouped bar chart: one panel per payload size, one group of three bars
/// (one per server) per (connections, in flight), msgs/s on a log scale.
pub fn svg(results: &Results, path: &Path) -> Result<(), Box<dyn Error>> {
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
        "Echo throughput, msgs/s (log scale, median of {} run{}), server on CPU {}, client on CPU {}",
        results.meta.repeat,
        if results.meta.repeat == 1 { "" } else { "s" },
        results.meta.server_cpu,
        results.meta.client_cpu,
    );
    let body = root.titled(&title, ("sans-serif", 22))?;
    let panels = body.split_evenly((rows, columns));

    let last_slot = (groups.len() * SLOTS - 1) as i32;
    for (panel, &payload) in panels.iter().zip(&payloads) {
        let value = |server: &str, (connections, in_flight): (usize, usize)| {
            find(results, server, (connections, payload, in_flight))
                .map(|cell| cell.msgs_per_sec.median)
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
        let low = rates.iter().copied().fold(f64::INFINITY, f64::min);
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
            .y_desc("msgs/s")
            .label_style(("sans-serif", 13))
            .draw()?;

        for (index, server) in SERVERS.iter().enumerate() {
            let color = COLORS[index];
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
                        color.filled(),
                    ))
                });
            chart
                .draw_series(bars)?
                .label(*server)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled())
                });
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
