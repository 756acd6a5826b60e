//! Configuration: command-line flags, each with an environment variable (`CHATD_BOT_*`), and
//! optionally a TOML file (`--config bot.toml`) with the same keys in snake_case. A flag or its
//! variable wins over the file, the file over the built-in default. Relative paths in the file are
//! relative to the file's directory; on the command line, to the working directory.
//!
//! Each setting is declared once, in [`Settings`]: its flag, variable, file key, help text and
//! default. The same struct holds a layer (the flags, or the file), layers are merged field by
//! field, and [`Config`] is what the merged settings resolve to (durations, sources with their
//! keys, trust, the password source). `bot.example.toml` shows the defaults; a test keeps it equal
//! to them.
//!
//! Secrets never come from a command-line argument (they would show in `ps`): the bot's password
//! comes from `--password-file` or the `CHATD_BOT_PASSWORD` variable, API keys from a key file or
//! the `STOOQ_API_KEY` / `FINNHUB_API_KEY` / `ALPHAVANTAGE_API_KEY` variables. The variables are
//! removed from the process environment once read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use chatd_proto::{parse_fingerprint, Trust};
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;

use crate::command::is_valid_code;
use crate::source::{ApiKey, Source, ALPHA_VANTAGE_URL, FINNHUB_URL, STOOQ_DAILY_URL, STOOQ_URL};
pub use crate::stooq::STOOQ_KEY_ENV;

/// Environment variable with the bot's password (used when no password file is given).
pub const PASSWORD_ENV: &str = "CHATD_BOT_PASSWORD";
pub const FINNHUB_KEY_ENV: &str = "FINNHUB_API_KEY";
pub const ALPHA_VANTAGE_KEY_ENV: &str = "ALPHAVANTAGE_API_KEY";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Stooq,
    Finnhub,
    Alphavantage,
    /// No source (only valid for --fallback).
    None,
}

/// Declares the settings once: each is a field of [`Settings`] (a flag and its `CHATD_BOT_*`
/// variable through clap, a key of the TOML file through serde) with its default next to it.
/// Generated: [`Settings::defaults`], [`Settings::over`] (one layer over another, field by field),
/// [`Settings::relative_to`] (paths in the file) and the `[default: ...]` texts of `--help`.
macro_rules! settings {
    (
        $(#[$struct_attr:meta])*
        pub struct $name:ident {
            $( $(#[$attr:meta])* $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$struct_attr])*
        pub struct $name {
            $( $(#[$attr])* pub $field: $ty, )*
        }

        impl $name {
            /// The built-in defaults: the one place they are written.
            pub fn defaults() -> $name {
                $name { $( $field: $default, )* }
            }

            /// `self` where it has a value, else `lower`.
            pub fn over(self, lower: $name) -> $name {
                $name { $( $field: Setting::over(self.$field, lower.$field), )* }
            }

            /// Relative paths made relative to `base` (the config file's directory).
            pub fn relative_to(self, base: &Path) -> $name {
                $name { $( $field: Setting::relative_to(self.$field, base), )* }
            }

            /// `(field, default as text)` for the settings that have a default.
            fn default_texts() -> Vec<(&'static str, String)> {
                let d = $name::defaults();
                let mut out = Vec::new();
                $( if let Some(text) = Setting::shown(&d.$field) { out.push((stringify!($field), text)); } )*
                out
            }
        }
    };
}

settings! {
    /// chatd's stock bot: answers `/stock=<code>` in every room with a quote from stooq (or Finnhub /
    /// Alpha Vantage with your own API key).
    #[derive(Debug, Default, Clone, PartialEq, Parser, Deserialize)]
    #[command(name = "chatd-bot", version, about, long_about = None)]
    #[serde(default, deny_unknown_fields)]
    pub struct Settings {
        /// TOML file with any of the settings below (snake_case keys, e.g. quote_url = "...").
        #[arg(long, env = "CHATD_BOT_CONFIG", value_name = "FILE")]
        #[serde(skip)]
        config: Option<PathBuf> = None,

        /// The daemon's TLS address; several, comma-separated, for the nodes of a cluster (the bot
        /// moves on to the next when one cannot be reached).
        #[arg(long, env = "CHATD_BOT_ADDR", value_name = "HOST:PORT[,HOST:PORT...]")]
        addr: Option<String> = Some("127.0.0.1:6697".into()),

        /// Name checked against the daemon's certificate.
        #[arg(long, env = "CHATD_BOT_SERVER_NAME", value_name = "NAME")]
        server_name: Option<String> = Some("localhost".into()),

        /// Trust the daemon's certificate if a CA in this PEM file signed it
        /// [default: certs/ca.pem when it exists, else the system roots].
        #[arg(long, env = "CHATD_BOT_CA", value_name = "PEM", conflicts_with_all = ["fingerprint", "system_roots"])]
        ca: Option<PathBuf> = None,

        /// Trust exactly the certificate with this SHA-256 fingerprint (AB:CD:... as chatd prints it).
        #[arg(long, env = "CHATD_BOT_FINGERPRINT", value_name = "SHA256", conflicts_with = "system_roots")]
        fingerprint: Option<String> = None,

        /// Trust the web PKI roots (a daemon with a certificate from a public CA).
        #[arg(long, env = "CHATD_BOT_SYSTEM_ROOTS")]
        system_roots: bool = false,

        /// The bot's account.
        #[arg(long, env = "CHATD_BOT_USER", value_name = "NAME")]
        user: Option<String> = Some("stockbot".into()),

        /// File holding the bot's password (chatd writes data/stockbot.secret). Without it the password
        /// comes from $CHATD_BOT_PASSWORD, else from this default.
        #[arg(long, env = "CHATD_BOT_PASSWORD_FILE", value_name = "FILE")]
        password_file: Option<PathBuf> = Some("data/stockbot.secret".into()),

        /// The command word served.
        #[arg(long, env = "CHATD_BOT_COMMAND", value_name = "WORD")]
        command: Option<String> = Some("stock".into()),

        /// Where quotes come from first.
        #[arg(long, env = "CHATD_BOT_SOURCE", value_name = "SOURCE")]
        source: Option<SourceKind> = Some(SourceKind::Stooq),

        /// Asked when the first source fails (not for an unknown symbol).
        #[arg(long, env = "CHATD_BOT_FALLBACK", value_name = "SOURCE")]
        fallback: Option<SourceKind> = Some(SourceKind::None),

        /// stooq URL template; {code} is replaced by the code.
        #[arg(long, env = "CHATD_BOT_QUOTE_URL", value_name = "URL")]
        quote_url: Option<String> = Some(STOOQ_URL.into()),

        /// File holding the stooq API key (else $STOOQ_API_KEY); without one, only stooq's quote
        /// endpoint is asked, without a key.
        #[arg(long, env = "CHATD_BOT_STOOQ_KEY_FILE", value_name = "FILE")]
        stooq_key_file: Option<PathBuf> = None,

        /// stooq daily-history URL template, asked (with the key) when the quote URL fails.
        #[arg(long, env = "CHATD_BOT_DAILY_URL", value_name = "URL")]
        daily_url: Option<String> = Some(STOOQ_DAILY_URL.into()),

        /// Finnhub base URL.
        #[arg(long, env = "CHATD_BOT_FINNHUB_URL", value_name = "URL")]
        finnhub_url: Option<String> = Some(FINNHUB_URL.into()),

        /// File holding the Finnhub API key (else $FINNHUB_API_KEY).
        #[arg(long, env = "CHATD_BOT_FINNHUB_KEY_FILE", value_name = "FILE")]
        finnhub_key_file: Option<PathBuf> = None,

        /// Alpha Vantage base URL.
        #[arg(long, env = "CHATD_BOT_ALPHAVANTAGE_URL", value_name = "URL")]
        alphavantage_url: Option<String> = Some(ALPHA_VANTAGE_URL.into()),

        /// File holding the Alpha Vantage API key (else $ALPHAVANTAGE_API_KEY).
        #[arg(long, env = "CHATD_BOT_ALPHAVANTAGE_KEY_FILE", value_name = "FILE")]
        alphavantage_key_file: Option<PathBuf> = None,

        /// Bound on one quote request, in seconds.
        #[arg(long, env = "CHATD_BOT_TIMEOUT", value_name = "SECS", value_parser = parse_secs)]
        timeout: Option<f64> = Some(5.0),

        /// Upstream requests in flight at once.
        #[arg(long, env = "CHATD_BOT_MAX_CONCURRENT", value_name = "N")]
        max_concurrent: Option<usize> = Some(16),

        /// Requests waiting or in flight before new ones are answered "busy".
        #[arg(long, env = "CHATD_BOT_MAX_PENDING", value_name = "N")]
        max_pending: Option<usize> = Some(256),

        /// How long an answer is reused for the same code, in seconds (0: only share calls in
        /// flight).
        #[arg(long, env = "CHATD_BOT_CACHE_TTL", value_name = "SECS", value_parser = parse_secs)]
        cache_ttl: Option<f64> = Some(5.0),

        /// Requests per sender per window (0: no limit).
        #[arg(long, env = "CHATD_BOT_RATE_LIMIT", value_name = "N")]
        rate_limit: Option<usize> = Some(5),

        /// The rate-limit window, in seconds.
        #[arg(long, env = "CHATD_BOT_RATE_WINDOW", value_name = "SECS", value_parser = parse_secs)]
        rate_window: Option<f64> = Some(30.0),

        /// Lines per second the bot sends to the daemon after a burst.
        #[arg(long, env = "CHATD_BOT_SEND_RATE", value_name = "PER_SEC", value_parser = parse_secs)]
        send_rate: Option<f64> = Some(4.0),

        /// Lines the bot may send at once.
        #[arg(long, env = "CHATD_BOT_SEND_BURST", value_name = "N")]
        send_burst: Option<u32> = Some(8),

        /// First reconnection delay, in seconds; it doubles after each failure.
        #[arg(long, env = "CHATD_BOT_BACKOFF_MIN", value_name = "SECS", value_parser = parse_secs)]
        backoff_min: Option<f64> = Some(0.5),

        /// Longest reconnection delay, in seconds.
        #[arg(long, env = "CHATD_BOT_BACKOFF_MAX", value_name = "SECS", value_parser = parse_secs)]
        backoff_max: Option<f64> = Some(30.0),

        /// Send PING after this many idle seconds; a daemon silent for twice as long is taken as gone.
        #[arg(long, env = "CHATD_BOT_KEEPALIVE", value_name = "SECS", value_parser = parse_secs)]
        keepalive: Option<f64> = Some(60.0),

        /// Fetch one quote (default aapl.us) through the configured sources, print every request and
        /// answer (keys hidden) and the reply a user would see, then exit: 0 when a price came back.
        #[arg(long, value_name = "CODE", num_args = 0..=1, default_missing_value = crate::check::DEFAULT_CODE)]
        #[serde(skip)]
        check: Option<String> = None,
    }
}

/// What one settings field knows about itself: how layers combine, how a path in the file is
/// resolved, how its default is shown in `--help`.
trait Setting: Sized {
    fn over(self, lower: Self) -> Self;
    fn relative_to(self, _base: &Path) -> Self {
        self
    }
    fn shown(&self) -> Option<String>;
}

/// A value that can be shown as a default (`[default: 5]`) and, if a path, rebased.
trait Value: Sized {
    fn show(&self) -> String;
    fn relative_to(self, _base: &Path) -> Self {
        self
    }
}

impl<T: Value> Setting for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
    fn relative_to(self, base: &Path) -> Self {
        self.map(|v| v.relative_to(base))
    }
    fn shown(&self) -> Option<String> {
        self.as_ref().map(Value::show)
    }
}

/// A flag: set in any layer, it is set.
impl Setting for bool {
    fn over(self, lower: Self) -> Self {
        self || lower
    }
    fn shown(&self) -> Option<String> {
        None
    }
}

impl Value for String {
    fn show(&self) -> String {
        self.clone()
    }
}

impl Value for PathBuf {
    fn show(&self) -> String {
        self.display().to_string()
    }
    fn relative_to(self, base: &Path) -> Self {
        if self.is_absolute() {
            self
        } else {
            base.join(self)
        }
    }
}

impl Value for SourceKind {
    fn show(&self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

macro_rules! shown_by_display {
    ($($t:ty),*) => { $( impl Value for $t { fn show(&self) -> String { self.to_string() } } )* };
}
shown_by_display!(f64, usize, u32);

impl Settings {
    /// Parses the command line (and the `CHATD_BOT_*` variables), with each default shown in
    /// `--help`.
    pub fn from_command_line() -> Settings {
        let matches = Settings::command_with_defaults().get_matches();
        Settings::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The clap command, each help text ending with its default (taken from [`Settings::defaults`]).
    fn command_with_defaults() -> clap::Command {
        let mut command = Settings::command();
        for (id, text) in Settings::default_texts() {
            command = command.mut_arg(id, |arg| {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                arg.help(format!("{help} [default: {text}]"))
            });
        }
        command
    }

    /// The settings in a TOML file, relative paths made relative to its directory.
    pub fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: Settings = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(file.relative_to(&base))
    }

    /// How this layer says the daemon's certificate is trusted, if it says so.
    fn trust(&self) -> anyhow::Result<Option<TrustSetting>> {
        Ok(if let Some(fp) = &self.fingerprint {
            Some(TrustSetting::Fixed(Trust::Fingerprint(fingerprint(fp)?)))
        } else if let Some(ca) = &self.ca {
            Some(TrustSetting::Fixed(Trust::CaFile(ca.clone())))
        } else if self.system_roots {
            Some(TrustSetting::Fixed(Trust::System))
        } else {
            None
        })
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=1e7).contains(&v) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v)
}

/// How the daemon's certificate is trusted.
#[derive(Debug, Clone)]
pub enum TrustSetting {
    /// `certs/ca.pem` if it exists when connecting (chatd may create it after the bot starts),
    /// else the system roots.
    Default,
    Fixed(Trust),
}

impl TrustSetting {
    pub fn resolve(&self) -> Trust {
        match self {
            TrustSetting::Fixed(t) => t.clone(),
            TrustSetting::Default => {
                let ca = PathBuf::from("certs/ca.pem");
                if ca.exists() {
                    Trust::CaFile(ca)
                } else {
                    Trust::System
                }
            }
        }
    }
}

/// Where the password comes from; read at every login, so a rewritten secret file is picked up.
#[derive(Clone)]
pub enum PasswordSource {
    File(PathBuf),
    Value(String),
}

impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSource::File(p) => write!(f, "File({})", p.display()),
            PasswordSource::Value(_) => f.write_str("Value(***)"),
        }
    }
}

impl PasswordSource {
    pub fn read(&self) -> anyhow::Result<String> {
        let pw = match self {
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the password file {}", path.display()))?
                .trim()
                .to_string(),
            PasswordSource::Value(v) => v.trim().to_string(),
        };
        if pw.is_empty() || pw.contains(char::is_whitespace) {
            bail!("the password is empty or contains spaces");
        }
        Ok(pw)
    }
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: String,
    pub server_name: String,
    pub trust: TrustSetting,
    pub user: String,
    pub password: PasswordSource,
    pub command: String,
    pub primary: Source,
    pub fallback: Option<Source>,
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub max_pending: usize,
    pub cache_ttl: Duration,
    pub rate_limit: usize,
    pub rate_window: Duration,
    pub send_rate: f64,
    pub send_burst: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub keepalive: Duration,
    /// `--check`: the code to check (valid, lower case) instead of serving.
    pub check: Option<String>,
}

/// The secrets read from the environment (and then removed from it).
#[derive(Default)]
pub struct EnvSecrets {
    pub password: Option<String>,
    pub stooq_key: Option<String>,
    pub finnhub_key: Option<String>,
    pub alphavantage_key: Option<String>,
}

impl EnvSecrets {
    /// Takes the variables out of the environment. Call before any thread starts.
    pub fn take() -> EnvSecrets {
        EnvSecrets {
            password: take_env(PASSWORD_ENV),
            stooq_key: take_env(STOOQ_KEY_ENV),
            finnhub_key: take_env(FINNHUB_KEY_ENV),
            alphavantage_key: take_env(ALPHA_VANTAGE_KEY_ENV),
        }
    }
}

impl Config {
    /// Parses the command line and environment, reads the file if any, and takes the secrets out
    /// of the environment.
    pub fn load() -> anyhow::Result<Config> {
        Config::build(Settings::from_command_line(), EnvSecrets::take())
    }

    /// Merges flags (with their variables), the file they name, the defaults and the given secrets
    /// from the environment: a flag wins over the file, the file over the default.
    pub fn build(args: Settings, env: EnvSecrets) -> anyhow::Result<Config> {
        let EnvSecrets { password: env_password, stooq_key, finnhub_key, alphavantage_key: av_key } = env;
        let file = match &args.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        // Trust and password are decided per layer: a flag's choice (say --ca) beats the file's
        // (say fingerprint) even though they are different fields.
        let trust = match args.trust()? {
            Some(t) => t,
            None => file.trust()?.unwrap_or(TrustSetting::Default),
        };
        let explicit_password_file = args.password_file.clone();
        let s = args.over(file).over(Settings::defaults());
        let password = match (explicit_password_file, env_password) {
            (Some(p), _) => PasswordSource::File(p),
            (None, Some(v)) => PasswordSource::Value(v),
            (None, None) => PasswordSource::File(defaulted(s.password_file)),
        };

        let quote_url = defaulted(s.quote_url);
        if !quote_url.contains("{code}") {
            bail!("the quote URL template must contain {{code}}: {quote_url}");
        }
        let daily_url = defaulted(s.daily_url);
        if !daily_url.contains("{code}") {
            bail!("the daily URL template must contain {{code}}: {daily_url}");
        }
        let stooq_key = optional_api_key("stooq", s.stooq_key_file.as_deref(), stooq_key.as_deref())?;
        let finnhub_url = defaulted(s.finnhub_url);
        let av_url = defaulted(s.alphavantage_url);
        let (finnhub_key_file, av_key_file) = (s.finnhub_key_file, s.alphavantage_key_file);

        let make_source = |kind: SourceKind| -> anyhow::Result<Option<Source>> {
            Ok(match kind {
                SourceKind::None => None,
                SourceKind::Stooq => Some(Source::Stooq {
                    url_template: quote_url.clone(),
                    daily_template: daily_url.clone(),
                    key: stooq_key.clone(),
                }),
                SourceKind::Finnhub => Some(Source::Finnhub {
                    base_url: finnhub_url.clone(),
                    key: api_key("Finnhub", finnhub_key_file.as_deref(), finnhub_key.as_deref(), FINNHUB_KEY_ENV)?,
                }),
                SourceKind::Alphavantage => Some(Source::AlphaVantage {
                    base_url: av_url.clone(),
                    key: api_key("Alpha Vantage", av_key_file.as_deref(), av_key.as_deref(), ALPHA_VANTAGE_KEY_ENV)?,
                }),
            })
        };
        let primary_kind = defaulted(s.source);
        let fallback_kind = defaulted(s.fallback);
        let primary = make_source(primary_kind)?.context("--source cannot be none")?;
        let fallback = if fallback_kind == primary_kind { None } else { make_source(fallback_kind)? };

        let command = defaulted(s.command).to_ascii_lowercase();
        if command.is_empty() || !command.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            bail!("invalid command word {command:?}");
        }

        let config = Config {
            addr: defaulted(s.addr),
            server_name: defaulted(s.server_name),
            trust,
            user: defaulted(s.user).to_ascii_lowercase(),
            password,
            command,
            primary,
            fallback,
            timeout: secs("timeout", s.timeout)?,
            max_concurrent: defaulted(s.max_concurrent),
            max_pending: defaulted(s.max_pending),
            cache_ttl: secs("cache_ttl", s.cache_ttl)?,
            rate_limit: defaulted(s.rate_limit),
            rate_window: secs("rate_window", s.rate_window)?,
            send_rate: defaulted(s.send_rate),
            send_burst: defaulted(s.send_burst),
            backoff_min: secs("backoff_min", s.backoff_min)?,
            backoff_max: secs("backoff_max", s.backoff_max)?,
            keepalive: secs("keepalive", s.keepalive)?,
            check: s.check.map(|c| c.trim().to_ascii_lowercase()),
        };
        if let Some(code) = &config.check {
            if !is_valid_code(code) {
                bail!("--check: {code:?} is not a quote code (e.g. aapl.us)");
            }
        }
        if config.timeout.is_zero() {
            bail!("the timeout must be positive");
        }
        if config.max_concurrent == 0 || config.max_pending == 0 {
            bail!("max_concurrent and max_pending must be positive");
        }
        if config.send_rate <= 0.0 || config.send_burst == 0 {
            bail!("send_rate and send_burst must be positive");
        }
        if config.backoff_min.is_zero() || config.backoff_max < config.backoff_min {
            bail!("need 0 < backoff_min <= backoff_max");
        }
        if config.keepalive < Duration::from_secs(1) {
            bail!("keepalive must be at least 1 s");
        }
        Ok(config)
    }
}

/// A merged setting that has a built-in default (so it is always set).
fn defaulted<T>(value: Option<T>) -> T {
    value.expect("Settings::defaults() sets every setting used with defaulted()")
}

/// A merged number of seconds as a duration (a file's value has not been through `parse_secs`).
fn secs(name: &str, value: Option<f64>) -> anyhow::Result<Duration> {
    let v = defaulted(value);
    Duration::try_from_secs_f64(v).ok().filter(|_| v <= 1e7).with_context(|| format!("{name}: {v} is out of range"))
}

fn fingerprint(s: &str) -> anyhow::Result<[u8; 32]> {
    parse_fingerprint(s).with_context(|| format!("not a SHA-256 fingerprint: {s:?}"))
}

fn api_key(service: &str, file: Option<&Path>, env: Option<&str>, env_name: &str) -> anyhow::Result<ApiKey> {
    optional_api_key(service, file, env)?
        .with_context(|| format!("{service} needs an API key: give its key file or set {env_name}"))
}

/// The key from its file (which wins) or the environment; `None` when neither is given.
fn optional_api_key(service: &str, file: Option<&Path>, env: Option<&str>) -> anyhow::Result<Option<ApiKey>> {
    let key = match (file, env) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the {service} key file {}", path.display()))?,
        (None, Some(v)) => v.to_string(),
        (None, None) => return Ok(None),
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        bail!("the {service} API key is empty");
    }
    Ok(Some(ApiKey(key)))
}

fn take_env(name: &str) -> Option<String> {
    let v = std::env::var(name).ok().filter(|v| !v.is_empty());
    // Called before the runtime starts any thread.
    std::env::remove_var(name);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Settings {
        let mut full = vec!["chatd-bot"];
        full.extend_from_slice(argv);
        Settings::try_parse_from(full).unwrap()
    }

    #[test]
    fn defaults() {
        let c = Config::build(parse(&[]), EnvSecrets::default()).unwrap();
        assert_eq!(c.addr, "127.0.0.1:6697");
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.user, "stockbot");
        assert_eq!(c.command, "stock");
        assert!(matches!(c.trust, TrustSetting::Default));
        assert!(matches!(&c.password, PasswordSource::File(p) if p == Path::new("data/stockbot.secret")));
        assert_eq!(c.primary, Source::stooq(STOOQ_URL));
        assert_eq!(c.check, None);
        assert_eq!(c.fallback, None);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!((c.max_concurrent, c.rate_limit), (16, 5));
        assert_eq!(c.rate_window, Duration::from_secs(30));
        assert_eq!((c.backoff_min, c.backoff_max), (Duration::from_millis(500), Duration::from_secs(30)));
    }

    #[test]
    fn flags() {
        let c = Config::build(
            parse(&[
                "--addr",
                "127.0.0.1:7000",
                "--fingerprint",
                &"ab".repeat(32),
                "--quote-url",
                "http://127.0.0.1:1/q/l/?s={code}",
                "--timeout",
                "0.5",
                "--fallback",
                "finnhub",
                "--finnhub-url",
                "http://127.0.0.1:2",
            ]),
            EnvSecrets {
                password: Some("pw-from-env".into()),
                finnhub_key: Some("fh-key".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.addr, "127.0.0.1:7000");
        assert!(matches!(c.trust, TrustSetting::Fixed(Trust::Fingerprint(fp)) if fp == [0xab; 32]));
        assert!(matches!(&c.password, PasswordSource::Value(v) if v == "pw-from-env"));
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.primary, Source::stooq("http://127.0.0.1:1/q/l/?s={code}"));
        assert_eq!(
            c.fallback,
            Some(Source::Finnhub { base_url: "http://127.0.0.1:2".into(), key: ApiKey("fh-key".into()) })
        );
    }

    #[test]
    fn errors() {
        assert!(Config::build(parse(&["--quote-url", "http://x/"]), EnvSecrets::default()).is_err());
        assert!(Config::build(parse(&["--source", "finnhub"]), EnvSecrets::default()).is_err(), "no key");
        assert!(Config::build(parse(&["--fingerprint", "zz"]), EnvSecrets::default()).is_err());
        assert!(Settings::try_parse_from(["chatd-bot", "--ca", "x", "--fingerprint", "y"]).is_err());
        assert!(Settings::try_parse_from(["chatd-bot", "--timeout", "-1"]).is_err());
        assert!(Settings::try_parse_from(["chatd-bot", "--password", "x"]).is_err(), "no password flag");
    }

    #[test]
    fn toml_file_with_relative_paths() {
        let dir = std::env::temp_dir().join(format!("chatd-bot-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("av.key"), "av-key\n").unwrap();
        let path = dir.join("bot.toml");
        std::fs::write(
            &path,
            r#"
addr = "127.0.0.1:7001"
ca = "certs/ca.pem"
password_file = "data/stockbot.secret"
source = "alphavantage"
alphavantage_key_file = "av.key"
fallback = "stooq"
rate_limit = 10
cache_ttl = 0
"#,
        )
        .unwrap();
        let args = parse(&["--config", path.to_str().unwrap(), "--rate-limit", "7"]);
        let c = Config::build(args, EnvSecrets::default()).unwrap();
        assert_eq!(c.addr, "127.0.0.1:7001");
        assert!(matches!(&c.trust, TrustSetting::Fixed(Trust::CaFile(p)) if *p == dir.join("certs/ca.pem")));
        assert!(matches!(&c.password, PasswordSource::File(p) if *p == dir.join("data/stockbot.secret")));
        assert!(matches!(&c.primary, Source::AlphaVantage { key, .. } if key.0 == "av-key"));
        assert!(matches!(&c.fallback, Some(Source::Stooq { .. })));
        assert_eq!(c.rate_limit, 7, "flag wins over file");
        assert_eq!(c.cache_ttl, Duration::ZERO);
        std::fs::write(&path, "bogus_key = 1\n").unwrap();
        assert!(Config::build(parse(&["--config", path.to_str().unwrap()]), EnvSecrets::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn example_file_is_valid_and_shows_the_defaults() {
        let file: Settings = toml::from_str(include_str!("../bot.example.toml")).unwrap();
        assert_eq!(file.addr.as_deref(), Some("127.0.0.1:6697"));
        assert_eq!(file.quote_url.as_deref(), Some(STOOQ_URL));
        assert_eq!(file.daily_url.as_deref(), Some(STOOQ_DAILY_URL));
        assert_eq!((file.timeout, file.rate_limit, file.max_concurrent), (Some(5.0), Some(5), Some(16)));
    }

    #[test]
    fn example_file_equals_the_defaults() {
        let file: Settings = toml::from_str(include_str!("../bot.example.toml")).unwrap();
        assert_eq!(file, Settings::defaults());
        // And a configuration built from it is the one built from nothing.
        let dir = std::env::temp_dir().join(format!("chatd-bot-example-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bot.toml");
        std::fs::write(&path, include_str!("../bot.example.toml")).unwrap();
        let mut from_file = Config::build(parse(&["--config", path.to_str().unwrap()]), EnvSecrets::default()).unwrap();
        let from_nothing = Config::build(parse(&[]), EnvSecrets::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // Only the password file differs: the file's path is relative to the file's directory.
        assert!(matches!(&from_file.password, PasswordSource::File(p) if *p == dir.join("data/stockbot.secret")));
        from_file.password = from_nothing.password.clone();
        assert_eq!(format!("{from_file:?}"), format!("{from_nothing:?}"));
    }

    #[test]
    fn precedence_across_layers() {
        let dir = std::env::temp_dir().join(format!("chatd-bot-layers-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bot.toml");
        let fp = "cd".repeat(32);
        std::fs::write(&path, format!("fingerprint = \"{fp}\"\npassword_file = \"pw\"\ntimeout = 2\n")).unwrap();
        let file = path.to_str().unwrap();
        // A flag's trust choice beats the file's, though it is another key.
        let c = Config::build(parse(&["--config", file, "--ca", "/x/ca.pem"]), EnvSecrets::default()).unwrap();
        assert!(matches!(&c.trust, TrustSetting::Fixed(Trust::CaFile(p)) if p == Path::new("/x/ca.pem")));
        let c = Config::build(parse(&["--config", file]), EnvSecrets::default()).unwrap();
        assert!(matches!(c.trust, TrustSetting::Fixed(Trust::Fingerprint(f)) if f == [0xcd; 32]));
        assert!(matches!(&c.password, PasswordSource::File(p) if *p == dir.join("pw")));
        assert_eq!(c.timeout, Duration::from_secs(2));
        // The password variable beats the file's password_file; --password-file beats both.
        let env = || EnvSecrets { password: Some("from-env".into()), ..Default::default() };
        let c = Config::build(parse(&["--config", file]), env()).unwrap();
        assert!(matches!(&c.password, PasswordSource::Value(v) if v == "from-env"));
        let c = Config::build(parse(&["--config", file, "--password-file", "flag-pw"]), env()).unwrap();
        assert!(matches!(&c.password, PasswordSource::File(p) if p == Path::new("flag-pw")));
        // A file's out-of-range number is an error, not a panic.
        std::fs::write(&path, "timeout = -1\n").unwrap();
        assert!(Config::build(parse(&["--config", file]), EnvSecrets::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn help_shows_the_defaults() {
        let help = Settings::command_with_defaults().render_help().to_string();
        for shown in
            ["[default: 127.0.0.1:6697]", "[default: 5]", "[default: 0.5]", "[default: none]", "[default: stooq]"]
        {
            assert!(help.contains(shown), "{shown} missing in:\n{help}");
        }
    }

    #[test]
    fn stooq_key_and_check() {
        let stooq_key = |c: &Config| match &c.primary {
            Source::Stooq { key, .. } => key.clone(),
            other => panic!("{other:?}"),
        };
        let c = Config::build(parse(&[]), EnvSecrets::default()).unwrap();
        assert_eq!(stooq_key(&c), None);
        let env = || EnvSecrets { stooq_key: Some(" env-key\n".into()), ..Default::default() };
        let c = Config::build(parse(&["--daily-url", "http://127.0.0.1:1/q/d/l/?s={code}&i=d"]), env()).unwrap();
        assert_eq!(stooq_key(&c), Some(ApiKey("env-key".into())));
        assert!(
            matches!(&c.primary, Source::Stooq { daily_template, .. } if daily_template.starts_with("http://127.0.0.1:1/"))
        );

        let dir = std::env::temp_dir().join(format!("chatd-bot-stooq-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("stooq.key");
        std::fs::write(&file, "file-key\n").unwrap();
        let c = Config::build(parse(&["--stooq-key-file", file.to_str().unwrap()]), env()).unwrap();
        assert_eq!(stooq_key(&c), Some(ApiKey("file-key".into())), "the file wins over the variable");
        std::fs::write(&file, "\n").unwrap();
        assert!(Config::build(parse(&["--stooq-key-file", file.to_str().unwrap()]), env()).is_err(), "empty key");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Settings::try_parse_from(["chatd-bot", "--stooq-key", "x"]).is_err(), "no key flag");
        assert!(Config::build(parse(&["--daily-url", "http://x/"]), EnvSecrets::default()).is_err());

        assert_eq!(
            Config::build(parse(&["--check"]), EnvSecrets::default()).unwrap().check.as_deref(),
            Some("aapl.us")
        );
        let c = Config::build(parse(&["--check", "MSFT.US"]), EnvSecrets::default()).unwrap();
        assert_eq!(c.check.as_deref(), Some("msft.us"));
        assert!(Config::build(parse(&["--check", "a b"]), EnvSecrets::default()).is_err());
    }

    #[test]
    fn password_sources() {
        let dir = std::env::temp_dir().join(format!("chatd-bot-pw-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "s3cret-password\n").unwrap();
        assert_eq!(PasswordSource::File(f.clone()).read().unwrap(), "s3cret-password");
        std::fs::write(&f, "two words\n").unwrap();
        assert!(PasswordSource::File(f).read().is_err());
        assert!(PasswordSource::File(dir.join("missing")).read().is_err());
        assert_eq!(format!("{:?}", PasswordSource::Value("x".into())), "Value(***)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
