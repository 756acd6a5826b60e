//! The `chatd` binary: reads the configuration and flags, starts the daemon, prints where it
//! listens, and stops gracefully on SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "chatd", version, about = "A chat daemon over TLS: its own IRC-style line protocol, and IRC")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (default: ./chatd.toml if present, else the embedded defaults).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// TLS listen address, overriding server.listen.
    #[arg(long)]
    listen: Option<String>,
    /// Plaintext listen address, overriding server.plain_listen (loopback only unless forced).
    #[arg(long)]
    plain_listen: Option<String>,
    /// IRC TLS listen address, overriding irc.listen ("" turns it off).
    #[arg(long)]
    irc_listen: Option<String>,
    /// Database file, overriding storage.db.
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax), overriding RUST_LOG. Default: info.
    #[arg(long)]
    log: Option<String>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Copies the live database (storage.db of the configuration) to DEST with SQLite's online
    /// backup API, while chatd keeps serving; prints what the copy holds. Restore: stop chatd,
    /// copy the file back over storage.db (removing its -wal and -shm files), start chatd.
    Backup {
        /// The backup file to write (replaced if it exists; written owner-only).
        dest: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = args
        .log
        .clone()
        .map(EnvFilter::new)
        .unwrap_or_else(|| EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let path = args.config.or_else(|| {
        let local = PathBuf::from("chatd.toml");
        local.exists().then_some(local)
    });
    let mut config = chatd::config::Config::load(path.as_deref())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(plain) = args.plain_listen {
        config.server.plain_listen = plain;
    }
    if let Some(irc) = args.irc_listen {
        config.irc.listen = irc;
    }
    if let Some(db) = args.db {
        config.storage.db = db;
    }
    if let Some(Command::Backup { dest }) = args.command {
        let db = &config.storage.db;
        let s = chatd::store::backup(db, &dest)?;
        println!(
            "chatd backup {} -> {}: {} messages, {} rooms, {} accounts, {} bytes",
            db.display(),
            dest.display(),
            s.messages,
            s.rooms,
            s.accounts,
            s.bytes
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(chatd::run(
        config,
        path,
        |l| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "chatd listening tls {}", l.tls);
            if let Some(plain) = l.plain {
                let _ = writeln!(out, "chatd listening plain {plain}");
            }
            if let Some(irc) = l.irc {
                let _ = writeln!(out, "chatd listening irc {irc}");
            }
            if let Some(irc) = l.irc_plain {
                let _ = writeln!(out, "chatd listening irc-plain {irc}");
            }
            let _ = writeln!(out, "chatd certificate sha256 {}", l.fingerprint);
            let _ = writeln!(out, "chatd ca {}", l.ca_file.display());
            let _ = writeln!(out, "chatd ready");
            let _ = out.flush();
        },
        stop_signal(),
    ))
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
