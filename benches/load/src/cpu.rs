//! Server CPU time per message: what the server's own code and the kernel
//! working for it spend on each echo, from the server's `utime` and `stime`
//! (`/proc/PID/stat`) over the measured window divided by the messages
//! echoed in it.
//!
//! Unlike msgs/s this does not depend on who set the pace: a server that
//! waits on a slow client does not get charged for waiting, and a server
//! that spins (wsloop's busy poll) is charged for spinning. Both halves
//! are kept apart: on loopback most of the system time is the kernel's TCP
//! path, which the receiving side's processing runs inside of.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::load::LoadReport;
use crate::report::{CellResult, Results, SERVERS, Spread, bytes, find};

/// Server CPU per message of one server in one cell, in microseconds:
/// median, min and max over the runs, each part taken on its own.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CpuPerMessage {
    /// Time in the server's own code (`utime`) per message.
    pub user_us: Spread,
    /// Time in the kernel on the server's behalf (`stime`) per message.
    pub system_us: Spread,
    /// Both together per message.
    pub total_us: Spread,
}

impl CpuPerMessage {
    /// CPU per message over `runs`; `None` when no run recorded the
    /// server's CPU time or echoed anything.
    pub fn of_runs(runs: &[LoadReport]) -> Option<CpuPerMessage> {
        let per_run: Vec<(f64, f64)> = runs.iter().filter_map(per_message).collect();
        if per_run.is_empty() {
            return None;
        }
        Some(CpuPerMessage {
            user_us: Spread::of(per_run.iter().map(|(user, _)| *user)),
            system_us: Spread::of(per_run.iter().map(|(_, system)| *system)),
            total_us: Spread::of(per_run.iter().map(|(user, system)| user + system)),
        })
    }
}

/// (user, system) µs per message of one run.
fn per_message(run: &LoadReport) -> Option<(f64, f64)> {
    let total_percent = run.server_cpu_percent?;
    let user_percent = run.server_user_percent?;
    if run.messages == 0 || run.seconds <= 0.0 {
        return None;
    }
    let us_per_message = |percent: f64| percent / 100.0 * run.seconds * 1e6 / run.messages as f64;
    Some((
        us_per_message(user_percent),
        us_per_message((total_percent - user_percent).max(0.0)),
    ))
}

/// One CPU-per-message target: wsloop's total µs per message at most
/// `ratio` times the peer's.
struct CpuTarget {
    text: &'static str,
    /// Index into [`SERVERS`].
    peer: usize,
    ratio: f64,
}

/// Issue 27's targets, every cell with a payload up to [`TARGET_MAX_PAYLOAD`].
const CPU_TARGETS: [CpuTarget; 2] = [
    CpuTarget {
        text: "≤ 0.8× fastwebsockets' server CPU per message, ≤ 16 KiB",
        peer: 2,
        ratio: 0.8,
    },
    CpuTarget {
        text: "≤ 0.6× tokio-tungstenite's server CPU per message, ≤ 16 KiB",
        peer: 1,
        ratio: 0.6,
    },
];

/// Largest payload the CPU targets cover.
const TARGET_MAX_PAYLOAD: usize = 16 * 1024;

/// Median total µs per message of a cell.
fn total(cell: &CellResult) -> Option<f64> {
    cell.cpu_per_message
        .map(|cpu| cpu.total_us.median)
        .filter(|&us| us > 0.0)
}

/// Rows of the "Targets" table for the CPU targets.
pub fn target_rows(results: &Results, md: &mut String) {
    for target in &CPU_TARGETS {
        let mut checked = 0;
        let mut missed = Vec::new();
        for ours in results
            .cells
            .iter()
            .filter(|cell| cell.server == SERVERS[0] && cell.payload <= TARGET_MAX_PAYLOAD)
        {
            checked += 1;
            let key = (ours.connections, ours.payload, ours.in_flight);
            let name = format!("{} × {} × {}", key.0, bytes(key.1), key.2);
            let theirs = find(results, SERVERS[target.peer], key).and_then(total);
            match (total(ours), theirs) {
                (Some(ours), Some(theirs)) if ours / theirs <= target.ratio => {}
                (Some(ours), Some(theirs)) => {
                    missed.push(format!("{name}: {:.2}×", ours / theirs));
                }
                _ => missed.push(format!("{name}: no result")),
            }
        }
        let _ = writeln!(
            md,
            "| {} | {} of {checked} | {} |",
            target.text,
            checked - missed.len(),
            if missed.is_empty() {
                "–".to_string()
            } else {
                missed.join("; ")
            }
        );
    }
}

/// The "Server CPU per message" section: one row per cell.
pub fn markdown(results: &Results, md: &mut String) {
    let keys = crate::report::cell_keys(results);
    if !keys.iter().any(|&key| {
        find(results, SERVERS[0], key).is_some_and(|cell| cell.cpu_per_message.is_some())
    }) {
        return;
    }
    let _ = writeln!(md, "## Server CPU per message (µs, median)\n");
    let _ = writeln!(
        md,
        "The server's CPU time over the measured window (`/proc/PID/stat`) divided by the \
         messages echoed in it, as user + system = total (each the median over the runs). \
         wsloop's figure includes its busy poll (50 µs of `epoll_wait` after activity, \
         system time), which in the cells with one connection and one message in flight \
         keeps it at ~100% of its core. Ratios are wsloop / peer: below 1 = wsloop spends less.\n"
    );
    crate::report::per_cell_table(
        results,
        md,
        |cell| cell.cpu_per_message.map(|cpu| cpu.total_us.median),
        |cell| {
            cell.cpu_per_message.map_or("–".to_string(), |cpu| {
                format!(
                    "{} + {} = {}",
                    micros(cpu.user_us.median),
                    micros(cpu.system_us.median),
                    micros(cpu.total_us.median)
                )
            })
        },
    );
    let _ = writeln!(md);
}

/// Microseconds with two decimals below 10 and one above.
pub(crate) fn micros(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.2}")
    } else {
        format!("{us:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Meta;

    fn run(messages: u64, cpu: f64, user: f64) -> LoadReport {
        LoadReport {
            seconds: 2.0,
            messages,
            msgs_per_sec: messages as f64 / 2.0,
            server_cpu_percent: Some(cpu),
            server_user_percent: Some(user),
            ..LoadReport::default()
        }
    }

    #[test]
    fn user_and_system_time_are_divided_by_the_messages_of_each_run() {
        // 2 s at 50% = 1 s of CPU over 100,000 messages: 10 µs, 2 of them user.
        let cpu = CpuPerMessage::of_runs(&[
            run(100_000, 50.0, 10.0),
            run(200_000, 50.0, 10.0),
            run(0, 50.0, 10.0),
        ])
        .unwrap();
        assert_eq!(cpu.total_us.max, 10.0);
        assert_eq!(cpu.total_us.min, 5.0);
        assert_eq!(cpu.user_us.max, 2.0);
        assert_eq!(cpu.system_us.min, 4.0);
        assert_eq!(cpu.total_us.median, 7.5);
        assert!(CpuPerMessage::of_runs(&[LoadReport::default()]).is_none());
    }

    #[test]
    fn the_targets_compare_total_time_per_message_up_to_16_kib() {
        let cell = |server: &str, key: (usize, usize, usize), cpu: f64| {
            CellResult::from_runs(server, key.0, key.1, key.2, vec![run(100_000, cpu, 5.0)])
        };
        let small = (10, 20, 1);
        let large = (10, 256 * 1024, 1);
        let results = Results {
            meta: Meta::default(),
            latency: Vec::new(),
            memory: Vec::new(),
            cells: vec![
                cell("wsloop", small, 40.0),
                cell("tokio-tungstenite", small, 100.0),
                cell("fastwebsockets", small, 45.0),
                // Not covered: a miss here must not count.
                cell("wsloop", large, 90.0),
                cell("fastwebsockets", large, 10.0),
            ],
            variants: Vec::new(),
        };
        let mut md = String::new();
        target_rows(&results, &mut md);
        assert!(
            md.contains(
                "fastwebsockets' server CPU per message, ≤ 16 KiB | 0 of 1 | 10 × 20 B × 1: 0.89× |"
            ),
            "{md}"
        );
        assert!(
            md.contains("tokio-tungstenite's server CPU per message, ≤ 16 KiB | 1 of 1 | – |"),
            "{md}"
        );
        let mut md = String::new();
        markdown(&results, &mut md);
        // 0.8 s of CPU over 100,000 messages, 0.1 s of it user.
        assert!(
            md.contains("| 10 | 20 B | 1 | 1.00 + 7.00 = 8.00 | 1.00 + 19.0 = 20.0 | 1.00 + 8.00 = 9.00 | 0.40× | 0.89× |"),
            "{md}"
        );
    }
}
