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
pub mod names;
pub mod outbox;
pub mod room;
pub mod rooms;

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::store::Store;
use accounts::Accounts;
use bots::Bots;
use names::RoomName;
use rooms::Rooms;

/// How many messages a joiner is sent, and the most one history page holds.
pub const HISTORY_PAGE: usize = 50;

/// The core, shared by every connection.
pub struct Chat {
    pub accounts: Accounts,
    pub rooms: Rooms,
    pub bots: Arc<Bots>,
    store: Arc<Store>,
    /// Most rooms one connection may be in.
    rooms_per_connection: usize,
    /// Whether JOIN creates a room that does not exist.
    auto_create: bool,
}

impl Chat {
    /// Starts the core on `store`: the password hashers, the bot accounts, the rooms.
    pub async fn start(config: &Config, store: Arc<Store>) -> anyhow::Result<Chat> {
        let accounts =
            Accounts::new(store.clone(), &config.limits, config.accounts.open_registration, &config.bots).await?;
        accounts.provision_bots(&config.bots).await?;
        let bots = Arc::new(Bots::default());
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
        };
        let rooms = Rooms::load(store.clone(), bots.clone(), settings, config.limits.max_rooms, &initial).await?;
        Ok(Chat {
            accounts,
            rooms,
            bots,
            store,
            rooms_per_connection: config.limits.rooms_per_connection,
            auto_create: config.rooms.auto_create,
        })
    }
}
