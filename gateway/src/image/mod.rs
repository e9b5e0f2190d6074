//! OCI images: how servers arrive. Content-addressed under the helper's `images_dir`
//! (`blobs/sha256/<hex>` for manifests, configs and compressed layers, stored once whatever
//! shares them; `tmp/` for what is still arriving), pulled by digest from a registry
//! ([`pull`], over [`registry`]) or imported from an `oci-layout` ([`layout`]), every byte
//! verified against the digest and size that pinned it before anything becomes visible;
//! pushed back to a registry by [`push`]. Installed images are flattened, read-only roots
//! (`roots/<hex>/rootfs`) unpacked layer by layer beneath a directory fd that no link can
//! lead out of, each with a record and a tree digest checked before every start (`store`).

mod beneath;
pub mod blobs;
pub mod build;
pub mod digest;
mod entry;
mod error;
pub mod layout;
pub mod limits;
pub mod oci;
pub mod plan;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
mod resolve;
mod store;
mod stream;
pub mod transfer;
mod tree;
mod unpack;

pub use entry::UnpackError;
pub use error::ImageError;
pub use limits::UnpackLimits;
pub use store::{GcReport, ImageRecord, ImageStore};
pub use stream::StreamError;
pub use tree::TreeError;
