//! Who is online: the logged-in connections of each user, and whether the user is away. Direct
//! messages reach every connection of their two users through here; WHOIS-style questions are
//! answered from here. Connections are added at login and removed at logout or disconnect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::model::{ConnId, Event};
use super::names::UserName;
use super::outbox::Outbox;

struct Presence {
    outbox: Outbox,
    away: Option<Arc<str>>,
    /// A guest's connection (a guest's nick has only this one).
    guest: bool,
}

#[derive(Default)]
pub struct Users {
    online: Mutex<HashMap<UserName, Vec<Presence>>>,
}

/// What is known of a user who is online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Online {
    pub connections: usize,
    /// The user is a guest (a nick, not an account).
    pub guest: bool,
    /// Set when every one of the user's connections is away: the latest away message.
    pub away: Option<Arc<str>>,
}

impl Users {
    pub fn arrive(&self, user: &UserName, outbox: Outbox) {
        let mut online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        online.entry(user.clone()).or_default().push(Presence { outbox, away: None, guest: false });
    }

    /// A guest takes `nick` for its connection; `false` when someone online has it (another guest,
    /// or a member whose account was created since the nick was checked).
    pub fn claim_guest(&self, nick: &UserName, outbox: Outbox) -> bool {
        let mut online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        if online.contains_key(nick) {
            return false;
        }
        online.insert(nick.clone(), vec![Presence { outbox, away: None, guest: true }]);
        true
    }

    /// Whether a guest holds `nick` now (other than connection `except`).
    pub fn is_guest(&self, nick: &UserName, except: Option<ConnId>) -> bool {
        let online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        online.get(nick).is_some_and(|l| l.iter().any(|p| p.guest && Some(p.outbox.conn) != except))
    }

    /// How many connections of `user` are online.
    pub fn connections(&self, user: &UserName) -> usize {
        let online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        online.get(user).map_or(0, Vec::len)
    }

    pub fn leave(&self, user: &UserName, conn: ConnId) {
        let mut online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = online.get_mut(user) {
            list.retain(|p| p.outbox.conn != conn);
            if list.is_empty() {
                online.remove(user);
            }
        }
    }

    /// Marks one connection away (with a message) or back (`None`).
    pub fn set_away(&self, user: &UserName, conn: ConnId, away: Option<Arc<str>>) {
        let mut online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = online.get_mut(user).and_then(|l| l.iter_mut().find(|p| p.outbox.conn == conn)) {
            p.away = away;
        }
    }

    pub fn online(&self, user: &UserName) -> Option<Online> {
        let online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        let list = online.get(user)?;
        let away = match list.iter().all(|p| p.away.is_some()) {
            true => list.iter().rev().find_map(|p| p.away.clone()),
            false => None,
        };
        Some(Online { connections: list.len(), guest: list.iter().any(|p| p.guest), away })
    }

    /// Pushes `event` to every connection of `users` but `except` (a queue that is full drops
    /// its connection, as in a room).
    pub fn deliver(&self, users: &[&UserName], event: &Event, except: ConnId) {
        let online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = Vec::new();
        for user in users {
            if seen.contains(user) {
                continue; // a conversation with oneself
            }
            seen.push(*user);
            for p in online.get(*user).into_iter().flatten().filter(|p| p.outbox.conn != except) {
                p.outbox.push(event.clone());
            }
        }
    }

    /// Pushes `event` to every connection of `user`; returns how many.
    pub fn tell(&self, user: &UserName, event: &Event) -> usize {
        let online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        let list = online.get(user).map(Vec::as_slice).unwrap_or_default();
        for p in list {
            p.outbox.push(event.clone());
        }
        list.len()
    }

    /// Pushes `event` to every logged-in connection (members and guests); returns how many.
    pub fn tell_everyone(&self, event: &Event) -> usize {
        let online = self.online.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for p in online.values().flatten() {
            p.outbox.push(event.clone());
            n += 1;
        }
        n
    }
}
