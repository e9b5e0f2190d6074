//! Who may administer the gateway over D-Bus: root, or a member of [`ADMIN_GROUP`]. The bus
//! policy says the same and is the first fence; this is the second, in the daemon itself, so a
//! policy file edited wrong (or a bus without one) still lets no other local user in. The uid
//! is the bus's word for the sender's connection (`GetConnectionUnixUser`), never the caller's.

use zbus::message::Header;

use super::ControlError;

/// Members of this group may administer the gateway over D-Bus (root always may).
pub const ADMIN_GROUP: &str = "gigmcp-admin";

/// Whether `uid` may administer the gateway: root, or a member of [`ADMIN_GROUP`] (primary
/// or supplementary, as the group database says now).
pub fn is_admin(uid: u32) -> bool {
    use nix::unistd::{Group, Uid, User, getgrouplist};
    if uid == 0 {
        return true;
    }
    let (Ok(Some(user)), Ok(Some(group))) = (
        User::from_uid(Uid::from_raw(uid)),
        Group::from_name(ADMIN_GROUP),
    ) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name.clone()) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|gs| gs.contains(&group.gid))
}

/// The uid of the connection that sent the message, as the bus knows it.
pub async fn caller_uid(header: &Header<'_>, conn: &zbus::Connection) -> Result<u32, ControlError> {
    let sender = header
        .sender()
        .ok_or_else(|| ControlError::PermissionDenied("message has no sender".into()))?;
    let uid = zbus::fdo::DBusProxy::new(conn)
        .await?
        .get_connection_unix_user(sender.clone().into())
        .await
        .map_err(zbus::Error::from)?;
    Ok(uid)
}
