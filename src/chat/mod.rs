//! The chat core: accounts, rooms (actors), bots, the messages and events they exchange, and one
//! connection's state as a client of the core. It knows no wire format and no SQL: front ends
//! (`native`, later others) parse their lines, call a `Client`, and render what comes back
//! (`ChatError` values, `Event`s, `Settled` acknowledgements); everything durable goes through
//! `store`.

pub mod accounts;
pub mod bots;
pub mod client;
pub mod error;
pub mod hasher;
pub mod model;
pub mod moderation;
pub mod names;
pub mod outbox;
pub mod room;
pub mod rooms;
pub mod users;

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::store::Store;
use accounts::Accounts;
use bots::Bots;
use names::RoomName;
use rooms::Rooms;
use users::Users;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{Range, RoomId};
use error::ChatError;
use model::{now_millis, Millis};
use names::UserName;

/// A conversation of two users: its id in the store, and the time of its latest message, held
/// while a new message gets its id and time (so both are in the same order).
pub struct Conversation {
    pub id: RoomId,
    last_time: Mutex<Millis>,
}

impl Conversation {
    /// Runs `f` with the time for a new message: now, but never before the previous one.
    pub fn next<T>(&self, f: impl FnOnce(Millis) -> T) -> T {
        let mut last = self.last_time.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(now_millis());
        f(*last)
    }
}

/// The conversations used since start, by name.
#[derive(Default)]
struct Directs(Mutex<HashMap<RoomName, Arc<Conversation>>>);

/// How many messages a joiner is sent, and the most one history page holds.
pub const HISTORY_PAGE: usize = 50;

/// The longest topic a room may have, in bytes.
pub const TOPIC_MAX_BYTES: usize = 390;

/// What guests may do (`[guests]` in chatd.toml), as the core checks it.
#[derive(Debug, Clone)]
pub struct GuestPolicy {
    pub enabled: bool,
    /// The rooms guests may join; every existing room when `all_rooms`.
    pub rooms: Vec<RoomName>,
    pub all_rooms: bool,
    pub rooms_per_connection: usize,
    pub direct_messages_to_members: bool,
    pub bot_commands: bool,
    /// A guest connection's flood bucket.
    pub flood_burst: u32,
    pub flood_rate_per_sec: f64,
}

impl GuestPolicy {
    pub fn from_config(config: &crate::config::GuestsSection) -> GuestPolicy {
        GuestPolicy {
            enabled: config.enabled,
            rooms: config.rooms.iter().filter_map(|r| RoomName::parse(r)).collect(),
            all_rooms: config.all_rooms,
            rooms_per_connection: config.rooms_per_connection,
            direct_messages_to_members: config.direct_messages_to_members,
            bot_commands: config.bot_commands,
            flood_burst: config.flood_burst,
            flood_rate_per_sec: config.flood_rate_per_sec,
        }
    }

    /// Whether guests may join `room` (if it exists: guests never create rooms).
    pub fn may_join(&self, room: &RoomName) -> bool {
        self.all_rooms || self.rooms.contains(room)
    }
}

/// The core, shared by every connection.
pub struct Chat {
    pub accounts: Accounts,
    pub rooms: Rooms,
    pub bots: Arc<Bots>,
    pub users: Users,
    directs: Directs,
    store: Arc<Store>,
    /// Most rooms one connection may be in.
    rooms_per_connection: usize,
    /// Whether JOIN creates a room that does not exist.
    auto_create: bool,
    /// What guests may do.
    pub guests: GuestPolicy,
    /// The server's admins (`[admin] users`; a reload replaces them).
    admins: std::sync::RwLock<std::collections::HashSet<UserName>>,
    /// Where an admin's RELOAD goes (set once the daemon is wired; see `moderation::Reload`).
    reload: std::sync::OnceLock<moderation::ReloadRequests>,
    /// This node's link to the others, when it is one node of a cluster.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Chat {
    /// Starts the core on `store`: the password hashers, the bot accounts, the rooms.
    pub async fn start(config: &Config, store: Arc<Store>) -> anyhow::Result<Chat> {
        let accounts =
            Accounts::new(store.clone(), &config.limits, config.accounts.open_registration, &config.bots).await?;
        accounts.provision_bots(&config.bots).await?;
        let bots = Arc::new(Bots::default());
        let cluster = match config.cluster.enabled() {
            true => Some(crate::cluster::Cluster::connect(&config.cluster).await?),
            false => None,
        };
        if let Some(cluster) = &cluster {
            accounts.set_cluster(cluster.clone());
        }
        let initial: Vec<RoomName> = config
            .rooms
            .initial
            .iter()
            .map(|r| RoomName::parse(r).with_context(|| format!("rooms.initial: {r:?} is not a valid room name")))
            .collect::<Result<_, _>>()?;
        let settings = room::RoomSettings {
            cache_messages: config.rooms.cache_messages.max(HISTORY_PAGE),
            members_per_room: config.limits.members_per_room,
            batch_bytes: (config.limits.send_queue_bytes / 8).max(1),
            cluster: cluster.clone(),
        };
        let rooms = Rooms::load(store.clone(), bots.clone(), settings, config.limits.max_rooms, &initial).await?;
        Ok(Chat {
            accounts,
            rooms,
            bots,
            users: Users::default(),
            directs: Directs::default(),
            store,
            rooms_per_connection: config.limits.rooms_per_connection,
            auto_create: config.rooms.auto_create,
            guests: GuestPolicy::from_config(&config.guests),
            admins: std::sync::RwLock::new(admin_names(&config.admin.users)),
            reload: std::sync::OnceLock::new(),
            cluster,
        })
    }
}

impl Chat {
    /// The conversation of `me` and `peer`. `create`: make it when new (`peer` must be an
    /// account); otherwise `None` when they have never written to each other.
    pub async fn conversation(
        &self,
        me: &UserName,
        peer: &UserName,
        create: bool,
    ) -> Result<Option<Arc<Conversation>>, ChatError> {
        let name = RoomName::direct(me, peer);
        if let Some(c) = self.directs.0.lock().unwrap_or_else(|p| p.into_inner()).get(&name) {
            return Ok(Some(c.clone()));
        }
        let id = match create {
            true => {
                if self.store.account_hash(peer.clone()).await?.is_none() {
                    return Err(ChatError::NoSuchUser(peer.clone()));
                }
                self.store.direct_conversation(name.clone(), me.clone(), peer.clone()).await?
            }
            false => match self.store.directs_of(me.clone()).await?.into_iter().find(|(_, p)| p == peer) {
                Some((id, _)) => id,
                None => return Ok(None),
            },
        };
        let latest = Range { after: None, before: None, limit: 1, newest_first: true };
        let last = self.store.messages(id, latest).await?.first().map_or(0, |m| m.time);
        let conversation = Arc::new(Conversation { id, last_time: Mutex::new(last) });
        let mut directs = self.directs.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Some(directs.entry(name).or_insert(conversation).clone()))
    }

    /// Whether `user` is a bot account.
    pub fn is_bot(&self, user: &UserName) -> bool {
        self.accounts.is_bot(user)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Whether `user` is one of the server's admins.
    pub fn is_admin(&self, user: &UserName) -> bool {
        self.admins.read().unwrap_or_else(|p| p.into_inner()).contains(user)
    }

    /// Replaces the admins (a reload).
    pub fn set_admins(&self, users: &[String]) {
        *self.admins.write().unwrap_or_else(|p| p.into_inner()) = admin_names(users);
    }

    /// Hands the core the way to the daemon's reload (once, at wiring).
    pub fn set_reload(&self, requests: moderation::ReloadRequests) {
        let _ = self.reload.set(requests);
    }
}

fn admin_names(users: &[String]) -> std::collections::HashSet<UserName> {
    users.iter().filter_map(|u| UserName::parse(u)).collect()
}
