//! How things look: one line per message or event, in a stable format that scripts can match
//! (`12:03 #general <bob> hello`, `... <stockbot> [bot] ...`, `... <alice> [cmd] /stock=aapl.us`,
//! `-- info`, `!! error`), with colours only on a terminal. Also where lines go: straight to
//! stdout, or through the line editor's printer so they never garble the line being typed.

use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use chatd_proto::ChatMessage;
use chrono::{DateTime, Local};

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";
const SENDER_COLORS: [&str; 6] = ["\x1b[32m", "\x1b[34m", "\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[92m"];

/// Formats lines, with or without ANSI colours.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

/// What kind of message a line is, for its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    None,
    /// A reply from a bot: `[bot]`.
    Bot,
    /// A bot command line (`* CMD`, not stored): `[cmd]`.
    Cmd,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("{code}{s}{RESET}")
        } else {
            s.to_string()
        }
    }

    /// `HH:MM #room <sender> [mark] text`
    pub fn message(&self, msg: &ChatMessage, mark: Mark) -> String {
        let time = self.paint(DIM, &local_hhmm(&msg.time));
        let room = self.paint(CYAN, &format!("#{}", msg.room));
        let sender = clean(&msg.sender);
        let sender = if self.color {
            format!("<{}{BOLD}{sender}{RESET}>", sender_color(&sender))
        } else {
            format!("<{sender}>")
        };
        let marker = match mark {
            Mark::None => String::new(),
            Mark::Bot => format!("{} ", self.paint(MAGENTA, "[bot]")),
            Mark::Cmd => format!("{} ", self.paint(YELLOW, "[cmd]")),
        };
        format!("{time} {room} {sender} {marker}{}", clean(&msg.text))
    }

    /// `HH:MM #room * bob joined` (now, local time).
    pub fn presence(&self, room: &str, user: &str, what: &str) -> String {
        let time = self.paint(DIM, &Local::now().format("%H:%M").to_string());
        let room = self.paint(CYAN, &format!("#{}", clean(room)));
        format!("{time} {room} {}", self.paint(DIM, &format!("* {} {what}", clean(user))))
    }

    /// `-- text`: something the client tells you.
    pub fn info(&self, text: &str) -> String {
        self.paint(DIM, &format!("-- {}", clean(text)))
    }

    /// `!! text`: an error.
    pub fn error(&self, text: &str) -> String {
        self.paint(RED, &format!("!! {}", clean(text)))
    }
}

fn sender_color(name: &str) -> &'static str {
    let h = name.bytes().fold(5381u32, |h, b| h.wrapping_mul(33) ^ b as u32);
    SENDER_COLORS[h as usize % SENDER_COLORS.len()]
}

/// Replaces control characters (the daemon refuses them, but a terminal must never receive an
/// escape sequence from the network).
pub fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

/// An RFC 3339 timestamp as local `HH:MM` (the text as it is if it does not parse).
pub fn local_hhmm(time: &str) -> String {
    match DateTime::parse_from_rfc3339(time) {
        Ok(t) => t.with_timezone(&Local).format("%H:%M").to_string(),
        Err(_) => clean(time),
    }
}

/// Where output lines go.
#[derive(Debug, Default)]
pub struct Output {
    printer: Mutex<Option<Sender<String>>>,
}

impl Output {
    /// From now on, lines go through the line editor's printer thread (see `input`).
    pub fn use_printer(&self, tx: Sender<String>) {
        *self.printer.lock().unwrap() = Some(tx);
    }

    /// Back to plain stdout (the line editor is gone).
    pub fn use_stdout(&self) {
        *self.printer.lock().unwrap() = None;
    }

    /// Prints one line (the newline is added here).
    pub fn line(&self, line: String) {
        let printer = self.printer.lock().unwrap();
        if let Some(tx) = printer.as_ref() {
            if tx.send(line.clone()).is_ok() {
                return;
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(sender: &str, text: &str) -> ChatMessage {
        ChatMessage {
            room: "general".into(),
            id: Some(3),
            time: "2026-11-29T04:48:06.123Z".into(),
            sender: sender.into(),
            text: text.into(),
            is_command: false,
        }
    }

    #[test]
    fn plain_format() {
        let s = Style { color: false };
        let hhmm = local_hhmm("2026-11-29T04:48:06.123Z");
        assert_eq!(hhmm.len(), 5);
        assert_eq!(s.message(&msg("bob", "hi  there"), Mark::None), format!("{hhmm} #general <bob> hi  there"));
        assert_eq!(s.message(&msg("stockbot", "AAPL"), Mark::Bot), format!("{hhmm} #general <stockbot> [bot] AAPL"));
        assert_eq!(s.message(&msg("al", "/stock=x"), Mark::Cmd), format!("{hhmm} #general <al> [cmd] /stock=x"));
        assert_eq!(s.message(&msg("bob", "a\x1b[2Jb"), Mark::None), format!("{hhmm} #general <bob> a\u{FFFD}[2Jb"));
        assert_eq!(s.info("x"), "-- x");
        assert_eq!(s.error("x"), "!! x");
    }

    #[test]
    fn bad_time_is_kept() {
        assert_eq!(local_hhmm("whenever"), "whenever");
    }
}
