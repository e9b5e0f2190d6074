//! Step 3: empty every capability set: ambient, bounding, effective, permitted, inheritable.
//!
//! Dropping from the bounding set needs CAP_SETPCAP in the current user namespace. Inside
//! bwrap's user namespace, as uid 65534, init normally has no capabilities and bwrap has
//! already emptied the bounding set, so there is nothing to drop. A failed drop is therefore
//! tolerated only if the kernel's view afterwards (`/proc/self/status`, all 64 bits, so also
//! capabilities newer than the `caps` crate) shows every set empty; otherwise this step fails.

use ::caps::{CapSet, Capability};

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
    pub fn parse(status: &str) -> Result<Self, String> {
        let field = |name: &str| -> Result<u64, String> {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .ok_or_else(|| format!("no {name} line in /proc/self/status"))?;
            u64::from_str_radix(value.trim(), 16).map_err(|e| format!("{name} {value:?}: {e}"))
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
pub fn drop_all() -> Result<(), String> {
    ::caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient: {e}"))?;

    // Before the effective set goes: PR_CAPBSET_DROP needs CAP_SETPCAP effective.
    let mut bounding_error = None;
    let mut known: Vec<Capability> = ::caps::all().into_iter().collect();
    known.sort_by_key(|c| c.index());
    for cap in known {
        // Err: the kernel is older than this capability, so no set can hold it.
        if ::caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            if let Err(e) = ::caps::drop(None, CapSet::Bounding, cap) {
                bounding_error.get_or_insert(format!("{cap}: {e}"));
            }
        }
    }

    // Permitted before inheritable; clearing permitted also clears effective.
    for (set, name) in [
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Inheritable, "inheritable"),
    ] {
        ::caps::clear(None, set).map_err(|e| format!("clear {name}: {e}"))?;
    }

    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("read /proc/self/status to verify: {e}"))?;
    let left = Masks::parse(&status)?.non_empty();
    match (left.is_empty(), bounding_error) {
        (true, _) => Ok(()),
        (false, Some(e)) => Err(format!(
            "still held: {} (dropping from the bounding set failed: {e}; it needs CAP_SETPCAP \
             in the sandbox's user namespace)",
            left.join(" ")
        )),
        (false, None) => Err(format!("still held: {}", left.join(" "))),
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
        assert!(Masks::parse(&STATUS.replace("CapAmb", "Nope")).is_err());
        assert!(Masks::parse(&STATUS.replace("000001ffffffffff", "xyz")).is_err());
        assert!(Masks::parse("").is_err());
    }
}
