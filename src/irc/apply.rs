//! The one `apply` of the IRC front end: a line is checked (length, UTF-8), parsed, allowed or
//! refused (not logged in, not registered), carried out on the connection's `Client` and answered.
//! Registration and account commands are in `register`; each other command is one small function
//! here.

use bytes::Bytes;

use super::caps;
use super::register;
use super::reply::{self, Reply, Stamp};
use super::wire::Message;
use super::wire::ParseError;
use super::{Irc, IrcClient, PostTag};
use crate::chat::client::PostOutcome;
use crate::chat::client::{Anchor, Conversation, HistoryQuery};
use crate::chat::error::ChatError;
use crate::chat::model::Message as ChatMessage;
use crate::chat::model::{format_time, Millis};
use crate::chat::names::{CommandWord, RoomName, UserName};
use crate::chat::HISTORY_PAGE;
use crate::session::Flow;

/// The longest `label` a client may send (IRCv3 labeled-response).
const MAX_LABEL: usize = 64;

/// Most bytes of nicks in one 353 line, leaving room for the rest of the line.
const NAMES_PER_LINE: usize = 400;

/// Commands a connection may send before it logs in.
fn allowed_anonymous(command: &str, m: &Message) -> bool {
    match command {
        "CAP" | "NICK" | "USER" | "PASS" | "AUTHENTICATE" | "REGISTER" | "PING" | "PONG" | "QUIT" | "NICKSERV"
        | "NS" => true,
        "PRIVMSG" | "NOTICE" => m.params.first().is_some_and(|t| t.eq_ignore_ascii_case("NickServ")),
        _ => false,
    }
}

/// Applies one line and writes its replies (after the acknowledgements owed before it).
pub async fn apply(irc: &mut Irc, client: &mut IrcClient, line: Bytes, out: &mut Vec<u8>) -> Flow {
    let m = match Message::parse_bytes(&line) {
        Ok(m) => m,
        Err(e) => {
            settle_owed(irc, client, out).await;
            let mut r = irc.reply(None);
            match e {
                ParseError::TagsTooLong(_) | ParseError::InputTooLong(_) => {
                    r.numeric("417", &["Input line was too long"])
                }
                ParseError::InvalidUtf8 => r.fail("*", "INVALID_UTF8", &[], "Lines must be UTF-8 (UTF8ONLY)"),
                ParseError::ForbiddenChar => r.fail("*", "INVALID_TEXT", &[], "Lines must not contain NUL or CR"),
                _ => {}
            }
            irc.finish(r, out);
            return Flow::Continue;
        }
    };
    let label = match irc.state.caps.has(caps::LABELED_RESPONSE) {
        true => m.tags.iter().find(|(k, _)| k == "label").and_then(|(_, v)| v.clone()),
        false => None,
    };
    let command = m.command.to_ascii_uppercase();
    // A post is pipelined: its echo or acknowledgement comes when it is committed. Anything else
    // answers now, after the acknowledgements owed before it.
    let pipelined = matches!(command.as_str(), "PRIVMSG" | "NOTICE")
        && m.params.first().is_some_and(|t| !t.eq_ignore_ascii_case("NickServ"))
        && m.params.get(1).is_some_and(|text| CommandWord::of_bot_line(text).is_none());
    if !pipelined {
        settle_owed(irc, client, out).await;
    }
    let mut r = irc.reply(label.filter(|l| l.len() <= MAX_LABEL));
    let flow = if !client.is_logged_in() && !allowed_anonymous(&command, &m) {
        r.numeric("451", &[&reply::not_logged_in_text()]);
        Flow::Continue
    } else if !irc.state.registered && !allowed_anonymous(&command, &m) {
        r.numeric("451", &["You have not registered (send NICK, USER and CAP END)"]);
        Flow::Continue
    } else {
        execute(irc, client, &command, &m, &mut r).await
    };
    let flow = match flow {
        Flow::Continue if !irc.state.registered => register::maybe_welcome(irc, client, &mut r).await,
        flow => flow,
    };
    if pipelined && !r.is_empty() {
        // An error must not overtake the acknowledgements owed before it.
        settle_owed(irc, client, out).await;
    }
    irc.finish(r, out);
    flow
}

/// Writes every owed echo or acknowledgement, in order.
async fn settle_owed(irc: &mut Irc, client: &mut IrcClient, out: &mut Vec<u8>) {
    for settled in client.settle_all().await {
        irc.render_settled(settled, out);
    }
}

async fn execute(irc: &mut Irc, client: &mut IrcClient, command: &str, m: &Message, r: &mut Reply) -> Flow {
    match command {
        "CAP" => register::cap(irc, m, r),
        "NICK" => register::nick(irc, client, m, r).await,
        "USER" => register::user(irc, m, r),
        "PASS" => register::pass(irc, m, r),
        "AUTHENTICATE" => register::authenticate(irc, client, m, r).await,
        "REGISTER" => register::register(irc, client, m, r).await,
        "NICKSERV" | "NS" => register::nickserv(irc, client, &m.params.join(" "), r).await,
        "PING" => match m.params.first() {
            Some(token) => {
                let server = irc.settings.server_name.clone();
                r.server("PONG", &[&server, token]);
            }
            None => r.numeric("461", &["PING", "Not enough parameters"]),
        },
        "PONG" => {}
        "QUIT" => {
            let why = m.params.first().map_or("Client quit".to_string(), |q| format!("Quit: {q}"));
            r.raw(None, "ERROR", &[&format!("Closing link: {why}")]);
            return Flow::Close;
        }
        "PRIVMSG" => privmsg(irc, client, m, "PRIVMSG", r).await,
        "NOTICE" => privmsg(irc, client, m, "NOTICE", r).await,
        "JOIN" => join(irc, client, m, r).await,
        "PART" => part(irc, client, m, r).await,
        "NAMES" => names_command(irc, client, m, r).await,
        "LIST" => list(client, m, r),
        "WHO" => who(irc, client, m, r).await,
        "WHOIS" => whois(irc, client, m, r).await,
        "MODE" => mode(irc, client, m, r).await,
        "KICK" => kick(client, m, r).await,
        "REDACT" => redact(client, m, r).await,
        "KILL" => kill(client, m, r).await,
        "REHASH" => rehash(client, r).await,
        "AWAY" => away(irc, client, m, r),
        "TOPIC" => topic(irc, client, m, r).await,
        "CHATHISTORY" => chathistory(irc, client, m, r).await,
        "USERHOST" => userhost(irc, m, r),
        "LUSERS" => register::lusers(irc, r),
        "MOTD" => register::motd(irc, r),
        "VERSION" => {
            let server = irc.settings.server_name.clone();
            r.numeric("351", &[concat!("chatd-", env!("CARGO_PKG_VERSION")), &server, "chatd IRC front end"]);
            for tokens in register::isupport(irc).chunks(12) {
                let mut params: Vec<&str> = tokens.iter().map(String::as_str).collect();
                params.push("are supported by this server");
                r.numeric("005", &params);
            }
        }
        _ => r.numeric("421", &[&m.command, "Unknown command"]),
    }
    Flow::Continue
}

/// `#room` → the room, if the name is one.
fn channel(name: &str) -> Option<RoomName> {
    let rest = name.strip_prefix('#')?;
    if rest.starts_with('#') {
        return None;
    }
    RoomName::parse(rest)
}

fn chan(room: &RoomName) -> String {
    format!("#{room}")
}

/// PRIVMSG/NOTICE: to a channel a post (or a relayed bot command line), to NickServ an account
/// command. The post's echo or acknowledgement comes when it is committed (`Irc::render_settled`).
async fn privmsg(irc: &mut Irc, client: &mut IrcClient, m: &Message, command: &'static str, r: &mut Reply) {
    let Some(target) = m.params.first().filter(|t| !t.is_empty()) else {
        r.numeric("411", &[&format!("No recipient given ({command})")]);
        return;
    };
    let Some(text) = m.params.get(1).filter(|t| !t.is_empty()) else {
        r.numeric("412", &["No text to send"]);
        return;
    };
    if target.contains(',') {
        r.numeric("407", &[target, "Too many recipients (one target per message)"]);
        return;
    }
    if target.eq_ignore_ascii_case("NickServ") {
        register::nickserv(irc, client, text, r).await;
        return;
    }
    if !target.starts_with('#') {
        let Some(to) = UserName::parse(target) else {
            r.numeric("401", &[target, "No such nick/channel"]);
            return;
        };
        let label = r.take_label();
        let tag = PostTag { label: label.clone(), command };
        match client.direct(&to, text.clone(), tag).await {
            // A guest's direct message is delivered live, not stored: echoed now.
            Ok(PostOutcome::Delivered { time, .. }) => {
                r.set_label(label);
                if irc.state.caps.has(caps::ECHO_MESSAGE) {
                    let (sender, guest) = register::sender(client).expect("logged in");
                    let room = RoomName::direct(&sender, &to);
                    let msg = ChatMessage { id: 0, room, time, sender, text: text.clone(), guest };
                    r.push(reply::message_line(&irc.state, &irc.settings, &msg, command, target, Stamp::Relayed));
                }
            }
            Ok(_) => {}
            Err(e) => {
                r.set_label(label);
                r.error(&e, command, target);
            }
        }
        return;
    }
    let Some(room) = channel(target) else {
        r.numeric("403", &[target, "No such channel"]);
        return;
    };
    if text.len() > irc.settings.max_message_bytes() {
        r.numeric("417", &["Input line was too long"]);
        return;
    }
    let bot_line = CommandWord::of_bot_line(text).is_some();
    let label = if bot_line { None } else { r.take_label() };
    let tag = PostTag { label: label.clone(), command };
    match client.post(&room, text.clone(), tag).await {
        Ok(PostOutcome::Accepted | PostOutcome::Delivered { .. }) => {}
        Ok(PostOutcome::Relayed { time, .. }) => {
            if irc.state.caps.has(caps::ECHO_MESSAGE) {
                let (sender, guest) = register::sender(client).expect("logged in");
                let msg = ChatMessage { id: 0, room: room.clone(), time, sender, text: text.clone(), guest };
                let target = chan(&room);
                r.push(reply::message_line(&irc.state, &irc.settings, &msg, command, &target, Stamp::Relayed));
            }
        }
        Err(e) => {
            r.set_label(label);
            r.error(&e, command, &chan(&room));
        }
    }
}

/// JOIN #a,#b (keys ignored; `JOIN 0` leaves every channel).
async fn join(irc: &mut Irc, client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let Some(list) = m.params.first().filter(|l| !l.is_empty()) else {
        r.numeric("461", &["JOIN", "Not enough parameters"]);
        return;
    };
    if list == "0" {
        for room in irc.state.joined.clone() {
            leave(irc, client, &room, None, r).await;
        }
        return;
    }
    for name in list.split(',').filter(|n| !n.is_empty()) {
        join_one(irc, client, name, r).await;
    }
}

async fn join_one(irc: &mut Irc, client: &mut IrcClient, name: &str, r: &mut Reply) {
    let Some(room) = channel(name) else {
        r.numeric("403", &[name, "No such channel (names are # and 1-32 of a-z 0-9 _ -)"]);
        return;
    };
    if irc.state.joined.contains(&room) {
        return;
    }
    let joined = match client.join(&room).await {
        Ok(joined) => joined,
        Err(e) => return r.error(&e, "JOIN", &chan(&room)),
    };
    irc.state.joined.push(room.clone());
    let nick = irc.state.client().to_string();
    let target = chan(&room);
    let guest = client.is_guest();
    let mut params = vec![target.clone()];
    if irc.state.caps.has(caps::EXTENDED_JOIN) {
        params.push(if guest { "*".to_string() } else { nick.clone() });
        params.push(irc.state.user.as_ref().map_or(nick.clone(), |(_, real)| real.clone()));
    }
    r.push(Message {
        tags: reply::join_tags(irc.state.caps, &nick, guest),
        source: Some(reply::user_source(&nick)),
        command: "JOIN".into(),
        params,
    });
    if let Some(topic) = &joined.topic {
        topic_lines(&target, topic, r);
    }
    names(client, &room, r).await;
    if !irc.state.caps.has(caps::CHATHISTORY) && !joined.history.is_empty() {
        let batch =
            (irc.state.caps.has(caps::BATCH) && irc.state.caps.has(caps::SERVER_TIME)).then(|| irc.state.batch_id());
        if let Some(id) = &batch {
            r.server("BATCH", &[&format!("+{id}"), "chathistory", &target]);
        }
        for posted in &joined.history {
            let mut line =
                reply::message_line(&irc.state, &irc.settings, &posted.msg, "PRIVMSG", &target, Stamp::Stored);
            if let Some(id) = &batch {
                line.tags.insert(0, ("batch".into(), Some(id.clone())));
            }
            r.push(line);
        }
        if let Some(id) = &batch {
            r.server("BATCH", &[&format!("-{id}")]);
        }
    }
}

/// 353s and 366 for a channel joined; only 366 for one not joined.
async fn names(client: &IrcClient, room: &RoomName, r: &mut Reply) {
    let target = chan(room);
    if let Ok(users) = client.names(room).await {
        let ops = client.room_ops(room);
        let mut line = String::new();
        for user in users {
            let user = match ops.contains(&user) {
                true => format!("@{user}"),
                false => user.to_string(),
            };
            if !line.is_empty() && line.len() + user.len() >= NAMES_PER_LINE {
                r.numeric("353", &["=", &target, &line]);
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&user);
        }
        if !line.is_empty() {
            r.numeric("353", &["=", &target, &line]);
        }
    }
    r.numeric("366", &[&target, "End of /NAMES list"]);
}

async fn names_command(irc: &Irc, client: &IrcClient, m: &Message, r: &mut Reply) {
    let Some(name) = m.params.first().and_then(|l| l.split(',').next()) else {
        r.numeric("366", &["*", "End of /NAMES list"]);
        return;
    };
    match channel(name) {
        Some(room) if irc.state.joined.contains(&room) => names(client, &room, r).await,
        _ => r.numeric("366", &[name, "End of /NAMES list"]),
    }
}

/// PART #a,#b [reason].
async fn part(irc: &mut Irc, client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let Some(list) = m.params.first().filter(|l| !l.is_empty()) else {
        r.numeric("461", &["PART", "Not enough parameters"]);
        return;
    };
    let reason = m.params.get(1).cloned();
    for name in list.split(',').filter(|n| !n.is_empty()) {
        match channel(name) {
            None => r.numeric("403", &[name, "No such channel"]),
            Some(room) if !irc.state.joined.contains(&room) => r.numeric("442", &[name, "You're not on that channel"]),
            Some(room) => leave(irc, client, &room, reason.as_deref(), r).await,
        }
    }
}

async fn leave(irc: &mut Irc, client: &mut IrcClient, room: &RoomName, reason: Option<&str>, r: &mut Reply) {
    if let Err(e) = client.part(room).await {
        return r.error(&e, "PART", &chan(room));
    }
    irc.state.joined.retain(|j| j != room);
    let nick = irc.state.client().to_string();
    let target = chan(room);
    let mut params = vec![target.as_str()];
    params.extend(reason);
    r.raw(Some(&reply::user_source(&nick)), "PART", &params);
}

/// LIST [#a,#b]: 322 per channel, 323.
fn list(client: &IrcClient, m: &Message, r: &mut Reply) {
    let wanted: Option<Vec<RoomName>> =
        m.params.first().filter(|p| p.starts_with('#')).map(|p| p.split(',').filter_map(channel).collect());
    match client.rooms() {
        Ok(rooms) => {
            for (room, users) in rooms {
                if wanted.as_ref().is_some_and(|w| !w.contains(&room)) {
                    continue;
                }
                r.numeric("322", &[&chan(&room), &users.to_string(), ""]);
            }
        }
        Err(e) => return r.error(&e, "LIST", "*"),
    }
    r.numeric("323", &["End of /LIST"]);
}

/// The WHO flags of a user: here or gone, `@` for a channel's operator, and `B` for bots.
fn who_flags(irc: &Irc, nick: &str, op: bool) -> String {
    let away = match UserName::parse(nick) {
        _ if nick == irc.state.client() => irc.state.away.is_some(),
        Some(user) => irc.settings.chat.users.online(&user).is_some_and(|o| o.away.is_some()),
        None => false,
    };
    let mut flags = if away { "G".to_string() } else { "H".to_string() };
    if op {
        flags.push('@');
    }
    if irc.settings.is_bot(nick) {
        flags.push('B');
    }
    flags
}

/// WHO #channel (its members) or WHO nick (yourself): 352s and 315.
async fn who(irc: &Irc, client: &IrcClient, m: &Message, r: &mut Reply) {
    let Some(mask) = m.params.first().cloned() else {
        r.numeric("315", &["*", "End of WHO list"]);
        return;
    };
    let server = irc.settings.server_name.clone();
    let mut line = |channel: &str, nick: &str, op: bool| {
        let flags = who_flags(irc, nick, op);
        r.numeric("352", &[channel, nick, reply::USER_HOST, &server, nick, &flags, &format!("0 {nick}")]);
    };
    match channel(&mask) {
        Some(room) if irc.state.joined.contains(&room) => {
            if let Ok(users) = client.names(&room).await {
                let ops = client.room_ops(&room);
                for user in users {
                    line(&mask, user.as_str(), ops.contains(&user));
                }
            }
        }
        Some(_) => {}
        None => {
            if let Some(user) = UserName::parse(&mask) {
                if user.as_str() == irc.state.client() || irc.settings.chat.users.online(&user).is_some() {
                    line("*", user.as_str(), false);
                }
            }
        }
    }
    r.numeric("315", &[&mask, "End of WHO list"]);
}

/// WHOIS [server] nick: 311, 319 (the channels you share), 312, 301, 335, 330, 318; 401 when
/// there is no such account.
async fn whois(irc: &Irc, client: &IrcClient, m: &Message, r: &mut Reply) {
    let Some(nick) = m.params.last().filter(|n| !n.is_empty()).cloned() else {
        r.numeric("431", &["No nickname given"]);
        return;
    };
    let Some(user) = UserName::parse(&nick) else {
        r.numeric("401", &[&nick, "No such nick/channel"]);
        r.numeric("318", &[&nick, "End of /WHOIS list"]);
        return;
    };
    let info = match client.whois(&user).await {
        Ok(info) => info,
        Err(crate::chat::error::ChatError::NoSuchUser(_)) => {
            r.numeric("401", &[&nick, "No such nick/channel"]);
            r.numeric("318", &[&nick, "End of /WHOIS list"]);
            return;
        }
        Err(e) => return r.error(&e, "WHOIS", &nick),
    };
    let who = info.user.as_str().to_string();
    let me = who == irc.state.client();
    let realname = match (&irc.state.user, me) {
        (Some((_, real)), true) => real.clone(),
        _ => who.clone(),
    };
    r.numeric("311", &[&who, &who, reply::USER_HOST, "*", &realname]);
    let channels: Vec<String> = match me {
        true => irc.state.joined.iter().map(chan).collect(),
        false => info.rooms.iter().map(chan).collect(),
    };
    if !channels.is_empty() {
        r.numeric("319", &[&who, &channels.join(" ")]);
    }
    let server = irc.settings.server_name.clone();
    r.numeric("312", &[&who, &server, "chatd"]);
    let away = match me {
        true => irc.state.away.clone(),
        false => info.online.as_ref().and_then(|o| o.away.as_deref().map(str::to_string)),
    };
    if let Some(away) = away {
        r.numeric("301", &[&who, &away]);
    }
    if info.is_bot {
        r.numeric("335", &[&who, "is a bot"]);
    }
    let guest = match me {
        true => client.is_guest(),
        false => info.online.as_ref().is_some_and(|o| o.guest),
    };
    if guest {
        r.numeric("320", &[&who, "is a guest (not logged in to an account)"]);
    } else if me || info.online.is_some() {
        r.numeric("330", &[&who, &who, "is logged in as"]);
    }
    r.numeric("318", &[&who, "End of /WHOIS list"]);
}

/// MODE: a channel's modes (`+n`: only members post; `+t` once it has operators: only they set
/// the topic), its ban list (`+b`, 367/368), and for operators `+o/-o <nick>` and
/// `+b/-b <nick>`; your own user modes.
async fn mode(irc: &mut Irc, client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let Some(target) = m.params.first().cloned() else {
        r.numeric("461", &["MODE", "Not enough parameters"]);
        return;
    };
    let change = m.params.get(1).cloned();
    if target.starts_with('#') {
        let room = channel(&target).filter(|room| {
            irc.state.joined.contains(room) || irc.settings.chat.rooms.list().iter().any(|(r, _)| r == room)
        });
        let Some(room) = room else {
            return r.numeric("403", &[&target, "No such channel"]);
        };
        let Some(change) = change else {
            let modes = if client.room_ops(&room).is_empty() { "+n" } else { "+nt" };
            return r.numeric("324", &[&target, modes]);
        };
        return channel_mode(client, &room, &target, &change, &m.params[2..], r).await;
    }
    if !target.eq_ignore_ascii_case(irc.state.client()) {
        r.numeric("502", &["Cant change mode for other users"]);
        return;
    }
    let Some(change) = change else {
        let mut modes = "+".to_string();
        if irc.state.invisible {
            modes.push('i');
        }
        if client.is_bot() {
            modes.push('B');
        }
        r.numeric("221", &[&modes]);
        return;
    };
    let mut on = true;
    let mut applied = String::new();
    let mut unknown = false;
    for c in change.chars() {
        match c {
            '+' => on = true,
            '-' => on = false,
            'i' if irc.state.invisible != on => {
                irc.state.invisible = on;
                applied.push(if on { '+' } else { '-' });
                applied.push('i');
            }
            'i' => {}
            _ => unknown = true,
        }
    }
    if unknown {
        r.numeric("501", &["Unknown MODE flag"]);
    }
    if !applied.is_empty() {
        let me = irc.state.client().to_string();
        r.raw(Some(&me), "MODE", &[&me, &applied]);
    }
}

/// A channel mode change: each of `+o -o +b -b` takes a nick from `args`; `b` without one lists
/// the bans; `e` and `I` are empty lists.
async fn channel_mode(
    client: &mut IrcClient,
    room: &RoomName,
    target: &str,
    change: &str,
    args: &[String],
    r: &mut Reply,
) {
    let mut on = true;
    let mut args = args.iter();
    for c in change.chars() {
        match c {
            '+' => on = true,
            '-' => on = false,
            'o' | 'b' => {
                let Some(arg) = args.next() else {
                    if c == 'b' {
                        ban_list(client, room, target, r);
                    } else {
                        r.numeric("461", &["MODE", "Not enough parameters"]);
                    }
                    continue;
                };
                // A ban mask names the account before its `!` (chatd bans accounts, not hosts).
                let nick = arg.split('!').next().unwrap_or_default();
                let Some(user) = UserName::parse(nick) else {
                    r.numeric("401", &[arg, "No such nick/channel"]);
                    continue;
                };
                let result = match (c, on) {
                    ('o', on) => client.set_op(room, &user, on).await,
                    (_, true) => client.ban(room, &user, "").await,
                    (_, false) => client.unban(room, &user).await,
                };
                match result {
                    Ok(()) => {}
                    Err(ChatError::NoSuchUser(_)) => r.numeric("401", &[user.as_str(), "No such nick/channel"]),
                    Err(e) => r.error(&e, "MODE", target),
                }
            }
            'e' => r.numeric("349", &[target, "End of channel exception list"]),
            'I' => r.numeric("347", &[target, "End of channel invite list"]),
            'n' | 't' => {} // fixed: +n always, +t while the channel has operators
            other => r.numeric("472", &[&other.to_string(), "is unknown mode char to me"]),
        }
    }
}

/// 367 per ban, 368.
fn ban_list(client: &IrcClient, room: &RoomName, target: &str, r: &mut Reply) {
    if let Ok(bans) = client.bans(room) {
        for user in bans {
            r.numeric("367", &[target, &reply::ban_mask(user.as_str())]);
        }
    }
    r.numeric("368", &[target, "End of channel ban list"]);
}

/// KICK #channel nick[,nick] [reason]: operators and admins.
async fn kick(client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let (Some(target), Some(nicks)) = (m.params.first(), m.params.get(1)) else {
        return r.numeric("461", &["KICK", "Not enough parameters"]);
    };
    let Some(room) = channel(target) else {
        return r.numeric("403", &[target, "No such channel"]);
    };
    let reason = m.params.get(2).map_or("", String::as_str);
    for nick in nicks.split(',').filter(|n| !n.is_empty()) {
        let Some(user) = UserName::parse(nick) else {
            r.numeric("401", &[nick, "No such nick/channel"]);
            continue;
        };
        // The members (this connection too, when on the channel) see the KICK.
        if let Err(e) = client.kick(&room, &user, reason).await {
            r.error(&e, "KICK", target);
        }
    }
}

/// REDACT #channel msgid [reason] (IRCv3 draft/message-redaction): operators and admins delete
/// a message; the members with the capability get the REDACT.
async fn redact(client: &mut IrcClient, m: &Message, r: &mut Reply) {
    const C: &str = "REDACT";
    let (Some(target), Some(msgid)) = (m.params.first(), m.params.get(1)) else {
        return r.fail(C, "NEED_MORE_PARAMS", &[], "Missing parameters");
    };
    let Some(room) = channel(target) else {
        return r.fail(C, "INVALID_TARGET", &[target], &format!("You cannot delete messages from {target}"));
    };
    let Ok(id) = msgid.parse::<u64>() else {
        return r.fail(C, "UNKNOWN_MSGID", &[target, msgid], "This message does not exist");
    };
    match client.delete_message(&room, id).await {
        Ok(()) => {
            let me = r.nick.clone();
            let mut params = vec![target.clone(), msgid.clone()];
            params.extend(m.params.get(2).cloned());
            r.push(Message::new(C, params).with_source(reply::user_source(&me)));
        }
        Err(ChatError::NotOperator(_)) => {
            r.fail(C, "REDACT_FORBIDDEN", &[target, msgid], "You are not authorised to delete this message")
        }
        Err(e) => r.error(&e, C, target),
    }
}

/// KILL nick [reason]: admins close every connection of a user.
async fn kill(client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let Some(nick) = m.params.first() else {
        return r.numeric("461", &["KILL", "Not enough parameters"]);
    };
    let Some(user) = UserName::parse(nick) else {
        return r.numeric("401", &[nick, "No such nick/channel"]);
    };
    let reason = m.params.get(1).map_or("", String::as_str);
    match client.kill(&user, reason).await {
        Ok(n) => r.notice(&format!("Killed {user} ({n} connection(s) closed)")),
        Err(e) => r.error(&e, "KILL", nick),
    }
}

/// REHASH: admins reload chatd.toml as SIGHUP does; 382, then what changed.
async fn rehash(client: &mut IrcClient, r: &mut Reply) {
    match client.reload().await {
        Ok(report) => {
            r.numeric("382", &["chatd.toml", "Rehashing"]);
            let list = |keys: &[String]| if keys.is_empty() { "none".to_string() } else { keys.join(", ") };
            r.notice(&format!("Configuration reloaded; applied: {}", list(&report.applied)));
            if !report.need_restart.is_empty() {
                r.notice(&format!("Changed, but needs a restart: {}", list(&report.need_restart)));
            }
        }
        Err(e) => r.error(&e, "REHASH", "*"),
    }
}

/// AWAY [message]: 306 when set, 305 when cleared.
fn away(irc: &mut Irc, client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let text = m.params.first().filter(|t| !t.is_empty()).cloned();
    client.set_away(text.clone());
    match text {
        Some(text) => {
            irc.state.away = Some(text);
            r.numeric("306", &["You have been marked as being away"]);
        }
        None => {
            irc.state.away = None;
            r.numeric("305", &["You are no longer marked as being away"]);
        }
    }
}

/// 332 and 333: a channel's topic, who set it and when.
fn topic_lines(target: &str, topic: &crate::chat::model::Topic, r: &mut Reply) {
    r.numeric("332", &[target, &topic.text]);
    let secs = (topic.time / 1000).to_string();
    r.numeric("333", &[target, topic.set_by.as_str(), &secs]);
}

/// TOPIC #channel [text]: shows the topic (331 or 332/333) or sets it (members may).
async fn topic(irc: &Irc, client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let Some(target) = m.params.first().cloned() else {
        r.numeric("461", &["TOPIC", "Not enough parameters"]);
        return;
    };
    let Some(room) = channel(&target) else {
        return r.numeric("403", &[&target, "No such channel"]);
    };
    if !irc.state.joined.contains(&room) {
        return r.numeric("442", &[&target, "You're not on that channel"]);
    }
    match m.params.get(1) {
        Some(text) => match client.set_topic(&room, text.clone()).await {
            Ok(topic) => {
                let me = irc.state.client().to_string();
                let tags = reply::message_tags(irc.state.caps, &irc.settings, topic.time, None, &me, false);
                r.push(Message {
                    tags,
                    source: Some(reply::user_source(&me)),
                    command: "TOPIC".into(),
                    params: vec![target.clone(), topic.text],
                });
            }
            Err(e) => r.error(&e, "TOPIC", &target),
        },
        None => match client.topic(&room).await {
            Ok(Some(topic)) => topic_lines(&target, &topic, r),
            Ok(None) => r.numeric("331", &[&target, "No topic is set"]),
            Err(e) => r.error(&e, "TOPIC", &target),
        },
    }
}

/// A CHATHISTORY message reference: `msgid=<id>` or `timestamp=<RFC 3339>`.
fn anchor(reference: &str) -> Option<Anchor> {
    if let Some(id) = reference.strip_prefix("msgid=") {
        return id.parse().ok().map(Anchor::Id);
    }
    let time = reference.strip_prefix("timestamp=")?;
    chrono::DateTime::parse_from_rfc3339(time).ok().map(|t| Anchor::Time(t.timestamp_millis() as Millis))
}

/// CHATHISTORY LATEST/BEFORE/AFTER/AROUND/BETWEEN <target> ... <limit>, and TARGETS
/// (IRCv3 draft/chathistory): the messages in a `chathistory` batch, oldest first.
async fn chathistory(irc: &mut Irc, client: &IrcClient, m: &Message, r: &mut Reply) {
    const C: &str = "CHATHISTORY";
    let Some(sub) = m.params.first().map(|s| s.to_ascii_uppercase()) else {
        return r.fail(C, "NEED_MORE_PARAMS", &["*"], "Missing parameters");
    };
    let needed = match sub.as_str() {
        "TARGETS" => 4,
        "LATEST" | "BEFORE" | "AFTER" | "AROUND" => 4,
        "BETWEEN" => 5,
        _ => return r.fail(C, "UNKNOWN_COMMAND", &[&m.params[0]], "Unknown command"),
    };
    if m.params.len() < needed {
        return r.fail(C, "NEED_MORE_PARAMS", &[&sub], "Missing parameters");
    }
    let limit = match m.params[needed - 1].parse::<usize>() {
        Ok(n) if n > 0 => n.min(HISTORY_PAGE),
        _ => return r.fail(C, "INVALID_PARAMS", &[&sub, &m.params[needed - 1]], "Invalid limit"),
    };
    if sub == "TARGETS" {
        let (Some(from), Some(to)) = (anchor(&m.params[1]), anchor(&m.params[2])) else {
            return r.fail(C, "INVALID_PARAMS", &[&sub], "TARGETS takes two timestamp= references");
        };
        let targets = match client.targets(from, to, limit).await {
            Ok(t) => t,
            Err(e) => return r.error(&e, C, "*"),
        };
        let batch = irc.state.caps.has(caps::BATCH).then(|| irc.state.batch_id());
        if let Some(id) = &batch {
            r.server("BATCH", &[&format!("+{id}"), "draft/chathistory-targets"]);
        }
        for (conversation, time) in targets {
            let name = match conversation {
                Conversation::Room(room) => chan(&room),
                Conversation::With(user) => user.as_str().to_string(),
            };
            let mut line = Message::new("CHATHISTORY", ["TARGETS".to_string(), name, format_time(time)])
                .with_source(irc.settings.server_name.clone());
            if let Some(id) = &batch {
                line = line.with_tag("batch", Some(id));
            }
            r.push(line);
        }
        if let Some(id) = &batch {
            r.server("BATCH", &[&format!("-{id}")]);
        }
        return;
    }
    let target = m.params[1].clone();
    let conversation = match channel(&target) {
        Some(room) if irc.state.joined.contains(&room) => Conversation::Room(room),
        Some(_) => {
            return r.fail(C, "INVALID_TARGET", &[&sub, &target], "Messages could not be retrieved (join first)")
        }
        None => match UserName::parse(&target) {
            Some(user) => Conversation::With(user),
            None => return r.fail(C, "INVALID_TARGET", &[&sub, &target], "Messages could not be retrieved"),
        },
    };
    let reference = |i: usize| anchor(&m.params[i]);
    let query = match sub.as_str() {
        "LATEST" if m.params[2] == "*" => Some(HistoryQuery::Latest { after: None, limit }),
        "LATEST" => reference(2).map(|a| HistoryQuery::Latest { after: Some(a), limit }),
        "BEFORE" => reference(2).map(|anchor| HistoryQuery::Before { anchor, limit }),
        "AFTER" => reference(2).map(|anchor| HistoryQuery::After { anchor, limit }),
        "AROUND" => reference(2).map(|anchor| HistoryQuery::Around { anchor, limit }),
        _ => match (reference(2), reference(3)) {
            (Some(from), Some(to)) => Some(HistoryQuery::Between { from, to, limit }),
            _ => None,
        },
    };
    let Some(query) = query else {
        return r.fail(C, "INVALID_PARAMS", &[&sub, &m.params[2]], "Invalid message reference (msgid= or timestamp=)");
    };
    let messages = match client.history_query(&conversation, query).await {
        Ok(messages) => messages,
        Err(_) => return r.fail(C, "MESSAGE_ERROR", &[&sub, &target], "Messages could not be retrieved"),
    };
    let batch = irc.state.caps.has(caps::BATCH).then(|| irc.state.batch_id());
    if let Some(id) = &batch {
        r.server("BATCH", &[&format!("+{id}"), "chathistory", &target]);
    }
    for msg in &messages {
        let to = reply::target_of(msg);
        let mut line = reply::message_line(&irc.state, &irc.settings, msg, "PRIVMSG", &to, Stamp::Stored);
        if let Some(id) = &batch {
            line.tags.insert(0, ("batch".into(), Some(id.clone())));
        }
        r.push(line);
    }
    if let Some(id) = &batch {
        r.server("BATCH", &[&format!("-{id}")]);
    }
}

/// USERHOST nick...: 302 with yourself among them.
fn userhost(irc: &Irc, m: &Message, r: &mut Reply) {
    if m.params.is_empty() {
        return r.numeric("461", &["USERHOST", "Not enough parameters"]);
    }
    let me = irc.state.client();
    let away = if irc.state.away.is_some() { '-' } else { '+' };
    let found: Vec<String> = m
        .params
        .iter()
        .take(5)
        .filter(|n| n.eq_ignore_ascii_case(me))
        .map(|_| format!("{me}={away}{me}@{}", reply::USER_HOST))
        .collect();
    r.numeric("302", &[&found.join(" ")]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels() {
        assert_eq!(channel("#General").unwrap().as_str(), "general");
        assert!(channel("general").is_none());
        assert!(channel("##x").is_none());
    }
}
