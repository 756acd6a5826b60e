//! The web client in a real browser: chatd with its web listeners (HTTPS and plain HTTP on
//! loopback), the real stock bot against the local stooq stand-in, a native-protocol user over TLS
//! who fills a room with 60 messages, and `tests/web/browser.js`: headless Chromium (Debian's,
//! driven by playwright-core) with two users who sign up, join, page back, talk, ask the bot,
//! survive a dropped connection and a reload. The native user sees the same messages in the same
//! order as the browser shows them. Screenshots land in target/web-screenshots/.
//!
//! Needs `node`, `/usr/bin/chromium` and `npm ci` in tests/web (scripts/test.sh does all three);
//! without them the test fails, saying what is missing.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::bot::BotProcess;
use support::StubHttp;
use testkit::{call, Daemon};

const ROOM: &str = "lobby";

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[tokio::test]
async fn two_browsers_and_a_native_user_share_a_room() {
    let web_tests = workspace().join("tests/web");
    assert!(
        web_tests.join("node_modules/playwright-core").exists(),
        "tests/web/node_modules is missing: run `npm ci` in tests/web (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium (scripts/test.sh does)"
    );

    let daemon = Daemon::start_with("[web]\nlisten = \"127.0.0.1:0\"\nplain_listen = \"127.0.0.1:0\"\n").await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[], &[]).await;
    bot.wait_serving(1).await;

    let mut carol = daemon.member("carol", ROOM).await;
    let mut posted = Vec::new();
    for i in 1..=60 {
        let r = call(&mut carol, &format!("MSG {ROOM} history {i:02}")).await;
        assert_eq!(r.fin.code, 200, "{:?}", r.fin);
        posted.push(r.fin.fields[1].parse::<u64>().unwrap());
    }
    let carol_last = *posted.last().unwrap();

    let shots = workspace().join("target/web-screenshots");
    let transcript = daemon.dir.join("transcript.tsv");
    let mut node = tokio::process::Command::new("node")
        .arg("browser.js")
        .current_dir(&web_tests)
        .env("CHATD_WEB_HTTPS", daemon.web_addr.as_ref().expect("web listener"))
        .env("CHATD_WEB_PLAIN", daemon.web_plain_addr.as_ref().expect("plain web listener"))
        .env("CHATD_ROOM", ROOM)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &shots)
        .env("TRANSCRIPT", &transcript)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node is missing: install Node.js 20 or later");

    // Carol reads while the browsers talk.
    let mut seen = Vec::new();
    let status = loop {
        tokio::select! {
            status = node.wait() => break status.unwrap(),
            line = carol.next() => seen.push(line.expect("carol's connection").expect("carol's connection is open")),
        }
    };
    assert!(
        status.success(),
        "the browser test failed ({status}); its steps are above, chatd's log:\n{}",
        daemon.log()
    );
    // Whatever was accepted before the browser test ended reaches carol before this reply.
    let r = tokio::time::timeout(Duration::from_secs(20), carol.call("PING sync")).await.unwrap().unwrap();
    seen.extend(r.events.into_iter().map(chatd_proto::line::ServerLine::Event));

    let carol_saw: Vec<(u64, String, String)> = seen
        .iter()
        .filter_map(|l| l.as_message())
        .filter(|m| m.room == ROOM && !m.is_command)
        .map(|m| (m.id.unwrap(), m.sender, m.text))
        .collect();
    assert!(
        seen.iter().filter_map(|l| l.as_message()).any(|m| m.is_command && m.text == "/stock=aapl.us"),
        "carol saw the command line"
    );
    let page: Vec<(u64, String, String)> = std::fs::read_to_string(&transcript)
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            (f.next().unwrap().parse().unwrap(), f.next().unwrap().into(), f.next().unwrap_or("").into())
        })
        .collect();
    let page_ids: Vec<u64> = page.iter().map(|m| m.0).take(60).collect();
    assert_eq!(page_ids, posted, "the page shows the 60 messages of history first");
    let later: Vec<_> = page.into_iter().filter(|m| m.0 > carol_last).collect();
    assert_eq!(carol_saw, later, "the native user and the browser see the same messages in the same order");
    assert!(later.iter().any(|m| m.1 == "stockbot" && m.2 == "AAPL.US quote is $125.28 per share"), "{later:?}");
    assert!(later.len() >= 6, "{later:?}");
}
