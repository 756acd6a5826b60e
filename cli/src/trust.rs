//! Deciding whether to trust the daemon, and connecting with that decision: a CA file, a pinned
//! fingerprint, the system roots, or — like ssh — a fingerprint the user accepted once and that is
//! remembered in a known-hosts file and pinned from then on. A remembered certificate that changed
//! is refused loudly.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use chatd_proto::tls::{client_config, probe_fingerprint};
use chatd_proto::{parse_fingerprint, LineConn, ServerLine, Trust};

use crate::args::{Args, Config};
use crate::view::explain_io;

/// `host:port FINGERPRINT` lines; `#` starts a comment.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    pub path: PathBuf,
}

impl KnownHosts {
    /// `$XDG_CONFIG_HOME/chatd/known_hosts`, else `~/.config/chatd/known_hosts`.
    pub fn default_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| Path::new(&h).join(".config")))?;
        Some(base.join("chatd").join("known_hosts"))
    }

    /// The remembered fingerprint of `addr`, if any.
    pub fn lookup(&self, addr: &str) -> Result<Option<String>> {
        let file = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let key = addr.to_lowercase();
        for line in io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("reading {}", self.path.display()))?;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            if let (Some(host), Some(fp)) = (parts.next(), parts.next()) {
                if host.to_lowercase() == key {
                    return Ok(Some(fp.to_string()));
                }
            }
        }
        Ok(None)
    }

    /// Remembers `fingerprint` for `addr` (appends a line; creates the file and its folder).
    pub fn add(&self, addr: &str, fingerprint: &str) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        writeln!(f, "{} {}", addr.to_lowercase(), fingerprint)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// Network trouble (refused, reset, timed out): worth retrying.
    Io(io::Error),
    /// The certificate is not trusted: retrying will not help.
    Cert(anyhow::Error),
}

impl ConnectError {
    /// In words; with `verbose`, a network error also gets the library's text.
    pub fn describe(&self, verbose: bool) -> String {
        match self {
            ConnectError::Io(e) => explain_io(e, verbose),
            ConnectError::Cert(e) => format!("{e:#}"),
        }
    }
}

/// How the client trusts the daemon, and where the fingerprint came from (for messages).
#[derive(Debug, Clone)]
pub struct TrustChoice {
    pub trust: Trust,
    /// Set when the fingerprint is the one remembered in this known-hosts file.
    pub known_hosts: Option<PathBuf>,
}

/// Decides how to trust the daemon. May connect (to try the system roots, or to learn an unknown
/// certificate's fingerprint) and, on a terminal, ask the user. `ask` gets the question and says
/// yes or no.
pub async fn decide(
    args: &Args,
    cfg: &Config,
    ask: &mut dyn FnMut(&str) -> bool,
    say: &dyn Fn(&str),
) -> Result<TrustChoice> {
    if let Some(ca) = &args.ca {
        return Ok(TrustChoice { trust: Trust::CaFile(ca.clone()), known_hosts: None });
    }
    if let Some(fp) = &args.fingerprint {
        let pin = parse_fingerprint(fp).ok_or_else(|| anyhow!("--fingerprint {fp:?} is not a SHA-256 fingerprint"))?;
        return Ok(TrustChoice { trust: Trust::Fingerprint(pin), known_hosts: None });
    }
    let known = args.known_hosts.clone().or_else(KnownHosts::default_path).map(|path| KnownHosts { path });
    if let Some(kh) = &known {
        if let Some(fp) = kh.lookup(&cfg.addr)? {
            let pin = parse_fingerprint(&fp)
                .ok_or_else(|| anyhow!("{}: bad fingerprint for {}: {fp:?}", kh.path.display(), cfg.addr))?;
            return Ok(TrustChoice { trust: Trust::Fingerprint(pin), known_hosts: Some(kh.path.clone()) });
        }
    }
    // Nothing pinned: does a public CA vouch for it?
    let system = TrustChoice { trust: Trust::System, known_hosts: None };
    match connect(cfg, &system).await {
        Ok(_) => return Ok(system),
        Err(ConnectError::Io(e)) => {
            return Err(anyhow!("cannot connect to {}: {}", cfg.addr, explain_io(&e, cfg.verbose)))
        }
        Err(ConnectError::Cert(_)) => {}
    }
    let fp = probe_fingerprint(&cfg.addr, &cfg.server_name)
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {}", cfg.addr, explain_io(&e, cfg.verbose)))?;
    say(&format!("The certificate of {} is not signed by a known authority.", cfg.addr));
    say(&format!("Its SHA-256 fingerprint is {fp}"));
    say("Compare it with the one chatd printed when it started (or ask its operator).");
    let accepted = if args.trust_new {
        say("Trusting it (--trust-new).");
        true
    } else if cfg.interactive {
        ask("Trust this certificate? [y/N] ")
    } else {
        bail!(
            "the certificate of {} (SHA-256 {fp}) is not trusted; pass --fingerprint {fp}, --ca <file>, or \
             --trust-new, or run chat once on a terminal to accept it",
            cfg.addr
        );
    };
    if !accepted {
        bail!("certificate not trusted");
    }
    let pin = parse_fingerprint(&fp).ok_or_else(|| anyhow!("bad fingerprint {fp:?}"))?;
    match &known {
        Some(kh) => match kh.add(&cfg.addr, &fp) {
            Ok(()) => say(&format!("Remembered in {}.", kh.path.display())),
            Err(e) => say(&format!("Could not remember it: {e:#}")),
        },
        None => say("No known-hosts file (no $HOME); it is trusted for this run only."),
    }
    Ok(TrustChoice { trust: Trust::Fingerprint(pin), known_hosts: known.map(|k| k.path) })
}

/// Opens a TLS connection and reads the daemon's `* HELLO`.
pub async fn connect(cfg: &Config, choice: &TrustChoice) -> Result<LineConn, ConnectError> {
    let config = client_config(&choice.trust).map_err(|e| ConnectError::Cert(anyhow!("{e}")))?;
    let connecting = LineConn::connect_tls(&cfg.addr, &cfg.server_name, config);
    let mut conn = match tokio::time::timeout(std::time::Duration::from_secs(15), connecting).await {
        Err(_) => return Err(ConnectError::Io(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))),
        Ok(Ok(conn)) => conn,
        // rustls reports a certificate it does not accept as InvalidData.
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(ConnectError::Cert(cert_error(cfg, choice, e).await))
        }
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
    };
    let hello = tokio::time::timeout(std::time::Duration::from_secs(15), conn.next()).await;
    match hello {
        Ok(Ok(Some(ServerLine::Event(e)))) if e.name == "HELLO" => Ok(conn),
        Ok(Ok(Some(other))) => Err(ConnectError::Io(io::Error::other(format!("expected * HELLO, got {other:?}")))),
        Ok(Ok(None)) => Err(ConnectError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before HELLO"))),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Err(_) => Err(ConnectError::Io(io::Error::new(io::ErrorKind::TimedOut, "no HELLO from the server"))),
    }
}

/// Explains a refused certificate; loudly when a pinned fingerprint no longer matches.
async fn cert_error(cfg: &Config, choice: &TrustChoice, e: io::Error) -> anyhow::Error {
    let Trust::Fingerprint(pin) = &choice.trust else {
        return anyhow!("cannot connect to {}: {}", cfg.addr, explain_io(&e, cfg.verbose));
    };
    let expected = pin.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    let now = probe_fingerprint(&cfg.addr, &cfg.server_name).await.unwrap_or_else(|_| "(unknown)".into());
    let mut msg = format!(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @    WARNING: THE CERTIFICATE OF {} HAS CHANGED!\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         Someone could be intercepting this connection, or the daemon got a new certificate.\n\
         expected SHA-256 {expected}\n\
         server shows     {now}\n",
        cfg.addr
    );
    match &choice.known_hosts {
        Some(path) => msg.push_str(&format!(
            "If the new certificate is right, remove the line for {} from {} and connect again.\n\
             Refusing to connect.",
            cfg.addr.to_lowercase(),
            path.display()
        )),
        None => msg.push_str("Refusing to connect (the fingerprint was given with --fingerprint)."),
    }
    anyhow!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts { path: dir.path().join("sub/known_hosts") };
        assert_eq!(kh.lookup("localhost:6697").unwrap(), None);
        kh.add("LocalHost:6697", "AB:CD").unwrap();
        kh.add("other:1", "EF").unwrap();
        assert_eq!(kh.lookup("localhost:6697").unwrap().as_deref(), Some("AB:CD"));
        assert_eq!(kh.lookup("other:1").unwrap().as_deref(), Some("EF"));
        assert_eq!(kh.lookup("other:2").unwrap(), None);
    }
}
