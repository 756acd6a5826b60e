//! Several chatd nodes as one server (docs/cluster.md): what one node tells the others, over NATS
//! core publish/subscribe, and what it does with what they tell it. Only the chat core uses it.
//!
//! PostgreSQL is the log: a message is committed (and numbered, under the lock that orders every
//! node's commits) before anyone hears of it. NATS carries nothing that matters: a node that
//! misses a message (NATS restarted, a slow subscriber dropped) sees the gap from the message's
//! `prev` and reads what it missed from PostgreSQL; a message it missed with nothing after it is
//! found by the once-a-second check of each running room's latest id (`sweep`).
//!
//! Subjects: `chatd.msg` (committed messages, rooms and direct), `chatd.ev` (room events and
//! server-wide ones: kicks, bans, topics, deletions, bot command lines, notices, closed
//! connections), `chatd.hb` (each node's heartbeat: which bot command words its bots serve),
//! `chatd.names` (a NAMES asks every node for the room's users there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::chat::model::{
    BotLine, Deletion, Event, Kick, Membership, Message, Notice, Posted, RoleChange, RoleKind, RoomDeleted, Topic,
    TopicChange,
};
use crate::chat::names::{CommandWord, RoomName, UserName};
use crate::chat::Chat;
use crate::config::ClusterSection;
use crate::store::{RoomId, Sequenced};

const MESSAGES: &str = "chatd.msg";
const EVENTS: &str = "chatd.ev";
const HEARTBEATS: &str = "chatd.hb";
const NAMES: &str = "chatd.names";
/// How long NAMES waits for the other nodes' answers (a node that does not answer in time is
/// left out of that answer).
const NAMES_WAIT: Duration = Duration::from_millis(500);
/// How often a node says it is alive (and what its bots serve), and checks its rooms for messages
/// it missed.
const TICK: Duration = Duration::from_secs(1);
/// A node not heard of for this long is taken for gone (its bots no longer count).
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Committed messages of one conversation, each with the id of the one before it.
type Linked = Vec<(Arc<Posted>, u64)>;

/// This node's link to the others.
pub struct Cluster {
    node: String,
    nats: async_nats::Client,
    /// The other nodes heard of lately: when, and how many bots serve each command word there.
    peers: Mutex<HashMap<String, Peer>>,
}

struct Peer {
    seen: Instant,
    bots: HashMap<String, usize>,
}

#[derive(Serialize, Deserialize)]
struct WireMessage {
    id: u64,
    prev: u64,
    time: i64,
    sender: String,
    text: String,
    guest: bool,
}

/// Messages of one conversation, committed by `node`, in id order.
#[derive(Serialize, Deserialize)]
struct Posts {
    node: String,
    room: String,
    messages: Vec<WireMessage>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireEvent {
    Joined {
        room: String,
        user: String,
        guest: bool,
    },
    Parted {
        room: String,
        user: String,
        guest: bool,
    },
    Topic {
        room: String,
        text: String,
        set_by: String,
        time: i64,
    },
    Kicked {
        room: String,
        user: String,
        by: String,
        reason: String,
    },
    Deleted {
        room: String,
        id: u64,
        by: String,
    },
    RoomCreated {
        room: String,
    },
    RoomDeleted {
        room: String,
        by: String,
        reason: String,
    },
    Roles {
        room: String,
        user: String,
        by: String,
        role: String,
    },
    Command {
        room: String,
        time: i64,
        sender: String,
        text: String,
        guest: bool,
    },
    /// A login to `user` failed (from `address`), or succeeded (`address` empty): the throttle.
    Login {
        user: String,
        address: Option<std::net::IpAddr>,
    },
    /// An account was registered from `address` (the registration limits).
    Registered {
        address: std::net::IpAddr,
    },
    /// Every connection of `user` is closed (account disabled, KILL).
    Close {
        user: String,
        from: String,
        text: String,
    },
    Notice {
        from: String,
        text: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    event: WireEvent,
}

/// A NAMES from `node` (which answers its own).
#[derive(Serialize, Deserialize)]
struct NamesAsk {
    node: String,
    room: String,
}

#[derive(Serialize, Deserialize)]
struct Heartbeat {
    node: String,
    bots: HashMap<String, usize>,
}

impl Cluster {
    /// Connects to NATS. A NATS server that is down is retried in the background: the node serves
    /// meanwhile (its members see only its own messages until NATS is back, then the rest).
    pub async fn connect(config: &ClusterSection) -> anyhow::Result<Arc<Cluster>> {
        let nats = async_nats::ConnectOptions::new()
            .name(format!("chatd {}", config.node))
            .retry_on_initial_connect()
            .connect(config.nats_url.as_str())
            .await?;
        // A user, password or token in the URL is not logged: only where the server is.
        let server = config.nats_url.rsplit('@').next().unwrap_or_default().trim_start_matches("nats://");
        tracing::info!(node = %config.node, nats = %server, "cluster node");
        Ok(Arc::new(Cluster { node: config.node.clone(), nats, peers: Mutex::default() }))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// How many bots on the other nodes serve `word`.
    pub fn remote_bots(&self, word: &str) -> usize {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.values().filter(|p| p.seen.elapsed() < PEER_TIMEOUT).filter_map(|p| p.bots.get(word)).sum()
    }

    /// The users of `room` on the other nodes that answer within `NAMES_WAIT`.
    pub async fn remote_names(&self, room: &RoomName) -> Vec<UserName> {
        let peers = {
            let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            peers.values().filter(|p| p.seen.elapsed() < PEER_TIMEOUT).count()
        };
        if peers == 0 {
            return Vec::new();
        }
        let inbox = self.nats.new_inbox();
        let Ok(mut answers) = self.nats.subscribe(inbox.clone()).await else { return Vec::new() };
        let ask = serde_json::to_vec(&NamesAsk { node: self.node.clone(), room: room.to_string() }).unwrap_or_default();
        if self.nats.publish_with_reply(NAMES, inbox, ask.into()).await.is_err() {
            return Vec::new();
        }
        let mut names = Vec::new();
        let deadline = tokio::time::Instant::now() + NAMES_WAIT;
        for _ in 0..peers {
            match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(m)) => {
                    let list: Vec<String> = serde_json::from_slice(&m.payload).unwrap_or_default();
                    names.extend(list.iter().filter_map(|u| UserName::parse(u)));
                }
                _ => break,
            }
        }
        tracing::debug!(peers, names = names.len(), "NAMES: the other nodes' answers");
        names
    }

    /// Tells the other nodes of an event of a room or of the server (those that concern them).
    pub fn publish(&self, event: &Event) {
        if let Some(event) = wire_event(event) {
            self.send(EVENTS, &Envelope { node: self.node.clone(), event });
        }
    }

    /// Tells the other nodes that every connection of `user` is being closed.
    pub fn publish_close(&self, user: &UserName, notice: &Notice) {
        let event =
            WireEvent::Close { user: user.to_string(), from: notice.from.to_string(), text: notice.text.clone() };
        self.send(EVENTS, &Envelope { node: self.node.clone(), event });
    }

    /// Tells the other nodes of a failed (`from` given) or successful login to `user`.
    pub fn publish_login(&self, user: &UserName, from: Option<std::net::IpAddr>) {
        let event = WireEvent::Login { user: user.to_string(), address: from };
        self.send(EVENTS, &Envelope { node: self.node.clone(), event });
    }

    pub fn publish_registered(&self, from: std::net::IpAddr) {
        self.send(EVENTS, &Envelope { node: self.node.clone(), event: WireEvent::Registered { address: from } });
    }

    pub fn publish_room_created(&self, room: &RoomName) {
        self.send(
            EVENTS,
            &Envelope { node: self.node.clone(), event: WireEvent::RoomCreated { room: room.to_string() } },
        );
    }

    fn send(&self, subject: &'static str, value: &impl Serialize) {
        let payload = match serde_json::to_vec(value) {
            Ok(p) => p,
            Err(e) => return tracing::error!(error = %e, "cluster: cannot encode"),
        };
        let nats = self.nats.clone();
        // async-nats queues the publish (it waits only while its buffer is full); a NATS that is
        // down loses it, and the other nodes backfill from PostgreSQL.
        tokio::spawn(async move {
            if let Err(e) = nats.publish(subject, payload.into()).await {
                tracing::debug!(error = %e, "cluster: publish failed");
            }
        });
    }
}

/// Runs the node's side of the cluster: delivers and publishes what this node commits, delivers
/// what the others publish, keeps the heartbeat and the missed-message check.
pub fn spawn(chat: Arc<Chat>, cluster: Arc<Cluster>, committed: mpsc::Receiver<Vec<Sequenced>>) {
    tokio::spawn(committed_loop(chat.clone(), cluster.clone(), committed));
    tokio::spawn(subscriber(chat.clone(), cluster.clone()));
    tokio::spawn(ticker(chat, cluster));
}

/// What this node committed: to its own members at once, then to the other nodes.
async fn committed_loop(chat: Arc<Chat>, cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Vec<Sequenced>>) {
    while let Some(batch) = rx.recv().await {
        let mut by_room: Vec<(RoomId, RoomName, Linked)> = Vec::new();
        for s in batch {
            let Ok(provisional) = s.message.into_any().downcast::<Posted>() else { continue };
            let posted = Posted::new(Message { id: s.id, time: s.time, ..provisional.msg.clone() }, provisional.from);
            match by_room.iter_mut().find(|(id, _, _)| *id == s.room) {
                Some((_, _, list)) => list.push((posted, s.prev)),
                None => by_room.push((s.room, posted.msg.room.clone(), vec![(posted, s.prev)])),
            }
        }
        for (_, room, list) in by_room {
            let messages = list
                .iter()
                .map(|(p, prev)| WireMessage {
                    id: p.msg.id,
                    prev: *prev,
                    time: p.msg.time,
                    sender: p.msg.sender.to_string(),
                    text: p.msg.text.clone(),
                    guest: p.msg.guest,
                })
                .collect();
            deliver_here(&chat, &room, list).await;
            cluster.send(MESSAGES, &Posts { node: cluster.node.clone(), room: room.to_string(), messages });
        }
    }
}

/// Hands messages of a conversation to this node's members: a room's to its actor (when it runs
/// here: it keeps the id order), a direct message to both users' connections.
async fn deliver_here(chat: &Chat, room: &RoomName, list: Vec<(Arc<Posted>, u64)>) {
    if let Some((a, b)) = room.direct_peers() {
        for (posted, _) in list {
            let except = posted.from.unwrap_or(0);
            chat.users.deliver(&[&a, &b], &Event::Direct(posted), except);
        }
        return;
    }
    if let Some(handle) = chat.rooms.running(room) {
        handle.deliver(list).await;
    }
}

async fn subscriber(chat: Arc<Chat>, cluster: Arc<Cluster>) {
    let subscribe = |subject: &'static str| {
        let nats = cluster.nats.clone();
        async move {
            loop {
                match nats.subscribe(subject).await {
                    Ok(s) => return s,
                    Err(e) => {
                        tracing::warn!(error = %e, subject, "cluster: cannot subscribe yet");
                        tokio::time::sleep(TICK).await;
                    }
                }
            }
        }
    };
    let mut messages = subscribe(MESSAGES).await;
    let mut events = subscribe(EVENTS).await;
    let mut beats = subscribe(HEARTBEATS).await;
    let mut names = subscribe(NAMES).await;
    // Said once subscribed: the nodes that did not know this one answer with theirs at once.
    beat(&chat, &cluster);
    loop {
        tokio::select! {
            Some(m) = names.next() => on_names(&chat, &cluster, m),
            Some(m) = messages.next() => on_posts(&chat, &cluster, &m.payload).await,
            Some(m) = events.next() => on_event(&chat, &cluster, &m.payload).await,
            Some(m) = beats.next() => on_heartbeat(&chat, &cluster, &m.payload),
            else => break,
        }
    }
}

async fn on_posts(chat: &Chat, cluster: &Cluster, payload: &[u8]) {
    let Ok(posts) = serde_json::from_slice::<Posts>(payload) else { return };
    if posts.node == cluster.node {
        return; // delivered here when committed
    }
    let Some(room) = conversation(&posts.room) else { return };
    crate::metrics::metrics().cluster_received.inc_by(posts.messages.len() as u64);
    let mut list = Vec::with_capacity(posts.messages.len());
    for m in posts.messages {
        let Some(sender) = UserName::parse(&m.sender) else { continue };
        let msg = Message { id: m.id, room: room.clone(), time: m.time, sender, text: m.text, guest: m.guest };
        list.push((Posted::new(msg, None), m.prev));
    }
    deliver_here(chat, &room, list).await;
}

async fn on_event(chat: &Chat, cluster: &Cluster, payload: &[u8]) {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else { return };
    if envelope.node == cluster.node {
        return;
    }
    let name = |s: &str| UserName::parse(s);
    match envelope.event {
        WireEvent::Close { user, from, text } => {
            if let (Some(user), Some(from)) = (name(&user), name(&from)) {
                chat.users.tell(&user, &Event::Close(Arc::new(Notice { from, text })));
            }
        }
        WireEvent::Login { user, address } => {
            let Some(user) = name(&user) else { return };
            match address {
                Some(from) => chat.accounts.failed_elsewhere(&user, from),
                None => chat.accounts.succeeded_elsewhere(&user),
            }
        }
        WireEvent::Registered { address } => chat.accounts.registered_elsewhere(address),
        WireEvent::Notice { from, text } => {
            if let Some(from) = name(&from) {
                chat.users.tell_everyone(&Event::Notice(Arc::new(Notice { from, text })));
            }
        }
        WireEvent::RoomCreated { room } => {
            if let Some(room) = RoomName::parse(&room) {
                chat.rooms.learn(&room).await;
            }
        }
        WireEvent::RoomDeleted { room, by, reason } => {
            let (Some(room), Some(by)) = (RoomName::parse(&room), name(&by)) else { return };
            if let Some(handle) = chat.rooms.remove(&room) {
                handle.close_here(RoomDeleted { room, by, reason }).await;
            }
        }
        event => {
            let Some((room, event)) = core_event(event) else { return };
            if let Event::Roles(change) = &event {
                // The room's roles are kept whether or not it runs here.
                if let Ok((_, shared)) = chat.rooms.roles(&room) {
                    let mut roles = crate::chat::room::roles(&shared);
                    let user = change.user.clone();
                    match change.kind {
                        RoleKind::Op => roles.ops.insert(user),
                        RoleKind::Deop => roles.ops.remove(&user),
                        RoleKind::Ban => roles.bans.insert(user),
                        RoleKind::Unban => roles.bans.remove(&user),
                    };
                }
            }
            match chat.rooms.running(&room) {
                Some(handle) => handle.remote(event).await,
                // No member here: only this node's bots may need it (a bot answers in rooms it
                // has not joined).
                None => {
                    if let Event::Command(line) = &event {
                        if let Some(word) = CommandWord::of_bot_line(&line.text) {
                            chat.bots.relay(&word, &event, |_| false);
                        }
                    }
                }
            }
        }
    }
}

/// Another node's NAMES: the room's users here (none when it does not run here).
fn on_names(chat: &Arc<Chat>, cluster: &Cluster, request: async_nats::Message) {
    let Some(reply) = request.reply else { return };
    let Ok(ask) = serde_json::from_slice::<NamesAsk>(&request.payload) else { return };
    if ask.node == cluster.node {
        return;
    }
    let handle = RoomName::parse(&ask.room).and_then(|r| chat.rooms.running(&r));
    let nats = cluster.nats.clone();
    // Answered from a task of its own: the room's answer must not hold up the subscriber.
    tokio::spawn(async move {
        let users: Vec<String> = match handle {
            Some(h) => h.users_here().await.iter().map(|u| u.to_string()).collect(),
            None => Vec::new(),
        };
        let payload = serde_json::to_vec(&users).unwrap_or_default();
        let _ = nats.publish(reply, payload.into()).await;
    });
}

/// This node's heartbeat: it is alive, and its bots serve these words.
fn beat(chat: &Chat, cluster: &Cluster) {
    cluster.send(HEARTBEATS, &Heartbeat { node: cluster.node.clone(), bots: chat.bots.words() });
}

fn on_heartbeat(chat: &Chat, cluster: &Cluster, payload: &[u8]) {
    let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(payload) else { return };
    if heartbeat.node == cluster.node {
        return;
    }
    let mut peers = cluster.peers.lock().unwrap_or_else(|p| p.into_inner());
    let fresh = Peer { seen: Instant::now(), bots: heartbeat.bots };
    if peers.insert(heartbeat.node, fresh).is_none_or(|old| old.seen.elapsed() >= PEER_TIMEOUT) {
        // A node new (or back): it learns of this one now rather than within a second.
        beat(chat, cluster);
    }
    peers.retain(|_, p| p.seen.elapsed() < PEER_TIMEOUT * 12);
    let live = peers.values().filter(|p| p.seen.elapsed() < PEER_TIMEOUT).count();
    crate::metrics::metrics().cluster_peers.set(live as i64);
}

/// Once a second: the heartbeat, and each running room asked to catch up to its latest id in
/// PostgreSQL (a message missed with none after it is found here).
async fn ticker(chat: Arc<Chat>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        beat(&chat, &cluster);
        let live = {
            let peers = cluster.peers.lock().unwrap_or_else(|p| p.into_inner());
            peers.values().filter(|p| p.seen.elapsed() < PEER_TIMEOUT).count()
        };
        crate::metrics::metrics().cluster_peers.set(live as i64);
        let running = chat.rooms.running_all();
        if running.is_empty() {
            continue;
        }
        let ids = running.iter().map(|h| h.room_id).collect();
        let Ok(heads) = chat.store().heads(ids).await else { continue };
        for (room_id, head) in heads {
            if let Some(handle) = running.iter().find(|h| h.room_id == room_id) {
                handle.catch_up(head).await;
            }
        }
    }
}

/// A room's name, or a conversation of two users' (`@alice,bob`: no room name has an `@`).
fn conversation(name: &str) -> Option<RoomName> {
    match name.strip_prefix('@') {
        Some(pair) => {
            let (a, b) = pair.split_once(',')?;
            Some(RoomName::direct(&UserName::parse(a)?, &UserName::parse(b)?))
        }
        None => RoomName::parse(name),
    }
}

fn wire_event(event: &Event) -> Option<WireEvent> {
    let s = |n: &dyn std::fmt::Display| n.to_string();
    Some(match event {
        Event::Joined(m) => WireEvent::Joined { room: s(&m.room), user: s(&m.user), guest: m.guest },
        Event::Parted(m) => WireEvent::Parted { room: s(&m.room), user: s(&m.user), guest: m.guest },
        Event::Topic(t) => WireEvent::Topic {
            room: s(&t.room),
            text: t.topic.text.clone(),
            set_by: s(&t.topic.set_by),
            time: t.topic.time,
        },
        Event::Kicked(k) => {
            WireEvent::Kicked { room: s(&k.room), user: s(&k.user), by: s(&k.by), reason: k.reason.clone() }
        }
        Event::Deleted(d) => WireEvent::Deleted { room: s(&d.room), id: d.id, by: s(&d.by) },
        Event::RoomDeleted(d) => WireEvent::RoomDeleted { room: s(&d.room), by: s(&d.by), reason: d.reason.clone() },
        Event::Roles(r) => WireEvent::Roles {
            room: s(&r.room),
            user: s(&r.user),
            by: s(&r.by),
            role: match r.kind {
                RoleKind::Op => "op",
                RoleKind::Deop => "deop",
                RoleKind::Ban => "ban",
                RoleKind::Unban => "unban",
            }
            .into(),
        },
        Event::Command(c) => WireEvent::Command {
            room: s(&c.room),
            time: c.time,
            sender: s(&c.sender),
            text: c.text.clone(),
            guest: c.guest,
        },
        Event::Notice(n) => WireEvent::Notice { from: s(&n.from), text: n.text.clone() },
        Event::Message(_) | Event::Messages(_) | Event::Direct(_) | Event::Close(_) => return None,
    })
}

/// A room event from another node, as the core's value (and its room).
fn core_event(event: WireEvent) -> Option<(RoomName, Event)> {
    let room = |r: &str| RoomName::parse(r);
    let user = |u: &str| UserName::parse(u);
    Some(match event {
        WireEvent::Joined { room: r, user: u, guest } => {
            let m = Membership { room: room(&r)?, user: user(&u)?, guest };
            (m.room.clone(), Event::Joined(Arc::new(m)))
        }
        WireEvent::Parted { room: r, user: u, guest } => {
            let m = Membership { room: room(&r)?, user: user(&u)?, guest };
            (m.room.clone(), Event::Parted(Arc::new(m)))
        }
        WireEvent::Topic { room: r, text, set_by, time } => {
            let t = TopicChange { room: room(&r)?, topic: Topic { text, set_by: user(&set_by)?, time } };
            (t.room.clone(), Event::Topic(Arc::new(t)))
        }
        WireEvent::Kicked { room: r, user: u, by, reason } => {
            let k = Kick { room: room(&r)?, user: user(&u)?, by: user(&by)?, reason };
            (k.room.clone(), Event::Kicked(Arc::new(k)))
        }
        WireEvent::Deleted { room: r, id, by } => {
            let d = Deletion { room: room(&r)?, id, by: user(&by)? };
            (d.room.clone(), Event::Deleted(Arc::new(d)))
        }
        WireEvent::Roles { room: r, user: u, by, role } => {
            let kind = match role.as_str() {
                "op" => RoleKind::Op,
                "deop" => RoleKind::Deop,
                "ban" => RoleKind::Ban,
                "unban" => RoleKind::Unban,
                _ => return None,
            };
            let c = RoleChange { room: room(&r)?, user: user(&u)?, by: user(&by)?, kind };
            (c.room.clone(), Event::Roles(Arc::new(c)))
        }
        WireEvent::Command { room: r, time, sender, text, guest } => {
            let c = BotLine { room: room(&r)?, time, sender: user(&sender)?, text, guest };
            (c.room.clone(), Event::Command(Arc::new(c)))
        }
        WireEvent::Close { .. } | WireEvent::Notice { .. } | WireEvent::RoomCreated { .. } => return None,
        WireEvent::Login { .. } | WireEvent::Registered { .. } => return None,
        WireEvent::RoomDeleted { .. } => return None,
    })
}
