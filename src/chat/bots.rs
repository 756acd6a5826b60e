//! Which connections answer which bot command words (`SERVE stock`). A room relays a bot command
//! line to the serving connections here, so a bot answers in every room, including new ones.

use std::collections::HashMap;
use std::sync::Mutex;

use super::model::{ConnId, Event};
use super::names::CommandWord;
use super::outbox::Outbox;

#[derive(Default)]
pub struct Bots {
    serving: Mutex<HashMap<CommandWord, Vec<Outbox>>>,
}

impl Bots {
    pub fn serve(&self, word: CommandWord, outbox: Outbox) {
        let mut map = self.serving.lock().unwrap();
        let list = map.entry(word).or_default();
        if !list.iter().any(|o| o.conn == outbox.conn) {
            list.push(outbox);
        }
    }

    /// How many connections serve each word (a cluster node tells the others).
    pub fn words(&self) -> HashMap<String, usize> {
        let map = self.serving.lock().unwrap();
        map.iter().map(|(word, list)| (word.to_string(), list.len())).collect()
    }

    /// Forgets a connection (it logged out or went away).
    pub fn forget(&self, conn: ConnId) {
        let mut map = self.serving.lock().unwrap();
        map.values_mut().for_each(|list| list.retain(|o| o.conn != conn));
        map.retain(|_, list| !list.is_empty());
    }

    /// Pushes the event to every connection serving `word`, except those `skip` says already got
    /// it (room members). Returns how many serving connections there are in all.
    pub fn relay(&self, word: &CommandWord, event: &Event, skip: impl Fn(ConnId) -> bool) -> usize {
        let mut map = self.serving.lock().unwrap();
        let Some(list) = map.get_mut(word) else { return 0 };
        list.retain(|o| skip(o.conn) || o.push(event.clone()));
        list.len()
    }
}
