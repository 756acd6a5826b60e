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
        let mut slot = self.slot(name);
        if slot.is_none() && self.settings.cluster.is_some() {
            // Created on another node, perhaps just now.
            slot = self.learn_slot(name).await;
        }
        let slot = match slot {
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

    /// A cluster node's: the room as the store has it now (created on another node), added here
    /// when new; whether the store has it.
    pub async fn learn(&self, name: &RoomName) -> bool {
        self.learn_slot(name).await.is_some()
    }

    async fn learn_slot(&self, name: &RoomName) -> Option<Arc<Slot>> {
        let stored = self.stored(name).await.ok()??;
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.entry(name.clone()).or_insert_with(|| Slot::stored(stored)).clone();
        crate::metrics::metrics().rooms.set(slots.len() as i64);
        Some(slot)
    }

    /// The room as the store has it now.
    async fn stored(&self, name: &RoomName) -> Result<Option<StoredRoom>, StoreError> {
        Ok(self.store.rooms().await?.into_iter().find(|r| r.name == *name))
    }

    /// The room's actor, if it runs on this node.
    pub fn running(&self, name: &RoomName) -> Option<RoomHandle> {
        self.slot(name).and_then(|s| s.handle.get().cloned())
    }

    /// Every room whose actor runs on this node.
    pub fn running_all(&self) -> Vec<RoomHandle> {
        self.slots.lock().unwrap().values().filter_map(|s| s.handle.get().cloned()).collect()
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
        if let Some(cluster) = &self.settings.cluster {
            cluster.publish_room_created(name);
        }
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
        let mut topic = slot.topic.clone();
        if self.settings.cluster.is_some() {
            // Another node may have changed the topic or roles since this one loaded the room.
            if let Some(stored) = self.stored(name).await?.filter(|r| r.id == id) {
                topic = stored.topic.map(|t| Topic { text: t.text, set_by: t.set_by, time: t.time });
                *super::room::roles(&slot.roles) =
                    Roles { ops: stored.ops.into_iter().collect(), bans: stored.bans.into_iter().collect() };
            }
        }
        let want = self.settings.cache_messages;
        let stored = self.store.history(id, None, want + 1).await?;
        let complete = stored.len() <= want;
        let skip = stored.len().saturating_sub(want);
        let recent = stored.into_iter().skip(skip).map(|m| Message::stored(name, m)).collect();
        let (settings, store, bots) = (self.settings.clone(), self.store.clone(), self.bots.clone());
        let loaded = Loaded { room_id: id, recent, complete, topic, roles: slot.roles.clone() };
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
