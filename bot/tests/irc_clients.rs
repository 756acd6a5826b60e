//! The product end to end over IRC, with real clients from Debian: irssi (in tmux) and WeeChat
//! (headless) log in to chatd's IRC listener over verified TLS with SASL PLAIN, join `#general`,
//! talk with a native-protocol client, and see the real `chatd-bot` answer `/stock=` (quotes from
//! a local stand-in for stooq). A client that was away catches up: an IRC client without
//! `draft/chathistory` from the replay on JOIN, one with it by CHATHISTORY.
//! Timeouts are failure guards only.

mod support;

use std::time::Duration;

use support::bot::{next_bot_message, BotProcess};
use support::StubHttp;
use testkit::irc_clients::{IrcClientOptions, IrcLineClient, Irssi, WeeChat};
use testkit::{call, expect_line, Daemon};

const AAPL: &str = "AAPL.US quote is $125.28 per share";
const WAIT: Duration = Duration::from_secs(30);

fn irc_port(d: &Daemon) -> u16 {
    d.irc_addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("an IRC port")
}

/// Options for a real client logging in as `user` (an account with password `password-<user>`).
fn as_user(d: &Daemon, user: &str) -> IrcClientOptions {
    IrcClientOptions::new(user, irc_port(d)).ca_file(&d.ca_file).sasl(user, &format!("password-{user}"))
}

#[tokio::test]
async fn irssi_and_weechat_talk_with_a_native_client_and_see_the_stock_bot() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[], &[]).await;
    bot.wait_serving(1).await;
    for user in ["alice", "bob"] {
        drop(daemon.login(user).await); // registers the account
    }
    let mut carol = daemon.member("carol", "general").await;

    let mut irssi = Irssi::start(as_user(&daemon, "alice")).await.unwrap();
    irssi.wait_for("Welcome to the chatd Network", WAIT).await.unwrap();
    irssi.command("/join #general").await.unwrap();
    irssi.wait_for("has joined #general", WAIT).await.unwrap();
    let mut weechat = WeeChat::start(as_user(&daemon, "bob")).await.unwrap();
    weechat.wait_for("Welcome to the chatd Network", WAIT).await.unwrap();
    weechat.command("/join #general").await.unwrap();
    weechat.wait_for("has joined #general", WAIT).await.unwrap();

    // irssi -> the native client and WeeChat.
    irssi.say("#general", "hello from irssi").await.unwrap();
    let m =
        expect_line(&mut carol, "irssi's line", |l| l.as_message().is_some_and(|m| m.text == "hello from irssi")).await;
    assert_eq!(m.as_message().unwrap().sender, "alice");
    weechat.wait_for("hello from irssi", WAIT).await.unwrap();
    // The native client -> both IRC clients.
    assert_eq!(call(&mut carol, "MSG general hi irc people").await.fin.code, 200);
    irssi.wait_for("hi irc people", WAIT).await.unwrap();
    weechat.wait_for("hi irc people", WAIT).await.unwrap();
    // WeeChat -> the others.
    weechat.say("#general", "and hello from weechat").await.unwrap();
    irssi.wait_for("and hello from weechat", WAIT).await.unwrap();
    expect_line(&mut carol, "WeeChat's line", |l| l.as_message().is_some_and(|m| m.text == "and hello from weechat"))
        .await;

    // A bot command typed in WeeChat: everyone sees the line and the real bot's answer.
    weechat.say("#general", "/stock=aapl.us").await.unwrap();
    irssi.wait_for("/stock=aapl.us", WAIT).await.unwrap();
    let answer = next_bot_message(&mut carol).await;
    assert_eq!((answer.sender.as_str(), answer.text.as_str()), ("stockbot", AAPL));
    irssi.wait_for(AAPL, WAIT).await.unwrap();
    weechat.wait_for(AAPL, WAIT).await.unwrap();
    assert!(irssi.transcript().contains("stockbot"), "irssi shows the answer from stockbot:\n{}", irssi.transcript());
}

#[tokio::test]
async fn irc_clients_catch_up_on_what_they_missed() {
    let daemon = Daemon::start().await;
    drop(daemon.login("alice").await);
    let mut carol = daemon.member("carol", "general").await;

    // irssi was in the room, left, and comes back: chatd replays the room's last messages on JOIN
    // (irssi does not ask for draft/chathistory).
    let mut irssi = Irssi::start(as_user(&daemon, "alice")).await.unwrap();
    irssi.wait_for("Welcome to the chatd Network", WAIT).await.unwrap();
    irssi.command("/join #general").await.unwrap();
    irssi.wait_for("has joined #general", WAIT).await.unwrap();
    irssi.command("/part #general").await.unwrap();
    irssi.wait_for("has left #general", WAIT).await.unwrap();
    for i in 1..=3 {
        assert_eq!(call(&mut carol, &format!("MSG general missed {i}")).await.fin.code, 200);
    }
    irssi.command("/join #general").await.unwrap();
    for i in 1..=3 {
        irssi.wait_for(&format!("missed {i}"), WAIT).await.unwrap();
    }

    // A client with draft/chathistory gets no replay and asks for what came after the last
    // message it saw.
    let last_seen = call(&mut carol, "MSG general seen before the reconnect").await.fin.fields[1].clone();
    for i in 4..=5 {
        assert_eq!(call(&mut carol, &format!("MSG general missed {i}")).await.fin.code, 200);
    }
    let mut c = IrcLineClient::connect_tls(&daemon.irc_addr, "localhost", &daemon.ca_file).await.unwrap();
    c.send("CAP LS 302").await.unwrap();
    c.send("CAP REQ :sasl batch server-time message-tags draft/chathistory").await.unwrap();
    c.wait_for("ACK", WAIT).await.unwrap();
    c.send("AUTHENTICATE PLAIN").await.unwrap();
    c.wait_for("AUTHENTICATE +", WAIT).await.unwrap();
    // base64("\0alice\0password-alice")
    c.send("AUTHENTICATE AGFsaWNlAHBhc3N3b3JkLWFsaWNl").await.unwrap();
    c.wait_for(" 903 ", WAIT).await.unwrap();
    c.send("CAP END").await.unwrap();
    c.send("NICK alice").await.unwrap();
    c.send("USER alice 0 * :alice").await.unwrap();
    c.wait_for(" 001 ", WAIT).await.unwrap();
    c.send("JOIN #general").await.unwrap();
    c.wait_for(" 366 ", WAIT).await.unwrap();
    assert!(!c.transcript().contains("missed 4"), "no replay for a draft/chathistory client:\n{}", c.transcript());
    c.send(&format!("CHATHISTORY AFTER #general msgid={last_seen} 50")).await.unwrap();
    c.wait_for("missed 4", WAIT).await.unwrap();
    c.wait_for("missed 5", WAIT).await.unwrap();
    let end = c.wait_for("BATCH -", WAIT).await.unwrap();
    let transcript = c.transcript();
    let after_query = &transcript[transcript.find("CHATHISTORY AFTER").unwrap_or(0)..];
    assert!(!after_query.contains("seen before the reconnect"), "AFTER is exclusive:\n{transcript}\n{end}");
}
