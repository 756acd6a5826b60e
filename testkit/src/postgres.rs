//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `pg_ctl start` on a
//! free loopback port (trust authentication, loopback only, `fsync` on), `pg_ctl stop` on drop.
//!
//! The binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/<version>/bin`,
//! not on PATH); scripts/test.sh installs it. Without them the test fails, saying so: it does not
//! skip. PostgreSQL refuses to run as root, so as root everything runs as the `postgres` account
//! the package creates (`runuser -u postgres --`), in a directory that account owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running PostgreSQL server, stopped (immediately) when dropped.
pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _tmp: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

impl PgServer {
    /// Initialises and starts a server; panics (failing the test) when PostgreSQL is missing.
    pub fn start() -> PgServer {
        let bin = bin_dir().expect(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql \
             (scripts/test.sh does it)",
        );
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let tmp = tempfile::Builder::new().prefix("chatd-pg").tempdir().expect("tempdir");
        if as_postgres {
            let (uid, gid) = postgres_account();
            chown(tmp.path(), uid, gid);
        }
        let data = tmp.path().join("data");
        let mut server = PgServer { port: 0, bin, data, as_postgres, _tmp: tmp };
        server.run_ok(
            "initdb",
            &["-D", &server.data_str(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"],
        );
        // A free port can be taken between the probe and the start: try a few.
        for attempt in 0.. {
            server.port = free_port();
            let out = server.pg_ctl_start();
            if out.status.success() {
                return server;
            }
            assert!(attempt < 3, "pg_ctl start failed: {}\n{}", describe(&out), server.log());
        }
        unreachable!()
    }

    fn pg_ctl_start(&self) -> Output {
        let options = format!(
            "-k {dir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=on -c shared_buffers=16MB -c max_connections=60",
            dir = self.dir().display(),
            port = self.port
        );
        let log = self.dir().join("postgres.log");
        self.run(
            "pg_ctl",
            &["-D", &self.data_str(), "-l", log.to_str().unwrap(), "-o", &options, "-w", "-t", "60", "start"],
        )
    }

    /// Stops the server (fast shutdown: sessions are ended, what they committed is kept).
    pub fn stop(&self) {
        self.run_ok("pg_ctl", &["-D", &self.data_str(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts it again, on the same port with the same data.
    pub fn start_again(&self) {
        let out = self.pg_ctl_start();
        assert!(out.status.success(), "pg_ctl start failed: {}\n{}", describe(&out), self.log());
    }

    /// A URL for database `postgres` as the superuser `postgres` (no password: trust).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    pub fn url_for(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database (each test daemon may get its own).
    pub fn create_database(&self, name: &str) {
        let port = self.port.to_string();
        self.run_ok("createdb", &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name]);
    }

    /// Runs SQL with psql against database `db`; returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out =
            self.run_ok("psql", &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", db, "-XAtq", "-c", sql]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("postgres.log")).unwrap_or_default()
    }

    fn dir(&self) -> &Path {
        self._tmp.path()
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }

    /// A command running one of PostgreSQL's programs (as the postgres account when root).
    pub fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        // The server's working directory must be one the postgres account can enter.
        cmd.current_dir(self.dir()).env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// A `psql` session on database `db` reading SQL from its stdin (spawn it with pipes).
    pub fn psql_session(&self, db: &str) -> Command {
        let mut cmd = self.command("psql");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-XAtq"]);
        cmd
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.command(tool).args(args).output().unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
    }

    fn run_ok(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.run(tool, args);
        assert!(out.status.success(), "{tool} {args:?} failed: {}\n{}", describe(&out), self.log());
        out
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data_str(), "-m", "immediate", "-w", "stop"]);
    }
}

fn describe(out: &Output) -> String {
    format!("{}: {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The uid and gid of the `postgres` account.
fn postgres_account() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns NULL or a pointer to a static record we only read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "running as root but there is no postgres account (apt-get install postgresql)");
    // SAFETY: checked non-null above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
}
