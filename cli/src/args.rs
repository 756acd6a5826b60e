//! Command-line flags and the settings derived from them (server address, how to trust it, who to
//! log in as, which senders are bots, terminal or scripted mode).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chatd_proto::names::RoomName;
use clap::Parser;

/// Terminal client for chatd.
///
/// On a terminal it asks for what it needs (user, password, whether to trust an unknown
/// certificate) and keeps the line you type intact while messages arrive. With stdin not a
/// terminal (or --script) it reads commands and lines from stdin and prints one event per line,
/// for scripts and tests. The password is never taken from the command line: it is prompted for,
/// or read from $CHAT_PASSWORD or --password-file.
#[derive(Debug, Parser)]
#[command(name = "chat", version, after_help = crate::command::HELP)]
pub struct Args {
    /// The daemon, as host:port.
    #[arg(env = "CHAT_SERVER", default_value = "localhost:6697")]
    pub server: String,

    /// User name to log in as (prompted for on a terminal when missing).
    #[arg(short, long, env = "CHAT_USER")]
    pub user: Option<String>,

    /// Create the account (REGISTER) instead of logging in; if the name is taken, log in with the
    /// same password instead.
    #[arg(long)]
    pub register: bool,

    /// Read the password from the first line of this file (for scripts). $CHAT_PASSWORD works too.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,

    /// Trust the daemon's certificate if it is signed by a certificate in this PEM file (for
    /// example chatd's certs/ca.pem).
    #[arg(long, value_name = "PEM", conflicts_with = "fingerprint")]
    pub ca: Option<PathBuf>,

    /// Trust exactly the certificate with this SHA-256 fingerprint, as chatd prints it at start
    /// (AB:CD:..., with or without colons).
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,

    /// Where fingerprints of trusted certificates are remembered
    /// (default: $XDG_CONFIG_HOME/chatd/known_hosts or ~/.config/chatd/known_hosts).
    #[arg(long, value_name = "PATH")]
    pub known_hosts: Option<PathBuf>,

    /// Trust and remember an unknown certificate without asking (like ssh's accept-new). A
    /// remembered certificate that changed is still refused.
    #[arg(long)]
    pub trust_new: bool,

    /// Name checked against the certificate (default: the host part of SERVER).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Rooms to join after logging in, comma separated (the first one becomes the current room).
    #[arg(short, long, value_name = "ROOMS", value_delimiter = ',')]
    pub join: Vec<String>,

    /// Senders whose messages are marked [bot], comma separated (default: names ending in "bot").
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub bots: Vec<String>,

    /// Work line by line even on a terminal: no prompts, no colours, no line editor.
    #[arg(long)]
    pub script: bool,

    /// In line-by-line mode, how long to keep printing events after stdin ends before quitting.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub eof_grace: f64,

    /// No colours (also when $NO_COLOR is set).
    #[arg(long)]
    pub no_color: bool,

    /// Longest wait between two reconnection attempts.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub max_backoff: f64,

    /// Add the underlying library's message to network and TLS errors (they are told in words
    /// either way).
    #[arg(short, long)]
    pub verbose: bool,
}

/// Everything the session needs, resolved from the flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` as given.
    pub addr: String,
    /// Name checked against the certificate.
    pub server_name: String,
    /// Interactive terminal mode (line editor, prompts, colours allowed).
    pub interactive: bool,
    pub color: bool,
    pub join: Vec<RoomName>,
    pub bots: HashSet<String>,
    pub eof_grace: Duration,
    pub max_backoff: Duration,
    /// Show the library's text of network and TLS errors too.
    pub verbose: bool,
}

impl Config {
    pub fn from_args(args: &Args, stdin_is_tty: bool, stdout_is_tty: bool) -> Result<Config> {
        let (host, port) = split_host_port(&args.server)?;
        let _: u16 = port.parse().with_context(|| format!("bad port in {:?}", args.server))?;
        let interactive = stdin_is_tty && stdout_is_tty && !args.script;
        let color = interactive && !args.no_color && std::env::var_os("NO_COLOR").is_none();
        if !(args.eof_grace >= 0.0 && args.eof_grace.is_finite()) {
            bail!("--eof-grace must be a number of seconds");
        }
        if !(args.max_backoff > 0.0 && args.max_backoff.is_finite()) {
            bail!("--max-backoff must be a positive number of seconds");
        }
        let mut join = Vec::new();
        for room in args.join.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            match RoomName::parse(room) {
                Some(r) => join.push(r),
                None => bail!("--join: {room:?} is not a room name (1-32 of a-z, 0-9, _ or -)"),
            }
        }
        Ok(Config {
            addr: args.server.clone(),
            server_name: args.server_name.clone().unwrap_or_else(|| host.to_string()),
            interactive,
            color,
            join,
            bots: args.bots.iter().map(|b| b.trim().to_lowercase()).filter(|b| !b.is_empty()).collect(),
            eof_grace: Duration::from_secs_f64(args.eof_grace),
            max_backoff: Duration::from_secs_f64(args.max_backoff),
            verbose: args.verbose,
        })
    }

    /// True when messages from `sender` are bot replies.
    pub fn is_bot(&self, sender: &str) -> bool {
        if self.bots.is_empty() {
            sender.to_lowercase().ends_with("bot")
        } else {
            self.bots.contains(&sender.to_lowercase())
        }
    }
}

/// `host:port` or `[v6]:port` into its host (without brackets) and port.
pub fn split_host_port(addr: &str) -> Result<(&str, &str)> {
    let (host, port) = addr.rsplit_once(':').with_context(|| format!("{addr:?} is not host:port"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || port.is_empty() {
        bail!("{addr:?} is not host:port");
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("localhost:6697").unwrap(), ("localhost", "6697"));
        assert_eq!(split_host_port("[::1]:6697").unwrap(), ("::1", "6697"));
        assert!(split_host_port("localhost").is_err());
    }

    #[test]
    fn bots() {
        let args = Args::parse_from(["chat", "127.0.0.1:1"]);
        let mut cfg = Config::from_args(&args, false, false).unwrap();
        assert!(cfg.is_bot("stockbot"));
        assert!(!cfg.is_bot("bob"));
        cfg.bots.insert("helper".into());
        assert!(cfg.is_bot("helper"));
        assert!(!cfg.is_bot("stockbot"));
    }

    #[test]
    fn rooms() {
        let args = Args::parse_from(["chat", "127.0.0.1:1", "--join", "#General,random"]);
        let cfg = Config::from_args(&args, false, false).unwrap();
        assert_eq!(cfg.join.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ["general", "random"]);
        let args = Args::parse_from(["chat", "127.0.0.1:1", "--join", "no/slash"]);
        assert!(Config::from_args(&args, false, false).is_err());
    }
}
