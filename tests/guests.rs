//! Guest access (issue 17) over real sockets to a real daemon, native and IRC: off by default;
//! when on, guests chat in the rooms the configuration opens to them, under a nick that is no
//! account's, marked as guests everywhere (native `~nick`, IRC without an `account` tag), with
//! their own limits, until they log in and become the member.

use std::time::{Duration, Instant};

mod common;

use chatd::irc::wire::Message;
use chatd_proto::client::LineConn;
use chatd_proto::line::ServerLine;
use common::irc::Irc;
use testkit::{call, expect_line, Daemon};

/// Guests on, in `#help` only (which exists from the start).
const GUESTS_ON: &str = r#"
[rooms]
initial = ["general", "random", "help"]
[guests]
enabled = true
rooms = ["help"]
"#;

impl Irc {
    /// NICK and USER only (as irssi without SASL), with `caps` requested first when not empty;
    /// reads through the end of the welcome burst.
    async fn guest(d: &Daemon, nick: &str, caps: &str) -> Irc {
        let mut c = Irc::connect(d).await;
        if !caps.is_empty() {
            c.send(&format!("CAP REQ :{caps}")).await;
        }
        c.send(&format!("NICK {nick}")).await;
        c.send(&format!("USER {nick} 0 * :{nick} the visitor")).await;
        if !caps.is_empty() {
            c.expect("CAP").await;
            c.send("CAP END").await;
        }
        let welcome = c.expect("001").await;
        assert_eq!(welcome.params[0], nick);
        c.expect("422").await;
        let notice = c.expect("NOTICE").await;
        assert!(notice.params[1].contains("You are a guest"), "{notice:?}");
        c
    }
}

fn tag<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
    m.tags.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
}

fn has_tag(m: &Message, key: &str) -> bool {
    m.tags.iter().any(|(k, _)| k == key)
}

/// A native connection that became the guest `nick`.
async fn native_guest(d: &Daemon, nick: &str) -> LineConn {
    let mut c = d.client().await;
    let r = call(&mut c, &format!("GUEST {nick}")).await;
    let want = [nick.to_ascii_lowercase()];
    assert_eq!((r.fin.code, r.fin.fields.as_slice()), (200, want.as_slice()), "{:?}", r.fin);
    c
}

/// The next `* <name>` event, failing after PATIENCE.
async fn event(conn: &mut LineConn, name: &str) -> chatd_proto::line::Event {
    match expect_line(conn, name, |l| l.is_event(name)).await {
        ServerLine::Event(e) => e,
        other => panic!("not an event: {other:?}"),
    }
}

#[tokio::test]
async fn guests_off_by_default_irc_and_native_clients_are_told_to_log_in() {
    let d = Daemon::start().await;
    // IRC: NICK and USER complete registration, but JOIN and PRIVMSG are refused with how to log in.
    let mut c = Irc::connect(&d).await;
    c.send("NICK visitor").await;
    c.send("USER visitor 0 * :Visitor").await;
    c.expect("001").await;
    let notice = c.expect("NOTICE").await;
    assert!(notice.params[1].contains("NickServ IDENTIFY"), "{notice:?}");
    for line in ["JOIN #general", "PRIVMSG #general :hello?"] {
        let got = c.exchange(line).await;
        assert_eq!(got.len(), 1, "{line}: {got:?}");
        assert_eq!(got[0].command, "451", "{line}: {got:?}");
        assert!(got[0].params[1].contains("NickServ IDENTIFY") && got[0].params[1].contains("SASL"), "{got:?}");
    }
    // Native: told to log in, as always; GUEST is refused with its own code.
    let mut n = d.client().await;
    let r = call(&mut n, "JOIN general").await;
    assert_eq!(r.fin.code, 402);
    assert!(r.fin.text.as_deref().unwrap().contains("LOGIN"), "{:?}", r.fin);
    let r = call(&mut n, "GUEST visitor").await;
    assert_eq!(r.fin.code, 424, "{:?}", r.fin);
    assert!(r.fin.text.as_deref().unwrap().contains("REGISTER"), "{:?}", r.fin);
    let r = call(&mut n, "MSG general hi").await;
    assert_eq!(r.fin.code, 402, "still not logged in: {:?}", r.fin);
}

#[tokio::test]
async fn a_guest_and_a_member_talk_in_an_allowed_room_native_and_irc() {
    let d = Daemon::start_with(GUESTS_ON).await;
    let mut alice = d.member("alice", "help").await;

    // A native guest joins: the member sees ~visitor.
    let mut guest = native_guest(&d, "Visitor").await;
    let r = call(&mut guest, "JOIN help").await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    let joined = event(&mut alice, "JOIN").await;
    assert_eq!(joined.fields, ["help", "~visitor"]);
    let r = call(&mut guest, "MSG help hello, I am new here").await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    let m = expect_line(&mut alice, "the guest's message", |l| l.as_message().is_some()).await;
    let m = m.as_message().unwrap();
    assert_eq!((m.sender.as_str(), m.text.as_str()), ("~visitor", "hello, I am new here"));
    assert_eq!(call(&mut alice, "MSG help welcome!").await.fin.code, 200);
    let m = expect_line(&mut guest, "the member's answer", |l| l.as_message().is_some()).await;
    assert_eq!(m.as_message().unwrap().sender, "alice");
    // NAMES and HISTORY mark the guest too.
    let names = call(&mut alice, "NAMES help").await;
    let listed: Vec<&str> = names.data.iter().map(|l| l.fields[1].as_str()).collect();
    assert_eq!(listed, ["alice", "~visitor"]);
    let history = call(&mut alice, "HISTORY help").await;
    let senders: Vec<String> = history.data.iter().map(|l| l.fields[3].clone()).collect();
    assert_eq!(senders, ["~visitor", "alice"]);

    // An IRC guest (NICK and USER alone, as irssi without SASL) joins and talks.
    let mut irc = Irc::guest(&d, "wanderer", "message-tags server-time account-tag extended-join").await;
    let got = irc.exchange("JOIN #help").await;
    let join = got.iter().find(|m| m.command == "JOIN").expect("JOIN echoed");
    assert_eq!(join.params, ["#help", "*", "wanderer the visitor"], "extended-join: no account for a guest");
    assert!(!has_tag(join, "account"), "{join:?}");
    let history: Vec<&Message> = got.iter().filter(|m| m.command == "PRIVMSG").collect();
    assert_eq!(history.len(), 2, "{got:?}");
    assert!(!has_tag(history[0], "account"), "the guest's line has no account tag: {:?}", history[0]);
    assert_eq!(tag(history[1], "account"), Some("alice"), "{:?}", history[1]);
    assert_eq!(event(&mut alice, "JOIN").await.fields, ["help", "~wanderer"]);
    irc.send("PRIVMSG #help :hi from an IRC guest").await;
    let m = expect_line(&mut alice, "the IRC guest's line", |l| l.as_message().is_some()).await;
    let m = m.as_message().unwrap();
    assert_eq!((m.sender.as_str(), m.text.as_str()), ("~wanderer", "hi from an IRC guest"));
    assert_eq!(call(&mut alice, "MSG help hello wanderer").await.fin.code, 200);
    let (m, _) = irc.until("PRIVMSG").await;
    assert_eq!(m.params, ["#help", "hello wanderer"]);
    assert_eq!(tag(&m, "account"), Some("alice"));
    guest.send("MSG help and one more from the native guest").await.unwrap();
    let (m, _) = irc.until("PRIVMSG").await;
    assert_eq!(m.source.as_deref(), Some("visitor!visitor@chatd"));
    assert!(!has_tag(&m, "account"), "a guest's message has no account tag: {m:?}");
    // WHOIS says guest, not logged in.
    let got = irc.exchange("WHOIS visitor").await;
    assert!(got.iter().any(|m| m.command == "320"), "{got:?}");
    assert!(!got.iter().any(|m| m.command == "330"), "a guest is logged in as no account: {got:?}");
}

#[tokio::test]
async fn a_guest_cannot_take_an_account_name_or_another_guests_nick() {
    let d = Daemon::start_with(GUESTS_ON).await;
    drop(d.login("alice").await);
    // Native: an account's name has its own code, another guest's nick too.
    let mut c = d.client().await;
    let r = call(&mut c, "GUEST Alice").await;
    assert_eq!((r.fin.code, r.fin.fields.as_slice()), (425, ["alice".to_string()].as_slice()), "{:?}", r.fin);
    assert!(r.fin.text.as_deref().unwrap().contains("LOGIN alice"), "{:?}", r.fin);
    let _first = native_guest(&d, "visitor").await;
    let r = call(&mut c, "GUEST visitor").await;
    assert_eq!(r.fin.code, 426, "{:?}", r.fin);
    // Nor can anyone register an account under a nick a guest holds now.
    let r = call(&mut c, "REGISTER visitor password-visitor").await;
    assert_eq!(r.fin.code, 410, "{:?}", r.fin);

    // IRC: 433 with a NickServ hint, and registration waits for another nick.
    let mut irc = Irc::connect(&d).await;
    irc.send("NICK alice").await;
    irc.send("USER alice 0 * :not alice").await;
    let (refused, _) = irc.until("433").await;
    assert_eq!(refused.params[1], "alice");
    assert!(refused.params[2].contains("registered account"), "{refused:?}");
    let hint = irc.next().await;
    assert_eq!(hint.source.as_deref(), Some("NickServ!NickServ@services.chatd"), "{hint:?}");
    assert!(hint.params[1].contains("IDENTIFY"), "{hint:?}");
    let got = irc.exchange("NICK visitor").await;
    assert!(got.iter().any(|m| m.command == "433" && m.params[2].contains("guest")), "{got:?}");
    irc.send("NICK alice_").await;
    let welcome = irc.expect("001").await;
    assert_eq!(welcome.params[0], "alice_");
    // A registered guest cannot rename itself to an account either.
    let got = irc.exchange("NICK alice").await;
    assert!(got.iter().any(|m| m.command == "433"), "{got:?}");
}

#[tokio::test]
async fn a_guest_cannot_enter_other_rooms_nor_message_members_nor_use_bots() {
    let d = Daemon::start_with(GUESTS_ON).await;
    drop(d.login("alice").await);
    let mut guest = native_guest(&d, "visitor").await;
    for (line, code, field) in
        [("JOIN general", 427, "general"), ("JOIN brandnew", 427, "brandnew"), ("DM alice hello", 427, "alice")]
    {
        let r = call(&mut guest, line).await;
        assert_eq!(
            (r.fin.code, r.fin.fields.as_slice()),
            (code, [field.to_string()].as_slice()),
            "{line}: {:?}",
            r.fin
        );
        assert!(r.fin.text.as_deref().unwrap().contains("guests may not"), "{line}: {:?}", r.fin);
    }
    assert_eq!(call(&mut guest, "JOIN help").await.fin.code, 200);
    for line in ["MSG help /stock=aapl.us", "TOPIC help guests were here"] {
        let r = call(&mut guest, line).await;
        assert_eq!(r.fin.code, 427, "{line}: {:?}", r.fin);
    }
    let r = call(&mut guest, "ROOMS").await;
    assert!(r.fin.code == 200 && !r.data.iter().any(|l| l.fields[0] == "brandnew"), "guests create no rooms");

    let mut irc = Irc::guest(&d, "wanderer", "").await;
    let got = irc.exchange("JOIN #general").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].command.as_str(), got[0].params[1].as_str()), ("477", "#general"));
    assert!(got[0].params[2].contains("NickServ"), "{got:?}");
    let got = irc.exchange("PRIVMSG alice :psst").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].command.as_str(), got[0].params[1].as_str()), ("486", "alice"));

    // Where the configuration allows it, a guest may write to a member: delivered, never stored.
    let d = Daemon::start_with(&format!("{GUESTS_ON}direct_messages_to_members = true\n")).await;
    let mut alice = d.login("alice").await;
    let mut guest = native_guest(&d, "visitor").await;
    let r = call(&mut guest, "DM alice hello alice").await;
    assert_eq!((r.fin.code, r.fin.fields[0].as_str(), r.fin.fields[1].as_str()), (200, "alice", "-"), "{:?}", r.fin);
    let dm = event(&mut alice, "DM").await;
    assert_eq!(dm.fields[2..], ["~visitor".to_string(), "alice".to_string()]);
    assert_eq!(dm.text.as_deref(), Some("hello alice"));
    let r = call(&mut alice, "DM visitor hello guest").await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    assert_eq!(event(&mut guest, "DM").await.text.as_deref(), Some("hello guest"));
    assert_eq!(call(&mut alice, "HISTORY @visitor").await.fin.fields[1], "0", "a guest's DMs are not stored");
}

/// Sends `n` PINGs at once and returns how long the answers took and whether the server said to
/// slow down.
async fn ping_burst(c: &mut LineConn, n: usize) -> (Duration, bool) {
    let start = Instant::now();
    for i in 0..n {
        c.send(&format!("PING p{i}")).await.unwrap();
    }
    let mut warned = false;
    let mut answered = 0;
    while answered < n {
        match testkit::next_line(c).await {
            ServerLine::Event(e) if e.name == "NOTICE" => warned = true,
            ServerLine::Reply(r) if r.code == 200 => answered += 1,
            _ => {}
        }
    }
    (start.elapsed(), warned)
}

#[tokio::test]
async fn a_guest_is_flood_limited_at_the_guest_rate() {
    // Loopback is not exempt here; members keep the (relaxed) test rate, guests get 2 at once
    // then 4 a second.
    let d = Daemon::start_with(&format!(
        "[limits]\nexempt_loopback = false\n{GUESTS_ON}flood_burst = 2\nflood_rate_per_sec = 4.0\n"
    ))
    .await;
    let mut member = d.login("alice").await;
    let (took, warned) = ping_burst(&mut member, 10).await;
    assert!(!warned && took < Duration::from_millis(1500), "a member is not held back: {took:?}");

    let mut guest = native_guest(&d, "visitor").await;
    let (took, warned) = ping_burst(&mut guest, 10).await;
    assert!(warned, "the guest is told to slow down");
    assert!(took >= Duration::from_millis(1700), "8 lines past the burst at 4/s take 2 s, took {took:?}");

    let mut irc = Irc::guest(&d, "wanderer", "").await;
    let start = Instant::now();
    for i in 0..10 {
        irc.send(&format!("PING p{i}")).await;
    }
    let (_, before) = irc.until("PONG").await;
    let mut notices = before.iter().filter(|m| m.command == "NOTICE").count();
    for _ in 1..10 {
        let (_, before) = irc.until("PONG").await;
        notices += before.iter().filter(|m| m.command == "NOTICE").count();
    }
    assert!(notices >= 1, "the IRC guest is told to slow down");
    assert!(start.elapsed() >= Duration::from_millis(1700), "IRC guest at the guest rate: {:?}", start.elapsed());
}

#[tokio::test]
async fn a_guest_becomes_the_member_after_identify_or_login() {
    let d = Daemon::start_with(GUESTS_ON).await;
    drop(d.login("carol").await);
    drop(d.login("dave").await);
    let mut alice = d.member("alice", "help").await;

    // IRC: a guest in #help identifies with NickServ and stays in #help as carol.
    let mut irc = Irc::guest(&d, "visitor", "account-tag").await;
    irc.exchange("JOIN #help").await;
    assert_eq!(event(&mut alice, "JOIN").await.fields, ["help", "~visitor"]);
    irc.send("PRIVMSG NickServ :IDENTIFY carol password-carol").await;
    let (nick, _) = irc.until("NICK").await;
    assert_eq!(
        (nick.source.as_deref(), nick.params.as_slice()),
        (Some("visitor!visitor@chatd"), ["carol".to_string()].as_slice())
    );
    let logged_in = irc.expect("900").await;
    assert_eq!(logged_in.params[2], "carol");
    assert_eq!(event(&mut alice, "PART").await.fields, ["help", "~visitor"]);
    assert_eq!(event(&mut alice, "JOIN").await.fields, ["help", "carol"]);
    irc.send("PRIVMSG #help :now I am carol").await;
    let m = expect_line(&mut alice, "carol's line", |l| l.as_message().is_some()).await;
    assert_eq!(m.as_message().unwrap().sender, "carol", "a member now, no ~");
    let got = irc.exchange("JOIN #general").await;
    assert!(got.iter().any(|m| m.command == "JOIN"), "a member may join any room: {got:?}");
    let got = irc.exchange("WHOIS carol").await;
    assert!(got.iter().any(|m| m.command == "330"), "{got:?}");

    // Native: LOGIN turns the guest into dave, in the same rooms.
    let mut guest = native_guest(&d, "stranger").await;
    assert_eq!(call(&mut guest, "JOIN help").await.fin.code, 200);
    assert_eq!(event(&mut alice, "JOIN").await.fields, ["help", "~stranger"]);
    let r = call(&mut guest, "LOGIN dave password-dave").await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    assert_eq!(event(&mut alice, "PART").await.fields, ["help", "~stranger"]);
    assert_eq!(event(&mut alice, "JOIN").await.fields, ["help", "dave"]);
    assert_eq!(call(&mut guest, "MSG help hi as dave").await.fin.code, 200);
    let m = expect_line(&mut alice, "dave's line", |l| l.as_message().is_some()).await;
    assert_eq!(m.as_message().unwrap().sender, "dave");
    assert_eq!(call(&mut guest, "JOIN general").await.fin.code, 200);
}

#[tokio::test]
async fn a_later_account_under_a_guests_nick_does_not_inherit_its_messages() {
    let mut d = Daemon::start_with(GUESTS_ON).await;
    let mut guest = native_guest(&d, "erin").await;
    assert_eq!(call(&mut guest, "JOIN help").await.fin.code, 200);
    assert_eq!(call(&mut guest, "MSG help said by the guest").await.fin.code, 200);
    drop(guest);
    // The nick is free again once the guest is gone; an account takes it.
    let mut erin = loop {
        let mut c = d.client().await;
        let r = call(&mut c, "REGISTER erin password-erin").await;
        if r.fin.code == 200 {
            break c;
        }
        assert_eq!(r.fin.code, 410, "{:?}", r.fin);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(call(&mut erin, "JOIN help").await.fin.code, 200);
    assert_eq!(call(&mut erin, "MSG help said by the member").await.fin.code, 200);
    d.restart().await; // from the store, not the room's cache
    let mut reader = d.member("alice", "help").await;
    let history = call(&mut reader, "HISTORY help").await;
    let lines: Vec<(String, String)> =
        history.data.iter().map(|l| (l.fields[3].clone(), l.text.clone().unwrap_or_default())).collect();
    assert_eq!(
        lines,
        [
            ("~erin".to_string(), "said by the guest".to_string()),
            ("erin".to_string(), "said by the member".to_string())
        ]
    );
    // IRC: the guest's line has no account tag, the member's has.
    let mut irc = Irc::connect(&d).await;
    irc.send("CAP REQ :account-tag server-time message-tags sasl").await;
    irc.send("NICK alice").await;
    irc.send("USER alice 0 * :alice").await;
    irc.expect("CAP").await;
    irc.send("PRIVMSG NickServ :IDENTIFY alice password-alice").await;
    irc.send("CAP END").await;
    irc.expect("001").await;
    let got = irc.exchange("JOIN #help").await;
    let replay: Vec<&Message> = got.iter().filter(|m| m.command == "PRIVMSG").collect();
    assert_eq!(replay.len(), 2, "{got:?}");
    assert_eq!((tag(replay[0], "account"), replay[0].params[1].as_str()), (None, "said by the guest"));
    assert_eq!((tag(replay[1], "account"), replay[1].params[1].as_str()), (Some("erin"), "said by the member"));
}
