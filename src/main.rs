//! The `chatd` binary: reads the configuration and flags, starts the daemon, prints where it
//! listens, and stops gracefully on SIGINT or SIGTERM. `--check-config` only checks the
//! configuration and exits.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
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
    /// Web client HTTPS listen address, overriding web.listen ("" turns it off).
    #[arg(long)]
    web_listen: Option<String>,
    /// Database file, overriding storage.db.
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax), overriding RUST_LOG. Default: info.
    #[arg(long)]
    log: Option<String>,
    /// Log line format on stderr: text for people, json (one object a line) for journald or a
    /// log shipper.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Check the configuration (the file with the flags above) and exit: 0 when it is valid,
    /// otherwise 1 with what is wrong (file, key, why) on stderr.
    #[arg(long)]
    check_config: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Copies the live database (storage.db of the configuration) to DEST with SQLite's online
    /// backup API, while chatd keeps serving; prints what the copy holds. Restore: stop chatd,
    /// copy the file back over storage.db (removing its -wal and -shm files), start chatd.
    /// With storage.backend = "postgres" it refuses: use pg_dump (docs/cluster.md).
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
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
    }
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
    let shown = path.as_ref().map_or("(the embedded defaults)".to_string(), |p| p.display().to_string());
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(plain) = args.plain_listen {
        config.server.plain_listen = plain;
    }
    if let Some(irc) = args.irc_listen {
        config.irc.listen = irc;
    }
    if let Some(web) = args.web_listen {
        config.web.listen = web;
    }
    if let Some(db) = args.db {
        config.storage.db = db;
    }
    if args.check_config {
        config.check().map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        println!("chatd: {shown}: the configuration is valid");
        return Ok(());
    }
    if let Some(Command::Backup { dest }) = args.command {
        if config.storage.backend == chatd::config::Backend::Postgres {
            anyhow::bail!(
                "{shown}: storage.backend is \"postgres\": chatd backup copies a SQLite database; back PostgreSQL up \
                 with its own tools (pg_dump -Fc, or continuous archiving), see docs/cluster.md"
            );
        }
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
    let _entered = runtime.enter();
    // Handlers installed before anything listens: a SIGTERM right after `chatd ready` (a service
    // manager, a test) stops chatd gracefully instead of killing it.
    let stop = stop_signal()?;
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
            if let Some(web) = l.web {
                let _ = writeln!(out, "chatd listening web {web}");
            }
            if let Some(web) = l.web_plain {
                let _ = writeln!(out, "chatd listening web-plain {web}");
            }
            if let Some(metrics) = l.metrics {
                let _ = writeln!(out, "chatd listening metrics {metrics}");
            }
            let _ = writeln!(out, "chatd certificate sha256 {}", l.fingerprint);
            let _ = writeln!(out, "chatd ca {}", l.ca_file.display());
            let _ = writeln!(out, "chatd ready");
            let _ = out.flush();
        },
        stop,
    ))
}

/// Resolves on SIGINT or SIGTERM; the handlers are installed at once (in the runtime's context).
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
