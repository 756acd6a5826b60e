//! The server's metrics, in Prometheus' (OpenMetrics) text exposition, served by `net::http` when
//! `[metrics] listen` is set.
//!
//! One registry per process (chatd runs one server per process): the layers count through
//! [`metrics()`] without a handle being threaded through them. Every metric is a plain atomic
//! (prometheus-client's counters, gauges and histograms); labelled series are created once here and
//! kept as fields, so counting never takes the families' locks. Deliveries are counted per event
//! written (a batch adds its number of messages), not per message.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The two text expositions a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, as prometheus-client writes it (what Prometheus asks for first).
    OpenMetrics,
    /// Prometheus' classic text format 0.0.4 (what `promtool check metrics`, curl and older
    /// scrapers read).
    Classic,
}

impl Format {
    /// The format for an `Accept` header: OpenMetrics when it is accepted, else the classic one.
    pub fn negotiate(accept: &str) -> Format {
        match accept.contains("application/openmetrics-text") {
            true => Format::OpenMetrics,
            false => Format::Classic,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Connections open, for one front end and transport.
#[derive(Clone)]
pub struct OpenConnections(Gauge);

impl OpenConnections {
    /// Counts a connection as open until the guard is dropped.
    pub fn open(&self) -> ConnectionGuard {
        self.0.inc();
        ConnectionGuard(self.0.clone())
    }
}

/// Holds one count in a connections gauge.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The outcome of a login, as counted.
#[derive(Debug, Clone, Copy)]
pub enum LoginResult {
    Ok,
    Failed,
    Throttled,
}

/// Why a connection was refused at the gate, as counted.
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    ServerFull,
    TooManyFromAddress,
    TooManyNewFromAddress,
}

/// Why the server ended a connection, as counted.
#[derive(Debug, Clone, Copy)]
pub enum Dropped {
    LoginTimeout,
    PingTimeout,
    ExcessFlood,
    SlowReader,
    WriteTimeout,
}

pub struct Metrics {
    registry: Registry,
    connections: Family<Labels2, Gauge>,
    logins: [Counter; 3],
    pub registrations: Counter,
    pub rooms: Gauge,
    pub members: Gauge,
    pub messages_accepted: Counter,
    pub messages_delivered: Counter,
    pub bot_commands_relayed: Counter,
    pub commit_batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub history_seconds: Histogram,
    disconnects: [Counter; 5],
    pub flood_delays: Counter,
    pub storage_errors: Counter,
    refusals: [Counter; 3],
    /// A cluster node's: the other nodes heard from lately.
    pub cluster_peers: Gauge,
    /// A cluster node's: messages read from the store because they did not arrive from the other
    /// nodes in time (a gap, or one missed with nothing after it).
    pub cluster_backfilled: Counter,
    /// A cluster node's: committed messages received from the other nodes.
    pub cluster_received: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chatd");
        let connections = Family::<Labels2, Gauge>::default();
        registry.register(
            "connections",
            "Connections open, by front end (native, irc) and transport (tls, plain; WebSocket: wss, ws)",
            connections.clone(),
        );
        for protocol in ["native", "irc"] {
            for transport in ["tls", "plain", "wss", "ws"] {
                // Present from the start, at 0: a dashboard sees the series before the first client.
                drop(connections.get_or_create(&[("protocol", protocol), ("transport", transport)]));
            }
        }
        let logins = Family::<Labels, Counter>::default();
        registry.register("logins", "Logins, by result (ok, failed, throttled)", logins.clone());
        let logins = ["ok", "failed", "throttled"].map(|r| logins.get_or_create(&[("result", r)]).clone());
        let registrations = Counter::default();
        registry.register("registrations", "Accounts registered", registrations.clone());
        let rooms = Gauge::default();
        registry.register("rooms", "Rooms that exist", rooms.clone());
        let members = Gauge::default();
        registry.register("members", "Room memberships (a connection in a room counts once)", members.clone());
        let messages_accepted = Counter::default();
        registry.register(
            "messages_accepted",
            "Messages accepted to be stored and fanned out (rooms and direct messages)",
            messages_accepted.clone(),
        );
        let messages_delivered = Counter::default();
        registry.register(
            "messages_delivered",
            "Messages written to a connection (one per recipient)",
            messages_delivered.clone(),
        );
        let bot_commands_relayed = Counter::default();
        registry.register(
            "bot_commands_relayed",
            "Bot command lines relayed to the bots serving them",
            bot_commands_relayed.clone(),
        );
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_batch_size",
            "Operations committed in one transaction by the store's writer (group commit)",
            commit_batch_size.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register_with_unit(
            "commit",
            "Time one group commit took, from the transaction's start to its commit",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let history_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register_with_unit(
            "history",
            "Time a history request (HISTORY, CHATHISTORY) took in the core and the store",
            Unit::Seconds,
            history_seconds.clone(),
        );
        let disconnects = Family::<Labels, Counter>::default();
        registry.register(
            "disconnects",
            "Connections the server ended, by reason; slow_reader is a full send queue",
            disconnects.clone(),
        );
        let disconnects = ["login_timeout", "ping_timeout", "excess_flood", "slow_reader", "write_timeout"]
            .map(|r| disconnects.get_or_create(&[("reason", r)]).clone());
        let flood_delays = Counter::default();
        registry.register("flood_delays", "Lines held back by flood control", flood_delays.clone());
        let storage_errors = Counter::default();
        registry.register(
            "storage_errors",
            "Store operations that failed (a failed group commit counts once)",
            storage_errors.clone(),
        );
        let refusals = Family::<Labels, Counter>::default();
        registry.register("admissions_refused", "New connections refused at the gate, by reason", refusals.clone());
        let refusals = ["server_full", "too_many_from_address", "too_many_new_from_address"]
            .map(|r| refusals.get_or_create(&[("reason", r)]).clone());
        let cluster_peers = Gauge::default();
        registry.register("cluster_peers", "Other cluster nodes heard from in the last 5 s", cluster_peers.clone());
        let cluster_backfilled = Counter::default();
        registry.register(
            "cluster_backfilled_messages",
            "Messages a cluster node read from the store because they did not come from the other nodes in time",
            cluster_backfilled.clone(),
        );
        let cluster_received = Counter::default();
        registry.register(
            "cluster_received_messages",
            "Committed messages received from the other cluster nodes",
            cluster_received.clone(),
        );
        Metrics {
            registry,
            connections,
            logins,
            registrations,
            rooms,
            members,
            messages_accepted,
            messages_delivered,
            bot_commands_relayed,
            commit_batch_size,
            commit_seconds,
            history_seconds,
            disconnects,
            flood_delays,
            storage_errors,
            refusals,
            cluster_peers,
            cluster_backfilled,
            cluster_received,
        }
    }

    /// The gauge of open connections for a front end (`native`, `irc`) and transport.
    pub fn connections(&self, protocol: &'static str, tls: bool) -> OpenConnections {
        self.connections_on(protocol, if tls { "tls" } else { "plain" })
    }

    /// The gauge of open connections for a front end and a transport: `tls`, `plain`, or a
    /// WebSocket, `wss` (over TLS) or `ws`.
    pub fn connections_on(&self, protocol: &'static str, transport: &'static str) -> OpenConnections {
        OpenConnections(self.connections.get_or_create(&[("protocol", protocol), ("transport", transport)]).clone())
    }

    pub fn login(&self, result: LoginResult) {
        self.logins[result as usize].inc();
    }

    pub fn refused(&self, why: Refused) {
        self.refusals[why as usize].inc();
    }

    pub fn dropped(&self, why: Dropped) {
        self.disconnects[why as usize].inc();
    }

    pub fn observe_history(&self, took: Duration) {
        self.history_seconds.observe(took.as_secs_f64());
    }

    /// The exposition: every metric, in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String does not fail");
        match format {
            Format::OpenMetrics => out,
            Format::Classic => classic(&out),
        }
    }
}

/// prometheus-client's OpenMetrics text as Prometheus' classic text format. The samples are the
/// same; what differs is the metadata: a counter's HELP and TYPE name its `_total` series, and
/// there are no UNIT lines and no `# EOF`. (The metrics here carry no exemplars and no `_created`
/// series, which the classic format lacks.)
fn classic(open_metrics: &str) -> String {
    let counters: Vec<&str> =
        open_metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open_metrics.len() + 16 * counters.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(&name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{total} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric() {
        let m = metrics();
        m.login(LoginResult::Throttled);
        let _open = m.connections("irc", false).open();
        let text = m.render(Format::OpenMetrics);
        for name in [
            "chatd_connections{",
            "chatd_logins_total{result=\"throttled\"}",
            "chatd_registrations_total",
            "chatd_rooms",
            "chatd_members",
            "chatd_messages_accepted_total",
            "chatd_messages_delivered_total",
            "chatd_bot_commands_relayed_total",
            "chatd_commit_batch_size_bucket",
            "chatd_commit_seconds_bucket",
            "chatd_history_seconds_bucket",
            "chatd_disconnects_total{reason=\"slow_reader\"}",
            "chatd_flood_delays_total",
            "chatd_storage_errors_total",
            "chatd_admissions_refused_total{reason=\"server_full\"}",
            "chatd_cluster_peers",
            "chatd_cluster_backfilled_messages_total",
            "chatd_cluster_received_messages_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains("chatd_connections{protocol=\"irc\",transport=\"plain\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        let classic = m.render(Format::Classic);
        assert!(classic.contains("# HELP chatd_logins_total Logins"), "{classic}");
        assert!(classic.contains("# TYPE chatd_logins_total counter\n"), "{classic}");
        assert!(classic.contains("# TYPE chatd_commit_seconds histogram\n"), "{classic}");
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"), "{classic}");
    }

    #[test]
    fn the_scraper_gets_the_format_it_asks_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                          q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(prometheus), Format::OpenMetrics);
        assert_eq!(Format::negotiate(""), Format::Classic);
        assert_eq!(Format::negotiate("*/*"), Format::Classic);
    }
}
