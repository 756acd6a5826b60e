//! The IRC front end over real TLS sockets to a real daemon: registration, capabilities, SASL and
//! the other ways to log in or register, channels, and IRC and native clients talking to each
//! other with the same message ids. Each test reads like an IRC transcript (IRC.md).

mod common;

use chatd::irc::wire::Message;
use chatd_proto::client::LineConn;
use common::irc::Irc;
use testkit::{call, expect_line, Daemon, PATIENCE};

/// Every capability a full-featured client asks for (with `sasl` added by `login`).
const FULL_CAPS: &str = "message-tags server-time echo-message labeled-response batch account-tag extended-join";

impl Irc {
    /// Registers with `caps` (space-separated) and SASL as `user` (password `password-<user>`),
    /// reading up to the end of the welcome burst.
    async fn login(d: &Daemon, user: &str, caps: &str) -> Irc {
        account(d, user).await;
        let mut c = Irc::connect(d).await;
        c.send("CAP LS 302").await;
        c.send(&format!("CAP REQ :{caps} sasl")).await;
        c.send(&format!("NICK {user}")).await;
        c.send(&format!("USER {user} 0 * :{user} the tester")).await;
        let ack = c.expect("CAP").await;
        assert_eq!(ack.params[1], "LS");
        let ack = c.expect("CAP").await;
        assert_eq!(ack.params[1], "ACK", "{ack:?}");
        c.send("AUTHENTICATE PLAIN").await;
        c.expect("AUTHENTICATE").await;
        c.send(&format!("AUTHENTICATE {}", plain(user, &format!("password-{user}")))).await;
        c.expect("903").await;
        c.send("CAP END").await;
        c.expect("001").await;
        c.expect("422").await;
        c
    }

    /// Joins and reads through the end of the names list and the history replay.
    async fn join(&mut self, channel: &str) -> Vec<Message> {
        self.exchange(&format!("JOIN {channel}")).await
    }
}

fn tag<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
    m.tags.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
}

fn has_tag(m: &Message, key: &str) -> bool {
    m.tags.iter().any(|(k, _)| k == key)
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn plain(user: &str, password: &str) -> String {
    base64(format!("{user}\0{user}\0{password}").as_bytes())
}

/// Creates `user`'s account (password `password-<user>`) through the native protocol.
async fn account(d: &Daemon, user: &str) {
    d.login(user).await;
}

fn is_server_time(t: &str) -> bool {
    // 2026-11-29T04:48:06.123Z
    t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn registration_burst_without_caps() {
    let d = Daemon::start().await;
    let mut c = Irc::connect(&d).await;
    c.send("NICK Alice").await;
    c.send("USER alice 0 * :Alice Liddell").await;
    let welcome = c.next().await;
    assert_eq!(welcome.command, "001", "{welcome:?}");
    assert_eq!(welcome.source.as_deref(), Some("irc.chatd"));
    assert_eq!(welcome.params[0], "alice", "nicks are lower-cased like account names");
    assert!(welcome.params[1].contains("chatd Network"), "{welcome:?}");
    let (_, burst) = c.until("422").await;
    let commands: Vec<&str> = burst.iter().map(|m| m.command.as_str()).collect();
    assert_eq!(&commands[..3], ["002", "003", "004"]);
    let isupport: Vec<&str> = burst
        .iter()
        .filter(|m| m.command == "005")
        .flat_map(|m| m.params[1..m.params.len() - 1].iter())
        .map(|s| s.as_str())
        .collect();
    for token in [
        "CASEMAPPING=ascii",
        "CHANTYPES=#",
        "NETWORK=chatd",
        "NICKLEN=24",
        "CHANNELLEN=33",
        "UTF8ONLY",
        "PREFIX=(o)@",
        "BOT=B",
    ] {
        assert!(isupport.contains(&token), "005 lacks {token}: {isupport:?}");
    }
    for lusers in ["251", "254", "255", "265", "266"] {
        assert!(commands.contains(&lusers), "no {lusers} in {commands:?}");
    }
    let notice = c.next().await;
    assert_eq!(notice.command, "NOTICE");
    assert!(notice.params[1].contains("NickServ IDENTIFY"), "{notice:?}");

    c.send("PING :some token").await;
    let pong = c.next().await;
    assert_eq!(pong.command, "PONG");
    assert_eq!(pong.params, ["irc.chatd", "some token"]);

    // Not logged in: only registration and identification.
    for line in ["JOIN #general", "PRIVMSG #general :hi", "LIST", "WHOIS alice", "TOPIC #general"] {
        let got = c.exchange(line).await;
        assert_eq!(got.len(), 1, "{line}: {got:?}");
        assert_eq!(got[0].command, "451", "{line}: {got:?}");
        assert!(got[0].params[1].contains("NickServ"), "{got:?}");
    }
    c.send("FROBNICATE").await;
    let got = c.exchange("FROBNICATE").await;
    assert!(got.iter().all(|m| m.command == "451"), "unknown commands also wait for a login: {got:?}");
}

#[tokio::test]
async fn cap_negotiation_holds_registration_until_cap_end() {
    let d = Daemon::start().await;
    account(&d, "alice").await;
    let mut c = Irc::connect(&d).await;
    c.send("CAP LS 302").await;
    let ls = c.next().await;
    assert_eq!(ls.command, "CAP");
    assert_eq!(&ls.params[..2], ["*", "LS"]);
    let offered: Vec<&str> = ls.params[2].split(' ').collect();
    for cap in [
        "sasl=PLAIN",
        "message-tags",
        "server-time",
        "echo-message",
        "labeled-response",
        "batch",
        "account-tag",
        "cap-notify",
    ] {
        assert!(offered.contains(&cap), "CAP LS lacks {cap}: {offered:?}");
    }
    assert!(offered.iter().any(|c| c.starts_with("draft/account-registration")), "{offered:?}");
    c.send("NICK alice").await;
    c.send("USER alice 0 * :Alice").await;
    let got = c.exchange("CAP REQ :server-time frobnicate").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].params[1..], ["NAK", "server-time frobnicate"], "NICK+USER must not register while CAP is open");
    let got = c.exchange("CAP REQ :server-time echo-message").await;
    assert_eq!(got[0].params[1..], ["ACK", "server-time echo-message"]);
    let got = c.exchange("CAP LIST").await;
    let listed: Vec<&str> = got[0].params[2].split(' ').collect();
    assert!(
        listed.contains(&"server-time") && listed.contains(&"echo-message") && listed.contains(&"cap-notify"),
        "{got:?}"
    );
    let got = c.exchange("CAP REQ :-cap-notify").await;
    assert_eq!(got[0].params[1], "NAK", "302 clients keep cap-notify: {got:?}");
    let got = c.exchange("CAP FROB").await;
    assert_eq!(got[0].command, "410");
    let got = c.exchange("CAP END").await;
    assert_eq!(got[0].command, "001", "{got:?}");
}

#[tokio::test]
async fn sasl_plain_logs_in_and_failures_are_told() {
    let d = Daemon::start().await;
    account(&d, "alice").await;
    let mut c = Irc::connect(&d).await;
    c.send("CAP LS 302").await;
    c.send("CAP REQ sasl").await;
    c.send("NICK Somebody").await;
    c.send("USER x 0 * :x").await;
    c.expect("CAP").await;
    c.expect("CAP").await;

    let got = c.exchange("AUTHENTICATE SCRAM-SHA-256").await;
    let codes: Vec<&str> = got.iter().map(|m| m.command.as_str()).collect();
    assert_eq!(codes, ["908", "904"]);
    assert_eq!(got[0].params[1], "PLAIN");

    let got = c.exchange("AUTHENTICATE PLAIN").await;
    assert_eq!(got[0].command, "AUTHENTICATE");
    assert_eq!(got[0].params, ["+"]);
    let got = c.exchange(&format!("AUTHENTICATE {}", plain("alice", "wrong-password"))).await;
    assert_eq!(got[0].command, "904", "{got:?}");
    assert_eq!(got[0].params, ["somebody", "SASL authentication failed"]);

    c.exchange("AUTHENTICATE PLAIN").await;
    let got = c.exchange("AUTHENTICATE *").await;
    assert_eq!(got[0].command, "906");

    c.exchange("AUTHENTICATE PLAIN").await;
    let got = c.exchange(&format!("AUTHENTICATE {}", "A".repeat(401))).await;
    assert_eq!(got[0].command, "905");

    c.exchange("AUTHENTICATE PLAIN").await;
    let got = c.exchange(&format!("AUTHENTICATE {}", plain("alice", "password-alice"))).await;
    let codes: Vec<&str> = got.iter().map(|m| m.command.as_str()).collect();
    assert_eq!(codes, ["900", "903"], "{got:?}");
    assert_eq!(got[0].params, ["alice", "alice!alice@chatd", "alice", "You are now logged in as alice"]);
    let got = c.exchange("AUTHENTICATE PLAIN").await;
    assert_eq!(got[0].command, "907");

    c.send("CAP END").await;
    let welcome = c.expect("001").await;
    assert_eq!(welcome.params[0], "alice", "the nick is the account name");
    c.expect("422").await;
    let got = c.exchange("JOIN #general").await;
    assert_eq!(got[0].command, "JOIN", "{got:?}");
    // The nick stays the account's.
    let got = c.exchange("NICK bob").await;
    assert_eq!(got[0].command, "432", "{got:?}");
}

#[tokio::test]
async fn pass_account_password_logs_in_and_a_bad_one_closes() {
    let d = Daemon::start().await;
    account(&d, "alice").await;
    let mut c = Irc::connect(&d).await;
    c.send("PASS alice:password-alice").await;
    c.send("NICK whoever").await;
    c.send("USER alice 0 * :Alice").await;
    let (welcome, before) = c.until("001").await;
    assert!(before.iter().any(|m| m.command == "900"), "{before:?}");
    assert_eq!(welcome.params[0], "alice");
    let (_, rest) = c.until("422").await;
    assert!(!rest.iter().any(|m| m.command == "NOTICE"), "a logged-in client is not told to log in");
    assert_eq!(c.exchange("JOIN #general").await[0].command, "JOIN");

    // A plain PASS is the password of the account named by NICK.
    let mut c = Irc::connect(&d).await;
    c.send("PASS password-alice").await;
    c.send("NICK alice").await;
    c.send("USER alice 0 * :Alice").await;
    assert_eq!(c.expect("001").await.params[0], "alice");

    let mut c = Irc::connect(&d).await;
    c.send("PASS alice:not-her-password").await;
    c.send("NICK alice").await;
    c.send("USER alice 0 * :Alice").await;
    let (error, before) = c.until("ERROR").await;
    assert!(before.iter().any(|m| m.command == "464"), "{before:?}");
    assert!(!before.iter().any(|m| m.command == "001"), "{before:?}");
    assert!(error.params[0].contains("Closing link"), "{error:?}");
    assert!(c.next_or_close().await.is_none(), "the connection closes after a bad PASS");
}

#[tokio::test]
async fn nickserv_register_and_identify() {
    let d = Daemon::start().await;
    let mut c = Irc::connect(&d).await;
    c.send("NICK carol").await;
    c.send("USER carol 0 * :Carol").await;
    c.expect("422").await;
    c.expect("NOTICE").await;
    let got = c.exchange("PRIVMSG NickServ :REGISTER short").await;
    assert_eq!(got[0].source.as_deref(), Some("NickServ!NickServ@services.chatd"));
    assert_eq!(got[0].command, "NOTICE");
    let got = c.exchange("PRIVMSG NickServ :REGISTER carols-password").await;
    assert_eq!(got[0].command, "NOTICE");
    assert!(got[0].params[1].contains("created"), "{got:?}");
    assert_eq!(got[1].command, "900");
    assert_eq!(c.exchange("JOIN #general").await[0].command, "JOIN");

    // Another connection: a different nick, then IDENTIFY with the account: the nick changes.
    let mut c2 = Irc::connect(&d).await;
    c2.send("NICK guest").await;
    c2.send("USER guest 0 * :Guest").await;
    c2.expect("422").await;
    c2.expect("NOTICE").await;
    let got = c2.exchange("PRIVMSG NickServ :IDENTIFY carol wrong-password").await;
    assert!(got[0].params[1].contains("failed"), "{got:?}");
    let got = c2.exchange("PRIVMSG NickServ :IDENTIFY carol carols-password").await;
    let nick = got.iter().find(|m| m.command == "NICK").expect("a NICK change");
    assert_eq!(nick.source.as_deref(), Some("guest!guest@chatd"));
    assert_eq!(nick.params, ["carol"]);
    assert!(got.iter().any(|m| m.command == "900"), "{got:?}");
    let got = c2.exchange("PRIVMSG NickServ :REGISTER another-password").await;
    assert!(got[0].params[1].contains("already logged in"), "{got:?}");
}

#[tokio::test]
async fn account_registration_register_command() {
    let d = Daemon::start().await;
    account(&d, "alice").await;
    let mut c = Irc::connect(&d).await;
    c.send("CAP LS 302").await;
    c.send("CAP REQ :draft/account-registration labeled-response batch").await;
    c.expect("CAP").await;
    c.expect("CAP").await;
    let got = c.exchange("REGISTER * * some-password").await;
    assert_eq!(got[0].command, "FAIL");
    assert_eq!(got[0].params[..3], ["REGISTER", "NEED_NICK", "*"]);
    c.send("NICK dave").await;
    let got = c.exchange("REGISTER alice * some-password").await;
    assert_eq!(got[0].params[..3], ["REGISTER", "ACCOUNT_EXISTS", "alice"], "{got:?}");
    let got = c.exchange("REGISTER 9lives * some-password").await;
    assert_eq!(got[0].params[..3], ["REGISTER", "BAD_ACCOUNT_NAME", "9lives"], "{got:?}");
    let got = c.exchange("REGISTER * * short").await;
    assert_eq!(got[0].params[..3], ["REGISTER", "UNACCEPTABLE_PASSWORD", "dave"], "{got:?}");
    // Before connection registration completes (before-connect), labeled.
    c.send("@label=r1 REGISTER * dave@example.org daves-password").await;
    let start = c.next().await;
    assert_eq!(start.command, "BATCH");
    assert_eq!(tag(&start, "label"), Some("r1"));
    assert_eq!(start.params[1], "labeled-response");
    let success = c.next().await;
    assert_eq!(success.command, "REGISTER");
    assert_eq!(success.params[..2], ["SUCCESS", "dave"]);
    assert_eq!(c.next().await.command, "900");
    assert_eq!(c.next().await.command, "BATCH");
    let got = c.exchange("REGISTER * * daves-password").await;
    assert_eq!(got[0].params[..2], ["REGISTER", "ALREADY_AUTHENTICATED"], "{got:?}");
    c.send("USER dave 0 * :Dave").await;
    c.send("CAP END").await;
    assert_eq!(c.expect("001").await.params[0], "dave");
    // The account works over the native protocol too.
    let mut native = d.client().await;
    assert_eq!(call(&mut native, "LOGIN dave daves-password").await.fin.code, 200);
}

#[tokio::test]
async fn irc_and_native_talk_with_the_same_ids() {
    let d = Daemon::start().await;
    let mut bob = d.member("bob", "general").await;
    let mut alice = Irc::login(&d, "alice", FULL_CAPS).await;
    let got = alice.join("#General").await;
    assert_eq!(got[0].command, "JOIN");
    assert_eq!(got[0].source.as_deref(), Some("alice!alice@chatd"));
    assert_eq!(got[0].params, ["#general", "alice", "alice the tester"], "extended-join");
    assert_eq!(tag(&got[0], "account"), Some("alice"));
    let names = got.iter().find(|m| m.command == "353").expect("353");
    assert_eq!(names.params, ["alice", "=", "#general", "alice bob"]);
    assert!(got.iter().any(|m| m.command == "366" && m.params[1] == "#general"));
    expect_line(&mut bob, "* JOIN general alice", |l| l.is_event("JOIN")).await;

    // IRC → native: the echo (labeled) carries the id bob sees.
    alice.send("@label=m1 PRIVMSG #general :hi bob, from irssi").await;
    let echo = alice.expect("PRIVMSG").await;
    assert_eq!(tag(&echo, "label"), Some("m1"));
    assert_eq!(echo.params, ["#general", "hi bob, from irssi"]);
    assert_eq!(echo.source.as_deref(), Some("alice!alice@chatd"));
    let time = tag(&echo, "time").expect("server-time");
    assert!(is_server_time(time), "{time}");
    let msgid = tag(&echo, "msgid").expect("msgid").to_string();
    let got = expect_line(&mut bob, "alice's message", |l| l.is_event("MSG")).await;
    let m = got.as_message().unwrap();
    assert_eq!((m.sender.as_str(), m.text.as_str()), ("alice", "hi bob, from irssi"));
    assert_eq!(m.id.unwrap().to_string(), msgid);
    assert_eq!(m.time, time);

    // native → IRC.
    let ack = call(&mut bob, "MSG general hello alice").await;
    let from_bob = alice.expect("PRIVMSG").await;
    assert_eq!(from_bob.source.as_deref(), Some("bob!bob@chatd"));
    assert_eq!(from_bob.params, ["#general", "hello alice"]);
    assert_eq!(tag(&from_bob, "msgid"), Some(ack.fin.fields[1].as_str()));
    assert_eq!(tag(&from_bob, "time"), Some(ack.fin.fields[2].as_str()));
    assert_eq!(tag(&from_bob, "account"), Some("bob"));
    assert!(!has_tag(&from_bob, "label") && !has_tag(&from_bob, "bot"));

    // Without echo-message a labeled PRIVMSG is acknowledged with ACK once stored.
    let mut carol = Irc::login(&d, "carol", "labeled-response batch").await;
    carol.join("#general").await;
    carol.send("@label=c1 PRIVMSG #general :no echo for me").await;
    let ack = carol.next().await;
    assert_eq!(ack.command, "ACK");
    assert_eq!(tag(&ack, "label"), Some("c1"));
    let plain = alice.expect("PRIVMSG").await;
    assert_eq!(plain.params[1], "no echo for me");
    // A client with no tag caps gets bare lines.
    let got = expect_line(&mut bob, "carol's message", |l| l.is_event("MSG")).await;
    assert_eq!(got.as_message().unwrap().sender, "carol");
    call(&mut bob, "MSG general bare").await;
    let bare = carol.expect("PRIVMSG").await;
    assert!(bare.tags.is_empty(), "{bare:?}");
}

#[tokio::test]
async fn labeled_responses_ack_single_lines_and_batches() {
    let d = Daemon::start().await;
    let mut c = Irc::login(&d, "alice", FULL_CAPS).await;
    c.send("@label=p1 PING :tok").await;
    let pong = c.next().await;
    assert_eq!((pong.command.as_str(), tag(&pong, "label")), ("PONG", Some("p1")));
    c.send("@label=p2 PONG :whatever").await;
    let ack = c.next().await;
    assert_eq!((ack.command.as_str(), tag(&ack, "label")), ("ACK", Some("p2")));
    assert!(ack.params.is_empty());
    c.send("@label=w1 WHOIS alice").await;
    let start = c.next().await;
    assert_eq!(start.command, "BATCH");
    assert_eq!(tag(&start, "label"), Some("w1"));
    let id = start.params[0].strip_prefix('+').expect("+id").to_string();
    assert_eq!(start.params[1], "labeled-response");
    let mut codes = Vec::new();
    loop {
        let m = c.next().await;
        if m.command == "BATCH" {
            assert_eq!(m.params, [format!("-{id}")]);
            break;
        }
        assert_eq!(tag(&m, "batch"), Some(id.as_str()), "{m:?}");
        assert!(!has_tag(&m, "label"));
        codes.push(m.command);
    }
    assert_eq!(codes.first().map(String::as_str), Some("311"));
    assert_eq!(codes.last().map(String::as_str), Some("318"));
    assert!(codes.contains(&"330".to_string()));
    // Errors carry the label too.
    c.send("@label=e1 PRIVMSG #nowhere :hi").await;
    let err = c.next().await;
    assert_eq!(tag(&err, "label"), Some("e1"));
    assert!(err.command == "404" || err.command == "403", "{err:?}");
}

#[tokio::test]
async fn join_replays_history_in_a_chathistory_batch() {
    let d = Daemon::start().await;
    let mut bob = d.member("bob", "general").await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(call(&mut bob, &format!("MSG general message {i}")).await.fin.fields[1].clone());
    }
    let mut alice = Irc::login(&d, "alice", "batch server-time message-tags").await;
    let got = alice.join("#general").await;
    let start = got.iter().position(|m| m.command == "BATCH").expect("a batch");
    assert!(got[..start].iter().any(|m| m.command == "366"), "names before the replay: {got:?}");
    assert_eq!(got[start].params[1..], ["chathistory", "#general"]);
    let id = got[start].params[0].strip_prefix('+').unwrap();
    let replay: Vec<&Message> = got[start + 1..].iter().take_while(|m| m.command == "PRIVMSG").collect();
    let texts: Vec<&str> = replay.iter().map(|m| m.params[1].as_str()).collect();
    assert_eq!(texts, ["message 1", "message 2", "message 3"]);
    let msgids: Vec<&str> = replay.iter().map(|m| tag(m, "msgid").unwrap()).collect();
    assert_eq!(msgids, ids);
    assert!(replay.iter().all(|m| tag(m, "batch") == Some(id) && tag(m, "time").is_some_and(is_server_time)));
    assert_eq!(got[start + 4].params, [format!("-{id}")]);

    // Without batch and server-time: plain lines.
    let mut carol = Irc::login(&d, "carol", "message-tags").await;
    let got = carol.join("#general").await;
    assert!(!got.iter().any(|m| m.command == "BATCH"), "{got:?}");
    let texts: Vec<&str> = got.iter().filter(|m| m.command == "PRIVMSG").map(|m| m.params[1].as_str()).collect();
    assert_eq!(texts, ["message 1", "message 2", "message 3"]);
}

#[tokio::test]
async fn stock_bot_lines_are_relayed_and_the_answer_is_tagged_bot() {
    let d = Daemon::start().await;
    let mut bot = d.client().await;
    assert_eq!(call(&mut bot, &format!("LOGIN stockbot {}", d.bot_password())).await.fin.code, 200);
    assert_eq!(call(&mut bot, "SERVE stock").await.fin.code, 200);
    let mut alice = Irc::login(&d, "alice", FULL_CAPS).await;
    let mut carol = Irc::login(&d, "carol", "message-tags server-time").await;
    alice.join("#general").await;
    carol.join("#general").await;
    alice.expect("JOIN").await; // carol's

    alice.send("@label=s1 PRIVMSG #general :/stock=aapl.us").await;
    let echo = alice.expect("PRIVMSG").await;
    assert_eq!(echo.params, ["#general", "/stock=aapl.us"]);
    assert_eq!(tag(&echo, "label"), Some("s1"));
    assert!(!has_tag(&echo, "msgid"), "a bot command line is not stored: {echo:?}");
    assert!(tag(&echo, "time").is_some_and(is_server_time));
    let cmd = expect_line(&mut bot, "the command at the bot", |l| l.is_event("CMD")).await;
    let m = cmd.as_message().unwrap();
    assert_eq!((m.room.as_str(), m.sender.as_str(), m.text.as_str()), ("general", "alice", "/stock=aapl.us"));
    let relayed = carol.expect("PRIVMSG").await;
    assert_eq!(relayed.source.as_deref(), Some("alice!alice@chatd"));
    assert_eq!(relayed.params, ["#general", "/stock=aapl.us"]);

    call(&mut bot, "MSG general AAPL.US quote is $93.42 per share").await;
    let answer = alice.expect("PRIVMSG").await;
    assert_eq!(answer.source.as_deref(), Some("stockbot!stockbot@chatd"));
    assert_eq!(answer.params[1], "AAPL.US quote is $93.42 per share");
    assert!(has_tag(&answer, "bot"), "{answer:?}");
    assert_eq!(tag(&answer, "account"), Some("stockbot"));

    // No bot for the word: the sender is told.
    let got = alice.exchange("PRIVMSG #general :/weather=paris").await;
    assert!(got.iter().any(|m| m.command == "NOTICE" && m.params[1].contains("/weather")), "{got:?}");
}

#[tokio::test]
async fn part_and_quit() {
    let d = Daemon::start().await;
    let mut bob = d.member("bob", "general").await;
    let mut alice = Irc::login(&d, "alice", "").await;
    alice.join("#general").await;
    expect_line(&mut bob, "* JOIN general alice", |l| l.is_event("JOIN")).await;
    let got = alice.exchange("PART #general :see you").await;
    assert_eq!(got[0].command, "PART");
    assert_eq!(got[0].params, ["#general", "see you"]);
    expect_line(&mut bob, "* PART general alice", |l| l.is_event("PART")).await;
    let got = alice.exchange("PART #general").await;
    assert_eq!(got[0].command, "442");
    let got = alice.exchange("PART #no-such-room,foo").await;
    assert_eq!(got[0].command, "442");
    assert_eq!(got[1].command, "403");

    alice.join("#general").await;
    call(&mut bob, "MSG general still there?").await;
    alice.expect("PRIVMSG").await;
    // Native events reach IRC: bob parts and joins.
    call(&mut bob, "PART general").await;
    let part = alice.expect("PART").await;
    assert_eq!(part.source.as_deref(), Some("bob!bob@chatd"));
    call(&mut bob, "JOIN general").await;
    let join = alice.expect("JOIN").await;
    assert_eq!((join.source.as_deref(), join.params[0].as_str()), (Some("bob!bob@chatd"), "#general"));

    alice.send("QUIT :bye now").await;
    let error = alice.expect("ERROR").await;
    assert!(error.params[0].contains("bye now"), "{error:?}");
    assert!(alice.next_or_close().await.is_none());
    expect_line(&mut bob, "* PART general alice", |l| l.is_event("PART")).await;
}

#[tokio::test]
async fn who_whois_mode_list_away_names_topic() {
    let d = Daemon::start().await;
    let _bob = d.member("bob", "general").await;
    let mut alice = Irc::login(&d, "alice", "").await;
    alice.join("#general").await;

    let got = alice.exchange("WHO #general").await;
    let who: Vec<&Message> = got.iter().filter(|m| m.command == "352").collect();
    let nicks: Vec<&str> = who.iter().map(|m| m.params[5].as_str()).collect();
    assert_eq!(nicks, ["alice", "bob"]);
    assert_eq!(who[0].params, ["alice", "#general", "alice", "chatd", "irc.chatd", "alice", "H", "0 alice"]);
    assert_eq!(got.last().unwrap().command, "315");

    let got = alice.exchange("NAMES #general").await;
    assert_eq!(got[0].params, ["alice", "=", "#general", "alice bob"]);
    assert_eq!(got[1].command, "366");

    let got = alice.exchange("MODE #general").await;
    assert_eq!(got[0].command, "324");
    assert_eq!(got[0].params, ["alice", "#general", "+n"]);
    let got = alice.exchange("MODE #general b").await;
    assert_eq!(got[0].command, "368");
    let got = alice.exchange("MODE #general +o bob").await;
    assert_eq!(got[0].command, "482");
    let got = alice.exchange("MODE alice").await;
    assert_eq!(got[0].params, ["alice", "+"]);
    let got = alice.exchange("MODE alice +i").await;
    assert_eq!(got[0].command, "MODE");
    assert_eq!(alice.exchange("MODE alice").await[0].params, ["alice", "+i"]);
    assert_eq!(alice.exchange("MODE bob").await[0].command, "502");

    let got = alice.exchange("LIST").await;
    let listed: Vec<(&str, &str)> =
        got.iter().filter(|m| m.command == "322").map(|m| (m.params[1].as_str(), m.params[2].as_str())).collect();
    assert!(listed.contains(&("#general", "2")), "{listed:?}");
    assert!(listed.contains(&("#random", "0")), "{listed:?}");
    assert_eq!(got.last().unwrap().command, "323");

    assert_eq!(alice.exchange("AWAY :lunch").await[0].command, "306");
    let got = alice.exchange("WHOIS alice").await;
    let codes: Vec<&str> = got.iter().map(|m| m.command.as_str()).collect();
    assert!(codes.contains(&"301") && codes.contains(&"319") && codes.contains(&"312"), "{codes:?}");
    assert_eq!(got.iter().find(|m| m.command == "319").unwrap().params[2], "#general");
    assert_eq!(alice.exchange("AWAY").await[0].command, "305");

    let got = alice.exchange("TOPIC #general").await;
    assert_eq!(got[0].command, "331");
    assert_eq!(alice.exchange("TOPIC #random").await[0].command, "442");
    assert_eq!(alice.exchange("FROBNICATE").await[0].command, "421");
    assert_eq!(alice.exchange("PRIVMSG").await[0].command, "411");
    assert_eq!(alice.exchange("PRIVMSG #general").await[0].command, "412");
    assert_eq!(alice.exchange("PRIVMSG #random :not a member").await[0].command, "404");
    assert_eq!(alice.exchange("JOIN #bad!name").await[0].command, "403");
    assert_eq!(alice.exchange("USER a 0 * :again").await[0].command, "462");
}

#[tokio::test]
async fn a_long_line_gets_417_and_the_connection_goes_on() {
    let d = Daemon::start().await;
    let mut alice = Irc::login(&d, "alice", "message-tags").await;
    alice.join("#general").await;
    let long = format!("PRIVMSG #general :{}", "x".repeat(600));
    let got = alice.exchange(&long).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].command, "417");
    // Just within the limit (510 bytes before CRLF), with a large tag section: fine.
    let text = "y".repeat(510 - "PRIVMSG #general :".len());
    let tags = format!("@+example={}", "t".repeat(3000));
    let got = alice.exchange(&format!("{tags} PRIVMSG #general :{text}")).await;
    assert!(got.is_empty(), "{got:?}");
    // Far beyond any limit: 417 once, then the connection still works.
    let got = alice.exchange(&"z".repeat(20_000)).await;
    assert_eq!(got.iter().filter(|m| m.command == "417").count(), 1, "{got:?}");
    let got = alice.exchange("NAMES #general").await;
    assert_eq!(got[0].command, "353");
}

#[tokio::test]
async fn plaintext_to_the_irc_tls_port_is_told_in_irc() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start().await;
    let mut tcp = tokio::net::TcpStream::connect(&d.irc_addr).await.unwrap();
    tcp.write_all(b"NICK alice\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("ERROR :"), "{got}");
}

#[tokio::test]
async fn direct_messages_between_irc_and_native() {
    let d = Daemon::start().await;
    let mut bob = d.login("bob").await;
    let mut alice = Irc::login(&d, "alice", FULL_CAPS).await;
    alice.send("@label=d1 PRIVMSG Bob :hi bob, just us").await;
    let echo = alice.expect("PRIVMSG").await;
    assert_eq!(tag(&echo, "label"), Some("d1"));
    assert_eq!(echo.params, ["bob", "hi bob, just us"]);
    let msgid = tag(&echo, "msgid").unwrap().to_string();
    let got = expect_line(&mut bob, "the DM", |l| l.is_event("DM")).await;
    let chatd_proto::line::ServerLine::Event(e) = got else { unreachable!() };
    assert_eq!(e.fields[0], msgid);
    assert_eq!(e.fields[2..], ["alice", "bob"]);

    let ack = call(&mut bob, "DM alice hello alice").await;
    let from_bob = alice.expect("PRIVMSG").await;
    assert_eq!(from_bob.source.as_deref(), Some("bob!bob@chatd"));
    assert_eq!(from_bob.params, ["alice", "hello alice"]);
    assert_eq!(tag(&from_bob, "msgid"), Some(ack.fin.fields[1].as_str()));

    let got = alice.exchange("PRIVMSG nosuchuser :hello?").await;
    assert_eq!(got[0].command, "401");
    assert_eq!(got[0].params[1], "nosuchuser");
}

#[tokio::test]
async fn topics_are_shown_on_join_and_set_by_members() {
    let d = Daemon::start().await;
    let mut bob = d.member("bob", "general").await;
    let mut alice = Irc::login(&d, "alice", "server-time").await;
    alice.join("#general").await;
    let got = alice.exchange("TOPIC #general :Welcome; be nice").await;
    assert_eq!(got[0].command, "TOPIC");
    assert_eq!(got[0].source.as_deref(), Some("alice!alice@chatd"));
    assert_eq!(got[0].params, ["#general", "Welcome; be nice"]);
    let e = expect_line(&mut bob, "* TOPIC", |l| l.is_event("TOPIC")).await;
    let chatd_proto::line::ServerLine::Event(e) = e else { unreachable!() };
    assert_eq!(e.text.as_deref(), Some("Welcome; be nice"));
    let got = alice.exchange("TOPIC #general").await;
    assert_eq!(got[0].command, "332");
    assert_eq!(got[0].params, ["alice", "#general", "Welcome; be nice"]);
    assert_eq!(got[1].command, "333");
    assert_eq!(got[1].params[2], "alice");
    assert!(got[1].params[3].parse::<u64>().is_ok_and(|t| t > 1_700_000_000), "{got:?}");

    // A native topic change reaches IRC; a new IRC member sees the topic on JOIN.
    call(&mut bob, "TOPIC general Release day").await;
    let topic = alice.expect("TOPIC").await;
    assert_eq!(topic.source.as_deref(), Some("bob!bob@chatd"));
    assert_eq!(topic.params, ["#general", "Release day"]);
    assert!(tag(&topic, "time").is_some_and(is_server_time));
    let mut carol = Irc::login(&d, "carol", "").await;
    let got = carol.join("#general").await;
    let codes: Vec<&str> = got.iter().map(|m| m.command.as_str()).collect();
    assert_eq!(&codes[..5], ["JOIN", "332", "333", "353", "366"], "{got:?}");
    let got = carol.exchange(&format!("TOPIC #general :{}", "x".repeat(400))).await;
    assert_eq!(got[0].command, "FAIL", "{got:?}");
}

#[tokio::test]
async fn whois_and_who_of_other_users() {
    let d = Daemon::start().await;
    let mut bob = Irc::login(&d, "bob", "").await;
    bob.join("#general").await;
    bob.exchange("AWAY :gone fishing").await;
    let mut alice = Irc::login(&d, "alice", "").await;
    alice.join("#general").await;
    let got = alice.exchange("WHOIS bob").await;
    let codes: Vec<&str> = got.iter().map(|m| m.command.as_str()).collect();
    assert_eq!(codes, ["311", "319", "312", "301", "330", "318"], "{got:?}");
    assert_eq!(got[1].params[2], "#general");
    assert_eq!(got[3].params[2], "gone fishing");
    let got = alice.exchange("WHO #general").await;
    let flags: Vec<(&str, &str)> =
        got.iter().filter(|m| m.command == "352").map(|m| (m.params[5].as_str(), m.params[6].as_str())).collect();
    assert_eq!(flags, [("alice", "H"), ("bob", "G")]);
    let got = alice.exchange("WHOIS nosuchuser").await;
    assert_eq!(got.iter().map(|m| m.command.as_str()).collect::<Vec<_>>(), ["401", "318"]);
    let mut bot = d.client().await;
    call(&mut bot, &format!("LOGIN stockbot {}", d.bot_password())).await;
    let got = alice.exchange("WHOIS stockbot").await;
    assert!(got.iter().any(|m| m.command == "335"), "bots are marked: {got:?}");
}

#[tokio::test]
async fn chathistory_pages_by_msgid_without_skips_or_repeats() {
    let d = Daemon::start().await;
    let mut bob = d.member("bob", "general").await;
    let mut ids = Vec::new();
    for i in 1..=12 {
        ids.push(call(&mut bob, &format!("MSG general m{i}")).await.fin.fields[1].clone());
    }
    let mut alice = Irc::login(&d, "alice", "draft/chathistory batch server-time message-tags").await;
    let got = alice.join("#general").await;
    assert!(!got.iter().any(|m| m.command == "PRIVMSG" || m.command == "BATCH"), "no replay with chathistory: {got:?}");
    let isupport = {
        let mut c = Irc::connect(&d).await;
        c.send("NICK xy").await;
        c.send("USER x 0 * :x").await;
        let (_, burst) = c.until("422").await;
        burst.into_iter().filter(|m| m.command == "005").flat_map(|m| m.params).collect::<Vec<_>>()
    };
    assert!(
        isupport.contains(&"CHATHISTORY=50".to_string())
            && isupport.contains(&"MSGREFTYPES=msgid,timestamp".to_string())
    );

    async fn page(c: &mut Irc, line: &str) -> Vec<String> {
        let got = c.exchange(line).await;
        assert_eq!(got.first().map(|m| m.command.as_str()), Some("BATCH"), "{line}: {got:?}");
        assert_eq!(got[0].params[1..], ["chathistory", "#general"]);
        assert_eq!(got.last().unwrap().command, "BATCH");
        got[1..got.len() - 1].iter().map(|m| tag(m, "msgid").unwrap().to_string()).collect()
    }
    let latest = page(&mut alice, "CHATHISTORY LATEST #general * 5").await;
    assert_eq!(latest, ids[7..]);
    let mut seen = latest.clone();
    let mut oldest = latest[0].clone();
    loop {
        let older = page(&mut alice, &format!("CHATHISTORY BEFORE #general msgid={oldest} 5")).await;
        let Some(first) = older.first() else { break };
        oldest = first.clone();
        seen.splice(0..0, older);
    }
    assert_eq!(seen, ids, "backwards by msgid");
    let after = page(&mut alice, &format!("CHATHISTORY AFTER #general msgid={} 3", ids[2])).await;
    assert_eq!(after, ids[3..6]);
    let around = page(&mut alice, &format!("CHATHISTORY AROUND #general msgid={} 4", ids[5])).await;
    assert_eq!(around, ids[3..7]);
    let between = page(&mut alice, &format!("CHATHISTORY BETWEEN #general msgid={} msgid={} 50", ids[1], ids[5])).await;
    assert_eq!(between, ids[2..5]);
    let all = page(&mut alice, "CHATHISTORY AFTER #general timestamp=2000-01-01T00:00:00.000Z 50").await;
    assert_eq!(all, ids);

    let fail = |got: &Vec<Message>| got[0].params[..2].iter().map(String::clone).collect::<Vec<_>>();
    let got = alice.exchange("CHATHISTORY FROB #general * 5").await;
    assert_eq!(fail(&got), ["CHATHISTORY", "UNKNOWN_COMMAND"]);
    let got = alice.exchange("CHATHISTORY BEFORE #general").await;
    assert_eq!(fail(&got), ["CHATHISTORY", "NEED_MORE_PARAMS"]);
    let got = alice.exchange("CHATHISTORY BEFORE #general bogus 5").await;
    assert_eq!(fail(&got), ["CHATHISTORY", "INVALID_PARAMS"]);
    let got = alice.exchange("CHATHISTORY LATEST #random * 5").await;
    assert_eq!(fail(&got), ["CHATHISTORY", "INVALID_TARGET"], "not a member");

    call(&mut bob, "DM alice private words").await;
    alice.expect("PRIVMSG").await;
    let got = alice
        .exchange("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2100-01-01T00:00:00.000Z 10")
        .await;
    assert_eq!(got[0].params[1], "draft/chathistory-targets", "{got:?}");
    let targets: Vec<&str> = got.iter().filter(|m| m.command == "CHATHISTORY").map(|m| m.params[1].as_str()).collect();
    assert_eq!(targets, ["#general", "bob"], "{got:?}");
    let got = alice.exchange("CHATHISTORY LATEST bob * 10").await;
    let dm: Vec<&Message> = got.iter().filter(|m| m.command == "PRIVMSG").collect();
    assert_eq!(dm.len(), 1);
    assert_eq!(dm[0].params, ["alice", "private words"]);
}

#[tokio::test]
async fn a_plaintext_irc_listener_on_loopback_works() {
    let d = Daemon::start_with("[irc]\nplain_listen = \"127.0.0.1:0\"").await;
    let addr = d.irc_plain_addr.clone().expect("chatd listening irc-plain");
    let mut c = Irc { conn: LineConn::connect_plain(&addr).await.unwrap() };
    c.send("NICK alice").await;
    c.send("USER alice 0 * :Alice").await;
    assert_eq!(c.next().await.command, "001");
}
