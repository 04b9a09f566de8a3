//! Counters the loop keeps about itself, for `/metrics` and logs. Plain
//! integers: the loop is the only writer, so no atomics on the hot path.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the server has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// WebSocket connections open now.
    pub open_connections: u64,
    /// TCP sockets held now (WebSockets, handshakes, plain HTTP, closing).
    pub sockets: u64,
    /// TCP connections accepted.
    pub accepted: u64,
    /// Upgrades that completed (`101`).
    pub upgrades: u64,
    /// Upgrades that agreed to permessage-deflate.
    pub compressed_upgrades: u64,
    /// Plain HTTP requests answered.
    pub http_requests: u64,
    /// Handshakes refused, by HTTP status.
    pub rejected_handshakes: BTreeMap<u16, u64>,
    /// Data messages received.
    pub messages_in: u64,
    /// Payload bytes of data messages received.
    pub bytes_in: u64,
    /// Data messages queued to peers.
    pub messages_out: u64,
    /// Payload bytes of data messages queued to peers.
    pub bytes_out: u64,
    /// WebSocket connections ended, by close code.
    pub closes: BTreeMap<u16, u64>,
    /// Connections closed at accept, by reason: `address_connections`,
    /// `address_handshakes` (a per-address limit), `socket_limit`.
    pub refused_at_accept: BTreeMap<&'static str, u64>,
    /// Handshakes dropped to make room for a new connection at the socket
    /// limit.
    pub evicted_handshakes: u64,
    /// Bytes held in all connections' buffers now (output queued, input
    /// held): what the buffer budget bounds.
    pub buffered_bytes: u64,
    /// The buffer budget, in bytes.
    pub buffer_budget: u64,
    /// Connections closed or dropped to keep buffered bytes within the
    /// budget.
    pub budget_closes: u64,
}

impl ServerStats {
    /// Appends the counters in the Prometheus text exposition format.
    pub fn write_prometheus(&self, out: &mut String) {
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        gauge(
            "wsloop_open_connections",
            "WebSocket connections open now.",
            self.open_connections,
        );
        gauge("wsloop_sockets", "TCP sockets held now.", self.sockets);
        gauge(
            "wsloop_buffered_bytes",
            "Bytes held in connections' buffers now: output queued, input held.",
            self.buffered_bytes,
        );
        gauge(
            "wsloop_buffer_budget_bytes",
            "Bytes all connections' buffers may hold together.",
            self.buffer_budget,
        );
        let counters: [(&str, &str, u64); 10] = [
            (
                "wsloop_accepted_total",
                "TCP connections accepted.",
                self.accepted,
            ),
            (
                "wsloop_upgrades_total",
                "WebSocket upgrades completed.",
                self.upgrades,
            ),
            (
                "wsloop_compressed_upgrades_total",
                "WebSocket upgrades that agreed to permessage-deflate.",
                self.compressed_upgrades,
            ),
            (
                "wsloop_http_requests_total",
                "Plain HTTP requests answered.",
                self.http_requests,
            ),
            (
                "wsloop_messages_in_total",
                "Data messages received.",
                self.messages_in,
            ),
            (
                "wsloop_bytes_in_total",
                "Payload bytes received in data messages.",
                self.bytes_in,
            ),
            (
                "wsloop_messages_out_total",
                "Data messages sent.",
                self.messages_out,
            ),
            (
                "wsloop_bytes_out_total",
                "Payload bytes sent in data messages.",
                self.bytes_out,
            ),
            (
                "wsloop_evicted_handshakes_total",
                "Handshakes dropped to make room at the socket limit.",
                self.evicted_handshakes,
            ),
            (
                "wsloop_budget_closes_total",
                "Connections closed to keep buffered bytes within the budget.",
                self.budget_closes,
            ),
        ];
        for (name, help, value) in counters {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        }
        write_labelled(
            out,
            "wsloop_rejected_handshakes_total",
            "Handshakes refused, by HTTP status.",
            "status",
            &self.rejected_handshakes,
        );
        write_labelled(
            out,
            "wsloop_closes_total",
            "WebSocket connections closed, by close code.",
            "code",
            &self.closes,
        );
        write_labelled(
            out,
            "wsloop_refused_at_accept_total",
            "Connections closed at accept, by reason.",
            "reason",
            &self.refused_at_accept,
        );
    }
}

/// Writes one labelled counter family.
pub fn write_labelled<K: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<K, u64>,
) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
    for (key, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut stats = ServerStats {
            accepted: 3,
            ..ServerStats::default()
        };
        stats.rejected_handshakes.insert(400, 2);
        stats.closes.insert(1000, 1);
        stats.refused_at_accept.insert("socket_limit", 4);
        stats.buffered_bytes = 12345;
        let mut out = String::new();
        stats.write_prometheus(&mut out);
        assert!(out.contains("# TYPE wsloop_accepted_total counter\nwsloop_accepted_total 3\n"));
        assert!(out.contains("wsloop_rejected_handshakes_total{status=\"400\"} 2\n"));
        assert!(out.contains("wsloop_closes_total{code=\"1000\"} 1\n"));
        assert!(out.contains("wsloop_refused_at_accept_total{reason=\"socket_limit\"} 4\n"));
        assert!(out.contains("# TYPE wsloop_buffered_bytes gauge\nwsloop_buffered_bytes 12345\n"));
        assert!(out.ends_with('\n'));
    }
}
