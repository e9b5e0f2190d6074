//! Fuzz targets for every parser of untrusted bytes (DESIGN 7.5), each a property, not only
//! "does not panic": a target turns raw bytes into a structured input (`arbitrary`), runs the
//! real parser through its public API, and panics when the property breaks.
//!
//! The same targets run two ways:
//! - `tests/properties.rs`: a fixed-seed driver ([`driver`]) with a case budget, so CI is
//!   deterministic and bounded (`GIGMCP_FUZZ_CASES` raises the budget by hand,
//!   `GIGMCP_FUZZ_SEED` changes the seed); each committed file under `corpus/<target>/` is
//!   replayed first;
//! - coverage-guided by AFL++ (`fuzz/afl.sh`, the `gigmcp-fuzz-afl` binary), from the same
//!   corpus: a crash file it finds replays here once copied into the corpus.
//!
//! Knows nothing of the parsers' insides: each property is stated against an independent,
//! deliberately simple oracle written here.

pub mod driver;
mod pick;

pub mod dns;
pub mod framing;
pub mod http_checks;
pub mod init_args;
pub mod jsonrpc;
pub mod manifest;
pub mod registry_entry;
pub mod rewriter;
pub mod tuf;
pub mod unpack;

use arbitrary::Unstructured;

/// One fuzz target: a name (also its corpus folder) and its property.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// Checks the property on the input the bytes describe; panics when it breaks. An `Err`
    /// (the bytes ran out) ends the case quietly.
    pub check: fn(&mut Unstructured<'_>) -> arbitrary::Result<()>,
    /// Cases a `scripts/test` run tries (sized so all targets together stay well within their
    /// CI budget).
    pub ci_cases: u32,
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    dns::TARGET,
    jsonrpc::TARGET,
    framing::TARGET,
    http_checks::TARGET,
    rewriter::TARGET,
    manifest::TARGET,
    registry_entry::TARGET,
    init_args::TARGET,
    unpack::TARGET,
    tuf::CJSON,
    tuf::METADATA,
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Runs `target`'s property on one raw input (what AFL++ and the corpus replay call).
pub fn run_bytes(target: &Target, data: &[u8]) {
    let _ = (target.check)(&mut Unstructured::new(data));
}
