//! The web listener: the web client's files over HTTPS and plain HTTP, and `/ws`, the WebSocket
//! that carries the native protocol or IRC one line per message, with every limit of the TLS
//! listeners. Transcripts as in PROTOCOL.md section 8.

use chatd_proto::line::ServerLine;
use testkit::{call, expect_line, next_line, Daemon, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEB: &str = "[web]\nlisten = \"127.0.0.1:0\"\nplain_listen = \"127.0.0.1:0\"\n";

async fn get(addr: &str, path: &str) -> (u16, String) {
    let fetch = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to the web listener");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).expect("UTF-8 response")
    };
    let raw = tokio::time::timeout(PATIENCE, fetch).await.expect("HTTP response in time");
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, raw)
}

fn is_reply(line: &ServerLine, code: u16) -> bool {
    matches!(line, ServerLine::Reply(r) if r.code == code)
}

#[tokio::test]
async fn the_web_client_is_served_from_the_binary() {
    let d = Daemon::start_with(WEB).await;
    let plain = d.web_plain_addr.clone().unwrap();
    let (status, page) = get(&plain, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<script type=\"module\" src=\"/app.js\">"), "{page}");
    assert!(page.to_lowercase().contains("content-security-policy: default-src 'none'"), "{page}");
    let (status, js) = get(&plain, "/protocol.js").await;
    assert_eq!(status, 200);
    assert!(js.contains("text/javascript") && js.contains("export function parseServerLine"));
    let (status, config) = get(&plain, "/config.json").await;
    assert_eq!(status, 200);
    assert!(
        config.contains("\"bots\":[\"stockbot\"]") && config.contains("\"subprotocol\":\"chatd.native\""),
        "{config}"
    );
    assert_eq!(get(&plain, "/nothing-here").await.0, 404);
    // A plain GET of the WebSocket endpoint is told what it is.
    assert_eq!(get(&plain, "/ws").await.0, 426);
}

#[tokio::test]
async fn the_native_protocol_over_a_websocket_is_the_same_conversation() {
    let d = Daemon::start_with(WEB).await;
    let mut web = d.websocket().await;
    let r = call(&mut web, "REGISTER alice password-alice").await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    assert_eq!(call(&mut web, "JOIN general").await.fin.code, 200);
    let mut bob = d.member("bob", "general").await;
    let r = call(&mut web, "@l1 MSG general hello from the browser").await;
    assert_eq!((r.fin.code, r.fin.label.as_deref()), (200, Some("l1")), "{:?}", r.fin);
    let m = expect_line(&mut bob, "alice's message", |l| l.as_message().is_some()).await;
    assert_eq!(m.as_message().unwrap().text, "hello from the browser");
    assert_eq!(call(&mut bob, "MSG general hi alice").await.fin.code, 200);
    let m = expect_line(&mut web, "bob's message", |l| l.as_message().is_some()).await.as_message().unwrap();
    assert_eq!((m.sender.as_str(), m.text.as_str()), ("bob", "hi alice"));
    // A line ending inside a message is a control character (one message is one line).
    let r = call(&mut web, "MSG general two\u{b}lines").await;
    assert_eq!(r.fin.code, 415, "{:?}", r.fin);

    // No subprotocol: the native protocol too.
    let mut bare = d.try_websocket(None, None).await.unwrap();
    assert!(next_line(&mut bare).await.is_event("HELLO"));
}

#[tokio::test]
async fn irc_over_a_websocket_with_the_ircv3_subprotocol() {
    let d = Daemon::start_with(WEB).await;
    let mut irc = d.try_websocket(Some("text.ircv3.net"), None).await.unwrap();
    irc.send("NICK webby").await.unwrap();
    irc.send("USER webby 0 * :Web Client").await.unwrap();
    let welcome = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = irc.read_line().await.unwrap().expect("open");
            if line.split(' ').nth(1) == Some("001") {
                return line;
            }
        }
    })
    .await
    .expect("001 in time");
    assert!(welcome.contains("webby"), "{welcome}");
}

#[tokio::test]
async fn handshakes_from_other_origins_or_for_other_subprotocols_are_refused() {
    let d = Daemon::start_with(WEB).await;
    let e = d.try_websocket(Some("chatd.native"), Some("https://evil.example")).await.err().expect("refused");
    assert!(e.to_string().contains("HTTP 403"), "{e}");
    let e = d.try_websocket(Some("binary.ircv3.net"), None).await.err().expect("refused");
    assert!(e.to_string().contains("HTTP 400") && e.to_string().contains("text.ircv3.net"), "{e}");
    let ok = d.try_websocket(Some("chatd.native"), Some("http://127.0.0.1:1234")).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[tokio::test]
async fn every_limit_of_the_tls_listeners_applies() {
    let d = Daemon::start_with(&format!(
        "{WEB}[limits]\nexempt_loopback = false\nmax_connections_per_address = 3\nmax_line_bytes = 512\n\
         max_message_bytes = 400\nflood_burst = 2\nflood_rate_per_sec = 0.5\nflood_max_backlog = 3\n\
         login_timeout_secs = 2\n"
    ))
    .await;
    // A message longer than the line limit: 413, then the WebSocket ends (it cannot skip a message
    // it refused to buffer).
    let mut long = d.websocket().await;
    long.send(&format!("MSG general {}", "x".repeat(600))).await.unwrap();
    let r = next_line(&mut long).await;
    assert!(is_reply(&r, 413), "{r:?}");
    assert!(tokio::time::timeout(PATIENCE, long.next()).await.unwrap().unwrap().is_none());

    // Flood control: delayed, then disconnected past the backlog.
    let mut flood = d.websocket().await;
    for i in 0..10 {
        let _ = flood.send(&format!("PING {i}")).await;
    }
    let bye = expect_line(&mut flood, "excess flood", |l| l.is_event("BYE")).await;
    assert!(format!("{bye:?}").contains("excess flood"), "{bye:?}");

    // The login timeout.
    let mut idle = d.websocket().await;
    let bye = expect_line(&mut idle, "login timeout", |l| l.is_event("BYE")).await;
    assert!(format!("{bye:?}").contains("login timeout"), "{bye:?}");

    // Per-address caps count WebSocket connections too (the gate is passed before TLS and HTTP).
    let _a = d.websocket().await;
    let _b = d.websocket().await;
    let _c = d.websocket().await;
    assert!(d.try_websocket(Some("chatd.native"), None).await.is_err(), "a fourth connection from one address");
}

#[tokio::test]
async fn websocket_connections_are_counted_by_protocol_and_transport() {
    let d = Daemon::start_with(&format!("{WEB}[metrics]\nlisten = \"127.0.0.1:0\"\n")).await;
    let mut web = d.websocket().await;
    call(&mut web, "REGISTER carol password-carol").await;
    let (_, text) = get(d.metrics_addr.as_ref().unwrap(), "/metrics").await;
    assert!(text.contains("chatd_connections{protocol=\"native\",transport=\"wss\"} 1"), "{text}");
    assert!(text.contains("chatd_connections{protocol=\"irc\",transport=\"ws\"} 0"), "{text}");
}

#[tokio::test]
async fn an_idle_http_connection_does_not_keep_its_place() {
    let d = Daemon::start_with(&format!("{WEB}[limits]\nhandshake_timeout_secs = 1\n")).await;
    let plain = d.web_plain_addr.clone().unwrap();
    // Silent from the start, and silent after a kept-alive request: both closed by the server.
    let mut silent = tokio::net::TcpStream::connect(&plain).await.unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(PATIENCE, silent.read_to_end(&mut sink)).await.expect("closed in time").unwrap();
    let mut kept = tokio::net::TcpStream::connect(&plain).await.unwrap();
    kept.write_all(format!("GET /style.css HTTP/1.1\r\nHost: {plain}\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, kept.read_to_end(&mut raw)).await.expect("closed in time").unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_slow_websocket_reader_is_dropped_without_stalling_the_room() {
    let d = Daemon::start_with(&format!("{WEB}[limits]\nsend_queue_bytes = 16384\n")).await;
    let mut slow = d.websocket().await; // never reads until the end
    assert_eq!(call(&mut slow, "REGISTER slow password-slow").await.fin.code, 200);
    assert_eq!(call(&mut slow, "JOIN busy").await.fin.code, 200);
    let mut fast = d.member("fast", "busy").await;
    let mut talker = d.member("talker", "busy").await;
    let text = "x".repeat(1900);
    // As on TLS (tests/conversation.rs): talk until the room drops the slow reader.
    let mut dropped = false;
    for i in 0..20_000 {
        assert_eq!(call(&mut talker, &format!("MSG busy {i} {text}")).await.fin.code, 200);
        loop {
            let line = next_line(&mut fast).await;
            if matches!(&line, ServerLine::Event(e) if e.name == "PART" && e.fields == ["busy", "slow"]) {
                dropped = true;
                continue;
            }
            if let Some(m) = line.as_message() {
                assert!(m.text.starts_with(&format!("{i} ")));
                break;
            }
        }
        if dropped {
            break;
        }
    }
    assert!(dropped, "the slow reader was never dropped");
    let mut last = String::new();
    loop {
        match tokio::time::timeout(PATIENCE, slow.read_line()).await {
            Ok(Ok(Some(line))) => last = line,
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => panic!("the slow reader's connection was not closed; log:\n{}", d.log()),
        }
    }
    assert_eq!(last, "* BYE :send queue full (slow reader)");
}
