//! Wires sources, the ledger task and sinks together and runs them until
//! SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::health::Health;
use crate::notify::Notifier;
use crate::shutdown;
use crate::sink::http;
use crate::source::dbus::{Bus, DbusSource};

/// How many inputs may wait for the ledger task before sources wait.
const QUEUE: usize = 8192;

/// Runs unitwatch with `config`, serving on `listen`, following `bus`.
pub async fn run(config: Config, listen: SocketAddr, bus: Bus) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener
        .local_addr()
        .context("cannot read the listen address")?;

    let (inputs, ledger_inputs) = mpsc::channel(QUEUE);
    let (trigger, shutdown) = shutdown::channel();
    let health = Health::default();

    let ledger = tokio::spawn(crate::owner::run(ledger_inputs, Notifier::from_env()));
    let dbus = tokio::spawn(
        DbusSource::new(bus, config.watch.clone(), inputs.clone(), health.clone())
            .run(shutdown.clone()),
    );
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %local,
        config = %config.path.display(),
        "unitwatch started"
    );

    let mut http_shutdown = shutdown.clone();
    let server = axum::serve(listener, http::router(inputs, health))
        .with_graceful_shutdown(async move { http_shutdown.recv().await });
    let server = tokio::spawn(async move { server.await });

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    Notifier::from_env().stopping();
    trigger.fire();
    let stopped = async {
        let _ = dbus.await;
        if let Ok(Err(e)) = server.await {
            tracing::warn!(error = %e, "HTTP server ended with an error");
        }
        let _ = ledger.await;
    };
    if tokio::time::timeout(Duration::from_secs(2), stopped)
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within 2 s; exiting anyway");
    }
    Ok(())
}
