//! Bad input: each gets its own error reply, and the connection (and everyone else) keeps working.
//! Timeouts are configured short here so the tests are quick; they guard, they do not measure.

use chatd_proto::line::ServerLine;
use testkit::{call, expect_line, Daemon, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes and returns the final reply to them.
async fn raw(conn: &mut chatd_proto::LineConn, bytes: &[u8]) -> chatd_proto::Reply {
    conn.writer.send_raw(bytes).await.unwrap();
    match expect_line(conn, "a reply", |l| matches!(l, ServerLine::Reply(r) if r.is_final())).await {
        ServerLine::Reply(r) => r,
        _ => unreachable!(),
    }
}

async fn still_works(conn: &mut chatd_proto::LineConn) {
    let r = call(conn, "@alive PING alive").await;
    assert_eq!((r.fin.code, r.fin.label.as_deref()), (200, Some("alive")));
}

#[tokio::test]
async fn every_bad_line_gets_its_own_code_and_the_connection_survives() {
    let d = Daemon::start().await;
    let mut c = d.client().await;
    // Before LOGIN.
    for (line, code) in [("JOIN general", 402), ("MSG general hi", 402), ("ROOMS", 402), ("HISTORY general", 402)] {
        assert_eq!(call(&mut c, line).await.fin.code, code, "{line}");
    }
    still_works(&mut c).await;
    for (line, code) in [
        ("FROBNICATE", 400),
        ("@t1 LOGIN", 401),
        ("LOGIN alice", 401),
        ("LOGIN alice password1 extra", 401),
        ("REGISTER 1alice password1", 405),
        ("REGISTER a password1", 405),
        ("REGISTER alice short", 407),
        ("@bad!label PING", 401),
    ] {
        let r = call(&mut c, line).await;
        assert_eq!(r.fin.code, code, "{line}: {:?}", r.fin);
        assert!(r.fin.text.as_deref().is_some_and(|t| !t.is_empty()), "{line}: no explanation");
    }
    assert_eq!(call(&mut c, "@t1 LOGIN").await.fin.label.as_deref(), Some("t1"));
    assert_eq!(call(&mut c, "REGISTER alice password1").await.fin.code, 200);
    assert_eq!(call(&mut c, "REGISTER alice password1").await.fin.code, 408);
    call(&mut c, "JOIN general").await;
    for (line, code) in [
        ("JOIN", 401),
        ("JOIN a b", 401),
        ("JOIN no/slash", 406),
        ("JOIN -dash", 406),
        ("MSG general", 416),
        ("MSG general      ", 416),
        ("MSG random hello", 403),
        ("MSG nosuchroom hello", 403),
        ("HISTORY random", 403),
        ("HISTORY general LIMIT 0", 421),
        ("HISTORY general BEFORE -1", 421),
        ("PART random", 403),
        ("SERVE stock", 403),
        ("HELP nothing", 401),
    ] {
        let r = call(&mut c, line).await;
        assert_eq!(r.fin.code, code, "{line}: {:?}", r.fin);
    }
    let long = format!("MSG general {}", "x".repeat(2001));
    assert_eq!(call(&mut c, &long).await.fin.code, 417);
    still_works(&mut c).await;
}

#[tokio::test]
async fn bytes_that_are_not_text() {
    let d = Daemon::start().await;
    let mut c = d.member("alice", "general").await;
    assert_eq!(raw(&mut c, b"MSG general \xff\xfe broken\r\n").await.code, 414);
    assert_eq!(raw(&mut c, b"MSG general nul\x00byte\r\n").await.code, 415);
    assert_eq!(raw(&mut c, b"MSG general bell\x07\r\n").await.code, 415);
    assert_eq!(raw(&mut c, b"MSG general esc\x1b[31mred\r\n").await.code, 415);
    assert_eq!(raw(&mut c, b"MSG general del\x7f\r\n").await.code, 415);
    // LF alone ends a line as well as CRLF; empty lines are ignored.
    assert_eq!(raw(&mut c, b"\n\r\n   \nPING lf\n").await.code, 200);
    still_works(&mut c).await;
    let history = call(&mut c, "HISTORY general").await;
    assert!(history.data.is_empty(), "nothing bad was stored: {:?}", history.data);
}

#[tokio::test]
async fn line_length_limit_is_exact() {
    let d = Daemon::start().await;
    let mut c = d.member("alice", "general").await;
    // 4096 bytes including CRLF is the most a line may have.
    let head = "PING ";
    let exact = format!("{head}{}\r\n", "a".repeat(4096 - head.len() - 2));
    assert_eq!(exact.len(), 4096);
    // A PING token is at most 64 characters, so this is a 401 - but it was read as a line.
    assert_eq!(raw(&mut c, exact.as_bytes()).await.code, 401);
    let over = format!("{head}{}\r\n", "a".repeat(4096 - head.len() - 1));
    assert_eq!(raw(&mut c, over.as_bytes()).await.code, 413);
    still_works(&mut c).await;
    // 1 MiB without a newline: one 413, nothing buffered, and the next line works.
    let mut huge = vec![b'z'; 1 << 20];
    huge.extend_from_slice(b"\r\n");
    assert_eq!(raw(&mut c, &huge).await.code, 413);
    still_works(&mut c).await;
}

#[tokio::test]
async fn the_command_after_quit_is_never_run() {
    let d = Daemon::start().await;
    let mut reader = d.member("reader", "general").await;
    let mut c = d.member("alice", "general").await;
    c.writer.send_raw(b"QUIT\r\nMSG general after quit\r\n").await.unwrap();
    let bye = expect_line(&mut c, "200 QUIT", |l| matches!(l, ServerLine::Reply(_))).await;
    assert!(matches!(bye, ServerLine::Reply(r) if r.code == 200 && r.verb == "QUIT"));
    assert!(tokio::time::timeout(PATIENCE, c.next()).await.unwrap().unwrap().is_none(), "closed after QUIT");
    expect_line(&mut reader, "alice parting", |l| l.is_event("PART")).await;
    let history = call(&mut reader, "HISTORY general").await;
    assert!(history.data.is_empty());
}

#[tokio::test]
async fn a_client_that_disconnects_mid_line_leaves_no_trace() {
    let d = Daemon::start().await;
    let mut reader = d.member("reader", "general").await;
    let mut c = d.member("alice", "general").await;
    c.writer.send_raw(b"MSG general half a li").await.unwrap();
    drop(c);
    expect_line(&mut reader, "alice parting", |l| l.is_event("PART")).await;
    assert!(call(&mut reader, "HISTORY general").await.data.is_empty());
    still_works(&mut reader).await;
}

#[tokio::test]
async fn silent_and_stalled_clients_are_timed_out() {
    let d = Daemon::start_with(
        "[limits]\nhandshake_timeout_secs = 1\nlogin_timeout_secs = 1\nping_after_secs = 1\nping_timeout_secs = 1",
    )
    .await;
    // Never starts the TLS handshake: closed.
    let mut tcp = d.raw_tcp().await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await.expect("not closed").unwrap_or(0);
    assert_eq!(n, 0);
    // Starts a handshake and stalls half way: closed.
    let mut tcp = d.raw_tcp().await;
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await.expect("not closed").unwrap_or(0);
    assert_eq!(n, 0);
    // Connects over TLS but never logs in.
    let mut c = d.client().await;
    let bye = expect_line(&mut c, "* BYE", |l| l.is_event("BYE")).await;
    assert!(matches!(bye, ServerLine::Event(e) if e.text.as_deref() == Some("login timeout")));
    // Logs in, then goes quiet: PING, then BYE.
    let mut quiet = d.client().await;
    assert_eq!(call(&mut quiet, "REGISTER quiet password1").await.fin.code, 200);
    expect_line(&mut quiet, "* PING", |l| l.is_event("PING")).await;
    let bye = expect_line(&mut quiet, "* BYE", |l| l.is_event("BYE")).await;
    assert!(matches!(bye, ServerLine::Event(e) if e.text.as_deref() == Some("ping timeout")));
    // One who answers PING stays.
    let mut awake = d.client().await;
    assert_eq!(call(&mut awake, "REGISTER awake password1").await.fin.code, 200);
    for _ in 0..3 {
        let ping = expect_line(&mut awake, "* PING", |l| l.is_event("PING")).await;
        let ServerLine::Event(e) = ping else { unreachable!() };
        awake.send(&format!("PONG {}", e.fields[0])).await.unwrap();
    }
    still_works(&mut awake).await;
}

#[tokio::test]
async fn plaintext_on_the_tls_port_is_told_what_the_port_is() {
    let d = Daemon::start().await;
    let mut tcp = d.raw_tcp().await;
    tcp.write_all(b"LOGIN alice password1\r\n").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut text)).await.unwrap().unwrap();
    assert!(text.starts_with("* BYE :this port speaks TLS"), "{text:?}");
    // The daemon is fine.
    let mut c = d.client().await;
    still_works(&mut c).await;
}
