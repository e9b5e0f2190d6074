//! Every refusal of TUF metadata, one variant each, naming the role and why; `kind()` is the
//! short stable word the audit log records as `reason=`.

use super::Role;

/// Why a fetch of one metadata file failed (what a `Fetch` reports).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{file}: not found")]
    NotFound { file: String },
    #[error("{file}: larger than {max} bytes")]
    TooLarge { file: String, max: u64 },
    #[error("{file}: {detail}")]
    Failed { file: String, detail: String },
}

/// Why metadata was refused. On any of these, nothing is to be persisted.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    #[error("{role}: fetch failed: {source}")]
    Fetch { role: Role, source: FetchError },
    #[error("{role}: larger than the {max}-byte limit (refused while reading)")]
    TooLarge { role: Role, max: u64 },
    // CONTRACT: not in the contract's list; a file within its byte cap whose objects and
    // arrays exceed the budget derived from that cap (`metadata::container_budget`).
    #[error(
        "{role}: {containers} JSON objects and arrays, more than the {budget} its size cap allows"
    )]
    TooManyContainers {
        role: Role,
        containers: usize,
        budget: usize,
    },
    #[error("{role}: malformed: {detail}")]
    Parse { role: Role, detail: String },
    #[error("{role}: duplicate JSON key {key:?} (two readers could see two documents)")]
    DuplicateKey { role: Role, key: String },
    #[error("{role}: _type is {found:?}, expected {expected:?}")]
    WrongType {
        role: Role,
        expected: &'static str,
        found: String,
    },
    #[error("{role}: unsupported: {detail}")]
    Unsupported { role: Role, detail: String },
    #[error("{role}: signed by key {key_id}, which root does not trust for this role")]
    UnknownKey { role: Role, key_id: String },
    #[error("{role}: the signature by key {key_id} does not verify")]
    BadSignature { role: Role, key_id: String },
    #[error("{role}: {valid} valid signature(s) by distinct keys, {needed} needed")]
    Threshold { role: Role, valid: u32, needed: u32 },
    #[error("{role}: version {offered} is below the trusted version {trusted} (rollback)")]
    Rollback {
        role: Role,
        trusted: u64,
        offered: u64,
    },
    #[error("{role}: expired at {expires} (freeze)")]
    Expired { role: Role, expires: String },
    #[error("{file} claims version {found}, expected {expected}")]
    UnexpectedVersion {
        role: Role,
        file: String,
        expected: u64,
        found: u64,
    },
    #[error("snapshot and targets disagree (mix-and-match): {detail}")]
    SnapshotMismatch { detail: String },
    #[error("timestamp and snapshot disagree (mix-and-match): {detail}")]
    TimestampMismatch { detail: String },
    #[error("root version {version} is not a valid rotation: {detail}")]
    RotationThreshold { version: u64, detail: String },
    // CONTRACT: not in the contract's list; `load` of a registry that was never synced (only
    // its pinned root stored) names the first role it lacks.
    #[error("{role}: not stored yet (never synced)")]
    Missing { role: Role },
}

impl TufError {
    /// A short stable word for audit `reason=`.
    pub fn kind(&self) -> &'static str {
        match self {
            TufError::Fetch { .. } => "fetch",
            TufError::TooLarge { .. } | TufError::TooManyContainers { .. } => "too-large",
            TufError::Parse { .. } | TufError::WrongType { .. } => "parse",
            TufError::DuplicateKey { .. } => "duplicate-key",
            TufError::Unsupported { .. } => "unsupported",
            TufError::UnknownKey { .. } => "unknown-key",
            TufError::BadSignature { .. } => "signature",
            TufError::Threshold { .. } => "threshold",
            TufError::Rollback { .. } | TufError::UnexpectedVersion { .. } => "rollback",
            TufError::Expired { .. } => "expired",
            TufError::SnapshotMismatch { .. } | TufError::TimestampMismatch { .. } => {
                "mix-and-match"
            }
            TufError::RotationThreshold { .. } => "rotation",
            TufError::Missing { .. } => "missing",
        }
    }

    /// The same refusal for a fetched file: a fetch's own size refusal is a `TooLarge`.
    pub(super) fn from_fetch(role: Role, e: FetchError) -> Self {
        match e {
            FetchError::TooLarge { max, .. } => TufError::TooLarge { role, max },
            source => TufError::Fetch { role, source },
        }
    }
}
