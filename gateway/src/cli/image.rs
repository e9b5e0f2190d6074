//! `gigmcp image pull|import|list|rm|gc` (and `build`, in `build.rs`): the image store at `sandbox.images_dir`.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::timestamp;
use crate::admin::{AdminApi, ImportSelect};
use crate::image::ImageRecord;
use crate::terminal;

#[derive(Debug, Subcommand)]
pub(super) enum ImageCommand {
    /// Build a reproducible server image from npm:NAME@VERSION, pypi:NAME==VERSION or
    /// dir:PATH into a new oci-layout directory, and print its digest. The package's install
    /// scripts run in a sandbox whose egress reaches only the package registry.
    Build(super::build::BuildCommand),
    /// Pull an image pinned by digest (HOST[:PORT]/REPO[:TAG]@sha256:<hex>) and install it.
    Pull { reference: String },
    /// Import an image from an oci-layout directory or tarball (air-gapped hosts) and install
    /// it: the layout's only image, or the one --digest or --name chooses.
    Import {
        path: PathBuf,
        #[arg(long, conflicts_with = "name")]
        digest: Option<String>,
        /// The image's org.opencontainers.image.ref.name in the layout.
        #[arg(long)]
        name: Option<String>,
    },
    /// List installed images and the servers using each.
    List,
    /// Remove an installed image (refused while a server uses it).
    Rm { digest: String },
    /// Remove every image no server uses, and the blobs only they used.
    Gc,
}

/// `image pull|import|list|rm|gc`.
pub(super) fn image(
    admin: &mut dyn AdminApi,
    command: ImageCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let installed = |out: &mut dyn Write, r: &ImageRecord| {
        writeln!(
            out,
            "installed image {} ({} layers, {} bytes unpacked, from {})",
            r.pinned,
            r.layers.len(),
            r.unpacked_bytes,
            terminal::escape(&r.reference)
        )
    };
    match command {
        ImageCommand::Build(_) => {
            unreachable!("run() builds images before any admin state is opened")
        }
        ImageCommand::Pull { reference } => installed(out, &admin.image_pull(&reference)?)?,
        ImageCommand::Import { path, digest, name } => {
            let select = match (digest, name) {
                (Some(d), _) => ImportSelect::Digest(d),
                (None, Some(n)) => ImportSelect::Name(n),
                (None, None) => ImportSelect::Only,
            };
            installed(out, &admin.image_import(&path, &select)?)?;
        }
        ImageCommand::List => {
            writeln!(
                out,
                "{:71}  {:>12}  {:20}  USED BY",
                "DIGEST", "BYTES", "ADDED"
            )?;
            for (r, users) in admin.image_list()? {
                let users = if users.is_empty() {
                    "-".to_owned()
                } else {
                    users.join(",")
                };
                writeln!(
                    out,
                    "{:71}  {:>12}  {:20}  {users}",
                    r.pinned.to_string(),
                    r.unpacked_bytes,
                    timestamp(i64::try_from(r.added_ms).unwrap_or(0)),
                )?;
            }
        }
        ImageCommand::Rm { digest } => {
            let freed = admin.image_remove(&digest)?;
            writeln!(out, "removed image {digest} ({freed} bytes freed)")?;
        }
        ImageCommand::Gc => {
            let r = admin.image_gc()?;
            writeln!(
                out,
                "removed {} images and {} blobs ({} bytes freed)",
                r.images.len(),
                r.blobs.len(),
                r.bytes_freed
            )?;
        }
    }
    Ok(())
}
