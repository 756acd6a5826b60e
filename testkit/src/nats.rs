//! A throwaway NATS server for tests: `nats-server -a 127.0.0.1 -p <free port>` (core NATS only, no
//! JetStream, no authentication), its log in a temporary directory, killed on drop. `stop` and
//! `start_again` restart it on the same port (the cluster tests restart NATS during traffic).
//!
//! The binary comes from Debian's `nats-server` package (`/usr/sbin/nats-server`, version 2.9 on
//! Debian 12); scripts/test.sh installs it. Without it the test fails, saying so: it does not skip.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::PATIENCE;

/// A running (or, between `stop` and `start_again`, stopped) nats-server.
pub struct NatsServer {
    pub port: u16,
    bin: PathBuf,
    child: Option<Child>,
    /// How many times it was started: each start logs to its own file (`nats-<n>.log`).
    starts: usize,
    _tmp: tempfile::TempDir,
}

/// `nats-server` on PATH, or where Debian puts it (`/usr/sbin`, not on every user's PATH).
pub fn bin_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nats-server")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/sbin/nats-server")]).find(|p| p.is_file())
}

impl NatsServer {
    /// Starts a server on a free loopback port; panics (failing the test) when nats-server is
    /// missing or does not come up.
    pub fn start() -> NatsServer {
        let bin = bin_path().expect(
            "nats-server is not installed (not on PATH, no /usr/sbin/nats-server): apt-get install nats-server \
             (scripts/test.sh does it)",
        );
        let tmp = tempfile::Builder::new().prefix("chatd-nats").tempdir().expect("tempdir");
        let mut server = NatsServer { port: 0, bin, child: None, starts: 0, _tmp: tmp };
        // A free port can be taken between the probe and the start: try a few.
        for attempt in 0.. {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
            assert!(attempt < 3, "nats-server did not start; its log:\n{}", server.log());
        }
        unreachable!()
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM, then SIGKILL if it lingers) and waits for it to exit. Clients
    /// see their connection drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: kill(2) with the pid of our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port (after `stop`).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is still running");
        // The old listener's port is free again once the process is gone; retry briefly in case
        // the kernel has not released it yet.
        let deadline = Instant::now() + PATIENCE;
        while !self.spawn() {
            assert!(Instant::now() < deadline, "nats-server did not start again; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The logs of every start so far, oldest first.
    pub fn log(&self) -> String {
        (1..=self.starts).map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default()).collect()
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir().join(format!("nats-{n}.log"))
    }

    fn dir(&self) -> &Path {
        self._tmp.path()
    }

    /// Spawns nats-server on `self.port` and waits until it says it is ready and the port accepts.
    /// `false` when it exited instead (the port was taken).
    fn spawn(&mut self) -> bool {
        self.starts += 1;
        let log = self.log_path(self.starts);
        let mut child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-l"])
            .arg(&log)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let deadline = Instant::now() + PATIENCE;
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let ready = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server is ready"));
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server did not become ready on port {}; its log:\n{}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
