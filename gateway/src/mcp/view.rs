//! Endpoint views: what an endpoint offers (its servers, each with the endpoint's subset, the
//! manifest's subset and the endpoint's description overrides), built from the store once and
//! kept in memory while the store's [`Generation`] stays the same.
//!
//! The generation moves with every row written to the tables these views are built from, by
//! any code path in this process (the store's update hook counts them) or by another process
//! such as the CLI (SQLite's `data_version`), so no admin change can leave a stale view behind.
//! Asking it costs one pragma per request instead of reading and parsing the endpoint, its
//! overrides and every manifest.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::manifest::{Manifest, ManifestError};
use crate::store::{Generation, Store, StoreError};

/// Why an endpoint's view cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("server {0} is not installed")]
    NotInstalled(String),
    #[error("manifest of {server}: {source}")]
    Manifest {
        server: String,
        source: ManifestError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which tools of a server are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subset {
    All,
    Only(BTreeSet<String>),
}

impl Subset {
    /// An endpoint's list: only `*` means every tool (an empty list offers none).
    pub fn for_endpoint(tools: &[String]) -> Self {
        if tools.iter().any(|t| t == "*") {
            Self::All
        } else {
            Self::Only(tools.iter().cloned().collect())
        }
    }

    /// A manifest's list: absent (empty) or `*` means every tool the server offers.
    pub fn for_manifest(tools: &[String]) -> Self {
        if tools.is_empty() {
            Self::All
        } else {
            Self::for_endpoint(tools)
        }
    }

    pub fn allows(&self, tool: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(s) => s.contains(tool),
        }
    }
}

/// One server as an endpoint exposes it.
#[derive(Debug, Clone)]
pub struct Exposed {
    pub server: String,
    /// The endpoint's subset.
    pub endpoint_tools: Subset,
    /// The manifest's subset.
    pub manifest_tools: Subset,
    /// The endpoint's own descriptions of some tools (tool → description).
    pub descriptions: std::collections::HashMap<String, String>,
}

impl Exposed {
    pub fn allows(&self, tool: &str) -> bool {
        self.endpoint_tools.allows(tool) && self.manifest_tools.allows(tool)
    }
}

/// What one endpoint offers.
#[derive(Debug)]
pub struct EndpointView {
    pub servers: Vec<Exposed>,
}

impl EndpointView {
    fn build(store: &dyn Store, endpoint: &str) -> Result<Self, ViewError> {
        let e = store
            .endpoint_get(endpoint)?
            .ok_or(ViewError::NoSuchEndpoint)?;
        let overrides = store.endpoint_descriptions(endpoint)?;
        let mut servers = Vec::new();
        for (server, tools) in e.servers {
            let rec = store
                .server_get(&server)?
                .ok_or_else(|| ViewError::NotInstalled(server.clone()))?;
            let manifest =
                Manifest::from_json(&rec.manifest).map_err(|source| ViewError::Manifest {
                    server: server.clone(),
                    source,
                })?;
            let descriptions = overrides
                .iter()
                .filter(|(s, ..)| *s == server)
                .map(|(_, t, d)| (t.clone(), d.clone()))
                .collect();
            servers.push(Exposed {
                server,
                endpoint_tools: Subset::for_endpoint(&tools),
                manifest_tools: Subset::for_manifest(&manifest.tools),
                descriptions,
            });
        }
        Ok(Self { servers })
    }
}

/// The views of every endpoint asked for since the store last changed.
#[derive(Debug)]
pub struct Views {
    store: Arc<dyn Store>,
    cached: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    generation: Option<Generation>,
    views: HashMap<String, Arc<EndpointView>>,
}

impl Views {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cached: Mutex::default(),
        }
    }

    /// `endpoint`'s view as the store has it now.
    pub fn get(&self, endpoint: &str) -> Result<Arc<EndpointView>, ViewError> {
        // Asked before building: a write that lands while building moves it again, so the
        // view built from older rows is never kept under the newer generation.
        let generation = self.store.offer_generation()?;
        {
            let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            if cached.generation != Some(generation) {
                cached.views.clear();
                cached.generation = Some(generation);
            }
            if let Some(v) = cached.views.get(endpoint) {
                return Ok(v.clone());
            }
        }
        let view = Arc::new(EndpointView::build(&*self.store, endpoint)?);
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.generation == Some(generation) {
            cached.views.insert(endpoint.to_owned(), view.clone());
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests;
