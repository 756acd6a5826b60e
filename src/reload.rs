//! Reloading the configuration without dropping a connection (SIGHUP, `systemctl reload chatd`).
//! The file is read, checked and its certificate loaded before anything changes: a broken file is
//! refused as a whole and the settings in effect stay. Then the keys that can change live are
//! applied (for the connections and handshakes that come next; open connections keep going), and
//! every other changed key is named in the log as needing a restart, at each reload until then.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{anyhow, Context};

use crate::chat::Chat;
use crate::config::{Config, Limits};
use crate::irc;
use crate::net::admission::ConnectionGate;
use crate::net::tls::{self, CurrentCert};

/// The keys a reload applies. Every other key needs a restart.
pub const LIVE_KEYS: &[&str] = &[
    "accounts.open_registration",
    "admin.users",
    "bots",
    "irc.motd",
    "tls.cert",
    "tls.key",
    "limits.max_line_bytes",
    "limits.max_message_bytes",
    "limits.send_queue_bytes",
    "limits.send_queue_lines",
    "limits.login_timeout_secs",
    "limits.ping_after_secs",
    "limits.ping_timeout_secs",
    "limits.write_timeout_secs",
    "limits.flood_burst",
    "limits.flood_rate_per_sec",
    "limits.flood_max_backlog",
    "limits.max_connections",
    "limits.max_connections_per_address",
    "limits.exempt_loopback",
];

/// The limits a new connection gets, replaced by a reload.
pub type SharedLimits = Arc<RwLock<Arc<Limits>>>;

/// Reads the limits in effect.
pub fn current(limits: &SharedLimits) -> Arc<Limits> {
    limits.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Changed keys now in effect.
    pub applied: Vec<String>,
    /// Changed keys that take effect only after a restart.
    pub need_restart: Vec<String>,
    /// The certificate new handshakes get, and whether it is a new one.
    pub fingerprint: String,
    pub new_certificate: bool,
}

/// Everything a reload may change, and the file as it is in effect.
pub struct Reloader {
    pub path: Option<PathBuf>,
    /// The configuration file as in effect, flattened to `section.key`: live keys as last
    /// reloaded, the others as at start.
    running: Mutex<BTreeMap<String, toml::Value>>,
    /// One reload at a time (SIGHUP and an admin's command may meet).
    one_at_a_time: tokio::sync::Mutex<()>,
    pub chat: Arc<Chat>,
    pub gate: Arc<ConnectionGate>,
    pub native_limits: SharedLimits,
    pub irc_limits: SharedLimits,
    pub irc_settings: Arc<irc::Settings>,
    pub cert: Arc<CurrentCert>,
}

impl Reloader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: Option<PathBuf>,
        chat: Arc<Chat>,
        gate: Arc<ConnectionGate>,
        native_limits: SharedLimits,
        irc_limits: SharedLimits,
        irc_settings: Arc<irc::Settings>,
        cert: Arc<CurrentCert>,
    ) -> Reloader {
        let running = path.as_ref().and_then(|p| read_flat(p).ok()).unwrap_or_default();
        Reloader {
            path,
            running: Mutex::new(running),
            one_at_a_time: tokio::sync::Mutex::new(()),
            chat,
            gate,
            native_limits,
            irc_limits,
            irc_settings,
            cert,
        }
    }

    /// Reloads the file, or refuses it (nothing changes then).
    pub async fn reload(&self) -> anyhow::Result<Outcome> {
        let path =
            self.path.as_ref().ok_or_else(|| anyhow!("chatd runs on its built-in defaults, with no file to reload"))?;
        let _one = self.one_at_a_time.lock().await;
        let file = read_flat(path)?;
        let new = Config::load(Some(path))?;
        new.validate()?;
        let (key, fingerprint) = tls::load(&new.tls).context("tls")?;
        // A new bot needs its password before it is a bot; one that cannot get it refuses the
        // whole file, like a broken certificate.
        let bots_changed = self.lock_running().get("bots") != file.get("bots");
        if bots_changed {
            self.chat.accounts.provision_bots(&new.bots).await.context("bots")?;
        }

        let mut running = self.lock_running();
        let keys: BTreeSet<&String> = running.keys().chain(file.keys()).collect();
        let (mut applied, mut need_restart) = (Vec::new(), Vec::new());
        for k in keys {
            if running.get(k) != file.get(k) {
                match LIVE_KEYS.contains(&k.as_str()) {
                    true => applied.push(k.clone()),
                    false => need_restart.push(k.clone()),
                }
            }
        }

        let live = |old: &Limits| Limits {
            max_message_bytes: new.limits.max_message_bytes,
            send_queue_bytes: new.limits.send_queue_bytes,
            send_queue_lines: new.limits.send_queue_lines,
            login_timeout_secs: new.limits.login_timeout_secs,
            ping_after_secs: new.limits.ping_after_secs,
            ping_timeout_secs: new.limits.ping_timeout_secs,
            write_timeout_secs: new.limits.write_timeout_secs,
            flood_burst: new.limits.flood_burst,
            flood_rate_per_sec: new.limits.flood_rate_per_sec,
            flood_max_backlog: new.limits.flood_max_backlog,
            max_connections: new.limits.max_connections,
            max_connections_per_address: new.limits.max_connections_per_address,
            exempt_loopback: new.limits.exempt_loopback,
            ..old.clone()
        };
        for shared in [&self.native_limits, &self.irc_limits] {
            replace(shared, live);
        }
        // The native line limit; IRC's is the protocol's own (512 bytes plus tags).
        replace(&self.native_limits, |old| Limits { max_line_bytes: new.limits.max_line_bytes, ..old.clone() });
        self.irc_settings.set_max_message_bytes(new.limits.max_message_bytes);
        if bots_changed {
            self.chat.accounts.set_bots(&new.bots);
        }
        let l = &new.limits;
        self.gate.set_limits(l.max_connections, l.max_connections_per_address, l.exempt_loopback);
        self.chat.accounts.set_open_registration(new.accounts.open_registration);
        self.chat.set_admins(&new.admin.users);
        self.irc_settings.set_motd(&new.irc.motd);
        let new_certificate = self.cert.fingerprint() != fingerprint;
        self.cert.replace(key, fingerprint.clone());

        for k in LIVE_KEYS {
            match file.get(*k) {
                Some(v) => running.insert(k.to_string(), v.clone()),
                None => running.remove(*k),
            };
        }
        Ok(Outcome { applied, need_restart, fingerprint, new_certificate })
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, toml::Value>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reloads and logs what happened; answers an admin's RELOAD (the core's `ReloadReport`).
    pub async fn answer(&self, request: crate::chat::moderation::ReloadRequest) {
        let path = self.path.as_ref().map_or_else(|| "(none)".to_string(), |p| p.display().to_string());
        let answer = match self.reload().await {
            Ok(o) => {
                self.log_applied(&path, &o);
                Ok(crate::chat::moderation::ReloadReport {
                    applied: o.applied,
                    need_restart: o.need_restart,
                    new_certificate: o.new_certificate,
                })
            }
            Err(e) => {
                tracing::error!(file = %path, "configuration reload refused, the settings in effect stay: {e:#}");
                Err(format!("{e:#}"))
            }
        };
        let _ = request.send(answer);
    }

    fn log_applied(&self, path: &str, o: &Outcome) {
        tracing::info!(
            file = %path,
            applied = ?o.applied,
            certificate_sha256 = %o.fingerprint,
            new_certificate = o.new_certificate,
            "configuration reloaded"
        );
        if !o.need_restart.is_empty() {
            tracing::warn!(keys = ?o.need_restart, "configuration reloaded, but these changed keys take effect only after a restart");
        }
    }

    /// Reloads and logs what happened.
    pub async fn reload_and_log(&self) -> Option<Outcome> {
        let path = self.path.as_ref().map_or_else(|| "(none)".to_string(), |p| p.display().to_string());
        match self.reload().await {
            Ok(o) => {
                self.log_applied(&path, &o);
                Some(o)
            }
            Err(e) => {
                tracing::error!(file = %path, "configuration reload refused, the settings in effect stay: {e:#}");
                None
            }
        }
    }
}

fn replace(shared: &SharedLimits, change: impl FnOnce(&Limits) -> Limits) {
    let mut limits = shared.write().unwrap_or_else(|p| p.into_inner());
    *limits = Arc::new(change(&limits));
}

/// The file's keys as `section.key` (arrays of tables, like `[[bots]]`, as one key).
fn read_flat(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, toml::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| path.display().to_string())?;
    let mut flat = BTreeMap::new();
    for (section, value) in table {
        match value {
            toml::Value::Table(keys) => {
                for (k, v) in keys {
                    flat.insert(format!("{section}.{k}"), v);
                }
            }
            v => {
                flat.insert(section, v);
            }
        }
    }
    Ok(flat)
}
