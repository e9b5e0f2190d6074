//! The client's view of `org.gigmcp.Gateway1`: the same methods as `service.rs`, typed with
//! the same wire records. `tests/control_cli.rs` checks the served interface against docs/DBUS.md.

use zbus::Fd;

use super::wire::*;

#[zbus::proxy(
    interface = "org.gigmcp.Gateway1",
    default_service = "org.gigmcp.Gateway1",
    default_path = "/org/gigmcp/Gateway1"
)]
pub trait Gateway1 {
    fn secret_set(&self, name: &str, value: Fd<'_>) -> zbus::Result<SetWire>;
    fn secret_list(&self) -> zbus::Result<Vec<SecretWire>>;
    fn secret_remove(&self, name: &str) -> zbus::Result<()>;
    fn vault_status(&self) -> zbus::Result<VaultStatusWire>;

    fn server_add_image(
        &self,
        name: &str,
        image: &str,
        layout: Vec<Fd<'_>>,
        manifest: &str,
        approved_ranges: &[String],
    ) -> zbus::Result<ServerWire>;
    fn server_list(&self) -> zbus::Result<Vec<ServerWire>>;
    fn server_tools(&self, name: &str) -> zbus::Result<Vec<ToolWire>>;
    fn server_tool_approve(&self, name: &str, tool: &str) -> zbus::Result<()>;
    fn server_install(
        &self,
        spec: &str,
        local_name: &str,
        approved_ranges: &[String],
        shared: &[String],
        consent: &str,
    ) -> zbus::Result<InstalledWire>;
    fn server_upgrade(
        &self,
        name: &str,
        to: &str,
        approve: &str,
        shared: &[String],
        consent: &str,
    ) -> zbus::Result<UpgradedWire>;
    fn server_remove(&self, name: &str) -> zbus::Result<ServerWire>;
    fn server_start(&self, name: &str) -> zbus::Result<()>;
    fn server_stop(&self, name: &str) -> zbus::Result<bool>;
    fn server_logs(&self, name: &str, lines: u32) -> zbus::Result<Vec<String>>;

    fn image_pull(&self, reference: &str) -> zbus::Result<ImageWire>;
    fn image_import(
        &self,
        layout: Fd<'_>,
        select_digest: &str,
        select_name: &str,
    ) -> zbus::Result<ImageWire>;
    fn image_list(&self) -> zbus::Result<Vec<ImageWire>>;
    fn image_remove(&self, digest: &str) -> zbus::Result<u64>;
    fn image_gc(&self) -> zbus::Result<GcWire>;

    fn endpoint_add(&self, name: &str, servers: &[(String, Vec<String>)]) -> zbus::Result<()>;
    fn endpoint_describe(
        &self,
        endpoint: &str,
        server: &str,
        tool: &str,
        description: &str,
    ) -> zbus::Result<()>;
    fn token_create(&self, endpoint: &str, label: &str) -> zbus::Result<NewTokenWire>;
    fn token_revoke(&self, id: &str) -> zbus::Result<()>;

    fn registry_add(
        &self,
        name: &str,
        location: &str,
        root: &[u8],
        ca_pem: &[u8],
    ) -> zbus::Result<RegistryAddedWire>;
    fn registry_sync(&self, name: &str) -> zbus::Result<SyncWire>;
    fn registry_list(&self) -> zbus::Result<Vec<RegistryInfoWire>>;
    fn registry_forget(&self, name: &str) -> zbus::Result<()>;
    fn registry_search(&self, text: &str) -> zbus::Result<Vec<HitWire>>;
    fn registry_show(&self, spec: &str) -> zbus::Result<ShownWire>;
}
