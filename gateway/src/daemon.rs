//! `gigmcpd`: start-up, the service loop and an orderly shutdown.
//!
//! Start-up order matters: harden the process (no core dumps: the vault's keys live in this
//! process's memory) before any secret is loaded; validate the configuration before touching the
//! state directory; refuse a wrong master key before serving anything.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use std::time::Duration;

use privhelper_api::Limits;

use crate::admin::local::{AdminSettings, LocalAdmin};
use crate::audit::AuditQueue;
use crate::audit::{Auditor, Outcome};
use crate::config::{self, Config};
use crate::control::Control;
use crate::egress::{EgressConfig, EgressShared, HostsThenSystem};
use crate::image::ImageStore;
use crate::mcp::front::{ConnLimits, Front, FrontLimits};
use crate::mcp::redact::Redactor;
use crate::mcp::servers::ServerPool;
use crate::mcp::stdio::SessionLimits;
use crate::sandbox::{Helper, SandboxLauncher};
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
        Ok(v) => Arc::new(v),
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
    runtime.block_on(serve(config, store, vault, &audit))
}

/// The name of the gateway's CA bundle in the helper's `ca_dir`.
const CA_BUNDLE: &str = "gateway-ca.pem";

/// Writes the CA certificate where the helper takes it from: a new file renamed into place, so
/// it is always a complete, single-link regular file of ours (the helper checks all three).
fn publish_ca(ca_dir: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = ca_dir.join(format!(".{CA_BUNDLE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .with_context(|| format!("writing the CA bundle in {}", ca_dir.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, ca_dir.join(CA_BUNDLE))
        .with_context(|| format!("installing the CA bundle in {}", ca_dir.display()))?;
    Ok(())
}

/// Runs the daemon until SIGTERM or SIGINT: the sandboxed server pool, the MCP front, the admin
/// interface and the idle reaper, then an orderly shutdown.
async fn serve(
    config: &Config,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    audit: &Auditor,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a SIGTERM that arrives while starting up waits for the orderly shutdown
    // below instead of killing the process with servers half started.
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    // One queue (one writer thread) for every request-path event source.
    let queue = AuditQueue::new(audit.clone());
    let (helper, pool) = server_pool(config, store.clone(), &vault, &queue)?;
    let serving = start_front(config, store.clone(), &vault, &queue, &pool).await?;
    // The admin interface on the bus, over this process's own store and vault (the key is
    // loaded once); the gateway serves without it if the bus is not there.
    let admin = LocalAdmin::for_daemon(
        store.clone(),
        vault.clone(),
        "gigmcpd".into(),
        AdminSettings::from_config(config),
    );
    let control = Control::new(pool.clone(), queue.clone(), admin);
    let _control = match crate::control::serve(&config.sandbox.bus, control).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(bus = %config.sandbox.bus, "org.gigmcp.Gateway1 not served: {e}");
            None
        }
    };
    let reaper = spawn_reaper(pool.clone(), config.gateway.server_idle_stop);

    // Started and ready only once the front is listening: systemd orders dependants on READY.
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
    // No new requests or idle stops while the servers are being stopped.
    serving.abort();
    reaper.abort();
    pool.stop_all().await;
    destroy_leftover_sandboxes(&helper).await;
    // Queued audit events are written before the process ends.
    queue.flush().await;
    audit.record("daemon.stop", "gigmcpd", Outcome::Ok, signal_name)?;
    Ok(())
}

/// The egress proxy's configuration: its CA file in the state directory, the sandbox pool it
/// serves and the front's listen address (neither ever a destination), an extra upstream CA
/// and the configured hosts ahead of the system resolver.
fn egress_config(config: &Config) -> anyhow::Result<EgressConfig> {
    let mut egress_config = EgressConfig::new(config.gateway.state_dir.join("egress-ca.pem"));
    egress_config.sandbox_pool = ipnet::IpNet::V4(config.sandbox.pool);
    egress_config.gateway_listen = vec![config.gateway.listen.ip()];
    egress_config.extra_upstream_ca = config.egress.extra_ca_file.clone();
    let settings = &config.egress;
    let limits = &mut egress_config.limits;
    limits.max_connections = settings.max_connections_per_sandbox;
    limits.max_dns_connections = settings.max_dns_connections_per_sandbox;
    limits.max_upstream_connections = settings.max_upstream_connections_per_sandbox;
    let nofile = raise_fd_limit().context("reading the fd limit (RLIMIT_NOFILE)")?;
    limits.max_gateway_connections = egress_fd_bound(nofile, settings)
        .map_err(|e| anyhow::anyhow!("egress.reserved_fds: {e}"))?;
    tracing::info!(
        nofile,
        egress_bound = limits.max_gateway_connections,
        reserved = settings.reserved_fds,
        "egress connection bound"
    );
    let mut resolver = HostsThenSystem::default();
    for (name, addrs) in &config.egress.hosts {
        resolver.hosts.insert(name, addrs.clone());
    }
    egress_config.resolver = Arc::new(resolver);
    Ok(egress_config)
}

/// Raises the soft fd limit to the hard one (the soft default of 1024 is a legacy of
/// `select(2)`, which nothing here uses) and returns it. An unlimited hard limit is taken as
/// the kernel's default `nr_open`, the most `setrlimit` accepts there.
fn raise_fd_limit() -> nix::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const NR_OPEN: u64 = 1 << 20;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let soft = hard.min(NR_OPEN);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
    Ok(soft)
}

/// The egress proxy's socket bound, every sandbox together: the fd limit minus what is kept
/// for the front, the store and the bus. It must leave room for at least one sandbox's caps,
/// or the proxy would refuse a lone sandbox what its caps promise.
fn egress_fd_bound(nofile: u64, settings: &config::EgressSettings) -> Result<usize, String> {
    let one_sandbox = settings.max_connections_per_sandbox
        + settings.max_dns_connections_per_sandbox
        + settings.max_upstream_connections_per_sandbox;
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    match nofile.checked_sub(settings.reserved_fds) {
        Some(bound) if bound >= one_sandbox => Ok(bound),
        _ => Err(format!(
            "the fd limit {nofile} minus {} reserved leaves less than one sandbox's caps \
             ({one_sandbox}): raise LimitNOFILE= or lower the caps",
            settings.reserved_fds
        )),
    }
}

/// The egress proxy, the helper on the bus and the pool of sandboxed servers launched through
/// them.
fn server_pool(
    config: &Config,
    store: Arc<dyn Store>,
    vault: &Arc<Vault>,
    queue: &AuditQueue,
) -> anyhow::Result<(Arc<Helper>, Arc<ServerPool<SandboxLauncher>>)> {
    let egress = EgressShared::new(vault.clone(), queue.clone(), egress_config(config)?)
        .context("starting the egress proxy")?;
    // The CA bundle is published before any sandbox can start: servers trust the proxy by it.
    std::fs::create_dir_all(&config.sandbox.ca_dir)
        .with_context(|| format!("creating {}", config.sandbox.ca_dir.display()))?;
    publish_ca(&config.sandbox.ca_dir, egress.ca_cert_pem())?;
    let helper = Arc::new(Helper::on_bus(&config.sandbox.bus));
    // The store the CLI installs into: servers from images are verified against it per start.
    let images = Arc::new(
        ImageStore::open(&config.sandbox.images_dir, config.images.unpack.clone()).with_context(
            || {
                format!(
                    "opening the image store at {}",
                    config.sandbox.images_dir.display()
                )
            },
        )?,
    );
    let launcher = SandboxLauncher {
        helper: helper.clone(),
        egress: egress.clone(),
        proxy_port: config.sandbox.proxy_port,
        ca_bundle: CA_BUNDLE.into(),
        limits: Limits {
            memory_max_bytes: config.sandbox.server_memory_max_bytes,
            pids_max: config.sandbox.server_pids_max,
            cpu_percent: config.sandbox.server_cpu_percent,
        },
        images,
        // Registry servers are checked against the index before each start.
        catalog: Some(store.clone()),
    };
    let pool = Arc::new(ServerPool::new(
        store,
        queue.clone(),
        launcher,
        SessionLimits::default(),
    ));
    Ok((helper, pool))
}

/// Binds the MCP front's listener (plain or TLS) and serves it in the background.
async fn start_front(
    config: &Config,
    store: Arc<dyn Store>,
    vault: &Arc<Vault>,
    queue: &AuditQueue,
    pool: &Arc<ServerPool<SandboxLauncher>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listen = config.gateway.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let mut hosts = vec![
        listen.to_string(),
        format!("localhost:{}", listen.port()),
        format!("127.0.0.1:{}", listen.port()),
    ];
    hosts.extend(config.gateway.allowed_hosts.iter().cloned());
    let front = Front::new(
        store,
        queue.clone(),
        pool.clone(),
        front_limits(&config.front, raise_descriptor_limit()),
        hosts,
        config.gateway.allowed_origins.clone(),
        Some(Arc::new(Redactor::new(vault.clone()))),
    );
    let tls = match (&config.gateway.tls_cert_file, &config.gateway.tls_key_file) {
        (Some(cert), Some(key)) => Some(
            crate::mcp::front::tls_acceptor(cert, key)
                .map_err(|e| anyhow::anyhow!("TLS for the MCP front: {e}"))?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("MCP front on {scheme}://{listen}/mcp/<endpoint>");
    Ok(tokio::spawn(front.clone().serve_with(listener, tls)))
}

/// The soft `RLIMIT_NOFILE` raised to the hard one (the soft default of 1024 is a leftover of
/// `select(2)`, which this process does not use); the limit in force is returned.
fn raise_descriptor_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!("cannot raise RLIMIT_NOFILE to {hard}: {e}");
            soft
        }
    }
}

/// The front's limits from `[front]`, the connection cap derived from `nofile` unless set.
fn front_limits(f: &config::FrontConfig, nofile: u64) -> FrontLimits {
    let max_connections = f.max_connections_for(nofile);
    tracing::info!(max_connections, nofile, "MCP front connection cap");
    FrontLimits {
        body_read: f.body_timeout,
        unauthenticated_audit_per_second: f.unauthenticated_audit_per_second,
        connections: ConnLimits {
            tls_handshake: f.tls_handshake_timeout,
            header_read: f.header_timeout,
            max_connections,
            max_connections_per_peer: f.max_connections_per_peer,
            h2_max_concurrent_streams: f.h2_max_concurrent_streams,
            h2_max_header_list_bytes: f.h2_max_header_list_bytes,
            ..ConnLimits::default()
        },
        ..FrontLimits::default()
    }
}

/// Stops servers idle for `idle`, checking every 30 s at most (every `idle` if shorter, at
/// least every second).
fn spawn_reaper(
    pool: Arc<ServerPool<SandboxLauncher>>,
    idle: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(
            idle.min(Duration::from_secs(30))
                .max(Duration::from_secs(1)),
        );
        loop {
            tick.tick().await;
            for name in pool.stop_idle(idle).await {
                tracing::info!(server = %name, "stopped after {}", humantime::format_duration(idle));
            }
        }
    })
}

/// The sandboxes' guards ask the helper to destroy them in the background; make sure before
/// exiting (the helper serves this gateway only).
async fn destroy_leftover_sandboxes(helper: &Helper) {
    if let Some(h) = helper.get_if_connected()
        && let Ok(live) = h.list_sandboxes().await
    {
        for sb in live {
            let _ = h.destroy_sandbox(&sb.id).await;
        }
    }
}

/// Tells systemd about state changes; a no-op when not started by systemd.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_egress_bound_keeps_the_reserve_and_fits_one_sandbox() {
        let settings = config::EgressSettings::default();
        assert_eq!(egress_fd_bound(65536, &settings), Ok(65536 - 1024));
        // 256 + 16 + 128 = 400 for one sandbox: 1024 + 399 is one short.
        assert!(egress_fd_bound(1024 + 399, &settings).is_err());
        assert_eq!(egress_fd_bound(1024 + 400, &settings), Ok(400));
        let err = egress_fd_bound(1024, &settings).unwrap_err();
        assert!(err.contains("LimitNOFILE"), "{err}");
    }
}
