//! A sandbox's resource limits: the gateway's configuration is the ceiling, a manifest may ask
//! for less (the helper caps again with its own ceilings).

use privhelper_api::Limits;

use crate::manifest::Manifest;

/// The limits a server's sandbox runs with: the gateway's `[sandbox]` limits, each lowered to
/// what the manifest declares. A manifest can ask for less, never for more: the admin's
/// configuration is the ceiling (and the helper caps again with its own).
// CONTRACT: takes the launcher's `Limits` (the daemon builds them from `SandboxConfig`) rather
// than `&SandboxConfig`: the layers let `sandbox` use `manifest` but not `config`.
pub fn effective_limits(gateway: &Limits, manifest: &Manifest) -> Limits {
    let declared = manifest.limits.unwrap_or_default();
    Limits {
        memory_max_bytes: declared.memory_mib.map_or(gateway.memory_max_bytes, |mib| {
            gateway
                .memory_max_bytes
                .min(mib.saturating_mul(1024 * 1024))
        }),
        pids_max: declared
            .pids
            .map_or(gateway.pids_max, |p| gateway.pids_max.min(p)),
        cpu_percent: declared
            .cpu_percent
            .map_or(gateway.cpu_percent, |c| gateway.cpu_percent.min(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: Limits = Limits {
        memory_max_bytes: 512 * 1024 * 1024,
        pids_max: 128,
        cpu_percent: 100,
    };

    fn manifest(limits: &str) -> Manifest {
        Manifest::from_json(&format!(
            r#"{{"name": "t", "version": "1", "limits": {limits}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_manifest_lowers_the_gateway_limits_and_never_raises_them() {
        let lower = manifest(r#"{"memory_mib": 64, "pids": 16, "cpu_percent": 25}"#);
        assert_eq!(
            effective_limits(&GATEWAY, &lower),
            Limits {
                memory_max_bytes: 64 * 1024 * 1024,
                pids_max: 16,
                cpu_percent: 25
            }
        );
        let higher = manifest(r#"{"memory_mib": 4096, "pids": 100000, "cpu_percent": 400}"#);
        assert_eq!(effective_limits(&GATEWAY, &higher), GATEWAY);
        let huge = manifest(&format!(r#"{{"memory_mib": {}}}"#, u64::MAX));
        assert_eq!(effective_limits(&GATEWAY, &huge), GATEWAY);
    }

    #[test]
    fn absent_limits_leave_the_gateway_limits() {
        assert_eq!(effective_limits(&GATEWAY, &manifest("{}")), GATEWAY);
        let m = Manifest::from_json(r#"{"name": "t", "version": "1"}"#).unwrap();
        assert_eq!(effective_limits(&GATEWAY, &m), GATEWAY);
        let pids_only = manifest(r#"{"pids": 8}"#);
        assert_eq!(effective_limits(&GATEWAY, &pids_only).pids_max, 8);
        assert_eq!(
            effective_limits(&GATEWAY, &pids_only).memory_max_bytes,
            GATEWAY.memory_max_bytes
        );
    }
}
