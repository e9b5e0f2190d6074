//! What a signed registry's entries are and how they are used: the entry format, lint and
//! entitlements, the registries' verified state and its sync, and installing servers from it.

pub mod install;
pub mod pick;

mod error;
pub mod http;
pub mod state;
pub mod sync;

pub use error::CatalogError;
pub use http::HttpFetch;
pub use state::{load, load_all};
pub use sync::{SyncReport, fetcher, fetcher_with_ca, sync};
