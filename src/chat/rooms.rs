//! The room registry: which rooms exist, and the handle of each one's actor (started on first use,
//! with its recent messages loaded from the store). No lock is held across a store call: a JOIN to
//! a running room never waits behind another room's history load, and concurrent first JOINs to
//! one cold room share its single load. Creating a room is serialised here, so the room cap holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::bots::Bots;
use super::error::{ChatError, Limit};
use super::model::{Message, Topic};
use super::names::RoomName;
use super::names::UserName;
use super::room::{Loaded, Roles, RoomHandle, RoomSettings, SharedRoles};
use crate::store::{Change, RoomId, Store, StoreError, StoredRoom};

/// A room the store knows; its actor starts on first use.
struct Slot {
    id: RoomId,
    /// The topic as loaded; the actor owns it once started.
    topic: Option<Topic>,
    /// Its operators and bans (shared with the actor once started).
    roles: SharedRoles,
    handle: OnceCell<RoomHandle>,
}

pub struct Rooms {
    slots: Mutex<HashMap<RoomName, Arc<Slot>>>,
    /// Held while a new room is created (never while a room is looked up).
    creating: tokio::sync::Mutex<()>,
    store: Arc<Store>,
    bots: Arc<Bots>,
    settings: RoomSettings,
    max_rooms: usize,
}

impl Rooms {
    /// Loads the rooms the store knows and creates the `initial` ones.
    pub async fn load(
        store: Arc<Store>,
        bots: Arc<Bots>,
        settings: RoomSettings,
        max_rooms: usize,
        initial: &[RoomName],
    ) -> Result<Rooms, StoreError> {
        for name in initial {
            store.create_room(name.clone()).await?;
        }
        let slots: HashMap<_, _> =
            store.rooms().await?.into_iter().map(|room| (room.name.clone(), Slot::stored(room))).collect();
        crate::metrics::metrics().rooms.set(slots.len() as i64);
        Ok(Rooms { slots: Mutex::new(slots), creating: Default::default(), store, bots, settings, max_rooms })
    }

    /// The room's handle; a missing room is created when `creator` is given (it becomes the
    /// room's first operator).
    pub async fn get(&self, name: &RoomName, creator: Option<&UserName>) -> Result<RoomHandle, ChatError> {
        let slot = match self.slot(name) {
            Some(slot) => slot,
            None => match creator {
                Some(creator) => self.create(name, creator).await?,
                None => return Err(ChatError::NoSuchRoom(name.clone())),
            },
        };
        slot.handle.get_or_try_init(|| self.start(name, &slot)).await.cloned()
    }

    fn slot(&self, name: &RoomName) -> Option<Arc<Slot>> {
        self.slots.lock().unwrap().get(name).cloned()
    }

    /// The room's id and roles, without starting it.
    pub fn roles(&self, name: &RoomName) -> Result<(RoomId, SharedRoles), ChatError> {
        let slot = self.slot(name).ok_or_else(|| ChatError::NoSuchRoom(name.clone()))?;
        Ok((slot.id, slot.roles.clone()))
    }

    /// Forgets a deleted room (its name may be created again); its running actor, if any.
    pub fn remove(&self, name: &RoomName) -> Option<RoomHandle> {
        let (slot, rooms) = {
            let mut slots = self.slots.lock().unwrap();
            let slot = slots.remove(name);
            (slot, slots.len())
        };
        crate::metrics::metrics().rooms.set(rooms as i64);
        slot.and_then(|s| s.handle.get().cloned())
    }

    async fn create(&self, name: &RoomName, creator: &UserName) -> Result<Arc<Slot>, ChatError> {
        let _creating = self.creating.lock().await;
        if let Some(slot) = self.slot(name) {
            return Ok(slot); // created while this one waited
        }
        if self.slots.lock().unwrap().len() >= self.max_rooms {
            return Err(ChatError::LimitReached(name.clone(), Limit::Rooms));
        }
        let id = self.store.create_room(name.clone()).await?;
        self.store.change(vec![Change::SetOp { room: id, user: creator.clone(), on: true }]).await?;
        tracing::info!(room = %name, creator = %creator, "room created");
        let ops = vec![creator.clone()];
        let slot = Slot::stored(StoredRoom { id, name: name.clone(), topic: None, ops, bans: Vec::new() });
        let rooms = {
            let mut slots = self.slots.lock().unwrap();
            slots.insert(name.clone(), slot.clone());
            slots.len()
        };
        crate::metrics::metrics().rooms.set(rooms as i64);
        Ok(slot)
    }

    /// Loads a room's recent messages and starts its actor.
    async fn start(&self, name: &RoomName, slot: &Slot) -> Result<RoomHandle, ChatError> {
        let id = slot.id;
        let want = self.settings.cache_messages;
        let stored = self.store.history(id, None, want + 1).await?;
        let complete = stored.len() <= want;
        let skip = stored.len().saturating_sub(want);
        let recent = stored.into_iter().skip(skip).map(|m| Message::stored(name, m)).collect();
        let (settings, store, bots) = (self.settings.clone(), self.store.clone(), self.bots.clone());
        let loaded = Loaded { room_id: id, recent, complete, topic: slot.topic.clone(), roles: slot.roles.clone() };
        Ok(RoomHandle::spawn(name.clone(), loaded, settings, store, bots))
    }

    /// Every room with its current number of users, by name.
    pub fn list(&self) -> Vec<(RoomName, usize)> {
        let slots = self.slots.lock().unwrap();
        let mut out: Vec<_> = slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.handle.get().map_or(0, RoomHandle::user_count)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Slot {
    fn stored(room: StoredRoom) -> Arc<Slot> {
        let topic = room.topic.map(|t| Topic { text: t.text, set_by: t.set_by, time: t.time });
        let roles = Roles { ops: room.ops.into_iter().collect(), bans: room.bans.into_iter().collect() };
        Arc::new(Slot { id: room.id, topic, roles: Arc::new(std::sync::Mutex::new(roles)), handle: OnceCell::new() })
    }
}
