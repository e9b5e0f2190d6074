//! Process set-up of `gigmcp-privhelper`: arguments, logging, the sweep, the bus name, signals.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use super::{Helper, Service};
use privhelper_api::{BUS_NAME, OBJECT_PATH};
use crate::config::{self, Config};

#[derive(Debug, Parser)]
#[command(
    name = "gigmcp-privhelper",
    version,
    about = "Gig'MCP privileged sandbox helper"
)]
struct Args {
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// D-Bus address to serve on instead of the system bus (tests use a private bus).
    #[arg(long)]
    bus_address: Option<String>,
}

pub fn main() -> i32 {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("gigmcp-privhelper must run as root");
    }
    let config = Config::load(&args.config)?;
    raise_fd_limit();
    match super::validate::is_static_elf(&config.sandbox_init) {
        Ok(true) => {}
        Ok(false) => anyhow::bail!(
            "{} is dynamically linked: the image's own loader would run before landlock and \
             seccomp. Build it with -C target-feature=+crt-static",
            config.sandbox_init.display()
        ),
        Err(e) => anyhow::bail!("sandbox_init {}: {e}", config.sandbox_init.display()),
    }
    if config.allow_degraded_landlock {
        tracing::warn!(
            "allow_degraded_landlock is on: sandboxes start even where landlock cannot be enforced"
        );
    }
    let helper = Helper::new(config).await?;
    let swept = helper.sweep().await.context("start-up sweep")?;
    tracing::info!(
        namespaces = swept.namespaces,
        links = swept.links,
        cgroups = swept.cgroups,
        "swept leftovers of a previous run"
    );
    let builder = match &args.bus_address {
        Some(addr) => zbus::connection::Builder::address(addr.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let conn = builder
        .name(BUS_NAME)
        .serve_at(OBJECT_PATH, Service::new(helper.clone()))
        .build()
        .await
        .context("connecting to the bus")?;
    helper.set_bus(conn.clone());
    tracing::info!(
        bus = args.bus_address.as_deref().unwrap_or("system"),
        "serving {BUS_NAME}"
    );
    let _ = sd_notify_ready();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down: destroying live sandboxes");
    helper.shutdown().await;
    Ok(())
}

/// Each live sandbox holds a few fds in the helper; raise the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// `READY=1` to systemd when started by it (Type=notify); a no-op otherwise.
fn sd_notify_ready() -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let path = PathBuf::from(path);
    // An abstract socket is given as "@name".
    if let Some(abstract_name) = path.to_str().and_then(|p| p.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        socket.send_to_addr(b"READY=1", &addr)?;
    } else {
        socket.send_to(b"READY=1", &path)?;
    }
    Ok(())
}
