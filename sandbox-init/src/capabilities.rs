//! Step 3: empty every capability set: ambient, bounding, effective, permitted, inheritable.
//!
//! Dropping from the bounding set needs CAP_SETPCAP in the current user namespace. Inside
//! bwrap's user namespace, as uid 65534, init normally has no capabilities and bwrap has
//! already emptied the bounding set, so there is nothing to drop. A failed drop is therefore
//! tolerated only if the kernel's view afterwards (`/proc/self/status`, all 64 bits, so also
//! capabilities newer than the `caps` crate) shows every set empty; otherwise this step fails.

use std::num::ParseIntError;

use ::caps::errors::CapsError;
use ::caps::{CapSet, Capability};

/// Why step 3 failed.
#[derive(Debug, thiserror::Error)]
pub enum CapabilitiesError {
    /// `capset`/`prctl` refused to empty a set (ambient, effective, permitted or inheritable).
    #[error("clear {set}: {source}")]
    Clear {
        /// The set, as `/proc/self/status` names it in long form.
        set: &'static str,
        /// The `caps` crate's error.
        source: CapsError,
    },
    /// The kernel's view could not be read, so the drop cannot be verified.
    #[error("read /proc/self/status to verify: {0}")]
    ReadStatus(#[source] std::io::Error),
    /// `/proc/self/status` has no line for one of the five sets.
    #[error("no {0} line in /proc/self/status")]
    MissingMask(&'static str),
    /// A `Cap*:` line's value is not a hexadecimal mask.
    #[error("{name} {value:?}: {source}")]
    BadMask {
        /// The line's name (`CapInh`, ...).
        name: &'static str,
        /// The value as the kernel wrote it.
        value: String,
        /// Why it is not a mask.
        source: ParseIntError,
    },
    /// A set still holds capabilities after the drop.
    #[error("still held: {}", .held.non_empty().join(" "))]
    StillHeld {
        /// The kernel's view after the drop.
        held: Masks,
    },
    /// A set still holds capabilities, and dropping from the bounding set had failed: the
    /// likely cause, so it is named.
    #[error(
        "still held: {} (dropping from the bounding set failed: {cap}: {source}; it needs \
         CAP_SETPCAP in the sandbox's user namespace)",
        .held.non_empty().join(" ")
    )]
    BoundingNotDropped {
        /// The kernel's view after the drop.
        held: Masks,
        /// The first capability that could not be dropped from the bounding set.
        cap: Capability,
        /// The `caps` crate's error for it.
        source: CapsError,
    },
}

/// The five capability masks of `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Masks {
    /// `CapInh`.
    pub inheritable: u64,
    /// `CapPrm`.
    pub permitted: u64,
    /// `CapEff`.
    pub effective: u64,
    /// `CapBnd`.
    pub bounding: u64,
    /// `CapAmb`.
    pub ambient: u64,
}

impl Masks {
    /// Parses the `Cap*:` lines of a `/proc/<pid>/status` text; all five must be present.
    pub fn parse(status: &str) -> Result<Self, CapabilitiesError> {
        let field = |name: &'static str| -> Result<u64, CapabilitiesError> {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .ok_or(CapabilitiesError::MissingMask(name))?;
            u64::from_str_radix(value.trim(), 16).map_err(|source| CapabilitiesError::BadMask {
                name,
                value: value.to_owned(),
                source,
            })
        };
        Ok(Masks {
            inheritable: field("CapInh")?,
            permitted: field("CapPrm")?,
            effective: field("CapEff")?,
            bounding: field("CapBnd")?,
            ambient: field("CapAmb")?,
        })
    }

    /// The non-empty sets, as `name=hexmask`.
    pub fn non_empty(&self) -> Vec<String> {
        [
            ("inheritable", self.inheritable),
            ("permitted", self.permitted),
            ("effective", self.effective),
            ("bounding", self.bounding),
            ("ambient", self.ambient),
        ]
        .into_iter()
        .filter(|&(_, m)| m != 0)
        .map(|(n, m)| format!("{n}={m:016x}"))
        .collect()
    }
}

/// Empties all five sets and checks the result with the kernel.
pub fn drop_all() -> Result<(), CapabilitiesError> {
    ::caps::clear(None, CapSet::Ambient).map_err(|source| CapabilitiesError::Clear {
        set: "ambient",
        source,
    })?;

    // Before the effective set goes: PR_CAPBSET_DROP needs CAP_SETPCAP effective.
    let mut bounding_error = None;
    let mut known: Vec<Capability> = ::caps::all().into_iter().collect();
    known.sort_by_key(|c| c.index());
    for cap in known {
        // Err: the kernel is older than this capability, so no set can hold it.
        if ::caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            if let Err(e) = ::caps::drop(None, CapSet::Bounding, cap) {
                bounding_error.get_or_insert((cap, e));
            }
        }
    }

    // Permitted before inheritable; clearing permitted also clears effective.
    for (set, name) in [
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Inheritable, "inheritable"),
    ] {
        ::caps::clear(None, set)
            .map_err(|source| CapabilitiesError::Clear { set: name, source })?;
    }

    let status =
        std::fs::read_to_string("/proc/self/status").map_err(CapabilitiesError::ReadStatus)?;
    let held = Masks::parse(&status)?;
    match bounding_error {
        _ if held == Masks::default() => Ok(()),
        Some((cap, source)) => Err(CapabilitiesError::BoundingNotDropped { held, cap, source }),
        None => Err(CapabilitiesError::StillHeld { held }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcat\nUmask:\t0022\nCapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n\
        CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";

    #[test]
    fn parses_the_kernel_format() {
        let m = Masks::parse(STATUS).expect("parse");
        assert_eq!(
            m,
            Masks {
                bounding: 0x1ff_ffff_ffff,
                ..Masks::default()
            }
        );
        assert_eq!(m.non_empty(), ["bounding=000001ffffffffff"]);
        assert!(Masks::default().non_empty().is_empty());
    }

    #[test]
    fn refuses_incomplete_or_garbled_status() {
        assert!(matches!(
            Masks::parse(&STATUS.replace("CapAmb", "Nope")),
            Err(CapabilitiesError::MissingMask("CapAmb"))
        ));
        let garbled = Masks::parse(&STATUS.replace("000001ffffffffff", "xyz")).expect_err("xyz");
        assert!(
            matches!(&garbled, CapabilitiesError::BadMask { name: "CapBnd", value, .. }
                if value == "\txyz"),
            "{garbled:?}"
        );
        assert!(
            garbled.to_string().starts_with("CapBnd \"\\txyz\": "),
            "{garbled}"
        );
        assert!(Masks::parse("").is_err());
    }

    #[test]
    fn still_held_names_every_non_empty_set() {
        let held = Masks {
            effective: 0x20,
            bounding: 0x1ff_ffff_ffff,
            ..Masks::default()
        };
        assert_eq!(
            CapabilitiesError::StillHeld { held }.to_string(),
            "still held: effective=0000000000000020 bounding=000001ffffffffff"
        );
    }
}
