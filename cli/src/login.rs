//! Who the user is: the user name and password (prompted for without echo on a terminal, or taken
//! from $CHAT_PASSWORD / --password-file — never from the command line), and logging a connection
//! in with them (`LOGIN`, or `REGISTER` falling back to `LOGIN` when the name is taken).

use std::io::{self, BufRead, Write};

use anyhow::{bail, Context, Result};
use chatd_proto::command::{Command, Request};
use chatd_proto::names::{Label, Password, UserName};
use chatd_proto::LineConn;

use crate::args::Args;

/// Checked by the protocol's rules before anything is sent; the password's `Debug` hides it.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: UserName,
    pub password: Password,
}

/// Why logging in failed.
#[derive(Debug)]
pub enum LoginError {
    /// 409: wrong user name or password.
    Wrong,
    /// 410: the name is taken (and the password does not log into it).
    Taken,
    /// 412: too many attempts; wait this many seconds.
    Throttled(u64),
    /// Any other refusal (invalid name or password, registration closed, ...): the server's words.
    Refused(String),
    /// The connection failed.
    Io(io::Error),
}

impl LoginError {
    /// In words; with `verbose`, a network error also gets the library's text.
    pub fn describe(&self, verbose: bool) -> String {
        match self {
            LoginError::Io(e) => crate::view::explain_io(e, verbose),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Wrong => write!(f, "wrong user name or password"),
            LoginError::Taken => write!(f, "that user name is taken"),
            LoginError::Throttled(s) => write!(f, "too many attempts, wait {s}s"),
            LoginError::Refused(t) => write!(f, "{t}"),
            LoginError::Io(e) => write!(f, "{}", crate::view::explain_io(e, false)),
        }
    }
}

/// Logs `conn` in. With `register`, creates the account first; if the name is taken, tries to log
/// in with the same password. Returns the user name as the server shows it (lower case).
pub async fn authenticate(conn: &mut LineConn, creds: &Credentials, register: bool) -> Result<String, LoginError> {
    if register {
        let command = Command::Register { user: creds.user.clone(), password: creds.password.clone() };
        let resp = conn.call(&labelled("reg", command)).await.map_err(LoginError::Io)?;
        match resp.fin.code {
            200 => return Ok(resp.fin.fields.first().cloned().unwrap_or_else(|| creds.user.to_string())),
            410 => {
                return match login(conn, creds).await {
                    Err(LoginError::Wrong) => Err(LoginError::Taken),
                    other => other,
                }
            }
            _ => return Err(refusal(&resp.fin)),
        }
    }
    login(conn, creds).await
}

async fn login(conn: &mut LineConn, creds: &Credentials) -> Result<String, LoginError> {
    let command = Command::Login { user: creds.user.clone(), password: creds.password.clone() };
    let resp = conn.call(&labelled("login", command)).await.map_err(LoginError::Io)?;
    match resp.fin.code {
        200 => Ok(resp.fin.fields.first().cloned().unwrap_or_else(|| creds.user.to_string())),
        _ => Err(refusal(&resp.fin)),
    }
}

/// `@label COMMAND ...`, as the daemon parses it.
fn labelled(label: &str, command: Command) -> String {
    Request { label: Label::parse(label), command }.to_string()
}

fn refusal(r: &chatd_proto::Reply) -> LoginError {
    match r.code {
        409 => LoginError::Wrong,
        410 => LoginError::Taken,
        412 => LoginError::Throttled(r.fields.first().and_then(|s| s.parse().ok()).unwrap_or(5)),
        _ => LoginError::Refused(crate::view::refusal(r)),
    }
}

/// The password given without a prompt: $CHAT_PASSWORD, or the first line of --password-file.
pub fn preset_password(args: &Args) -> Result<Option<String>> {
    if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let pw = text.lines().next().unwrap_or("").trim_end_matches('\r').to_string();
        if pw.is_empty() {
            bail!("{}: no password on its first line", path.display());
        }
        return Ok(Some(pw));
    }
    match std::env::var("CHAT_PASSWORD") {
        Ok(pw) if !pw.is_empty() => Ok(Some(pw)),
        _ => Ok(None),
    }
}

/// Checks a password by the protocol's rules (8–128 bytes, no spaces or control characters).
pub fn check_password(pw: &str) -> Result<Password, &'static str> {
    Password::parse(pw).ok_or(if (8..=128).contains(&pw.len()) {
        "a password has no spaces or control characters"
    } else {
        "a password has 8 to 128 bytes"
    })
}

/// Checks a user name by the protocol's rules.
pub fn check_user(user: &str) -> Result<UserName, &'static str> {
    UserName::parse(user).ok_or("a user name has 2 to 24 letters, digits, '_' or '-', a letter first")
}

/// Asks for a line on the terminal (echoed), before the line editor starts.
pub fn prompt_line(question: &str) -> Result<String> {
    print!("{question}");
    io::stdout().flush()?;
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("no answer (end of input)");
    }
    Ok(line.trim().to_string())
}

/// Asks a yes/no question; only `y`/`yes` is yes.
pub fn confirm(question: &str) -> bool {
    matches!(prompt_line(question).map(|a| a.to_lowercase()).as_deref(), Ok("y" | "yes"))
}

/// Asks for a password without echoing it.
pub fn prompt_password(question: &str) -> Result<String> {
    rpassword::prompt_password(question).context("reading the password")
}

/// Asks for a new password twice, until both match and the daemon would accept it.
pub fn prompt_new_password() -> Result<String> {
    for _ in 0..3 {
        let pw = prompt_password("choose a password: ")?;
        if let Err(why) = check_password(&pw) {
            println!("{why}");
            continue;
        }
        if prompt_password("the same password again: ")? == pw {
            return Ok(pw);
        }
        println!("the two passwords differ");
    }
    bail!("no password chosen")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_lines_parse_back() {
        let creds =
            Credentials { user: check_user("Alice").unwrap(), password: check_password("correct-horse").unwrap() };
        for (label, command) in [
            ("reg", Command::Register { user: creds.user.clone(), password: creds.password.clone() }),
            ("login", Command::Login { user: creds.user.clone(), password: creds.password.clone() }),
        ] {
            let line = labelled(label, command.clone());
            let parsed = chatd_proto::parse::parse_line(line.as_bytes(), 2000).unwrap();
            assert_eq!(parsed, Request { label: Label::parse(label), command }, "{line}");
        }
    }

    #[test]
    fn checks() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("a").is_err());
        assert!(check_user("1abc").is_err());
        assert!(check_password("correct-horse").is_ok());
        assert!(check_password("short").is_err());
        assert!(check_password("has a space").is_err());
    }
}
