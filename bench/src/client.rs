//! Connecting one benchmark client: TCP or TLS to a loopback address, then either chatd's
//! REGISTER/LOGIN + JOIN or IRC's NICK/USER + JOIN. The line transport is chatd-proto's
//! `LineConn` for both protocols (IRC lines are lines too); chatd's server lines are parsed with
//! chatd-proto's `ServerLine`, IRC lines with the small parser below.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chatd_proto::line::ServerLine;
use chatd_proto::{tls, LineConn, Trust};
use rustls::ClientConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Chatd,
    Irc,
}

/// Where and how to connect; cheap to clone (one per client task).
#[derive(Clone)]
pub struct Target {
    pub proto: Proto,
    /// Where this target connects (the first of `addrs` until `for_client` picks one).
    pub addr: String,
    /// Every `--addr`: posting client i connects to `addrs[i % n]`.
    pub addrs: Vec<String>,
    /// `--recv-addr`: where the clients that never post connect (`addrs` when empty).
    pub recv_addrs: Vec<String>,
    pub tls: Option<Arc<ClientConfig>>,
    /// Open a WebSocket (`/ws`) over the connection, and speak the protocol in its messages.
    pub ws: bool,
    pub server_name: String,
    pub prefix: String,
    pub password: String,
    /// "REGISTER" (fresh database) or "LOGIN" (accounts exist): what to try first.
    pub first_verb: &'static str,
    /// IRC to chatd's IRC front end, which lets only accounts join: each client first creates its
    /// account with IRCv3 `draft/account-registration` (with `password`).
    pub irc_register: bool,
    /// How long one connect + login + join may take.
    pub setup_timeout: Duration,
}

/// Refuses anything but loopback: this tool only ever loads a daemon on this machine.
pub fn check_loopback(addr: &str) -> Result<()> {
    let addrs: Vec<_> = addr.to_socket_addrs().with_context(|| format!("--addr {addr}: not a host:port"))?.collect();
    if addrs.is_empty() {
        bail!("--addr {addr} resolves to nothing");
    }
    if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("--addr {addr} resolves to {a}, which is not loopback: chatd-bench only talks to 127.0.0.0/8 and ::1");
    }
    Ok(())
}

/// Builds the TLS client configuration: `--ca FILE` trusts that CA (chatd's certs/ca.pem),
/// `--insecure` pins whatever certificate the server shows now (for self-signed IRC test certs).
pub async fn tls_config(
    addr: &str,
    server_name: &str,
    ca: Option<&std::path::Path>,
    insecure: bool,
) -> Result<Arc<ClientConfig>> {
    let trust = match (ca, insecure) {
        (Some(path), _) => Trust::CaFile(path.to_path_buf()),
        (None, true) => {
            let fp = tls::probe_fingerprint(addr, server_name).await.map_err(|e| connect_error(addr, e))?;
            Trust::Fingerprint(chatd_proto::parse_fingerprint(&fp).context("bad fingerprint")?)
        }
        (None, false) => Trust::System,
    };
    Ok(tls::client_config(&trust)?)
}

pub fn connect_error(addr: &str, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            anyhow!("{addr} refused the connection: is the daemon running and listening there?")
        }
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe => {
            anyhow!("{addr} dropped the connection during setup ({e}): connection limit reached, or TLS/plaintext mismatch (--tls)?")
        }
        _ if e.to_string().contains("Too many open files") => {
            anyhow!("out of file descriptors ({e}): the generator holds one per client")
        }
        _ => anyhow!("connecting to {addr}: {e}"),
    }
}

impl Target {
    pub fn user(&self, i: usize) -> String {
        format!("{}{:05}", self.prefix, i)
    }

    /// The target client `i` connects to: posting clients spread round robin over `addrs`, the
    /// others over `recv_addrs` (or `addrs`).
    pub fn for_client(&self, i: usize, posts: bool) -> Target {
        let list = if posts || self.recv_addrs.is_empty() { &self.addrs } else { &self.recv_addrs };
        let mut t = self.clone();
        if !list.is_empty() {
            t.addr = list[i % list.len()].clone();
        }
        t
    }

    /// The line that posts `text` to `room`.
    pub fn post_line(&self, room: &str, text: &str) -> String {
        match self.proto {
            Proto::Chatd => format!("MSG {room} {text}"),
            Proto::Irc => format!("PRIVMSG #{room} :{text}"),
        }
    }

    pub async fn open(&self) -> Result<LineConn> {
        if self.ws {
            return self.open_ws().await.map_err(|e| connect_error(&self.addr, e));
        }
        let r = match &self.tls {
            Some(cfg) => LineConn::connect_tls(&self.addr, &self.server_name, cfg.clone()).await,
            None => LineConn::connect_plain(&self.addr).await,
        };
        r.map_err(|e| connect_error(&self.addr, e))
    }

    /// A WebSocket to chatd's web listener, carrying the protocol of `proto`. The client side
    /// bridges messages to lines with a task per connection (chatd-proto's `ws`); the daemon's
    /// figures are what is measured.
    async fn open_ws(&self) -> std::io::Result<LineConn> {
        let stream: Box<dyn chatd_proto::client::Stream> = match &self.tls {
            Some(cfg) => Box::new(tls::connect(&self.addr, &self.server_name, cfg.clone()).await?),
            None => {
                let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
        };
        let subprotocol = match self.proto {
            Proto::Chatd => "chatd.native",
            Proto::Irc => "text.ircv3.net",
        };
        let handshake =
            chatd_proto::ws::Handshake { host: self.addr.clone(), subprotocol: Some(subprotocol.into()), origin: None };
        let (stream, _) = chatd_proto::ws::connect(stream, &handshake).await?;
        Ok(LineConn::from_stream(stream))
    }

    /// Connects, logs in as `user` and joins `rooms`; bounded by `setup_timeout`.
    pub async fn setup(&self, user: &str, rooms: &[String]) -> Result<LineConn> {
        tokio::time::timeout(self.setup_timeout, async {
            let mut conn = self.open().await?;
            match self.proto {
                Proto::Chatd => {
                    chatd_login(&mut conn, user, &self.password, self.first_verb).await?;
                    for room in rooms {
                        let r = conn.call(&format!("JOIN {room}")).await.map_err(|e| dropped(&self.addr, e))?;
                        if r.fin.code != 200 {
                            bail!("JOIN {room} as {user}: {} {}", r.fin.code, r.fin.text.unwrap_or_default());
                        }
                    }
                }
                Proto::Irc => {
                    let account = self.irc_register.then_some(self.password.as_str());
                    irc_login(&mut conn, user, account)
                        .await
                        .map_err(|e| e.context(format!("IRC registration of {user}")))?;
                    for room in rooms {
                        irc_join(&mut conn, &format!("#{room}")).await?;
                    }
                }
            }
            Ok(conn)
        })
        .await
        .map_err(|_| {
            anyhow!(
                "{}: setting up {user} took over {:?} (daemon overloaded or not answering)",
                self.addr,
                self.setup_timeout
            )
        })?
    }
}

pub fn dropped(addr: &str, e: std::io::Error) -> anyhow::Error {
    anyhow!("{addr} dropped the connection: {e}")
}

/// Reads `* HELLO`, then REGISTER (or, when the name is taken or registration closed, LOGIN);
/// `first` = "LOGIN" skips the REGISTER attempt.
pub async fn chatd_login(conn: &mut LineConn, user: &str, password: &str, first: &'static str) -> Result<()> {
    match conn.next().await? {
        Some(ServerLine::Event(e)) if e.name == "HELLO" => {}
        Some(ServerLine::Event(e)) if e.name == "BYE" => {
            bail!("the daemon said BYE at connect: {}", e.text.unwrap_or_default())
        }
        Some(other) => bail!("expected * HELLO, got {other:?} (is this a chatd daemon? try --proto irc)"),
        None => bail!("the daemon closed the connection before * HELLO (connection limit?)"),
    }
    let mut verb = first;
    let mut switched = false;
    for _attempt in 0..20 {
        let r = conn.call(&format!("{verb} {user} {password}")).await?;
        match (r.fin.code, verb) {
            (200, _) => return Ok(()),
            (410 | 411, "REGISTER") if !switched => (verb, switched) = ("LOGIN", true),
            (409, "LOGIN") if !switched => (verb, switched) = ("REGISTER", true),
            (409, _) => bail!("LOGIN {user}: wrong password: the account exists with another password (use a fresh database or --prefix)"),
            (410, _) => bail!("REGISTER {user}: name taken, and LOGIN with this password failed"),
            (412, _) => {
                let secs: u64 = r.fin.fields.first().and_then(|s| s.parse().ok()).unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(secs.clamp(1, 30))).await;
            }
            (420, _) => tokio::time::sleep(Duration::from_millis(200)).await,
            (code, _) => bail!("{verb} {user}: {code} {} (registration closed? set [accounts] open_registration and raise registrations_per_hour)", r.fin.text.unwrap_or_default()),
        }
    }
    bail!("{verb} {user}: still throttled after 20 attempts")
}

/// One IRC line split into prefix, command and parameters (the trailing one included).
pub struct IrcLine<'a> {
    #[allow(dead_code)]
    pub prefix: Option<&'a str>,
    pub command: &'a str,
    pub params: Vec<&'a str>,
}

pub fn parse_irc(line: &str) -> Option<IrcLine<'_>> {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    if rest.starts_with('@') {
        rest = rest.split_once(' ')?.1; // IRCv3 tags: not used
    }
    let mut prefix = None;
    if let Some(p) = rest.strip_prefix(':') {
        let (pf, r) = p.split_once(' ')?;
        prefix = Some(pf);
        rest = r;
    }
    rest = rest.trim_start_matches(' ');
    let (head, trailing) = match rest.find(" :") {
        Some(i) => (&rest[..i], Some(&rest[i + 2..])),
        None => match rest.strip_prefix(':') {
            Some(t) => ("", Some(t)),
            None => (rest, None),
        },
    };
    let mut words = head.split(' ').filter(|w| !w.is_empty());
    let command = words.next()?;
    let mut params: Vec<&str> = words.collect();
    if let Some(t) = trailing {
        params.push(t);
    }
    Some(IrcLine { prefix, command, params })
}

/// NICK/USER until `001`; with `account` (a password), first creates the account named after the
/// nick with `draft/account-registration` during CAP negotiation, which also logs it in.
pub async fn irc_login(conn: &mut LineConn, nick: &str, account: Option<&str>) -> Result<()> {
    if account.is_some() {
        conn.send("CAP REQ :draft/account-registration").await?;
    }
    conn.send(&format!("NICK {nick}")).await?;
    conn.send(&format!("USER {nick} 0 * :chatd-bench")).await?;
    if let Some(password) = account {
        conn.send(&format!("REGISTER {nick} * {password}")).await?;
        irc_until(conn, "account registration", |m, line| match m.command {
            "REGISTER" => Ok(true),
            "FAIL" => bail!("REGISTER {nick} refused: {line} (an account from an earlier run? use a fresh database)"),
            "CAP" if m.params.get(1).is_some_and(|s| s.eq_ignore_ascii_case("NAK")) => {
                bail!("the server does not offer draft/account-registration: {line}")
            }
            _ => Ok(false),
        })
        .await?;
        conn.send("CAP END").await?;
    }
    irc_until(conn, "registration (connection limit?)", |m, line| match m.command {
        "001" => Ok(true),
        "433" => bail!("nick {nick} is in use (another run still connected? use --prefix)"),
        "432" => bail!("nick {nick} refused as erroneous (raise the server's nick length limit)"),
        c if c.len() == 3 && (c.starts_with('4') || c.starts_with('5')) => bail!("server refused: {line}"),
        _ => Ok(false),
    })
    .await
}

async fn irc_join(conn: &mut LineConn, chan: &str) -> Result<()> {
    conn.send(&format!("JOIN {chan}")).await?;
    irc_until(conn, &format!("JOIN {chan}"), |m, line| match m.command {
        "366" if m.params.get(1).is_some_and(|c| c.eq_ignore_ascii_case(chan)) => Ok(true),
        "403" | "405" | "471" | "473" | "474" | "475" | "476" | "477" | "479" => bail!("JOIN {chan} refused: {line}"),
        _ => Ok(false),
    })
    .await
}

/// Reads server lines during `what` (registration, a JOIN), answering PINGs and failing on
/// `ERROR` or a closed connection, until `step` says the wait is over (`Ok(true)`) or refused.
async fn irc_until(
    conn: &mut LineConn,
    what: &str,
    mut step: impl FnMut(&IrcLine, &str) -> Result<bool>,
) -> Result<()> {
    loop {
        let Some(line) = conn.read_line().await? else {
            bail!("the server closed the connection during {what}");
        };
        let Some(m) = parse_irc(&line) else { continue };
        match m.command {
            "PING" => conn.send(&format!("PONG :{}", m.params.last().copied().unwrap_or(""))).await?,
            "ERROR" => bail!("server closed the link: {line}"),
            _ if step(&m, &line)? => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irc_lines() {
        let m = parse_irc(":a!b@c PRIVMSG #r :B 1 2 3 :x y").unwrap();
        assert_eq!(m.prefix, Some("a!b@c"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#r", "B 1 2 3 :x y"]);
        let m = parse_irc("PING :irc.local").unwrap();
        assert_eq!(m.command, "PING");
        assert_eq!(m.params, ["irc.local"]);
        let m = parse_irc(":srv 366 nick #chan :End of /NAMES list.").unwrap();
        assert_eq!(m.params[1], "#chan");
    }

    #[test]
    fn clients_spread_over_the_addresses() {
        let t = Target {
            proto: Proto::Chatd,
            addr: "a".into(),
            addrs: vec!["a".into(), "b".into()],
            recv_addrs: vec![],
            tls: None,
            ws: false,
            server_name: "localhost".into(),
            prefix: "p".into(),
            password: "pw".into(),
            first_verb: "REGISTER",
            irc_register: false,
            setup_timeout: Duration::from_secs(1),
        };
        let at = |t: &Target, i, posts| t.for_client(i, posts).addr;
        assert_eq!([at(&t, 0, true), at(&t, 1, true), at(&t, 2, false)], ["a", "b", "a"]);
        let t = Target { recv_addrs: vec!["r".into()], ..t };
        assert_eq!([at(&t, 3, true), at(&t, 3, false), at(&t, 4, false)], ["b", "r", "r"]);
    }

    #[test]
    fn loopback_only() {
        assert!(check_loopback("127.0.0.1:6697").is_ok());
        assert!(check_loopback("[::1]:6697").is_ok());
        assert!(check_loopback("10.0.0.1:6697").is_err());
    }
}
