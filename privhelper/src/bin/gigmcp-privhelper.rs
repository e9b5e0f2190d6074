//! `gigmcp-privhelper`: process set-up of the root daemon — arguments, logging, the runtime, the
//! start-up checks and sweep, the bus name, and the signals that end it. What it serves is in
//! `privhelper::helper`.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;

use privhelper::config::{self, Config};
use privhelper::helper::{Helper, Service, is_static_elf};
use privhelper::ownership;
use privhelper_api::{BUS_NAME, OBJECT_PATH};

const USAGE: &str = "usage: gigmcp-privhelper [--config PATH] [--bus-address ADDRESS]\n\
                     \n  --config PATH          the helper's configuration (default \
                     /etc/gigmcp/privhelper.toml)\n  --bus-address ADDRESS  serve on this D-Bus \
                     address instead of the system bus (tests use a private bus)\n";

/// The command line. Parsed by hand: two options do not justify a parser crate (and its dozen
/// dependencies) in a root process.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    config: PathBuf,
    bus_address: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(Args),
    Help,
    Version,
}

/// A command line that cannot be run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum ArgError {
    #[error("argument {0:?} is not UTF-8")]
    NotUtf8(OsString),
    #[error("{0} needs a value")]
    NeedsValue(String),
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, ArgError> {
    let mut out = Args {
        config: PathBuf::from(config::DEFAULT_PATH),
        bus_address: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(ArgError::NotUtf8)?;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, ArgError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| ArgError::NeedsValue(name.clone())),
            }
        };
        match name.as_str() {
            "--config" => out.config = PathBuf::from(value()?),
            "--bus-address" => out.bus_address = Some(value()?),
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => return Err(ArgError::Unexpected(name)),
        }
    }
    Ok(Command::Run(out))
}

fn main() {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("Gig'MCP privileged sandbox helper\n\n{USAGE}");
            return;
        }
        Ok(Command::Version) => {
            println!("gigmcp-privhelper {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(e) => {
            eprint!("gigmcp-privhelper: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // RUST_LOG as `level` or `target=level,...` (no regex directives: the root process links no
    // regex engine).
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| "info".parse().expect("literal"));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .without_time(),
        )
        .with(filter)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let ran = match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    if let Err(e) = ran {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("gigmcp-privhelper must run as root");
    }
    // StrictModes: a configuration, bwrap, nft or init that anyone but root can change would
    // let that user run code as root. The file first, before its contents are believed.
    let owners = ownership::Owners {
        helper_uid: nix::unistd::geteuid().as_raw(),
        gateway_uid: None,
        gateway_gid: None,
    };
    ownership::check_file(&args.config, owners).context("the configuration file")?;
    let config = Config::load(&args.config)?;
    ownership::check_tools(&config).context("a program the helper runs as root")?;
    raise_fd_limit();
    match is_static_elf(&config.sandbox_init) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, ArgError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_mean_the_default_config_on_the_system_bus() {
        assert_eq!(
            p(&[]),
            Ok(Command::Run(Args {
                config: PathBuf::from(config::DEFAULT_PATH),
                bus_address: None
            }))
        );
    }

    #[test]
    fn options_take_their_value_separately_or_after_an_equals_sign() {
        let want = Command::Run(Args {
            config: PathBuf::from("/tmp/h.toml"),
            bus_address: Some("unix:path=/tmp/bus".into()),
        });
        assert_eq!(
            p(&[
                "--config",
                "/tmp/h.toml",
                "--bus-address",
                "unix:path=/tmp/bus"
            ]),
            Ok(want)
        );
        let want = Command::Run(Args {
            config: PathBuf::from("/tmp/h.toml"),
            bus_address: Some("unix:path=/tmp/bus".into()),
        });
        assert_eq!(
            p(&["--config=/tmp/h.toml", "--bus-address=unix:path=/tmp/bus"]),
            Ok(want)
        );
    }

    #[test]
    fn unknown_arguments_and_missing_values_are_refused() {
        assert_eq!(
            p(&["--conifg", "x"]),
            Err(ArgError::Unexpected("--conifg".into()))
        );
        assert_eq!(
            p(&["--config"]),
            Err(ArgError::NeedsValue("--config".into()))
        );
    }

    #[test]
    fn help_and_version_are_recognised() {
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert_eq!(p(&["-V"]), Ok(Command::Version));
    }
}
