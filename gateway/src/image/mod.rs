//! OCI images: how servers arrive. Content-addressed under the helper's `images_dir`
//! (`blobs/sha256/<hex>` for manifests, configs and compressed layers, stored once whatever
//! shares them; `tmp/` for what is still arriving), pulled by digest from a registry or
//! imported from an `oci-layout`, every byte verified against the digest and size that pinned
//! it before anything becomes visible.

pub mod blobs;
pub mod build;
pub mod digest;
pub mod oci;
