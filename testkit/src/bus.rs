//! A private system-type D-Bus for one test: the shipped policy file of the service under test,
//! its user `gigmcp` mapped to root (who runs the tests). The `dbus-daemon` belongs to a
//! [`PrivateBus`] guard: killed and reaped when the guard drops (also while a panic unwinds) and
//! killed by the kernel if the test process dies, so it never holds the runner's pipes open.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::process::{Tied, spawn_tied};

#[derive(Debug)]
pub struct PrivateBus {
    pub address: String,
    _daemon: Tied,
}

impl PrivateBus {
    /// A bus in `dir` with the shipped policy `shipped_policy` (a file name in
    /// `etc/dbus-1/system.d/`) and, with `nobody_may_call`, a rule letting `nobody` call that
    /// destination (to reach a service's own caller check past the bus policy).
    pub fn start(dir: &Path, shipped_policy: &str, nobody_may_call: Option<&str>) -> Self {
        let policy_dir = dir.join("system.d");
        std::fs::create_dir_all(&policy_dir).unwrap();
        let shipped_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../etc/dbus-1/system.d")
            .join(shipped_policy);
        let shipped = std::fs::read_to_string(&shipped_path)
            .unwrap_or_else(|e| panic!("{}: {e}", shipped_path.display()));
        assert!(shipped.contains("<policy user=\"gigmcp\">"));
        std::fs::write(
            policy_dir.join(shipped_policy),
            shipped.replace("<policy user=\"gigmcp\">", "<policy user=\"root\">"),
        )
        .unwrap();
        if let Some(dest) = nobody_may_call {
            std::fs::write(policy_dir.join("zz-test-nobody.conf"), nobody_rule(dest)).unwrap();
        }
        let socket = dir.join("bus.sock");
        let conf = dir.join("bus.conf");
        std::fs::write(&conf, bus_config(&socket, &policy_dir)).unwrap();
        let mut cmd = Command::new("dbus-daemon");
        cmd.arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped());
        let mut daemon = spawn_tied(cmd, None).expect("dbus-daemon (apt-get install dbus)");
        let mut line = String::new();
        BufReader::new(daemon.child().stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "bus address: {address:?}");
        // Keep the socket reachable for other uids (the `nobody` caller).
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).ok();
        Self {
            address,
            _daemon: daemon,
        }
    }
}

fn nobody_rule(dest: &str) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><policy user="nobody">
  <allow send_destination="{dest}" send_interface="{dest}"/>
</policy></busconfig>"#
    )
}

/// Deny by default, as the system bus is; the included policy opens what the service needs.
fn bus_config(socket: &Path, policy_dir: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
  <includedir>{}</includedir>
</busconfig>"#,
        socket.display(),
        policy_dir.display()
    )
}
