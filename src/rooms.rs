//! The room registry: which rooms exist, and the handle of each one's actor (started on first use,
//! with its recent messages loaded from the store). Creating a room is serialised here.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::bots::Bots;
use crate::error::ChatError;
use crate::names::RoomName;
use crate::room::{RoomHandle, RoomSettings};
use crate::store::{Store, StoreError};

struct Slot {
    id: i64,
    handle: Option<RoomHandle>,
}

pub struct Rooms {
    slots: Mutex<HashMap<RoomName, Slot>>,
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
        let slots = store.rooms().await?.into_iter().map(|(id, name)| (name, Slot { id, handle: None })).collect();
        Ok(Rooms { slots: Mutex::new(slots), store, bots, settings, max_rooms })
    }

    /// The room's handle; a missing room is created when `create` is true.
    pub async fn get(&self, name: &RoomName, create: bool) -> Result<RoomHandle, ChatError> {
        let storage = |e: StoreError| ChatError::Storage(e.to_string());
        let mut slots = self.slots.lock().await;
        if !slots.contains_key(name) {
            if !create {
                return Err(ChatError::NoSuchRoom(name.clone()));
            }
            if slots.len() >= self.max_rooms {
                return Err(ChatError::LimitReached(name.clone(), "the server has too many rooms"));
            }
            let id = self.store.create_room(name.clone()).await.map_err(storage)?;
            tracing::info!(room = %name, "room created");
            slots.insert(name.clone(), Slot { id, handle: None });
        }
        let slot = slots.get_mut(name).expect("present");
        if let Some(handle) = &slot.handle {
            return Ok(handle.clone());
        }
        let want = self.settings.cache_messages;
        let recent = self.store.history(slot.id, name.clone(), None, want + 1).await.map_err(storage)?;
        let complete = recent.len() <= want;
        let skip = recent.len().saturating_sub(want);
        let recent = recent.into_iter().skip(skip).collect();
        let handle = RoomHandle::spawn(
            name.clone(),
            slot.id,
            recent,
            complete,
            self.settings.clone(),
            self.store.clone(),
            self.bots.clone(),
        );
        slot.handle = Some(handle.clone());
        Ok(handle)
    }

    /// Every room with its current number of users, by name.
    pub async fn list(&self) -> Vec<(RoomName, usize)> {
        let slots = self.slots.lock().await;
        let mut out: Vec<_> = slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.handle.as_ref().map_or(0, RoomHandle::user_count)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
