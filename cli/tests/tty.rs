//! The `chat` binary on a real pseudo-terminal (tmux): the trust-on-first-use prompt, password
//! prompts that never echo, the prompt naming the current room, and an incoming message printed
//! above the line being typed without garbling it.
//!
//! Needs tmux (CI installs it); without it the test fails with a message saying so.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::WAIT;

/// A private tmux server (its own socket) with one 120x30 window.
struct Tmux {
    socket: String,
}

static SESSIONS: AtomicUsize = AtomicUsize::new(0);

impl Tmux {
    fn start(shell_command: &str) -> Tmux {
        match Command::new("tmux").arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => panic!("this test needs tmux on the PATH (apt-get install tmux)"),
        }
        let socket = format!("chat-cli-test-{}-{}", std::process::id(), SESSIONS.fetch_add(1, Ordering::SeqCst));
        let t = Tmux { socket };
        t.run(&["new-session", "-d", "-x", "120", "-y", "30", "-s", "t", shell_command]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
    }

    fn enter(&self) {
        self.run(&["send-keys", "-t", "t", "Enter"]);
    }

    /// The visible screen, wrapped lines joined.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", "t"])
    }

    /// Everything the pane showed, scrollback included.
    fn everything(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "t"])
    }

    /// Polls the screen until `pred` holds; returns that screen.
    async fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for(&self, needle: &str) -> String {
        let n = needle.to_string();
        self.wait(&format!("{needle:?} on the screen"), move |s| s.contains(&n)).await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

/// The last line of the screen that is not blank.
fn last_line(screen: &str) -> &str {
    screen.lines().rev().map(str::trim_end).find(|l| !l.is_empty()).unwrap_or("")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_session_in_a_terminal() {
    let daemon = testkit::Daemon::start().await;
    let home = tempfile::tempdir().unwrap();
    let chat = common::chat_bin();
    let cmd = format!(
        "env -u CHAT_PASSWORD -u CHAT_USER -u NO_COLOR XDG_CONFIG_HOME={} {} {} --user carol --register; \
         echo \"[chat exited $?]\"; sleep 600",
        quote(home.path().to_str().unwrap()),
        quote(chat.to_str().unwrap()),
        quote(&daemon.addr),
    );
    let tmux = Tmux::start(&cmd);

    // An unknown certificate: its fingerprint is shown and the user is asked, as ssh does.
    let screen = tmux.wait_for("Trust this certificate? [y/N]").await;
    assert!(screen.to_uppercase().contains(&daemon.fingerprint.to_uppercase()), "fingerprint shown:\n{screen}");
    tmux.type_text("y");
    tmux.enter();

    // The password is asked twice for a new account, and never echoed.
    tmux.wait_for("choose a password:").await;
    tmux.type_text("password-carol");
    tmux.enter();
    tmux.wait_for("the same password again:").await;
    tmux.type_text("password-carol");
    tmux.enter();
    tmux.wait_for("-- logged in as carol").await;
    let known = std::fs::read_to_string(home.path().join("chatd/known_hosts")).expect("known_hosts written");
    assert!(known.to_uppercase().contains(&daemon.fingerprint.to_uppercase()), "{known}");

    tmux.type_text("/join general");
    tmux.enter();
    tmux.wait_for("-- joined #general").await;
    tmux.wait("the prompt naming the room", |s| last_line(s) == "#general>").await;

    // Half a line typed when a message comes in: the message goes above, the line stays whole.
    tmux.type_text("half typed line");
    tmux.wait("the typed text", |s| last_line(s) == "#general> half typed line").await;
    let mut bob = daemon.login("bob").await;
    assert_eq!(bob.call("JOIN general").await.unwrap().fin.code, 200);
    assert_eq!(bob.call("MSG general incoming while typing").await.unwrap().fin.code, 200);
    let screen = tmux.wait_for("<bob> incoming while typing").await;
    let bob_line = screen.lines().find(|l| l.contains("<bob> incoming while typing")).unwrap();
    assert!(bob_line.ends_with("#general <bob> incoming while typing"), "bob's line intact: {bob_line:?}\n{screen}");
    assert_eq!(last_line(&screen), "#general> half typed line", "typed line intact:\n{screen}");
    assert_eq!(screen.matches("half typed").count(), 1, "{screen}");

    // Finishing the line sends it; it is shown once, as a message with its time.
    tmux.type_text(" and more");
    tmux.enter();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            let line = bob.next().await.unwrap().expect("bob's connection open");
            if let Some(m) = line.as_message() {
                return m;
            }
        }
    })
    .await
    .expect("bob gets carol's message");
    assert_eq!((got.sender.as_str(), got.text.as_str()), ("carol", "half typed line and more"));
    let screen = tmux.wait_for("#general <carol> half typed line and more").await;
    assert_eq!(screen.matches("half typed line and more").count(), 1, "shown once:\n{screen}");
    tmux.wait("an empty prompt", |s| last_line(s) == "#general>").await;

    tmux.type_text("/quit");
    tmux.enter();
    tmux.wait_for("[chat exited 0]").await;
    let all = tmux.everything();
    assert!(!all.contains("password-carol"), "the password was echoed:\n{all}");
}
