//! The one `apply` of the native protocol: a parsed command is carried out on the connection's
//! `Client` and answered. Each command is one small function.

use chatd_proto::command::{Command, Request, Verb, ALL_VERBS};
use chatd_proto::names::{CommandWord, Password, RoomName, Token, UserName};

use super::reply::Replies;
use super::Native;
use crate::chat::client::{Anchor, Client, Conversation, HistoryQuery, PostOutcome};
use crate::chat::error::ChatError;
use crate::chat::model::format_time;
use crate::chat::HISTORY_PAGE;
use crate::session::{Flow, Protocol};

type NativeClient = Client<<Native as Protocol>::Tag>;

/// Applies one command and writes its replies (after the acknowledgements owed before it).
pub async fn apply(client: &mut NativeClient, request: Request, out: &mut Vec<u8>) -> Flow {
    let Request { label, command } = request;
    let verb = command.verb();
    // A post is pipelined: its acknowledgement comes when it is committed. Anything else answers
    // now, so the acknowledgements owed before it are written first.
    let pipelined = match &command {
        Command::Msg { text, .. } => CommandWord::of_bot_line(text).is_none(),
        Command::Dm { .. } => true,
        _ => false,
    };
    if !pipelined {
        settle_owed(client, out).await;
    }
    let started = std::time::Instant::now();
    let mut r = Replies { out, label: label.as_ref(), verb: verb.as_str() };
    let result = if !client.is_logged_in() && !verb.allowed_anonymous() {
        Err(ChatError::NotLoggedIn)
    } else {
        execute(client, command, label.clone(), &mut r).await
    };
    // Server-side time of each command, for benchmarks (`--log chatd::timing=trace`).
    tracing::trace!(target: "chatd::timing", verb = verb.as_str(), micros = started.elapsed().as_micros() as u64);
    match result {
        Ok(flow) => flow,
        Err(e) => {
            if pipelined {
                // The error must not overtake the acknowledgements owed before it.
                settle_owed(client, r.out).await;
            }
            r.error(&e);
            Flow::Continue
        }
    }
}

/// Writes every owed acknowledgement, in order.
async fn settle_owed(client: &mut NativeClient, out: &mut Vec<u8>) {
    for settled in client.settle_all().await {
        Native::render_settled(settled, out);
    }
}

async fn execute(
    client: &mut NativeClient,
    command: Command,
    label: Option<chatd_proto::names::Label>,
    r: &mut Replies<'_>,
) -> Result<Flow, ChatError> {
    match command {
        Command::Help(topic) => help(topic, r),
        Command::Register { user, password } => register(client, &user, &password, r).await?,
        Command::Login { user, password } => login(client, &user, &password, r).await?,
        Command::Logout => {
            client.logout().await;
            r.ok(&[], Some("logged out"));
        }
        Command::Quit(_) => {
            r.ok(&[], Some("bye"));
            return Ok(Flow::Close);
        }
        Command::Rooms => rooms(client, r)?,
        Command::Join(room) => join(client, &room, r).await?,
        Command::Part(room) => {
            client.part(&room).await?;
            r.ok(&[room.as_str()], Some(&format!("left {room}")));
        }
        Command::Names(room) => names(client, &room, r).await?,
        Command::Msg { room, text } => msg(client, &room, text, label, r).await?,
        Command::History { room, before, limit } => {
            history(client, &Conversation::Room(room.clone()), room.as_str(), before, limit, r).await?
        }
        Command::DirectHistory { with, before, limit } => {
            let shown_as = format!("@{with}");
            history(client, &Conversation::With(with), &shown_as, before, limit, r).await?
        }
        Command::Topic { room, text: None } => {
            let topic = client.topic(&room).await?;
            r.topic(&room, topic.as_ref());
        }
        Command::Topic { room, text: Some(text) } => {
            let topic = client.set_topic(&room, text).await?;
            r.topic(&room, Some(&topic));
        }
        Command::Dm { to, text } => {
            // Acknowledged once durable, like MSG (see `Native::settled`); a guest's direct
            // message is delivered live, not stored, and answered now.
            if let PostOutcome::Delivered { time, connections } = client.direct(&to, text, label).await? {
                settle_owed(client, r.out).await;
                let text = format!("delivered live to {connections} connection(s), not stored (guest)");
                r.ok(&[to.as_str(), "-", &format_time(time)], Some(&text));
            }
        }
        Command::Guest(nick) => {
            let nick = client.guest(&nick).await?;
            let text = format!("you are a guest as {nick}; REGISTER or LOGIN any time to become a member");
            r.ok(&[nick.as_str()], Some(&text));
        }
        Command::Ping(token) => ping(token, r),
        Command::Pong(_) => {}
        Command::Serve(word) => {
            client.serve(&word)?;
            r.ok(&[word.as_str()], Some(&format!("serving /{word}")));
        }
        command => moderate(client, command, r).await?,
    }
    Ok(Flow::Continue)
}

/// The moderation and administration commands (`chat::moderation` checks who may).
async fn moderate(client: &mut NativeClient, command: Command, r: &mut Replies<'_>) -> Result<(), ChatError> {
    match command {
        Command::Passwd { old, new } => {
            client.change_password(&old, &new).await?;
            r.ok(&[], Some("password changed"));
        }
        Command::Op { room, user, on } => {
            client.set_op(&room, &user, on).await?;
            let text = match on {
                true => format!("{user} is an operator of {room}"),
                false => format!("{user} is not an operator of {room}"),
            };
            r.ok(&[room.as_str(), user.as_str()], Some(&text));
        }
        Command::Kick { room, user, reason } => {
            let n = client.kick(&room, &user, reason.as_deref().unwrap_or("")).await?;
            r.ok(&[room.as_str(), user.as_str(), &n.to_string()], Some(&format!("{user} kicked from {room}")));
        }
        Command::Ban { room, user, reason } => {
            client.ban(&room, &user, reason.as_deref().unwrap_or("")).await?;
            r.ok(&[room.as_str(), user.as_str()], Some(&format!("{user} banned from {room}")));
        }
        Command::Unban { room, user } => {
            client.unban(&room, &user).await?;
            r.ok(&[room.as_str(), user.as_str()], Some(&format!("{user} may join {room} again")));
        }
        Command::Bans(room) => {
            let bans = client.bans(&room)?;
            for user in &bans {
                r.line(140, &[room.as_str(), user.as_str()], None);
            }
            r.ok(&[room.as_str(), &bans.len().to_string()], Some("bans listed"));
        }
        Command::Delete { room, id } => {
            client.delete_message(&room, id).await?;
            r.ok(&[room.as_str(), &id.to_string()], Some("message deleted"));
        }
        Command::DelRoom { room, reason } => {
            client.delete_room(&room, reason.as_deref().unwrap_or("")).await?;
            r.ok(&[room.as_str()], Some(&format!("{room} deleted with its history")));
        }
        Command::Disable { user, reason } => {
            let n = client.disable(&user, reason.as_deref().unwrap_or("")).await?;
            r.ok(&[user.as_str(), &n.to_string()], Some(&format!("account disabled, {n} connection(s) closed")));
        }
        Command::Enable(user) => {
            client.enable(&user).await?;
            r.ok(&[user.as_str()], Some("account enabled"));
        }
        Command::ResetPass { user, password } => {
            client.reset_password(&user, &password).await?;
            r.ok(&[user.as_str()], Some("password reset"));
        }
        Command::Announce(text) => {
            let n = client.announce_to_all(&text).await?;
            r.ok(&[&n.to_string()], Some(&format!("sent to {n} connection(s)")));
        }
        Command::Kill { user, reason } => {
            let n = client.kill(&user, reason.as_deref().unwrap_or("")).await?;
            r.ok(&[user.as_str(), &n.to_string()], Some(&format!("{n} connection(s) closed")));
        }
        Command::Audit { limit } => {
            let entries = client.audit_log(limit.unwrap_or(20)).await?;
            for e in &entries {
                let time = format_time(e.time);
                let mut fields = vec![time.as_str(), e.actor.as_str(), e.action.as_str()];
                fields.extend(e.target.split(' ').filter(|t| !t.is_empty()));
                r.line(150, &fields, (!e.detail.is_empty()).then_some(e.detail.as_str()));
            }
            r.ok(&[&entries.len().to_string()], Some("audit entries listed, newest first"));
        }
        Command::Reload => {
            let report = client.reload().await?;
            for key in &report.applied {
                r.line(160, &["applied", key], None);
            }
            for key in &report.need_restart {
                r.line(160, &["restart", key], None);
            }
            let (applied, restart) = (report.applied.len().to_string(), report.need_restart.len().to_string());
            let text = match report.new_certificate {
                true => "configuration reloaded; new handshakes get the new certificate",
                false => "configuration reloaded",
            };
            r.ok(&[&applied, &restart], Some(text));
        }
        other => unreachable!("not a moderation command: {other:?}"),
    }
    Ok(())
}

fn help(topic: Option<Verb>, r: &mut Replies<'_>) {
    let verbs: Vec<Verb> = topic.map_or(ALL_VERBS.to_vec(), |v| vec![v]);
    for v in verbs {
        r.line(100, &[], Some(&format!("{:<44} {}", v.usage(), v.summary())));
    }
    r.ok(&[], Some("end of help; the full protocol is in PROTOCOL.md"));
}

async fn register(
    client: &mut NativeClient,
    user: &UserName,
    password: &Password,
    r: &mut Replies<'_>,
) -> Result<(), ChatError> {
    let user = client.register(user, password).await?;
    r.ok(&[user.as_str()], Some(&format!("account created, logged in as {user}")));
    Ok(())
}

async fn login(
    client: &mut NativeClient,
    user: &UserName,
    password: &Password,
    r: &mut Replies<'_>,
) -> Result<(), ChatError> {
    let user = client.login(user, password).await?;
    r.ok(&[user.as_str()], Some(&format!("logged in as {user}")));
    Ok(())
}

fn rooms(client: &NativeClient, r: &mut Replies<'_>) -> Result<(), ChatError> {
    let rooms = client.rooms()?;
    for (name, users) in &rooms {
        r.line(110, &[name.as_str(), &users.to_string()], None);
    }
    r.ok(&[&rooms.len().to_string()], Some("rooms listed"));
    Ok(())
}

async fn join(client: &mut NativeClient, room: &RoomName, r: &mut Replies<'_>) -> Result<(), ChatError> {
    let joined = client.join(room).await?;
    for posted in &joined.history {
        r.message(room.as_str(), &posted.msg);
    }
    r.ok(&[room.as_str(), &joined.users.to_string()], Some(&format!("joined {room}")));
    Ok(())
}

async fn names(client: &NativeClient, room: &RoomName, r: &mut Replies<'_>) -> Result<(), ChatError> {
    let names = client.names(room).await?;
    let ops = client.room_ops(room);
    for name in &names {
        let shown = super::reply::shown_name(name, client.is_guest_name(name));
        match ops.contains(name) {
            true => r.line(120, &[room.as_str(), &shown, "op"], None),
            false => r.line(120, &[room.as_str(), &shown], None),
        }
    }
    r.ok(&[room.as_str(), &names.len().to_string()], Some("users listed"));
    Ok(())
}

/// MSG: a bot command line is relayed and answered now; anything else is acknowledged once
/// durable (see `Native::settled`).
async fn msg(
    client: &mut NativeClient,
    room: &RoomName,
    text: String,
    label: Option<chatd_proto::names::Label>,
    r: &mut Replies<'_>,
) -> Result<(), ChatError> {
    match client.post(room, text, label).await? {
        PostOutcome::Accepted | PostOutcome::Delivered { .. } => {}
        PostOutcome::Relayed { time, bots } => {
            r.ok(&[room.as_str(), "-", &format_time(time)], Some(&format!("relayed to {bots} bot(s)")));
        }
    }
    Ok(())
}

/// HISTORY of a room (from its cache when it can) or of the direct messages with a user.
async fn history(
    client: &NativeClient,
    conversation: &Conversation,
    shown_as: &str,
    before: Option<u64>,
    limit: Option<usize>,
    r: &mut Replies<'_>,
) -> Result<(), ChatError> {
    let limit = limit.unwrap_or(HISTORY_PAGE);
    let messages = match (conversation, before) {
        (Conversation::Room(room), _) => client.history(room, before, limit).await?,
        (Conversation::With(_), None) => {
            client.history_query(conversation, HistoryQuery::Latest { after: None, limit }).await?
        }
        (Conversation::With(_), Some(id)) => {
            client.history_query(conversation, HistoryQuery::Before { anchor: Anchor::Id(id), limit }).await?
        }
    };
    for m in &messages {
        r.message(shown_as, m);
    }
    let n = messages.len().to_string();
    r.ok(&[shown_as, &n], Some(&format!("{n} messages")));
    Ok(())
}

fn ping(token: Option<Token>, r: &mut Replies<'_>) {
    match token {
        Some(t) => r.ok(&[t.as_str()], None),
        None => r.ok(&[], None),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_parsers_history_limit_is_the_cores_page() {
        assert_eq!(chatd_proto::parse::MAX_HISTORY_LIMIT, crate::chat::HISTORY_PAGE);
    }
}
