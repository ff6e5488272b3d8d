//! The `unitwatch` command: parses arguments, runs the subcommand asked for
//! or the daemon ([`unitwatch::server::run`]), and is the one place that
//! reports an error: `unitwatch: <error chain>` on stderr, exit status 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;
use unitwatch::config::{self, Config, DEFAULT_PATH};
use unitwatch::http::web_config::{WebConfig, WebConfigFile};
use unitwatch::source::dbus::Bus;
use unitwatch::status::{Credentials, Target};

/// Exports per-unit uptime, downtime, restarts and failures of systemd units as Prometheus metrics.
#[derive(Parser, Debug)]
#[command(name = "unitwatch", version, about)]
struct Cli {
    #[command(flatten)]
    daemon: DaemonArgs,
    /// Watch the calling user's service manager on the session bus.
    #[arg(long)]
    user: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where the daemon reads its configuration and serves; `unitwatch status`
/// takes the same options (before or after `status`) to find it.
#[derive(Args, Debug, Default, Clone)]
struct DaemonArgs {
    /// Configuration file [default: /etc/unitwatch/config.toml].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address unitwatch serves HTTP on (overrides server.listen).
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Web configuration file (exporter-toolkit format): TLS and basic auth
    /// (overrides server.web_config).
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config: Option<PathBuf>,
}

impl DaemonArgs {
    /// These, with any left unset taken from `outer`.
    fn or(self, outer: &DaemonArgs) -> DaemonArgs {
        DaemonArgs {
            config: self.config.or_else(|| outer.config.clone()),
            listen: self.listen.or(outer.listen),
            web_config: self.web_config.or_else(|| outer.web_config.clone()),
        }
    }

    fn any(&self) -> bool {
        self.config.is_some() || self.listen.is_some() || self.web_config.is_some()
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a configuration file (and the web configuration it names) and exit 0 (valid) or 1 (invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Validate a web configuration file and exit 0 (valid) or 1 (invalid).
    CheckWebConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Show the watched units of the running unitwatch: state, since,
    /// availability over 24 h and 30 d, restarts in 24 h.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The daemon's configuration: where it listens, and its web
    /// configuration, which says whether to use TLS and which certificate to
    /// trust.
    #[command(flatten)]
    daemon: DaemonArgs,
    /// Where unitwatch serves HTTP (default: --web.listen-address or
    /// `server.listen`, on loopback if it listens on all addresses).
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// Use TLS and trust certificates signed by the CAs in FILE (PEM) for
    /// the host asked, instead of exactly the web configuration's cert_file.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Basic auth user name.
    #[arg(long, value_name = "NAME", requires = "password_file")]
    user: Option<String>,
    /// File whose first line is the basic auth password (never on the
    /// command line, where other users can read it).
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
    /// Print the daemon's JSON (`/api/v1/units`) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Whether logging is set up, and where to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logging {
    Journal,
    Stderr,
}

static LOGGING: OnceLock<Logging> = OnceLock::new();

/// One malloc arena for the whole process, and large buffers given back.
///
/// glibc gives each thread that allocates an arena of its own and keeps
/// what is freed there; unitwatch's threads (two workers, the journal
/// reader, state writes) take turns with short-lived buffers of up to a few
/// MiB (a scrape of thousands of units), so per-thread arenas held peak
/// resident memory at about 1.7 times what one arena needs (bench/run, 1000
/// units: 29.8 MiB against 17.2 MiB), for no measurable gain in speed at
/// unitwatch's rate of allocation.
///
/// glibc also raises its mmap threshold to the size of each large block
/// freed, so after the first scrape every scrape's megabytes came from the
/// heap, and what was freed between the blocks still in use stayed
/// resident: at 5000 units peak RSS rose from 39 MiB after startup to 71
/// MiB after a flap storm. A fixed threshold of [`MMAP_THRESHOLD`] maps
/// every larger block on its own and unmaps it when freed (71 -> 49 MiB).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Blocks from this size up are mapped on their own (see [`limit_malloc_arenas`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd, log to the journal with structured fields.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(journald)
                .init();
            let _ = LOGGING.set(Logging::Journal);
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let _ = LOGGING.set(Logging::Stderr);
}

/// The one report of an error: `unitwatch: <error: cause: cause>` on
/// stderr, and, when logging goes to the journal, an error entry there too
/// (logging to stderr would only print the same line twice).
fn report(e: &anyhow::Error) {
    if LOGGING.get() == Some(&Logging::Journal) {
        tracing::error!("{e:#}");
    }
    eprintln!("unitwatch: {e:#}");
}

/// Binds `listen` and runs the server until SIGTERM or SIGINT.
async fn serve(config: Config, listen: SocketAddr, web: WebConfig, bus: Bus) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let (trigger, shutdown) = unitwatch::shutdown::channel();
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        }
        trigger.fire();
    });
    unitwatch::server::run(config, listener, web, bus, shutdown).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    usage_check(&cli);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Options given before a subcommand they do not apply to are usage errors
/// (exit status 2, as clap's own), not silently ignored.
fn usage_check(cli: &Cli) {
    let wrong = match &cli.command {
        Some(Command::CheckConfig { .. } | Command::CheckWebConfig { .. })
            if cli.daemon.any() || cli.user =>
        {
            "--config, --web.listen-address, --web.config.file and --user apply to running unitwatch and to `status`; check-config and check-web-config check the FILE they are given"
        }
        Some(Command::Status(_)) if cli.user => {
            "--user before `status` means watching the session bus, which status does not do; for basic auth credentials: unitwatch status --user NAME --password-file FILE"
        }
        _ => return,
    };
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, wrong)
        .exit();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            let config = Config::load(&file)?;
            if let Some(web) = &config.web_config {
                WebConfig::load(web)?;
            }
            println!("{}: ok", file.display());
            Ok(())
        }
        Some(Command::CheckWebConfig { file }) => {
            WebConfig::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Some(Command::Status(args)) => status(&cli.daemon, args),
        None => daemon(cli.daemon, cli.user),
    }
}

/// The configuration at `path`, or at the default path; None if no path was
/// given and the default file does not exist (status then asks the default
/// address).
fn config_for_status(path: Option<&Path>) -> anyhow::Result<Option<Config>> {
    match path {
        Some(path) => Ok(Some(Config::load(path)?)),
        None => match Config::load(Path::new(DEFAULT_PATH)) {
            Ok(c) => Ok(Some(c)),
            Err(config::Error::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
    }
}

fn status(outer: &DaemonArgs, args: StatusArgs) -> anyhow::Result<()> {
    let daemon = args.daemon.or(outer);
    let config = config_for_status(daemon.config.as_deref())?;
    let listen = daemon
        .listen
        .or(config.as_ref().map(|c| c.listen))
        .unwrap_or_else(config::default_listen);
    let addr = args
        .address
        .unwrap_or_else(|| unitwatch::status::local(listen).to_string());
    // With --ca the web configuration is not needed: TLS is asked for, and
    // the CA says what to trust.
    let web = match (&args.ca, daemon.web_config.or(config.and_then(|c| c.web_config))) {
        (None, Some(file)) => Some(WebConfigFile::read(&file).map_err(|e| match &e {
            config::Error::Read { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                anyhow::Error::new(e).context(
                    "status reads the web configuration to know whether unitwatch serves TLS (run it as a user who can read it, or give --ca FILE)",
                )
            }
            _ => e.into(),
        })?),
        _ => None,
    };
    let credentials = match (&args.user, &args.password_file) {
        (Some(user), Some(file)) => Some(Credentials::from_file(user, file)?),
        _ => None,
    };
    let target = Target::new(addr, web.as_ref(), args.ca.as_deref(), credentials)?;
    unitwatch::status::run(&target, args.json)?;
    Ok(())
}

fn daemon(args: DaemonArgs, user: bool) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref().unwrap_or(Path::new(DEFAULT_PATH)))?;
    let web = match args.web_config.as_ref().or(config.web_config.as_ref()) {
        Some(file) => WebConfig::load(file)?,
        None => WebConfig::default(),
    };
    init_logging();
    let listen = args.listen.unwrap_or(config.listen);
    let bus = if user { Bus::User } else { Bus::System };
    limit_malloc_arenas();
    // One thread for every task: each of systemd's signals passes through
    // four of them (zbus's reader, the signal queue, the D-Bus source, the
    // owner), and on a runtime of two workers each hand-over could wake the
    // other thread. What takes long runs elsewhere: scrapes are rendered on
    // the blocking pool, the journal and the state writer have threads of
    // their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(config, listen, web, bus))
}
