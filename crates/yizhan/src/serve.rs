//! `yizhan serve`: runs the server with validated settings until SIGTERM or SIGINT.

use yizhan_server::settings::Settings;

use crate::config;

/// Logs the settings, then waits for SIGTERM or SIGINT and returns.
///
/// The listeners, connection driver and queue runner are wired in here as they land.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    for line in config::summary(&settings) {
        tracing::info!("{line}");
    }
    tracing::info!(
        grace_secs = settings.shutdown_grace.as_secs(),
        "ready; waiting for SIGTERM or SIGINT"
    );
    let signal = shutdown_signal().await?;
    tracing::info!("{signal} received, shutting down");
    Ok(())
}

/// Waits for the first of SIGTERM and SIGINT and names it.
#[cfg(unix)]
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Waits for Ctrl-C.
#[cfg(not(unix))]
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    tokio::signal::ctrl_c().await?;
    Ok("Ctrl-C")
}
