//! `chatd-bot`: reads the configuration, starts logging and the runtime, and serves until SIGINT or
//! SIGTERM, when it says QUIT to the daemon and exits.

use std::sync::Arc;

use anyhow::Context;
use chatd_bot::bot::Bot;
use chatd_bot::chat;
use chatd_bot::config::Config;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before any thread starts: the secrets are taken out of the environment here.
    let config = Config::load()?;
    tracing::info!(
        addr = %config.addr,
        user = %config.user,
        source = config.primary.name(),
        fallback = config.fallback.as_ref().map(|s| s.name()).unwrap_or("none"),
        "chatd-bot {}",
        env!("CARGO_PKG_VERSION")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config))
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
