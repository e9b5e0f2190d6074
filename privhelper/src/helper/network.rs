//! Per-sandbox network: a named network namespace, a veth pair and the /30 addresses, all
//! over netlink (no `ip` processes). There is deliberately no default route.
//!
//! The namespace is created by the helper (root, initial user namespace), so it is owned by the
//! initial user namespace: the sandbox, whose user namespace is a child of an unprivileged uid's,
//! holds no capability over it and cannot change its addresses or routes.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

pub const NETNS_DIR: &str = "/run/netns";
/// Name of the sandbox's end of the link.
pub const SANDBOX_IF: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Netlink {
        step: &'static str,
        source: rtnetlink::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> NetworkError {
    move |source| NetworkError::Io { step, source }
}

fn nl(step: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    move |source| NetworkError::Netlink { step, source }
}

fn errno(step: &'static str) -> impl FnOnce(nix::Error) -> NetworkError {
    move |e| NetworkError::Io {
        step,
        source: e.into(),
    }
}

/// Netlink in the host's namespace, plus the naming of our namespaces.
#[derive(Debug, Clone)]
pub struct Network {
    host: Handle,
    prefix: String,
}

/// A sandbox's network namespace: the pinned file (bwrap's child `setns`es into it) and a
/// netlink handle opened inside it.
#[derive(Debug)]
pub struct Netns {
    pub file: File,
    inner: Handle,
}

/// Addresses of one /30.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub host: Ipv4Addr,
    pub sandbox: Ipv4Addr,
}

impl Network {
    /// `prefix` names our namespaces: `<prefix>-<id>` in /run/netns.
    pub fn new(prefix: &str) -> Result<Self, NetworkError> {
        let (conn, host, _) = rtnetlink::new_connection().map_err(io("netlink socket"))?;
        tokio::spawn(conn);
        make_netns_dir()?;
        Ok(Self {
            host,
            prefix: prefix.to_owned(),
        })
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(format!("{}-{id}", self.prefix))
    }

    /// Creates netns `<prefix>-<id>`, pinned in /run/netns, with IPv6 off. Undone by
    /// [`Network::remove_netns`].
    pub fn create_netns(&self, id: &str) -> Result<Netns, NetworkError> {
        let (file, inner) = new_netns(&self.netns_path(id))?;
        Ok(Netns { file, inner })
    }

    /// Creates the veth pair: `link_name` on the host, `eth0` in `ns`. Undone by
    /// [`Network::delete_link`] (both ends go together).
    pub async fn create_veth(&self, ns: &Netns, link_name: &str) -> Result<(), NetworkError> {
        let peer = LinkUnspec::new_with_name(SANDBOX_IF)
            .setns_by_fd(ns.file.as_raw_fd())
            .build();
        let veth = LinkVeth::new(link_name, SANDBOX_IF)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.host
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(nl("create veth"))
    }

    /// Addresses both ends of the link and brings them (and the sandbox's lo) up. Nothing to
    /// undo of its own: the addresses go with the link.
    pub async fn configure(
        &self,
        ns: &Netns,
        link_name: &str,
        addrs: Link,
    ) -> Result<(), NetworkError> {
        let inner = &ns.inner;
        // No IPv6 on the host end: link-local addresses would open a path the /30 does not show.
        // No forwarding of anything that arrives on it, whatever the host's ip_forward says.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{link_name}/disable_ipv6"),
            "1",
        );
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{link_name}/forwarding"),
            "0",
        )
        .map_err(io("disable forwarding on the host end"))?;
        let host_idx = index_of(&self.host, link_name).await?;
        address(&self.host, host_idx, addrs.host, "address host end").await?;
        up(&self.host, host_idx, "host end up").await?;
        let lo = index_of(inner, "lo").await?;
        let eth = index_of(inner, SANDBOX_IF).await?;
        up(inner, lo, "lo up").await?;
        address(inner, eth, addrs.sandbox, "address sandbox end").await?;
        up(inner, eth, "sandbox end up").await?;
        // No default route: the host end is on-link, and nothing else is reachable even if the
        // firewall table were flushed (the packets have no route to leave by).
        Ok(())
    }

    /// Deletes the host link `link_name` (and so its peer); a missing link is fine.
    pub async fn delete_link(&self, link_name: &str) -> Result<(), NetworkError> {
        if let Ok(idx) = index_of(&self.host, link_name).await {
            self.host
                .link()
                .del(idx)
                .execute()
                .await
                .map_err(nl("delete veth"))?;
        }
        Ok(())
    }

    /// Unpins and removes netns `<prefix>-<id>`; a missing one is fine.
    pub fn remove_netns(&self, id: &str) -> Result<(), NetworkError> {
        remove_netns(&self.netns_path(id))
    }

    /// The ids of the namespaces and the names of the host links of ours that a previous run
    /// left behind.
    pub async fn leftovers(
        &self,
        link_prefix: &str,
    ) -> Result<(Vec<String>, Vec<String>), NetworkError> {
        let ours = format!("{}-", self.prefix);
        let namespaces = std::fs::read_dir(NETNS_DIR).into_iter().flatten().flatten();
        let namespaces = namespaces
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| name.strip_prefix(&ours).map(str::to_owned))
            .collect();
        let mut links = Vec::new();
        let mut stream = self.host.link().get().execute();
        while let Some(msg) = stream.try_next().await.map_err(nl("list links"))? {
            links.extend(msg.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) if n.starts_with(link_prefix) => Some(n),
                _ => None,
            }));
        }
        Ok((namespaces, links))
    }
}

/// Gives link `index` address `ip`/30.
async fn address(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    step: &'static str,
) -> Result<(), NetworkError> {
    let add = h.address().add(index, IpAddr::V4(ip), 30);
    add.execute().await.map_err(nl(step))
}

async fn up(h: &Handle, index: u32, step: &'static str) -> Result<(), NetworkError> {
    let set = h.link().set(LinkUnspec::new_with_index(index).up().build());
    set.execute().await.map_err(nl(step))
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, NetworkError> {
    let msg = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(nl("find link"))?
        .ok_or_else(|| NetworkError::Other(format!("no link named {name}")))?;
    Ok(msg.header.index)
}

/// `/run/netns` as `ip netns` makes it: a shared mount, so our bind mounts propagate to every
/// mount namespace and `ip netns` tooling sees them.
fn make_netns_dir() -> Result<(), NetworkError> {
    let dir = Path::new(NETNS_DIR);
    std::fs::create_dir_all(dir).map_err(io("create /run/netns"))?;
    let none = None::<&str>;
    if mount(none, dir, none, MsFlags::MS_SHARED | MsFlags::MS_REC, none).is_err() {
        mount(
            Some(dir),
            dir,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(errno("bind /run/netns"))?;
        mount(none, dir, none, MsFlags::MS_SHARED | MsFlags::MS_REC, none)
            .map_err(errno("share /run/netns"))?;
    }
    Ok(())
}

/// Creates a network namespace pinned at `path`, without forking: a short-lived thread moves
/// itself into a new namespace, pins it with a bind mount of its own namespace file, turns IPv6
/// off in it, and opens a netlink socket there (a socket stays in the namespace it was made in).
fn new_netns(path: &Path) -> Result<(File, Handle), NetworkError> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io("create netns file"))?;
    let runtime = tokio::runtime::Handle::current();
    let target = path.to_owned();
    let made = std::thread::spawn(move || -> Result<_, NetworkError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(errno("unshare netns"))?;
        // /proc/self would be the main thread's namespace, not this thread's.
        let none = None::<&str>;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(errno("pin netns"))?;
        for knob in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1");
        }
        let _guard = runtime.enter();
        let (conn, handle, _) = rtnetlink::new_connection().map_err(io("netlink in netns"))?;
        Ok((conn, handle))
    })
    .join()
    .map_err(|_| NetworkError::Other("netns thread panicked".into()))?;
    let (conn, handle) = match made {
        Ok(v) => v,
        Err(e) => {
            let _ = remove_netns(path);
            return Err(e);
        }
    };
    tokio::spawn(conn);
    let ns = File::open(path).map_err(io("open netns"))?;
    Ok((ns, handle))
}

fn remove_netns(path: &Path) -> Result<(), NetworkError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(errno("unpin netns")(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove netns file")(e)),
    }
}
