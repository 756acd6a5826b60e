//! Accounts: registration and login with argon2id. Hashing runs on the `hasher` threads (a login
//! storm queues there, chat does not), an unknown user is checked against a dummy
//! hash so both failures cost the same, and failures back off per account and per address.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::error::{ChatError, Unavailable};
use super::hasher::Hasher;
use super::names::{Password, UserName};
use crate::config::{BotAccount, Limits};
use crate::limits::{Backoff, WindowCounter};
use crate::metrics::{metrics, LoginResult};
use crate::store::Store;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Who {
    Account(UserName),
    Address(IpAddr),
}

pub struct Accounts {
    store: Arc<Store>,
    hasher: Hasher,
    dummy_hash: String,
    open_registration: AtomicBool,
    /// The configured bot accounts (a reload replaces them).
    bots: RwLock<HashSet<UserName>>,
    failures: Backoff<Who>,
    registrations_per_address: WindowCounter<IpAddr>,
    registrations: WindowCounter<()>,
    /// On a cluster node: the other nodes share the login throttle and the registration limits.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// Who logged in.
pub struct LoggedIn {
    pub user: UserName,
    pub is_bot: bool,
}

impl Accounts {
    pub async fn new(
        store: Arc<Store>,
        limits: &Limits,
        open_registration: bool,
        bots: &[BotAccount],
    ) -> anyhow::Result<Accounts> {
        let hasher = Hasher::start(limits.argon2_workers)?;
        let dummy_hash = hasher
            .hash("no such user, but the same work")
            .await
            .ok_or_else(|| anyhow::anyhow!("argon2 could not hash with its default parameters"))?;
        Ok(Accounts {
            store,
            hasher,
            dummy_hash,
            open_registration: AtomicBool::new(open_registration),
            bots: RwLock::new(bot_names(bots)),
            failures: Backoff::new(limits.login_failures_before_delay),
            registrations_per_address: WindowCounter::new(
                Duration::from_secs(3600),
                limits.registrations_per_address_per_hour,
            ),
            registrations: WindowCounter::new(Duration::from_secs(3600), limits.registrations_per_hour),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Makes the login throttle and the registration limits the cluster's (once, at start).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// A failed login or password check: the account and the address wait longer next time, on
    /// every node.
    fn failed(&self, user: &UserName, from: IpAddr) {
        self.failed_elsewhere(user, from);
        if let Some(cluster) = self.cluster.get() {
            cluster.publish_login(user, Some(from));
        }
    }

    fn succeeded(&self, user: &UserName) {
        self.succeeded_elsewhere(user);
        if let Some(cluster) = self.cluster.get() {
            cluster.publish_login(user, None);
        }
    }

    /// Another node's failed login.
    pub fn failed_elsewhere(&self, user: &UserName, from: IpAddr) {
        self.failures.fail(&Who::Account(user.clone()));
        self.failures.fail(&Who::Address(from));
    }

    /// Another node's successful login: the account's count is cleared.
    pub fn succeeded_elsewhere(&self, user: &UserName) {
        self.failures.clear(&Who::Account(user.clone()));
    }

    /// Another node's registration counts against the limits here too.
    pub fn registered_elsewhere(&self, from: IpAddr) {
        let _ = self.registrations_per_address.hit(&from);
        let _ = self.registrations.hit(&());
    }

    /// Opens or closes registration (a reload).
    pub fn set_open_registration(&self, open: bool) {
        self.open_registration.store(open, Ordering::Relaxed);
    }

    async fn hash(&self, password: &Password) -> Result<String, ChatError> {
        self.hasher.hash(password.expose()).await.ok_or(ChatError::Unavailable(Unavailable::Hashing))
    }

    async fn verify(&self, password: &Password, hash: String) -> bool {
        self.hasher.verify(password.expose(), hash).await
    }

    pub async fn register(&self, user: &UserName, password: &Password, from: IpAddr) -> Result<LoggedIn, ChatError> {
        if !self.open_registration.load(Ordering::Relaxed) {
            return Err(ChatError::RegistrationClosed);
        }
        if self.is_bot(user) {
            return Err(ChatError::NameTaken);
        }
        let throttled = |wait: Duration| ChatError::Throttled(wait.as_secs_f64().ceil().max(1.0) as u64);
        self.registrations_per_address.hit(&from).map_err(throttled)?;
        if let Err(wait) = self.registrations.hit(&()) {
            // Refused server-wide: the address did not use one of its own registrations.
            self.registrations_per_address.give_back(&from);
            return Err(throttled(wait));
        }
        let hash = self.hash(password).await?;
        let created = self.store.create_account(user.clone(), hash).await?;
        if !created {
            return Err(ChatError::NameTaken);
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.publish_registered(from);
        }
        metrics().registrations.inc();
        tracing::info!(user = %user, %from, "account registered");
        Ok(LoggedIn { user: user.clone(), is_bot: false })
    }

    pub async fn login(&self, user: &UserName, password: &Password, from: IpAddr) -> Result<LoggedIn, ChatError> {
        let (account, address) = (Who::Account(user.clone()), Who::Address(from));
        let wait = self.failures.wait_secs(&account).max(self.failures.wait_secs(&address));
        if wait > 0 {
            metrics().login(LoginResult::Throttled);
            return Err(ChatError::Throttled(wait));
        }
        let stored = self.store.account(user.clone()).await?;
        let (hash, disabled) = match stored {
            Some(a) => (Some(a.hash), a.disabled),
            None => (None, None),
        };
        let known = hash.is_some();
        let ok = self.verify(password, hash.unwrap_or_else(|| self.dummy_hash.clone())).await && known;
        if !ok {
            self.failed(user, from);
            metrics().login(LoginResult::Failed);
            tracing::info!(user = %user, %from, "login failed");
            return Err(ChatError::BadCredentials);
        }
        self.succeeded(user);
        // Only someone who knows the password learns that the account is disabled.
        if let Some(reason) = disabled {
            metrics().login(LoginResult::Failed);
            tracing::info!(user = %user, %from, "login refused: account disabled");
            return Err(ChatError::AccountDisabled(reason));
        }
        metrics().login(LoginResult::Ok);
        Ok(LoggedIn { user: user.clone(), is_bot: self.is_bot(user) })
    }

    /// Checks `user`'s password as a login does (same backoff), for PASSWD.
    pub async fn check_password(&self, user: &UserName, password: &Password, from: IpAddr) -> Result<(), ChatError> {
        let (account, address) = (Who::Account(user.clone()), Who::Address(from));
        let wait = self.failures.wait_secs(&account).max(self.failures.wait_secs(&address));
        if wait > 0 {
            return Err(ChatError::Throttled(wait));
        }
        let hash = self.store.account_hash(user.clone()).await?;
        let known = hash.is_some();
        if !(self.verify(password, hash.unwrap_or_else(|| self.dummy_hash.clone())).await && known) {
            self.failed(user, from);
            return Err(ChatError::BadCredentials);
        }
        self.succeeded(user);
        Ok(())
    }

    /// A new password's hash (argon2id, on the hasher threads).
    pub async fn hash_password(&self, password: &Password) -> Result<String, ChatError> {
        self.hash(password).await
    }

    /// Whether `user` is one of the configured bot accounts.
    pub fn is_bot(&self, user: &UserName) -> bool {
        self.bots.read().unwrap_or_else(|p| p.into_inner()).contains(user)
    }

    /// Replaces the bot accounts (a reload, after `provision_bots` gave the new ones a password).
    /// A connection logged in before keeps the standing it logged in with until it logs in again.
    pub fn set_bots(&self, bots: &[BotAccount]) {
        *self.bots.write().unwrap_or_else(|p| p.into_inner()) = bot_names(bots);
    }

    /// Gives each configured bot account its password: the one in its file, or a new random one
    /// written there owner-only. Run at start and by a reload.
    pub async fn provision_bots(&self, bots: &[BotAccount]) -> anyhow::Result<()> {
        for bot in bots {
            let name = UserName::parse(&bot.name)
                .ok_or_else(|| anyhow::anyhow!("bot name {:?} breaks the user name rules", bot.name))?;
            let password = read_or_create_secret(&bot.password_file)?;
            let password = Password::parse(&password).ok_or_else(|| {
                anyhow::anyhow!("{}: the password must be 8-128 bytes without spaces", bot.password_file.display())
            })?;
            let hash = self.hash(&password).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            self.store.upsert_bot_account(name.clone(), hash).await?;
            tracing::info!(bot = %name, file = %bot.password_file.display(), "bot account ready");
        }
        Ok(())
    }
}

fn bot_names(bots: &[BotAccount]) -> HashSet<UserName> {
    bots.iter().filter_map(|b| UserName::parse(&b.name)).collect()
}

fn read_or_create_secret(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if path.exists() {
        return Ok(std::fs::read_to_string(path)?.trim().to_string());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    use rand::distributions::{Alphanumeric, DistString};
    let secret = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{secret}")?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageSection;

    #[tokio::test]
    async fn a_registration_refused_server_wide_does_not_count_against_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&StorageSection { db: dir.path().join("chatd.db"), ..Default::default() }).await.unwrap();
        let limits = Limits { registrations_per_address_per_hour: 2, registrations_per_hour: 1, ..Default::default() };
        let accounts = Accounts::new(store, &limits, true, &[]).await.unwrap();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let password = Password::parse("password1").unwrap();
        let user = |n: &str| UserName::parse(n).unwrap();
        assert!(accounts.register(&user("alice"), &password, a).await.is_ok());
        let refused = accounts.register(&user("bob"), &password, b).await;
        assert!(matches!(refused, Err(ChatError::Throttled(_))), "the server-wide cap");
        // b's own allowance (2) is untouched.
        assert!(accounts.registrations_per_address.hit(&b).is_ok());
        assert!(accounts.registrations_per_address.hit(&b).is_ok());
        assert!(accounts.registrations_per_address.hit(&b).is_err());
    }
}
