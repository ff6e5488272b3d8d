//! Wires sources, the ledger task and sinks together and runs them until
//! the shutdown signal it is given fires (`main` fires it on SIGTERM or
//! SIGINT; tests fire it themselves, running the whole server in-process).
//!
//! Startup order matters for exact accounting: the state file is loaded,
//! the journal is read from the saved position (or the backfill window) up to
//! now, and only then does the D-Bus source take its snapshot and follow
//! live, so history is always applied before the present. With `[watch]
//! user_managers`, the running user managers are followed beside it, each
//! over a connection of its own ([`source::users`]); their units are
//! accounted from D-Bus alone (the journal source reads the system manager's
//! records only).

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::clock;
use crate::config::Config;
use crate::health::Health;
use crate::http::web_config::WebConfig;
use crate::http::{routes, serve};
use crate::ledger::{Ledger, Op};
use crate::message::Input;
use crate::notify::Notifier;
use crate::owner::Owner;
use crate::persist::{StateFile, Writer};
use crate::quiet::Quiet;
use crate::shutdown::Shutdown;
use crate::snapshot::{self, Snapshot, Stats};
use crate::source;
use crate::source::cgroup::Cgroups;
use crate::source::dbus::{Bus, DbusSource};
use crate::source::journal::{current_boot_id, JournalSource, Start};
use crate::source::sampler::{self, Sampler};
use crate::source::users::UserManagers;

/// How many inputs may wait for the ledger task before sources wait.
const QUEUE: usize = 8192;

/// How long shutdown may take, the last save included.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// Runs unitwatch with `config`, serving on `listener` as `web` says,
/// following `bus`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    web: WebConfig,
    bus: Bus,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if config.user_managers && bus == Bus::User {
        anyhow::bail!(
            "{}: watch.user_managers follows the user managers beside the system manager; it cannot be used with --user",
            config.path.display()
        );
    }
    let local = listener
        .local_addr()
        .context("cannot read the listen address")?;
    tracing::debug!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %local,
        config = %config.path.display(),
        state = %config.state_dir.display(),
        "starting"
    );

    let state = StateFile::new(&config.state_dir);
    let loaded = state.load(config.max_units);
    let saved = loaded.saved;
    // Journal positions by time are on the wall clock.
    let now = clock::wall();
    // Resume exactly after the last record applied; with no record applied
    // yet, from where the last run began reading (else its save time).
    let start = match &saved {
        Some(s) => match (&s.journal_cursor, s.journal_from) {
            (Some(cursor), _) => Start::After(cursor.clone()),
            (None, Some(from)) => Start::Since(from),
            (None, None) => Start::Since(s.saved_at),
        },
        None if config.backfill.is_zero() => Start::Now,
        None => Start::Since(now.saturating_sub(config.backfill.as_micros() as u64)),
    };
    let journal_from = match &start {
        Start::After(_) => None,
        Start::Since(from) => Some(*from),
        Start::Now => Some(now),
    };
    let kernel_boot = current_boot_id();
    // Changes made to the loaded ledger before the owner takes it.
    let mut ops = Vec::new();
    let (mut ledger, cursor, boot_id, saved_at) = match saved {
        Some(s) => {
            tracing::info!(units = s.ledger.len(), "continuing from the saved state");
            let mut ledger = s.ledger;
            // Same boot: keep the saved frame, and if the wall clock was set
            // while unitwatch was away, move the history with it.
            if let Some(frame) = s.frame.filter(|f| Some(&f.boot_id) == kernel_boot.as_ref()) {
                clock::set_frame(frame.offset_usec);
                if let Some(delta) = clock::resync() {
                    tracing::warn!(
                        step_seconds = delta as f64 / 1e6,
                        "the wall clock was set by {:+.3} s while unitwatch was stopped; recorded times move with it",
                        delta as f64 / 1e6
                    );
                    let op = Op::Shift { delta };
                    ops.push(op.clone());
                    ledger.replay(op);
                }
            }
            (ledger, s.journal_cursor, s.boot_id, s.saved_at)
        }
        None => (Ledger::new(), None, None, 0),
    };
    ledger.set_max_units(config.max_units);

    let (inputs, ledger_inputs) = mpsc::channel(QUEUE);
    let health = Health::default();
    let writer = Writer::start(state, loaded.position).context("cannot start the state writer")?;
    let owner = Owner {
        ledger,
        state: writer,
        journal_cursor: cursor,
        journal_from,
        boot_id: boot_id.clone(),
        kernel_boot,
        notifier: Notifier::from_env(),
        health: health.clone(),
        listen: local,
        ops,
        quiet: Quiet::default(),
    };
    let (publisher, snapshots) = snapshot::channel(Snapshot {
        ledger: owner.ledger.clone(),
        stats: Stats::default(),
        frame: clock::frame(),
        sample: Default::default(),
    });
    let ledger_task = tokio::spawn(owner.run(ledger_inputs, publisher));

    let sampler_snapshots = snapshots.clone();
    let bus_for_sampler = bus.clone();
    let server = tokio::spawn(serve::serve(
        listener,
        routes::router(snapshots, health.clone(), config.families.clone()),
        web,
        shutdown.clone(),
    ));

    // History first: the journal up to now, then D-Bus live.
    let (caught_up, history_read) = oneshot::channel();
    let journal = JournalSource {
        directory: config.journal_directory.clone(),
        user: bus == Bus::User,
        selector: config.watch.clone(),
        start,
        last_boot: boot_id,
        last_at: saved_at,
        inputs: inputs.clone(),
    };
    if let Err(e) = journal.spawn(caught_up) {
        tracing::error!(error = %e, "cannot start the journal reader; counting from D-Bus alone");
    }
    let mut stopping = shutdown.clone();
    let interrupted = tokio::select! {
        _ = history_read => false,
        _ = stopping.recv() => true,
    };
    tracing::debug!("journal history read; going live on D-Bus");
    // The live sources.
    let users = config.user_managers.then(|| {
        source::spawn(
            Box::new(UserManagers::new(
                bus.clone(),
                config.watch.clone(),
                config.kinds.clone(),
                inputs.clone(),
            )),
            shutdown.clone(),
        )
    });
    let dbus = source::spawn(
        Box::new(DbusSource::new(
            bus,
            config.watch.clone(),
            config.kinds.clone(),
            inputs.clone(),
            health,
        )),
        shutdown.clone(),
    );

    let sampler = Sampler {
        bus: bus_for_sampler,
        snapshots: sampler_snapshots,
        inputs: inputs.clone(),
        interval: config.resources_interval,
        cgroups: config
            .cgroup_root
            .clone()
            .map(Cgroups::at)
            .or_else(Cgroups::detect),
        reads: sampler::reads(&config.families),
    };
    let sampler = source::spawn(Box::new(sampler), shutdown.clone());

    if !interrupted {
        stopping.recv().await;
    }
    Notifier::from_env().stopping();
    let stopped = async {
        let _ = dbus.await;
        let _ = sampler.await;
        if let Some(users) = users {
            let _ = users.await;
        }
        let _ = server.await;
        let (done, saved) = oneshot::channel();
        if inputs.send(Input::Shutdown(done)).await.is_ok() {
            let _ = saved.await;
        }
        let _ = ledger_task.await;
    };
    // The last save waits for the write in progress. A periodic compaction
    // gives way to it, but the first base cannot (nothing to append to) and
    // takes seconds for a large ledger (227 MiB in 1.5-3 s measured): 5 s,
    // well inside the unit's TimeoutStopSec. Cut short, the files on disk
    // are still whole (see persist), only the last changes are not saved.
    if tokio::time::timeout(STOP_WITHIN, stopped).await.is_err() {
        tracing::warn!(
            "tasks did not stop within {} s; exiting anyway",
            STOP_WITHIN.as_secs()
        );
    }
    Ok(())
}
