//! Moderation and administration, as a connection's client of the core: room operators (a
//! room's creator, and those an operator names) kick, ban, set topics and delete messages in
//! their rooms; the server's admins (`[admin] users`) may do that in every room, and also disable
//! accounts, reset passwords, delete rooms, send server-wide notices, close a user's connections,
//! read the audit log and reload the configuration. A user changes their own password.
//!
//! Every action is checked here (front ends only render), stored before it takes effect, and
//! audited: a `chatd::audit` log line and an `audit` row, written in the same transaction as the
//! change. Guests are never operators or admins: both name accounts, and no guest has an
//! account's name.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::client::{Client, Identity};
use super::error::{ChatError, GuestRefusal, Unavailable};
use super::model::{now_millis, Deletion, Event, Kick, Notice, RoleChange, RoleKind, RoomDeleted};
use super::names::{Password, RoomName, UserName};
use super::room::{roles, SharedRoles};
use crate::store::{AuditEntry, Change, RoomId};

/// What an admin's reload did: the changed keys now in effect, those that need a restart, and
/// whether new handshakes get a new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub applied: Vec<String>,
    pub need_restart: Vec<String>,
    pub new_certificate: bool,
}

/// A reload request: the daemon reloads as on SIGHUP and answers with what it did, or why it
/// refused the file. The core knows nothing of configuration files; the daemon's wiring holds
/// the other end (see `lib.rs`).
pub type ReloadRequest = oneshot::Sender<Result<ReloadReport, String>>;
pub type ReloadRequests = mpsc::Sender<ReloadRequest>;

/// A text on one line (a configuration error spans several), its whitespace runs made one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The most audit entries one AUDIT returns.
pub const AUDIT_MAX: usize = 200;

impl<T> Client<T> {
    /// Whether this connection is logged in as one of the server's admins.
    pub fn is_admin(&self) -> bool {
        match self.identity() {
            Identity::User(name) | Identity::Bot { name, .. } => self.chat.is_admin(name),
            Identity::Anonymous | Identity::Guest(_) => false,
        }
    }

    /// Whether this connection may moderate `room` (an operator of it, or an admin).
    pub fn moderates(&self, room: &RoomName) -> Result<bool, ChatError> {
        let (_, shared) = self.chat.rooms.roles(room)?;
        Ok(self.is_admin() || self.member_name().is_some_and(|me| roles(&shared).ops.contains(&me)))
    }

    /// The operators of a room (for NAMES and WHO).
    pub fn room_ops(&self, room: &RoomName) -> Vec<UserName> {
        match self.chat.rooms.roles(room) {
            Ok((_, shared)) => roles(&shared).ops.iter().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A member's account name (never a guest's nick).
    fn member_name(&self) -> Option<UserName> {
        match self.identity() {
            Identity::User(name) | Identity::Bot { name, .. } => Some(name.clone()),
            Identity::Anonymous | Identity::Guest(_) => None,
        }
    }

    /// The actor's name, when this connection may moderate `room`: its id and roles.
    fn operator_of(&self, room: &RoomName) -> Result<(UserName, RoomId, SharedRoles), ChatError> {
        let me = self.user()?;
        let (id, shared) = self.chat.rooms.roles(room)?;
        let op = self.member_name().is_some_and(|m| roles(&shared).ops.contains(&m));
        if !op && !self.is_admin() {
            return Err(ChatError::NotOperator(room.clone()));
        }
        Ok((me, id, shared))
    }

    /// The actor's name, when this connection is an admin's.
    fn admin(&self) -> Result<UserName, ChatError> {
        let me = self.user()?;
        match self.is_admin() {
            true => Ok(me),
            false => Err(ChatError::NotAdmin),
        }
    }

    /// Stores `change` with its audit entry (one transaction) and logs the action. Returns how
    /// many rows the change touched; with 0, nothing was changed and nothing audited.
    async fn audited(
        &self,
        change: Option<Change>,
        actor: &UserName,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<u64, ChatError> {
        let entry = AuditEntry {
            time: now_millis(),
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail: one_line(detail),
        };
        let changes = match change {
            Some(change) => vec![change, Change::Audit(entry)],
            None => vec![Change::Audit(entry)],
        };
        let n = self.chat.store().change(changes).await?;
        if n > 0 {
            tracing::info!(target: "chatd::audit", actor = %actor, action, target, detail, "moderation");
        }
        Ok(n)
    }

    /// Makes `user` an operator of `room` (`on`), or no longer one. The user must be an account.
    pub async fn set_op(&mut self, room: &RoomName, user: &UserName, on: bool) -> Result<(), ChatError> {
        let (me, id, shared) = self.operator_of(room)?;
        if on && self.chat.store().account_hash(user.clone()).await?.is_none() {
            return Err(ChatError::NoSuchUser(user.clone()));
        }
        let action = if on { "op" } else { "deop" };
        let change = Change::SetOp { room: id, user: user.clone(), on };
        if self.audited(Some(change), &me, action, &format!("{room} {user}"), "").await? == 0 {
            return Ok(()); // already so
        }
        {
            let mut r = roles(&shared);
            match on {
                true => r.ops.insert(user.clone()),
                false => r.ops.remove(user),
            };
        }
        let kind = if on { RoleKind::Op } else { RoleKind::Deop };
        self.announce(room, RoleChange { room: room.clone(), user: user.clone(), by: me, kind }).await;
        Ok(())
    }

    /// Tells a running room's members of a change in its roles.
    async fn announce(&self, room: &RoomName, change: RoleChange) {
        if let Ok(handle) = self.chat.rooms.get(room, None).await {
            handle.announce(change).await;
        }
    }

    /// Removes every connection of `user` from `room`, with a reason the members see.
    pub async fn kick(&mut self, room: &RoomName, user: &UserName, reason: &str) -> Result<usize, ChatError> {
        let (me, _, _) = self.operator_of(room)?;
        let handle = self.chat.rooms.get(room, None).await?;
        let kick = || Kick { room: room.clone(), user: user.clone(), by: me.clone(), reason: reason.to_string() };
        let mut removed = handle.kick(kick()).await?;
        if removed == 0 {
            // On a cluster node the user may be in the room on another node.
            let elsewhere = match &self.chat.cluster {
                Some(cluster) => cluster.remote_names(room).await.contains(user),
                None => false,
            };
            if !elsewhere {
                return Err(ChatError::NotInRoom(room.clone(), user.clone()));
            }
            removed = handle.kick_elsewhere(kick()).await?;
        }
        self.audited(None, &me, "kick", &format!("{room} {user}"), reason).await?;
        Ok(removed)
    }

    /// Bans `user` from `room` (and kicks them, when there): they cannot JOIN it until unbanned.
    pub async fn ban(&mut self, room: &RoomName, user: &UserName, reason: &str) -> Result<(), ChatError> {
        let (me, id, shared) = self.operator_of(room)?;
        let change = Change::SetBan { room: id, user: user.clone(), by: me.clone(), on: true };
        self.audited(Some(change), &me, "ban", &format!("{room} {user}"), reason).await?;
        roles(&shared).bans.insert(user.clone());
        let handle = self.chat.rooms.get(room, None).await?;
        handle
            .announce(RoleChange { room: room.clone(), user: user.clone(), by: me.clone(), kind: RoleKind::Ban })
            .await;
        let why = match reason.is_empty() {
            true => "banned".to_string(),
            false => format!("banned: {reason}"),
        };
        handle.kick(Kick { room: room.clone(), user: user.clone(), by: me, reason: why }).await?;
        Ok(())
    }

    pub async fn unban(&mut self, room: &RoomName, user: &UserName) -> Result<(), ChatError> {
        let (me, id, shared) = self.operator_of(room)?;
        let change = Change::SetBan { room: id, user: user.clone(), by: me.clone(), on: false };
        if self.audited(Some(change), &me, "unban", &format!("{room} {user}"), "").await? == 0 {
            return Ok(()); // was not banned
        }
        roles(&shared).bans.remove(user);
        self.announce(room, RoleChange { room: room.clone(), user: user.clone(), by: me, kind: RoleKind::Unban }).await;
        Ok(())
    }

    /// The accounts banned from `room`, by name (any logged-in user may see them).
    pub fn bans(&self, room: &RoomName) -> Result<Vec<UserName>, ChatError> {
        self.user()?;
        let (_, shared) = self.chat.rooms.roles(room)?;
        let mut bans: Vec<UserName> = roles(&shared).bans.iter().cloned().collect();
        bans.sort();
        Ok(bans)
    }

    /// Deletes message `id` of `room` from its history; the members are told (all but this
    /// connection, which gets the reply).
    pub async fn delete_message(&mut self, room: &RoomName, id: u64) -> Result<(), ChatError> {
        let (me, room_id, _) = self.operator_of(room)?;
        let target = format!("{room} {id}");
        let change = Change::DeleteMessage { room: room_id, id, before_commit: false };
        let stored = self.audited(Some(change), &me, "delete", &target, "").await?;
        let handle = self.chat.rooms.get(room, None).await?;
        let deletion = Deletion { room: room.clone(), id, by: me.clone() };
        let cached = handle.delete(self.conn, deletion, stored > 0).await?;
        if stored == 0 && !cached {
            return Err(ChatError::NoSuchMessage(room.clone(), id));
        }
        if stored == 0 {
            // Accepted but not committed yet: its commit, still to come, must skip it.
            let change = Change::DeleteMessage { room: room_id, id, before_commit: true };
            self.audited(Some(change), &me, "delete", &target, "").await?;
        }
        Ok(())
    }

    /// Deletes a room (admins): its members are told and removed, its history, operators and
    /// bans are gone. The name may be created again.
    pub async fn delete_room(&mut self, room: &RoomName, reason: &str) -> Result<(), ChatError> {
        let me = self.admin()?;
        let (id, _) = self.chat.rooms.roles(room)?;
        self.audited(Some(Change::DeleteRoom { room: id }), &me, "delroom", room.as_str(), reason).await?;
        if let Some(handle) = self.chat.rooms.remove(room) {
            handle.close(RoomDeleted { room: room.clone(), by: me, reason: reason.to_string() }).await;
        }
        self.joined.retain(|h| h.name != *room);
        Ok(())
    }

    /// Disables an account (admins): its connections are closed with `reason`, and LOGIN is
    /// refused until it is enabled again.
    pub async fn disable(&mut self, user: &UserName, reason: &str) -> Result<usize, ChatError> {
        let me = self.admin()?;
        let why = if reason.is_empty() { "disabled by an admin" } else { reason };
        let change = Change::SetDisabled { user: user.clone(), reason: Some(why.to_string()) };
        if self.audited(Some(change), &me, "disable", user.as_str(), reason).await? == 0 {
            return Err(ChatError::NoSuchUser(user.clone()));
        }
        Ok(self.close_connections(user, &me, &format!("account disabled: {why}")))
    }

    pub async fn enable(&mut self, user: &UserName) -> Result<(), ChatError> {
        let me = self.admin()?;
        let change = Change::SetDisabled { user: user.clone(), reason: None };
        if self.audited(Some(change), &me, "enable", user.as_str(), "").await? == 0 {
            return Err(ChatError::NoSuchUser(user.clone()));
        }
        Ok(())
    }

    /// Closes every connection of `user` (admins), saying why; returns how many.
    pub async fn kill(&mut self, user: &UserName, reason: &str) -> Result<usize, ChatError> {
        let me = self.admin()?;
        if self.chat.users.online(user).is_none() {
            return Err(ChatError::NoSuchUser(user.clone()));
        }
        self.audited(None, &me, "kill", user.as_str(), reason).await?;
        let why = match reason.is_empty() {
            true => format!("killed by {me}"),
            false => format!("killed by {me}: {reason}"),
        };
        Ok(self.close_connections(user, &me, &why))
    }

    fn close_connections(&self, user: &UserName, by: &UserName, why: &str) -> usize {
        let notice = Notice { from: by.clone(), text: why.to_string() };
        if let Some(cluster) = &self.chat.cluster {
            cluster.publish_close(user, &notice);
        }
        self.chat.users.tell(user, &Event::Close(Arc::new(notice)))
    }

    /// Sets a new password for `user` (admins). Its open connections stay.
    pub async fn reset_password(&mut self, user: &UserName, password: &Password) -> Result<(), ChatError> {
        let me = self.admin()?;
        let hash = self.chat.accounts.hash_password(password).await?;
        let change = Change::SetPassword { user: user.clone(), hash };
        if self.audited(Some(change), &me, "resetpass", user.as_str(), "").await? == 0 {
            return Err(ChatError::NoSuchUser(user.clone()));
        }
        Ok(())
    }

    /// A notice to every logged-in connection (admins); returns how many got it.
    pub async fn announce_to_all(&mut self, text: &str) -> Result<usize, ChatError> {
        let me = self.admin()?;
        self.audited(None, &me, "notice", "*", text).await?;
        let event = Event::Notice(Arc::new(Notice { from: me, text: text.to_string() }));
        if let Some(cluster) = &self.chat.cluster {
            cluster.publish(&event);
        }
        Ok(self.chat.users.tell_everyone(&event))
    }

    /// The latest `limit` audit entries, newest first (admins).
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, ChatError> {
        self.admin()?;
        Ok(self.chat.store().audit(limit.clamp(1, AUDIT_MAX)).await?)
    }

    /// Reloads the configuration as SIGHUP does (admins), and says what it did.
    pub async fn reload(&mut self) -> Result<ReloadReport, ChatError> {
        let me = self.admin()?;
        let unavailable = || ChatError::Unavailable(Unavailable::Reload);
        let requests = self.chat.reload.get().ok_or_else(unavailable)?.clone();
        let (tx, rx) = oneshot::channel();
        requests.send(tx).await.map_err(|_| unavailable())?;
        let outcome = rx.await.map_err(|_| unavailable())?;
        let detail = match &outcome {
            Ok(report) => format!("applied {:?}", report.applied),
            Err(why) => format!("refused: {why}"),
        };
        self.audited(None, &me, "reload", "*", &detail).await?;
        outcome.map_err(|why| ChatError::ReloadRefused(one_line(&why)))
    }

    /// Changes this user's own password, given the old one.
    pub async fn change_password(&mut self, old: &Password, new: &Password) -> Result<(), ChatError> {
        let me = match self.identity() {
            Identity::Anonymous => return Err(ChatError::NotLoggedIn),
            Identity::Guest(_) => return Err(ChatError::GuestRefused(GuestRefusal::Password)),
            Identity::User(name) | Identity::Bot { name, .. } => name.clone(),
        };
        self.chat.accounts.check_password(&me, old, self.peer).await?;
        let hash = self.chat.accounts.hash_password(new).await?;
        self.chat.store().change(vec![Change::SetPassword { user: me.clone(), hash }]).await?;
        tracing::info!(user = %me, "password changed");
        Ok(())
    }
}
