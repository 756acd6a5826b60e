//! `chatd-bot`: reads the configuration, starts logging and the runtime, and serves until SIGINT or
//! SIGTERM, when it says QUIT to the daemon and exits. With `--check [code]` it fetches one quote,
//! prints what every source said and exits instead (0 when a price came back, 1 otherwise).

use std::sync::Arc;

use anyhow::Context;
use chatd_bot::bot::Bot;
use chatd_bot::chat;
use chatd_bot::config::Config;
use chatd_bot::source::{Source, Sources};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    // --check prints its own report on stdout; the log then only adds warnings.
    let checking = std::env::args().any(|a| a == "--check" || a.starts_with("--check="));
    let default_level = if checking { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before any thread starts: the secrets are taken out of the environment here.
    let config = Config::load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    if let Some(code) = config.check.clone() {
        let ok = runtime.block_on(check(&config, &code))?;
        std::process::exit(if ok { 0 } else { 1 });
    }
    let stooq_key = [Some(&config.primary), config.fallback.as_ref()]
        .into_iter()
        .flatten()
        .any(|s| matches!(s, Source::Stooq { key: Some(_), .. }));
    tracing::info!(
        addr = %config.addr,
        user = %config.user,
        source = config.primary.name(),
        fallback = config.fallback.as_ref().map(|s| s.name()).unwrap_or("none"),
        stooq_key = if stooq_key { "set" } else { "none" },
        "chatd-bot {}",
        env!("CARGO_PKG_VERSION")
    );
    runtime.block_on(serve(config))
}

async fn check(config: &Config, code: &str) -> anyhow::Result<bool> {
    let sources = Sources::new(config.primary.clone(), config.fallback.clone(), config.timeout)?;
    let (report, ok) = chatd_bot::check::check(&sources, code).await;
    print!("{report}");
    Ok(ok)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let (bot, answers) = Bot::new(&config)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received, shutting down");
        let _ = stop_tx.send(true);
        // Keep the sender alive until the process exits.
        std::future::pending::<()>().await;
    });
    chat::run(Arc::new(config), bot, answers, stop_rx).await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
