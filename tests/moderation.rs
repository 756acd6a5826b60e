//! Moderation and administration over real TLS sockets to a real daemon (PROTOCOL.md 5c, IRC.md
//! "Moderation"): room operators kick, ban, set topics and delete messages; admins (`[admin]
//! users`) do that everywhere and also disable accounts, reset passwords, delete rooms, send
//! notices, close connections, read the audit log and reload the configuration; users change
//! their own password. Every refusal is checked, native and IRC, and roles survive a restart.

mod common;

use chatd::irc::wire::Message;
use chatd_proto::line::{Reply, ServerLine};
use chatd_proto::LineConn;
use common::irc::Irc;
use testkit::{call, code, expect_line, next_line, post, Daemon, PATIENCE};

/// `root` is the admin; guests may join every room.
const CONFIG: &str = r#"
[admin]
users = ["root"]
[guests]
enabled = true
all_rooms = true
"#;

async fn daemon() -> Daemon {
    Daemon::start_with(CONFIG).await
}

fn is_event(line: &ServerLine, name: &str) -> bool {
    matches!(line, ServerLine::Event(e) if e.name == name)
}

/// Waits for `* <name>` and returns its fields and text.
async fn event(conn: &mut LineConn, name: &str) -> (Vec<String>, Option<String>) {
    match expect_line(conn, name, |l| is_event(l, name)).await {
        ServerLine::Event(e) => (e.fields, e.text),
        _ => unreachable!(),
    }
}

fn ids(lines: &[Reply]) -> Vec<u64> {
    lines.iter().filter(|r| r.code == 130).map(|r| r.fields[1].parse().unwrap()).collect()
}

/// Reads until the server closes the connection; returns the `* BYE` text seen before.
async fn closed_with(conn: &mut LineConn) -> Option<String> {
    let mut bye = None;
    loop {
        match tokio::time::timeout(PATIENCE, conn.next()).await.expect("the server did not close the connection") {
            Ok(Some(ServerLine::Event(e))) if e.name == "BYE" => bye = e.text,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return bye,
        }
    }
}

#[tokio::test]
async fn an_ordinary_user_is_refused_every_moderation_and_admin_command() {
    let d = daemon().await;
    let mut alice = d.member("alice", "lounge").await; // the creator: lounge's operator
    let id = post(&mut alice, "lounge", "hello").await;
    let mut bob = d.member("bob", "lounge").await;
    for line in [
        "OP lounge bob".to_string(),
        "DEOP lounge alice".into(),
        "KICK lounge alice bye".into(),
        "BAN lounge alice".into(),
        "UNBAN lounge alice".into(),
        format!("DELETE lounge {id}"),
        "TOPIC lounge mine now".into(),
    ] {
        let r = call(&mut bob, &line).await;
        assert_eq!((r.fin.code, r.fin.fields.as_slice()), (428, ["lounge".to_string()].as_slice()), "{line}");
        assert!(r.fin.text.as_deref().unwrap().contains("not an operator of lounge"), "{line}: {:?}", r.fin);
    }
    for line in [
        "DELROOM lounge",
        "DISABLE alice",
        "ENABLE alice",
        "RESETPASS alice new-password",
        "ANNOUNCE hello everyone",
        "KILL alice",
        "AUDIT",
        "AUDIT LIMIT 5",
        "RELOAD",
    ] {
        let r = call(&mut bob, line).await;
        assert_eq!(r.fin.code, 429, "{line}: {:?}", r.fin);
        assert_eq!(r.fin.text.as_deref(), Some("only server admins may do that"), "{line}");
    }
    // An operator of one room is nobody in another, and no admin.
    let _carol = d.member("carol", "kitchen").await;
    assert_eq!(code(&mut alice, "KICK kitchen carol").await, 428);
    assert_eq!(code(&mut alice, "DISABLE carol").await, 429);
    // A guest is never an operator: it cannot be named one, nor act as one.
    let mut guest = d.client().await;
    assert_eq!(code(&mut guest, "GUEST visitor").await, 200);
    assert_eq!(code(&mut guest, "JOIN lounge").await, 200);
    assert_eq!(code(&mut alice, "OP lounge visitor").await, 423, "a guest's nick is no account");
    assert_eq!(code(&mut guest, "KICK lounge bob").await, 428);
    assert_eq!(code(&mut guest, "RELOAD").await, 429);
    assert_eq!(code(&mut guest, "PASSWD password-x password-y").await, 427);
    // Nothing was done, so nothing was audited.
    let mut root = d.login("root").await;
    let audit = call(&mut root, "AUDIT").await;
    assert_eq!((audit.fin.code, audit.data.len()), (200, 0), "{:?}", audit.data);
}

#[tokio::test]
async fn an_operator_kicks_bans_and_unbans() {
    let d = daemon().await;
    let mut alice = d.member("alice", "lounge").await;
    let mut bob = d.member("bob", "lounge").await;
    let names = call(&mut bob, "NAMES lounge").await;
    let shown: Vec<Vec<String>> = names.data.iter().map(|r| r.fields.clone()).collect();
    assert_eq!(shown, [vec!["lounge", "alice", "op"], vec!["lounge", "bob"]]);

    let r = call(&mut alice, "KICK lounge bob stop spamming").await;
    assert_eq!((r.fin.code, r.fin.fields.as_slice()), (200, ["lounge", "bob", "1"].map(String::from).as_slice()));
    let (fields, reason) = event(&mut bob, "KICK").await;
    assert_eq!(
        (fields, reason.as_deref()),
        (vec!["lounge".into(), "bob".into(), "alice".into()], Some("stop spamming"))
    );
    assert_eq!(code(&mut bob, "MSG lounge am I still here?").await, 403, "kicked: no longer a member");
    assert_eq!(code(&mut alice, "KICK lounge bob").await, 433, "not in the room any more");
    assert_eq!(code(&mut bob, "JOIN lounge").await, 200, "a kick is not a ban");

    assert_eq!(code(&mut alice, "BAN lounge bob flooding").await, 200);
    let (fields, _) = event(&mut bob, "BAN").await;
    assert_eq!(fields, ["lounge", "bob", "alice"]);
    let (_, reason) = event(&mut bob, "KICK").await;
    assert_eq!(reason.as_deref(), Some("banned: flooding"));
    let r = call(&mut bob, "JOIN lounge").await;
    assert_eq!((r.fin.code, r.fin.fields[0].as_str()), (430, "lounge"), "{:?}", r.fin);
    let bans = call(&mut bob, "BANS lounge").await;
    assert_eq!(bans.data.iter().map(|r| (r.code, r.fields[1].as_str())).collect::<Vec<_>>(), [(140, "bob")]);
    // A second connection of bob's is refused too: bans are by account.
    let mut bob2 = d.login("bob").await;
    assert_eq!(code(&mut bob2, "JOIN lounge").await, 430);

    assert_eq!(code(&mut alice, "UNBAN lounge bob").await, 200);
    assert_eq!(code(&mut bob, "JOIN lounge").await, 200);
    assert_eq!(call(&mut bob, "BANS lounge").await.fin.fields, ["lounge", "0"]);

    // Operators name operators: bob, made one, may kick; the topic is theirs to set.
    assert_eq!(code(&mut alice, "OP lounge bob").await, 200);
    let (fields, _) = event(&mut bob, "OP").await;
    assert_eq!(fields, ["lounge", "bob", "alice"]);
    let mut carol = d.member("carol", "lounge").await;
    assert_eq!(code(&mut carol, "TOPIC lounge carol's room").await, 428, "a room with operators: theirs");
    assert_eq!(code(&mut bob, "TOPIC lounge bob's rules").await, 200);
    assert_eq!(code(&mut bob, "KICK lounge carol").await, 200);
    assert_eq!(code(&mut bob, "DEOP lounge bob").await, 200);
    assert_eq!(code(&mut bob, "KICK lounge alice").await, 428, "no longer an operator");
    // In a room without operators (the configured initial ones), every member sets the topic.
    let mut dave = d.member("dave", "general").await;
    assert_eq!(code(&mut dave, "TOPIC general anyone's").await, 200);
}

#[tokio::test]
async fn a_deleted_message_leaves_history_and_members_are_told() {
    let mut d = daemon().await;
    let mut alice = d.member("alice", "lounge").await;
    let mut bob = d.member("bob", "lounge").await;
    let first = post(&mut alice, "lounge", "one").await;
    let spam = post(&mut alice, "lounge", "buy cheap stuff").await;
    let last = post(&mut alice, "lounge", "three").await;

    let r = call(&mut alice, &format!("DELETE lounge {spam}")).await;
    assert_eq!((r.fin.code, r.fin.fields.as_slice()), (200, ["lounge".to_string(), spam.to_string()].as_slice()));
    let (fields, _) = event(&mut bob, "DELETE").await;
    assert_eq!(fields, ["lounge".to_string(), spam.to_string(), "alice".to_string()]);
    assert_eq!(ids(&call(&mut bob, "HISTORY lounge").await.data), [first, last]);
    let mut carol = d.login("carol").await;
    assert_eq!(ids(&call(&mut carol, "JOIN lounge").await.data), [first, last], "a fresh joiner's replay");
    let r = call(&mut alice, &format!("DELETE lounge {spam}")).await;
    assert_eq!((r.fin.code, r.fin.fields[1].as_str()), (432, spam.to_string().as_str()));
    // An admin deletes in any room, without being in it.
    let mut root = d.login("root").await;
    assert_eq!(code(&mut root, &format!("DELETE lounge {first}")).await, 200);
    let (fields, _) = event(&mut bob, "DELETE").await;
    assert_eq!(fields[2], "root");

    d.restart().await;
    let mut bob = d.member("bob", "lounge").await;
    assert_eq!(ids(&call(&mut bob, "HISTORY lounge").await.data), [last], "deleted from the store too");
}

#[tokio::test]
async fn a_disabled_account_is_closed_and_refused_until_enabled() {
    let d = daemon().await;
    let mut root = d.login("root").await;
    let mut bob = d.member("bob", "general").await;
    let mut bob_phone = d.login("bob").await;
    let mut alice = d.member("alice", "general").await;

    let r = call(&mut root, "DISABLE bob posting spam").await;
    assert_eq!((r.fin.code, r.fin.fields.as_slice()), (200, ["bob", "2"].map(String::from).as_slice()), "{:?}", r.fin);
    for conn in [&mut bob, &mut bob_phone] {
        assert_eq!(closed_with(conn).await.as_deref(), Some("account disabled: posting spam"));
    }
    let (fields, _) = event(&mut alice, "PART").await;
    assert_eq!(fields, ["general", "bob"]);
    let mut again = d.client().await;
    let r = call(&mut again, "LOGIN bob password-bob").await;
    assert_eq!(r.fin.code, 431, "{:?}", r.fin);
    assert!(r.fin.text.as_deref().unwrap().contains("posting spam"), "{:?}", r.fin);

    assert_eq!(code(&mut root, "ENABLE bob").await, 200);
    assert_eq!(code(&mut again, "LOGIN bob password-bob").await, 200);
    assert_eq!(code(&mut root, "DISABLE nosuchuser").await, 423);
}

#[tokio::test]
async fn passwords_are_reset_by_admins_and_changed_by_their_users() {
    let d = daemon().await;
    let mut root = d.login("root").await;
    let mut bob = d.login("bob").await;
    assert_eq!(code(&mut root, "RESETPASS bob fresh-password-1").await, 200);
    let mut other = d.client().await;
    assert_eq!(code(&mut other, "LOGIN bob password-bob").await, 409, "the old password no longer works");
    assert_eq!(code(&mut other, "LOGIN bob fresh-password-1").await, 200);
    assert_eq!(code(&mut root, "RESETPASS nosuchuser fresh-password-1").await, 423);

    assert_eq!(code(&mut bob, "PASSWD wrong-password my-own-password").await, 409, "the old one must be right");
    assert_eq!(code(&mut bob, "PASSWD fresh-password-1 my-own-password").await, 200);
    let mut third = d.client().await;
    assert_eq!(code(&mut third, "LOGIN bob my-own-password").await, 200);
    let log = d.log();
    for secret in ["fresh-password-1", "my-own-password"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn an_admin_deletes_a_room_and_sends_a_notice_to_everyone() {
    let d = daemon().await;
    let mut root = d.login("root").await;
    let mut alice = d.member("alice", "lounge").await;
    let mut bob = d.member("bob", "lounge").await;
    post(&mut alice, "lounge", "soon gone").await;

    assert_eq!(code(&mut root, "DELROOM lounge cleaning up").await, 200);
    for conn in [&mut alice, &mut bob] {
        let (fields, reason) = event(conn, "DELROOM").await;
        assert_eq!((fields, reason.as_deref()), (vec!["lounge".into(), "root".into()], Some("cleaning up")));
    }
    assert_eq!(code(&mut bob, "MSG lounge hello?").await, 403);
    let rooms = call(&mut bob, "ROOMS").await;
    assert!(!rooms.data.iter().any(|r| r.fields[0] == "lounge"), "{:?}", rooms.data);
    assert_eq!(code(&mut root, "DELROOM lounge").await, 404);
    // The name is free again: a new room, no history, bob its creator and operator.
    let r = call(&mut bob, "JOIN lounge").await;
    assert_eq!((r.fin.code, r.data.len()), (200, 0));
    assert_eq!(code(&mut bob, "KICK lounge alice").await, 433, "bob is its operator now");

    let mut guest = d.client().await;
    assert_eq!(code(&mut guest, "GUEST visitor").await, 200);
    let r = call(&mut root, "ANNOUNCE maintenance at noon").await;
    assert_eq!(r.fin.code, 200);
    assert!(r.fin.fields[0].parse::<usize>().unwrap() >= 4, "{:?}", r.fin);
    for conn in [&mut alice, &mut bob, &mut guest] {
        let (fields, text) = event(conn, "NOTICE").await;
        assert_eq!((fields, text.as_deref()), (vec!["root".to_string()], Some("maintenance at noon")));
    }
    // KILL closes every connection of a user, saying who and why.
    let r = call(&mut root, "KILL alice enough").await;
    assert_eq!(r.fin.fields, ["alice", "1"]);
    assert_eq!(closed_with(&mut alice).await.as_deref(), Some("killed by root: enough"));
    assert_eq!(code(&mut root, "KILL alice").await, 423, "no longer online");
}

#[tokio::test]
async fn roles_bans_and_disabled_accounts_survive_a_restart_and_the_audit_log_lists_them() {
    let mut d = daemon().await;
    let mut root = d.login("root").await;
    let mut alice = d.member("alice", "lounge").await;
    d.login("bob").await;
    d.login("carol").await;
    d.login("dave").await;
    assert_eq!(code(&mut alice, "OP lounge bob").await, 200);
    assert_eq!(code(&mut alice, "BAN lounge carol rude").await, 200);
    assert_eq!(code(&mut root, "DISABLE dave testing").await, 200);

    d.restart().await;
    let mut bob = d.member("bob", "lounge").await;
    let names = call(&mut bob, "NAMES lounge").await;
    assert_eq!(names.data[0].fields, ["lounge", "bob", "op"]);
    let mut carol = d.login("carol").await;
    assert_eq!(code(&mut carol, "JOIN lounge").await, 430);
    let mut dave = d.client().await;
    assert_eq!(code(&mut dave, "LOGIN dave password-dave").await, 431);
    assert_eq!(code(&mut bob, "UNBAN lounge carol").await, 200, "bob is still an operator");

    let mut root = d.login("root").await;
    let audit = call(&mut root, "AUDIT LIMIT 3").await;
    let rows: Vec<(String, String, Vec<String>, Option<String>)> = audit
        .data
        .iter()
        .map(|r| (r.fields[1].clone(), r.fields[2].clone(), r.fields[3..].to_vec(), r.text.clone()))
        .collect();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rows,
        [
            ("bob".into(), "unban".into(), s(&["lounge", "carol"]), None),
            ("root".into(), "disable".into(), s(&["dave"]), Some("testing".into())),
            ("alice".into(), "ban".into(), s(&["lounge", "carol"]), Some("rude".into())),
        ],
        "newest first"
    );
    assert!(audit.data.iter().all(|r| r.code == 150 && r.fields[0].ends_with('Z')));
    assert_eq!(call(&mut root, "AUDIT").await.data.len(), 4, "with alice's OP");
    assert!(d.log().contains("chatd::audit"), "audit lines in the log");
}

#[tokio::test]
async fn an_admin_reload_applies_a_changed_setting_or_says_why_not() {
    let d = daemon().await;
    let mut root = d.login("root").await;
    let mut bob = d.login("bob").await;
    let path = d.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{original}\n[accounts]\nopen_registration = false\n")).unwrap();

    assert_eq!(code(&mut bob, "RELOAD").await, 429);
    let mut newcomer = d.client().await;
    assert_eq!(code(&mut newcomer, "REGISTER early-bird password-x").await, 200, "not reloaded yet");
    let r = call(&mut root, "RELOAD").await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    let applied: Vec<&[String]> = r.data.iter().map(|l| l.fields.as_slice()).collect();
    assert_eq!(applied, [["applied".to_string(), "accounts.open_registration".to_string()].as_slice()]);
    let mut late = d.client().await;
    assert_eq!(code(&mut late, "REGISTER late-bird password-x").await, 411);

    std::fs::write(&path, "this is [not toml").unwrap();
    let r = call(&mut root, "RELOAD").await;
    assert_eq!(r.fin.code, 434, "{:?}", r.fin);
    assert!(r.fin.text.as_deref().unwrap().contains("the settings in effect stay"), "{:?}", r.fin);
    assert_eq!(code(&mut late, "REGISTER late-bird password-x").await, 411, "still closed");
    let audit = call(&mut root, "AUDIT LIMIT 2").await;
    let actions: Vec<&str> = audit.data.iter().map(|r| r.fields[2].as_str()).collect();
    assert_eq!(actions, ["reload", "reload"]);
}

/// An IRC client logged in with PASS, with the capabilities given.
async fn irc(d: &Daemon, user: &str, caps: &str) -> Irc {
    d.login(user).await;
    let mut c = Irc::connect(d).await;
    c.send("CAP LS 302").await;
    c.send(&format!("CAP REQ :{caps}")).await;
    c.send(&format!("PASS password-{user}")).await;
    c.send(&format!("NICK {user}")).await;
    c.send(&format!("USER {user} 0 * :{user}")).await;
    c.send("CAP END").await;
    c.expect("001").await;
    c.send("PING sync").await;
    c.expect("PONG").await; // the end of the welcome burst
    c
}

fn commands(got: &[Message]) -> Vec<&str> {
    got.iter().map(|m| m.command.as_str()).collect()
}

#[tokio::test]
async fn irc_operators_kick_ban_op_redact_and_ordinary_users_are_refused() {
    let d = daemon().await;
    let mut alice = irc(&d, "alice", "message-tags draft/message-redaction").await;
    let got = alice.exchange("JOIN #lounge").await;
    let names = got.iter().find(|m| m.command == "353").unwrap_or_else(|| panic!("no 353: {got:?}"));
    assert_eq!(names.params[3], "@alice", "the creator is the operator");
    let mut bob = irc(&d, "bob", "message-tags draft/message-redaction").await;
    bob.exchange("JOIN #lounge").await;
    alice.expect("JOIN").await;
    let mut native = d.member("carol", "lounge").await;
    let id = post(&mut native, "lounge", "spam spam").await;
    alice.expect("PRIVMSG").await;
    bob.expect("PRIVMSG").await;

    // bob, an ordinary user: each is refused with the numeric IRC clients know.
    for (line, numeric) in [
        ("KICK #lounge alice", "482"),
        ("MODE #lounge +b alice", "482"),
        ("MODE #lounge -b alice", "482"),
        ("MODE #lounge +o bob", "482"),
        ("MODE #lounge -o alice", "482"),
        ("TOPIC #lounge :bob was here", "482"),
        ("KILL alice", "481"),
        ("REHASH", "481"),
    ] {
        let got = bob.exchange(line).await;
        assert_eq!(commands(&got), [numeric], "{line}: {got:?}");
    }
    let got = bob.exchange(&format!("REDACT #lounge {id}")).await;
    assert_eq!((got[0].command.as_str(), got[0].params[1].as_str()), ("FAIL", "REDACT_FORBIDDEN"), "{got:?}");
    assert_eq!(bob.exchange("WHO #lounge").await[0].params[6], "H@", "alice's WHO flags");

    // alice redacts; bob (with the capability) sees REDACT, the native member * DELETE.
    let got = alice.exchange(&format!("REDACT #lounge {id} :spam")).await;
    assert_eq!(commands(&got), ["REDACT"]);
    let redact = bob.expect("REDACT").await;
    assert_eq!(redact.params, ["#lounge".to_string(), id.to_string()]);
    assert_eq!(redact.source.as_deref(), Some("alice!alice@chatd"));
    let (fields, _) = event(&mut native, "DELETE").await;
    assert_eq!(fields[1], id.to_string());

    // Operators: +o, then +b (which kicks), the ban list, -b.
    alice.exchange("MODE #lounge +o carol").await;
    let mode = bob.expect("MODE").await;
    assert_eq!(mode.params, ["#lounge", "+o", "carol"]);
    alice.exchange("MODE #lounge +b bob").await;
    let (_, before) = bob.until("KICK").await;
    assert!(before.iter().any(|m| m.command == "MODE" && m.params[1..] == ["+b", "bob!*@*"]), "{before:?}");
    let got = bob.exchange("JOIN #lounge").await;
    assert_eq!(got[0].command, "474", "{got:?}");
    let got = alice.exchange("MODE #lounge +b").await;
    assert_eq!(commands(&got), ["367", "368"]);
    assert_eq!(got[0].params[2], "bob!*@*");
    alice.exchange("MODE #lounge -b bob!*@*").await;
    bob.exchange("JOIN #lounge").await;
    alice.exchange("KICK #lounge bob :enough").await;
    let kick = bob.expect("KICK").await;
    assert_eq!(kick.params, ["#lounge", "bob", "enough"]);
    assert_eq!(kick.source.as_deref(), Some("alice!alice@chatd"));
    let got = alice.exchange("KICK #lounge bob").await;
    assert_eq!(got[0].command, "441", "no longer on the channel: {got:?}");
}

#[tokio::test]
async fn irc_admins_kill_and_rehash() {
    let d = daemon().await;
    let mut root = irc(&d, "root", "message-tags").await;
    let mut bob = irc(&d, "bob", "message-tags").await;
    let mut native = d.login("carol").await;
    let mut root_native = d.login("root").await;
    let got = root.exchange("KILL bob :go away").await;
    assert_eq!(commands(&got), ["NOTICE"], "{got:?}");
    let error = bob.expect("ERROR").await;
    assert_eq!(error.params, ["Closing link: killed by root: go away"]);
    assert!(bob.next_or_close().await.is_none(), "closed");
    // A disabled account's IRC login is refused, saying why.
    assert_eq!(code(&mut root_native, "DISABLE bob spam").await, 200);
    let mut again = Irc::connect(&d).await;
    again.send("PASS password-bob").await;
    again.send("NICK bob").await;
    again.send("USER bob 0 * :bob").await;
    let (_, before) = again.until("464").await;
    assert!(
        before.iter().any(|m| m.command == "NOTICE" && m.params[1].contains("account disabled: spam")),
        "{before:?}"
    );

    let path = d.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{original}\n[accounts]\nopen_registration = false\n")).unwrap();
    let got = root.exchange("REHASH").await;
    assert_eq!(got[0].command, "382", "{got:?}");
    assert_eq!(got[0].params[1..], ["chatd.toml", "Rehashing"]);
    assert!(got[1].params[1].contains("accounts.open_registration"), "{got:?}");
    std::fs::write(&path, "[broken").unwrap();
    let got = root.exchange("REHASH").await;
    assert_eq!((got[0].command.as_str(), got[0].params[1].as_str()), ("FAIL", "CONFIG_REFUSED"), "{got:?}");
    // A native client is told of a server notice in its own way; an IRC one as a NOTICE.
    call(&mut root_native, "ANNOUNCE hello all").await;
    let notice = root.expect("NOTICE").await;
    assert_eq!(notice.params[1], "*** Notice from root: hello all");
    assert!(matches!(next_line(&mut native).await, ServerLine::Event(e) if e.name == "NOTICE"));
}
