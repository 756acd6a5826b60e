//! Where typed lines come from. On a terminal: a line editor (rustyline) on its own thread, whose
//! external printer puts incoming lines above the line being typed, so they never garble it.
//! Otherwise: stdin read line by line, with no prompt, and an orderly quit a grace period after
//! stdin ends. Either way each line waits until the session has handled it (so a `/join` is done
//! before the next line is read, and the prompt names the right room).

use std::io::{self, BufRead, Write};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rustyline::error::ReadlineError;
use rustyline::history::MemHistory;
use rustyline::{Config as EditorConfig, Editor};
use tokio::sync::mpsc;
use unicode_width::UnicodeWidthStr;

use crate::render::Output;
use crate::session::Input;

/// How long the line editor waits for a command before showing the prompt again anyway.
const TTY_WAIT: Duration = Duration::from_secs(5);

pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Reads stdin line by line and hands each line to the session, one at a time. At end of input,
/// waits `grace` (events keep being printed meanwhile), then asks the session to quit.
pub fn spawn_scripted(tx: mpsc::Sender<Input>, grace: Duration) {
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut stdin = stdin.lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
            let (done_tx, done_rx) = sync_channel(1);
            if tx.blocking_send(Input::Line(line, Some(done_tx))).is_err() {
                return;
            }
            // Returns when the session drops the sender: the command is finished (or abandoned).
            let _ = done_rx.recv();
        }
        std::thread::sleep(grace);
        let _ = tx.blocking_send(Input::Quit);
    });
}

/// Starts the line editor on its own thread and routes `out` through its printer.
pub fn spawn_tty(tx: mpsc::Sender<Input>, prompt: Arc<Mutex<String>>, out: &Output) -> Result<()> {
    let config = EditorConfig::builder().auto_add_history(true).max_history_size(1000)?.build();
    let mut editor: Editor<(), MemHistory> =
        Editor::with_history(config, MemHistory::new()).context("starting the line editor")?;
    let mut printer = editor.create_external_printer().context("starting the line editor")?;
    let (print_tx, print_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use rustyline::ExternalPrinter as _;
        for line in print_rx {
            if printer.print(format!("{line}\n")).is_err() {
                let _ = writeln!(io::stdout(), "{line}");
            }
        }
    });
    out.use_printer(print_tx);
    std::thread::spawn(move || loop {
        let p = prompt.lock().unwrap().clone();
        match editor.readline(&p) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    // The session prints the line back in its place once handled (a message with
                    // its time, a command with its result), so the typed copy goes.
                    let cols = editor.dimensions().map(|(c, _)| c as usize).unwrap_or(80).max(1);
                    erase_typed(p.width() + line.width(), cols);
                }
                let (done_tx, done_rx) = sync_channel(1);
                if tx.blocking_send(Input::Line(line, Some(done_tx))).is_err() {
                    return;
                }
                let _ = done_rx.recv_timeout(TTY_WAIT);
            }
            Err(ReadlineError::Signal(_)) => continue,
            Err(ReadlineError::Interrupted) | Err(ReadlineError::Eof) => {
                let _ = tx.blocking_send(Input::Quit);
                return;
            }
            Err(e) => {
                eprintln!("chat: line editor: {e}");
                let _ = tx.blocking_send(Input::Quit);
                return;
            }
        }
    });
    Ok(())
}

/// Moves up over the rows the prompt and the typed line took, erasing them. (The editor starts a
/// new row when the text exactly fills one, hence `/ cols + 1`.)
fn erase_typed(width: usize, cols: usize) {
    let rows = width / cols + 1;
    let mut out = io::stdout().lock();
    for _ in 0..rows {
        let _ = out.write_all(b"\x1b[1A\r\x1b[2K");
    }
    let _ = out.flush();
}

/// The terminal's mode when chat started, put back on exit (the line editor may be in raw mode
/// when the session ends on its own).
pub struct TermGuard {
    saved: Option<libc::termios>,
}

impl TermGuard {
    pub fn save() -> TermGuard {
        // SAFETY: tcgetattr writes into the zeroed struct we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::tcgetattr(0, &mut t) } == 0;
        TermGuard { saved: ok.then_some(t) }
    }

    pub fn restore(&self) {
        if let Some(t) = &self.saved {
            // SAFETY: restores a termios that tcgetattr filled in.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
            // Bracketed paste off (the editor turns it on while reading).
            let mut out = io::stdout().lock();
            let _ = out.write_all(b"\x1b[?2004l");
            let _ = out.flush();
        }
    }
}
