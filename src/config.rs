//! Configuration: `chatd.toml` (every key optional, the defaults are embedded here) plus the
//! command-line overrides. Relative paths are resolved against the config file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub tls: TlsSection,
    pub storage: StorageSection,
    pub accounts: AccountsSection,
    pub rooms: RoomsSection,
    pub limits: Limits,
    pub irc: IrcSection,
    pub bots: Vec<BotAccount>,
    pub metrics: MetricsSection,
    pub guests: GuestsSection,
    pub admin: AdminSection,
    pub web: WebSection,
    pub cluster: ClusterSection,
}

/// Several nodes as one server (docs/cluster.md): off while `node` is empty. Needs
/// `storage.backend = "postgres"`, every node on the same database and the same NATS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// The NATS server the nodes talk through: `nats://host:port`.
    pub nats_url: String,
}

impl ClusterSection {
    pub fn enabled(&self) -> bool {
        !self.node.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub plain_listen: String,
    pub allow_plain_non_loopback: bool,
    pub listen_backlog: u32,
}

/// The IRC front end (IRC.md): its listeners and what it tells clients about the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IrcSection {
    /// TLS listener; empty: no IRC over TLS.
    pub listen: String,
    /// Plaintext listener; empty: off. Loopback only unless server.allow_plain_non_loopback.
    pub plain_listen: String,
    /// The server's name in IRC lines (the source of numerics).
    pub server_name: String,
    /// The network's name (ISUPPORT NETWORK, the welcome line).
    pub network: String,
    /// The message of the day, lines separated by newlines; empty: none (clients get 422).
    pub motd: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generate_self_signed: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Which store of record: SQLite at `db` (the default: nothing else to run) or PostgreSQL at
    /// `postgres_url` (docs/cluster.md).
    pub backend: Backend,
    pub db: PathBuf,
    /// A libpq connection string or URL (`postgresql://user@host:port/dbname`), for
    /// `backend = "postgres"`. A password in it is never logged; prefer a `~/.pgpass` file.
    pub postgres_url: String,
    pub max_batch: usize,
    /// How long a write waits for a lock another process holds on the database before it fails.
    pub busy_timeout_ms: u64,
    /// A cap on the database size in pages of 4 KiB (0: none). Writes beyond it fail as on a full
    /// disk; for quotas, and for tests.
    pub max_pages: u64,
}

/// The store of record's engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sqlite,
    Postgres,
}

/// `[admin]`: the server's administrators (accounts that may moderate every room, disable
/// accounts, reset passwords, delete rooms, send server-wide notices, read the audit log and
/// reload the configuration).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Account names. A reload applies a change.
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsSection {
    pub open_registration: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsSection {
    pub auto_create: bool,
    pub initial: Vec<String>,
    pub cache_messages: usize,
}

/// Every bound chatd enforces on its peers. Documented in chatd.toml and PROTOCOL.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_line_bytes: usize,
    pub max_message_bytes: usize,
    pub send_queue_bytes: usize,
    pub send_queue_lines: usize,
    pub handshake_timeout_secs: u64,
    pub login_timeout_secs: u64,
    pub ping_after_secs: u64,
    pub ping_timeout_secs: u64,
    pub write_timeout_secs: u64,
    pub flood_burst: u32,
    pub flood_rate_per_sec: f64,
    pub flood_max_backlog: u32,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub new_connections_per_address_per_minute: usize,
    pub exempt_loopback: bool,
    pub rooms_per_connection: usize,
    pub members_per_room: usize,
    pub max_rooms: usize,
    pub registrations_per_address_per_hour: usize,
    pub registrations_per_hour: usize,
    pub login_failures_before_delay: u32,
    pub argon2_workers: usize,
}

/// The HTTP listener for Prometheus metrics (`GET /metrics`) and the health check (`GET /health`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Address to listen on; empty: off. Loopback only unless server.allow_plain_non_loopback.
    pub listen: String,
}

/// The web listener (README, PROTOCOL.md section 8): HTTPS serving the web client, and `/ws`, a
/// WebSocket carrying the native protocol or IRC, one line per message.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSection {
    /// HTTPS listener (the certificate of `[tls]`); empty: off.
    pub listen: String,
    /// Plain HTTP listener; empty: off. Loopback only unless server.allow_plain_non_loopback.
    pub plain_listen: String,
    /// The host names the web client is reached by. A WebSocket handshake whose `Origin` names
    /// another host is refused (403).
    pub hosts: Vec<String>,
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection {
            listen: String::new(),
            plain_listen: String::new(),
            hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

/// Guest access (people without an account), off by default. Guests have a nick that is no
/// account's name, may join only the rooms listed here (or every existing room with `all_rooms`),
/// and have their own, stricter limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuestsSection {
    pub enabled: bool,
    /// The rooms guests may join (they never create rooms).
    pub rooms: Vec<String>,
    /// Every existing room instead of `rooms`.
    pub all_rooms: bool,
    /// A guest connection's flood bucket (instead of limits.flood_burst / flood_rate_per_sec).
    pub flood_burst: u32,
    pub flood_rate_per_sec: f64,
    /// Most rooms one guest connection may be in.
    pub rooms_per_connection: usize,
    /// Whether guests may send direct messages to members.
    pub direct_messages_to_members: bool,
    /// Whether guests may post bot command lines (`/stock=...`).
    pub bot_commands: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotAccount {
    pub name: String,
    pub password_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSection::default(),
            tls: TlsSection::default(),
            storage: StorageSection::default(),
            accounts: AccountsSection::default(),
            rooms: RoomsSection::default(),
            limits: Limits::default(),
            irc: IrcSection::default(),
            bots: vec![BotAccount { name: "stockbot".into(), password_file: "data/stockbot.secret".into() }],
            metrics: MetricsSection::default(),
            guests: GuestsSection::default(),
            admin: AdminSection::default(),
            web: WebSection::default(),
            cluster: ClusterSection::default(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:6697".into(),
            plain_listen: String::new(),
            allow_plain_non_loopback: false,
            listen_backlog: 4096,
        }
    }
}

impl Default for IrcSection {
    fn default() -> Self {
        IrcSection {
            listen: "127.0.0.1:6699".into(),
            plain_listen: String::new(),
            server_name: "irc.chatd".into(),
            network: "chatd".into(),
            motd: String::new(),
        }
    }
}

impl Default for GuestsSection {
    fn default() -> Self {
        GuestsSection {
            enabled: false,
            rooms: Vec::new(),
            all_rooms: false,
            flood_burst: 5,
            flood_rate_per_sec: 1.0,
            rooms_per_connection: 3,
            direct_messages_to_members: false,
            bot_commands: false,
        }
    }
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection { cert: "certs/cert.pem".into(), key: "certs/key.pem".into(), generate_self_signed: true }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: Backend::Sqlite,
            db: "data/chatd.db".into(),
            postgres_url: String::new(),
            max_batch: 1024,
            busy_timeout_ms: 5000,
            max_pages: 0,
        }
    }
}

impl Default for AccountsSection {
    fn default() -> Self {
        AccountsSection { open_registration: true }
    }
}

impl Default for RoomsSection {
    fn default() -> Self {
        RoomsSection { auto_create: true, initial: vec!["general".into(), "random".into()], cache_messages: 200 }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 4096,
            max_message_bytes: 2000,
            send_queue_bytes: 256 * 1024,
            send_queue_lines: 4096,
            handshake_timeout_secs: 10,
            login_timeout_secs: 60,
            ping_after_secs: 90,
            ping_timeout_secs: 60,
            write_timeout_secs: 30,
            flood_burst: 10,
            flood_rate_per_sec: 5.0,
            flood_max_backlog: 50,
            max_connections: 19_500,
            max_connections_per_address: 16,
            new_connections_per_address_per_minute: 60,
            exempt_loopback: false,
            rooms_per_connection: 100,
            members_per_room: 20_000,
            max_rooms: 10_000,
            registrations_per_address_per_hour: 10,
            registrations_per_hour: 300,
            login_failures_before_delay: 3,
            argon2_workers: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The underlying error is part of the message, not a `source`: printed with `{:#}` a source
    // would repeat it.
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {error}")]
    Parse { path: PathBuf, error: toml::de::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path`, or the embedded defaults when `path` is `None`. Relative paths in the file are
    /// made absolute against the file's directory (against the working directory for defaults).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (mut config, base) = match path {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
                let config: Config =
                    toml::from_str(&text).map_err(|error| ConfigError::Parse { path: path.into(), error })?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (config, base)
            }
            None => (Config::default(), PathBuf::new()),
        };
        config.resolve_paths(&base);
        Ok(config)
    }

    /// Everything `chatd --check-config` checks: `validate`, plus what the daemon would only find
    /// at start (room and bot names, the certificate files when none may be generated).
    pub fn check(&self) -> Result<(), ConfigError> {
        use chatd_proto::names::{RoomName, UserName};
        self.validate()?;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for room in &self.rooms.initial {
            if RoomName::parse(room).is_none() {
                return bad(format!("rooms.initial: {room:?} is not a valid room name"));
            }
        }
        for bot in &self.bots {
            if UserName::parse(&bot.name).is_none() {
                return bad(format!("bots: name {:?} breaks the user name rules", bot.name));
            }
        }
        for (key, path) in [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
            match std::fs::File::open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.tls.generate_self_signed => {}
                Err(e) => return bad(format!("{key}: cannot read {}: {e}", path.display())),
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.storage.db);
        for bot in &mut self.bots {
            fix(&mut bot.password_file);
        }
    }

    /// Checks what serde cannot: addresses parse, numbers are in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.listen_addr()?;
        if let Some(plain) = self.plain_listen_addr()? {
            if !plain.ip().is_loopback() && !self.server.allow_plain_non_loopback {
                return bad(format!(
                    "server.plain_listen {plain} is not loopback; plaintext would expose passwords \
                     (set server.allow_plain_non_loopback = true to force it)"
                ));
            }
        }
        self.irc_listen_addr()?;
        if let Some(plain) = self.irc_plain_listen_addr()? {
            if !plain.ip().is_loopback() && !self.server.allow_plain_non_loopback {
                return bad(format!(
                    "irc.plain_listen {plain} is not loopback; plaintext would expose passwords \
                     (set server.allow_plain_non_loopback = true to force it)"
                ));
            }
        }
        if let Some(addr) = self.metrics_listen_addr()? {
            if !addr.ip().is_loopback() && !self.server.allow_plain_non_loopback {
                return bad(format!(
                    "metrics.listen {addr} is not loopback; the metrics and health endpoints are plain \
                     HTTP without authentication (set server.allow_plain_non_loopback = true to force it)"
                ));
            }
        }
        self.web_listen_addr()?;
        if let Some(plain) = self.web_plain_listen_addr()? {
            if !plain.ip().is_loopback() && !self.server.allow_plain_non_loopback {
                return bad(format!(
                    "web.plain_listen {plain} is not loopback; plain HTTP would expose passwords \
                     (set server.allow_plain_non_loopback = true to force it)"
                ));
            }
        }
        if self.web.hosts.iter().any(|h| h.is_empty() || h.contains(['/', ' ', ','])) {
            return bad("web.hosts must be host names or addresses (no scheme, no port)".into());
        }
        let name_ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b':' && b != b'!' && b != b'@');
        if !name_ok(&self.irc.server_name) || !self.irc.server_name.contains('.') {
            return bad("irc.server_name must be a host-like name with a dot (e.g. irc.chatd)".into());
        }
        if !name_ok(&self.irc.network) {
            return bad("irc.network must be one word".into());
        }
        if let Some(bad_name) = self.admin.users.iter().find(|u| chatd_proto::names::UserName::parse(u).is_none()) {
            return bad(format!("admin.users: {bad_name:?} is not a valid user name"));
        }
        let l = &self.limits;
        if l.max_line_bytes < 64 || l.max_line_bytes > 1 << 20 {
            return bad("limits.max_line_bytes must be between 64 and 1048576".into());
        }
        if l.max_message_bytes == 0 || l.max_message_bytes + 64 > l.max_line_bytes {
            return bad("limits.max_message_bytes must be positive and leave room for 'MSG <room> ' in a line".into());
        }
        if l.flood_rate_per_sec <= 0.0 || l.flood_burst == 0 {
            return bad("limits.flood_rate_per_sec and flood_burst must be positive".into());
        }
        if l.argon2_workers == 0 || l.send_queue_lines == 0 || self.storage.max_batch == 0 {
            return bad("limits.argon2_workers, send_queue_lines and storage.max_batch must be positive".into());
        }
        if self.storage.backend == Backend::Postgres {
            crate::store::check_postgres_url(&self.storage.postgres_url)
                .map_err(|why| ConfigError::Invalid(format!("storage.postgres_url: {why}")))?;
        }
        let c = &self.cluster;
        if c.enabled() {
            if self.storage.backend != Backend::Postgres {
                return bad("cluster.node needs storage.backend = \"postgres\" (every node on one database)".into());
            }
            if chatd_proto::names::UserName::parse(&c.node).is_none() {
                return bad(format!("cluster.node: {:?} must be a short name of letters, digits, '-' or '_'", c.node));
            }
            if !c.nats_url.starts_with("nats://") {
                return bad(format!("cluster.nats_url: {:?} is not a nats://host:port URL", c.nats_url));
            }
        }
        let g = &self.guests;
        if g.flood_rate_per_sec <= 0.0 || g.flood_burst == 0 {
            return bad("guests.flood_rate_per_sec and flood_burst must be positive".into());
        }
        if let Some(room) = g.rooms.iter().find(|r| chatd_proto::names::RoomName::parse(r).is_none()) {
            return bad(format!("guests.rooms: {room:?} is not a valid room name"));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("server.listen {:?} is not an address:port", self.server.listen)))
    }

    /// The IRC TLS listener's address, if it has one.
    pub fn irc_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("irc.listen", &self.irc.listen)
    }

    /// The IRC plaintext listener's address, if it has one.
    pub fn irc_plain_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("irc.plain_listen", &self.irc.plain_listen)
    }

    /// The metrics and health listener's address, if it has one.
    pub fn metrics_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("metrics.listen", &self.metrics.listen)
    }

    /// The web client's HTTPS listener's address, if it has one.
    pub fn web_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("web.listen", &self.web.listen)
    }

    /// The web client's plain HTTP listener's address, if it has one.
    pub fn web_plain_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("web.plain_listen", &self.web.plain_listen)
    }

    pub fn plain_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.server.plain_listen.is_empty() {
            return Ok(None);
        }
        self.server.plain_listen.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!("server.plain_listen {:?} is not an address:port", self.server.plain_listen))
        })
    }
}

fn optional_addr(key: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| ConfigError::Invalid(format!("{key} {value:?} is not an address:port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_chatd_toml_matches_embedded_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("chatd.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let file: Config = toml::from_str(&text).unwrap();
        let defaults = Config::default();
        assert_eq!(format!("{file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn plaintext_beyond_loopback_is_refused() {
        let mut c = Config::default();
        c.server.plain_listen = "0.0.0.0:6667".into();
        assert!(c.validate().is_err());
        c.server.allow_plain_non_loopback = true;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn metrics_beyond_loopback_is_refused_and_off_by_default() {
        let mut c = Config::default();
        assert_eq!(c.metrics_listen_addr().unwrap(), None);
        c.metrics.listen = "127.0.0.1:9187".into();
        assert!(c.validate().is_ok());
        c.metrics.listen = "[::]:9187".into();
        assert!(c.validate().is_err());
        c.server.allow_plain_non_loopback = true;
        assert!(c.validate().is_ok());
        c.metrics.listen = "nowhere".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn irc_plaintext_beyond_loopback_is_refused() {
        let mut c = Config::default();
        c.irc.plain_listen = "0.0.0.0:6667".into();
        assert!(c.validate().is_err());
        c.irc.plain_listen = "127.0.0.1:6667".into();
        assert!(c.validate().is_ok());
        c.irc.plain_listen = "0.0.0.0:6667".into();
        c.server.allow_plain_non_loopback = true;
        assert!(c.validate().is_ok());
        c.irc.server_name = "nodot".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn web_is_off_by_default_and_plain_http_stays_on_loopback() {
        let mut c = Config::default();
        assert_eq!(c.web_listen_addr().unwrap(), None);
        c.web.listen = "0.0.0.0:8443".into();
        c.web.plain_listen = "127.0.0.1:8080".into();
        assert!(c.validate().is_ok());
        c.web.plain_listen = "0.0.0.0:8080".into();
        assert!(c.validate().is_err());
        c.web.plain_listen = String::new();
        c.web.hosts = vec!["https://chat.example.org".into()];
        assert!(c.validate().is_err());
    }

    #[test]
    fn guests_are_off_by_default_and_checked() {
        let mut c = Config::default();
        assert!(!c.guests.enabled);
        c.guests.rooms = vec!["help".into(), "no/slash".into()];
        assert!(c.validate().is_err());
        c.guests.rooms = vec!["help".into()];
        assert!(c.validate().is_ok());
        c.guests.flood_rate_per_sec = 0.0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_postgres_backend_needs_a_valid_url() {
        let mut c: Config = toml::from_str("[storage]\nbackend = \"postgres\"").unwrap();
        assert_eq!(c.storage.backend, Backend::Postgres);
        assert!(c.validate().is_err(), "no URL");
        c.storage.postgres_url = "postgresql://chatd@127.0.0.1:5432/chatd".into();
        assert!(c.validate().is_ok());
        c.storage.postgres_url = "host=127.0.0.1 port=nope".into();
        assert!(c.validate().is_err());
        assert!(toml::from_str::<Config>("[storage]\nbackend = \"mysql\"").is_err());
    }
}
