//! Connection registration and accounts over IRC: CAP negotiation, NICK, USER, PASS, the welcome
//! burst (001–005, LUSERS, MOTD), SASL PLAIN (AUTHENTICATE), `draft/account-registration`
//! (REGISTER) and the NickServ pseudo-user. Every login and registration goes through
//! `Client::login`/`Client::register`, so the native protocol's throttles apply.

use super::caps;
use super::reply::{self, Reply};
use super::wire::Message;
use super::{Irc, IrcClient, Sasl};
use crate::chat::error::ChatError;
use crate::chat::names::{Password, UserName};
use crate::session::Flow;

/// The longest AUTHENTICATE parameter (IRCv3 SASL): longer payloads come in chunks of this size.
const SASL_CHUNK: usize = 400;

/// CAP LS / LIST / REQ / END.
pub fn cap(irc: &mut Irc, m: &Message, r: &mut Reply) {
    let st = &mut irc.state;
    let sub = m.params.first().map(|s| s.to_ascii_uppercase()).unwrap_or_default();
    let client = st.client().to_string();
    match sub.as_str() {
        "LS" => {
            if !st.registered {
                st.negotiating = true;
            }
            let version = m.params.get(1).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
            if version >= 302 {
                st.cap_version = st.cap_version.max(version);
                // CAP LS 302 implies cap-notify.
                st.caps.set(caps::CAP_NOTIFY, true);
            }
            r.server("CAP", &[&client, "LS", &caps::ls(st.cap_version)]);
        }
        "LIST" => r.server("CAP", &[&client, "LIST", &st.caps.names()]),
        "REQ" => {
            if !st.registered {
                st.negotiating = true;
            }
            let asked = m.params.get(1).cloned().unwrap_or_default();
            let mut changes = Vec::new();
            let mut ok = true;
            for word in asked.split(' ').filter(|w| !w.is_empty()) {
                let (on, name) = match word.strip_prefix('-') {
                    Some(name) => (false, name),
                    None => (true, word),
                };
                match caps::by_name(name) {
                    // cap-notify cannot be turned off once CAP LS 302 turned it on.
                    Some(caps::CAP_NOTIFY) if !on && st.cap_version >= 302 => ok = false,
                    Some(bit) => changes.push((bit, on)),
                    None => ok = false,
                }
            }
            if ok && !changes.is_empty() {
                for (bit, on) in changes {
                    st.caps.set(bit, on);
                }
                r.server("CAP", &[&client, "ACK", &asked]);
            } else {
                r.server("CAP", &[&client, "NAK", &asked]);
            }
        }
        "END" => {
            st.negotiating = false;
            if st.sasl.take().is_some() {
                r.numeric("906", &["SASL authentication aborted"]);
            }
        }
        _ => {
            let sub = m.params.first().map(String::as_str).unwrap_or("*");
            r.numeric("410", &[sub, "Invalid CAP command"]);
        }
    }
}

/// NICK: any valid name before logging in; after, the nick is the account name.
pub async fn nick(irc: &mut Irc, client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let Some(wanted) = m.params.first().filter(|n| !n.is_empty()) else {
        r.numeric("431", &["No nickname given"]);
        return;
    };
    let Some(name) = UserName::parse(wanted) else {
        r.numeric("432", &[wanted, "Erroneous nickname (2-24 letters, digits, _ or -, starting with a letter)"]);
        return;
    };
    if let Some(account) = account(client) {
        if name != account {
            r.numeric("432", &[wanted, "Erroneous nickname: your nick is your account name"]);
        }
        return;
    }
    if client.is_guest() {
        // A guest's nick is checked by the core: no account's name, no other guest's.
        match client.guest(&name).await {
            Ok(_) => {}
            Err(ChatError::AlreadyLoggedIn) => {
                return r.numeric("447", &[wanted, "Guests cannot change nickname while in channels"]);
            }
            Err(e) => return r.error(&e, "NICK", wanted),
        }
    }
    let st = &mut irc.state;
    let old = st.nick.replace(name.as_str().to_string());
    if st.registered && old.as_deref() != Some(name.as_str()) {
        let old = old.unwrap_or_default();
        r.raw(Some(&reply::user_source(&old)), "NICK", &[name.as_str()]);
    }
    r.nick = name.as_str().to_string();
}

/// USER <username> 0 * <realname>.
pub fn user(irc: &mut Irc, m: &Message, r: &mut Reply) {
    if irc.state.registered {
        r.numeric("462", &["You may not reregister"]);
        return;
    }
    if m.params.len() < 4 || m.params[0].is_empty() {
        r.numeric("461", &["USER", "Not enough parameters"]);
        return;
    }
    irc.state.user = Some((m.params[0].clone(), m.params[3].clone()));
}

/// PASS: `account:password`, or a password for the account named by NICK; used when
/// registration completes.
pub fn pass(irc: &mut Irc, m: &Message, r: &mut Reply) {
    if irc.state.registered {
        r.numeric("462", &["You may not reregister"]);
        return;
    }
    match m.params.first().filter(|p| !p.is_empty()) {
        Some(p) => irc.state.pass = Some(p.clone()),
        None => r.numeric("461", &["PASS", "Not enough parameters"]),
    }
}

/// The account this connection is logged in as.
pub fn account(client: &IrcClient) -> Option<UserName> {
    use crate::chat::client::Identity;
    match client.identity() {
        Identity::Anonymous | Identity::Guest(_) => None,
        Identity::User(name) | Identity::Bot { name, .. } => Some(name.clone()),
    }
}

/// The name this connection posts as, and whether it is a guest's nick.
pub fn sender(client: &IrcClient) -> Option<(UserName, bool)> {
    use crate::chat::client::Identity;
    match client.identity() {
        Identity::Anonymous => None,
        Identity::Guest(nick) => Some((nick.clone(), true)),
        Identity::User(name) | Identity::Bot { name, .. } => Some((name.clone(), false)),
    }
}

/// After a login or registration as `account`: the nick becomes the account name (a NICK change
/// when the client was told another one), and 900 says so. A guest's channels were re-joined as
/// the account's user by the core; one it could not re-join is parted.
fn logged_in(irc: &mut Irc, client: &IrcClient, account: &UserName, r: &mut Reply) {
    let st = &mut irc.state;
    let still = client.joined_rooms();
    for room in st.joined.iter().filter(|room| !still.contains(room)) {
        let old = st.nick.clone().unwrap_or_default();
        r.raw(Some(&reply::user_source(&old)), "PART", &[&format!("#{room}")]);
    }
    st.joined.retain(|room| still.contains(room));
    let new = account.as_str();
    if st.registered {
        if let Some(old) = st.nick.as_deref().filter(|old| *old != new) {
            r.raw(Some(&reply::user_source(old)), "NICK", &[new]);
        }
    }
    st.nick = Some(new.to_string());
    r.nick = new.to_string();
    let mask = reply::user_source(new);
    r.numeric("900", &[&mask, new, &format!("You are now logged in as {new}")]);
}

/// Completes registration once NICK and USER are in and CAP negotiation is over: logs in with
/// PASS if one was given, then sends the welcome burst.
pub async fn maybe_welcome(irc: &mut Irc, client: &mut IrcClient, r: &mut Reply) -> Flow {
    let st = &irc.state;
    if st.registered || st.negotiating || st.nick.is_none() || st.user.is_none() {
        return Flow::Continue;
    }
    if let Some(pass) = irc.state.pass.take() {
        if !client.is_member() {
            let (user, password) = match pass.split_once(':') {
                Some((user, password)) => (user.to_string(), password.to_string()),
                None => (irc.state.client().to_string(), pass),
            };
            let result = match (UserName::parse(&user), Password::parse(&password)) {
                (Some(user), Some(password)) => client.login(&user, &password).await,
                _ => Err(ChatError::BadCredentials),
            };
            match result {
                Ok(account) => logged_in(irc, client, &account, r),
                Err(e) => {
                    match &e {
                        ChatError::Throttled(secs) => {
                            r.notice(&format!("too many failed logins, wait {secs} seconds and try again"))
                        }
                        ChatError::AccountDisabled(why) => r.notice(&format!("account disabled: {why} (ask an admin)")),
                        _ => {}
                    }
                    r.numeric("464", &["Password incorrect"]);
                    r.raw(None, "ERROR", &["Closing link: bad PASS (use PASS <account>:<password>)"]);
                    return Flow::Close;
                }
            }
        }
    }
    if !client.is_logged_in() && irc.settings.chat.guests.enabled {
        // Guests on: NICK and USER alone make a guest, unless the nick is an account's (or
        // another guest's): 433, and registration waits for another NICK or a login.
        let Some(nick) = irc.state.nick.as_deref().and_then(UserName::parse) else { return Flow::Continue };
        if irc.state.refused_nick.as_deref() == Some(nick.as_str()) {
            return Flow::Continue;
        }
        if let Err(e) = client.guest(&nick).await {
            irc.state.refused_nick = Some(nick.as_str().to_string());
            r.error(&e, "NICK", nick.as_str());
            return Flow::Continue;
        }
    }
    irc.state.registered = true;
    welcome(irc, client, r);
    Flow::Continue
}

/// 001–005, LUSERS, MOTD, and how to log in when not logged in.
fn welcome(irc: &mut Irc, client: &IrcClient, r: &mut Reply) {
    let s = irc.settings.clone();
    let nick = irc.state.client().to_string();
    let version = concat!("chatd-", env!("CARGO_PKG_VERSION"));
    r.numeric("001", &[&format!("Welcome to the {} Network, {}", s.network, reply::user_source(&nick))]);
    r.numeric("002", &[&format!("Your host is {}, running version {version}", s.server_name)]);
    r.numeric("003", &[&format!("This server was created {}", s.created)]);
    r.numeric("004", &[&s.server_name, version, "iB", "bnot", "bo"]);
    for tokens in isupport(irc).chunks(12) {
        let mut params: Vec<&str> = tokens.iter().map(String::as_str).collect();
        params.push("are supported by this server");
        r.numeric("005", &params);
    }
    lusers(irc, r);
    motd(irc, r);
    if client.is_guest() {
        let guests = &irc.settings.chat.guests;
        let rooms = match guests.all_rooms {
            true => "every channel".to_string(),
            false => guests.rooms.iter().map(|r| format!("#{r}")).collect::<Vec<_>>().join(" "),
        };
        r.notice(&format!(
            "You are a guest (not logged in to an account); guests may join: {rooms}. To become a member, {}",
            reply::log_in_hint()
        ));
    } else if !client.is_logged_in() {
        r.notice(&format!("{} (/msg NickServ HELP explains)", reply::not_logged_in_text()));
    }
}

/// The ISUPPORT tokens: only what is true of chatd.
pub fn isupport(irc: &Irc) -> Vec<String> {
    let s = &irc.settings;
    vec![
        "BOT=B".into(),
        "CASEMAPPING=ascii".into(),
        format!("CHANLIMIT=#:{}", s.rooms_per_connection),
        "CHANMODES=b,,,nt".into(),
        "CHANNELLEN=33".into(),
        "CHANTYPES=#".into(),
        format!("CHATHISTORY={}", crate::chat::HISTORY_PAGE),
        "MSGREFTYPES=msgid,timestamp".into(),
        format!("NETWORK={}", s.network),
        "NICKLEN=24".into(),
        "PREFIX=(o)@".into(),
        "TARGMAX=PRIVMSG:1,NOTICE:1,NAMES:1,WHOIS:1,KICK:1".into(),
        format!("TOPICLEN={}", crate::chat::TOPIC_MAX_BYTES),
        "USERLEN=24".into(),
        "UTF8ONLY".into(),
    ]
}

/// 251, 254, 255, 265, 266: chatd is one server; every connection counts as a user.
pub fn lusers(irc: &Irc, r: &mut Reply) {
    let s = &irc.settings;
    let users = s.gate.open_connections().to_string();
    let channels = s.chat.rooms.list().len().to_string();
    r.numeric("251", &[&format!("There are {users} users and 0 invisible on 1 servers")]);
    r.numeric("254", &[&channels, "channels formed"]);
    r.numeric("255", &[&format!("I have {users} clients and 0 servers")]);
    r.numeric("265", &[&users, &users, &format!("Current local users {users}, max {users}")]);
    r.numeric("266", &[&users, &users, &format!("Current global users {users}, max {users}")]);
}

/// 375/372/376, or 422 when there is no MOTD.
pub fn motd(irc: &Irc, r: &mut Reply) {
    let s = &irc.settings;
    let motd = s.motd();
    if motd.is_empty() {
        r.numeric("422", &["MOTD File is missing"]);
        return;
    }
    r.numeric("375", &[&format!("- {} Message of the day - ", s.server_name)]);
    for line in &motd {
        r.numeric("372", &[&format!("- {line}")]);
    }
    r.numeric("376", &["End of /MOTD command."]);
}

/// AUTHENTICATE: SASL PLAIN (IRCv3 SASL 3.1/3.2).
pub async fn authenticate(irc: &mut Irc, client: &mut IrcClient, m: &Message, r: &mut Reply) {
    let Some(param) = m.params.first().cloned() else {
        r.numeric("461", &["AUTHENTICATE", "Not enough parameters"]);
        return;
    };
    let Some(sasl) = irc.state.sasl.as_mut() else {
        if client.is_member() {
            r.numeric("907", &["You have already authenticated using SASL"]);
        } else if param.eq_ignore_ascii_case("PLAIN") {
            irc.state.sasl = Some(Sasl::default());
            r.raw(None, "AUTHENTICATE", &["+"]);
        } else {
            r.numeric("908", &["PLAIN", "are available SASL mechanisms"]);
            r.numeric("904", &["SASL authentication failed"]);
        }
        return;
    };
    if param == "*" {
        irc.state.sasl = None;
        r.numeric("906", &["SASL authentication aborted"]);
        return;
    }
    if param.len() > SASL_CHUNK {
        irc.state.sasl = None;
        r.numeric("905", &["SASL message too long"]);
        return;
    }
    if param != "+" {
        sasl.buffer.push_str(&param);
        if param.len() == SASL_CHUNK {
            return; // more to come
        }
    }
    let data = std::mem::take(&mut sasl.buffer);
    irc.state.sasl = None;
    let Some((user, password)) = decode_plain(&data) else {
        r.numeric("904", &["SASL authentication failed"]);
        return;
    };
    match client.login(&user, &password).await {
        Ok(account) => {
            logged_in(irc, client, &account, r);
            r.numeric("903", &["SASL authentication successful"]);
        }
        Err(e) => {
            match &e {
                ChatError::Throttled(secs) => {
                    r.notice(&format!("too many failed logins, wait {secs} seconds and try again"))
                }
                ChatError::AccountDisabled(why) => r.notice(&format!("account disabled: {why} (ask an admin)")),
                _ => {}
            }
            r.numeric("904", &["SASL authentication failed"]);
        }
    }
}

/// `authzid NUL authcid NUL password`, base64: the account and password, when the authorization
/// identity is empty or the same account.
fn decode_plain(b64: &str) -> Option<(UserName, Password)> {
    let bytes = base64_decode(b64)?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let (authz, authc, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let user = UserName::parse(authc)?;
    if !authz.is_empty() && UserName::parse(authz).as_ref() != Some(&user) {
        return None;
    }
    Some((user, Password::parse(password)?))
}

/// Standard base64 with padding (RFC 4648), as SASL uses.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, chunk) in s.chunks(4).enumerate() {
        let last = i + 1 == s.len() / 4;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// REGISTER <account> <email|*> <password> (draft/account-registration).
pub async fn register(irc: &mut Irc, client: &mut IrcClient, m: &Message, r: &mut Reply) {
    if m.params.len() < 3 {
        r.numeric("461", &["REGISTER", "Not enough parameters"]);
        return;
    }
    let wanted = match m.params[0].as_str() {
        "*" => match irc.state.nick.clone() {
            Some(nick) => nick,
            None => {
                r.fail("REGISTER", "NEED_NICK", &["*"], "Send NICK first, or name the account");
                return;
            }
        },
        name => name.to_string(),
    };
    if client.is_member() {
        r.fail("REGISTER", "ALREADY_AUTHENTICATED", &[&wanted], "You are already logged in");
        return;
    }
    let Some(user) = UserName::parse(&wanted) else {
        let why = "Account names are 2-24 letters, digits, _ or -, starting with a letter";
        r.fail("REGISTER", "BAD_ACCOUNT_NAME", &[&wanted], why);
        return;
    };
    let Some(password) = Password::parse(&m.params[2]) else {
        let why = "Passwords are 8-128 bytes without spaces or control characters";
        r.fail("REGISTER", "UNACCEPTABLE_PASSWORD", &[user.as_str()], why);
        return;
    };
    match client.register(&user, &password).await {
        Ok(account) => {
            r.server("REGISTER", &["SUCCESS", account.as_str(), "Account created, you are logged in"]);
            logged_in(irc, client, &account, r);
        }
        Err(e) => {
            let (code, why) = match &e {
                ChatError::NameTaken => ("ACCOUNT_EXISTS", "That account already exists".to_string()),
                ChatError::AlreadyLoggedIn => ("ALREADY_AUTHENTICATED", "You are already logged in".to_string()),
                _ => ("TEMPORARILY_UNAVAILABLE", e.to_string()),
            };
            r.fail("REGISTER", code, &[user.as_str()], &why);
        }
    }
}

/// A message to NickServ: HELP, REGISTER <password> [email], IDENTIFY [account] <password>.
pub async fn nickserv(irc: &mut Irc, client: &mut IrcClient, text: &str, r: &mut Reply) {
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let verb = words.first().map(|w| w.to_ascii_uppercase()).unwrap_or_default();
    match verb.as_str() {
        "REGISTER" => {
            let Some(password) = words.get(1) else {
                return r.nickserv("Syntax: REGISTER <password> (your account is named after your nick)");
            };
            let Some(nick) = irc.state.nick.clone() else { return r.nickserv("Send NICK first") };
            if client.is_member() {
                return r.nickserv("You are already logged in");
            }
            let (Some(user), Some(password)) = (UserName::parse(&nick), Password::parse(password)) else {
                return r.nickserv("Passwords are 8-128 bytes without spaces or control characters");
            };
            match client.register(&user, &password).await {
                Ok(account) => {
                    r.nickserv(&format!("Account {account} created, you are logged in"));
                    logged_in(irc, client, &account, r);
                }
                Err(ChatError::NameTaken) => {
                    r.nickserv(&format!("{user} is already registered; IDENTIFY <password> to log in"))
                }
                Err(e) => r.nickserv(&format!("Registration failed: {e}")),
            }
        }
        "IDENTIFY" | "LOGIN" => {
            let (account, password) = match words[1..] {
                [password] => (irc.state.nick.clone().unwrap_or_default(), password),
                [account, password] => (account.to_string(), password),
                _ => return r.nickserv("Syntax: IDENTIFY [account] <password>"),
            };
            if client.is_member() {
                return r.nickserv("You are already logged in");
            }
            let result = match (UserName::parse(&account), Password::parse(password)) {
                (Some(user), Some(password)) => client.login(&user, &password).await,
                _ => Err(ChatError::BadCredentials),
            };
            match result {
                Ok(account) => {
                    r.nickserv(&format!("You are now identified for {account}"));
                    logged_in(irc, client, &account, r);
                }
                Err(e) => r.nickserv(&format!("Login failed: {e}")),
            }
        }
        _ => {
            r.nickserv("NickServ: your chatd account. Commands:");
            r.nickserv("REGISTER <password> - create an account named after your nick and log in");
            r.nickserv("IDENTIFY [account] <password> - log in (SASL PLAIN and PASS account:password work too)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("YWxpY2UAYWxpY2UAcGFzc3dvcmQ=").unwrap(), b"alice\0alice\0password");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("YQ=").is_none());
        assert!(base64_decode("Y===").is_none());
        assert!(base64_decode("YQ==YQ==").is_none());
    }

    #[test]
    fn plain() {
        let (u, p) = decode_plain("AGFsaWNlAHBhc3N3b3JkLWFsaWNl").unwrap(); // \0alice\0password-alice
        assert_eq!((u.as_str(), p.expose()), ("alice", "password-alice"));
        assert!(decode_plain("Ym9iAGFsaWNlAHBhc3N3b3JkLWFsaWNl").is_none()); // bob\0alice\0...
    }
}
