//! Configuration: command-line flags, each with an environment variable (`CHATD_BOT_*`), and
//! optionally a TOML file (`--config bot.toml`) with the same keys in snake_case. A flag or its
//! variable wins over the file, the file over the built-in default. Relative paths in the file are
//! relative to the file's directory; on the command line, to the working directory.
//!
//! Secrets never come from a command-line argument (they would show in `ps`): the bot's password
//! comes from `--password-file` or the `CHATD_BOT_PASSWORD` variable, API keys from a key file or
//! the `STOOQ_API_KEY` / `FINNHUB_API_KEY` / `ALPHAVANTAGE_API_KEY` variables. The variables are
//! removed from the process environment once read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use chatd_proto::{parse_fingerprint, Trust};
use clap::{Parser, ValueEnum};
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

/// chatd's stock bot: answers `/stock=<code>` in every room with a quote from stooq (or Finnhub /
/// Alpha Vantage with your own API key).
#[derive(Debug, Default, Parser)]
#[command(name = "chatd-bot", version, about, long_about = None)]
pub struct Args {
    /// TOML file with any of the settings below (snake_case keys, e.g. quote_url = "...").
    #[arg(long, env = "CHATD_BOT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The daemon's TLS address [default: 127.0.0.1:6697].
    #[arg(long, env = "CHATD_BOT_ADDR", value_name = "HOST:PORT")]
    pub addr: Option<String>,

    /// Name checked against the daemon's certificate [default: localhost].
    #[arg(long, env = "CHATD_BOT_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,

    /// Trust the daemon's certificate if a CA in this PEM file signed it
    /// [default: certs/ca.pem when it exists, else the system roots].
    #[arg(long, env = "CHATD_BOT_CA", value_name = "PEM", conflicts_with_all = ["fingerprint", "system_roots"])]
    pub ca: Option<PathBuf>,

    /// Trust exactly the certificate with this SHA-256 fingerprint (AB:CD:... as chatd prints it).
    #[arg(long, env = "CHATD_BOT_FINGERPRINT", value_name = "SHA256", conflicts_with = "system_roots")]
    pub fingerprint: Option<String>,

    /// Trust the web PKI roots (a daemon with a certificate from a public CA).
    #[arg(long, env = "CHATD_BOT_SYSTEM_ROOTS")]
    pub system_roots: bool,

    /// The bot's account [default: stockbot].
    #[arg(long, env = "CHATD_BOT_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// File holding the bot's password (chatd writes data/stockbot.secret). Without it the password
    /// comes from $CHATD_BOT_PASSWORD, else from data/stockbot.secret.
    #[arg(long, env = "CHATD_BOT_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// The command word served [default: stock].
    #[arg(long, env = "CHATD_BOT_COMMAND", value_name = "WORD")]
    pub command: Option<String>,

    /// Where quotes come from first [default: stooq].
    #[arg(long, env = "CHATD_BOT_SOURCE", value_name = "SOURCE")]
    pub source: Option<SourceKind>,

    /// Asked when the first source fails (not for an unknown symbol) [default: none].
    #[arg(long, env = "CHATD_BOT_FALLBACK", value_name = "SOURCE")]
    pub fallback: Option<SourceKind>,

    /// stooq URL template; {code} is replaced by the code
    /// [default: https://stooq.com/q/l/?s={code}&f=sd2t2ohlcv&h&e=csv].
    #[arg(long, env = "CHATD_BOT_QUOTE_URL", value_name = "URL")]
    pub quote_url: Option<String>,

    /// File holding the stooq API key (else $STOOQ_API_KEY); without one, only stooq's quote
    /// endpoint is asked, without a key.
    #[arg(long, env = "CHATD_BOT_STOOQ_KEY_FILE", value_name = "FILE")]
    pub stooq_key_file: Option<PathBuf>,

    /// stooq daily-history URL template, asked (with the key) when the quote URL fails
    /// [default: https://stooq.com/q/d/l/?s={code}&i=d].
    #[arg(long, env = "CHATD_BOT_DAILY_URL", value_name = "URL")]
    pub daily_url: Option<String>,

    /// Finnhub base URL [default: https://finnhub.io].
    #[arg(long, env = "CHATD_BOT_FINNHUB_URL", value_name = "URL")]
    pub finnhub_url: Option<String>,

    /// File holding the Finnhub API key (else $FINNHUB_API_KEY).
    #[arg(long, env = "CHATD_BOT_FINNHUB_KEY_FILE", value_name = "FILE")]
    pub finnhub_key_file: Option<PathBuf>,

    /// Alpha Vantage base URL [default: https://www.alphavantage.co].
    #[arg(long, env = "CHATD_BOT_ALPHAVANTAGE_URL", value_name = "URL")]
    pub alphavantage_url: Option<String>,

    /// File holding the Alpha Vantage API key (else $ALPHAVANTAGE_API_KEY).
    #[arg(long, env = "CHATD_BOT_ALPHAVANTAGE_KEY_FILE", value_name = "FILE")]
    pub alphavantage_key_file: Option<PathBuf>,

    /// Bound on one quote request, in seconds [default: 5].
    #[arg(long, env = "CHATD_BOT_TIMEOUT", value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<f64>,

    /// Upstream requests in flight at once [default: 16].
    #[arg(long, env = "CHATD_BOT_MAX_CONCURRENT", value_name = "N")]
    pub max_concurrent: Option<usize>,

    /// Requests waiting or in flight before new ones are answered "busy" [default: 256].
    #[arg(long, env = "CHATD_BOT_MAX_PENDING", value_name = "N")]
    pub max_pending: Option<usize>,

    /// How long an answer is reused for the same code, in seconds (0: only share calls in
    /// flight) [default: 5].
    #[arg(long, env = "CHATD_BOT_CACHE_TTL", value_name = "SECS", value_parser = parse_secs)]
    pub cache_ttl: Option<f64>,

    /// Requests per sender per window (0: no limit) [default: 5].
    #[arg(long, env = "CHATD_BOT_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<usize>,

    /// The rate-limit window, in seconds [default: 30].
    #[arg(long, env = "CHATD_BOT_RATE_WINDOW", value_name = "SECS", value_parser = parse_secs)]
    pub rate_window: Option<f64>,

    /// Lines per second the bot sends to the daemon after a burst [default: 4].
    #[arg(long, env = "CHATD_BOT_SEND_RATE", value_name = "PER_SEC", value_parser = parse_secs)]
    pub send_rate: Option<f64>,

    /// Lines the bot may send at once [default: 8].
    #[arg(long, env = "CHATD_BOT_SEND_BURST", value_name = "N")]
    pub send_burst: Option<u32>,

    /// First reconnection delay, in seconds; it doubles after each failure [default: 0.5].
    #[arg(long, env = "CHATD_BOT_BACKOFF_MIN", value_name = "SECS", value_parser = parse_secs)]
    pub backoff_min: Option<f64>,

    /// Longest reconnection delay, in seconds [default: 30].
    #[arg(long, env = "CHATD_BOT_BACKOFF_MAX", value_name = "SECS", value_parser = parse_secs)]
    pub backoff_max: Option<f64>,

    /// Send PING after this many idle seconds; a daemon silent for twice as long is taken as gone
    /// [default: 60].
    #[arg(long, env = "CHATD_BOT_KEEPALIVE", value_name = "SECS", value_parser = parse_secs)]
    pub keepalive: Option<f64>,

    /// Fetch one quote (default aapl.us) through the configured sources, print every request and
    /// answer (keys hidden) and the reply a user would see, then exit: 0 when a price came back.
    #[arg(long, value_name = "CODE", num_args = 0..=1, default_missing_value = crate::check::DEFAULT_CODE)]
    pub check: Option<String>,
}

/// The same settings, read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<String>,
    pub server_name: Option<String>,
    pub ca: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub system_roots: Option<bool>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub command: Option<String>,
    pub source: Option<SourceKind>,
    pub fallback: Option<SourceKind>,
    pub quote_url: Option<String>,
    pub stooq_key_file: Option<PathBuf>,
    pub daily_url: Option<String>,
    pub finnhub_url: Option<String>,
    pub finnhub_key_file: Option<PathBuf>,
    pub alphavantage_url: Option<String>,
    pub alphavantage_key_file: Option<PathBuf>,
    pub timeout: Option<f64>,
    pub max_concurrent: Option<usize>,
    pub max_pending: Option<usize>,
    pub cache_ttl: Option<f64>,
    pub rate_limit: Option<usize>,
    pub rate_window: Option<f64>,
    pub send_rate: Option<f64>,
    pub send_burst: Option<u32>,
    pub backoff_min: Option<f64>,
    pub backoff_max: Option<f64>,
    pub keepalive: Option<f64>,
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
        let args = Args::parse();
        Config::build(args, EnvSecrets::take())
    }

    /// Merges flags, the file they name and the given secrets from the environment.
    pub fn build(args: Args, env: EnvSecrets) -> anyhow::Result<Config> {
        let EnvSecrets { password: env_password, stooq_key, finnhub_key, alphavantage_key: av_key } = env;
        let (file, base) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let file: FileConfig = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (file, base)
            }
            None => (FileConfig::default(), PathBuf::new()),
        };
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let secs = |v: f64| Duration::from_secs_f64(v);

        let trust = if let Some(fp) = &args.fingerprint {
            TrustSetting::Fixed(Trust::Fingerprint(fingerprint(fp)?))
        } else if let Some(ca) = args.ca {
            TrustSetting::Fixed(Trust::CaFile(ca))
        } else if args.system_roots {
            TrustSetting::Fixed(Trust::System)
        } else if let Some(fp) = &file.fingerprint {
            TrustSetting::Fixed(Trust::Fingerprint(fingerprint(fp)?))
        } else if let Some(ca) = file.ca {
            TrustSetting::Fixed(Trust::CaFile(rel(ca)))
        } else if file.system_roots == Some(true) {
            TrustSetting::Fixed(Trust::System)
        } else {
            TrustSetting::Default
        };

        let password = if let Some(p) = args.password_file {
            PasswordSource::File(p)
        } else if let Some(v) = env_password {
            PasswordSource::Value(v)
        } else if let Some(p) = file.password_file {
            PasswordSource::File(rel(p))
        } else {
            PasswordSource::File(PathBuf::from("data/stockbot.secret"))
        };

        let quote_url = args.quote_url.or(file.quote_url).unwrap_or_else(|| STOOQ_URL.to_string());
        if !quote_url.contains("{code}") {
            bail!("the quote URL template must contain {{code}}: {quote_url}");
        }
        let daily_url = args.daily_url.or(file.daily_url).unwrap_or_else(|| STOOQ_DAILY_URL.to_string());
        if !daily_url.contains("{code}") {
            bail!("the daily URL template must contain {{code}}: {daily_url}");
        }
        let stooq_key_file = args.stooq_key_file.or(file.stooq_key_file.map(&rel));
        let stooq_key = optional_api_key("stooq", stooq_key_file.as_deref(), stooq_key.as_deref())?;
        let finnhub_url = args.finnhub_url.or(file.finnhub_url).unwrap_or_else(|| FINNHUB_URL.to_string());
        let av_url = args.alphavantage_url.or(file.alphavantage_url).unwrap_or_else(|| ALPHA_VANTAGE_URL.to_string());
        let finnhub_key_file = args.finnhub_key_file.or(file.finnhub_key_file.map(&rel));
        let av_key_file = args.alphavantage_key_file.or(file.alphavantage_key_file.map(&rel));

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
        let primary_kind = args.source.or(file.source).unwrap_or(SourceKind::Stooq);
        let fallback_kind = args.fallback.or(file.fallback).unwrap_or(SourceKind::None);
        let primary = make_source(primary_kind)?.context("--source cannot be none")?;
        let fallback = if fallback_kind == primary_kind { None } else { make_source(fallback_kind)? };

        let command = args.command.or(file.command).unwrap_or_else(|| "stock".to_string()).to_ascii_lowercase();
        if command.is_empty() || !command.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            bail!("invalid command word {command:?}");
        }

        let config = Config {
            addr: args.addr.or(file.addr).unwrap_or_else(|| "127.0.0.1:6697".to_string()),
            server_name: args.server_name.or(file.server_name).unwrap_or_else(|| "localhost".to_string()),
            trust,
            user: args.user.or(file.user).unwrap_or_else(|| "stockbot".to_string()).to_ascii_lowercase(),
            password,
            command,
            primary,
            fallback,
            timeout: secs(args.timeout.or(file.timeout).unwrap_or(5.0)),
            max_concurrent: args.max_concurrent.or(file.max_concurrent).unwrap_or(16),
            max_pending: args.max_pending.or(file.max_pending).unwrap_or(256),
            cache_ttl: secs(args.cache_ttl.or(file.cache_ttl).unwrap_or(5.0)),
            rate_limit: args.rate_limit.or(file.rate_limit).unwrap_or(5),
            rate_window: secs(args.rate_window.or(file.rate_window).unwrap_or(30.0)),
            send_rate: args.send_rate.or(file.send_rate).unwrap_or(4.0),
            send_burst: args.send_burst.or(file.send_burst).unwrap_or(8),
            backoff_min: secs(args.backoff_min.or(file.backoff_min).unwrap_or(0.5)),
            backoff_max: secs(args.backoff_max.or(file.backoff_max).unwrap_or(30.0)),
            keepalive: secs(args.keepalive.or(file.keepalive).unwrap_or(60.0)),
            check: args.check.map(|c| c.trim().to_ascii_lowercase()),
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

    fn parse(argv: &[&str]) -> Args {
        let mut full = vec!["chatd-bot"];
        full.extend_from_slice(argv);
        Args::try_parse_from(full).unwrap()
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
                "--addr", "127.0.0.1:7000", "--fingerprint", &"ab".repeat(32), "--quote-url",
                "http://127.0.0.1:1/q/l/?s={code}", "--timeout", "0.5", "--fallback", "finnhub",
                "--finnhub-url", "http://127.0.0.1:2",
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
        assert!(Args::try_parse_from(["chatd-bot", "--ca", "x", "--fingerprint", "y"]).is_err());
        assert!(Args::try_parse_from(["chatd-bot", "--timeout", "-1"]).is_err());
        assert!(Args::try_parse_from(["chatd-bot", "--password", "x"]).is_err(), "no password flag");
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
        let file: FileConfig = toml::from_str(include_str!("../bot.example.toml")).unwrap();
        assert_eq!(file.addr.as_deref(), Some("127.0.0.1:6697"));
        assert_eq!(file.quote_url.as_deref(), Some(STOOQ_URL));
        assert_eq!(file.daily_url.as_deref(), Some(STOOQ_DAILY_URL));
        assert_eq!((file.timeout, file.rate_limit, file.max_concurrent), (Some(5.0), Some(5), Some(16)));
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
        assert!(Args::try_parse_from(["chatd-bot", "--stooq-key", "x"]).is_err(), "no key flag");
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
