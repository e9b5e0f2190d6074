//! The errors the helper answers with; their D-Bus names are part of the interface.

/// Errors on the wire are named `org.gigmcp.PrivHelper1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.gigmcp.PrivHelper1.Error")]
pub enum HelperError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller is not the configured gateway uid.
    PermissionDenied(String),
    /// A field of the spec is malformed or out of bounds.
    InvalidSpec(String),
    /// The rootfs does not resolve to a directory inside the images directory.
    RootfsOutsideImages(String),
    /// The rootfs lacks a directory the sandbox needs as a mount point.
    RootfsIncomplete(String),
    /// A place the sandbox mounts over (a mount point, a CA bundle path, resolv.conf), or a
    /// directory above it, is a symbolic link in the image.
    RootfsSymlink(String),
    /// A directory from the images directory down to the rootfs can be written by others, or
    /// belongs to neither root nor the gateway: someone else could change what runs.
    RootfsWritable(String),
    /// The data dir does not resolve inside the data root.
    DataDirOutsideRoot(String),
    /// The CA bundle does not resolve to a regular file inside the CA directory.
    InvalidCaBundle(String),
    /// Every /30 slot (or sandbox uid) is in use.
    NoFreeSlot(String),
    /// No live sandbox has that id.
    NotFound(String),
    /// Setting up or tearing down failed on the host; the message says which step.
    Failed(String),
}
