//! `gigmcpd`: start-up, the service loop and an orderly shutdown.
//!
//! Start-up order matters: harden the process (no core dumps: the vault's keys live in this
//! process's memory) before any secret is loaded; validate the configuration before touching the
//! state directory; refuse a wrong master key before serving anything.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use crate::audit::{Auditor, Outcome};
use crate::config::{self, Config};
use crate::store::{SqliteStore, Store};
use crate::vault::{MasterKey, Vault};

#[derive(Debug, Parser)]
#[command(name = "gigmcpd", version, about = "The Gig'MCP gateway daemon")]
pub struct Args {
    /// Configuration file.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the configuration and exit: 0 if valid, 1 with the offending key and line if not.
    #[arg(long)]
    check: bool,
    /// Master key file, for development. Default: the systemd credential master.key.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
}

/// Runs the daemon; returns the process exit code.
pub fn main() -> i32 {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gigmcpd: invalid configuration: {e}");
            return 1;
        }
    };
    if args.check {
        println!("{}: configuration is valid", args.config.display());
        return 0;
    }
    if let Err(e) = harden_process() {
        eprintln!("gigmcpd: cannot harden the process: {e}");
        return 1;
    }
    crate::logging::init(config.log);
    match run(&args, &config) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}

/// No core dumps and no ptrace by other processes of the same user: both would expose the
/// master key and data keys held in memory.
fn harden_process() -> nix::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)
}

fn run(args: &Args, config: &Config) -> anyhow::Result<()> {
    let state_dir = &config.gateway.state_dir;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_in(state_dir)
            .with_context(|| format!("opening the store in {}", state_dir.display()))?,
    );
    let audit = Auditor::new(store.clone(), "gigmcpd");
    let key = MasterKey::load(args.master_key_file.as_deref())?;
    let vault = match Vault::open(store.clone(), key) {
        Ok(v) => v,
        Err(e) => {
            let _ = audit.record("vault.open", "master-key", Outcome::Denied, &e.to_string());
            return Err(e.into());
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, &vault, &audit))
}

async fn serve(config: &Config, vault: &Vault, audit: &Auditor) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    audit.record(
        "daemon.start",
        "gigmcpd",
        Outcome::Ok,
        &format!("version {}", env!("CARGO_PKG_VERSION")),
    )?;
    tracing::info!(
        state_dir = %config.gateway.state_dir.display(),
        listen = %config.gateway.listen,
        pool = %config.sandbox.pool,
        master_key = %vault.fingerprint(),
        "gigmcpd ready"
    );
    notify(&[sd_notify::NotifyState::Ready]);

    let signal_name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(signal = signal_name, "shutting down");
    audit.record("daemon.stop", "gigmcpd", Outcome::Ok, signal_name)?;
    Ok(())
}

/// Tells systemd about state changes; a no-op when not started by systemd.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}
