//! `CatalogError`: why a registry's verified view could not be loaded or brought up to date.
//! It sums the layers below (TUF verification, the store, the HTTP fetch) and names the
//! registry where they cannot.

use crate::store::StoreError;
use crate::tuf::TufError;

use super::entry::EntryError;
use super::http::HttpError;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Tuf(#[from] TufError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("no registry named {0}")]
    UnknownRegistry(String),
    #[error("registry {0} has not been synced yet: run `gigmcp registry sync {0}`")]
    NotSynced(String),
    #[error("registry location {location:?}: {reason}")]
    Location {
        location: String,
        reason: &'static str,
    },
    #[error("target {target}: {source}")]
    Entry { target: String, source: EntryError },
    #[error("registry {registry}: stored {role} metadata has no valid version")]
    Stored { registry: String, role: String },
}

impl CatalogError {
    /// The short stable word the audit records as `reason=` for a refused sync: TUF's own
    /// (`rollback`, `expired`, `mix-and-match`, …), `rollback` for one the store caught under
    /// its write lock (a concurrent sync), `fetch`/`too-large` for the transport.
    pub fn kind(&self) -> &'static str {
        match self {
            CatalogError::Tuf(e) => e.kind(),
            CatalogError::Store(StoreError::Rollback { .. }) => "rollback",
            CatalogError::Store(_) => "store",
            CatalogError::Http(HttpError::TooLarge { .. }) => "too-large",
            CatalogError::Http(_) => "fetch",
            CatalogError::UnknownRegistry(_) => "unknown-registry",
            CatalogError::NotSynced(_) => "not-synced",
            CatalogError::Location { .. } => "location",
            CatalogError::Stored { .. } => "store",
            CatalogError::Entry { .. } => "entry",
        }
    }
}
